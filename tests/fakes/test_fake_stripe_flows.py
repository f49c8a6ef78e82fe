"""Stripe fake lifecycles: hosted checkout -> signed webhooks, subscriptions, refunds,
disputes, async payments, expiry, the /_fake HTTP test API and delivery retries."""

from __future__ import annotations

import re
from typing import Any, Iterator

import pytest
import requests
import stripe

from devstack.fakes import FakeError, StripeFake

from .conftest import WebhookReceiver

SECRET = "whsec_flow_secret"
ONE_TIME = {"price_data": {"currency": "usd", "unit_amount": 1500, "product_data": {"name": "Popular pack"}}, "quantity": 1}
MONTHLY = {"price_data": {"currency": "usd", "unit_amount": 999, "recurring": {"interval": "month"},
                          "product_data": {"name": "Pro"}}, "quantity": 1}


@pytest.fixture
def fake(receiver: WebhookReceiver) -> Iterator[StripeFake]:
    with StripeFake(webhook_url=receiver.hook_url, webhook_secret=SECRET) as server:
        yield server


def _session(fake: StripeFake, mode: str = "payment", **extra: Any) -> Any:
    client = stripe.StripeClient("sk_test_fake_key", base_addresses={"api": fake.url})
    params = {
        "mode": mode, "line_items": [ONE_TIME if mode == "payment" else MONTHLY],
        "success_url": "http://127.0.0.1:8000/credits/success?session_id={CHECKOUT_SESSION_ID}",
        "cancel_url": "http://127.0.0.1:8000/credits/cancel", "client_reference_id": "user-1",
        "metadata": {"user_id": "user-1"}, **extra,
    }
    return client.v1.checkout.sessions.create(params=params)


def _received(receiver: WebhookReceiver) -> list[Any]:
    """Every event the receiver got, verified with stripe-python like our backend does."""
    return [stripe.Webhook.construct_event(r.body, r.headers["Stripe-Signature"], SECRET) for r in receiver.requests]


def test_hosted_checkout_pay_delivers_signed_events_and_redirects(fake: StripeFake, receiver: WebhookReceiver) -> None:
    session = _session(fake)
    page = requests.get(session.url, timeout=5)
    assert page.status_code == 200 and "Popular pack" in page.text and f"/checkout/{session.id}/pay" in page.text
    paid = requests.post(f"{fake.url}/checkout/{session.id}/pay", allow_redirects=False, timeout=10)
    assert paid.status_code == 303
    assert paid.headers["Location"] == f"http://127.0.0.1:8000/credits/success?session_id={session.id}"
    events = _received(receiver)
    assert [e.type for e in events] == ["charge.succeeded", "payment_intent.succeeded", "checkout.session.completed"]
    completed = events[-1].data.object
    assert (completed.id, completed.status, completed.payment_status) == (session.id, "complete", "paid")
    assert completed.client_reference_id == "user-1" and completed.metadata.to_dict() == {"user_id": "user-1"}
    assert completed.payment_intent.startswith("pi_") and completed.amount_total == 1500
    assert events[-1].request.id is None  # caused by the customer, not by an API call
    assert all(d.ok for d in fake.deliveries)
    assert "no longer active" in requests.get(session.url, timeout=5).text
    assert requests.post(f"{fake.url}/checkout/{session.id}/pay", allow_redirects=False, timeout=5).status_code == 400


def test_subscription_checkout_invoice_shape(fake: StripeFake, receiver: WebhookReceiver) -> None:
    session = _session(fake, "subscription", subscription_data={"metadata": {"user_id": "user-1", "plan_id": "pro"}})
    done = fake.pay(session.id)
    types = [e.type for e in _received(receiver)]
    assert {"customer.created", "customer.subscription.created", "invoice.paid", "checkout.session.completed"} <= set(types)
    assert types[-1] == "checkout.session.completed"
    invoice = fake.events_of_type("invoice.paid")[0]["data"]["object"]
    assert (invoice["customer"], invoice["billing_reason"], invoice["amount_paid"]) == (done["customer"], "subscription_create", 999)
    assert invoice["parent"]["subscription_details"] == {"metadata": {"user_id": "user-1", "plan_id": "pro"},
                                                         "subscription": done["subscription"]}
    period = invoice["lines"]["data"][0]["period"]
    assert period["end"] > period["start"]
    sub = fake.get(done["subscription"])
    assert sub["metadata"] == {"user_id": "user-1", "plan_id": "pro"} and sub["status"] == "active"
    assert done["invoice"] == invoice["id"] and done["payment_intent"] is None


def test_legacy_api_version_has_the_old_invoice_fields(receiver: WebhookReceiver) -> None:
    with StripeFake(webhook_url=receiver.hook_url, webhook_secret=SECRET, api_version="2024-06-20") as fake:
        done = fake.pay(_session(fake, "subscription", subscription_data={"metadata": {"user_id": "u"}}).id)
        invoice = fake.events_of_type("invoice.paid")[0]
        assert invoice["api_version"] == "2024-06-20"
        obj = invoice["data"]["object"]
        assert obj["subscription"] == done["subscription"] and obj["subscription_details"]["metadata"] == {"user_id": "u"}
        assert "parent" not in obj and "current_period_end" in fake.get(done["subscription"])


def test_renew_fail_and_cancel(fake: StripeFake, receiver: WebhookReceiver) -> None:
    sub_id = fake.pay(_session(fake, "subscription").id)["subscription"]
    first_period = fake.events_of_type("invoice.paid")[0]["data"]["object"]["lines"]["data"][0]["period"]
    renewal = fake.renew(sub_id)
    assert renewal is not None and renewal["billing_reason"] == "subscription_cycle"
    assert renewal["lines"]["data"][0]["period"]["start"] == first_period["end"]
    assert fake.events_of_type("invoice.paid")[-1]["data"]["object"]["id"] == renewal["id"]
    assert "items" in fake.events_of_type("customer.subscription.updated")[-1]["data"]["previous_attributes"]

    failed = fake.fail_invoice(sub_id)
    assert failed is not None and failed["status"] == "open" and failed["amount_paid"] == 0
    assert fake.events_of_type("invoice.payment_failed")[-1]["data"]["object"]["id"] == failed["id"]
    assert fake.get(sub_id)["status"] == "past_due"

    fake.cancel_subscription(sub_id, at_period_end=True)
    assert fake.renew(sub_id) is None  # the period ends: the subscription is deleted instead
    deleted = fake.events_of_type("customer.subscription.deleted")
    assert len(deleted) == 1 and deleted[0]["data"]["object"]["status"] == "canceled"
    with pytest.raises(FakeError):
        fake.renew(sub_id)
    assert len(receiver.requests) == len(fake.events)


def test_refunds_are_cumulative(fake: StripeFake) -> None:
    done = fake.pay(_session(fake).id)
    charge_id = fake.get(done["payment_intent"])["latest_charge"]
    fake.refund(charge_id, 500)
    fake.refund(done["payment_intent"])  # the rest, found through the payment intent
    refunded = [e["data"]["object"] for e in fake.events_of_type("charge.refunded")]
    assert [(c["amount_refunded"], c["refunded"]) for c in refunded] == [(500, False), (1500, True)]
    assert all(c["payment_intent"] == done["payment_intent"] and c["amount"] == 1500 for c in refunded)
    assert len(fake.events_of_type("refund.created")) == 2
    with pytest.raises(FakeError, match="already been refunded"):
        fake.refund(charge_id)


def test_dispute(fake: StripeFake) -> None:
    done = fake.pay(_session(fake).id)
    charge_id = fake.get(done["payment_intent"])["latest_charge"]
    dispute = fake.dispute(charge_id)
    event = fake.events_of_type("charge.dispute.created")[0]["data"]["object"]
    assert event["id"] == dispute["id"] and (event["charge"], event["amount"], event["payment_intent"]) == (
        charge_id, 1500, done["payment_intent"])
    with pytest.raises(FakeError):
        fake.refund(charge_id)


@pytest.mark.parametrize(("succeeded", "last_event"), [(True, "checkout.session.async_payment_succeeded"),
                                                       (False, "checkout.session.async_payment_failed")])
def test_async_payments(fake: StripeFake, succeeded: bool, last_event: str) -> None:
    session = fake.pay(_session(fake).id, async_payment=True)
    assert (session["status"], session["payment_status"]) == ("complete", "unpaid")
    assert fake.events_of_type("checkout.session.completed")[0]["data"]["object"]["payment_status"] == "unpaid"
    settled = fake.complete_async_payment(session["id"], succeeded=succeeded)
    assert settled["payment_status"] == ("paid" if succeeded else "unpaid")
    assert fake.events[-1]["type"] == last_event


def test_expire(fake: StripeFake) -> None:
    session = _session(fake)
    expired = fake.expire(session.id)
    assert (expired["status"], expired["url"]) == ("expired", None)
    assert fake.events[-1]["type"] == "checkout.session.expired"
    with pytest.raises(FakeError):
        fake.pay(session.id)


def test_fake_http_test_api(fake: StripeFake) -> None:
    session = _session(fake)
    paid = requests.post(f"{fake.url}/_fake/checkout/sessions/{session.id}/pay", timeout=10).json()
    assert paid["payment_status"] == "paid"
    charge_id = fake.get(paid["payment_intent"])["latest_charge"]
    refund = requests.post(f"{fake.url}/_fake/charges/{charge_id}/refund", json={"amount": 100}, timeout=10).json()
    assert refund["amount"] == 100
    sub_id = fake.pay(_session(fake, "subscription").id)["subscription"]
    renewal = requests.post(f"{fake.url}/_fake/subscriptions/{sub_id}/renew", timeout=10).json()
    assert renewal["billing_reason"] == "subscription_cycle"
    back = requests.post(f"{fake.url}/_fake/subscriptions/{sub_id}/cancel", data={"_redirect": "1"},
                         allow_redirects=False, timeout=10)
    assert back.status_code == 303 and back.headers["Location"].endswith("/_fake")
    listing = requests.get(f"{fake.url}/_fake/events", timeout=5).json()
    assert listing["events"][-1]["type"] == "customer.subscription.deleted" and listing["deliveries"]
    dashboard = requests.get(f"{fake.url}/_fake", timeout=5)
    assert dashboard.status_code == 200 and sub_id in dashboard.text
    missing = requests.post(f"{fake.url}/_fake/subscriptions/sub_nope/renew", timeout=5)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "resource_missing"


def test_portal_cancel_button(fake: StripeFake) -> None:
    done = fake.pay(_session(fake, "subscription").id)
    client = stripe.StripeClient("sk_test_fake_key", base_addresses={"api": fake.url})
    portal = client.v1.billing_portal.sessions.create(params={"customer": done["customer"], "return_url": "http://x/"})
    response = requests.post(f"{portal.url}/subscriptions/{done['subscription']}/cancel", data={"at_period_end": "false"},
                             allow_redirects=False, timeout=10)
    assert response.status_code == 303 and fake.get(done["subscription"])["status"] == "canceled"


def test_failed_deliveries_are_recorded_and_retried(fake: StripeFake, receiver: WebhookReceiver) -> None:
    receiver.fail_next(1, 500)
    fake.expire(_session(fake).id)
    (failed,) = fake.deliveries
    assert failed.status_code == 500 and not failed.ok
    (retried,) = fake.retry_failed_deliveries()
    assert retried.ok and retried.event_id == failed.event_id
    assert fake.retry_failed_deliveries() == []
    fake.resend(failed.event_id)  # a duplicate, as Stripe may send
    assert len({r.body for r in receiver.requests}) == 1 and len(receiver.requests) == 3


def test_endpoint_filters_and_switching_delivery_off(fake: StripeFake, receiver: WebhookReceiver) -> None:
    with type(receiver)() as second:
        fake.add_webhook_endpoint(second.hook_url, "whsec_second", enabled_events=["checkout.session.completed"])
        fake.pay(_session(fake).id)
        (only,) = second.requests
        event = stripe.Webhook.construct_event(only.body, only.headers["Stripe-Signature"], "whsec_second")
        assert event.type == "checkout.session.completed"
    before = len(receiver.requests)
    fake.deliver_webhooks = False
    fake.expire(_session(fake).id)
    assert len(receiver.requests) == before and fake.events[-1]["type"] == "checkout.session.expired"


def _rows(html: str) -> dict[str, str]:
    """The dashboard's purchase rows by Checkout Session id."""
    return dict(re.findall(r"<tr id='(cs_test_\w+)'.*?>(.*?)</tr>", html, re.S))


def test_the_dashboard_shows_each_purchase_and_acts_on_that_purchase_only(fake: StripeFake,
                                                                         receiver: WebhookReceiver) -> None:
    ada = _session(fake, customer_email="ada@example.com", client_reference_id="user-ada",
                   metadata={"package_id": "popular"})
    bob = _session(fake, customer_email="bob@example.com", client_reference_id="user-bob")
    plan = _session(fake, "subscription", customer_email="cy@example.com", metadata={"plan_id": "pro"})
    for session in (ada, bob, plan):
        assert requests.post(f"{fake.url}/checkout/{session.id}/pay", allow_redirects=False, timeout=10).status_code == 303
    receiver.fail_next(1, 500)  # the next delivery fails: the dashboard says so
    fake.renew(fake.get(plan.id)["subscription"])

    page = requests.get(f"{fake.url}/_fake", timeout=5).text
    headers = re.findall(r"<th>(.*?)</th>", page.split("<h2>Events")[0])
    assert headers == ["Created", "Customer", "Pack or plan", "Amount", "Status", "Webhook deliveries", "Actions"]
    rows = _rows(page)
    assert set(rows) == {ada.id, bob.id, plan.id}
    assert "ada@example.com" in rows[ada.id] and "user user-ada" in rows[ada.id] and "Popular pack" in rows[ada.id]
    assert "pack popular" in rows[ada.id] and "$15.00" in rows[ada.id] and "<td>paid</td>" in rows[ada.id]
    assert "checkout.session.completed: <span class='ok'>200</span>" in rows[ada.id]
    assert "cy@example.com" in rows[plan.id] and "$9.99 per month" in rows[plan.id] and "plan pro" in rows[plan.id]
    assert "subscription active" in rows[plan.id] and "Renew" in rows[plan.id]
    assert "<span class='error'>500</span>" in rows[plan.id]  # the renewal's first event was refused
    assert "ada@example.com" not in rows[bob.id]

    ada_charge = fake.get(fake.get(ada.id)["payment_intent"])["latest_charge"]
    bob_charge = fake.get(fake.get(bob.id)["payment_intent"])["latest_charge"]
    refund_action = re.search(r"action='(/_fake/charges/ch_\w+/refund)'", rows[ada.id]).group(1)
    assert refund_action == f"/_fake/charges/{ada_charge}/refund"  # the button of Ada's row refunds Ada's charge
    back = requests.post(fake.url + refund_action, data={"_redirect": "1"}, allow_redirects=False, timeout=10)
    assert back.status_code == 303 and back.headers["Location"].endswith("/_fake")
    assert fake.get(ada_charge)["refunded"] is True and fake.get(bob_charge)["amount_refunded"] == 0
    rows = _rows(requests.get(f"{fake.url}/_fake", timeout=5).text)
    assert "refunded $15.00" in rows[ada.id] and "charge.refunded: <span class='ok'>200</span>" in rows[ada.id]
    assert "/refund" not in rows[ada.id] and "/refund" in rows[bob.id]


def test_an_empty_dashboard_says_how_to_start(fake: StripeFake) -> None:
    page = requests.get(f"{fake.url}/_fake", timeout=5).text
    assert "No purchases yet" in page and "<th>Customer</th>" in page


def test_the_checkout_page_declines_the_decline_test_card(fake: StripeFake, receiver: WebhookReceiver) -> None:
    session = _session(fake)
    declined = requests.post(f"{fake.url}/checkout/{session.id}/pay", data={"card": "4000 0000 0000 0002"},
                             allow_redirects=False, timeout=10)
    assert declined.status_code == 402 and "Your card was declined." in declined.text
    assert fake.get(session.id)["status"] == "open" and receiver.requests == []
    paid = requests.post(f"{fake.url}/checkout/{session.id}/pay", data={"card": "4242 4242 4242 4242"},
                         allow_redirects=False, timeout=10)
    assert paid.status_code == 303 and fake.get(session.id)["payment_status"] == "paid"
    missing = requests.post(f"{fake.url}/checkout/cs_test_nope/pay", data={"card": "4000000000000002"}, timeout=10)
    assert missing.status_code == 404
