"""Billing fixtures: the Stripe fake behind the app, buyers, and signed webhook delivery."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Callable

import pytest

from tests.conftest import STRIPE_WEBHOOK_SECRET


@dataclass
class Buyer:
    user_id: str
    token: str


@pytest.fixture
def buyer(new_user) -> Callable[[], Buyer]:
    def make() -> Buyer:
        body = new_user()
        return Buyer(body["user"]["user_id"], body["token"])

    return make


def signed(event: dict[str, Any], secret: str = STRIPE_WEBHOOK_SECRET,
           timestamp: int | None = None) -> tuple[bytes, dict[str, str]]:
    from devstack.fakes.stripe_signing import encode_event, sign

    payload = encode_event(event)
    return payload, {
        "Content-Type": "application/json; charset=utf-8",
        "Stripe-Signature": sign(payload, secret, timestamp),
    }


def deliver(client, event: dict[str, Any], **kwargs: Any):
    """Post one signed event to the app through chalice's test client; (status, body)."""
    payload, headers = signed(event, **kwargs)
    response = client.http.post("/webhooks/stripe", headers=headers, body=payload)
    return response.status_code, (json.loads(response.body) if response.body else None)


class EventTap:
    """Collects the events the fake emits during a test, to deliver them in any order."""

    def __init__(self, fake) -> None:
        self.fake = fake
        self.start = len(fake.events)

    def take(self, event_type: str | None = None, object_id: str | None = None) -> list[dict[str, Any]]:
        found = self.fake.events[self.start:]
        if event_type:
            found = [e for e in found if e["type"] == event_type]
        if object_id:
            found = [e for e in found if e["data"]["object"].get("id") == object_id]
        return found

    def one(self, event_type: str, object_id: str | None = None) -> dict[str, Any]:
        found = self.take(event_type, object_id)
        assert len(found) == 1, [e["type"] for e in self.take()]
        return found[0]


@pytest.fixture
def logged(caplog) -> Callable[[str], list[tuple[int, dict[str, Any]]]]:
    """(level, fields) of each structured log event with this message during the test.

    The app's JSON logging is configured first, here: configured later (by the first
    request of the test) it would remove pytest's capture handler.
    """
    import logging

    from chalicelib.core import logs

    logs.configure()
    caplog.set_level(logging.INFO)
    return lambda message: [(record.levelno, getattr(record, "fields", {}))
                            for record in caplog.records if record.getMessage() == message]


@pytest.fixture
def tap(stripe_fake) -> EventTap:
    return EventTap(stripe_fake)


def paid_checkout(client, stripe_fake, token: str, package_id: str = "popular") -> dict[str, Any]:
    """POST /credits/purchase, then pay the session on the fake Stripe; returns the purchase body."""
    from tests.conftest import post_json

    status, purchase = post_json(client, "/credits/purchase", token, {"package_id": package_id})
    assert status == 200, purchase
    stripe_fake.pay(purchase["session_id"])
    return purchase


def user_item(user_id: str) -> dict[str, Any]:
    from chalicelib.aws import store

    item = store.get("users", user_id=user_id)
    assert item is not None
    return item


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
