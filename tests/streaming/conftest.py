"""Fixtures for live captions, Ask and the Twitch lookup.

The fake providers (real HTTP on loopback) come from tests/conftest.py; `live` points the
settings at them, makes provider retry backoff tiny, and cleans injected faults up.
`Caller` wraps one registered user and the API calls these tests make.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
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
        from chalicelib import store

        return store.get("users", user_id=self.user_id)["credits_balance"]

    def set_balance(self, credits: int) -> None:
        """Move the balance to `credits` through the ledger (a grant or a charge)."""
        from chalicelib import ledger

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
    from chalicelib import store

    return store.get("sessions", session_id=session_id)


def age_session(session_id: str, seconds: int, heartbeat_seconds_ago: int | None = None) -> None:
    """Move a session's start (and last heartbeat) into the past, as if time had passed."""
    from chalicelib import store

    item = session_item(session_id)
    started = item["started_epoch"] - seconds
    last = started if heartbeat_seconds_ago is None else store.epoch() - heartbeat_seconds_ago
    store.ddb().update_item(
        TableName=store.table_name("sessions"),
        Key=store.key(session_id=session_id),
        UpdateExpression="SET started_epoch = :s, last_heartbeat_epoch = :h, ends_by_epoch = :e",
        ExpressionAttributeValues=store.values(
            s=started, h=max(last, started), e=started + item["max_session_seconds"]
        ),
    )
