"""POST /credits/purchase, /credits/subscribe and /credits/portal against the Stripe fake."""
from __future__ import annotations

import threading

import pytest

from chalicelib.aws import store
from tests.billing.conftest import user_item
from tests.conftest import STRIPE_KEY, post_json


def _row(transaction_id: str) -> dict:
    row = store.get("transactions", transaction_id=transaction_id)
    assert row is not None
    return row


def test_purchase_creates_a_pending_row_and_a_checkout_session(client, stripe_fake, buyer, settings):
    user = buyer()
    status, body = post_json(client, "/credits/purchase", user.token, {"package_id": "popular"})
    assert status == 200, body
    assert set(body) == {"checkout_url", "session_id", "transaction_id"}
    assert body["checkout_url"].startswith(stripe_fake.url + "/checkout/")

    row = _row(body["transaction_id"])
    assert {k: row[k] for k in ("user_id", "package_id", "credits", "amount", "currency", "status", "kind")} == {
        "user_id": user.user_id, "package_id": "popular", "credits": 2000, "amount": 999,
        "currency": "usd", "status": "pending", "kind": "purchase",
    }
    assert row["stripe_session_id"] == body["session_id"]
    assert row["created_at"].endswith("Z") and "completed_at" not in row

    session = stripe_fake.get(body["session_id"])
    assert session["mode"] == "payment"
    assert session["client_reference_id"] == user.user_id
    assert session["metadata"] == {"user_id": user.user_id, "package_id": "popular",
                                   "transaction_id": body["transaction_id"]}
    assert session["amount_total"] == 999 and session["currency"] == "usd"
    assert session["success_url"] == settings.checkout_success_url
    assert session["cancel_url"] == settings.checkout_cancel_url
    assert session["customer"] == user_item(user.user_id)["stripe_customer_id"]

    sent = stripe_fake.requests_to("/v1/checkout/sessions", "POST")[-1]
    form = sent.form()
    assert sent.headers["Idempotency-Key"] == f"checkout-{body['transaction_id']}"
    assert sent.headers["Authorization"] == f"Bearer {STRIPE_KEY}"
    assert form["payment_intent_data"]["metadata"] == session["metadata"]
    assert form["line_items"][0]["price_data"]["unit_amount"] == "999"
    assert 1800 <= int(form["expires_at"]) - int(session["created"]) <= 3600 + 5


def test_the_price_comes_from_the_catalogue_never_the_client(client, stripe_fake, buyer):
    user = buyer()
    status, body = post_json(client, "/credits/purchase", user.token, {"package_id": "starter", "amount": 1})
    assert status == 422 and body["code"] == "unknown_field"
    status, body = post_json(client, "/credits/purchase", user.token, {"package_id": "mega"})
    assert status == 422 and body["code"] == "unknown_package"
    status, body = post_json(client, "/credits/purchase", None, {"package_id": "starter"})
    assert status == 401


def test_a_bound_stripe_price_is_used_instead_of_inline_price_data(client, stripe_fake, buyer, env_override):
    price = stripe_fake.add_price(299, product_name="Starter pack")
    env_override(STRIPE_PRICE_IDS=f"starter={price['id']}")
    status, body = post_json(client, "/credits/purchase", buyer().token, {"package_id": "starter"})
    assert status == 200, body
    form = stripe_fake.requests_to("/v1/checkout/sessions", "POST")[-1].form()
    assert form["line_items"] == [{"price": price["id"], "quantity": "1"}]


def test_the_stripe_customer_is_created_once_even_for_parallel_purchases(client, stripe_fake, buyer):
    user = buyer()
    results: list[tuple[int, dict]] = []

    def buy() -> None:
        results.append(post_json(client, "/credits/purchase", user.token, {"package_id": "starter"}))

    threads = [threading.Thread(target=buy) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [status for status, _ in results] == [200] * 5
    customers = [c for c in stripe_fake.objects("customer") if c["metadata"].get("user_id") == user.user_id]
    assert len(customers) == 1
    stored = user_item(user.user_id)["stripe_customer_id"]
    assert stored == customers[0]["id"]
    assert {_row(body["transaction_id"])["stripe_customer_id"] for _, body in results} == {stored}
    # ... and reused later
    post_json(client, "/credits/purchase", user.token, {"package_id": "power"})
    assert stripe_fake.get(stripe_fake.objects("checkout.session")[-1]["id"])["customer"] == stored


def test_idempotency_key_replays_the_purchase(client, stripe_fake, buyer):
    user = buyer()
    first = post_json(client, "/credits/purchase", user.token, {"package_id": "starter"}, **{"Idempotency-Key": "k-1"})
    sessions_before = len(stripe_fake.objects("checkout.session"))
    again = post_json(client, "/credits/purchase", user.token, {"package_id": "starter"}, **{"Idempotency-Key": "k-1"})
    assert first == again and first[0] == 200
    assert len(stripe_fake.objects("checkout.session")) == sessions_before
    status, body = post_json(client, "/credits/purchase", user.token, {"package_id": "power"},
                             **{"Idempotency-Key": "k-1"})
    assert status == 422 and body["code"] == "idempotency_key_mismatch"
    other = buyer()  # keys are per user
    status, body = post_json(client, "/credits/purchase", other.token, {"package_id": "starter"},
                             **{"Idempotency-Key": "k-1"})
    assert status == 200 and body["transaction_id"] != first[1]["transaction_id"]


def test_the_transaction_row_is_the_last_line_of_defence(client, stripe_fake, buyer):
    """Past the Idempotency-Key's 24 hours the key still names the same purchase row."""
    from chalicelib.billing import checkout
    from chalicelib.core.errors import Conflict

    user = buyer()
    first = checkout.purchase(user.user_id, "starter", idempotency_key="old-key")
    assert checkout.purchase(user.user_id, "starter", idempotency_key="old-key") == first
    with pytest.raises(Conflict) as error:
        checkout.purchase(user.user_id, "power", idempotency_key="old-key")
    assert error.value.code == "idempotency_conflict"


def test_stripe_unavailable_closes_the_row_and_a_retry_with_the_key_succeeds(client, stripe_fake, buyer):
    user = buyer()
    post_json(client, "/credits/purchase", user.token, {"package_id": "starter"})  # customer exists now
    stripe_fake.fail_next(3, 500, path_prefix="/v1/checkout/sessions")  # first try + 2 retries
    status, body = post_json(client, "/credits/purchase", user.token, {"package_id": "popular"},
                             **{"Idempotency-Key": "retry-me"})
    assert status == 503 and body["code"] == "payments_unavailable"
    assert "500" not in body["error"] and "stripe" not in body["error"].lower()
    rows = [r for r in store.query_all({
        "TableName": store.table_name("transactions"), "IndexName": "user_id-created_at-index",
        "KeyConditionExpression": "user_id = :u", "ExpressionAttributeValues": store.values(u=user.user_id),
    }) if r.get("package_id") == "popular"]
    assert [r["status"] for r in rows] == ["failed"]

    status, body = post_json(client, "/credits/purchase", user.token, {"package_id": "popular"},
                             **{"Idempotency-Key": "retry-me"})
    assert status == 200, body
    assert body["transaction_id"] == rows[0]["transaction_id"]
    assert _row(body["transaction_id"])["status"] == "pending"


def test_subscribe_and_portal(client, stripe_fake, buyer, tap):
    user = buyer()
    status, body = post_json(client, "/credits/portal", user.token)
    assert status == 409 and body["code"] == "no_billing_account"

    status, body = post_json(client, "/credits/subscribe", user.token, {"plan_id": "basic_monthly"})
    assert status == 200, body
    assert set(body) == {"checkout_url", "session_id"}
    session = stripe_fake.get(body["session_id"])
    assert session["mode"] == "subscription"
    assert session["metadata"] == {"user_id": user.user_id, "plan_id": "basic_monthly"}
    form = stripe_fake.requests_to("/v1/checkout/sessions", "POST")[-1].form()
    assert form["subscription_data"]["metadata"] == session["metadata"]
    assert form["line_items"][0]["price_data"]["recurring"] == {"interval": "month"}

    status, body = post_json(client, "/credits/portal", user.token)
    assert status == 200 and body["url"].startswith(stripe_fake.url + "/billing_portal/")
    portal_form = stripe_fake.requests_to("/v1/billing_portal/sessions", "POST")[-1].form()
    assert portal_form["customer"] == user_item(user.user_id)["stripe_customer_id"]

    status, body = post_json(client, "/credits/subscribe", user.token, {"plan_id": "gold"})
    assert status == 422 and body["code"] == "unknown_plan"
