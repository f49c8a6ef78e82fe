"""Fake Twitch: app access tokens (`/oauth2`) and a slice of Helix (`/helix`).

One server serves both real bases (`https://id.twitch.tv/oauth2` and
`https://api.twitch.tv/helix`): set `TWITCH_AUTH_BASE=<fake.url>/oauth2` and
`TWITCH_API_BASE=<fake.url>/helix`. Helix wants `Client-Id` plus
`Authorization: Bearer <app token>`; tokens can be revoked or expire, so the
client's "get a new token on 401" path can be tested. Channels are whatever
the test adds with `add_channel`; with `invent_channels=True` (what `make run`'s
sandbox uses) every other login answers too, with made-up data derived from the
name (see `invented_channel`): `offline_...` logins are offline, `unknown_...`
logins do not exist, any other login is live.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Mapping

from werkzeug.wrappers import Request, Response

from .base import FakeError, FakeServer, Rule, bearer_token, json_response, keys_match, random_id, status_phrase

VIDEO_TYPES = ("all", "archive", "highlight", "upload")
OFFLINE_PREFIX, UNKNOWN_PREFIX = "offline_", "unknown_"  # the invented channels' name pattern
# Made-up streams: (game id, game name, title); real Twitch game ids.
INVENTED_STREAMS = (
    ("509658", "Just Chatting", "Morning coffee and chat"),
    ("21779", "League of Legends", "Climbing ranked, come hang out"),
    ("516575", "VALORANT", "Aim training then ranked"),
    ("27471", "Minecraft", "Building the mega base, day 12"),
    ("509660", "Art", "Drawing your suggestions"),
    ("26936", "Music", "Lo-fi piano session"),
    ("509670", "Science & Technology", "Writing a compiler live"),
    ("743", "Chess", "Speedruns and viewer games"),
)


def rfc3339(moment: datetime) -> str:
    """Twitch's timestamp format, e.g. 2024-05-01T12:00:00Z."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def twitch_duration(seconds: int) -> str:
    """Twitch's video duration format, e.g. 3723 -> "1h2m3s"."""
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{hours}h" if hours else "") + (f"{minutes}m" if hours or minutes else "") + f"{secs}s"


@dataclass
class _Channel:
    user: dict[str, Any]
    stream: dict[str, Any] | None
    vods: list[dict[str, Any]] = field(default_factory=list)


class TwitchFake(FakeServer):
    """Fake Twitch OAuth (client credentials) and Helix users/streams/videos.

    `token_expires_in` is what new tokens report (and when they stop working);
    `rate_limit` is the Helix points per minute (each call costs 1).
    """

    provider = "twitch"
    public_endpoints = frozenset({"token"})

    def __init__(
        self,
        client_id: str = "test-twitch-client-id",
        client_secret: str = "test-twitch-client-secret",
        *,
        port: int = 0,
        token_expires_in: int = 5_011_271,
        rate_limit: int = 800,
        invent_channels: bool = False,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_expires_in = token_expires_in
        self.rate_limit = rate_limit
        self.invent_channels = invent_channels
        self._tokens: dict[str, float] = {}
        self._tokens_issued = 0
        self._channels: dict[str, _Channel] = {}
        self._ids = itertools.count(100_000_001)
        self._rate_window = (0.0, 0)  # (window start, points used)
        super().__init__(port=port)

    def routes(self) -> list[Rule]:
        return [
            Rule("/oauth2/token", methods=["POST"], endpoint="token"),
            Rule("/helix/users", methods=["GET"], endpoint="users"),
            Rule("/helix/streams", methods=["GET"], endpoint="streams"),
            Rule("/helix/videos", methods=["GET"], endpoint="videos"),
        ]

    def error_response(self, status: int, message: str, **extra: Any) -> Response:
        return json_response({"error": status_phrase(status), "status": status, "message": message}, status)

    def authenticate(self, request: Request) -> None:
        token = bearer_token(request)
        if token is None:
            raise FakeError(401, "OAuth token is missing")
        with self._lock:
            expires_at = self._tokens.get(token)
        if expires_at is None or expires_at <= time.time():
            raise FakeError(401, "Invalid OAuth token")
        client_id = request.headers.get("Client-Id")
        if client_id is None:
            raise FakeError(401, "Client-Id header required")
        if not keys_match(client_id, self.client_id):
            raise FakeError(401, "Client ID and OAuth token do not match")
        self._spend_rate_point()

    def decorate(self, request: Request, response: Response) -> None:
        if request.path.startswith("/helix"):
            start, used = self._current_window()
            response.headers["Ratelimit-Limit"] = str(self.rate_limit)
            response.headers["Ratelimit-Remaining"] = str(max(self.rate_limit - used, 0))
            response.headers["Ratelimit-Reset"] = str(int(start + 60))

    # ----- test helpers ---------------------------------------------------------------

    @property
    def tokens_issued(self) -> int:
        with self._lock:
            return self._tokens_issued

    def revoke_tokens(self) -> None:
        """Make every token issued so far answer 401, like a revoked/expired app token."""
        with self._lock:
            self._tokens.clear()

    def add_channel(
        self,
        login: str,
        live: bool = True,
        *,
        title: str = "Fake stream",
        game_name: str = "Just Chatting",
        started_at: str | datetime | None = None,
        viewer_count: int = 42,
        language: str = "en",
        display_name: str | None = None,
        vods: Iterable[Mapping[str, Any]] = (),
        user_id: str | None = None,
        **stream: Any,
    ) -> dict[str, Any]:
        """Create (or replace) a channel; returns its Helix user object.

        `vods` entries may give any Helix video field; `duration` may be an int
        of seconds. Missing fields get plausible values, newest first. `stream`
        gives more Helix stream fields (e.g. `id`, `game_id`) for a live channel.
        """
        login = login.lower()
        user_id = user_id or str(next(self._ids))
        user = {
            "id": user_id,
            "login": login,
            "display_name": display_name or login,
            "type": "",
            "broadcaster_type": "partner",
            "description": f"{login} streams here.",
            "profile_image_url": f"https://static-cdn.jtvnw.net/jtv_user_pictures/{login}-profile_image-300x300.png",
            "offline_image_url": "",
            "view_count": 0,
            "created_at": "2016-01-01T00:00:00Z",
        }
        channel = _Channel(user, None, [self._video(user, dict(v), i) for i, v in enumerate(vods)])
        with self._lock:
            self._channels[login] = channel
        if live:
            self.set_live(login, True, title=title, game_name=game_name, started_at=started_at,
                          viewer_count=viewer_count, language=language, **stream)
        return dict(user)

    def invented_channel(self, login: str) -> dict[str, Any] | None:
        """The made-up channel of `invent_channels` mode, as `add_channel` arguments.

        Everything is derived from the login's SHA-256, so a name always gets the same
        user id, title, game, viewer count and VODs: `unknown_...` names have no channel
        (None), `offline_...` names are offline, every other name is live.
        """
        login = login.lower()
        if login.startswith(UNKNOWN_PREFIX):
            return None
        digest = hashlib.sha256(login.encode()).digest()
        number = int.from_bytes(digest[:8], "big")
        game_id, game_name, title = INVENTED_STREAMS[number % len(INVENTED_STREAMS)]
        user_id = str(500_000_000 + number % 400_000_000)  # above the ids add_channel counts from
        vods = [
            {"id": str(2_000_000_000 + (number >> 8) % 100_000_000 + i), "stream_id": f"{user_id}{i}",
             "title": f"{title} (past broadcast {i + 1})", "duration": 1800 + (number >> (12 + i)) % 10_800}
            for i in range(1 + number % 3)
        ]
        return {
            "login": login, "live": not login.startswith(OFFLINE_PREFIX), "title": f"[sandbox] {title}",
            "game_name": game_name, "viewer_count": 10 + number % 5000, "user_id": user_id,
            "started_at": datetime.now(timezone.utc) - timedelta(minutes=5 + number % 300),
            "display_name": login.replace("_", " ").title().replace(" ", "_"), "vods": vods,
            "id": str(40_000_000_000 + number % 1_000_000_000), "game_id": game_id,
        }

    def _invent(self, logins: Iterable[str]) -> None:
        """In `invent_channels` mode, create the made-up channel of each login not known yet."""
        if not self.invent_channels:
            return
        for login in logins:
            with self._lock:
                known = login.lower() in self._channels
            spec = None if known else self.invented_channel(login)
            if spec is not None:
                self.add_channel(**spec)

    def set_live(self, login: str, live: bool, **stream: Any) -> None:
        """Start or end a channel's stream; `stream` overrides Helix stream fields."""
        with self._lock:
            channel = self._channels[login.lower()]
            if not live:
                channel.stream = None
                return
            started = stream.pop("started_at", None) or datetime.now(timezone.utc) - timedelta(hours=1)
            user = channel.user
            channel.stream = {
                "id": str(next(self._ids)),
                "user_id": user["id"],
                "user_login": user["login"],
                "user_name": user["display_name"],
                "game_id": "509658",
                "game_name": "Just Chatting",
                "type": "live",
                "title": "Fake stream",
                "tags": ["English"],
                "viewer_count": 42,
                "started_at": rfc3339(started) if isinstance(started, datetime) else started,
                "language": "en",
                "thumbnail_url": f"https://static-cdn.jtvnw.net/previews-ttv/live_user_{user['login']}-{{width}}x{{height}}.jpg",
                "tag_ids": [],
                "is_mature": False,
                **{k: v for k, v in stream.items() if v is not None},
            }

    def _video(self, user: dict[str, Any], video: dict[str, Any], index: int) -> dict[str, Any]:
        created = video.pop("created_at", None) or rfc3339(datetime.now(timezone.utc) - timedelta(days=index + 1))
        duration = video.pop("duration", 3723)
        video_id = str(video.pop("id", next(self._ids)))
        return {
            "id": video_id,
            "stream_id": str(next(self._ids)),
            "user_id": user["id"],
            "user_login": user["login"],
            "user_name": user["display_name"],
            "title": f"Past broadcast {index + 1}",
            "description": "",
            "created_at": created,
            "published_at": created,
            "url": f"https://www.twitch.tv/videos/{video_id}",
            "thumbnail_url": "https://static-cdn.jtvnw.net/cf_vods/fake/thumb/thumb0-%{width}x%{height}.jpg",
            "viewable": "public",
            "view_count": 10,
            "language": "en",
            "type": "archive",
            "duration": twitch_duration(duration) if isinstance(duration, int) else duration,
            "muted_segments": None,
            **video,
        }

    # ----- endpoints --------------------------------------------------------------------

    def token(self, request: Request) -> dict[str, Any]:
        params = {**request.args.to_dict(), **request.form.to_dict()}
        if not keys_match(params.get("client_id"), self.client_id):
            raise FakeError(400, "invalid client")
        if not keys_match(params.get("client_secret"), self.client_secret):
            raise FakeError(403, "invalid client secret")
        if params.get("grant_type") != "client_credentials":
            raise FakeError(400, "unsupported grant type")
        token = random_id("", 30).lower()
        with self._lock:
            self._tokens[token] = time.time() + self.token_expires_in
            self._tokens_issued += 1
        return {"access_token": token, "expires_in": self.token_expires_in, "token_type": "bearer"}

    def users(self, request: Request) -> dict[str, Any]:
        logins = [v.lower() for v in request.args.getlist("login")]
        ids = request.args.getlist("id")
        if not logins and not ids:
            raise FakeError(400, "Must provide either login or id query parameter when using an app access token")
        if len(logins) + len(ids) > 100:
            raise FakeError(400, "The sum of the number of login and id parameters must not exceed 100")
        self._invent(logins)
        with self._lock:
            found = [dict(c.user) for c in self._channels.values() if c.user["login"] in logins or c.user["id"] in ids]
        return {"data": found}

    def streams(self, request: Request) -> dict[str, Any]:
        logins = [v.lower() for v in request.args.getlist("user_login")]
        ids = request.args.getlist("user_id")
        self._invent(logins)
        with self._lock:
            live = [dict(c.stream) for c in self._channels.values() if c.stream is not None]
        if logins or ids:
            live = [s for s in live if s["user_login"] in logins or s["user_id"] in ids]
        live.sort(key=lambda s: -s["viewer_count"])
        return _page(live, request)

    def videos(self, request: Request) -> dict[str, Any]:
        user_id, video_ids = request.args.get("user_id"), request.args.getlist("id")
        if (user_id is None) == (not video_ids):
            raise FakeError(400, "Must provide exactly one of id, user_id or game_id")
        kind = request.args.get("type", "all")
        if kind not in VIDEO_TYPES:
            raise FakeError(400, "Invalid type parameter")
        with self._lock:
            everything = [dict(v) for c in self._channels.values() for v in c.vods]
        if video_ids:
            found = [v for v in everything if v["id"] in video_ids]
            if not found:
                raise FakeError(404, "vod not found")
            return {"data": found, "pagination": {}}
        found = [v for v in everything if v["user_id"] == user_id and kind in ("all", v["type"])]
        found.sort(key=lambda v: v["created_at"], reverse=True)
        return _page(found, request)

    # ----- rate limit -------------------------------------------------------------------

    def _current_window(self) -> tuple[float, int]:
        with self._lock:
            start, _ = self._rate_window
            if time.time() - start >= 60:
                self._rate_window = (time.time(), 0)
            return self._rate_window

    def _spend_rate_point(self) -> None:
        with self._lock:
            start, used = self._current_window()
            if used >= self.rate_limit:
                raise FakeError(429, "Too Many Requests")
            self._rate_window = (start, used + 1)


def _page(items: list[dict[str, Any]], request: Request) -> dict[str, Any]:
    """Helix cursor pagination over an in-memory list (`first`, `after`)."""
    try:
        first = int(request.args.get("first", 20))
    except ValueError:
        raise FakeError(400, "Invalid first parameter") from None
    if not 1 <= first <= 100:
        raise FakeError(400, "The parameter \"first\" was malformed: the value must be between 1 and 100")
    after = request.args.get("after")
    try:
        offset = int(base64.urlsafe_b64decode(after.encode()).decode()) if after else 0
    except ValueError:
        raise FakeError(400, "Invalid after parameter") from None
    page = items[offset:offset + first]
    more = offset + first < len(items)
    cursor = base64.urlsafe_b64encode(str(offset + first).encode()).decode()
    return {"data": page, "pagination": {"cursor": cursor} if more else {}}
