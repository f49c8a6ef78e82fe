"""What each verified Stripe event does, each effect exactly once.

Exactly-once is keyed by the business object, never only by the event id (Stripe sends
different events about one object, redelivers for days, and in any order):
- a pack is granted by `ledger.complete_purchase` on our transaction row, named in the
  Checkout Session's metadata: `completed` (paid) and `async_payment_succeeded` for one
  session, each delivered any number of times, complete it once;
- a subscription allowance is `ledger.grant(source="subscription", record_id=<invoice id>)`;
- a refund is a clawback keyed by charge id + cumulative refunded amount, a dispute by its id
  (chalicelib.billing.chargebacks).
Everything else (statuses) is a conditional write that only moves forward.

An event we cannot match to a user or purchase grants nothing and is kept for an operator.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, NamedTuple

from chalicelib import ledger, stats, store
from chalicelib.billing import catalogue, chargebacks, events, purchases, subscriptions
from chalicelib.billing.catalogue import Plan
from chalicelib.billing.events import Outcome, ignored, orphaned, processed
from chalicelib.logs import log_event
from chalicelib.settings import Settings

logger = logging.getLogger(__name__)

# Invoices that open a paid period; prorations and one-off invoices grant nothing.
ALLOWANCE_BILLING_REASONS = ("subscription_create", "subscription_cycle")

Event = dict[str, Any]


def _object(event: Event) -> dict[str, Any]:
    return event["data"]["object"]


def _id(value: Any) -> str | None:
    """A Stripe reference that may be an id or an expanded object."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _metadata(obj: dict[str, Any]) -> dict[str, str]:
    metadata = obj.get("metadata")
    return metadata if isinstance(metadata, dict) else {}


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
    claimed_user = session.get("client_reference_id") or metadata.get("user_id")
    if claimed_user != row["user_id"]:
        return None, orphaned("user_mismatch", **refs)
    if row.get("stripe_session_id") not in (None, session.get("id")):
        return None, orphaned("session_mismatch", **refs)
    return row, None


def _session_refs(row: dict[str, Any], session: dict[str, Any]) -> dict[str, Any]:
    return {"session_id": session.get("id"), "transaction_id": row["transaction_id"],
            "user_id": row["user_id"]}


def _fulfil(settings: Settings, event: Event) -> Outcome:
    """The session is paid: grant the pack and complete the row, in one ledger transaction."""
    session = _object(event)
    row, outcome = _session_purchase(session)
    if row is None:
        return outcome  # type: ignore[return-value]
    refs = _session_refs(row, session)
    if _active_user(row["user_id"]) is None:
        return orphaned("unknown_user", **refs)
    payment_intent = _id(session.get("payment_intent"))
    stripe_fields = {
        "stripe_session_id": session.get("id"),
        "payment_intent": payment_intent,
        "stripe_customer_id": _id(session.get("customer")),
        "stripe_event_id": event["id"],
    }
    amount = session.get("amount_total")
    paid = int(amount) if isinstance(amount, int) else int(row["amount"])
    currency = str(session.get("currency") or row["currency"])
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


def on_session_completed(settings: Settings, event: Event) -> Outcome:
    session = _object(event)
    if session.get("payment_status") == "paid":
        return _fulfil(settings, event)
    row, outcome = _session_purchase(session)
    if row is None:
        return outcome  # type: ignore[return-value]
    refs = _session_refs(row, session)
    if session.get("payment_status") != "unpaid":
        return orphaned("unexpected_payment_status", **refs)  # never for our sessions
    purchases.remember_payment_intent(row["transaction_id"], _id(session.get("payment_intent")))
    moved = purchases.advance(
        row["transaction_id"], purchases.AWAITING_PAYMENT, [purchases.PENDING],
        stripe_session_id=session.get("id"),
    )
    return processed(None if moved else "stale", **refs)


def on_async_payment_succeeded(settings: Settings, event: Event) -> Outcome:
    return _fulfil(settings, event)


def _close_session(event: Event, status: str) -> Outcome:
    session = _object(event)
    row, outcome = _session_purchase(session)
    if row is None:
        return outcome  # type: ignore[return-value]
    moved = purchases.advance(row["transaction_id"], status, purchases.OPEN_STATES)
    return processed(None if moved else "stale", **_session_refs(row, session))


def on_async_payment_failed(settings: Settings, event: Event) -> Outcome:
    return _close_session(event, purchases.FAILED)


def on_session_expired(settings: Settings, event: Event) -> Outcome:
    return _close_session(event, purchases.EXPIRED)


# --- subscriptions --------------------------------------------------------------------------


def _invoice_subscription(invoice: dict[str, Any]) -> tuple[str | None, dict[str, str]]:
    """(subscription id, subscription metadata) in both the current and pre-2025-03 shapes."""
    details = (invoice.get("parent") or {}).get("subscription_details") or {}
    if _id(details.get("subscription")):
        return _id(details["subscription"]), _metadata(details)
    legacy = _id(invoice.get("subscription"))
    return legacy, _metadata(invoice.get("subscription_details") or {})


def _invoice_price_ids(invoice: dict[str, Any]) -> list[str]:
    ids = []
    for line in ((invoice.get("lines") or {}).get("data") or []):
        pricing = (line.get("pricing") or {}).get("price_details") or {}
        price = _id(pricing.get("price")) or _id(line.get("price"))
        if price:
            ids.append(price)
    return ids


def _subscription_price_ids(subscription: dict[str, Any]) -> list[str]:
    items = (subscription.get("items") or {}).get("data") or []
    return [price for price in (_id(item.get("price")) for item in items) if price]


def _plan(settings: Settings, price_ids: list[str], metadata: dict[str, str]) -> Plan | None:
    """The plan by its Stripe Price (follows plan changes made in the portal), else metadata."""
    for price_id in price_ids:
        found = catalogue.plan_for_price(settings, price_id)
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


def on_invoice_paid(settings: Settings, event: Event) -> Outcome:
    """A paid period: its allowance once per invoice, and the tier active."""
    invoice = _object(event)
    found, outcome = _invoice_subscriber(invoice)
    if found is None:
        return outcome  # type: ignore[return-value]
    user, subscription_id, metadata, refs = found
    plan = _plan(settings, _invoice_price_ids(invoice), metadata)
    if plan is None:
        return orphaned("unknown_plan", **refs)
    amount_paid = int(invoice.get("amount_paid") or 0)
    currency = str(invoice.get("currency") or plan.currency)
    granted = None
    if invoice.get("billing_reason") in ALLOWANCE_BILLING_REASONS and amount_paid > 0:
        result = ledger.grant(
            user["user_id"],
            plan.credits_per_period,
            source="subscription",
            record_id=invoice["id"],
            amount=amount_paid,
            currency=currency,
            purchased=True,
            metadata={"subscription_id": subscription_id, "plan_id": plan.id},
            extra_items=stats.revenue_items(user["user_id"], stats.SUBSCRIPTIONS, amount_paid, currency),
        )
        granted = not result.replayed
        if granted:
            log_event(logger, "billing.allowance_granted", user_id=user["user_id"],
                      invoice_id=invoice["id"], credits=plan.credits_per_period,
                      balance_after=result.balance_after)
    subscriptions.apply(user["user_id"], subscription_id=subscription_id, status="active",
                        plan=plan, event_created=int(event["created"]))
    if granted is None:
        return processed("no_allowance_for_invoice", **refs)
    return processed(None if granted else "already_granted", **refs)


def on_invoice_payment_failed(settings: Settings, event: Event) -> Outcome:
    found, outcome = _invoice_subscriber(_object(event))
    if found is None:
        return outcome  # type: ignore[return-value]
    applied = subscriptions.apply(found.user["user_id"], subscription_id=found.subscription_id,
                                  status="past_due", plan=None, event_created=int(event["created"]))
    return processed(None if applied else "stale", **found.refs)


def on_subscription_changed(settings: Settings, event: Event) -> Outcome:
    """created / updated / deleted: the user's tier and status follow the subscription."""
    subscription = _object(event)
    metadata = _metadata(subscription)
    refs: dict[str, Any] = {"subscription_id": subscription.get("id")}
    user, outcome = _subscriber(metadata, _id(subscription.get("customer")), refs)
    if user is None:
        return outcome  # type: ignore[return-value]
    refs["user_id"] = user["user_id"]
    status = str(subscription.get("status") or "")
    if event["type"] == "customer.subscription.deleted":
        status = subscriptions.CANCELED
    if status == subscriptions.NOT_STARTED:
        return ignored("not_started", **refs)
    plan = _plan(settings, _subscription_price_ids(subscription), metadata)
    if status in subscriptions.ACTIVATING and plan is None:
        return orphaned("unknown_plan", **refs)
    applied = subscriptions.apply(user["user_id"], subscription_id=subscription["id"], status=status,
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


def on_charge_refunded(settings: Settings, event: Event) -> Outcome:
    """Claw back the refunded share; a later refund of the same charge takes only the new part."""
    charge = _object(event)
    payment_intent = _id(charge.get("payment_intent"))
    refs: dict[str, Any] = {"charge_id": charge.get("id"), "payment_intent": payment_intent}
    row = _charge_purchase(_metadata(charge).get("transaction_id"), payment_intent)
    if row is None:
        return orphaned("unknown_charge", **refs)
    refs.update(transaction_id=row["transaction_id"], user_id=row["user_id"])
    purchases.remember_payment_intent(row["transaction_id"], payment_intent)
    purchases.remember_refund(row["transaction_id"], charge["id"], int(charge.get("amount_refunded") or 0),
                              int(charge.get("amount") or 0))
    taken = chargebacks.settle(row["transaction_id"])
    if row.get("status") != purchases.COMPLETED and not taken:
        return processed("recorded_until_completed", **refs)
    return processed(None if taken else "nothing_new", **refs)


def on_dispute_created(settings: Settings, event: Event) -> Outcome:
    """Claw back what is left of the purchase and flag the account for review."""
    dispute = _object(event)
    payment_intent = _id(dispute.get("payment_intent"))
    refs: dict[str, Any] = {"dispute_id": dispute.get("id"), "charge_id": _id(dispute.get("charge")),
                            "payment_intent": payment_intent}
    row = _charge_purchase(None, payment_intent)
    if row is None:
        return orphaned("unknown_charge", **refs)
    refs.update(transaction_id=row["transaction_id"], user_id=row["user_id"])
    purchases.remember_dispute(row["transaction_id"], dispute["id"], dispute.get("amount"))
    chargebacks.settle(row["transaction_id"])
    _flag_user(row["user_id"], reason="dispute", dispute_id=dispute["id"])
    return processed(**refs)


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


HANDLERS: dict[str, Callable[[Settings, Event], Outcome]] = {
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
    "charge.dispute.created": on_dispute_created,
}


def process(settings: Settings, event: Event) -> Outcome:
    """Handle one verified event once per event id (and each effect once per business object)."""
    if events.already_handled(event["id"]):
        outcome = processed("duplicate_event")
    else:
        handler = HANDLERS.get(event["type"])
        outcome = handler(settings, event) if handler else ignored("unhandled_type")
        events.record(event, outcome)
    log_event(
        logger,
        "stripe.webhook",
        logging.WARNING if outcome.status == events.ORPHANED else logging.INFO,
        event_id=event["id"],
        event_type=event["type"],
        status=outcome.status,
        reason=outcome.reason,
    )
    return outcome
