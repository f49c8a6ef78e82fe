"""Builders for the Stripe objects the fake hands out, in Stripe's real shapes.

Pure functions: no state, no HTTP. Since API version 2025-03-31 ("basil")
Stripe moved subscription fields around (invoice `parent.subscription_details`
instead of `subscription`; periods on subscription items instead of the
subscription), so the builders follow the fake's `api_version`, the way a
webhook endpoint's version decides the shapes it receives.
"""

from __future__ import annotations

import calendar
import time
from datetime import datetime, timezone
from typing import Any

from .base import random_id

BASIL = "2025-03-31"
INTERVAL_SECONDS = {"day": 86_400, "week": 7 * 86_400}


def is_modern(api_version: str) -> bool:
    """True for API versions from 2025-03-31.basil on (the new invoice shapes)."""
    return api_version[:10] >= BASIL


def now() -> int:
    return int(time.time())


def add_interval(start: int, interval: str, count: int = 1) -> int:
    """`start` plus `count` billing intervals (calendar months/years, like Stripe)."""
    if interval in INTERVAL_SECONDS:
        return start + INTERVAL_SECONDS[interval] * count
    moment = datetime.fromtimestamp(start, timezone.utc)
    months = moment.month - 1 + count * (12 if interval == "year" else 1)
    year, month = moment.year + months // 12, months % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return int(moment.replace(year=year, month=month, day=day).timestamp())


def product(name: str, *, product_id: str | None = None, metadata: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "id": product_id or random_id("prod_", 14),
        "object": "product",
        "active": True,
        "created": now(),
        "description": None,
        "livemode": False,
        "metadata": metadata or {},
        "name": name,
        "type": "service",
    }


def price(
    *,
    unit_amount: int,
    currency: str,
    product_id: str,
    recurring: dict[str, Any] | None = None,
    price_id: str | None = None,
    lookup_key: str | None = None,
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    if recurring is not None:
        recurring = {"interval": recurring["interval"], "interval_count": int(recurring.get("interval_count", 1)),
                     "meter": None, "usage_type": "licensed"}
    return {
        "id": price_id or random_id("price_", 24),
        "object": "price",
        "active": True,
        "billing_scheme": "per_unit",
        "created": now(),
        "currency": currency,
        "livemode": False,
        "lookup_key": lookup_key,
        "metadata": metadata or {},
        "nickname": None,
        "product": product_id,
        "recurring": recurring,
        "tax_behavior": "unspecified",
        "type": "recurring" if recurring else "one_time",
        "unit_amount": unit_amount,
        "unit_amount_decimal": str(unit_amount),
    }


def customer(params: dict[str, Any], *, customer_id: str | None = None) -> dict[str, Any]:
    return {
        "id": customer_id or random_id("cus_", 14),
        "object": "customer",
        "address": None,
        "balance": 0,
        "created": now(),
        "currency": None,
        "default_source": None,
        "delinquent": False,
        "description": params.get("description"),
        "email": params.get("email"),
        "invoice_prefix": random_id("", 8).upper(),
        "invoice_settings": {"custom_fields": None, "default_payment_method": None, "footer": None},
        "livemode": False,
        "metadata": dict(params.get("metadata") or {}),
        "name": params.get("name"),
        "phone": params.get("phone"),
        "preferred_locales": [],
        "shipping": None,
        "tax_exempt": "none",
        "test_clock": None,
    }


def checkout_line_item(price_obj: dict[str, Any], quantity: int, description: str) -> dict[str, Any]:
    amount = price_obj["unit_amount"] * quantity
    return {
        "id": random_id("li_", 24),
        "object": "item",
        "amount_discount": 0,
        "amount_subtotal": amount,
        "amount_tax": 0,
        "amount_total": amount,
        "currency": price_obj["currency"],
        "description": description,
        "price": price_obj,
        "quantity": quantity,
    }


def checkout_session(
    *,
    session_id: str,
    url: str,
    params: dict[str, Any],
    amount_total: int,
    currency: str,
    customer_id: str | None,
    expires_at: int,
) -> dict[str, Any]:
    return {
        "id": session_id,
        "object": "checkout.session",
        "after_expiration": None,
        "allow_promotion_codes": params.get("allow_promotion_codes") == "true" or None,
        "amount_subtotal": amount_total,
        "amount_total": amount_total,
        "automatic_tax": {"enabled": False, "liability": None, "status": None},
        "billing_address_collection": params.get("billing_address_collection"),
        "cancel_url": params.get("cancel_url"),
        "client_reference_id": params.get("client_reference_id"),
        "client_secret": None,
        "consent": None,
        "created": now(),
        "currency": currency,
        "customer": customer_id,
        "customer_creation": None if customer_id else params.get("customer_creation", "if_required"),
        "customer_details": None,
        "customer_email": params.get("customer_email"),
        "expires_at": expires_at,
        "invoice": None,
        "livemode": False,
        "locale": params.get("locale"),
        "metadata": dict(params.get("metadata") or {}),
        "mode": params["mode"],
        "payment_intent": None,
        "payment_link": None,
        "payment_method_collection": "always" if params["mode"] == "subscription" else None,
        "payment_method_types": list(params.get("payment_method_types") or ["card"]),
        "payment_status": "unpaid",
        "status": "open",
        "submit_type": params.get("submit_type"),
        "subscription": None,
        "success_url": params.get("success_url"),
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        "ui_mode": "hosted",
        "url": url,
    }


def customer_details(email: str) -> dict[str, Any]:
    return {
        "address": {"city": None, "country": "US", "line1": None, "line2": None, "postal_code": "10001", "state": None},
        "email": email,
        "name": "Test Buyer",
        "phone": None,
        "tax_exempt": "none",
        "tax_ids": [],
    }


def payment_intent(
    *, amount: int, currency: str, customer_id: str | None, metadata: dict[str, str], status: str
) -> dict[str, Any]:
    pi_id = random_id("pi_", 24)
    return {
        "id": pi_id,
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": 0,
        "amount_received": amount if status == "succeeded" else 0,
        "canceled_at": None,
        "capture_method": "automatic_async",
        "client_secret": f"{pi_id}_secret_{random_id('', 24)}",
        "confirmation_method": "automatic",
        "created": now(),
        "currency": currency,
        "customer": customer_id,
        "description": None,
        "last_payment_error": None,
        "latest_charge": None,
        "livemode": False,
        "metadata": dict(metadata),
        "payment_method": random_id("pm_", 24),
        "payment_method_types": ["card"],
        "status": status,
    }


def charge(*, pi: dict[str, Any], status: str, billing_email: str) -> dict[str, Any]:
    paid = status == "succeeded"
    return {
        "id": random_id("ch_", 24),
        "object": "charge",
        "amount": pi["amount"],
        "amount_captured": pi["amount"] if paid else 0,
        "amount_refunded": 0,
        "balance_transaction": random_id("txn_", 24) if paid else None,
        "billing_details": {"address": None, "email": billing_email, "name": "Test Buyer", "phone": None},
        "captured": paid,
        "created": now(),
        "currency": pi["currency"],
        "customer": pi["customer"],
        "description": None,
        "disputed": False,
        "failure_code": None,
        "failure_message": None,
        "livemode": False,
        "metadata": dict(pi["metadata"]),
        "outcome": {"network_status": "approved_by_network", "risk_level": "normal",
                    "seller_message": "Payment complete.", "type": "authorized"},
        "paid": paid,
        "payment_intent": pi["id"],
        "payment_method": pi["payment_method"],
        "receipt_email": billing_email,
        "receipt_url": None,
        "refunded": False,
        "status": status,
    }


def subscription_item(sub_id: str, price_obj: dict[str, Any], quantity: int, start: int, end: int) -> dict[str, Any]:
    return {
        "id": random_id("si_", 14),
        "object": "subscription_item",
        "created": now(),
        "current_period_end": end,
        "current_period_start": start,
        "metadata": {},
        "price": price_obj,
        "quantity": quantity,
        "subscription": sub_id,
    }


def subscription(
    *,
    customer_id: str,
    items: list[tuple[dict[str, Any], int]],
    metadata: dict[str, str],
    start: int,
    end: int,
    api_version: str,
) -> dict[str, Any]:
    sub_id = random_id("sub_", 24)
    data = [subscription_item(sub_id, p, q, start, end) for p, q in items]
    sub = {
        "id": sub_id,
        "object": "subscription",
        "billing_cycle_anchor": start,
        "cancel_at": None,
        "cancel_at_period_end": False,
        "canceled_at": None,
        "cancellation_details": {"comment": None, "feedback": None, "reason": None},
        "collection_method": "charge_automatically",
        "created": start,
        "currency": items[0][0]["currency"],
        "customer": customer_id,
        "default_payment_method": None,
        "ended_at": None,
        "items": {"object": "list", "data": data, "has_more": False, "total_count": len(data),
                  "url": f"/v1/subscription_items?subscription={sub_id}"},
        "latest_invoice": None,
        "livemode": False,
        "metadata": dict(metadata),
        "start_date": start,
        "status": "active",
        "trial_end": None,
        "trial_start": None,
    }
    set_subscription_period(sub, start, end, api_version)
    return sub


def subscription_period(sub: dict[str, Any]) -> tuple[int, int]:
    item = sub["items"]["data"][0]
    return item["current_period_start"], item["current_period_end"]


def set_subscription_period(sub: dict[str, Any], start: int, end: int, api_version: str) -> None:
    for item in sub["items"]["data"]:
        item["current_period_start"], item["current_period_end"] = start, end
    if not is_modern(api_version):
        sub["current_period_start"], sub["current_period_end"] = start, end


def invoice(
    *,
    sub: dict[str, Any],
    billing_reason: str,
    start: int,
    end: int,
    paid: bool,
    customer_email: str | None,
    api_version: str,
    pi: dict[str, Any] | None,
    charge_id: str | None,
) -> dict[str, Any]:
    invoice_id = random_id("in_", 24)
    lines = [_invoice_line(invoice_id, sub, item, start, end, api_version) for item in sub["items"]["data"]]
    total = sum(line["amount"] for line in lines)
    inv: dict[str, Any] = {
        "id": invoice_id,
        "object": "invoice",
        "account_country": "US",
        "amount_due": total,
        "amount_paid": total if paid else 0,
        "amount_remaining": 0 if paid else total,
        "attempt_count": 1,
        "attempted": True,
        "auto_advance": not paid,
        "billing_reason": billing_reason,
        "collection_method": "charge_automatically",
        "created": now(),
        "currency": sub["currency"],
        "customer": sub["customer"],
        "customer_email": customer_email,
        "hosted_invoice_url": None,
        "invoice_pdf": None,
        "lines": {"object": "list", "data": lines, "has_more": False, "total_count": len(lines),
                  "url": f"/v1/invoices/{invoice_id}/lines"},
        "livemode": False,
        "metadata": {},
        "next_payment_attempt": None if paid else now() + 3 * 86_400,
        "number": f"{random_id('', 8).upper()}-0001",
        "period_end": start,  # Stripe: the (past) usage period, not the service period
        "period_start": start,
        "status": "paid" if paid else "open",
        "status_transitions": {"finalized_at": now(), "paid_at": now() if paid else None,
                               "marked_uncollectible_at": None, "voided_at": None},
        "subtotal": total,
        "total": total,
    }
    if is_modern(api_version):
        inv["parent"] = {
            "type": "subscription_details",
            "quote_details": None,
            "subscription_details": {"metadata": dict(sub["metadata"]), "subscription": sub["id"]},
        }
    else:
        inv.update(
            subscription=sub["id"],
            subscription_details={"metadata": dict(sub["metadata"])},
            paid=paid,
            payment_intent=pi["id"] if pi else None,
            charge=charge_id,
        )
    return inv


def _invoice_line(
    invoice_id: str, sub: dict[str, Any], item: dict[str, Any], start: int, end: int, api_version: str
) -> dict[str, Any]:
    price_obj = item["price"]
    amount = price_obj["unit_amount"] * item["quantity"]
    line: dict[str, Any] = {
        "id": random_id("il_", 24),
        "object": "line_item",
        "amount": amount,
        "currency": price_obj["currency"],
        "description": f"{item['quantity']} × subscription",
        "invoice": invoice_id,
        "livemode": False,
        "metadata": dict(item["metadata"] if is_modern(api_version) else sub["metadata"]),
        "period": {"end": end, "start": start},
        "quantity": item["quantity"],
        "subscription": sub["id"],
    }
    if is_modern(api_version):
        line["parent"] = {
            "type": "subscription_item_details",
            "invoice_item_details": None,
            "subscription_item_details": {"invoice_item": None, "proration": False, "proration_details": {"credited_items": None},
                                          "subscription": sub["id"], "subscription_item": item["id"]},
        }
        line["pricing"] = {"type": "price_details", "price_details": {"price": price_obj["id"], "product": price_obj["product"]},
                           "unit_amount_decimal": price_obj["unit_amount_decimal"]}
    else:
        line.update(price=price_obj, proration=False, subscription_item=item["id"], type="subscription")
    return line


def refund(*, ch: dict[str, Any], amount: int, reason: str | None, metadata: dict[str, str]) -> dict[str, Any]:
    return {
        "id": random_id("re_", 24),
        "object": "refund",
        "amount": amount,
        "balance_transaction": random_id("txn_", 24),
        "charge": ch["id"],
        "created": now(),
        "currency": ch["currency"],
        "metadata": dict(metadata),
        "payment_intent": ch["payment_intent"],
        "reason": reason,
        "receipt_number": None,
        "status": "succeeded",
    }


def dispute(*, ch: dict[str, Any], amount: int, reason: str) -> dict[str, Any]:
    return {
        "id": random_id("dp_", 24),
        "object": "dispute",
        "amount": amount,
        "balance_transactions": [],
        "charge": ch["id"],
        "created": now(),
        "currency": ch["currency"],
        "evidence_details": {"due_by": now() + 7 * 86_400, "has_evidence": False, "past_due": False, "submission_count": 0},
        "is_charge_refundable": False,
        "livemode": False,
        "metadata": {},
        "payment_intent": ch["payment_intent"],
        "reason": reason,
        "status": "needs_response",
    }


def billing_portal_session(*, customer_id: str, return_url: str | None, url: str, session_id: str) -> dict[str, Any]:
    return {
        "id": session_id,
        "object": "billing_portal.session",
        "configuration": "bpc_" + random_id("", 24),
        "created": now(),
        "customer": customer_id,
        "flow": None,
        "livemode": False,
        "locale": None,
        "on_behalf_of": None,
        "return_url": return_url,
        "url": url,
    }
