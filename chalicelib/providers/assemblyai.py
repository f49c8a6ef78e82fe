"""AssemblyAI: Universal Streaming (v3) temporary tokens and pre-recorded transcripts.

The permanent key stays on the server. For live captions we mint a one-session temporary
token whose maximum session duration is what the user's credits pay for; the browser
opens the socket with that token. Auth is the raw key in `Authorization` (no "Bearer").
"""
from __future__ import annotations

from typing import Any, Sequence
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from chalicelib.providers.http import ProviderClient, require
from chalicelib.core.logs import register_secret
from chalicelib.core.settings import get_settings

# AssemblyAI's limits for GET /v3/token.
TOKEN_EXPIRES_RANGE = (1, 600)
SESSION_DURATION_RANGE = (60, 10800)
DEFAULT_SAMPLE_RATE = 16000

client = ProviderClient("assemblyai", "AssemblyAI", "ASSEMBLYAI_API_KEY")


def _auth() -> dict[str, str]:
    return {"Authorization": require(get_settings().assemblyai_api_key, "ASSEMBLYAI_API_KEY")}


def _clamp(value: int, bounds: tuple[int, int]) -> int:
    return min(max(int(value), bounds[0]), bounds[1])


def mint_streaming_token(expires_in_seconds: int, max_session_duration_seconds: int) -> dict[str, Any]:
    """A one-session v3 token: `{"token", "expires_in_seconds"}`.

    `expires_in_seconds` is how long the browser has to open the socket;
    `max_session_duration_seconds` is how long the socket may then stay open (AssemblyAI
    closes it with code 3008 at that point), which is what caps the spend.
    """
    settings = get_settings()
    body = client.request(
        "GET",
        settings.assemblyai_streaming_api_base.rstrip("/") + "/v3/token",
        headers=_auth(),
        params={
            "expires_in_seconds": _clamp(expires_in_seconds, TOKEN_EXPIRES_RANGE),
            "max_session_duration_seconds": _clamp(max_session_duration_seconds, SESSION_DURATION_RANGE),
        },
    )
    token = body.get("token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token:
        raise client.bad_response("token")
    register_secret(token)
    expires = body.get("expires_in_seconds")
    return {
        "token": token,
        "expires_in_seconds": expires if isinstance(expires, int) else int(expires_in_seconds),
    }


def websocket_url(token: str, sample_rate: int | None = None) -> str:
    """The ready-to-open streaming URL for a temporary token.

    The host follows ASSEMBLYAI_STREAMING_API_BASE (https -> wss, http -> ws), so a
    sandbox or a regional endpoint works without another setting.
    """
    settings = get_settings()
    parts = urlsplit(settings.assemblyai_streaming_api_base)
    scheme = "ws" if parts.scheme == "http" else "wss"
    params: dict[str, Any] = {"sample_rate": sample_rate or DEFAULT_SAMPLE_RATE, "format_turns": "true"}
    if settings.assemblyai_streaming_speech_model:
        params["speech_model"] = settings.assemblyai_streaming_speech_model
    params["token"] = token
    path = parts.path.rstrip("/") + "/v3/ws"
    return urlunsplit((scheme, parts.netloc, path, urlencode(params, quote_via=quote), ""))


def submit_transcript(
    audio_url: str,
    *,
    speech_models: Sequence[str] | None = None,
    language_code: str | None = None,
    language_detection: bool | None = None,
    speaker_labels: bool | None = None,
    audio_start_from: int | None = None,
    audio_end_at: int | None = None,
) -> dict[str, Any]:
    """Queue a pre-recorded transcription; returns the transcript object (status "queued").

    Only the options given are sent: AssemblyAI rejects unknown fields, and its defaults
    apply to the rest. `audio_start_from`/`audio_end_at` are milliseconds.
    """
    options = {
        "speech_models": list(speech_models) if speech_models else None,
        "language_code": language_code,
        "language_detection": language_detection,
        "speaker_labels": speaker_labels,
        "audio_start_from": audio_start_from,
        "audio_end_at": audio_end_at,
    }
    payload = {"audio_url": audio_url, **{k: v for k, v in options.items() if v is not None}}
    body = client.request(
        "POST",
        get_settings().assemblyai_api_base.rstrip("/") + "/v2/transcript",
        headers=_auth(),
        json=payload,
    )
    if not isinstance(body, dict) or not isinstance(body.get("id"), str):
        raise client.bad_response("id")
    return body


def get_transcript(transcript_id: str) -> dict[str, Any]:
    """The transcript object: `status` queued|processing|completed|error, `text`, `words`, ...

    An id AssemblyAI does not know raises `ProviderRejected` with `provider_status` 404.
    """
    body = client.request(
        "GET",
        get_settings().assemblyai_api_base.rstrip("/") + "/v2/transcript/" + quote(transcript_id, safe=""),
        headers=_auth(),
    )
    if not isinstance(body, dict) or not isinstance(body.get("status"), str):
        raise client.bad_response("status")
    return body
