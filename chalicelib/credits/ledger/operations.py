"""The ledger's operations: the only code that changes a balance.

Every operation is ONE DynamoDB TransactWriteItems (commit.py) holding the update of the
user's `credits_balance` (with `total_usage` / `total_credits_purchased` / `credits_held`
and, for live captions, a concurrency slot) together with the record that explains it
(records.py):

    grant, complete_purchase, clawback   a transactions row (`grant#<source>#<id>`, the
                                         purchase row, `clawback#<source>#<id>`)
    charge                               a usage row, plus the guard `charge#<user>#<request_id>`
                                         in reservations (usage keys start with a time, so
                                         they cannot carry the idempotency key themselves)
    reserve / extend                     a reservation, state `held` (extend adds to a held
                                         reservation, once per step)
    settle / release                     the reservation moves held -> settled (with its
                                         usage row) / released

Idempotency. Every record is conditional (`attribute_not_exists` of its key, or `state =
held`) and returns what is stored when refused, so a replay returns the FIRST outcome
(`replayed=True`) without a second effect or a second read, even if it asked for another
amount (a second `stop` of a live session computes a slightly different duration: it
must get the first figures); a differing amount is logged as `ledger.replay_mismatch`.

Balance rules. Only `clawback` may drive a balance negative (a refund or dispute takes
back credits already spent); every spend (`charge`, `reserve`, `extend`) needs `balance
>= cost` with cost >= 1, and is refused while the account is suspended
(Forbidden(account_suspended)), in the same request. Credits sold (purchases, paid
allowances) and used (charges, settlements) are added to the day's counters
(`stats.credits_item`) in the same transaction: exactly once. The invariant the records
keep: invariant.py.
"""
from __future__ import annotations

import json
import logging
import re
import uuid
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any, Mapping, Sequence

from chalicelib.aws import store
from chalicelib.core.errors import Conflict, NotFound
from chalicelib.core.logs import log_event
from chalicelib.credits.ledger import hints, records
from chalicelib.credits.ledger.commit import Committed, Refused, commit
from chalicelib.credits.ledger.records import (
    CLAWBACK,
    COMPLETED,
    GRANT,
    HELD,
    RELEASED,
    SETTLED,
    Held,
    UserChange,
)

logger = logging.getLogger(__package__)  # one logger for the whole ledger

MAX_METADATA_BYTES = 8 * 1024
_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
# A slot is moved by ADD on the user item: never one of the ledger's or the account's attributes.
_LEDGER_ATTRIBUTES = {"user_id", "credits_balance", "credits_held", "total_usage", "total_credits_purchased",
                      "ledger_seq", "email", "role", "is_active", "subscription_tier",
                      "status", "token_generation"}
_PURCHASE_ATTRIBUTES = {"transaction_id", "user_id", "kind", "status", "credits", "amount",
                        "currency", "created_at", "completed_at", "balance_after", "source"}


# --- results ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LedgerResult:
    balance_after: int
    replayed: bool
    record_id: str
    credits: int = 0  # the credits this record moved (positive), from the stored record


@dataclass(frozen=True)
class Reservation:
    reservation_id: str
    user_id: str
    amount: int
    state: str
    expires_at: str
    balance_after: int
    replayed: bool = False
    slot: str | None = None

    @classmethod
    def of(cls, item: Mapping[str, Any], replayed: bool) -> Reservation:
        return cls(
            reservation_id=item["reservation_id"], user_id=item["user_id"], amount=int(item["amount"]),
            state=item["state"], expires_at=item.get("expires_at", ""),
            balance_after=int(item.get("extended_balance_after", item.get("balance_after")) or 0),
            replayed=replayed, slot=item.get("slot"),
        )


@dataclass(frozen=True)
class SettleResult:
    credits_used: int
    credits_refunded: int
    balance_after: int
    replayed: bool
    state: str = SETTLED  # what the reservation ended as: settled or released
    record_id: str | None = None  # the usage row's sort key when settled

    @classmethod
    def stored(cls, item: Mapping[str, Any]) -> SettleResult:
        """The stored outcome of a reservation that already left `held`."""
        closed_balance = int(item["closed_balance_after"])
        if item.get("state") == SETTLED:
            return cls(int(item["credits_used"]), int(item["credits_refunded"]), closed_balance,
                       True, SETTLED, item.get("usage_timestamp"))
        return cls(0, int(item["amount"]), closed_balance, True, RELEASED)


# --- grants, purchases, clawbacks ------------------------------------------------------


def grant(
    user_id: str,
    credits: int,
    *,
    source: str,
    record_id: str,
    amount: int = 0,
    currency: str = "usd",
    purchased: bool = False,
    metadata: Mapping[str, Any] | None = None,
    extra_items: Sequence[dict[str, Any]] = (),
) -> LedgerResult:
    """Add credits, explained by `grant#<source>#<record_id>`, at most once per record id.

    `purchased=True` (a paid subscription allowance) also counts the credits in
    `total_credits_purchased`.
    """
    _positive(credits, "credits")
    _identifier(source, "source", 64)
    transaction_id = f"{GRANT}#{source}#{_identifier(record_id, 'record_id')}"
    items = partial(records.grant_items, transaction_id=transaction_id, user_id=user_id, source=source,
                    credits=credits, amount=amount, currency=currency, purchased=purchased,
                    metadata=_metadata(metadata), now=store.iso())
    outcome = commit(user_id, UserChange(delta=credits, purchased=credits if purchased else 0),
                     items, extra_items)
    if isinstance(outcome, Refused):
        return _transaction_replay(outcome.item, user_id, transaction_id, credits)
    log_event(logger, "ledger.grant", user_id=user_id, source=source, credits=credits,
              balance_after=outcome.balance_after)
    return LedgerResult(outcome.balance_after, False, transaction_id, credits)


def complete_purchase(
    transaction_id: str,
    *,
    user_id: str,
    credits: int,
    amount: int,
    currency: str,
    stripe_fields: Mapping[str, Any],
    extra_items: Sequence[dict[str, Any]] = (),
) -> LedgerResult:
    """Move a purchase row to `completed` and add its credits, once.

    The row is normally the pending one billing wrote at checkout; it is completed from any
    state but `completed` (money Stripe received always wins), and created if missing.
    `stripe_fields` (payment_intent, stripe_session_id, ...) are stored on the row.
    """
    _positive(credits, "credits")
    _identifier(transaction_id, "transaction_id")
    fields = {k: v for k, v in stripe_fields.items() if v is not None}
    for name in fields:
        if not _NAME.fullmatch(name) or name in _PURCHASE_ATTRIBUTES:
            raise ValueError(f"stripe field name not allowed: {name!r}")
    items = partial(records.purchase_items, transaction_id=transaction_id, user_id=user_id, credits=credits,
                    amount=amount, currency=currency, stripe_fields=fields, now=store.iso())
    outcome = commit(user_id, UserChange(delta=credits, purchased=credits), items, extra_items)
    if isinstance(outcome, Refused):
        if outcome.item is not None and outcome.item.get("status") != COMPLETED:
            raise Conflict("This purchase belongs to another account", code="ledger_record_conflict")
        return _transaction_replay(outcome.item, user_id, transaction_id, credits)
    log_event(logger, "ledger.purchase", user_id=user_id, transaction_id=transaction_id,
              credits=credits, balance_after=outcome.balance_after)
    return LedgerResult(outcome.balance_after, False, transaction_id, credits)


def clawback(
    user_id: str,
    credits: int,
    *,
    source: str,
    record_id: str,
    metadata: Mapping[str, Any] | None = None,
    extra_items: Sequence[dict[str, Any]] = (),
    allow_negative: bool = True,
) -> LedgerResult:
    """Take credits back (refund, dispute), at most once per record id; may go negative.

    `allow_negative=False` (an operator's deduction) needs the balance to cover it, and is
    refused with InsufficientCredits otherwise.
    """
    _positive(credits, "credits")
    _identifier(source, "source", 64)
    transaction_id = f"{CLAWBACK}#{source}#{_identifier(record_id, 'record_id')}"
    items = partial(records.clawback_items, transaction_id=transaction_id, user_id=user_id, source=source,
                    credits=credits, metadata=_metadata(metadata), now=store.iso())
    change = UserChange(delta=-credits, required=None if allow_negative else credits)
    outcome = commit(user_id, change, items, extra_items)
    if isinstance(outcome, Refused):
        return _transaction_replay(outcome.item, user_id, transaction_id, credits)
    log_event(logger, "ledger.clawback", user_id=user_id, source=source, credits=credits,
              balance_after=outcome.balance_after)
    return LedgerResult(outcome.balance_after, False, transaction_id, credits)


def _transaction_replay(
    item: dict[str, Any] | None, user_id: str, transaction_id: str, credits: int
) -> LedgerResult:
    if item is None or item.get("user_id") != user_id:
        # The id exists for another user: never move money on someone else's record.
        raise Conflict("This ledger record belongs to another account", code="ledger_record_conflict")
    _replay_note(str(item.get("kind")), transaction_id, credits, int(item.get("credits") or 0))
    return LedgerResult(
        balance_after=int(item.get("balance_after") or 0),
        replayed=True,
        record_id=transaction_id,
        credits=int(item.get("credits") or 0),
    )


# --- charge ----------------------------------------------------------------------------


def charge(
    user_id: str,
    cost: int,
    *,
    service_type: str,
    request_id: str,
    metadata: Mapping[str, Any] | None = None,
    extra_items: Sequence[dict[str, Any]] = (),
) -> LedgerResult:
    """Spend `cost` credits on a fixed-price use, at most once per (user, request_id).

    Writes the usage row and the guard `charge#<user>#<request_id>`; a replay returns the
    first outcome. Refused with InsufficientCredits(balance, required) in the same request.
    """
    _positive(cost, "cost")
    _identifier(service_type, "service_type", 64)
    _identifier(request_id, "request_id")
    usage_timestamp = records.usage_key(uuid.uuid4().hex)
    items = partial(records.charge_items, user_id=user_id, request_id=request_id, cost=cost,
                    service_type=service_type, usage_timestamp=usage_timestamp,
                    metadata=_metadata(metadata), now=store.iso())
    outcome = commit(user_id, UserChange(delta=-cost, required=cost, usage=cost, spend=True),
                     items, extra_items)
    if isinstance(outcome, Refused):
        stored = outcome.item
        if outcome.index != 0 or stored is None or stored.get("user_id") != user_id:
            raise Conflict("Charge record conflict", code="ledger_record_conflict")
        _replay_note("charge", records.charge_guard_id(user_id, request_id), cost, int(stored["credits_used"]))
        return LedgerResult(int(stored["balance_after"]), True, str(stored["usage_timestamp"]),
                            int(stored["credits_used"]))
    log_event(logger, "ledger.charge", user_id=user_id, service_type=service_type, credits=cost,
              balance_after=outcome.balance_after)
    return LedgerResult(outcome.balance_after, False, usage_timestamp, cost)


# --- reserve, extend, settle, release --------------------------------------------------


def reserve(
    user_id: str,
    amount: int,
    *,
    reservation_id: str,
    purpose: str,
    ref_id: str,
    ttl_seconds: int,
    slot: tuple[str, int] | None = None,
    extra_items: Sequence[dict[str, Any]] = (),
) -> Reservation:
    """Hold `amount` credits until settle/release (or the cleanup job, after expiry).

    `slot=("active_streams", 2)` also takes one of the user's `active_streams` slots
    (refused with Conflict(code="too_many_sessions") when all are taken); settle/release
    give it back. A replay (same reservation_id) returns the stored reservation.
    """
    _positive(amount, "amount")
    _identifier(reservation_id, "reservation_id")
    _positive(ttl_seconds, "ttl_seconds")
    slot_name, slot_max = slot if slot is not None else (None, None)
    if slot_name is not None and (not _NAME.fullmatch(slot_name) or slot_name in _LEDGER_ATTRIBUTES):
        raise ValueError(f"slot name not allowed: {slot_name!r}")
    now = store.now()
    hold = records.Hold(reservation_id, user_id, amount, created_at=store.iso(now),
                        expires_at=store.iso(now + timedelta(seconds=ttl_seconds)), purpose=purpose,
                        ref_id=ref_id, slot=slot_name)
    change = UserChange(delta=-amount, required=amount, spend=True, slot=slot_name, slot_step=1,
                        slot_max=slot_max, held=amount)
    outcome = commit(user_id, change, partial(records.reserve_items, hold=hold), extra_items)
    if isinstance(outcome, Refused):
        stored = outcome.item
        if stored is None or stored.get("user_id") != user_id or stored.get("kind") != "reservation":
            raise Conflict("Reservation id conflict", code="ledger_record_conflict")
        _replay_note("reservation", reservation_id, amount, int(stored["amount"]))
        if stored["state"] == HELD:
            hints.remember_reservation(stored)
        return Reservation.of(stored, replayed=True)
    written = hold.row(outcome.balance_after)
    hints.remember_reservation(written)
    log_event(logger, "ledger.reserve", user_id=user_id, reservation_id=reservation_id,
              credits=amount, balance_after=outcome.balance_after)
    return Reservation.of(written, replayed=False)


def extend(
    reservation_id: str,
    amount: int,
    *,
    step: int,
    ttl_seconds: int,
    extra_items: Sequence[dict[str, Any]] = (),
) -> Reservation:
    """Hold `amount` more credits on a held reservation (a live session's next token).

    `step` is the number of extensions already applied: the extension happens only if the
    reservation has exactly that many (so each step happens at most once; a replay returns
    the stored reservation with `replayed=True`). The hold's expiry moves to now +
    `ttl_seconds`. Refused with InsufficientCredits like a reservation; a reservation that is
    no longer held is a Conflict(`reservation_not_held`).
    """
    _positive(amount, "amount")
    _positive(ttl_seconds, "ttl_seconds")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ValueError(f"step must be a non-negative integer, got {step!r}")
    item = records.get_reservation(reservation_id)
    if item is None:
        raise NotFound("Reservation not found", code="reservation_not_found")
    if int(item.get("extensions") or 0) > step:
        return Reservation.of(item, replayed=True)
    if item["state"] != HELD:
        raise Conflict("The reservation is no longer held", code="reservation_not_held")
    user_id = item["user_id"]
    expires_at = store.iso(store.now() + timedelta(seconds=ttl_seconds))
    items = partial(records.extend_items, reservation_id=reservation_id, user_id=user_id, amount=amount,
                    step=step, expires_at=expires_at)
    change = UserChange(delta=-amount, required=amount, spend=True,
                        held=amount if item.get("counts_held") else 0)
    outcome = commit(user_id, change, items, extra_items)
    if isinstance(outcome, Refused):
        stored = outcome.item
        if stored is None or stored.get("kind") != "reservation":
            raise NotFound("Reservation not found", code="reservation_not_found")
        if int(stored.get("extensions") or 0) > step:
            return Reservation.of(stored, replayed=True)
        raise Conflict("The reservation is no longer held", code="reservation_not_held")
    extended = {**item, "amount": int(item["amount"]) + amount, "extensions": step + 1,
                "expires_at": expires_at, "extended_balance_after": outcome.balance_after}
    hints.remember_reservation(extended)
    log_event(logger, "ledger.extend", user_id=user_id, reservation_id=reservation_id,
              credits=amount, step=step + 1, balance_after=outcome.balance_after)
    return Reservation.of(extended, replayed=False)


def settle(
    reservation_id: str,
    actual_cost: int,
    *,
    service_type: str,
    metadata: Mapping[str, Any] | None = None,
    extra_items: Sequence[dict[str, Any]] = (),
) -> SettleResult:
    """Turn a held reservation into its real cost (capped at the amount held), refund the rest.

    Writes the usage row. Once settled or released, a reservation never changes again:
    settling twice, or settling after a release, returns the stored outcome with
    `replayed=True` (and `state` says which it was) whatever amount is asked the second time.
    """
    if not isinstance(actual_cost, int) or isinstance(actual_cost, bool) or actual_cost < 0:
        raise ValueError(f"actual_cost must be a non-negative integer, got {actual_cost!r}")
    _identifier(service_type, "service_type", 64)
    result = _close(reservation_id, SETTLED, actual_cost, service_type, _metadata(metadata), None,
                    extra_items)
    if not result.replayed and actual_cost > result.credits_used:
        log_event(logger, "ledger.settle_capped", logging.WARNING, reservation_id=reservation_id,
                  asked=actual_cost, reserved=result.credits_used)
    return result


def release(
    reservation_id: str, *, reason: str, extra_items: Sequence[dict[str, Any]] = ()
) -> SettleResult:
    """Give a whole held reservation back (the provider failed, or it expired); at most once."""
    _identifier(reason, "reason", 128)
    return _close(reservation_id, RELEASED, None, None, None, reason, extra_items)


def _load_held(reservation_id: str) -> Held | SettleResult:
    """The held reservation's facts (remembered, else one read), or its final outcome."""
    known = hints.known_reservation(reservation_id)
    if known is not None:
        return known
    item = records.get_reservation(reservation_id)
    if item is None:
        raise NotFound("Reservation not found", code="reservation_not_found")
    if item["state"] != HELD:
        return SettleResult.stored(item)
    return hints.remember_reservation(item)


def _close(
    reservation_id: str,
    state: str,
    used: int | None,
    service_type: str | None,
    metadata: dict[str, Any] | None,
    reason: str | None,
    extra_items: Sequence[dict[str, Any]],
) -> SettleResult:
    """Move a held reservation to settled (used credits) or released (none), exactly once."""
    for _ in range(2):  # a second pass only if the remembered facts turned out stale
        held = _load_held(reservation_id)
        if isinstance(held, SettleResult):
            return held
        credits_used = 0 if used is None else min(used, held.amount)
        refund = held.amount - credits_used
        usage_timestamp = records.usage_key(reservation_id)
        items = partial(records.close_items, held=held, state=state, credits_used=credits_used,
                        service_type=service_type, metadata=metadata, reason=reason,
                        usage_timestamp=usage_timestamp, now=store.iso())
        change = UserChange(delta=refund, usage=credits_used,
                            slot=held.slot, slot_step=-1 if held.slot else 0,
                            held=-held.amount if held.counts_held else 0)
        outcome = commit(held.user_id, change, items, extra_items, guess=held.balance_after)
        if isinstance(outcome, Committed):
            log_event(logger, f"ledger.{state}", user_id=held.user_id, reservation_id=reservation_id,
                      credits_used=credits_used, credits_refunded=refund,
                      balance_after=outcome.balance_after)
            return SettleResult(credits_used, refund, outcome.balance_after, False, state,
                                usage_timestamp if state == SETTLED else None)
        stored = outcome.item
        if outcome.index != 0 or stored is None or stored.get("kind") != "reservation":
            raise NotFound("Reservation not found", code="reservation_not_found")
        if stored.get("state") in (SETTLED, RELEASED):
            return SettleResult.stored(stored)
        hints.remember_reservation(stored)  # still held: the remembered facts were stale; retry
    raise Conflict("Reservation changed while closing it", code="ledger_record_conflict")


# --- reads -----------------------------------------------------------------------------


def get_balance(user_id: str) -> dict[str, Any]:
    """The balance and its totals: exactly one (consistent) GetItem."""
    user = records.balance_item(user_id)
    if user is None or not user.get("is_active", True) or "credits_balance" not in user:
        raise NotFound("Account not found", code="account_not_found")
    hints.remember_balance(user_id, user["credits_balance"])
    held = int(user.get("credits_held") or 0)
    return {
        "balance": user["credits_balance"],  # available: what can be spent now
        "held": held,
        "owned": user["credits_balance"] + held,
        "subscription_tier": user.get("subscription_tier") or "free",
        "total_credits_purchased": user.get("total_credits_purchased") or 0,
        "total_usage": user.get("total_usage") or 0,
    }


# --- argument checks (programming errors, refused before any request) ------------------


def _positive(value: int, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _identifier(value: str, name: str, max_length: int = 256) -> str:
    if not isinstance(value, str) or not value or len(value) > max_length:
        raise ValueError(f"{name} must be a non-empty string of at most {max_length} characters")
    return value


def _metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if metadata is None:
        return None
    size = len(json.dumps(metadata, default=str))
    if size > MAX_METADATA_BYTES:
        raise ValueError(f"metadata must be at most {MAX_METADATA_BYTES} bytes, got {size}")
    return dict(metadata)


def _replay_note(kind: str, record_id: str, asked: int, stored: int) -> None:
    if asked != stored:
        log_event(logger, "ledger.replay_mismatch", logging.WARNING, kind=kind,
                  record_id=record_id, asked=asked, stored=stored)
