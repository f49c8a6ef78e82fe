"""End to end over real HTTP: `python -m devstack.run` (chalice local) with the fake providers."""
from __future__ import annotations

import json
import uuid
from urllib.parse import urlsplit

import pytest
import requests

from tests.conftest import ORIGIN, at_once, register_over_http

pytestmark = pytest.mark.e2e


def _headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Origin": ORIGIN}


def _user(url: str, token: str) -> dict:
    r = requests.get(f"{url}/auth/user", headers=_headers(token), timeout=15)
    assert r.status_code == 200, r.text
    return r.json()["user"]


def _balance(url: str, token: str) -> int:
    return _user(url, token)["credits_balance"]


def _stream(url: str, token: str, **body) -> requests.Response:
    return requests.post(f"{url}/transcription/stream", json=body, headers=_headers(token), timeout=30)


def test_start_stream_captions_and_stop_over_http(live_server, fake_assemblyai):
    """`make run`'s websocket_url works: real HTTP to the API, a real socket to the sandbox."""
    from websockets.sync.client import connect

    url = live_server.url
    token = register_over_http(url, "e2e")["token"]
    assert _balance(url, token) == 200

    start = _stream(url, token, action="start", max_minutes=5)
    assert start.status_code == 200, start.text
    assert start.headers["Access-Control-Allow-Origin"] == ORIGIN
    body = start.json()
    assert (body["credits_reserved"], body["credits_balance"], body["credits_available"]) == (50, 200, 150)
    assert fake_assemblyai.token_info(body["token"]).max_session_duration_seconds == 300
    assert urlsplit(body["websocket_url"]).scheme == "ws"
    user = _user(url, token)
    assert (user["credits_balance"], user["credits_available"], user["credits_held"]) == (200, 150, 50)

    turns = []
    with connect(body["websocket_url"], open_timeout=10) as socket:
        assert json.loads(socket.recv(timeout=10))["type"] == "Begin"
        for _ in range(60):  # 3 s of 16 kHz PCM in 50 ms chunks
            socket.send(b"\x00\x00" * 800)
        socket.send(json.dumps({"type": "Terminate"}))
        while True:
            message = json.loads(socket.recv(timeout=10))
            if message["type"] == "Termination":
                break
            turns.append(message)
    finals = [t for t in turns if t["end_of_turn"] and t["turn_is_formatted"]]
    assert finals and finals[0]["transcript"].startswith("Welcome back everyone")

    beat = _stream(url, token, action="heartbeat", session_id=body["session_id"])
    assert beat.status_code == 200, beat.text
    assert beat.json()["seconds_remaining"] <= 300

    stop = _stream(url, token, action="stop", session_id=body["session_id"])
    assert stop.status_code == 200, stop.text
    outcome = stop.json()
    assert (outcome["duration_minutes"], outcome["credits_used"], outcome["credits_refunded"]) == (1, 10, 40)
    assert outcome["remaining_balance"] == _balance(url, token) == 190

    again = _stream(url, token, action="stop", session_id=body["session_id"])
    assert again.status_code == 200 and again.json()["credits_used"] == 10
    assert _balance(url, token) == 190


def test_parallel_starts_over_http_hold_at_most_the_balance(live_server):
    url = live_server.url
    token = register_over_http(url, "e2e")["token"]
    responses = at_once(5, lambda: _stream(url, token, action="start"))
    started = [r.json() for r in responses if r.status_code == 200]
    assert {r.status_code for r in responses} <= {200, 402, 409}, [r.text for r in responses]
    assert 1 <= len(started) <= 2  # LIVE_MAX_CONCURRENT_SESSIONS
    held = sum(s["credits_reserved"] for s in started)
    user = _user(url, token)
    assert held <= 200 and (user["credits_balance"], user["credits_held"]) == (200, held)
    for session in started:
        assert _stream(url, token, action="stop", session_id=session["session_id"]).status_code == 200
    assert _user(url, token)["credits_balance"] == 200 - 10 * len(started)


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
