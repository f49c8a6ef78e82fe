"""Stripe-Signature: what `sign` produces must satisfy stripe-python's verifier exactly."""

from __future__ import annotations

import re
import time

import pytest
import stripe

from devstack.fakes.stripe_signing import DEFAULT_API_VERSION, build_event, deliver, encode_event, sign

from .conftest import WebhookReceiver

SECRET = "whsec_test_secret"


def _payload() -> bytes:
    return encode_event(build_event("checkout.session.completed", {"id": "cs_test_1", "object": "checkout.session"}))


def test_header_format() -> None:
    header = sign(b"{}", SECRET, timestamp=1700000000)
    assert re.fullmatch(r"t=1700000000,v1=[0-9a-f]{64}", header)
    assert header == stripe.WebhookSignature.generate_signature_header("{}", SECRET, timestamp=1700000000)


def test_construct_event_accepts_what_sign_produces() -> None:
    payload = _payload()
    event = stripe.Webhook.construct_event(payload, sign(payload, SECRET), SECRET)
    assert event.type == "checkout.session.completed" and event.data.object.id == "cs_test_1"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda p, h: (p.replace(b"cs_test_1", b"cs_test_2"), h),  # body changed
        lambda p, h: (p, sign(p, "whsec_other")),  # signed with another secret
        lambda p, h: (p, sign(p, SECRET, timestamp=int(time.time()) - 600)),  # replayed too late
        lambda p, h: (p, h.replace("v1=", "v0=")),  # wrong scheme
        lambda p, h: (p, ""),  # no header
    ],
)
def test_construct_event_rejects_tampering(tamper: object) -> None:
    payload = _payload()
    body, header = tamper(payload, sign(payload, SECRET))  # type: ignore[operator]
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(body, header, SECRET)


def test_rolled_secrets_sign_twice() -> None:
    payload = _payload()
    header = sign(payload, SECRET, extra_secrets=["whsec_new"])
    assert header.count("v1=") == 2
    for secret in (SECRET, "whsec_new"):
        assert stripe.Webhook.construct_event(payload, header, secret).id


def test_event_envelope() -> None:
    event = build_event("charge.refunded", {"id": "ch_1", "object": "charge"}, previous_attributes={"refunded": False},
                        request_id="req_1", idempotency_key="key-1")
    assert event["id"].startswith("evt_") and event["object"] == "event" and event["livemode"] is False
    assert event["api_version"] == DEFAULT_API_VERSION and isinstance(event["created"], int)
    assert event["data"] == {"object": {"id": "ch_1", "object": "charge"}, "previous_attributes": {"refunded": False}}
    assert event["request"] == {"id": "req_1", "idempotency_key": "key-1"}


def test_deliver_posts_the_signed_raw_body(receiver: WebhookReceiver) -> None:
    event = build_event("invoice.paid", {"id": "in_1", "object": "invoice"})
    response = deliver(receiver.hook_url, event, SECRET)
    assert response.status_code == 200
    (received,) = receiver.requests
    assert received.headers["Content-Type"].startswith("application/json")
    assert received.headers["User-Agent"].startswith("Stripe/")
    verified = stripe.Webhook.construct_event(received.body, received.headers["Stripe-Signature"], SECRET)
    assert verified.id == event["id"]
