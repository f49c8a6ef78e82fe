"""The invariant every balance keeps, checked from the records (queries only, no scans):

    grants (signup, subscription, admin, ...) + completed purchases - clawbacks
    - usage rows (charges and settled reservations) - held reservations
    == credits_balance

and `credits_held` (moved in the same transactions) == held reservations, so what a user
owns (`credits_balance + credits_held`) is one GetItem away.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from chalicelib.core.errors import NotFound
from chalicelib.core.logs import log_event
from chalicelib.credits.ledger import records
from chalicelib.credits.ledger.records import CLAWBACK, COMPLETED, GRANT, PURCHASE

logger = logging.getLogger(__package__)  # one logger for the whole ledger


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


def check_invariant(user_id: str, attempts: int = 3) -> InvariantReport:
    """Does the user's balance equal what their records explain?

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


def _ledger_state(user_id: str) -> tuple[int, int, int]:
    user = records.ledger_state(user_id)
    if user is None:
        raise NotFound("Account not found", code="account_not_found")
    return (int(user.get("credits_balance") or 0), int(user.get("ledger_seq") or 0),
            int(user.get("credits_held") or 0))


def _sums(user_id: str) -> tuple[int, int, int, int, int]:
    granted = purchased = clawed_back = used = held = 0
    for row in records.iter_user_transactions(user_id):
        if row.get("status") != COMPLETED:
            continue
        credits = int(row.get("credits") or 0)
        if row.get("kind") == GRANT:
            granted += credits
        elif row.get("kind") == PURCHASE:
            purchased += credits
        elif row.get("kind") == CLAWBACK:
            clawed_back += credits
    for row in records.iter_user_usage_credits(user_id):
        used += int(row.get("credits_used") or 0)
    for row in records.iter_user_held(user_id):
        held += int(row.get("amount") or 0)
    return granted, purchased, clawed_back, used, held
