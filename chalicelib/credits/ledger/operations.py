"""The credit ledger: the only module that changes a balance.

Every operation is ONE DynamoDB TransactWriteItems holding the update of the user's
`credits_balance` (with `total_usage` / `total_credits_purchased` and, for live
captions, a concurrency slot) together with the record that explains it:

    grant, complete_purchase, clawback   a transactions-table row (`grant#<source>#<id>`,
                                         the purchase row, `clawback#<source>#<id>`)
    charge                               a usage row, plus a guard record
                                         `charge#<user>#<request_id>` in the reservations
                                         table (usage keys start with a time, so they
                                         cannot carry the idempotency key themselves)
    reserve / extend                     a reservation record, state `held` (extend adds
                                         to a held reservation, once per step)
    settle / release                     the reservation moves held -> settled / released
                                         (settle also writes the usage row)

Idempotency. Every record is written with a condition (`attribute_not_exists` of its key,
or `state = held`) and `ReturnValuesOnConditionCheckFailure=ALL_OLD`. A replay is refused
by DynamoDB, and the refusal itself carries the stored record, so the original outcome is
returned (`replayed=True`) without a second effect and without a second read. A replay
always returns the FIRST outcome, even if the replayed call asked for a different amount
(a second `stop` of a live session computes a slightly different duration: it must get
the first figures, not an error); a differing amount is logged as
`ledger.replay_mismatch`.

Exact `balance_after` in one request. A transaction returns no values, and no expression
can read another item, so a usage row can carry the balance after the charge only if the
writer knows the balance before it. The ledger therefore conditions the user update on
the exact balance it expects (`credits_balance = :expected`, plus `>= :cost` for a
spend) and writes `balance_after = expected - cost` in the same transaction. Where does
`expected` come from? From a strongly consistent GetItem of the balance just before
(`_read_balance`), unless this process saw the balance within LEDGER_GUESS_SECONDS
(default 0: on a fleet of Lambda containers a remembered balance is usually stale, and a
refused transaction is billed like a write while the read costs a fifth of one:
scripts/bench_ledger_fleet.py, docs/performance.md). When the expectation is wrong
(another writer committed in between), DynamoDB refuses the transaction and, in the same
response, returns the current user item (ALL_OLD): if that balance cannot pay, the spend
is refused with the balance and the amount needed; otherwise the transaction is retried
with the true balance. A retry only ever follows a write by someone else to the same
balance, so the loop is lock-free: each lost round means another operation made
progress. Without any expectation the first attempt doubles as the read. Rejected
alternatives: a bare `>= :cost` condition (one request, but `balance_after` would be a
lie under concurrency); a per-process guess on a fleet (one request when right, but
right for about 6% of spends at scale).

Balance rules. Only `clawback` may drive a balance negative (a refund or dispute takes
back credits already spent); every spend (`charge`, `reserve`) needs `balance >= cost`
with cost >= 1, so a negative or zero balance refuses all spends until it is positive.
Every spend is also conditional on the account not being suspended (`status`),
refused with Forbidden(account_suspended) in the same request.

Credits sold (purchases, paid allowances) and used (charges, settlements) are added to the
day's counters (`stats.credits_item`) inside the same transaction: exactly once.

Invariant, for every user at every moment (`check_invariant`):
    grants (signup, subscription, admin, ...) + completed purchases - clawbacks
    - usage rows (charges and settled reservations) - held reservations
    == credits_balance
and `credits_held` (moved in the same transactions) == held reservations, so what a user
owns (`credits_balance + credits_held`) is one GetItem away.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import re
import threading
import time
import uuid
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Generic, Iterator, Mapping, Sequence, TypeVar

from chalicelib.aws import store
from chalicelib.credits import stats
from chalicelib.core.errors import (
    Conflict,
    Forbidden,
    InsufficientCredits,
    NotFound,
    ServiceUnavailable,
    StorageBusy,
)
from chalicelib.core.logs import log_event

logger = logging.getLogger(__name__)

SIGNUP = "signup"
SUSPENDED = "suspended"  # the user item's `status` while an operator has suspended it (accounts)
HELD, SETTLED, RELEASED, CHARGED = "held", "settled", "released", "charged"
GRANT, PURCHASE, CLAWBACK, COMPLETED = "grant", "purchase", "clawback", "completed"

HELD_SHARDS = 8  # held-index partitions; cleanup queries each of `held_shards()`
# A lost round means another write to the same balance committed (see _commit), so the
# loop always makes progress; the time bound only caps a pathological storm on one user.
CONTENTION_SECONDS = 10.0
# Throttling or a conflict with another transaction is not progress: after this many
# attempts so refused, the caller gets StorageBusy (503, Retry-After) and nothing written.
TRANSIENT_ATTEMPTS = 4
MAX_METADATA_BYTES = 8 * 1024
_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_LEDGER_ATTRIBUTES = {"user_id", "credits_balance", "total_usage", "total_credits_purchased",
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


@dataclass(frozen=True)
class SettleResult:
    credits_used: int
    credits_refunded: int
    balance_after: int
    replayed: bool
    state: str = SETTLED  # what the reservation ended as: settled or released
    record_id: str | None = None  # the usage row's sort key when settled


@dataclass(frozen=True)
class InvariantReport:
    ok: bool
    expected: int
    actual: int
    granted: int
    purchased: int
    clawed_back: int
    used: int
    held: int
    quiescent: bool  # no ledger write landed while the sums were being read
    held_counter: int = 0  # the user's credits_held, which must equal `held`


class TransactionConflict(Conflict):
    """A caller's `extra_items` condition failed: nothing was written.

    `reasons` are the cancellation reasons of the extra items, in the order given.
    """

    def __init__(self, reasons: list[dict[str, Any]]) -> None:
        super().__init__("The request conflicts with the current state", code="conflict")
        self.reasons = reasons


# --- process-local hints ---------------------------------------------------------------

K = TypeVar("K")
V = TypeVar("V")


class _Lru(Generic[K, V]):
    """A small thread-safe LRU map. Only ever holds guesses that a condition verifies."""

    def __init__(self, size: int = 10_000) -> None:
        self._items: OrderedDict[K, V] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


@dataclass(frozen=True)
class _Held:
    """The immutable facts of a reservation that settle/release need to build their write."""

    reservation_id: str
    user_id: str
    amount: int
    slot: str | None
    ref_id: str | None
    balance_after: int
    counts_held: bool = False  # reserved since credits_held exists: closing it moves credits_held


# user_id -> (balance, monotonic time this process learnt it)
_balances: _Lru[str, tuple[int, float]] = _Lru()


def _remember_balance(user_id: str, balance: int) -> None:
    _balances.put(user_id, (balance, time.monotonic()))


def _known_balance(user_id: str) -> int | None:
    """The balance this process saw, if seen within LEDGER_GUESS_SECONDS (else None)."""
    known = _balances.get(user_id)
    if known is None or time.monotonic() - known[1] > _guess_seconds():
        return None
    return known[0]


def _guess_seconds() -> float:
    from chalicelib.core.settings import get_settings

    return get_settings().ledger_guess_seconds


def _read_balance(user_id: str) -> int | None:
    """The stored balance (strongly consistent GetItem), None without an account."""
    response = store.ddb().get_item(
        TableName=store.table_name("users"), Key=store.key(user_id=user_id),
        ProjectionExpression="credits_balance", ConsistentRead=True,
    )
    balance = store.from_item(response.get("Item") or {}).get("credits_balance")
    return balance if isinstance(balance, int) else None


# Threads of one process (chalice local, the tests) take turns on a balance instead of
# spending DynamoDB round trips losing to each other; other processes (Lambda instances)
# are kept honest by the conditions alone. Striped, so there is nothing to clean up.
_USER_LOCKS = tuple(threading.Lock() for _ in range(256))
_reservations: _Lru[str, _Held] = _Lru()


def clear_caches() -> None:
    """Forget every balance and reservation guess (the benchmark measures a cold process)."""
    _balances.clear()
    _reservations.clear()


# --- the one write path ----------------------------------------------------------------


@dataclass(frozen=True)
class _UserChange:
    """What an operation does to the user item besides writing its records."""

    delta: int  # signed change of credits_balance
    required: int | None = None  # the balance must cover this
    spend: bool = False  # a use of the service: refused while the account is suspended
    usage: int = 0  # added to total_usage
    purchased: int = 0  # added to total_credits_purchased
    slot: str | None = None  # a per-user counter moved by `slot_step`
    slot_step: int = 0
    slot_max: int | None = None  # reserve: the counter must be below this
    held: int = 0  # added to credits_held (reserve/extend +, settle/release -)


@dataclass(frozen=True)
class _Committed:
    balance_after: int


@dataclass(frozen=True)
class _Refused:
    """One of our records' conditions failed: `item` is what is stored there (or None)."""

    index: int
    item: dict[str, Any] | None


def _user_update(user_id: str, change: _UserChange, expected: int) -> dict[str, Any]:
    sets = ["credits_balance = credits_balance + :delta"]
    adds = ["ledger_seq :one"]
    conditions = ["credits_balance = :expected"]
    values: dict[str, Any] = {"delta": change.delta, "one": 1, "expected": expected}
    names: dict[str, str] = {}
    if change.required is not None:
        conditions.append("credits_balance >= :required")
        values["required"] = change.required
    if change.spend:
        names["#status"] = "status"
        conditions.append("(attribute_not_exists(#status) OR #status <> :suspended)")
        values["suspended"] = SUSPENDED
    if change.usage:
        sets.append("total_usage = if_not_exists(total_usage, :zero) + :usage")
        values.update(usage=change.usage, zero=0)
    if change.purchased:
        sets.append("total_credits_purchased = if_not_exists(total_credits_purchased, :zero) + :purchased")
        values.update(purchased=change.purchased, zero=0)
    if change.held:
        sets.append("credits_held = if_not_exists(credits_held, :zero) + :held")
        values.update(held=change.held, zero=0)
    if change.slot:
        names["#slot"] = change.slot
        adds.append("#slot :slot_step")
        values["slot_step"] = change.slot_step
        if change.slot_max is not None:
            conditions.append("(attribute_not_exists(#slot) OR #slot < :slot_max)")
            values["slot_max"] = change.slot_max
    update: dict[str, Any] = {
        "TableName": store.table_name("users"),
        "Key": store.key(user_id=user_id),
        "UpdateExpression": f"SET {', '.join(sets)} ADD {', '.join(adds)}",
        "ConditionExpression": " AND ".join(conditions),
        "ExpressionAttributeValues": store.values(**values),
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }
    if names:
        update["ExpressionAttributeNames"] = names
    return {"Update": update}


def _commit(
    user_id: str,
    change: _UserChange,
    records: Callable[[int], list[dict[str, Any]]],
    extra_items: Sequence[dict[str, Any]],
    guess: int | None = None,
) -> _Committed | _Refused:
    """Write the user update, our records (built for a balance_after) and the extra items.

    Returns `_Committed` or `_Refused` (a record already exists / is not held: a replay);
    raises InsufficientCredits, Conflict(too_many_sessions), NotFound (no account),
    TransactionConflict (an extra item's condition) or ServiceUnavailable `ledger_busy` (kept
    losing to other writers for CONTENTION_SECONDS, or DynamoDB cancelled or throttled the
    transaction TRANSIENT_ATTEMPTS times: errors.StorageBusy; nothing was written either way).
    """
    lock = _USER_LOCKS[zlib.crc32(user_id.encode("utf-8")) % len(_USER_LOCKS)]
    if not lock.acquire(timeout=CONTENTION_SECONDS):
        raise _busy(user_id, 0, "contention")
    try:
        return _commit_locked(user_id, change, records, extra_items, guess)
    finally:
        lock.release()


def _busy(user_id: str, attempts: int, reason: str) -> ServiceUnavailable:
    log_event(logger, "ledger.contention", logging.WARNING, user_id=user_id, attempts=attempts,
              reason=reason)
    return ServiceUnavailable("The balance is busy; please retry", code="ledger_busy", retry_after=1)


def _commit_locked(
    user_id: str,
    change: _UserChange,
    records: Callable[[int], list[dict[str, Any]]],
    extra_items: Sequence[dict[str, Any]],
    guess: int | None,
) -> _Committed | _Refused:
    ddb = store.ddb()
    expected = _known_balance(user_id)
    if expected is None:  # on a fleet a guess is usually stale: read first (module docstring)
        expected = guess if math.isinf(_guess_seconds()) else _read_balance(user_id)
    deadline = time.monotonic() + CONTENTION_SECONDS
    attempt = transient = 0
    while attempt == 0 or time.monotonic() < deadline:
        attempt += 1
        # Without any guess the first attempt doubles as the read (see the module docstring).
        assumed = 0 if expected is None else expected
        own = [_user_update(user_id, change, assumed), *records(assumed + change.delta)]
        try:
            ddb.transact_write_items(
                TransactItems=[*own, *extra_items], ClientRequestToken=uuid.uuid4().hex
            )
        except StorageBusy as error:  # throttled or conflicted (after botocore's retries)
            transient += 1
            if transient >= TRANSIENT_ATTEMPTS:
                raise _busy(user_id, attempt, error.reason) from None
            _backoff(transient)
            continue
        except ddb.exceptions.TransactionCanceledException as error:
            reasons = store.cancellation_reasons(error)
            if len(reasons) != len(own) + len(extra_items):
                raise
            codes = [reason.get("Code") or "None" for reason in reasons]
            for index in range(1, len(own)):
                if codes[index] == "ConditionalCheckFailed":
                    return _Refused(index - 1, store.from_item(reasons[index].get("Item")))
            extra = reasons[len(own):]
            if any(code == "ConditionalCheckFailed" for code in codes[len(own):]):
                raise TransactionConflict(extra) from None
            if codes[0] == "ConditionalCheckFailed":
                expected = _refusal(user_id, change, reasons[0].get("Item"))
                if attempt > 1:  # lost to another writer: back off so the herd thins out
                    _backoff(attempt - 1)
                continue
            raise
        balance_after = assumed + change.delta
        _remember_balance(user_id, balance_after)
        return _Committed(balance_after)
    raise _busy(user_id, attempt, "contention")


def _backoff(losses: int) -> None:
    """Full-jitter exponential backoff: 5 ms, 10 ms, ... capped at 320 ms."""
    time.sleep(random.uniform(0, 0.005 * 2 ** min(losses, 6)))


def _refusal(user_id: str, change: _UserChange, raw_item: dict[str, Any] | None) -> int:
    """Why the user update was refused: raise for a real refusal, else return the balance."""
    user = store.from_item(raw_item)
    if user is None or not isinstance(user.get("credits_balance"), int):
        raise NotFound("Account not found", code="account_not_found")
    balance = user["credits_balance"]
    _remember_balance(user_id, balance)
    if change.spend and user.get("status") == SUSPENDED:
        raise Forbidden("This account is suspended", code="account_suspended")
    if change.required is not None and balance < change.required:
        raise InsufficientCredits(balance=balance, required=change.required)
    if change.slot and change.slot_max is not None and int(user.get(change.slot) or 0) >= change.slot_max:
        raise Conflict("Too many active sessions", code="too_many_sessions", limit=change.slot_max)
    return balance


def _put(table: str, key_name: str, item: Mapping[str, Any]) -> dict[str, Any]:
    """A record Put that happens at most once and, when refused, returns what is there."""
    return {
        "Put": {
            "TableName": store.table_name(table),
            "Item": store.to_item(item),
            "ConditionExpression": "attribute_not_exists(#key)",
            "ExpressionAttributeNames": {"#key": key_name},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
    }


# --- validation ------------------------------------------------------------------------


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


# --- grants, purchases, clawbacks ------------------------------------------------------


def signup_grant_record(user_id: str, credits: int, created_at: str) -> dict[str, Any]:
    """The transactions-table record that explains a new account's starting balance.

    Registration writes it in the same transaction as the user item (whose
    `credits_balance` starts at `credits`), so the invariant holds from the first moment.
    """
    return {
        "transaction_id": f"{GRANT}#{SIGNUP}#{user_id}",
        "user_id": user_id,
        "kind": GRANT,
        "source": SIGNUP,
        "credits": credits,
        "amount": 0,
        "currency": "usd",
        "status": COMPLETED,
        "balance_after": credits,
        "created_at": created_at,
        "completed_at": created_at,
    }


def signup_grant_put(user_id: str, credits: int, created_at: str) -> dict[str, Any]:
    return _put("transactions", "transaction_id", signup_grant_record(user_id, credits, created_at))


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
    now = store.iso()
    meta = _metadata(metadata)

    def records(balance_after: int) -> list[dict[str, Any]]:
        return [_put("transactions", "transaction_id", {
            "transaction_id": transaction_id, "user_id": user_id, "kind": GRANT,
            "source": source, "credits": credits, "amount": amount, "currency": currency,
            "status": COMPLETED, "purchased": purchased, "balance_after": balance_after,
            "metadata": meta, "created_at": now, "completed_at": now,
        }), *([stats.credits_item(stats.CREDITS_SOLD, credits)] if purchased else [])]

    outcome = _commit(user_id, _UserChange(delta=credits, purchased=credits if purchased else 0),
                      records, extra_items)
    if isinstance(outcome, _Refused):
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
    now = store.iso()

    def records(balance_after: int) -> list[dict[str, Any]]:
        sets = {"kind": PURCHASE, "user_id": user_id, "credits": credits, "amount": amount,
                "currency": currency, "status": COMPLETED, "completed_at": now,
                "balance_after": balance_after, **fields}
        names = {f"#f{i}": name for i, name in enumerate(sets)}
        values = {f":f{i}": store.to_attr(value) for i, value in enumerate(sets.values())}
        names.update({"#created": "created_at", "#source": "source", "#status": "status",
                      "#uid": "user_id", "#tid": "transaction_id"})
        values.update(store.values(now=now, purchase=PURCHASE, completed=COMPLETED, uid=user_id))
        assignments = [f"#f{i} = :f{i}" for i in range(len(sets))]
        assignments += ["#created = if_not_exists(#created, :now)",
                        "#source = if_not_exists(#source, :purchase)"]
        return [{
            "Update": {
                "TableName": store.table_name("transactions"),
                "Key": store.key(transaction_id=transaction_id),
                "UpdateExpression": "SET " + ", ".join(assignments),
                "ConditionExpression": "attribute_not_exists(#tid) OR "
                                       "(#status <> :completed AND #uid = :uid)",
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        }, stats.credits_item(stats.CREDITS_SOLD, credits)]

    outcome = _commit(user_id, _UserChange(delta=credits, purchased=credits), records, extra_items)
    if isinstance(outcome, _Refused):
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
    now = store.iso()
    meta = _metadata(metadata)

    def records(balance_after: int) -> list[dict[str, Any]]:
        return [_put("transactions", "transaction_id", {
            "transaction_id": transaction_id, "user_id": user_id, "kind": CLAWBACK,
            "source": source, "credits": credits, "status": COMPLETED,
            "balance_after": balance_after, "metadata": meta, "created_at": now,
            "completed_at": now,
        })]

    change = _UserChange(delta=-credits, required=None if allow_negative else credits)
    outcome = _commit(user_id, change, records, extra_items)
    if isinstance(outcome, _Refused):
        return _transaction_replay(outcome.item, user_id, transaction_id, credits)
    log_event(logger, "ledger.clawback", user_id=user_id, source=source, credits=credits,
              balance_after=outcome.balance_after)
    return LedgerResult(outcome.balance_after, False, transaction_id, credits)


# --- charge ----------------------------------------------------------------------------


def _usage_key(suffix: str) -> str:
    """`<ISO time>#<unique>`: time-ordered, and two rows in one millisecond never collide."""
    return f"{store.iso()}#{suffix}"


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
    guard_id = f"charge#{user_id}#{_identifier(request_id, 'request_id')}"
    usage_key = _usage_key(uuid.uuid4().hex)
    now = store.iso()
    meta = _metadata(metadata)

    def records(balance_after: int) -> list[dict[str, Any]]:
        return [
            _put("reservations", "reservation_id", {
                "reservation_id": guard_id, "kind": "charge", "user_id": user_id,
                "state": CHARGED, "amount": cost, "credits_used": cost,
                "balance_after": balance_after, "usage_timestamp": usage_key,
                "request_id": request_id, "service_type": service_type, "created_at": now,
            }),
            _put("usage", "timestamp", {
                "user_id": user_id, "timestamp": usage_key, "service_type": service_type,
                "credits_used": cost, "balance_after": balance_after, "metadata": meta,
                "request_id": request_id,
            }),
            stats.credits_item(stats.CREDITS_USED, cost),
        ]

    outcome = _commit(user_id, _UserChange(delta=-cost, required=cost, usage=cost, spend=True),
                      records, extra_items)
    if isinstance(outcome, _Refused):
        stored = outcome.item
        if outcome.index != 0 or stored is None or stored.get("user_id") != user_id:
            raise Conflict("Charge record conflict", code="ledger_record_conflict")
        _replay_note("charge", guard_id, cost, int(stored["credits_used"]))
        return LedgerResult(int(stored["balance_after"]), True, str(stored["usage_timestamp"]),
                            int(stored["credits_used"]))
    log_event(logger, "ledger.charge", user_id=user_id, service_type=service_type, credits=cost,
              balance_after=outcome.balance_after)
    return LedgerResult(outcome.balance_after, False, usage_key, cost)


# --- reserve, settle, release ----------------------------------------------------------


def held_shard(reservation_id: str) -> str:
    digest = hashlib.sha256(reservation_id.encode("utf-8")).digest()
    return str(int.from_bytes(digest[:4], "big") % HELD_SHARDS)


def held_shards() -> tuple[str, ...]:
    return tuple(str(shard) for shard in range(HELD_SHARDS))


def _reservation_view(item: dict[str, Any], replayed: bool) -> Reservation:
    return Reservation(
        reservation_id=item["reservation_id"], user_id=item["user_id"], amount=int(item["amount"]),
        state=item["state"], expires_at=item.get("expires_at", ""),
        balance_after=int(item.get("extended_balance_after", item.get("balance_after")) or 0),
        replayed=replayed, slot=item.get("slot"),
    )


def _remember(item: Mapping[str, Any]) -> _Held:
    latest_balance = item.get("extended_balance_after", item.get("balance_after"))
    held = _Held(item["reservation_id"], item["user_id"], int(item["amount"]), item.get("slot"),
                 item.get("ref_id"), int(latest_balance or 0), bool(item.get("counts_held")))
    _reservations.put(held.reservation_id, held)
    return held


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
    expires_at = store.iso(now + timedelta(seconds=ttl_seconds))
    record = {
        "reservation_id": reservation_id, "kind": "reservation", "user_id": user_id,
        "amount": amount, "state": HELD, "held_shard": held_shard(reservation_id),
        "created_at": store.iso(now), "expires_at": expires_at, "purpose": purpose,
        "ref_id": ref_id, "slot": slot_name, "counts_held": True,
    }

    def records(balance_after: int) -> list[dict[str, Any]]:
        return [_put("reservations", "reservation_id", {**record, "balance_after": balance_after})]

    change = _UserChange(delta=-amount, required=amount, spend=True, slot=slot_name, slot_step=1,
                         slot_max=slot_max, held=amount)
    outcome = _commit(user_id, change, records, extra_items)
    if isinstance(outcome, _Refused):
        stored = outcome.item
        if stored is None or stored.get("user_id") != user_id or stored.get("kind") != "reservation":
            raise Conflict("Reservation id conflict", code="ledger_record_conflict")
        _replay_note("reservation", reservation_id, amount, int(stored["amount"]))
        if stored["state"] == HELD:
            _remember(stored)
        return _reservation_view(stored, replayed=True)
    stored = {**record, "balance_after": outcome.balance_after}
    _remember(stored)
    log_event(logger, "ledger.reserve", user_id=user_id, reservation_id=reservation_id,
              credits=amount, balance_after=outcome.balance_after)
    return _reservation_view(stored, replayed=False)


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
    item = store.get("reservations", reservation_id=reservation_id)
    if item is None or item.get("kind") != "reservation":
        raise NotFound("Reservation not found", code="reservation_not_found")
    if int(item.get("extensions") or 0) > step:
        return _reservation_view(item, replayed=True)
    if item["state"] != HELD:
        raise Conflict("The reservation is no longer held", code="reservation_not_held")
    user_id = item["user_id"]
    expires_at = store.iso(store.now() + timedelta(seconds=ttl_seconds))
    names = {"#state": "state", "#uid": "user_id", "#amount": "amount", "#ext": "extensions"}
    values = store.values(held=HELD, uid=user_id, add=amount, next=step + 1, expires=expires_at)
    condition = "#state = :held AND #uid = :uid AND "
    if step == 0:
        condition += "attribute_not_exists(#ext)"
    else:
        condition += "#ext = :step"
        values.update(store.values(step=step))

    def records(balance_after: int) -> list[dict[str, Any]]:
        return [{
            "Update": {
                "TableName": store.table_name("reservations"),
                "Key": store.key(reservation_id=reservation_id),
                "UpdateExpression": "SET #amount = #amount + :add, #ext = :next, expires_at = :expires, "
                                    "extended_balance_after = :balance",
                "ConditionExpression": condition,
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": {**values, **store.values(balance=balance_after)},
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        }]

    change = _UserChange(delta=-amount, required=amount, spend=True,
                         held=amount if item.get("counts_held") else 0)
    outcome = _commit(user_id, change, records, extra_items)
    if isinstance(outcome, _Refused):
        stored = outcome.item
        if stored is None or stored.get("kind") != "reservation":
            raise NotFound("Reservation not found", code="reservation_not_found")
        if int(stored.get("extensions") or 0) > step:
            return _reservation_view(stored, replayed=True)
        raise Conflict("The reservation is no longer held", code="reservation_not_held")
    stored = {**item, "amount": int(item["amount"]) + amount, "extensions": step + 1,
              "expires_at": expires_at, "extended_balance_after": outcome.balance_after}
    _remember(stored)
    log_event(logger, "ledger.extend", user_id=user_id, reservation_id=reservation_id,
              credits=amount, step=step + 1, balance_after=outcome.balance_after)
    return _reservation_view(stored, replayed=False)


def _final_outcome(item: Mapping[str, Any]) -> SettleResult:
    """The stored outcome of a reservation that already left `held`."""
    closed_balance = int(item["closed_balance_after"])
    if item.get("state") == SETTLED:
        return SettleResult(int(item["credits_used"]), int(item["credits_refunded"]), closed_balance,
                            True, SETTLED, item.get("usage_timestamp"))
    return SettleResult(0, int(item["amount"]), closed_balance, True, RELEASED)


def _load_held(reservation_id: str) -> _Held | SettleResult:
    """The held reservation's facts (cached, else one read), or its final outcome."""
    cached = _reservations.get(reservation_id)
    if cached is not None:
        return cached
    item = store.get("reservations", reservation_id=reservation_id)
    if item is None or item.get("kind") != "reservation":
        raise NotFound("Reservation not found", code="reservation_not_found")
    if item["state"] != HELD:
        return _final_outcome(item)
    return _remember(item)


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
    for _ in range(2):  # a second pass only if our cached facts turned out stale
        held = _load_held(reservation_id)
        if isinstance(held, SettleResult):
            return held
        credits_used = 0 if used is None else min(used, held.amount)
        refund = held.amount - credits_used
        now = store.iso()
        usage_key = _usage_key(reservation_id)

        def records(balance_after: int, held: _Held = held) -> list[dict[str, Any]]:
            sets = {"state": state, "credits_used": credits_used, "credits_refunded": refund,
                    "closed_balance_after": balance_after, f"{state}_at": now}
            if state == SETTLED:
                sets["usage_timestamp"] = usage_key
            else:
                sets["release_reason"] = reason
            names = {f"#f{i}": name for i, name in enumerate(sets)}
            values = {f":f{i}": store.to_attr(value) for i, value in enumerate(sets.values())}
            names.update({"#state": "state", "#uid": "user_id", "#amount": "amount"})
            values.update(store.values(held=HELD, uid=held.user_id, amount=held.amount))
            items = [{
                "Update": {
                    "TableName": store.table_name("reservations"),
                    "Key": store.key(reservation_id=reservation_id),
                    "UpdateExpression": "SET " + ", ".join(f"#f{i} = :f{i}" for i in range(len(sets)))
                                        + " REMOVE held_shard",
                    "ConditionExpression": "#state = :held AND #uid = :uid AND #amount = :amount",
                    "ExpressionAttributeNames": names,
                    "ExpressionAttributeValues": values,
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                }
            }]
            if state == SETTLED:
                items.append(_put("usage", "timestamp", {
                    "user_id": held.user_id, "timestamp": usage_key, "service_type": service_type,
                    "credits_used": credits_used, "balance_after": balance_after,
                    "metadata": metadata, "reservation_id": reservation_id, "ref_id": held.ref_id,
                }))
                if credits_used:
                    items.append(stats.credits_item(stats.CREDITS_USED, credits_used))
            return items

        change = _UserChange(delta=refund, usage=credits_used,
                             slot=held.slot, slot_step=-1 if held.slot else 0,
                             held=-held.amount if held.counts_held else 0)
        outcome = _commit(held.user_id, change, records, extra_items, guess=held.balance_after)
        if isinstance(outcome, _Committed):
            log_event(logger, f"ledger.{state}", user_id=held.user_id, reservation_id=reservation_id,
                      credits_used=credits_used, credits_refunded=refund,
                      balance_after=outcome.balance_after)
            return SettleResult(credits_used, refund, outcome.balance_after, False, state,
                                usage_key if state == SETTLED else None)
        stored = outcome.item
        if outcome.index != 0 or stored is None or stored.get("kind") != "reservation":
            raise NotFound("Reservation not found", code="reservation_not_found")
        if stored.get("state") in (SETTLED, RELEASED):
            return _final_outcome(stored)
        _remember(stored)  # still held: our cached facts were stale; retry with the stored ones
    raise Conflict("Reservation changed while closing it", code="ledger_record_conflict")


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


def iter_expired_held(before: str) -> Iterator[dict[str, Any]]:
    """Held reservations whose `expires_at` is before `before` (ISO), via the sparse held-index.

    The index is eventually consistent: a reservation listed here may have just been
    settled; `release` then simply returns its stored outcome.
    """
    for shard in held_shards():
        yield from store.query_all({
            "TableName": store.table_name("reservations"),
            "IndexName": "held-index",
            "KeyConditionExpression": "held_shard = :shard AND expires_at < :before",
            "ExpressionAttributeValues": store.values(shard=shard, before=before),
        })


# --- reads -----------------------------------------------------------------------------


def get_balance(user_id: str) -> dict[str, Any]:
    """The balance and its totals: exactly one (consistent) GetItem."""
    response = store.ddb().get_item(
        TableName=store.table_name("users"),
        Key=store.key(user_id=user_id),
        ConsistentRead=True,
        ProjectionExpression="credits_balance, credits_held, subscription_tier, total_credits_purchased, "
                             "total_usage, is_active",
    )
    user = store.from_item(response.get("Item"))
    if user is None or not user.get("is_active", True) or "credits_balance" not in user:
        raise NotFound("Account not found", code="account_not_found")
    _remember_balance(user_id, user["credits_balance"])
    held = int(user.get("credits_held") or 0)
    return {
        "balance": user["credits_balance"],  # available: what can be spent now
        "held": held,
        "owned": user["credits_balance"] + held,
        "subscription_tier": user.get("subscription_tier") or "free",
        "total_credits_purchased": user.get("total_credits_purchased") or 0,
        "total_usage": user.get("total_usage") or 0,
    }


def _ledger_state(user_id: str) -> tuple[int, int, int]:
    response = store.ddb().get_item(
        TableName=store.table_name("users"), Key=store.key(user_id=user_id), ConsistentRead=True,
        ProjectionExpression="credits_balance, credits_held, ledger_seq",
    )
    user = store.from_item(response.get("Item"))
    if user is None:
        raise NotFound("Account not found", code="account_not_found")
    return (int(user.get("credits_balance") or 0), int(user.get("ledger_seq") or 0),
            int(user.get("credits_held") or 0))


def _sums(user_id: str) -> tuple[int, int, int, int, int]:
    granted = purchased = clawed_back = used = held = 0
    for row in store.query_all({
        "TableName": store.table_name("transactions"),
        "IndexName": "user_id-created_at-index",
        "KeyConditionExpression": "user_id = :user",
        "ExpressionAttributeValues": store.values(user=user_id),
    }):
        if row.get("status") != COMPLETED:
            continue
        credits = int(row.get("credits") or 0)
        if row.get("kind") == GRANT:
            granted += credits
        elif row.get("kind") == PURCHASE:
            purchased += credits
        elif row.get("kind") == CLAWBACK:
            clawed_back += credits
    for row in store.query_all({
        "TableName": store.table_name("usage"),
        "KeyConditionExpression": "user_id = :user",
        "ExpressionAttributeValues": store.values(user=user_id),
        "ProjectionExpression": "credits_used",
        "ConsistentRead": True,
    }):
        used += int(row.get("credits_used") or 0)
    for row in iter_user_held(user_id):
        held += int(row.get("amount") or 0)
    return granted, purchased, clawed_back, used, held


def iter_user_held(user_id: str) -> Iterator[dict[str, Any]]:
    """The user's reservations still held (the reservations table's user_id-index)."""
    yield from store.query_all({
        "TableName": store.table_name("reservations"),
        "IndexName": "user_id-index",
        "KeyConditionExpression": "user_id = :user",
        "FilterExpression": "#state = :held",
        "ExpressionAttributeNames": {"#state": "state"},
        "ExpressionAttributeValues": store.values(user=user_id, held=HELD),
    })


def check_invariant(user_id: str, attempts: int = 3) -> InvariantReport:
    """Does the user's balance equal what their records explain? Queries only, no scans.

    The sums are read between two reads of the user's `ledger_seq`; if a ledger write
    landed in between, the check is repeated (`quiescent=False` if it never settled).
    The transactions and reservations sums come from GSIs, which are eventually
    consistent on AWS: a mismatch right after a write should be re-checked before alarm.
    """
    report: InvariantReport | None = None
    for _ in range(max(attempts, 1)):
        balance, seq, held_counter = _ledger_state(user_id)
        granted, purchased, clawed_back, used, held = _sums(user_id)
        balance_after_read, seq_after, _ = _ledger_state(user_id)
        expected = granted + purchased - clawed_back - used - held
        quiescent = seq == seq_after and balance == balance_after_read
        report = InvariantReport(expected == balance and held_counter == held, expected, balance,
                                 granted, purchased, clawed_back, used, held, quiescent, held_counter)
        if quiescent:
            break
    assert report is not None
    if not report.ok:
        log_event(logger, "ledger.invariant_broken", logging.ERROR, user_id=user_id,
                  expected=report.expected, actual=report.actual, quiescent=report.quiescent)
    return report
