"""Fulfilment paths the mutation run found unguarded (scripts/mutation.py).

Each test names the behaviour a planted fault broke without any other test failing.
"""
from __future__ import annotations

import json

from devstack.fakes.stripe_signing import build_event
from tests.billing.conftest import deliver, user_item
from tests.billing.test_fulfilment import SIGNUP, _completed_purchase, _record, _row
from tests.conftest import assert_books_balance, balance, post_json


def test_a_refund_naming_our_purchase_but_paid_by_another_payment_is_orphaned(client, stripe_fake, buyer, tap):
    """Metadata can be copied onto any charge: the PaymentIntent must be the purchase's own."""
    user = buyer()
    purchase, session = _completed_purchase(client, stripe_fake, tap, user)
    charge = {"id": "ch_elsewhere", "object": "charge", "amount": 999, "amount_refunded": 999,
              "payment_intent": "pi_someone_else",
              "metadata": {"transaction_id": purchase["transaction_id"]}}
    status, body = deliver(client, build_event("charge.refunded", charge))
    assert (status, body["status"]) == (200, "orphaned")
    assert balance(user.user_id) == SIGNUP + 2000
    assert not _row(purchase["transaction_id"]).get("refunded_amount")
    assert_books_balance(user.user_id)


def test_a_paid_invoice_alone_makes_the_tier_active(client, stripe_fake, buyer, tap):
    """Stripe promises no order: the invoice may be the first event that arrives."""
    user = buyer()
    status, body = post_json(client, "/credits/subscribe", user.token, {"plan_id": "basic_monthly"})
    assert status == 200, body
    stripe_fake.pay(body["session_id"])
    [invoice] = tap.take("invoice.paid")
    assert deliver(client, invoice)[1]["status"] == "processed"
    state = user_item(user.user_id)
    assert (state["subscription_tier"], state["subscription_status"]) == ("basic", "active")
    response = client.http.get("/credits/balance", headers={"Authorization": f"Bearer {user.token}"})
    assert response.status_code == 200
    assert json.loads(response.body) == {"balance": SIGNUP + 1500, "credits_available": SIGNUP + 1500,
                                         "credits_held": 0, "subscription_tier": "basic",
                                         "total_credits_purchased": 1500, "total_usage": 0}


def test_a_subscription_that_never_started_is_ignored_and_says_why(client, stripe_fake, buyer, tap):
    user = buyer()
    status, body = post_json(client, "/credits/subscribe", user.token, {"plan_id": "basic_monthly"})
    assert status == 200, body
    stripe_fake.pay(body["session_id"])
    created = tap.take("customer.subscription.created")[0]
    incomplete = build_event(created["type"], {**created["data"]["object"], "status": "incomplete"})
    assert deliver(client, incomplete) == (200, {"received": True, "status": "ignored"})
    assert _record(incomplete)["reason"] == "not_started"
    assert user_item(user.user_id).get("subscription_tier", "free") == "free"


def test_a_stripe_reference_is_an_id_or_an_expanded_object_never_anything_else():
    from chalicelib.billing.fulfilment import _id

    assert _id("cus_1") == "cus_1" and _id({"id": "cus_1", "object": "customer"}) == "cus_1"
    assert [_id(value) for value in ("", None, 7, {"id": ""}, {"id": 7}, ["cus_1"])] == [None] * 6


def test_a_subscription_event_for_another_customer_is_orphaned_for_review(client, stripe_fake, buyer, tap):
    """Metadata naming our user on another Stripe customer's subscription grants nothing."""
    user = buyer()
    status, body = post_json(client, "/credits/subscribe", user.token, {"plan_id": "basic_monthly"})
    assert status == 200, body
    stripe_fake.pay(body["session_id"])
    for event in tap.take():
        deliver(client, event)
    assert user_item(user.user_id)["stripe_customer_id"]
    before = balance(user.user_id)
    created = tap.take("customer.subscription.created")[0]
    [invoice] = tap.take("invoice.paid")
    for original in (created, invoice):
        forged = build_event(original["type"], {**original["data"]["object"], "id": original["data"]["object"]["id"] + "x",
                                                "customer": "cus_someone_else"})
        assert deliver(client, forged) == (200, {"received": True, "status": "orphaned"})
        record = _record(forged)
        assert (record["reason"], record["user_id"]) == ("customer_mismatch", user.user_id)
    assert balance(user.user_id) == before



def test_subscription_events_are_recorded_with_their_user_and_reason(client, stripe_fake, buyer, tap):
    user = buyer()
    status, body = post_json(client, "/credits/subscribe", user.token, {"plan_id": "basic_monthly"})
    assert status == 200, body
    stripe_fake.pay(body["session_id"])
    events = tap.take()
    for event in events:
        deliver(client, event)
    [session] = [e for e in events if e["type"] == "checkout.session.completed"]
    assert (_record(session)["status"], _record(session)["reason"]) == ("ignored", "subscription_session")
    created = next(e for e in events if e["type"] == "customer.subscription.created")
    assert (_record(created)["status"], _record(created)["user_id"]) == ("processed", user.user_id)
    items = {**created["data"]["object"]["items"]}
    items["data"] = [{**item, "price": {"id": "price_unknown"}} for item in items["data"]]
    unknown = build_event("customer.subscription.updated",
                          {**created["data"]["object"], "items": items, "metadata": {"user_id": user.user_id}})
    assert deliver(client, unknown)[1]["status"] == "orphaned"
    assert _record(unknown)["reason"] == "unknown_plan"


def test_a_dispute_is_recorded_with_its_ids_and_flags_the_account_for_the_operator(
    client, stripe_fake, buyer, tap, captured_logs
):
    user = buyer()
    purchase, session = _completed_purchase(client, stripe_fake, tap, user)
    charge_id = stripe_fake.get(session["payment_intent"])["latest_charge"]
    stripe_fake.dispute(charge_id)
    dispute = tap.one("charge.dispute.created")
    assert deliver(client, dispute)[1]["status"] == "processed"
    record = _record(dispute)
    assert (record["dispute_id"], record["charge_id"], record["transaction_id"], record["user_id"]) == (
        dispute["data"]["object"]["id"], charge_id, purchase["transaction_id"], user.user_id)
    flagged = captured_logs("billing.account_flagged")
    assert flagged and all(event == {"user_id": user.user_id, "reason": "dispute"} for event in flagged)
