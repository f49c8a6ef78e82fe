"""End to end over real HTTP: `python -m devstack.run` (chalice local) with the fake providers."""
from __future__ import annotations

import uuid
from urllib.parse import urlsplit

import pytest
import requests

from tests.conftest import ORIGIN, at_once, register_over_http

pytestmark = pytest.mark.e2e


def _headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Origin": ORIGIN}


def _balance(url: str, token: str) -> int:
    r = requests.get(f"{url}/auth/user", headers=_headers(token), timeout=15)
    assert r.status_code == 200, r.text
    return r.json()["user"]["credits_balance"]


def _stream(url: str, token: str, **body) -> requests.Response:
    return requests.post(f"{url}/transcription/stream", json=body, headers=_headers(token), timeout=30)


def test_start_heartbeat_stop_over_http(live_server, fake_assemblyai):
    url = live_server.url
    session = register_over_http(url, "e2e")
    token = session["token"]
    before = _balance(url, token)
    assert before == 200

    start = _stream(url, token, action="start", max_minutes=5)
    assert start.status_code == 200, start.text
    assert start.headers["Access-Control-Allow-Origin"] == ORIGIN
    body = start.json()
    assert body["credits_reserved"] == 50 and body["credits_balance"] == 150
    assert fake_assemblyai.token_info(body["token"]).max_session_duration_seconds == 300
    assert urlsplit(body["websocket_url"]).scheme == "ws"
    assert _balance(url, token) == 150

    beat = _stream(url, token, action="heartbeat", session_id=body["session_id"])
    assert beat.status_code == 200, beat.text
    assert beat.json()["seconds_remaining"] <= 300

    stop = _stream(url, token, action="stop", session_id=body["session_id"])
    assert stop.status_code == 200, stop.text
    outcome = stop.json()
    assert (outcome["duration_minutes"], outcome["credits_used"], outcome["credits_refunded"]) == (1, 10, 40)
    after = _balance(url, token)
    assert outcome["remaining_balance"] == after == before - 10

    again = _stream(url, token, action="stop", session_id=body["session_id"])
    assert again.status_code == 200 and again.json()["credits_used"] == 10
    assert _balance(url, token) == after


def test_parallel_starts_over_http_reserve_at_most_the_balance(live_server):
    url = live_server.url
    token = register_over_http(url, "e2e")["token"]
    responses = at_once(5, lambda: _stream(url, token, action="start"))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 402, 402, 402, 402], [r.text for r in responses]
    assert _balance(url, token) == 0
    [started] = [r.json() for r in responses if r.status_code == 200]
    assert started["credits_reserved"] == 200
    stop = _stream(url, token, action="stop", session_id=started["session_id"])
    assert stop.json()["remaining_balance"] == 190


def test_ask_and_twitch_over_http(live_server, fake_twitch):
    url = live_server.url
    token = register_over_http(url, "e2e")["token"]
    r = requests.post(
        f"{url}/transcription/ask",
        json={"question": "What is the plan?", "transcript": "The plan is to win the final round."},
        headers=_headers(token),
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert r.json()["credits_used"] == 5 and r.json()["remaining_balance"] == 195
    channel = "e2e_" + uuid.uuid4().hex[:8]
    fake_twitch.add_channel(channel, live=True, title="E2E stream")
    r = requests.get(f"{url}/twitch/stream", params={"channel": channel}, headers=_headers(token), timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["live"] is True and r.json()["title"] == "E2E stream"
