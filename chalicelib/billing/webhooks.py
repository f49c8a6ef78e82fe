"""`POST /webhooks/stripe`: verify the signature on the raw body, then fulfil.

Verification is stripe-python's own (`WebhookSignature.verify_header`: HMAC-SHA256 over
`"<t>.<raw body>"`, constant-time comparison, 300 s tolerance) tried against each configured
secret, so an endpoint secret can be rolled without dropping events. Any failure is a 400
before anything is read from the body or written anywhere.
"""
from __future__ import annotations

import json
import logging
from typing import Any

from chalicelib.billing import fulfilment
from chalicelib.core.errors import BadRequest, ConfigurationError
from chalicelib.core.logs import log_event, register_secret
from chalicelib.core.settings import get_settings

logger = logging.getLogger(__name__)

TOLERANCE_SECONDS = 300


def verify(raw_body: bytes | None, signature: str | None) -> dict[str, Any]:
    """The event, if `signature` proves Stripe sent exactly `raw_body` in the last 5 minutes."""
    secrets = get_settings().stripe_webhook_secrets
    if not secrets:
        raise ConfigurationError("STRIPE_WEBHOOK_SECRET is not set: cannot verify Stripe webhooks")
    for secret in secrets:
        register_secret(secret)
    invalid = BadRequest("Invalid Stripe signature", code="invalid_signature")
    if not raw_body or not signature:
        raise invalid
    try:
        payload = raw_body.decode("utf-8")
    except UnicodeDecodeError:
        raise invalid from None

    from stripe import SignatureVerificationError, WebhookSignature

    for secret in secrets:
        try:
            WebhookSignature.verify_header(payload, signature, secret, TOLERANCE_SECONDS)
            break
        except SignatureVerificationError:
            continue
    else:
        log_event(logger, "stripe.webhook_rejected", logging.WARNING, reason="invalid_signature")
        raise invalid
    return _parse(payload)


def _parse(payload: str) -> dict[str, Any]:
    """A signed body is Stripe's, but still only trusted to the shape we need."""
    invalid = BadRequest("Invalid Stripe event", code="invalid_payload")
    try:
        event = json.loads(payload)
    except ValueError:
        raise invalid from None
    if not (
        isinstance(event, dict)
        and isinstance(event.get("id"), str)
        and event["id"]
        and isinstance(event.get("type"), str)
        and isinstance(event.get("created"), int)
        and isinstance((event.get("data") or {}).get("object"), dict)
    ):
        raise invalid
    return event


def receive(raw_body: bytes | None, signature: str | None) -> dict[str, Any]:
    """Verify and handle one delivery; the answer Stripe gets (200 also for duplicates)."""
    event = verify(raw_body, signature)
    outcome = fulfilment.process(event)
    return {"received": True, "status": outcome.status}
