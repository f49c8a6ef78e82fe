"""The published extension, unchanged: its exact request sequence around a live session.

Read from shared/reference/published-extension (popup.js, background.js): it registers,
reads `GET /auth/user` and `GET /credits/balance` (Start is disabled when `balance` is 0, and
re-read 3 s after starting and every 30 s while captions run), starts with exactly
`{"action": "start"}`, builds its own socket URL from `assemblyai_api_key`
(`wss://streaming.assemblyai.com/v3/ws?sample_rate=16000&format_turns=true&token=...`),
sends 50 ms PCM chunks, keeps end-of-turn transcripts, asks questions about them with
`{question, transcript}`, stops with `{"action": "stop", session_id}` and closes the socket
with 1000 (no Terminate). It never renews and never heartbeats.
"""
from __future__ import annotations

import json
from urllib.parse import urlencode

from chalicelib.credits import ledger
from tests.conftest import ORIGIN, json_headers, unique_email
from tests.streaming.sandbox_client import SandboxSocket


class Extension:
    """The extension's apiCall: JSON, its one stored token, `response.ok` or throw."""

    def __init__(self, client) -> None:
        self.client = client
        self.token: str | None = None
        self.calls: list[str] = []

    def api(self, method: str, path: str, data: dict | None = None) -> tuple[int, dict]:
        self.calls.append(f"{method} {path}")
        headers = json_headers(self.token, origin=ORIGIN)
        if method == "GET":
            response = self.client.http.get(path, headers=headers)
        else:
            response = self.client.http.post(path, headers=headers, body=json.dumps(data) if data else None)
        return response.status_code, json.loads(response.body or b"{}")

    def balance(self) -> int:
        status, body = self.api("GET", "/credits/balance")
        assert status == 200 and isinstance(body["balance"], int)
        return body["balance"]


def _socket_url(streaming_base: str, token: str) -> str:
    """The URL background.js builds itself (no speech_model), on the sandbox's host."""
    query = urlencode({"sample_rate": 16000, "format_turns": "true", "token": token})
    return streaming_base.replace("http://", "ws://") + "/v3/ws?" + query


def _send_50ms_chunks(socket: SandboxSocket, clock, seconds: int) -> None:
    for _ in range(seconds):
        for _ in range(20):
            socket.ws.send(b"\x00\x00" * 800)
        clock.advance(1)
        socket.drain()


def test_the_published_extension_captions_asks_during_the_session_and_stops(client, live, clock,
                                                                           fake_assemblyai):
    ext = Extension(client)
    status, body = ext.api("POST", "/auth/register",
                           {"email": unique_email(), "password": "correct horse battery", "name": "Viewer"})
    assert status == 201
    ext.token = body["user"]["token"]
    status, user = ext.api("GET", "/auth/user")
    assert status == 200 and user["user"]["is_admin"] is False
    assert ext.balance() == 200  # Start enabled

    assert ext.balance() == 200  # Start clicked: read again, > 0
    status, started = ext.api("POST", "/transcription/stream", {"action": "start"})
    assert status == 200 and started["success"] is True
    session_id, key = started["session_id"], started["assemblyai_api_key"]
    socket = SandboxSocket(_socket_url(fake_assemblyai.streaming_url, key))
    assert socket.begin["type"] == "Begin"

    clock.advance(3)
    assert ext.balance() == 200  # 3 s after Start: what the user owns, not a surprising 0

    transcript = ""
    for rounds in range(1, 4):  # 30 s of captions, a balance poll, a question: three times
        _send_50ms_chunks(socket, clock, 30)
        socket.wait_for_turns(rounds * 6)  # 75 words every 30 s: at least 6 turns end
        transcript = " ".join(m["transcript"] for m in socket.messages
                              if m.get("type") == "Turn" and m.get("end_of_turn"))
        assert ext.balance() > 0
        status, answered = ext.api("POST", "/transcription/ask",
                                   {"question": "What did they say?", "transcript": transcript})
        assert status == 200, answered
        assert answered["answer"]
    assert "welcome back everyone" in transcript.lower()

    clock.advance(140)  # 4 minutes in all
    status, stopped = ext.api("POST", "/transcription/stream", {"action": "stop", "session_id": session_id})
    assert status == 200 and stopped["success"] is True
    assert (stopped["duration_minutes"], stopped["credits_used"]) == (4, 40)
    socket.ws.close(1000, "User stopped transcription")
    clock.advance(1)
    assert ext.balance() == 200 - 3 * 5 - 40
    assert ext.calls.count("POST /transcription/stream") == 2  # start and stop: nothing else
    user_id = user["user"]["user_id"]
    assert ledger.check_invariant(user_id).ok


def test_a_legacy_start_leaves_room_for_four_questions(caller, live):
    user = caller()
    user.set_balance(0)
    user.make_paying(100)
    started = user.stream("start").body
    assert (started["max_minutes"], started["credits_available"]) == (8, 20)
    answers = [user.ask("What happened?", "Something happened.").status for _ in range(5)]
    assert answers == [200, 200, 200, 200, 402]
    r = user.get("/credits/balance")
    assert (r.body["balance"], r.body["credits_held"], r.body["credits_available"]) == (80, 80, 0)
    user.stream("stop", session_id=started["session_id"])
    assert user.get("/credits/balance").body["balance"] == 70
