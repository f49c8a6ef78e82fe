"""Fake AssemblyAI: streaming temporary tokens, the v3 streaming socket, pre-recorded transcription.

Serves both real hosts' REST paths on one port: `streaming.assemblyai.com` (`/v3/token`)
and `api.assemblyai.com` (`/v2/...`); the streaming host, WebSocket included, is also
served on its own port (`streaming_url`, see assemblyai_streaming.py), plain or TLS. Auth is the raw key in `Authorization`
(no "Bearer"), errors are `{"error": "<message>"}`. Transcripts progress over
successive polls like the real service, and their length follows the audio's
real duration (read from the WAV header of the fetched `audio_url`), clipped to
`audio_start_from`/`audio_end_at` (ms): only that part is transcribed and counted
in `audio_duration`, as the real service processes (and bills) only that part.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import requests
from werkzeug.wrappers import Request

from .assemblyai_streaming import CLOSE_UNAUTHORIZED, StreamingListener, StreamingSession, SessionRefused
from .audio import CANNED_TRANSCRIPT, speech_text, timed_words, wav_duration_seconds
from .base import FakeError, FakeServer, Rule, keys_match, random_id, read_json

log = logging.getLogger(__name__)

Outcome = Literal["completed", "never", "error"]

#: Every parameter of POST /v2/transcript we know of; anything else is rejected.
KNOWN_TRANSCRIPT_PARAMS = frozenset(
    """audio_url speech_models speech_model language_code language_detection
    language_detection_options language_confidence_threshold punctuate format_text
    disfluencies dual_channel multichannel speaker_labels speakers_expected
    speaker_options webhook_url webhook_auth_header_name webhook_auth_header_value
    audio_start_from audio_end_at word_boost boost_param keyterms_prompt prompt
    filter_profanity redact_pii redact_pii_audio redact_pii_audio_quality
    redact_pii_audio_options redact_pii_policies redact_pii_sub auto_highlights
    content_safety content_safety_confidence iab_categories custom_spelling
    sentiment_analysis auto_chapters entity_detection speech_threshold summarization
    summary_model summary_type custom_topics topics temperature""".split()
)
KNOWN_SPEECH_MODELS = frozenset({"universal-3-pro", "universal-2", "universal", "slam-1", "best", "nano"})
DOWNLOAD_ERROR = (
    "Download error, unable to download {url}. Please make sure the file exists "
    "and is accessible from the internet."
)
NO_AUDIO_ERROR = "Transcoding failed. File does not appear to contain audio."


@dataclass(frozen=True)
class MintedToken:
    """A v3 temporary token as minted, so tests can check what was asked for."""

    token: str
    expires_in_seconds: int
    max_session_duration_seconds: int
    created_at: float


@dataclass
class _Job:
    transcript: dict[str, Any]
    outcome: Outcome
    polls_before_completion: int
    text: str | None
    polls: int = 0
    fetched: threading.Event = field(default_factory=threading.Event)
    duration: float | None = None
    fetch_error: str | None = None


class AssemblyAIFake(FakeServer):
    """Fake of AssemblyAI's REST API (token minting, upload, transcripts).

    Knobs, read when a transcript is created: `polls_before_completion` (GETs
    answered "processing" before "completed"), `outcome` ("completed", "never":
    stays processing, "error": ends with `error_message`), `text` (completed
    text; None generates ~`words_per_minute` words per minute of audio),
    `default_audio_duration` (seconds, for audio that is not WAV). `clock` (seconds,
    `time.time` by default) times token expiry and streaming sessions; tests replace it.
    `streaming_port` is where `start()` serves the streaming host (0: any free port).
    `label_canned` starts every made-up transcript (and every streamed turn's
    `transcript`) with "[sandbox transcript]", as `make run`'s sandbox does.
    """

    provider = "assemblyai"

    def __init__(
        self,
        api_key: str = "test-assemblyai-key",
        *,
        port: int = 0,
        polls_before_completion: int = 1,
        outcome: Outcome = "completed",
        error_message: str = NO_AUDIO_ERROR,
        text: str | None = None,
        default_audio_duration: float = 60.0,
        words_per_minute: float = 150.0,
        fetch_timeout: float = 10.0,
        streaming_port: int = 0,
        clock: Callable[[], float] = time.time,
        label_canned: bool = False,
    ) -> None:
        self.api_key = api_key
        self.label_canned = label_canned
        self.polls_before_completion = polls_before_completion
        self.outcome: Outcome = outcome
        self.error_message = error_message
        self.text = text
        self.default_audio_duration = default_audio_duration
        self.words_per_minute = words_per_minute
        self.fetch_timeout = fetch_timeout
        self._tokens: dict[str, MintedToken] = {}
        self._uploads: dict[str, bytes] = {}
        self._jobs: dict[str, _Job] = {}
        self.clock = clock
        self.streaming_port = streaming_port
        self._redeemed: set[str] = set()
        self._streaming_sessions: list[StreamingSession] = []
        self._listeners: list[StreamingListener] = []
        super().__init__(port=port)

    def routes(self) -> list[Rule]:
        return [
            Rule("/v3/token", methods=["GET"], endpoint="mint_token"),
            Rule("/v2/upload", methods=["POST"], endpoint="upload"),
            Rule("/v2/transcript", methods=["POST"], endpoint="create_transcript"),
            Rule("/v2/transcript/<transcript_id>", methods=["GET"], endpoint="get_transcript"),
        ]

    def authenticate(self, request: Request) -> None:
        if not keys_match(request.headers.get("Authorization"), self.api_key):
            raise FakeError(401, "Authentication error, API token missing/invalid")

    # ----- lifecycle: the REST port and the streaming host ------------------------------

    def start(self) -> AssemblyAIFake:
        if self._server is None:
            super().start()
            self.serve_streaming(port=self.streaming_port)
        return self

    def stop(self) -> None:
        for listener in self._listeners:
            listener.stop()
        self._listeners.clear()
        super().stop()

    def serve_streaming(self, port: int = 0, *, host: str = "127.0.0.1",
                        certfile: str | None = None, keyfile: str | None = None) -> str:
        """Serve the streaming host (`/v3/token` and the `/v3/ws` socket) on another listener;
        with `certfile`/`keyfile` over TLS (wss://), e.g. standing in for
        streaming.assemblyai.com in a real browser. Returns its base URL."""
        listener = StreamingListener(self, host, port, certfile, keyfile)
        self._listeners.append(listener)
        return listener.url

    @property
    def streaming_url(self) -> str:
        """Base URL of the first streaming listener: ASSEMBLYAI_STREAMING_API_BASE."""
        if not self._listeners:
            raise RuntimeError("fake assemblyai is not started")
        return self._listeners[0].url

    def redeem_token(self, token: str) -> MintedToken:
        """Open a session with a temporary token: unknown, used or expired ones are refused."""
        with self._lock:
            minted = self._tokens.get(token)
            if minted is None:
                raise SessionRefused(CLOSE_UNAUTHORIZED, "Unauthorized Connection: Invalid token")
            if token in self._redeemed:
                raise SessionRefused(CLOSE_UNAUTHORIZED, "Unauthorized Connection: Token already used")
            if self.clock() - minted.created_at > minted.expires_in_seconds:
                raise SessionRefused(CLOSE_UNAUTHORIZED, "Unauthorized Connection: Token expired")
            self._redeemed.add(token)
            return minted

    # ----- test helpers ---------------------------------------------------------------

    @property
    def streaming_sessions(self) -> list[StreamingSession]:
        """Every streaming socket opened so far, oldest first."""
        with self._lock:
            return list(self._streaming_sessions)

    def provider_seconds(self, tokens: set[str] | None = None) -> float:
        """Seconds AssemblyAI would bill for the sessions so far (those of `tokens`, if given);
        a session still open counts up to now."""
        now = self.clock()
        return sum(s.session_seconds(now) for s in self.streaming_sessions
                   if tokens is None or s.token in tokens)

    @property
    def tokens(self) -> dict[str, MintedToken]:
        """Every temporary token minted so far, by token string."""
        with self._lock:
            return dict(self._tokens)

    def token_info(self, token: str) -> MintedToken | None:
        with self._lock:
            return self._tokens.get(token)

    def transcript(self, transcript_id: str) -> dict[str, Any]:
        """The transcript as last served (without polling it)."""
        with self._lock:
            return dict(self._jobs[transcript_id].transcript)

    @property
    def transcript_ids(self) -> list[str]:
        with self._lock:
            return list(self._jobs)

    # ----- endpoints --------------------------------------------------------------------

    def mint_token(self, request: Request) -> dict[str, Any]:
        expires = _int_param(request, "expires_in_seconds", None, 1, 600)
        max_duration = _int_param(request, "max_session_duration_seconds", 10800, 60, 10800)
        token = random_id("", 48)
        with self._lock:
            self._tokens[token] = MintedToken(token, expires, max_duration, self.clock())
        return {"token": token, "expires_in_seconds": expires}

    def upload(self, request: Request) -> dict[str, Any]:
        upload_id = str(uuid.uuid4())
        with self._lock:
            self._uploads[upload_id] = request.get_data(cache=True)
        return {"upload_url": f"{self.url}/upload/{upload_id}"}

    def create_transcript(self, request: Request) -> dict[str, Any]:
        params = read_json(request)
        _validate_transcript_params(params)
        transcript_id = str(uuid.uuid4())
        transcript = _new_transcript(transcript_id, params)
        job = _Job(transcript, self.outcome, self.polls_before_completion, self.text)
        with self._lock:
            self._jobs[transcript_id] = job
        threading.Thread(target=self._fetch_audio, args=(job, params["audio_url"]), daemon=True).start()
        return dict(transcript)

    def get_transcript(self, request: Request, transcript_id: str) -> dict[str, Any]:
        with self._lock:
            job = self._jobs.get(transcript_id)
        if job is None:
            raise FakeError(404, "Transcript lookup error, transcript id not found")
        job.fetched.wait(self.fetch_timeout + 1)
        with self._lock:
            job.polls += 1
            self._advance(job)
            return dict(job.transcript)

    # ----- transcript progress ----------------------------------------------------------

    def _fetch_audio(self, job: _Job, url: str) -> None:
        """Download the audio like the real service does right after creation."""
        try:
            data = self._download(url)
            if not data:
                job.fetch_error = NO_AUDIO_ERROR
            else:
                job.duration = wav_duration_seconds(data)
                if job.duration is None:
                    job.duration = self.default_audio_duration
        except requests.RequestException as exc:
            log.info("fake assemblyai could not fetch audio: %s", type(exc).__name__)
            job.fetch_error = DOWNLOAD_ERROR.format(url=url)
        finally:
            job.fetched.set()

    def _download(self, url: str) -> bytes:
        prefix = f"{self.url}/upload/"
        if url.startswith(prefix):
            with self._lock:
                data = self._uploads.get(url[len(prefix):])
            if data is None:
                raise requests.HTTPError("unknown upload")
            return data
        response = requests.get(url, timeout=self.fetch_timeout)
        response.raise_for_status()
        return response.content

    def _advance(self, job: _Job) -> None:
        t = job.transcript
        if t["status"] in ("completed", "error"):
            return
        if job.fetch_error is not None:
            t.update(status="error", error=job.fetch_error)
        elif job.outcome == "never" or job.polls <= job.polls_before_completion:
            t["status"] = "processing"
        elif job.outcome == "error":
            t.update(status="error", error=self.error_message)
        else:
            self._complete(job)

    def _complete(self, job: _Job) -> None:
        t = job.transcript
        duration_ms = int((job.duration or 0.0) * 1000)
        start_ms = min(t["audio_start_from"] or 0, duration_ms)
        end_ms = min(t["audio_end_at"] or duration_ms, duration_ms)
        spoken_ms = max(end_ms - start_ms, 0)  # only [audio_start_from, audio_end_at) is processed
        text = job.text if job.text is not None else speech_text(spoken_ms / 1000, self.words_per_minute)
        if self.label_canned and text:
            text = f"{CANNED_TRANSCRIPT} {text}"
        speaker = "A" if t["speaker_labels"] else None
        words = timed_words(text, spoken_ms, speaker)
        for word in words:
            word["start"] += start_ms
            word["end"] += start_ms
        t.update(
            status="completed",
            text=text,
            words=words,
            confidence=0.98 if words else None,
            audio_duration=round(spoken_ms / 1000),  # what is processed, and billed
        )
        if speaker and words:
            t["utterances"] = [
                {"speaker": speaker, "text": text, "start": words[0]["start"],
                 "end": words[-1]["end"], "confidence": 0.98, "words": words}
            ]


def _int_param(request: Request, name: str, default: int | None, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        if default is None:
            raise FakeError(400, f"{name} is required")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise FakeError(400, f"{name} must be an integer") from None
    if not low <= value <= high:
        raise FakeError(400, f"{name} must be between {low} and {high}")
    return value


def _validate_transcript_params(params: Any) -> None:
    if not isinstance(params, dict):
        raise FakeError(400, "Request body must be a JSON object")
    unknown = sorted(set(params) - KNOWN_TRANSCRIPT_PARAMS)
    if unknown:
        raise FakeError(400, f"Invalid request body: unknown field(s) {', '.join(unknown)}")
    if not isinstance(params.get("audio_url"), str) or not params["audio_url"]:
        raise FakeError(400, "audio_url is required and must be a string")
    models = params.get("speech_models")
    if models is not None:
        if not isinstance(models, list) or not models or not all(isinstance(m, str) for m in models):
            raise FakeError(400, "speech_models must be a non-empty array of strings")
        bad = [m for m in models if m not in KNOWN_SPEECH_MODELS]
        if bad:
            raise FakeError(400, f"Invalid speech model(s): {', '.join(bad)}")
    for name in ("audio_start_from", "audio_end_at"):
        value = params.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise FakeError(400, f"{name} must be a non-negative integer")
    start, end = params.get("audio_start_from"), params.get("audio_end_at")
    if start is not None and end is not None and end <= start:
        raise FakeError(400, "audio_end_at must be greater than audio_start_from")


def _new_transcript(transcript_id: str, params: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": transcript_id,
        "status": "queued",
        "audio_url": params["audio_url"],
        "text": None,
        "words": None,
        "utterances": None,
        "confidence": None,
        "audio_duration": None,
        "language_code": params.get("language_code") or ("en_us" if not params.get("language_detection") else None),
        "language_detection": bool(params.get("language_detection", False)),
        "speech_model": params.get("speech_model"),
        "speech_models": params.get("speech_models"),
        "punctuate": params.get("punctuate", True),
        "format_text": params.get("format_text", True),
        "speaker_labels": bool(params.get("speaker_labels", False)),
        "audio_start_from": params.get("audio_start_from"),
        "audio_end_at": params.get("audio_end_at"),
        "webhook_url": params.get("webhook_url"),
        "webhook_status_code": None,
        "webhook_auth": bool(params.get("webhook_auth_header_name")),
        "acoustic_model": "assemblyai_default",
        "language_model": "assemblyai_default",
    }
