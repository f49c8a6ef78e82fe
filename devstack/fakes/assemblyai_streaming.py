"""AssemblyAI's streaming host for the fake: `GET /v3/token` and the v3 WebSocket `/v3/ws`.

One listener (plain, or TLS with a given certificate) serves both paths, as
`streaming.assemblyai.com` does: the WebSocket upgrade of `/v3/ws` is handled here with the
`websockets` library's threaded server, and every other request is answered by the fake's
own WSGI app (so `/v3/token` keeps its auth, recording and fault injection). Several
listeners may share one fake (and its tokens): a plain one for tests and `make run`, a TLS
one standing in for `wss://streaming.assemblyai.com` in a real-browser test.

The session protocol followed is in devstack/fakes/README.md ("AssemblyAI streaming").
Text is deterministic and paced by the audio received (about `words_per_minute`), never by
wall time; the session's duration is measured with the fake's `clock`, which tests replace.
"""
from __future__ import annotations

import io
import json
import logging
import ssl
import threading
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request as WsRequest
from websockets.http11 import Response as WsResponse
from websockets.sync.server import Server, ServerConnection, serve

from .audio import CANNED_TRANSCRIPT, SCRIPT_WORDS

if TYPE_CHECKING:
    from .assemblyai import AssemblyAIFake

# websockets logs every connection at INFO; only its problems are worth a line here.
_server_log = logging.getLogger(__name__ + ".server")
_server_log.setLevel(logging.WARNING)

WS_PATH = "/v3/ws"
SPEECH_MODELS = frozenset({"universal-streaming-english", "universal-streaming-multilingual"})
ENCODINGS = {"pcm_s16le": 2, "pcm_mulaw": 1}  # bytes per sample
MIN_CHUNK_MS, MAX_CHUNK_MS = 50, 1000
WORDS_PER_TURN = 12  # a turn also ends at a sentence end in the script
POLL_SECONDS = 0.05  # how often an idle session checks its clock (max duration)

# Close codes and reasons of the real service (devstack/fakes/README.md).
CLOSE_NORMAL = 1000
CLOSE_UNAUTHORIZED = 1008
CLOSE_INVALID_MESSAGE = 3006
CLOSE_INPUT_DURATION = 3007
CLOSE_SESSION_EXPIRED = 3008
EXPIRED_REASON = "Session Expired: Maximum session duration exceeded"


@dataclass
class StreamingSession:
    """One socket as the fake saw it, for tests: AssemblyAI bills `session_seconds`."""

    id: str
    token: str
    opened_at: float
    max_session_seconds: int
    sample_rate: int
    format_turns: bool
    closed_at: float | None = None
    close_code: int | None = None
    audio_bytes: int = 0
    bytes_per_second: int = 32000
    turns: list[dict[str, Any]] = field(default_factory=list)

    @property
    def audio_seconds(self) -> float:
        return self.audio_bytes / self.bytes_per_second

    def session_seconds(self, now: float) -> float:
        return (self.closed_at if self.closed_at is not None else now) - self.opened_at


class SessionRefused(Exception):
    """Close the socket right after the upgrade with an Error message (the real behaviour)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class StreamingListener:
    """One listening socket of the streaming host, served in a daemon thread."""

    def __init__(self, fake: AssemblyAIFake, host: str, port: int,
                 certfile: str | None = None, keyfile: str | None = None) -> None:
        self.fake = fake
        self.host = host
        context = None
        if certfile:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certfile, keyfile)
        self.tls = context is not None
        self._server: Server = serve(
            self._session, host, port, ssl=context, process_request=self._route,
            ping_interval=None, max_size=2**20, server_header="fake-assemblyai", logger=_server_log,
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name=f"fake-assemblyai-streaming-{self.port}")
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.socket.getsockname()[1])

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)

    # ----- HTTP: everything but the upgrade goes to the fake's WSGI app -----------------

    def _route(self, connection: ServerConnection, request: WsRequest) -> WsResponse | None:
        if urlsplit(request.path).path == WS_PATH and "upgrade" in request.headers.get("Connection", "").lower():
            return None
        return self._wsgi(request)

    def _wsgi(self, request: WsRequest) -> WsResponse:
        parts = urlsplit(request.path)
        environ: dict[str, Any] = {
            "REQUEST_METHOD": "GET", "PATH_INFO": parts.path, "QUERY_STRING": parts.query,
            "SERVER_NAME": self.host, "SERVER_PORT": str(self.port), "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.url_scheme": "https" if self.tls else "http", "wsgi.input": io.BytesIO(b""),
            "wsgi.errors": io.StringIO(), "wsgi.version": (1, 0), "wsgi.multithread": True,
            "wsgi.multiprocess": False, "wsgi.run_once": False, "CONTENT_LENGTH": "0",
        }
        for name, value in request.headers.raw_items():
            environ["HTTP_" + name.upper().replace("-", "_")] = value
        captured: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            captured["status"], captured["headers"] = status, headers

        body = b"".join(self.fake(environ, start_response))
        code, _, reason = captured["status"].partition(" ")
        skip = ("content-length", "connection")
        headers = Headers([(k, v) for k, v in captured["headers"] if k.lower() not in skip])
        headers["Content-Length"] = str(len(body))
        # websockets closes the connection after a plain HTTP answer: say so, or a pooling
        # client (requests) would send its next request on a dead connection.
        headers["Connection"] = "close"
        return WsResponse(int(code), reason, headers, body)

    # ----- the WebSocket session --------------------------------------------------------

    def _session(self, connection: ServerConnection) -> None:
        try:
            session = self._open(connection)
        except SessionRefused as refused:
            _send_error(connection, refused.code, refused.message)
            connection.close(refused.code, refused.message[:120])
            return
        try:
            _Run(self.fake, connection, session).serve()
        finally:
            with self.fake._lock:
                if session.closed_at is None:
                    session.closed_at = self.fake.clock()
                    session.close_code = connection.close_code

    def _open(self, connection: ServerConnection) -> StreamingSession:
        query = parse_qs(urlsplit(connection.request.path).query)

        def param(name: str) -> str | None:
            return query[name][0] if name in query else None

        token = param("token")
        if not token:
            raise SessionRefused(CLOSE_UNAUTHORIZED, "Unauthorized Connection: Missing Authorization header")
        sample_rate = param("sample_rate")
        if sample_rate is None or not sample_rate.isdigit() or not 8000 <= int(sample_rate) <= 48000:
            raise SessionRefused(CLOSE_INVALID_MESSAGE, "Invalid Message: sample_rate must be an integer from 8000 to 48000")
        encoding = param("encoding") or "pcm_s16le"
        if encoding not in ENCODINGS:
            raise SessionRefused(CLOSE_INVALID_MESSAGE, f"Invalid Message: unsupported encoding {encoding}")
        model = param("speech_model")
        if model is not None and model not in SPEECH_MODELS:
            raise SessionRefused(CLOSE_INVALID_MESSAGE, f"Invalid Message: unknown speech_model {model}")
        minted = self.fake.redeem_token(token)  # raises SessionRefused
        now = self.fake.clock()
        session = StreamingSession(
            id=str(uuid.uuid4()), token=token, opened_at=now,
            max_session_seconds=minted.max_session_duration_seconds,
            sample_rate=int(sample_rate), format_turns=(param("format_turns") or "false").lower() == "true",
            bytes_per_second=int(sample_rate) * ENCODINGS[encoding],
        )
        with self.fake._lock:
            self.fake._streaming_sessions.append(session)
        return session


class _Run:
    """The message loop of one session: audio in, turns out, until Terminate or the cap."""

    def __init__(self, fake: AssemblyAIFake, connection: ServerConnection, session: StreamingSession) -> None:
        self.fake = fake
        self.connection = connection
        self.session = session
        self.words_per_second = fake.words_per_minute / 60
        self.word_index = 0  # position in the script
        self.turn_words: list[dict[str, Any]] = []
        self.turn_order = 0

    def send(self, message: dict[str, Any]) -> None:
        self.connection.send(json.dumps(message))

    def serve(self) -> None:
        s = self.session
        self.send({"type": "Begin", "id": s.id, "expires_at": int(s.opened_at + s.max_session_seconds)})
        while True:
            if self.fake.clock() - s.opened_at >= s.max_session_seconds:
                self.expire()
                return
            try:
                message = self.connection.recv(timeout=POLL_SECONDS)
            except TimeoutError:
                continue
            except ConnectionClosed:
                return
            if isinstance(message, bytes):
                if not self.audio(message):
                    return
            elif not self.control(message):
                return

    def audio(self, chunk: bytes) -> bool:
        s = self.session
        milliseconds = len(chunk) * 1000 / s.bytes_per_second
        if not MIN_CHUNK_MS <= round(milliseconds, 3) <= MAX_CHUNK_MS:
            self.fail(CLOSE_INPUT_DURATION,
                      f"Input duration violation: {milliseconds:.0f} ms. Expected between 50 and 1000 ms")
            return False
        s.audio_bytes += len(chunk)
        due = int(s.audio_seconds * self.words_per_second)
        while self.word_index < due:
            self.add_word()
        return True

    def add_word(self) -> None:
        text = SCRIPT_WORDS[self.word_index % len(SCRIPT_WORDS)]
        start_ms = int(self.word_index / self.words_per_second * 1000)
        end_ms = int((self.word_index + 1) / self.words_per_second * 1000) - 40
        self.word_index += 1
        self.turn_words.append({"start": start_ms, "end": end_ms, "text": text,
                                "confidence": 0.97, "word_is_final": True})
        if text.endswith(".") or len(self.turn_words) >= WORDS_PER_TURN:
            self.end_turn()
        else:
            self.send(self.turn(end_of_turn=False, formatted=False))

    def turn(self, *, end_of_turn: bool, formatted: bool) -> dict[str, Any]:
        words = [dict(w) for w in self.turn_words]
        if not end_of_turn:
            words[-1]["word_is_final"] = False
        spoken = [_unformatted(w["text"]) for w in words]
        transcript = " ".join(w["text"] for w in words) if formatted else " ".join(spoken)
        if formatted:
            transcript = transcript[:1].upper() + transcript[1:]
            if not transcript.endswith((".", "?", "!")):
                transcript = transcript.rstrip(",") + "."
        if self.fake.label_canned:
            transcript = f"{CANNED_TRANSCRIPT} {transcript}"
        message = {
            "type": "Turn",
            "turn_order": self.turn_order,
            "turn_is_formatted": formatted,
            "end_of_turn": end_of_turn,
            "transcript": transcript,
            "end_of_turn_confidence": 0.92 if end_of_turn else 0.12,
            "words": [{**w, "text": _unformatted(w["text"]) if not formatted else w["text"]} for w in words],
            "utterance": transcript if end_of_turn else "",
        }
        return message

    def end_turn(self) -> None:
        if not self.turn_words:
            return
        final = self.turn(end_of_turn=True, formatted=False)
        self.send(final)
        self.session.turns.append(final)
        if self.session.format_turns:
            formatted = self.turn(end_of_turn=True, formatted=True)
            self.send(formatted)
            self.session.turns.append(formatted)
        self.turn_words = []
        self.turn_order += 1

    def control(self, raw: str) -> bool:
        try:
            message = json.loads(raw)
        except ValueError:
            self.fail(CLOSE_INVALID_MESSAGE, f"Invalid JSON: {raw[:60]}")
            return False
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "Terminate":
            self.end_turn()
            self.terminate(CLOSE_NORMAL, "")
            return False
        if kind == "ForceEndpoint":
            self.end_turn()
        elif kind not in ("KeepAlive", "UpdateConfiguration"):
            self.fail(CLOSE_INVALID_MESSAGE, f"Invalid Message Type: {str(kind)[:60]}")
            return False
        return True

    def termination(self) -> dict[str, Any]:
        s = self.session
        return {"type": "Termination", "audio_duration_seconds": int(s.audio_seconds),
                "session_duration_seconds": int(s.session_seconds(self.fake.clock()))}

    def terminate(self, code: int, reason: str) -> None:
        self.send(self.termination())
        self._close(code, reason)

    def expire(self) -> None:
        """The token's max_session_duration_seconds is up: what the real service does.

        The session ends at its limit exactly, even when a test's clock jumped past it."""
        s = self.session
        self.end_turn()
        _send_error(self.connection, CLOSE_SESSION_EXPIRED, EXPIRED_REASON)
        self.send({"type": "Termination", "audio_duration_seconds": int(s.audio_seconds),
                   "session_duration_seconds": s.max_session_seconds})
        with self.fake._lock:
            s.closed_at = s.opened_at + s.max_session_seconds
            s.close_code = CLOSE_SESSION_EXPIRED
        self.connection.close(CLOSE_SESSION_EXPIRED, EXPIRED_REASON)

    def fail(self, code: int, message: str) -> None:
        _send_error(self.connection, code, message)
        self._close(code, message[:120])

    def _close(self, code: int, reason: str) -> None:
        with self.fake._lock:
            self.session.closed_at = self.fake.clock()
            self.session.close_code = code
        self.connection.close(code, reason)


def _send_error(connection: ServerConnection, code: int, message: str) -> None:
    try:
        connection.send(json.dumps({"type": "Error", "error_code": code, "error": message}))
    except ConnectionClosed:
        pass


def _unformatted(word: str) -> str:
    """How an unformatted turn spells a word: lower case, no punctuation."""
    return word.strip(".,?!").lower()
