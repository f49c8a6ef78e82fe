"""Stripe fake API through the real stripe-python client: objects, validation, idempotency."""

from __future__ import annotations

from typing import Any, Iterator

import pytest
import requests
import stripe

from devstack.fakes import StripeFake

KEY = "sk_test_fake_key"
PAYMENT_ITEM = {"price_data": {"currency": "usd", "unit_amount": 500, "product_data": {"name": "Starter pack"}}, "quantity": 1}
MONTHLY_ITEM = {
    "price_data": {"currency": "usd", "unit_amount": 999, "recurring": {"interval": "month"}, "product_data": {"name": "Pro"}},
    "quantity": 1,
}


@pytest.fixture
def fake() -> Iterator[StripeFake]:
    with StripeFake() as server:
        yield server


@pytest.fixture
def client(fake: StripeFake) -> stripe.StripeClient:
    return stripe.StripeClient(KEY, base_addresses={"api": fake.url}, max_network_retries=0)


def _session_params(**overrides: Any) -> dict[str, Any]:
    return {
        "mode": "payment",
        "line_items": [PAYMENT_ITEM],
        "success_url": "http://127.0.0.1:8000/ok?session_id={CHECKOUT_SESSION_ID}",
        "cancel_url": "http://127.0.0.1:8000/cancel",
        "client_reference_id": "user-1",
        "metadata": {"user_id": "user-1", "package_id": "starter"},
        **overrides,
    }


def test_checkout_session_has_the_contract_fields(fake: StripeFake, client: stripe.StripeClient) -> None:
    session = client.v1.checkout.sessions.create(params=_session_params(customer_email="a@example.com"))
    assert session.id.startswith("cs_test_") and session.object == "checkout.session"
    assert session.url == f"{fake.url}/checkout/{session.id}"
    assert (session.status, session.payment_status, session.mode) == ("open", "unpaid", "payment")
    assert (session.amount_total, session.currency, session.client_reference_id) == (500, "usd", "user-1")
    assert session.metadata.to_dict() == {"user_id": "user-1", "package_id": "starter"}
    assert session.customer is None and session.payment_intent is None and session.subscription is None
    assert session.expires_at - session.created == 24 * 3600 and session.livemode is False
    again = client.v1.checkout.sessions.retrieve(session.id)
    assert again.to_dict() == session.to_dict()
    (item,) = client.v1.checkout.sessions.line_items.list(session.id).data
    assert (item.description, item.quantity, item.amount_total) == ("Starter pack", 1, 500)
    sent = fake.requests_to("/v1/checkout/sessions", "POST")[0]
    assert sent.headers["Authorization"] == f"Bearer {KEY}" and sent.headers["Idempotency-Key"]
    assert sent.form()["line_items"][0]["price_data"]["unit_amount"] == "500"


def test_prices_customers_and_subscription_sessions(fake: StripeFake, client: stripe.StripeClient) -> None:
    price = fake.add_price(1999, recurring="month", product_name="Pro monthly", price_id="price_pro")
    customer = client.v1.customers.create(params={"email": "b@example.com", "metadata": {"user_id": "u2"}})
    assert customer.id.startswith("cus_") and client.v1.customers.retrieve(customer.id).email == "b@example.com"
    updated = client.v1.customers.update(customer.id, params={"name": "B", "metadata": {"user_id": ""}})
    assert updated.name == "B" and updated.metadata.to_dict() == {}
    session = client.v1.checkout.sessions.create(params=_session_params(
        mode="subscription", customer=customer.id, line_items=[{"price": price["id"], "quantity": 2}],
        subscription_data={"metadata": {"user_id": "u2"}},
    ))
    assert (session.mode, session.amount_total, session.customer) == ("subscription", 3998, customer.id)
    api_price = client.v1.prices.create(params={"currency": "eur", "unit_amount": 300, "product_data": {"name": "X"}})
    assert client.v1.prices.retrieve(api_price.id).unit_amount == 300


def test_global_api_base_style(fake: StripeFake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stripe, "api_key", KEY)
    monkeypatch.setattr(stripe, "api_base", fake.url)
    session = stripe.checkout.Session.create(**_session_params())
    assert stripe.checkout.Session.retrieve(session.id).amount_total == 500


@pytest.mark.parametrize(
    ("overrides", "param", "code"),
    [
        ({"mode": None}, "mode", "parameter_missing"),
        ({"mode": "donation"}, "mode", None),
        ({"success_url": None}, "success_url", "parameter_missing"),
        ({"line_items": None}, "line_items", "parameter_missing"),
        ({"line_items": [{"price_data": PAYMENT_ITEM["price_data"]}]}, "line_items[0][quantity]", "parameter_missing"),
        ({"line_items": [{**PAYMENT_ITEM, "colour": "red"}]}, "line_items[0][colour]", "parameter_unknown"),
        ({"line_items": [{"price_data": {"currency": "usd", "product_data": {"name": "x"}}, "quantity": 1}]},
         "line_items[0][price_data][unit_amount]", "parameter_missing"),
        ({"line_items": [{"price": "price_missing", "quantity": 1}]}, "line_items[0][price]", "resource_missing"),
        ({"line_items": [MONTHLY_ITEM]}, "line_items", None),
        ({"mode": "subscription"}, "line_items", None),
        ({"customer": "cus_nope"}, "customer", "resource_missing"),
        ({"customer": "cus_x", "customer_email": "a@example.com"}, "customer_email", None),
        ({"expires_at": 1}, "expires_at", None),
        ({"discount_code": "X"}, "discount_code", "parameter_unknown"),
        ({"subscription_data": {"metadata": {"a": "b"}}}, "subscription_data", None),
    ],
)
def test_checkout_validation_matches_stripe(client: stripe.StripeClient, overrides: dict[str, Any], param: str, code: str | None) -> None:
    params = {k: v for k, v in _session_params(**overrides).items() if v is not None}
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.checkout.sessions.create(params=params)
    assert caught.value.param == param and caught.value.code == code and caught.value.http_status in (400, 404)
    assert caught.value.error.type == "invalid_request_error"


def test_auth_errors(fake: StripeFake) -> None:
    with pytest.raises(stripe.AuthenticationError):
        stripe.StripeClient("sk_test_wrong", base_addresses={"api": fake.url}).v1.customers.create()
    bare = requests.post(f"{fake.url}/v1/customers", timeout=5)
    assert bare.status_code == 401 and bare.json()["error"]["type"] == "invalid_request_error"
    basic = requests.post(f"{fake.url}/v1/customers", auth=(KEY, ""), timeout=5)
    assert basic.status_code == 200
    json_body = requests.post(f"{fake.url}/v1/customers", json={"email": "a@b.c"}, auth=(KEY, ""), timeout=5)
    assert json_body.status_code == 400 and "x-www-form-urlencoded" in json_body.json()["error"]["message"]


def test_idempotency_replays_and_conflicts(fake: StripeFake, client: stripe.StripeClient) -> None:
    first = client.v1.checkout.sessions.create(params=_session_params(), options={"idempotency_key": "buy-1"})
    again = client.v1.checkout.sessions.create(params=_session_params(), options={"idempotency_key": "buy-1"})
    assert again.id == first.id and len(fake.objects("checkout.session")) == 1
    assert fake.requests_to("/v1/checkout/sessions")[-1].headers["Idempotency-Key"] == "buy-1"
    with pytest.raises(stripe.IdempotencyError):
        client.v1.checkout.sessions.create(params=_session_params(client_reference_id="user-2"), options={"idempotency_key": "buy-1"})
    with pytest.raises(stripe.IdempotencyError):
        client.v1.customers.create(options={"idempotency_key": "buy-1"})
    raw = requests.post(f"{fake.url}/v1/customers", data={"email": "a@b.c"}, auth=(KEY, ""),
                        headers={"Idempotency-Key": "raw-1"}, timeout=5)
    replay = requests.post(f"{fake.url}/v1/customers", data={"email": "a@b.c"}, auth=(KEY, ""),
                           headers={"Idempotency-Key": "raw-1"}, timeout=5)
    assert replay.json() == raw.json() and replay.headers["Idempotent-Replayed"] == "true"


def test_validation_failures_are_not_saved_under_the_key(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.checkout.sessions.create(params=_session_params(mode=None), options={"idempotency_key": "k"})
    assert client.v1.checkout.sessions.create(params=_session_params(), options={"idempotency_key": "k"}).id


def test_client_retries_a_500_with_the_same_key(fake: StripeFake) -> None:
    fake.fail_next(1, 500, path_prefix="/v1/checkout/sessions")
    client = stripe.StripeClient(KEY, base_addresses={"api": fake.url}, max_network_retries=2)
    session = client.v1.checkout.sessions.create(params=_session_params())
    attempts = fake.requests_to("/v1/checkout/sessions", "POST")
    assert len(attempts) == 2 and attempts[0].headers["Idempotency-Key"] == attempts[1].headers["Idempotency-Key"]
    assert [s["id"] for s in fake.objects("checkout.session")] == [session.id]


def test_rate_limit_fault_raises_rate_limit_error(fake: StripeFake, client: stripe.StripeClient) -> None:
    fake.fail_next(1, 429)
    with pytest.raises(stripe.RateLimitError):
        client.v1.customers.create()


def test_expand_and_retrieve(fake: StripeFake, client: stripe.StripeClient) -> None:
    session = client.v1.checkout.sessions.create(params=_session_params())
    fake.pay(session.id)
    expanded = client.v1.checkout.sessions.retrieve(session.id, params={"expand": ["payment_intent.latest_charge", "line_items"]})
    assert expanded.payment_intent.latest_charge.amount == 500 and expanded.line_items.data[0].amount_total == 500
    charge_id = expanded.payment_intent.latest_charge.id
    assert client.v1.charges.retrieve(charge_id).payment_intent == expanded.payment_intent.id
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.payment_intents.retrieve("pi_missing")
    assert missing.value.http_status == 404 and missing.value.code == "resource_missing"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.checkout.sessions.retrieve(session.id, params={"expand": ["colour"]})


def test_billing_portal_refunds_and_subscription_api(fake: StripeFake, client: stripe.StripeClient) -> None:
    paid = fake.pay(client.v1.checkout.sessions.create(params=_session_params(mode="subscription", line_items=[MONTHLY_ITEM])).id)
    portal = client.v1.billing_portal.sessions.create(params={"customer": paid["customer"], "return_url": "http://x/back"})
    assert portal.id.startswith("bps_") and portal.url == f"{fake.url}/billing_portal/{portal.id}"
    assert paid["subscription"] in requests.get(portal.url, timeout=5).text
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.billing_portal.sessions.create(params={"customer": "cus_nope"})

    once = fake.pay(client.v1.checkout.sessions.create(params=_session_params()).id)
    refund = client.v1.refunds.create(params={"payment_intent": once["payment_intent"], "amount": 200})
    assert (refund.amount, refund.status, refund.payment_intent) == (200, "succeeded", once["payment_intent"])
    with pytest.raises(stripe.InvalidRequestError) as too_much:
        client.v1.refunds.create(params={"payment_intent": once["payment_intent"], "amount": 400})
    assert too_much.value.param == "amount"
    client.v1.refunds.create(params={"charge": refund.charge})
    fake.wait_for_deliveries()
    refunded = [e for e in fake.events_of_type("charge.refunded")]
    assert [e["data"]["object"]["amount_refunded"] for e in refunded] == [200, 500]
    assert refunded[0]["request"]["id"].startswith("req_") and refunded[0]["request"]["idempotency_key"]

    updated = client.v1.subscriptions.update(paid["subscription"], params={"cancel_at_period_end": True})
    assert updated.cancel_at_period_end is True
    assert client.v1.subscriptions.cancel(paid["subscription"]).status == "canceled"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscriptions.update(paid["subscription"], params={"items": [{"price": "p"}]})
