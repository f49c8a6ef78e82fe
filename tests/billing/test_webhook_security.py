"""POST /webhooks/stripe trusts nothing it cannot verify: 400 and no effect at all."""
from __future__ import annotations

import time

import pytest

from chalicelib.aws import store
from devstack.fakes.stripe_signing import build_event, encode_event, sign
from tests.billing.conftest import deliver, signed
from tests.conftest import STRIPE_WEBHOOK_SECRET, balance, post_json


@pytest.fixture
def paid_event(client, stripe_fake, buyer, tap):
    """A genuine `checkout.session.completed` (paid) for a pending purchase, not yet delivered."""
    user = buyer()
    status, body = post_json(client, "/credits/purchase", user.token, {"package_id": "starter"})
    assert status == 200, body
    stripe_fake.pay(body["session_id"])
    return user, body["transaction_id"], tap.one("checkout.session.completed", body["session_id"])


def _nothing_changed(user, transaction_id: str, event: dict) -> None:
    assert balance(user.user_id) == 200
    assert store.get("transactions", transaction_id=transaction_id)["status"] == "pending"
    assert store.get("stripe-events", event_id=event["id"]) is None


def _post(client, payload: bytes, headers: dict[str, str]):
    response = client.http.post("/webhooks/stripe", headers=headers, body=payload)
    return response.status_code, response.json_body


def test_forged_signature(client, paid_event):
    user, transaction_id, event = paid_event
    payload, headers = signed(event, secret="whsec_not_the_real_secret_000000")
    status, body = _post(client, payload, headers)
    assert status == 400 and body["code"] == "invalid_signature"
    _nothing_changed(user, transaction_id, event)


def test_stale_timestamp(client, paid_event):
    user, transaction_id, event = paid_event
    payload, headers = signed(event, timestamp=int(time.time()) - 301)
    status, body = _post(client, payload, headers)
    assert status == 400 and body["code"] == "invalid_signature"
    _nothing_changed(user, transaction_id, event)


def test_body_changed_after_signing(client, paid_event):
    user, transaction_id, event = paid_event
    payload, headers = signed(event)
    tampered = payload.replace(b'"amount_total": 299', b'"amount_total": 1')
    assert tampered != payload
    status, body = _post(client, tampered, headers)
    assert status == 400 and body["code"] == "invalid_signature"
    _nothing_changed(user, transaction_id, event)


def test_missing_or_garbled_header(client, paid_event):
    user, transaction_id, event = paid_event
    payload = encode_event(event)
    for headers in ({"Content-Type": "application/json"},
                    {"Content-Type": "application/json", "Stripe-Signature": "garbage"},
                    {"Content-Type": "application/json", "Stripe-Signature": f"t={int(time.time())}"}):
        status, body = _post(client, payload, headers)
        assert status == 400 and body["code"] == "invalid_signature"
    _nothing_changed(user, transaction_id, event)


def test_a_signed_body_that_is_not_an_event_is_refused(client, stripe_fake):
    payload = b'{"hello": "world"}'
    status, body = _post(client, payload, {"Content-Type": "application/json",
                                           "Stripe-Signature": sign(payload, STRIPE_WEBHOOK_SECRET)})
    assert status == 400 and body["code"] == "invalid_payload"


def test_rotated_secrets_both_verify(client, stripe_fake, env_override):
    new_secret = "whsec_rolledsecret0123456789abcdef"
    env_override(STRIPE_WEBHOOK_SECRET=f"{new_secret},{STRIPE_WEBHOOK_SECRET}")
    for secret in (new_secret, STRIPE_WEBHOOK_SECRET):
        event = build_event("customer.created", {"id": "cus_rotation", "object": "customer"})
        status, body = deliver(client, event, secret=secret)
        assert status == 200 and body == {"received": True, "status": "ignored"}
        assert store.get("stripe-events", event_id=event["id"])["status"] == "ignored"
    status, _ = deliver(client, build_event("customer.created", {"id": "cus_x"}), secret="whsec_neither_0000000000")
    assert status == 400


def test_unknown_event_types_are_acknowledged_and_ignored(client, stripe_fake):
    event = build_event("payment_intent.created", {"id": "pi_123", "object": "payment_intent"})
    status, body = deliver(client, event)
    assert status == 200 and body["status"] == "ignored"
    record = store.get("stripe-events", event_id=event["id"])
    assert record["type"] == "payment_intent.created" and record["reason"] == "unhandled_type"
    assert record["expires_at_epoch"] > time.time() + 7 * 24 * 3600


def test_not_configured_is_a_503_not_a_400(client, stripe_fake, env_override):
    env_override(STRIPE_WEBHOOK_SECRET="")
    status, body = deliver(client, build_event("customer.created", {"id": "cus_y"}))
    assert status == 503  # Stripe retries; the operator is told by the log
