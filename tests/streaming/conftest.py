"""Fixtures for live captions, Ask and the Twitch lookup.

The fake providers (real HTTP on loopback) come from tests/conftest.py; `live` points the
settings at them, makes provider retry backoff tiny, and cleans injected faults up.
`Caller` wraps one registered user and the API calls these tests make.
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pytest

from tests.conftest import ORIGIN, json_headers


@pytest.fixture
def live(provider_env, fake_assemblyai, fake_openai, fake_twitch, client, env_override):
    """Settings pointed at the fakes; yields a function to change settings for one test."""
    from chalicelib.providers import twitch

    def configure(**env: Any) -> None:
        env_override(**{name: str(value) for name, value in env.items()})

    configure(PROVIDER_BACKOFF_SECONDS="0.01")
    twitch.forget_token()
    yield configure
    for fake in (fake_assemblyai, fake_openai, fake_twitch):
        fake.clear_faults()
    twitch.forget_token()


@dataclass
class Response:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class Caller:
    client: Any
    token: str
    user_id: str

    def _wrap(self, response: Any) -> Response:
        body = json.loads(response.body) if response.body else {}
        return Response(response.status_code, body, dict(response.headers))

    def post(self, path: str, body: Any, **headers: str) -> Response:
        raw = body if isinstance(body, (str, bytes)) else json.dumps(body)
        return self._wrap(
            self.client.http.post(path, headers=json_headers(self.token, origin=ORIGIN, **headers), body=raw)
        )

    def get(self, path: str) -> Response:
        return self._wrap(self.client.http.get(path, headers=json_headers(self.token, origin=ORIGIN)))

    def stream(self, action: str, **fields: Any) -> Response:
        return self.post("/transcription/stream", {"action": action, **fields})

    def ask(self, question: str, transcript: str) -> Response:
        return self.post("/transcription/ask", {"question": question, "transcript": transcript})

    def balance(self) -> int:
        from chalicelib.aws import store

        return store.get("users", user_id=self.user_id)["credits_balance"]

    def available(self) -> int:
        return self.balance()

    def owned(self) -> int:
        from chalicelib.aws import store

        user = store.get("users", user_id=self.user_id)
        return user["credits_balance"] + int(user.get("credits_held") or 0)

    def make_paying(self, credits: int) -> None:
        """Buy `credits` more (a purchase: the account is no longer never-paid)."""
        from chalicelib.credits import ledger

        ledger.grant(self.user_id, credits, source="test_purchase", record_id=uuid.uuid4().hex, purchased=True)

    def set_balance(self, credits: int) -> None:
        """Move the balance to `credits` through the ledger (a grant or a charge)."""
        from chalicelib.credits import ledger

        delta = credits - self.balance()
        if delta > 0:
            ledger.grant(self.user_id, delta, source="admin", record_id=uuid.uuid4().hex)
        elif delta < 0:
            ledger.charge(self.user_id, -delta, service_type="test", request_id=uuid.uuid4().hex)
        assert self.balance() == credits


@pytest.fixture
def caller(client, new_user, live):
    """A fresh user with the signup credits (200), ready to call the API."""

    def make() -> Caller:
        session = new_user()
        return Caller(client, session["token"], session["user"]["user_id"])

    return make


def session_item(session_id: str) -> dict[str, Any]:
    from chalicelib.aws import store

    return store.get("sessions", session_id=session_id)


class FakeClock:
    """The server's (and the fake AssemblyAI's) notion of now, moved by the test."""

    def __init__(self, start: float) -> None:
        self.now = float(start)

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch, fake_assemblyai):
    """An injectable clock: `store.epoch`/`store.now` (sessions, reservations) and the fake
    AssemblyAI's token expiry and session duration all read it."""
    from chalicelib.aws import store

    fake = FakeClock(time.time())
    monkeypatch.setattr(store, "epoch", lambda: int(fake.now))
    monkeypatch.setattr(store, "now", lambda: datetime.fromtimestamp(fake.now, timezone.utc))
    previous = fake_assemblyai.clock
    fake_assemblyai.clock = fake.time
    yield fake
    fake_assemblyai.clock = previous
