"""What each verified Stripe event does, each effect exactly once.

Exactly-once is keyed by the business object, never only by the event id (Stripe sends
different events about one object, redelivers for days, and in any order):
- a pack is granted by `ledger.complete_purchase` on our transaction row, named in the
  Checkout Session's metadata: `completed` (paid) and `async_payment_succeeded` for one
  session, each delivered any number of times, complete it once;
- a subscription allowance is `ledger.grant(source="subscription", record_id=<invoice id>)`;
- a refund is a clawback keyed by charge id + cumulative refunded amount, a dispute by its id
  (chalicelib.billing.chargebacks).
Everything else (statuses) is a conditional write that only moves forward. A refund or
dispute reported before its purchase is known waits on the PaymentIntent's link row
(chalicelib.billing.purchases) and is applied when the purchase completes.

Credits are granted only for the amount and currency we asked for (`payment_mismatch`,
`invoice_mismatch`); any other payment is left `needs_review` for an operator.

An event we cannot match to a user or purchase grants nothing and is kept for an operator.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, NamedTuple

from chalicelib.accounts import privacy
from chalicelib.aws import store
from chalicelib.credits import ledger
from chalicelib.credits import stats
from chalicelib.billing import catalogue, chargebacks, events, open_checkouts, purchases, subscriptions
from chalicelib.billing.catalogue import Plan
from chalicelib.billing.events import Outcome, ignored, orphaned, processed
from chalicelib.core.logs import log_event

logger = logging.getLogger(__name__)

# Invoices that open a paid period; prorations and one-off invoices grant nothing.
ALLOWANCE_BILLING_REASONS = ("subscription_create", "subscription_cycle")

Event = dict[str, Any]


# A signature proves Stripe sent an event, not that it has the shape we expect (another API
# version, an expanded object where an id was): every field is read through these, so an
# odd shape becomes "missing" (an orphaned or ignored outcome), never an exception.


def _object(event: Event) -> dict[str, Any]:
    return event["data"]["object"]  # a dict: checked by webhooks._parse


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _id(value: Any) -> str | None:
    """A Stripe reference that may be an id or an expanded object."""
    return _str(value.get("id") if isinstance(value, dict) else value)


def _metadata(obj: dict[str, Any]) -> dict[str, str]:
    return {name: value for name, value in _dict(obj.get("metadata")).items() if isinstance(value, str)}


def _active_user(user_id: str | None) -> dict[str, Any] | None:
    user = store.get("users", user_id=user_id) if user_id else None
    return user if user is not None and user.get("is_active", True) else None


# --- Checkout Sessions (packs) -----------------------------------------------------------


def _session_purchase(session: dict[str, Any]) -> tuple[dict[str, Any] | None, Outcome | None]:
    """Our purchase row for a payment-mode session, or the outcome explaining why there is none."""
    refs = {"session_id": session.get("id")}
    if session.get("mode") != "payment":
        return None, ignored("subscription_session", **refs)  # invoices carry subscriptions
    metadata = _metadata(session)
    transaction_id = metadata.get("transaction_id")
    row = purchases.get(transaction_id) if transaction_id else None
    if row is None:
        return None, orphaned("unknown_transaction", transaction_id=transaction_id, **refs)
    refs.update(transaction_id=row["transaction_id"], user_id=row["user_id"])
    claimed_user = _str(session.get("client_reference_id")) or metadata.get("user_id")
    if claimed_user != row["user_id"]:
        return None, orphaned("user_mismatch", **refs)
    if _str(session.get("id")) is None or row.get("stripe_session_id") not in (None, session["id"]):
        return None, orphaned("session_mismatch", **refs)
    return row, None


def _session_refs(row: dict[str, Any], session: dict[str, Any]) -> dict[str, Any]:
    return {"session_id": session["id"], "transaction_id": row["transaction_id"],
            "user_id": row["user_id"]}


def _link_payment_intent(row: dict[str, Any], payment_intent: str | None) -> bool:
    """Tell the PaymentIntent's link row which purchase it paid and bring any refund or
    dispute reported before onto the purchase row. False if the PaymentIntent is already
    linked to another purchase (then this event cannot be about our row)."""
    if payment_intent is None:
        return True
    linked, facts = purchases.link(payment_intent, row["transaction_id"])
    if linked != row["transaction_id"]:
        return False
    purchases.remember_payment_intent(row["transaction_id"], payment_intent)
    for fact in facts:
        _remember(row, fact)
    return True


def _remember(row: dict[str, Any], fact: purchases.Refund | purchases.Dispute) -> None:
    """Record one refund/dispute fact on the purchase row (applied by chargebacks.settle)."""
    if isinstance(fact, purchases.Refund):
        purchases.remember_refund(row["transaction_id"], fact.charge_id, fact.amount_refunded, fact.charge_amount)
        return
    purchases.remember_dispute(row["transaction_id"], fact.dispute_id, fact.amount, fact.closed_status)
    if fact.closed_status == "won":
        # Stripe returned the money; the credits taken back are not re-granted automatically.
        log_event(logger, "billing.dispute_won", logging.WARNING, transaction_id=row["transaction_id"],
                  user_id=row["user_id"], dispute_id=fact.dispute_id)
    if not privacy.is_anonymous(row["user_id"]):
        _flag_user(row["user_id"], reason="dispute", dispute_id=fact.dispute_id)


def _fulfil(event: Event) -> Outcome:
    """The session is paid: grant the pack and complete the row, in one ledger transaction."""
    session = _object(event)
    row, outcome = _session_purchase(session)
    if row is None:
        return outcome  # type: ignore[return-value]
    refs = _session_refs(row, session)
    if _active_user(row["user_id"]) is None:
        return orphaned("unknown_user", **refs)
    payment_intent = _id(session.get("payment_intent"))
    if not _link_payment_intent(row, payment_intent):
        return orphaned("payment_intent_mismatch", **refs)
    mismatch = payment_mismatch(session, amount=int(row["amount"]), currency=str(row["currency"]))
    if mismatch is not None:
        return _needs_review(row, session, mismatch, refs)
    stripe_fields = {
        "stripe_session_id": session["id"],
        "payment_intent": payment_intent,
        "stripe_customer_id": _id(session.get("customer")),
        "stripe_event_id": event["id"],
    }
    paid = int(session["amount_total"])
    currency = str(row["currency"])
    result = ledger.complete_purchase(
        row["transaction_id"],
        user_id=row["user_id"],
        credits=int(row["credits"]),
        amount=paid,
        currency=currency,
        stripe_fields={k: v for k, v in stripe_fields.items() if v},
        # the day's revenue counters, in the same transaction: counted once, like the grant
        extra_items=stats.revenue_items(row["user_id"], stats.PURCHASES, paid, currency),
    )
    # Refunds or a dispute reported before the purchase completed are applied now (and a
    # replay gets another chance to apply them if the previous attempt stopped here).
    chargebacks.settle(row["transaction_id"])
    if result.replayed:
        return processed("already_completed", **refs)
    log_event(logger, "billing.purchase_completed", transaction_id=row["transaction_id"],
              user_id=row["user_id"], credits=int(row["credits"]), balance_after=result.balance_after)
    return processed(**refs)


def payment_mismatch(session: dict[str, Any], *, amount: int, currency: str) -> str | None:
    """Why a paid Checkout Session is not what we asked Stripe for, or None when it is.

    Accepted: the currency we asked for, `amount_subtotal` (before discounts and tax) equal to
    the catalogue price, and `amount_total = amount_subtotal - total_details.amount_discount
    + amount_tax + amount_shipping` (a coupon or promotion code configured in Stripe lowers
    what is paid, never what is granted; tax is on top of the price).
    """
    if str(session.get("currency") or "").lower() != currency.lower():
        return "currency_mismatch"
    subtotal, total = _int(session.get("amount_subtotal")), _int(session.get("amount_total"))
    details = _dict(session.get("total_details"))
    parts = [_int(details.get(name, 0)) for name in ("amount_discount", "amount_tax", "amount_shipping")]
    if subtotal != amount or total is None or any(part is None or part < 0 for part in parts):
        return "amount_mismatch"
    discount, tax, shipping = parts
    if discount > subtotal or total != subtotal - discount + tax + shipping:  # type: ignore[operator]
        return "amount_mismatch"
    return None


def _needs_review(row: dict[str, Any], session: dict[str, Any], reason: str, refs: dict[str, Any]) -> Outcome:
    """A payment that is not what we asked for grants nothing: the row waits for an operator."""
    purchases.advance(
        row["transaction_id"], purchases.NEEDS_REVIEW, purchases.UNCOMPLETED_STATES,
        review_reason=reason, stripe_session_id=session["id"],
        paid_amount=_int(session.get("amount_total")), paid_currency=_str(session.get("currency")),
    )
    log_event(logger, "billing.payment_needs_review", logging.WARNING, reason=reason,
              expected_amount=int(row["amount"]), expected_currency=row["currency"],
              paid_amount=_int(session.get("amount_total")), paid_currency=_str(session.get("currency")),
              **refs)
    return events.needs_review(reason, **refs)


def on_session_completed(event: Event) -> Outcome:
    session = _object(event)
    if session.get("payment_status") == "paid":
        return _fulfil(event)
    row, outcome = _session_purchase(session)
    if row is None:
        return outcome  # type: ignore[return-value]
    refs = _session_refs(row, session)
    if session.get("payment_status") != "unpaid":
        return orphaned("unexpected_payment_status", **refs)  # never for our sessions
    if not _link_payment_intent(row, _id(session.get("payment_intent"))):
        return orphaned("payment_intent_mismatch", **refs)
    moved = purchases.advance(
        row["transaction_id"], purchases.AWAITING_PAYMENT, [purchases.PENDING],
        stripe_session_id=session["id"],
    )
    return processed(None if moved else "stale", **refs)


def on_async_payment_succeeded(event: Event) -> Outcome:
    return _fulfil(event)


def _close_session(event: Event, status: str) -> Outcome:
    session = _object(event)
    row, outcome = _session_purchase(session)
    if row is None:
        return outcome  # type: ignore[return-value]
    moved = purchases.advance(row["transaction_id"], status, purchases.OPEN_STATES)
    return processed(None if moved else "stale", **_session_refs(row, session))


def on_async_payment_failed(event: Event) -> Outcome:
    return _close_session(event, purchases.FAILED)


def on_session_expired(event: Event) -> Outcome:
    session = _object(event)
    if session.get("mode") == "subscription":
        # the user's one open subscription checkout is gone: a new one may be opened
        user_id = _str(session.get("client_reference_id")) or _metadata(session).get("user_id")
        session_id = _str(session.get("id"))
        released = bool(user_id and session_id and open_checkouts.session_expired(user_id, session_id))
        return processed(None if released else "stale", session_id=session_id, user_id=user_id)
    return _close_session(event, purchases.EXPIRED)


# --- subscriptions --------------------------------------------------------------------------


def _invoice_subscription(invoice: dict[str, Any]) -> tuple[str | None, dict[str, str]]:
    """(subscription id, subscription metadata) in both the current and pre-2025-03 shapes."""
    details = _dict(_dict(invoice.get("parent")).get("subscription_details"))
    if _id(details.get("subscription")):
        return _id(details["subscription"]), _metadata(details)
    legacy = _id(invoice.get("subscription"))
    return legacy, _metadata(_dict(invoice.get("subscription_details")))


def _invoice_lines(invoice: dict[str, Any]) -> list[dict[str, Any]]:
    return [line for line in _list(_dict(invoice.get("lines")).get("data")) if isinstance(line, dict)]


def _invoice_price_ids(invoice: dict[str, Any]) -> list[str]:
    """Each line's Stripe Price: `pricing.price_details.price` (current API), `price` (older)."""
    ids = []
    for line in _invoice_lines(invoice):
        pricing = _dict(_dict(line.get("pricing")).get("price_details"))
        price = _id(pricing.get("price")) or _id(line.get("price"))
        if price:
            ids.append(price)
    return ids


def _subscription_price_ids(subscription: dict[str, Any]) -> list[str]:
    items = [item for item in _list(_dict(subscription.get("items")).get("data")) if isinstance(item, dict)]
    return [price for price in (_id(item.get("price")) for item in items) if price]


def _plan(price_ids: list[str], metadata: dict[str, str]) -> Plan | None:
    """The plan by its Stripe Price (follows plan changes made in the portal), else metadata."""
    for price_id in price_ids:
        found = catalogue.plan_for_price(price_id)
        if found is not None:
            return found
    return catalogue.find_plan(metadata.get("plan_id"))


def _subscriber(
    metadata: dict[str, str], customer: str | None, refs: dict[str, Any]
) -> tuple[dict[str, Any] | None, Outcome | None]:
    user = _active_user(metadata.get("user_id"))
    if user is None:
        return None, orphaned("unknown_user", user_id=metadata.get("user_id"), **refs)
    if user.get("stripe_customer_id") and customer and user["stripe_customer_id"] != customer:
        return None, orphaned("customer_mismatch", user_id=user["user_id"], **refs)
    return user, None


class _InvoiceSubscriber(NamedTuple):
    user: dict[str, Any]
    subscription_id: str
    metadata: dict[str, str]
    refs: dict[str, Any]


def _invoice_subscriber(invoice: dict[str, Any]) -> tuple[_InvoiceSubscriber | None, Outcome | None]:
    """Who a subscription invoice is for, or the outcome explaining why there is nobody."""
    subscription_id, metadata = _invoice_subscription(invoice)
    refs: dict[str, Any] = {"invoice_id": invoice.get("id"), "subscription_id": subscription_id}
    if not subscription_id:
        return None, ignored("not_a_subscription_invoice", **refs)
    user, outcome = _subscriber(metadata, _id(invoice.get("customer")), refs)
    if user is None:
        return None, outcome
    refs["user_id"] = user["user_id"]
    return _InvoiceSubscriber(user, subscription_id, metadata, refs), None


def invoice_mismatch(invoice: dict[str, Any], plan: Plan) -> str | None:
    """Why a paid allowance invoice is not the plan's price, or None when it is.

    Accepted: the plan's currency, `subtotal` (the lines before discounts and tax) equal to
    the plan's price, and `0 < amount_paid <= total <= subtotal + tax` (a coupon lowers what
    is paid, a customer balance may pay part of it; only tax adds to the price).
    """
    if str(invoice.get("currency") or "").lower() != plan.currency:
        return "currency_mismatch"
    subtotal, total, paid = (_int(invoice.get(name)) for name in ("subtotal", "total", "amount_paid"))
    taxes = [_int(_dict(tax).get("amount")) for tax in _list(invoice.get("total_taxes"))]
    if _int(invoice.get("tax")) is not None:
        taxes.append(invoice["tax"])  # the pre-2025-03 shape
    if subtotal != plan.amount or total is None or paid is None or any(t is None or t < 0 for t in taxes):
        return "amount_mismatch"
    if not 0 < paid <= total <= subtotal + sum(taxes):  # type: ignore[arg-type]
        return "amount_mismatch"
    return None


def on_invoice_paid(event: Event) -> Outcome:
    """A paid period: its allowance once per invoice, and the tier active."""
    invoice = _object(event)
    found, outcome = _invoice_subscriber(invoice)
    if found is None:
        return outcome  # type: ignore[return-value]
    user, subscription_id, metadata, refs = found
    invoice_id = _str(invoice.get("id"))
    if invoice_id is None:
        return orphaned("missing_invoice_id", **refs)
    plan = _plan(_invoice_price_ids(invoice), metadata)
    if plan is None:
        return orphaned("unknown_plan", **refs)
    amount_paid = _int(invoice.get("amount_paid")) or 0
    currency = plan.currency
    granted = None
    if invoice.get("billing_reason") in ALLOWANCE_BILLING_REASONS and amount_paid > 0:
        mismatch = invoice_mismatch(invoice, plan)
        if mismatch is not None:
            log_event(logger, "billing.invoice_needs_review", logging.WARNING, reason=mismatch,
                      plan_id=plan.id, expected_amount=plan.amount, paid_amount=amount_paid,
                      paid_currency=_str(invoice.get("currency")), **refs)
            return events.needs_review(mismatch, plan_id=plan.id, **refs)
        result = ledger.grant(
            user["user_id"],
            plan.credits_per_period,
            source="subscription",
            record_id=invoice_id,
            amount=amount_paid,
            currency=currency,
            purchased=True,
            metadata={"subscription_id": subscription_id, "plan_id": plan.id},
            extra_items=stats.revenue_items(user["user_id"], stats.SUBSCRIPTIONS, amount_paid, currency),
        )
        granted = not result.replayed
        if granted:
            log_event(logger, "billing.allowance_granted", user_id=user["user_id"],
                      invoice_id=invoice_id, credits=plan.credits_per_period,
                      balance_after=result.balance_after)
    subscriptions.apply(user["user_id"], subscription_id=subscription_id, status="active",
                        plan=plan, event_created=int(event["created"]))
    if granted is None:
        return processed("no_allowance_for_invoice", **refs)
    return processed(None if granted else "already_granted", **refs)


def on_invoice_payment_failed(event: Event) -> Outcome:
    found, outcome = _invoice_subscriber(_object(event))
    if found is None:
        return outcome  # type: ignore[return-value]
    applied = subscriptions.apply(found.user["user_id"], subscription_id=found.subscription_id,
                                  status="past_due", plan=None, event_created=int(event["created"]))
    return processed(None if applied else "stale", **found.refs)


def on_subscription_changed(event: Event) -> Outcome:
    """created / updated / deleted: the user's tier and status follow the subscription."""
    subscription = _object(event)
    metadata = _metadata(subscription)
    refs: dict[str, Any] = {"subscription_id": _str(subscription.get("id"))}
    user, outcome = _subscriber(metadata, _id(subscription.get("customer")), refs)
    if user is None:
        return outcome  # type: ignore[return-value]
    if refs["subscription_id"] is None:
        return orphaned("missing_subscription_id", **refs)
    refs["user_id"] = user["user_id"]
    status = str(subscription.get("status") or "")
    if event["type"] == "customer.subscription.deleted":
        status = subscriptions.CANCELED
    if status == subscriptions.NOT_STARTED:
        return ignored("not_started", **refs)
    plan = _plan(_subscription_price_ids(subscription), metadata)
    if status in subscriptions.ACTIVATING and plan is None:
        return orphaned("unknown_plan", **refs)
    applied = subscriptions.apply(user["user_id"], subscription_id=refs["subscription_id"], status=status,
                                  plan=plan, event_created=int(event["created"]))
    return processed(None if applied else "stale", **refs)


# --- refunds and disputes -----------------------------------------------------------------


def _charge_purchase(transaction_id: str | None, payment_intent: str | None) -> dict[str, Any] | None:
    """The purchase a charge paid: by our metadata (copied from the PaymentIntent), else by PI."""
    row = purchases.get(transaction_id) if transaction_id else None
    if row is None and payment_intent:
        row = purchases.by_payment_intent(payment_intent)
    if row is not None and payment_intent and row.get("payment_intent") not in (None, payment_intent):
        return None
    return row


def _chargeback(
    fact: purchases.Refund | purchases.Dispute, transaction_id: str | None, payment_intent: str | None,
    refs: dict[str, Any],
) -> Outcome:
    """Record a refund/dispute on its purchase and apply it if the purchase is completed.

    Its purchase is found by our metadata, else by the PaymentIntent's link row, else by the
    PaymentIntent index (purchases completed before link rows existed). Before any session
    event named the PaymentIntent, the fact waits on the link row (`unknown_charge`, for an
    operator too: it may not be ours) and is applied when the purchase completes.
    """
    linked = purchases.report(payment_intent, fact) if payment_intent else None
    row = _charge_purchase(transaction_id or linked, payment_intent)
    if row is None:
        return orphaned("unknown_charge", recorded_until_linked=int(bool(payment_intent)), **refs)
    refs.update(transaction_id=row["transaction_id"], user_id=row["user_id"])
    if not _link_payment_intent(row, payment_intent):
        return orphaned("payment_intent_mismatch", **refs)
    _remember(row, fact)
    taken = chargebacks.settle(row["transaction_id"])
    if row.get("status") != purchases.COMPLETED and not taken:
        return processed("recorded_until_completed", **refs)
    return processed(None if taken else "nothing_new", **refs)


def on_charge_refunded(event: Event) -> Outcome:
    """Claw back the refunded share; a later refund of the same charge takes only the new part."""
    charge = _object(event)
    payment_intent = _id(charge.get("payment_intent"))
    refs: dict[str, Any] = {"charge_id": _str(charge.get("id")), "payment_intent": payment_intent}
    refunded, amount = _int(charge.get("amount_refunded")), _int(charge.get("amount"))
    if refs["charge_id"] is None or amount is None or refunded is None or not 0 <= refunded <= amount:
        return orphaned("malformed_charge", **refs)
    fact = purchases.Refund(refs["charge_id"], refunded, amount)
    return _chargeback(fact, _metadata(charge).get("transaction_id"), payment_intent, refs)


def on_dispute(event: Event) -> Outcome:
    """created / closed: claw back what is left of the purchase and flag the account."""
    dispute = _object(event)
    payment_intent = _id(dispute.get("payment_intent"))
    refs: dict[str, Any] = {"dispute_id": _str(dispute.get("id")), "charge_id": _id(dispute.get("charge")),
                            "payment_intent": payment_intent}
    if refs["dispute_id"] is None:
        return orphaned("malformed_dispute", **refs)
    closed = _str(dispute.get("status")) if event["type"] == "charge.dispute.closed" else None
    fact = purchases.Dispute(refs["dispute_id"], _int(dispute.get("amount")), closed)
    return _chargeback(fact, None, payment_intent, refs)


def _flag_user(user_id: str, *, reason: str, dispute_id: str) -> None:
    try:
        store.ddb().update_item(
            TableName=store.table_name("users"),
            Key=store.key(user_id=user_id),
            UpdateExpression=(
                "SET flagged = :yes, flagged_reason = :reason, flagged_ref = :ref, "
                "flagged_at = if_not_exists(flagged_at, :now)"
            ),
            ConditionExpression="attribute_exists(user_id)",
            ExpressionAttributeValues=store.values(yes=True, reason=reason, ref=dispute_id, now=store.iso()),
        )
    except store.ddb().exceptions.ConditionalCheckFailedException:
        pass  # the account is gone; the dispute stays recorded on the purchase
    log_event(logger, "billing.account_flagged", logging.WARNING, user_id=user_id, reason=reason)


HANDLERS: dict[str, Callable[[Event], Outcome]] = {
    "checkout.session.completed": on_session_completed,
    "checkout.session.async_payment_succeeded": on_async_payment_succeeded,
    "checkout.session.async_payment_failed": on_async_payment_failed,
    "checkout.session.expired": on_session_expired,
    "invoice.paid": on_invoice_paid,
    "invoice.payment_failed": on_invoice_payment_failed,
    "customer.subscription.created": on_subscription_changed,
    "customer.subscription.updated": on_subscription_changed,
    "customer.subscription.deleted": on_subscription_changed,
    "charge.refunded": on_charge_refunded,
    "charge.dispute.created": on_dispute,
    "charge.dispute.closed": on_dispute,
}


def process(event: Event) -> Outcome:
    """Handle one verified event once per event id (and each effect once per business object)."""
    if events.already_handled(event["id"]):
        outcome = processed("duplicate_event")
    else:
        handler = HANDLERS.get(event["type"])
        outcome = handler(event) if handler else ignored("unhandled_type")
        events.record(event, outcome)
    log_event(
        logger,
        "stripe.webhook",
        logging.INFO if outcome.status in (events.PROCESSED, events.IGNORED) else logging.WARNING,
        event_id=event["id"],
        event_type=event["type"],
        status=outcome.status,
        reason=outcome.reason,
    )
    return outcome
