"""Buying: a credit pack (Checkout, mode payment), a plan (Checkout, mode subscription), and
the Stripe billing portal for managing a subscription.

Nothing here grants credits: a purchase only writes a pending row and returns the Checkout
URL. Credits arrive when Stripe's signed webhook says the money did (chalicelib.billing.fulfilment).
Every Stripe POST carries an idempotency key derived from our own ids, so a retry (ours,
stripe-python's, or the client's with the same Idempotency-Key) never creates a second object.
"""
from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Mapping

from chalicelib.accounts import auth
from chalicelib.aws import store
from chalicelib.web import idempotency
from chalicelib.billing import catalogue, open_checkouts, purchases, stripe_api, subscriptions
from chalicelib.core.errors import Conflict
from chalicelib.core.logs import log_event
from chalicelib.core.settings import get_settings
from chalicelib.core.validation import Field, Schema

logger = logging.getLogger(__name__)

ID_PATTERN = r"[a-z0-9_]{1,64}"
PURCHASE_SCHEMA = Schema(
    {"package_id": Field(str, required=True, min_length=1, max_length=64, pattern=ID_PATTERN)},
    name="purchase",
)
SUBSCRIBE_SCHEMA = Schema(
    {"plan_id": Field(str, required=True, min_length=1, max_length=64, pattern=ID_PATTERN)},
    name="subscribe",
)

# Stripe accepts 30 minutes to 24 hours; an hour keeps abandoned purchases from lingering.
CHECKOUT_TTL_SECONDS = 3600
CHECKOUT_UNAVAILABLE = "checkout_unavailable"


def handle_purchase(
    user_id: str, body: dict[str, Any], headers: Mapping[str, str] | None
) -> tuple[int, Any]:
    """POST /credits/purchase: (status, body); an `Idempotency-Key` replays the first answer.

    The key also derives the transaction id, so even past the key's 24 hours a retry finds
    its purchase instead of creating a second one.
    """
    key = idempotency.key_from(headers)
    return idempotency.run(
        headers, user_id, "POST /credits/purchase", body,
        lambda: purchase(user_id, body["package_id"], idempotency_key=key),
    )


def handle_subscribe(
    user_id: str, body: dict[str, Any], headers: Mapping[str, str] | None
) -> tuple[int, Any]:
    """POST /credits/subscribe: (status, body); an `Idempotency-Key` replays the first answer."""
    key = idempotency.key_from(headers)
    return idempotency.run(
        headers, user_id, "POST /credits/subscribe", body,
        lambda: subscribe(user_id, body["plan_id"], idempotency_key=key),
    )


def ensure_customer(user: dict[str, Any]) -> str:
    """The user's Stripe customer id, creating the customer the first time only.

    Stripe's idempotency key (derived from the user id) makes parallel first purchases get
    the same customer from Stripe; the conditional write makes sure only one id is stored.
    """
    if user.get("stripe_customer_id"):
        return str(user["stripe_customer_id"])
    user_id = user["user_id"]
    stripe = stripe_api.client()
    customer = stripe_api.call(
        "customers.create",
        lambda: stripe.v1.customers.create(
            params={"email": user["email"], "metadata": {"user_id": user_id}},
            options={"idempotency_key": f"customer-{user_id}"},
        ),
    )
    try:
        store.ddb().update_item(
            TableName=store.table_name("users"),
            Key=store.key(user_id=user_id),
            UpdateExpression="SET stripe_customer_id = :customer",
            ConditionExpression="attribute_exists(user_id) AND attribute_not_exists(stripe_customer_id)",
            ExpressionAttributeValues=store.values(customer=customer["id"]),
        )
    except store.ddb().exceptions.ConditionalCheckFailedException:
        stored = auth.get_user(user_id).get("stripe_customer_id")
        if stored:
            return str(stored)
        raise
    log_event(logger, "billing.customer_created", user_id=user_id)
    return str(customer["id"])


def _line_item(item_id: str, name: str, amount: int, currency: str,
               recurring: dict[str, str] | None = None) -> dict[str, Any]:
    price_id = catalogue.price_ids().get(item_id)
    if price_id:
        return {"price": price_id, "quantity": 1}
    price_data: dict[str, Any] = {
        "currency": currency,
        "unit_amount": amount,
        "product_data": {"name": name, "metadata": {"catalogue_id": item_id}},
    }
    if recurring:
        price_data["recurring"] = recurring
    return {"price_data": price_data, "quantity": 1}


def _create_checkout_session(
    stripe: Any, *, mode: str, customer_id: str, user_id: str, line_item: dict[str, Any],
    metadata: dict[str, str], metadata_copy: str, idempotency_key: str, **extra: Any,
) -> dict[str, Any]:
    """A Checkout Session for our customer, returning to our pages.

    `metadata` also goes on the object the session creates (`metadata_copy`:
    payment_intent_data or subscription_data), so its later events name our ids too.
    """
    settings = get_settings()
    return stripe_api.call(
        "checkout.sessions.create",
        lambda: stripe.v1.checkout.sessions.create(
            params={
                "mode": mode,
                "customer": customer_id,
                "client_reference_id": user_id,
                "line_items": [line_item],
                "metadata": metadata,
                metadata_copy: {"metadata": metadata},
                "success_url": settings.checkout_success_url,
                "cancel_url": settings.checkout_cancel_url,
                **extra,
            },
            options={"idempotency_key": idempotency_key},
        ),
    )


def _purchase_response(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "checkout_url": row["checkout_url"],
        "session_id": row["stripe_session_id"],
        "transaction_id": row["transaction_id"],
    }


def purchase(
    user_id: str, package_id: str, idempotency_key: str | None = None
) -> dict[str, Any]:
    """Start buying a pack: a pending row, then a Checkout Session that names it.

    The row is written first, so every session we create has a row to complete, and the
    Checkout parameters (including `expires_at`) come from the row, so a retried request
    sends Stripe identical parameters under the same idempotency key.
    """
    pack = catalogue.pack(package_id)
    user = auth.get_user(user_id)
    customer_id = ensure_customer(user)
    now = store.now()
    row = purchases.create_pending(
        {
            "transaction_id": purchases.new_transaction_id(user_id, idempotency_key),
            "user_id": user_id,
            "kind": purchases.KIND,
            "package_id": pack.id,
            "credits": pack.credits,
            "amount": pack.amount,
            "currency": pack.currency,
            "status": purchases.PENDING,
            "stripe_customer_id": customer_id,
            "checkout_expires_at": int(now.timestamp()) + CHECKOUT_TTL_SECONDS,
            "created_at": store.iso(now),
        }
    )
    if row["user_id"] != user_id or row["package_id"] != pack.id:
        raise Conflict(
            "This Idempotency-Key was already used with a different request",
            code="idempotency_conflict",
        )
    if row.get("stripe_session_id") and row.get("checkout_url"):
        return _purchase_response(row)  # a replay of a purchase that already has its session
    if row["status"] == purchases.FAILED and row.get("failure_reason") == CHECKOUT_UNAVAILABLE:
        # A retry (same Idempotency-Key) after Stripe could not be reached: try again.
        purchases.advance(row["transaction_id"], purchases.PENDING, [purchases.FAILED])
    elif row["status"] != purchases.PENDING:
        raise Conflict("This purchase can no longer be paid; start a new one", code="purchase_closed")
    transaction_id = row["transaction_id"]
    stripe = stripe_api.client()
    try:
        session = _create_checkout_session(
            stripe,
            mode="payment",
            customer_id=customer_id,
            user_id=user_id,
            line_item=_line_item(pack.id, pack.name, pack.amount, pack.currency),
            metadata={"user_id": user_id, "package_id": pack.id, "transaction_id": transaction_id},
            metadata_copy="payment_intent_data",
            idempotency_key=f"checkout-{transaction_id}",
            expires_at=int(row["checkout_expires_at"]),
        )
    except Exception:
        # Without a session the row can never be paid: close it now rather than leave it pending.
        purchases.advance(
            transaction_id, purchases.FAILED, [purchases.PENDING],
            failure_reason=CHECKOUT_UNAVAILABLE,
        )
        raise
    purchases.attach_session(transaction_id, session)
    log_event(
        logger, "billing.checkout_created", user_id=user_id, package_id=pack.id,
        transaction_id=transaction_id, session_id=session["id"],
    )
    return {"checkout_url": session["url"], "session_id": session["id"], "transaction_id": transaction_id}


def subscribe(
    user_id: str, plan_id: str, idempotency_key: str | None = None
) -> dict[str, Any]:
    """Start a subscription: Checkout in subscription mode; allowances come with each paid invoice.

    At most one such Checkout is open per user (chalicelib.billing.open_checkouts): parallel
    or repeated requests for the same plan get the open session; another plan expires it first.
    """
    plan = catalogue.plan(plan_id)
    user = auth.get_user(user_id)
    if subscriptions.is_subscribed(user):
        raise Conflict(
            "You already have a subscription; manage it in the billing portal",
            code="already_subscribed",
        )
    customer_id = ensure_customer(user)
    request_id = (
        uuid.uuid5(uuid.NAMESPACE_URL, f"{user_id}\n{idempotency_key}").hex
        if idempotency_key
        else uuid.uuid4().hex
    )
    stripe = stripe_api.client()
    now = store.epoch()
    replaces = None
    deadline = time.monotonic() + open_checkouts.WAIT_SECONDS
    while (held := open_checkouts.claim(user_id, request_id, plan.id, now, replaces=replaces)) is not None:
        if held.session_id and held.plan_id == plan.id:
            return {"checkout_url": held.url, "session_id": held.session_id}
        if time.monotonic() > deadline:
            raise Conflict("A subscription checkout is being opened; try again in a moment",
                           code="subscription_checkout_in_progress")
        if held.session_id:  # open for another plan: close it, then take its claim over
            _expire_subscription_checkout(stripe, held.session_id)
            replaces = held.request_id
        else:  # another request is opening one: wait for its session
            time.sleep(0.1)
    try:
        session = _create_checkout_session(
            stripe,
            mode="subscription",
            customer_id=customer_id,
            user_id=user_id,
            line_item=_line_item(plan.id, plan.name, plan.amount, plan.currency,
                                 recurring={"interval": plan.interval}),
            metadata={"user_id": user_id, "plan_id": plan.id},
            metadata_copy="subscription_data",
            idempotency_key=f"subscribe-{request_id}",
            expires_at=now + CHECKOUT_TTL_SECONDS,
        )
    except Exception:
        open_checkouts.release(user_id, request_id)
        raise
    open_checkouts.attach(user_id, request_id, session)
    log_event(logger, "billing.subscription_checkout_created", user_id=user_id, plan_id=plan.id,
              session_id=session["id"])
    return {"checkout_url": session["url"], "session_id": session["id"]}


def _expire_subscription_checkout(stripe: Any, session_id: str) -> None:
    """Close the user's open checkout for another plan; 409 if it was paid meanwhile."""
    session = stripe_api.call("checkout.sessions.retrieve",
                              lambda: stripe.v1.checkout.sessions.retrieve(session_id))
    if session.get("status") == "open":
        stripe_api.call("checkout.sessions.expire", lambda: stripe.v1.checkout.sessions.expire(
            session_id, options={"idempotency_key": f"expire-{session_id}"}))
    elif session.get("status") == "complete":
        raise Conflict("You already have a subscription; manage it in the billing portal",
                       code="already_subscribed")


def portal(user_id: str) -> dict[str, Any]:
    """A Stripe billing portal session for the user's customer (cancel, change card, invoices)."""
    settings = get_settings()
    user = auth.get_user(user_id)
    customer_id = user.get("stripe_customer_id")
    if not customer_id:
        raise Conflict("There is no billing account yet: buy credits or subscribe first",
                       code="no_billing_account")
    stripe = stripe_api.client()
    session = stripe_api.call(
        "billing_portal.sessions.create",
        lambda: stripe.v1.billing_portal.sessions.create(
            params={"customer": customer_id, "return_url": settings.billing_portal_return_url},
            options={"idempotency_key": f"portal-{uuid.uuid4().hex}"},
        ),
    )
    return {"url": session["url"]}
