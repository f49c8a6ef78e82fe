"""Stripe webhook events: the envelope, the `Stripe-Signature` header, delivery.

Used by the Stripe fake to deliver events and by tests that post hand-made
events to our webhook endpoint. The signature is exactly Stripe's scheme
(`t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`), so
`stripe.Webhook.construct_event` accepts it and rejects any tampering.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import time
from typing import Any, Iterable, Mapping

import requests

from .base import random_id

try:  # the version stripe-python pins is what a fresh webhook endpoint would get
    from stripe._api_version import _ApiVersion

    DEFAULT_API_VERSION: str = _ApiVersion.CURRENT
except ImportError:  # pragma: no cover - stripe is a project dependency
    DEFAULT_API_VERSION = "2025-08-27.basil"

USER_AGENT = "Stripe/1.0 (+https://stripe.com/docs/webhooks)"


def sign(
    payload: bytes,
    secret: str,
    timestamp: int | None = None,
    *,
    extra_secrets: Iterable[str] = (),
) -> str:
    """The `Stripe-Signature` header value for `payload`.

    `extra_secrets` adds one more `v1=` per secret, as Stripe does while an
    endpoint secret is being rolled.
    """
    t = int(time.time()) if timestamp is None else int(timestamp)
    signed = b"%d." % t + payload
    parts = [f"t={t}"]
    for key in (secret, *extra_secrets):
        parts.append("v1=" + hmac.new(key.encode("utf-8"), signed, hashlib.sha256).hexdigest())
    return ",".join(parts)


def build_event(
    type: str,  # noqa: A002 - Stripe's field name
    obj: Mapping[str, Any],
    *,
    api_version: str = DEFAULT_API_VERSION,
    previous_attributes: Mapping[str, Any] | None = None,
    request_id: str | None = None,
    idempotency_key: str | None = None,
    event_id: str | None = None,
    created: int | None = None,
    livemode: bool = False,
    pending_webhooks: int = 1,
) -> dict[str, Any]:
    """A Stripe event envelope around a snapshot (deep copy) of `obj`."""
    data: dict[str, Any] = {"object": copy.deepcopy(dict(obj))}
    if previous_attributes is not None:
        data["previous_attributes"] = copy.deepcopy(dict(previous_attributes))
    return {
        "id": event_id or random_id("evt_", 24),
        "object": "event",
        "api_version": api_version,
        "created": int(time.time()) if created is None else created,
        "data": data,
        "livemode": livemode,
        "pending_webhooks": pending_webhooks,
        "request": {"id": request_id, "idempotency_key": idempotency_key},
        "type": type,
    }


def encode_event(event: Mapping[str, Any]) -> bytes:
    """The body Stripe sends: pretty-printed JSON, UTF-8."""
    return json.dumps(event, indent=2).encode("utf-8")


def deliver(
    url: str,
    event: Mapping[str, Any],
    secret: str,
    *,
    timestamp: int | None = None,
    extra_secrets: Iterable[str] = (),
    timeout: float = 10.0,
    session: requests.Session | None = None,
) -> requests.Response:
    """POST `event` to `url` signed with `secret`, like Stripe; returns the response."""
    payload = encode_event(event)
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": USER_AGENT,
        "Stripe-Signature": sign(payload, secret, timestamp, extra_secrets=extra_secrets),
    }
    poster = session or requests
    return poster.post(url, data=payload, headers=headers, timeout=timeout)
