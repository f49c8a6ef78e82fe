"""The scheduled janitor (hourly, its own Lambda, reserved concurrency 1): it settles,
refunds or expires what nobody is watching any more, and keeps an eye on the books.

What one run does, in order:

1. Every held reservation (the ledger's sparse `held-index`: only reservations still
   held are in it, so this reads in-flight work, never history):
   - live captions (`purpose = live`): the session is handed to
     `streaming.settle_abandoned`, which bills a session silent past its heartbeat grace
     (or past its reserved time) up to its last sign of life, and gives back a start that
     never finished;
   - catch-up jobs (`purpose = catchup`) still queued or processing CLEANUP_CATCHUP_STUCK_SECONDS
     after submission (every SQS delivery has had its chance by then) and not under a
     live worker lease: the job moves to failed and the whole reservation is released,
     in ONE transaction conditional on the job's state (and lease) as read, so a worker
     that finishes at the same moment either wins (the cleanup's transaction is refused)
     or loses (its settle finds the reservation released and the job failed);
   - anything else held past its `expires_at` (an Ask whose Lambda died, or a live or
     catch-up reservation whose session/job is gone or already final): released.
2. Checkouts still `pending` CLEANUP_PENDING_CHECKOUT_HOURS after creation (Stripe's
   Checkout session expired long before; its `expired` webhook never arrived): marked
   `expired`, conditional on still being pending. Found through the sparse
   `pending-index` of the transactions table, whose entries the run also removes from
   rows that have moved on: the one thing here that TTL cannot do. (Everything else
   short-lived carries `expires_at_epoch` and DynamoDB's TTL removes it.)
3. The ledger invariant for a sample of users touched since the previous run (those this
   run touched first, then users the stats show active), logged loudly on a breach.

Safe to run twice at once, or again right after: every change is a conditional write
(a reservation leaves `held` once, a session leaves `active` once, a job leaves
queued/processing once, a checkout leaves `pending` once), so a second run finds
nothing left to do and two concurrent runs never settle anything twice. One structured
log line, `cleanup.finished`, reports the counts.
"""
from __future__ import annotations

import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from chalicelib.aws import store
from chalicelib.catchup import jobs as catchup
from chalicelib.credits import ledger
from chalicelib.credits import stats
from chalicelib.live import captions as streaming
from chalicelib.billing import purchases
from chalicelib.core.logs import log_event, start_invocation
from chalicelib.core.settings import get_settings

logger = logging.getLogger(__name__)

STATE_KEY = {"stat_key": "cleanup", "shard": "state"}
DEFAULT_LOOKBACK_SECONDS = 3600  # the schedule's period: used when there is no previous run
MAX_LOOKBACK_DAYS = 7
STUCK_JOB_REASON = "cleanup_stuck_job"
LAMBDA_MARGIN_MS = 30_000  # kept free at the end of an invocation to log and return
MAX_BREACHES_KEPT = 50  # on the state item, for the operator console
# Counts of things this run changed; a run right after another reports zero for all.
ACTIONS = (
    "live_settled",
    "live_starts_failed",
    "catchup_failed",
    "reservations_released",
    "checkouts_expired",
    "pending_index_pruned",
)
COUNTS = ACTIONS + (
    "held_seen",
    "invariant_checked",
    "invariant_breaches",
    "invariant_unsettled",
    "skipped",
    "deferred",
    "errors",
)


@dataclass
class _Run:
    now: int
    deadline: float | None
    counts: Counter = field(default_factory=Counter)
    touched: set[str] = field(default_factory=set)
    breaches: list[dict[str, Any]] = field(default_factory=list)  # kept for the operator console

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline

    def iso_now(self) -> str:
        return store.iso(datetime.fromtimestamp(self.now, tz=timezone.utc))

    def attempt(self, kind: str, action: Callable[[], None]) -> None:
        """One item's work; a failure is counted and logged, and the run goes on."""
        if self.out_of_time():
            self.counts["deferred"] += 1
            return
        try:
            action()
        except Exception as error:  # noqa: BLE001 - one bad record must not stop the janitor
            self.counts["errors"] += 1
            log_event(logger, "cleanup.item_failed", logging.WARNING, kind=kind,
                      error=type(error).__name__)


def scheduled(context: Any) -> dict[str, int]:
    """The hourly Lambda's entry point: one run within the invocation's remaining time."""
    start_invocation("cleanup", context)
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    budget = None
    if callable(remaining):
        budget = max((remaining() - LAMBDA_MARGIN_MS) / 1000, 1.0)
    return run(budget_seconds=budget)


def run(now_epoch: int | None = None, *, budget_seconds: float | None = None) -> dict[str, int]:
    """One cleanup pass; returns the counts it also logs. `now_epoch` defaults to now.

    `budget_seconds` bounds the work (the Lambda's remaining time minus a margin): items
    not reached are counted as `deferred` and handled by the next run.
    """
    started = time.monotonic()
    get_settings()  # a bad configuration stops the run here, not as one error per item
    now = store.epoch() if now_epoch is None else int(now_epoch)
    state = _Run(now, started + budget_seconds if budget_seconds else None)
    since = _previous_run(now)
    for shard in ledger.held_shards():
        state.attempt("held_index", lambda s=shard: _held_shard(state, s))
    for shard in purchases.pending_shards():
        state.attempt("pending_index", lambda s=shard: _expire_checkouts(state, s))
    state.attempt("invariants", lambda: _check_invariants(state, since))
    _remember_run(now, state.breaches)
    counts = {name: state.counts.get(name, 0) for name in COUNTS}
    log_event(logger, "cleanup.finished", duration_ms=round((time.monotonic() - started) * 1000),
              **counts)
    return counts


# --- reservations --------------------------------------------------------------------------


def _held_shard(state: _Run, shard: str) -> None:
    """Every reservation still held in one partition of the sparse held-index."""
    held = list(store.query_all({
        "TableName": store.table_name("reservations"),
        "IndexName": "held-index",
        "KeyConditionExpression": "held_shard = :shard",
        "ExpressionAttributeValues": store.values(shard=shard),
    }))
    for reservation in held:
        state.counts["held_seen"] += 1
        state.attempt("reservation", lambda r=reservation: _reservation(state, r))


def _reservation(state: _Run, reservation: dict[str, Any]) -> None:
    expired = str(reservation.get("expires_at") or "") < state.iso_now()
    purpose = reservation.get("purpose")
    if purpose == streaming.SERVICE_TYPE:
        _live(state, reservation, expired)
    elif purpose == catchup.SERVICE_TYPE:
        _catchup(state, reservation, expired)
    elif expired:
        _release(state, reservation, "expired")


def _release(state: _Run, reservation: dict[str, Any], reason: str) -> None:
    result = ledger.release(reservation["reservation_id"], reason=reason)
    if not result.replayed:
        state.counts["reservations_released"] += 1
        state.touched.add(reservation["user_id"])
        log_event(logger, "cleanup.reservation_released", reservation_id=reservation["reservation_id"],
                  purpose=reservation.get("purpose"), reason=reason, credits=result.credits_refunded)


def _live(state: _Run, reservation: dict[str, Any], expired: bool) -> None:
    session = store.get(streaming.TABLE, session_id=str(reservation.get("ref_id") or ""))
    if session is None or session.get("state") not in ("starting", "active"):
        if expired:
            _release(state, reservation, "expired")
        return
    outcome = streaming.settle_abandoned(session, state.now)
    if outcome is None:
        return  # still alive (or settled by someone else just now)
    state.touched.add(session["user_id"])
    if outcome.get("state") == "failed":
        state.counts["live_starts_failed"] += 1
    else:
        state.counts["live_settled"] += 1


def _epoch_of(iso_time: str) -> int:
    return int(datetime.fromisoformat(iso_time.replace("Z", "+00:00")).timestamp())


def _catchup(state: _Run, reservation: dict[str, Any], expired: bool) -> None:
    job = catchup.load_job(str(reservation.get("ref_id") or ""))
    if job is None or job.get("status") in catchup.TERMINAL:
        if expired:
            _release(state, reservation, "expired")
        return
    status = job["status"]
    if status == catchup.PROCESSING and int(job.get("lease_expires_at_epoch") or 0) >= state.now:
        return  # a worker is on it right now; never pull a job from under a live lease
    age = state.now - _epoch_of(job["created_at"])
    if age < get_settings().cleanup_catchup_stuck_seconds and not expired:
        return
    code = job.get("last_error") or "processing_failed"
    failed = catchup.failed_update(job["job_id"], code, lease_id=job.get("lease_id"), expect_status=status)
    try:
        result = ledger.release(reservation["reservation_id"], reason=STUCK_JOB_REASON,
                                extra_items=[failed])
    except ledger.TransactionConflict:
        state.counts["skipped"] += 1  # the job moved on (claimed, retried or finished): it wins
        return
    if result.replayed:
        return  # the reservation was closed already (the job finished elsewhere)
    state.counts["catchup_failed"] += 1
    state.touched.add(job["user_id"])
    log_event(logger, "cleanup.catchup_failed", logging.WARNING, job_id=job["job_id"], status=status,
              error=code, age_seconds=age, credits_refunded=result.credits_refunded)


# --- abandoned checkouts -------------------------------------------------------------------


def _expire_checkouts(state: _Run, shard: str) -> None:
    """The rows of one pending-index partition created before the cutoff."""
    cutoff = store.iso(datetime.fromtimestamp(state.now, tz=timezone.utc)
                       - timedelta(hours=get_settings().cleanup_pending_checkout_hours))
    rows = list(store.query_all({
        "TableName": store.table_name(purchases.TABLE),
        "IndexName": purchases.PENDING_INDEX,
        "KeyConditionExpression": "pending_shard = :shard AND created_at < :cutoff",
        "ExpressionAttributeValues": store.values(shard=shard, cutoff=cutoff),
    }))
    for row in rows:
        if row.get("status") == purchases.PENDING:
            state.attempt("checkout", lambda r=row: _expire_checkout(state, r))
        else:
            state.attempt("pending_row", lambda r=row: _prune_pending(state, r))


def _expire_checkout(state: _Run, row: dict[str, Any]) -> None:
    """pending -> expired (and out of the index), only if it is still pending."""
    try:
        store.ddb().update_item(
            TableName=store.table_name(purchases.TABLE),
            Key=store.key(transaction_id=row["transaction_id"]),
            UpdateExpression="SET #status = :expired, updated_at = :now, expired_by = :by "
                             "REMOVE pending_shard",
            ConditionExpression="#status = :pending",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues=store.values(
                expired=purchases.EXPIRED, pending=purchases.PENDING, now=store.iso(), by="cleanup",
            ),
        )
    except store.ddb().exceptions.ConditionalCheckFailedException:
        state.counts["skipped"] += 1  # paid or closed meanwhile; the next run prunes it
        return
    state.counts["checkouts_expired"] += 1
    log_event(logger, "cleanup.checkout_expired", transaction_id=row["transaction_id"])


def _prune_pending(state: _Run, row: dict[str, Any]) -> None:
    """Take a row that is no longer pending out of the pending-index."""
    try:
        store.ddb().update_item(
            TableName=store.table_name(purchases.TABLE),
            Key=store.key(transaction_id=row["transaction_id"]),
            UpdateExpression="REMOVE pending_shard",
            ConditionExpression="attribute_exists(pending_shard) AND #status <> :pending",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues=store.values(pending=purchases.PENDING),
        )
    except store.ddb().exceptions.ConditionalCheckFailedException:
        return  # already pruned (a concurrent run), or pending again: nothing to do
    state.counts["pending_index_pruned"] += 1


# --- the books -----------------------------------------------------------------------------


def _previous_run(now: int) -> int:
    """When the previous run started (or one period ago): the start of "touched since"."""
    item = store.get(stats.TABLE, **STATE_KEY)
    previous = int((item or {}).get("last_run_epoch") or 0)
    return previous if 0 < previous < now else now - DEFAULT_LOOKBACK_SECONDS


def _remember_run(now: int, breaches: list[dict[str, Any]]) -> None:
    """The run's start, and its invariant breaches (what the operator console shows)."""
    try:
        store.ddb().update_item(
            TableName=store.table_name(stats.TABLE),
            Key=store.key(**STATE_KEY),
            UpdateExpression="SET last_run_epoch = :now, last_breaches = :breaches",
            ConditionExpression="attribute_not_exists(last_run_epoch) OR last_run_epoch < :now",
            ExpressionAttributeValues=store.values(now=now, breaches=breaches[:MAX_BREACHES_KEPT]),
        )
    except store.ddb().exceptions.ConditionalCheckFailedException:
        pass  # a concurrent or later run already recorded a newer start


def _sample(state: _Run, since: int) -> list[str]:
    """Users this run touched first, then users the stats saw active since `since`."""
    first = sorted(state.touched)
    random.shuffle(first)
    start = datetime.fromtimestamp(max(since, state.now - MAX_LOOKBACK_DAYS * 86400), tz=timezone.utc)
    end = datetime.fromtimestamp(max(state.now, store.epoch()), tz=timezone.utc)
    days = [(start.date() + timedelta(days=offset)).isoformat()
            for offset in range((end.date() - start.date()).days + 1)]
    active = sorted({item.get("user_id") or item["shard"] for item in stats.user_days(days, since_epoch=since)}
                    - state.touched)
    random.shuffle(active)
    return (first + active)[: get_settings().cleanup_invariant_sample]


def _check_invariants(state: _Run, since: int) -> None:
    sample = _sample(state, since) if get_settings().cleanup_invariant_sample else []
    for user_id in sample:
        if state.out_of_time():
            state.counts["deferred"] += 1
            continue
        report = ledger.check_invariant(user_id)
        if not report.ok:
            report = ledger.check_invariant(user_id)  # indexes lag writes briefly: look again
        state.counts["invariant_checked"] += 1
        if report.ok:
            continue
        state.counts["invariant_breaches" if report.quiescent else "invariant_unsettled"] += 1
        if report.quiescent:
            state.breaches.append({"user_id": user_id, "expected": report.expected,
                                   "actual": report.actual, "checked_epoch": state.now})
    if state.counts["invariant_breaches"]:
        log_event(logger, "cleanup.invariant_breach", logging.ERROR,
                  checked=state.counts["invariant_checked"], breaches=state.counts["invariant_breaches"])
