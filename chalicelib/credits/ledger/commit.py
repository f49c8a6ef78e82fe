"""The one write path: a balance change and its records in one conditional transaction.

Exact `balance_after` in one request. A transaction returns no values, and no expression
can read another item, so a usage row can carry the balance after the charge only if the
writer knows the balance before it. The user update is therefore conditioned on the exact
balance expected (`credits_balance = :expected`, plus `>= :required` for a spend) and the
records carry `balance_after = expected + delta`, in the same transaction.

`expected` comes from a strongly consistent read just before (records.read_balance),
unless this process saw the balance within LEDGER_GUESS_SECONDS (hints.py). When it is
wrong (another writer committed in between), DynamoDB refuses the transaction and returns
the current user item in the same response (ALL_OLD): if that balance cannot pay, the
operation is refused with the balance and the amount needed; otherwise it is retried with
the true balance. A lost round only ever follows a write by someone else to the same
balance, so the loop is lock-free: each lost round means another operation made progress;
CONTENTION_SECONDS only caps a pathological storm on one user. Without any expectation
the first attempt doubles as the read.

Transient refusals (throttling, a conflict with another transaction: errors.StorageBusy)
are not progress: after TRANSIENT_ATTEMPTS the caller gets `ledger_busy` and nothing is
written. Rejected alternatives: a bare `>= :cost` condition (one request, but
`balance_after` would be a lie under concurrency); a per-process guess on a fleet (one
request when right, but right for about 6% of spends at scale).
"""
from __future__ import annotations

import logging
import math
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from chalicelib.aws import store
from chalicelib.core.errors import (
    Conflict,
    Forbidden,
    InsufficientCredits,
    NotFound,
    ServiceUnavailable,
    StorageBusy,
)
from chalicelib.core.logs import log_event
from chalicelib.credits.ledger import hints
from chalicelib.credits.ledger.records import SUSPENDED, UserChange, read_balance, user_update

logger = logging.getLogger(__package__)  # one logger for the whole ledger

CONTENTION_SECONDS = 10.0
TRANSIENT_ATTEMPTS = 4

Records = Callable[[int], list[dict[str, Any]]]  # balance_after -> our TransactWriteItems elements


@dataclass(frozen=True)
class Committed:
    balance_after: int


@dataclass(frozen=True)
class Refused:
    """One of our records' conditions failed: `item` is what is stored there (or None).

    `index` is the record's position in what `records` returned: a replay, for the caller
    to answer with the stored outcome."""

    index: int
    item: dict[str, Any] | None


class TransactionConflict(Conflict):
    """A caller's `extra_items` condition failed: nothing was written.

    `reasons` are the cancellation reasons of the extra items, in the order given.
    """

    def __init__(self, reasons: list[dict[str, Any]]) -> None:
        super().__init__("The request conflicts with the current state", code="conflict")
        self.reasons = reasons


def commit(
    user_id: str,
    change: UserChange,
    records: Records,
    extra_items: Sequence[dict[str, Any]],
    guess: int | None = None,
) -> Committed | Refused:
    """Write the user update, our records (built for a balance_after) and the extra items.

    `guess` is the balance the caller believes (a held reservation's latest), used only when
    hints are trusted (LEDGER_GUESS_SECONDS=inf). Returns `Committed` or `Refused` (a record
    already exists / is not held: a replay); raises InsufficientCredits,
    Conflict(too_many_sessions), Forbidden(account_suspended), NotFound (no account),
    TransactionConflict (an extra item's condition) or ServiceUnavailable `ledger_busy`.
    """
    lock = hints.user_lock(user_id)
    if not lock.acquire(timeout=CONTENTION_SECONDS):
        raise busy(user_id, 0, "contention")
    try:
        return _commit_locked(user_id, change, records, extra_items, guess)
    finally:
        lock.release()


def busy(user_id: str, attempts: int, reason: str) -> ServiceUnavailable:
    log_event(logger, "ledger.contention", logging.WARNING, user_id=user_id, attempts=attempts,
              reason=reason)
    return ServiceUnavailable("The balance is busy; please retry", code="ledger_busy", retry_after=1)


def _commit_locked(
    user_id: str,
    change: UserChange,
    records: Records,
    extra_items: Sequence[dict[str, Any]],
    guess: int | None,
) -> Committed | Refused:
    ddb = store.ddb()
    expected = hints.known_balance(user_id)
    if expected is None:  # on a fleet a guess is usually stale: read first (hints.py)
        expected = guess if math.isinf(hints.guess_seconds()) else read_balance(user_id)
    deadline = time.monotonic() + CONTENTION_SECONDS
    attempt = transient = 0
    while attempt == 0 or time.monotonic() < deadline:
        attempt += 1
        assumed = 0 if expected is None else expected  # no guess: this attempt is the read
        own = [user_update(user_id, change, assumed), *records(assumed + change.delta)]
        try:
            ddb.transact_write_items(
                TransactItems=[*own, *extra_items], ClientRequestToken=uuid.uuid4().hex
            )
        except StorageBusy as error:  # throttled or conflicted (after botocore's retries)
            transient += 1
            if transient >= TRANSIENT_ATTEMPTS:
                raise busy(user_id, attempt, error.reason) from None
            backoff(transient)
            continue
        except ddb.exceptions.TransactionCanceledException as error:
            reasons = store.cancellation_reasons(error)
            if len(reasons) != len(own) + len(extra_items):
                raise
            codes = [reason.get("Code") or "None" for reason in reasons]
            for index in range(1, len(own)):
                if codes[index] == "ConditionalCheckFailed":
                    return Refused(index - 1, store.from_item(reasons[index].get("Item")))
            if any(code == "ConditionalCheckFailed" for code in codes[len(own):]):
                raise TransactionConflict(reasons[len(own):]) from None
            if codes[0] == "ConditionalCheckFailed":
                expected = _refusal(user_id, change, reasons[0].get("Item"))
                if attempt > 1:  # lost to another writer: back off so the herd thins out
                    backoff(attempt - 1)
                continue
            raise
        balance_after = assumed + change.delta
        hints.remember_balance(user_id, balance_after)
        return Committed(balance_after)
    raise busy(user_id, attempt, "contention")


def backoff(losses: int) -> None:
    """Full-jitter exponential backoff: 5 ms, 10 ms, ... capped at 320 ms."""
    time.sleep(random.uniform(0, 0.005 * 2 ** min(losses, 6)))


def _refusal(user_id: str, change: UserChange, raw_item: dict[str, Any] | None) -> int:
    """Why the user update was refused: raise for a real refusal, else return the balance."""
    user = store.from_item(raw_item)
    if user is None or not isinstance(user.get("credits_balance"), int):
        raise NotFound("Account not found", code="account_not_found")
    balance = int(user["credits_balance"])
    hints.remember_balance(user_id, balance)
    if change.spend and user.get("status") == SUSPENDED:
        raise Forbidden("This account is suspended", code="account_suspended")
    if change.required is not None and balance < change.required:
        raise InsufficientCredits(balance=balance, required=change.required)
    if change.slot and change.slot_max is not None and int(user.get(change.slot) or 0) >= change.slot_max:
        raise Conflict("Too many active sessions", code="too_many_sessions", limit=change.slot_max)
    return balance
