"""Twitch Helix, server-side, with an app access token (client credentials).

The client secret never leaves the server (the earlier version served it to browsers).
The app token is cached in-process until shortly before it expires, or until Helix
answers 401; then a new one is fetched once and the call retried once.
"""
from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chalicelib.core.errors import NotFound
from chalicelib.core.logs import register_secret
from chalicelib.providers.http import ProviderClient, ProviderRejected, StaleCredentials, require
from chalicelib.core.settings import get_settings

if TYPE_CHECKING:
    import requests

# Renew this long before Twitch says the token expires (capped at a tenth of its life).
TOKEN_MARGIN_SECONDS = 300
_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def _ratelimit_reset(response: "requests.Response") -> float | None:
    """Helix says when its window resets (`Ratelimit-Reset`, epoch seconds), not Retry-After."""
    raw = response.headers.get("Retry-After") or response.headers.get("Ratelimit-Reset")
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return max(value - time.time(), 0.0) if value > 1e9 else max(value, 0.0)


client = ProviderClient(
    "twitch", "Twitch", "TWITCH_CLIENT_ID/TWITCH_CLIENT_SECRET", retry_after=_ratelimit_reset
)


@dataclass(frozen=True)
class _AppToken:
    value: str
    renew_at: float
    owner: tuple[str, str]  # (auth base, client id) it was issued for


_token: _AppToken | None = None
_token_lock = threading.Lock()


def _credentials() -> tuple[str, str]:
    settings = get_settings()
    return (
        require(settings.twitch_client_id, "TWITCH_CLIENT_ID"),
        require(settings.twitch_client_secret, "TWITCH_CLIENT_SECRET"),
    )


def _fetch_token(client_id: str, client_secret: str) -> _AppToken:
    settings = get_settings()
    try:
        body = client.request(
            "POST",
            settings.twitch_auth_base.rstrip("/") + "/token",
            data={"client_id": client_id, "client_secret": client_secret, "grant_type": "client_credentials"},
        )
    except ProviderRejected as rejected:
        # Twitch answers 400 "invalid client" for an unknown client id: our configuration.
        raise client.credentials_rejected(rejected.provider_status) from None
    body = body if isinstance(body, dict) else {}
    token, expires_in = body.get("access_token"), body.get("expires_in")
    if not isinstance(token, str) or not token or not isinstance(expires_in, (int, float)):
        raise client.bad_response("access_token")
    register_secret(token)
    margin = min(TOKEN_MARGIN_SECONDS, expires_in / 10)
    return _AppToken(token, time.monotonic() + expires_in - margin, (settings.twitch_auth_base, client_id))


def app_token(*, stale: str | None = None) -> str:
    """The cached app token, fetched when missing, near expiry or equal to `stale`."""
    global _token
    client_id, client_secret = _credentials()
    owner = (get_settings().twitch_auth_base, client_id)
    with _token_lock:
        current = _token
        if (
            current is None
            or current.owner != owner
            or current.renew_at <= time.monotonic()
            or current.value == stale
        ):
            current = _token = _fetch_token(client_id, client_secret)
        return current.value


def forget_token() -> None:
    """Drop the cached app token (tests and credential rotation)."""
    global _token
    with _token_lock:
        _token = None


def _helix(path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """GET a Helix list endpoint; on a 401 renew the app token once and retry once."""
    settings = get_settings()
    url = settings.twitch_api_base.rstrip("/") + path
    token = app_token()
    try:
        body = client.request("GET", url, headers=_headers(token), params=params, renewable_auth=True)
    except StaleCredentials:
        token = app_token(stale=token)
        body = client.request("GET", url, headers=_headers(token), params=params)
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        raise client.bad_response("data")
    return [item for item in data if isinstance(item, dict)]


def _headers(token: str) -> dict[str, str]:
    return {"Client-Id": get_settings().twitch_client_id, "Authorization": f"Bearer {token}"}


def duration_seconds(value: Any) -> int | None:
    """Helix video durations look like "1h2m3s"."""
    match = _DURATION.fullmatch(value) if isinstance(value, str) and value else None
    if match is None:
        return None
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def _vod(video: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": video.get("id"),
        "stream_id": video.get("stream_id"),
        "title": video.get("title"),
        "created_at": video.get("created_at"),
        "url": video.get("url"),
        "duration": video.get("duration"),
        "duration_seconds": duration_seconds(video.get("duration")),
    }


def channel_info(login: str) -> dict[str, Any]:
    """Whether `login` is live, what it streams, and its latest archive VODs.

    Raises NotFound (`channel_not_found`) for a login Twitch does not know.
    """
    users = _helix("/users", {"login": login})
    if not users:
        raise NotFound("Twitch channel not found", code="channel_not_found", channel=login)
    user = users[0]
    streams = _helix("/streams", {"user_id": user.get("id")})
    stream = streams[0] if streams else None
    videos = _helix(
        "/videos", {"user_id": user.get("id"), "type": "archive", "first": get_settings().twitch_vods_limit}
    )
    return {
        "channel": user.get("login") or login,
        "display_name": user.get("display_name") or user.get("login") or login,
        "profile_image_url": user.get("profile_image_url"),
        "live": stream is not None,
        "title": stream.get("title") if stream else None,
        "game": stream.get("game_name") if stream else None,
        "started_at": stream.get("started_at") if stream else None,
        "viewer_count": int(stream.get("viewer_count") or 0) if stream else 0,
        "vods": [_vod(video) for video in videos],
    }
