"""The fake AssemblyAI's v3 streaming socket: the real protocol, paced by the audio sent."""

from __future__ import annotations

import json
import ssl
import threading
from typing import Iterator

import pytest
import requests
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from devstack.fakes import AssemblyAIFake
from tests.certificates import self_signed_certificate

KEY = "test-assemblyai-key"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0
        self._lock = threading.Lock()

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def aai(clock: Clock) -> Iterator[AssemblyAIFake]:
    with AssemblyAIFake(KEY, clock=clock.time) as fake:
        yield fake


def _token(fake: AssemblyAIFake, expires: int = 60, duration: int = 600) -> str:
    r = requests.get(fake.streaming_url + "/v3/token", headers={"Authorization": KEY},
                     params={"expires_in_seconds": expires, "max_session_duration_seconds": duration}, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()["token"]


def _url(fake: AssemblyAIFake, token: str, **params: str) -> str:
    query = {"sample_rate": "16000", "format_turns": "true", "speech_model": "universal-streaming-english",
             "token": token, **params}
    return fake.streaming_url.replace("http", "ws") + "/v3/ws?" + "&".join(f"{k}={v}" for k, v in query.items())


def _read_all(socket) -> list[dict]:
    messages = []
    try:
        while True:
            messages.append(json.loads(socket.recv(timeout=5)))
    except ConnectionClosed:
        return messages


def _pcm(milliseconds: int, sample_rate: int = 16000) -> bytes:
    return b"\x00\x00" * (sample_rate * milliseconds // 1000)


def test_begin_partials_then_end_of_turn_unformatted_and_formatted_then_termination(aai, clock):
    token = _token(aai)
    with connect(_url(aai, token)) as socket:
        begin = json.loads(socket.recv(timeout=5))
        assert begin["type"] == "Begin" and begin["expires_at"] == int(clock.now) + 600
        assert len(begin["id"]) == 36
        for _ in range(100):  # 5 s of audio: 150 words a minute = 12 words
            socket.send(_pcm(50))
        socket.send(json.dumps({"type": "Terminate"}))
        messages = _read_all(socket)
        assert socket.close_code == 1000
    turns = [m for m in messages if m["type"] == "Turn"]
    first = [t for t in turns if t["turn_order"] == 0]
    assert [t["end_of_turn"] for t in first[-3:]] == [False, True, True]
    partial, final, formatted = first[-3:]
    assert partial["transcript"] == "welcome back everyone thanks for joining the stream"
    assert partial["words"][-1]["word_is_final"] is False and partial["turn_is_formatted"] is False
    assert final["transcript"] == "welcome back everyone thanks for joining the stream today"
    assert final["turn_is_formatted"] is False and final["utterance"] == final["transcript"]
    assert formatted["transcript"] == "Welcome back everyone, thanks for joining the stream today."
    assert formatted["turn_is_formatted"] is True
    assert [w["text"] for w in formatted["words"]][:3] == ["Welcome", "back", "everyone,"]
    assert all({"start", "end", "text", "confidence", "word_is_final"} <= set(w) for w in final["words"])
    assert messages[-1] == {"type": "Termination", "audio_duration_seconds": 5, "session_duration_seconds": 0}


def test_text_is_paced_by_audio_not_by_time(aai, clock):
    with connect(_url(aai, _token(aai))) as socket:
        socket.recv(timeout=5)
        clock.advance(120)  # two minutes of nothing: no words
        socket.send(_pcm(400))  # one word's worth of audio
        assert json.loads(socket.recv(timeout=5))["transcript"] == "welcome"
        socket.send(json.dumps({"type": "ForceEndpoint"}))
        ended = [json.loads(socket.recv(timeout=5)) for _ in range(2)]
        assert [(m["end_of_turn"], m["turn_is_formatted"], m["transcript"]) for m in ended] == [
            (True, False, "welcome"), (True, True, "Welcome.")]
        socket.send(json.dumps({"type": "KeepAlive"}))
        socket.send(json.dumps({"type": "Terminate"}))
        assert _read_all(socket)[-1]["type"] == "Termination"


def test_without_format_turns_only_the_unformatted_end_of_turn_comes(aai):
    with connect(_url(aai, _token(aai), format_turns="false")) as socket:
        socket.recv(timeout=5)
        for _ in range(100):
            socket.send(_pcm(50))
        socket.send(json.dumps({"type": "Terminate"}))
        turns = [m for m in _read_all(socket) if m["type"] == "Turn"]
    assert not any(t["turn_is_formatted"] for t in turns)


def test_the_session_ends_at_max_session_duration_with_3008(aai, clock):
    token = _token(aai, duration=60)
    with connect(_url(aai, token)) as socket:
        socket.recv(timeout=5)
        socket.send(_pcm(1000))
        clock.advance(61)
        messages = _read_all(socket)
        assert socket.close_code == 3008
        assert "Maximum session duration" in socket.close_reason
    assert {"type": "Error", "error_code": 3008,
            "error": "Session Expired: Maximum session duration exceeded"} in messages
    assert messages[-1]["type"] == "Termination" and messages[-1]["session_duration_seconds"] == 60
    [session] = aai.streaming_sessions
    assert session.close_code == 3008 and session.session_seconds(clock.now) == 60
    assert aai.provider_seconds({token}) == 60


@pytest.mark.parametrize("case", ["unknown", "reused", "expired", "missing"])
def test_only_an_unexpired_unused_token_it_minted_opens_a_session(aai, clock, case):
    token = _token(aai, expires=30)
    if case == "reused":
        with connect(_url(aai, token)) as socket:
            socket.recv(timeout=5)
    if case == "expired":
        clock.advance(31)
    url = _url(aai, {"unknown": "not-a-token", "missing": ""}.get(case, token))
    with connect(url) as socket:
        messages = _read_all(socket)
        assert socket.close_code == 1008
    assert messages[0]["type"] == "Error" and messages[0]["error_code"] == 1008
    assert "Unauthorized Connection" in messages[0]["error"]
    assert not any(m["type"] == "Begin" for m in messages)


@pytest.mark.parametrize("params, code", [
    ({"sample_rate": "abc"}, 3006),
    ({"encoding": "opus"}, 3006),
    ({"speech_model": "best"}, 3006),
])
def test_bad_connection_parameters_are_refused(aai, params, code):
    with connect(_url(aai, _token(aai), **params)) as socket:
        messages = _read_all(socket)
        assert socket.close_code == code
    assert messages[0]["type"] == "Error"


@pytest.mark.parametrize("frame, code", [
    (b"\x00\x00" * 100, 3007),  # 6.25 ms of audio
    (b"\x00\x00" * 32000, 3007),  # 2 s in one frame
    ("not json", 3006),
    (json.dumps({"type": "Dance"}), 3006),
])
def test_bad_frames_close_the_session(aai, frame, code):
    with connect(_url(aai, _token(aai))) as socket:
        socket.recv(timeout=5)
        socket.send(frame)
        messages = _read_all(socket)
        assert socket.close_code == code
    assert messages[-1]["type"] == "Error" and messages[-1]["error_code"] == code


def test_a_client_that_just_closes_ends_the_session(aai, clock):
    token = _token(aai)
    with connect(_url(aai, token)) as socket:
        socket.recv(timeout=5)
        clock.advance(42)
    for _ in range(100):
        if aai.streaming_sessions[0].closed_at is not None:
            break
        threading.Event().wait(0.02)
    assert aai.provider_seconds({token}) == 42


def test_the_token_endpoint_on_the_streaming_host_keeps_auth_and_faults(aai):
    r = requests.get(aai.streaming_url + "/v3/token", params={"expires_in_seconds": 60}, timeout=5)
    assert r.status_code == 401 and r.json() == {"error": "Authentication error, API token missing/invalid"}
    aai.fail_next(1, 503, path_prefix="/v3/token")
    r = requests.get(aai.streaming_url + "/v3/token", headers={"Authorization": KEY},
                     params={"expires_in_seconds": 60}, timeout=5)
    assert r.status_code == 503
    assert [q.path for q in aai.requests_to("/v3/token")] == ["/v3/token", "/v3/token"]


def test_a_tls_listener_serves_the_same_tokens_over_wss(aai, tmp_path):
    certfile, keyfile = self_signed_certificate(tmp_path)
    base = aai.serve_streaming(certfile=certfile, keyfile=keyfile)
    assert base.startswith("https://127.0.0.1:")
    token = _token(aai)  # minted on the plain listener, as the backend does
    context = ssl.create_default_context(cafile=certfile)
    context.check_hostname = False
    url = base.replace("https", "wss") + f"/v3/ws?sample_rate=16000&format_turns=true&token={token}"
    with connect(url, ssl=context) as socket:
        assert json.loads(socket.recv(timeout=5))["type"] == "Begin"
        socket.send(json.dumps({"type": "Terminate"}))
        assert _read_all(socket)[-1]["type"] == "Termination"


def test_label_canned_marks_every_streamed_turn(clock):
    with AssemblyAIFake(KEY, clock=clock.time, label_canned=True) as fake:
        with connect(_url(fake, _token(fake))) as socket:
            socket.recv(timeout=5)
            for _ in range(100):
                socket.send(_pcm(50))
            socket.send(json.dumps({"type": "Terminate"}))
            turns = [m for m in _read_all(socket) if m["type"] == "Turn"]
    assert turns and all(t["transcript"].startswith("[sandbox transcript] ") for t in turns)
    formatted = [t for t in turns if t["turn_is_formatted"]][0]
    assert formatted["transcript"] == "[sandbox transcript] Welcome back everyone, thanks for joining the stream today."
    assert formatted["utterance"] == formatted["transcript"]
    assert formatted["words"][0]["text"] == "Welcome"  # the words are what was "heard"
