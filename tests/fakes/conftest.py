"""Fixtures for the fake provider servers' own tests (loopback HTTP only)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # make `devstack` importable however pytest is started
    sys.path.insert(0, str(ROOT))

from devstack.fakes.base import FakeServer, Rule  # noqa: E402


class WebhookReceiver(FakeServer):
    """A stand-in for our webhook endpoint: records what it gets, answers 200
    (or whatever `fail_next` says), so delivery can be asserted end to end."""

    provider = "receiver"
    public_endpoints = frozenset({"receive"})

    def routes(self) -> list[Rule]:
        return [Rule("/webhooks/stripe", methods=["POST"], endpoint="receive")]

    def receive(self, request: Any) -> dict[str, bool]:
        return {"received": True}

    @property
    def hook_url(self) -> str:
        return f"{self.url}/webhooks/stripe"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server
