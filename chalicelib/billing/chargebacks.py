"""Taking credits back when money goes back: refunds (proportionally) and disputes (entirely).

Events only *record* what Stripe reports on the purchase row (the charge's cumulative
refunded amount, the dispute id); `settle` then applies whatever is recorded but not yet
applied, and is called both by the refund/dispute events and right after a purchase
completes. So a refund that arrives before the purchase's completion is applied the moment
the purchase completes (the pack is granted, then its refunded share is taken back), and
any replay or reordering converges on the same result.

Exactly once: each clawback is one ledger transaction keyed by the charge id and the
cumulative refunded amount (or the dispute id), and it carries an optimistic update of the
purchase row (`refunded_amount`, `credits_clawed_back`), so two events processed at once
cannot both take the same share; the loser re-reads and finds nothing left to do.

An erased account's purchase (its `user_id` anonymised) has no balance to take from: the
refund or dispute advances the row and the revenue counters only.

Revenue. The same transaction adds the money given back by that step to the analytics'
`refunds` counter (`stats.revenue_items(kind=REFUNDS)`), also when no credit is left to
take (then the row update and the counter are written on their own, still atomically). A
step's money is how much `money_returned` grows with it: the newly refunded amount, or
the disputed amount; capped at what the charge was, so a dispute over an already partly
refunded charge never makes the purchase give back more than it brought in.
"""
from __future__ import annotations

import logging
from typing import Any

from chalicelib.accounts import privacy
from chalicelib.aws import store
from chalicelib.credits import ledger
from chalicelib.credits import stats
from chalicelib.billing import purchases
from chalicelib.core.errors import Conflict
from chalicelib.core.logs import log_event

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 5


def refunded_credits(credits: int, charge_amount: int, amount_refunded: int) -> int:
    """The share of a pack's credits that `amount_refunded` (cumulative) pays back.

    Rounded down, except that a full refund takes back every credit. Cumulative, so two
    partial refunds take back exactly what one refund of their sum would.
    """
    if amount_refunded <= 0:
        return 0
    if charge_amount <= 0 or amount_refunded >= charge_amount:
        return credits
    return credits * amount_refunded // charge_amount


def _charge_amount(row: dict[str, Any]) -> int:
    return int(row.get("refund_charge_amount") or row["amount"])


def money_returned(row: dict[str, Any], *, refunded_amount: int, dispute_applied: bool) -> int:
    """Cents given back once the row has applied `refunded_amount` (cumulative) and, when
    `dispute_applied`, the dispute (its recorded amount, else the whole charge): at most
    the charge's amount."""
    charge_amount = _charge_amount(row)
    disputed = 0
    if dispute_applied:
        recorded = row.get("dispute_amount")
        disputed = int(recorded) if recorded is not None else charge_amount
    return min(max(refunded_amount, 0) + max(disputed, 0), max(charge_amount, 0))


def _money_of_step(row: dict[str, Any], after: dict[str, Any]) -> int:
    """The cents a step gives back: how much `money_returned` grows from the row to `after`."""
    before = money_returned(row, refunded_amount=int(row.get("refunded_amount") or 0),
                            dispute_applied=bool(row.get("dispute_applied")))
    now = money_returned(row, refunded_amount=after["refunded_amount"],
                         dispute_applied=after["dispute_applied"])
    return max(now - before, 0)


def _next_step(row: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, Any]] | None:
    """What is recorded but not applied yet: (credits to take, ledger kwargs, row state after)."""
    credits = int(row["credits"])
    clawed = int(row.get("credits_clawed_back") or 0)
    applied_refund = int(row.get("refunded_amount") or 0)
    if row.get("dispute_id") and not row.get("dispute_applied"):
        return (
            max(credits - clawed, 0),
            {"source": "dispute", "record_id": row["dispute_id"]},
            {"refunded_amount": applied_refund, "credits_clawed_back": max(credits, clawed),
             "dispute_applied": True},
        )
    seen = int(row.get("refund_seen_amount") or 0)
    if seen > applied_refund:
        charge_amount = _charge_amount(row)
        target = refunded_credits(credits, charge_amount, seen)
        return (
            max(target - clawed, 0),
            {"source": "refund", "record_id": f"{row['refund_charge_id']}#{seen}"},
            {"refunded_amount": seen, "credits_clawed_back": max(target, clawed),
             "dispute_applied": bool(row.get("dispute_applied"))},
        )
    return None


def _lost_race(error: Exception) -> bool:
    """Our optimistic row update lost to a concurrent one (the ledger refuses the transaction)."""
    return isinstance(error, Conflict) or store.is_conditional_failure(error)


def settle(transaction_id: str) -> int:
    """Apply every recorded refund/dispute of a completed purchase; returns credits taken now."""
    taken = 0
    lost: Exception | None = None
    for _ in range(MAX_ATTEMPTS):
        row = purchases.get(transaction_id)
        if row is None or row.get("status") != purchases.COMPLETED:
            return taken  # applied when (if) the purchase completes
        step = _next_step(row)
        if step is None:
            return taken
        credits, ledger_args, after = step
        if privacy.is_anonymous(row["user_id"]):
            # An erased account has no balance: nothing to take back, but the money given
            # back is still recorded on the purchase and counted in the revenue figures.
            credits = 0
            after["credits_clawed_back"] = int(row.get("credits_clawed_back") or 0)
        update = purchases.chargeback_update(row, **after)
        money = _money_of_step(row, after)
        revenue = (stats.revenue_items(row["user_id"], stats.REFUNDS, money, str(row.get("currency") or ""))
                   if money > 0 else [])
        try:
            if credits > 0:
                result = ledger.clawback(
                    row["user_id"], credits, metadata={"transaction_id": transaction_id},
                    extra_items=[update, *revenue], **ledger_args,
                )
                if not result.replayed:
                    taken += credits
                    log_event(logger, "billing.clawback", user_id=row["user_id"],
                              transaction_id=transaction_id, credits=credits,
                              source=ledger_args["source"], balance_after=result.balance_after)
            else:
                store.ddb().transact_write_items(TransactItems=[update, *revenue])
        except Exception as error:  # noqa: BLE001 - only a lost race is retried
            if not _lost_race(error):
                raise
            lost = error
            continue
        lost = None
    if lost is not None:
        raise lost  # still racing after several rounds: fail, so Stripe redelivers later
    return taken
