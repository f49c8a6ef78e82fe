"""The invariant every balance keeps, checked from the records (queries only, no scans):

    grants (signup, subscription, admin, ...) + completed purchases - clawbacks
    - usage rows (charges and settled reservations) - held reservations
    == credits_balance

and `credits_held` (moved in the same transactions) == held reservations, so what a user
owns (`credits_balance + credits_held`) is one GetItem away.

Bounded by recent activity. Usage rows (one per use) and transactions rows never change once
written, apart from a purchase row, which completes once (and may complete long after it was
created: a late Stripe event). So the sums over a user's records older than some time are
facts that can be kept: a checkpoint (`checkpoint#<user>` in transactions, records.py) holds
them, with the purchase rows that were not completed then (`open`, read again by key). A
check reads the checkpoint, the records since its `through` time, the open rows and the held
reservations (closed ones expire: records.CLOSED_RESERVATION_TTL_SECONDS), and folds what is
older than CHECKPOINT_MARGIN_SECONDS into a newer checkpoint. The margin is longer than any
operation can take between choosing a record's time and committing it (a Lambda lives at
most 15 minutes), so nothing can still appear behind a checkpoint. `full=True` ignores the
checkpoint and rebuilds it from every record (after restoring a table from a backup: a
checkpoint would keep counting rows the restore lost).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from chalicelib.aws import store
from chalicelib.core.errors import NotFound
from chalicelib.core.logs import log_event
from chalicelib.credits.ledger import records
from chalicelib.credits.ledger.records import CHECKPOINT, CLAWBACK, COMPLETED, GRANT, PURCHASE, CheckpointRow

logger = logging.getLogger(__package__)  # one logger for the whole ledger

CHECKPOINT_MARGIN_SECONDS = 3600


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
    checkpoint: str | None = None  # the records before this time were summed by a checkpoint


def check_invariant(user_id: str, attempts: int = 3, *, full: bool = False) -> InvariantReport:
    """Does the user's balance equal what their records explain?

    The sums are read between two reads of the user's `ledger_seq`; if a ledger write
    landed in between, the check is repeated (`quiescent=False` if it never settled).
    The transactions and reservations sums come from GSIs, which are eventually
    consistent on AWS: a mismatch right after a write should be re-checked before alarm.
    After a quiescent read, the records older than the margin are folded into the checkpoint.
    """
    report: InvariantReport | None = None
    checkpoint = None if full else records.get_checkpoint(user_id)
    sums = _Sums()
    for _ in range(max(attempts, 1)):
        balance, seq, held_counter = _ledger_state(user_id)
        sums = _sums(user_id, checkpoint)
        balance_after_read, seq_after, _ = _ledger_state(user_id)
        expected = sums.granted + sums.purchased - sums.clawed_back - sums.used - sums.held
        quiescent = seq == seq_after and balance == balance_after_read
        report = InvariantReport(expected == balance and held_counter == sums.held, expected, balance,
                                 sums.granted, sums.purchased, sums.clawed_back, sums.used, sums.held, quiescent,
                                 held_counter, checkpoint["through"] if checkpoint else None)
        if quiescent:
            break
    assert report is not None
    if not report.ok:
        log_event(logger, "ledger.invariant_broken", logging.ERROR, user_id=user_id,
                  expected=report.expected, actual=report.actual, quiescent=report.quiescent)
    if report.quiescent:
        _advance(user_id, checkpoint, sums.fold)
    return report


def _ledger_state(user_id: str) -> tuple[int, int, int]:
    user = records.ledger_state(user_id)
    if user is None:
        raise NotFound("Account not found", code="account_not_found")
    return (int(user.get("credits_balance") or 0), int(user.get("ledger_seq") or 0),
            int(user.get("credits_held") or 0))


@dataclass
class _Fold:
    """What a new checkpoint holds: the sums of the records older than `through`."""

    through: str
    granted: int = 0
    purchased: int = 0
    clawed_back: int = 0
    used: int = 0
    open: list[str] = field(default_factory=list)
    added: int = 0  # records folded by this check (0 and nothing reopened: nothing to write)


@dataclass
class _Sums:
    granted: int = 0
    purchased: int = 0
    clawed_back: int = 0
    used: int = 0
    held: int = 0
    fold: _Fold = field(default_factory=lambda: _Fold(""))


def _sums(user_id: str, checkpoint: CheckpointRow | None) -> _Sums:
    """The invariant's sums: the checkpoint's, plus every record after it (and its open rows)."""
    through = store.iso(store.now() - timedelta(seconds=CHECKPOINT_MARGIN_SECONDS))
    since = checkpoint["through"] if checkpoint else None
    granted, purchased, clawed_back, used = ((int(checkpoint["granted"]), int(checkpoint["purchased"]),
                                              int(checkpoint["clawed_back"]), int(checkpoint["used"]))
                                             if checkpoint else (0, 0, 0, 0))
    sums = _Sums(granted, purchased, clawed_back, used,
                 fold=_Fold(through, granted, purchased, clawed_back, used))
    reopened = records.get_transactions(list(checkpoint["open"])) if checkpoint and checkpoint["open"] else []
    for row in [*reopened, *records.iter_user_transactions(user_id, since)]:
        if row.get("kind") == CHECKPOINT:
            continue
        older = str(row.get("created_at") or "") < through
        if row.get("status") != COMPLETED:
            if older:  # a purchase not completed (yet): behind the checkpoint, read again by key
                sums.fold.open.append(row["transaction_id"])
            continue
        credits = int(row.get("credits") or 0)
        name = {GRANT: "granted", PURCHASE: "purchased", CLAWBACK: "clawed_back"}.get(str(row.get("kind")))
        if name is None:
            continue
        setattr(sums, name, getattr(sums, name) + credits)
        if older:
            setattr(sums.fold, name, getattr(sums.fold, name) + credits)
            sums.fold.added += 1
    for row in records.iter_user_usage_credits(user_id, since):
        credits = int(row.get("credits_used") or 0)
        sums.used += credits
        if str(row["timestamp"]) < through:
            sums.fold.used += credits
            sums.fold.added += 1
    for row in records.iter_user_held(user_id):
        sums.held += int(row.get("amount") or 0)
    return sums


def _advance(user_id: str, checkpoint: CheckpointRow | None, fold: _Fold) -> None:
    """Store the folded sums, unless nothing changed (a check then writes nothing)."""
    open_before = sorted(checkpoint["open"]) if checkpoint else []
    if not fold.added and sorted(fold.open) == open_before:
        return
    if checkpoint is not None and fold.through <= checkpoint["through"]:
        return
    records.put_checkpoint({
        "transaction_id": records.checkpoint_id(user_id), "kind": CHECKPOINT, "owner": user_id,
        "through": fold.through, "granted": fold.granted, "purchased": fold.purchased,
        "clawed_back": fold.clawed_back, "used": fold.used, "open": sorted(set(fold.open)),
        "updated_at": store.iso(),
    })
