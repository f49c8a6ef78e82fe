"""Twitch fake: client-credentials tokens, Helix users/streams/videos, auth and rate limits."""

from __future__ import annotations

from typing import Any, Iterator

import pytest
import requests

from devstack.fakes import TwitchFake

CLIENT_ID, SECRET = "test-twitch-client-id", "test-twitch-client-secret"


@pytest.fixture
def twitch() -> Iterator[TwitchFake]:
    with TwitchFake() as fake:
        fake.add_channel("Shroud", live=True, title="Ranked grind", game_name="VALORANT", viewer_count=12345,
                         started_at="2024-05-01T12:00:00Z",
                         vods=[{"title": "Yesterday", "duration": 7384}, {"title": "Clip", "type": "highlight"}])
        fake.add_channel("sleepy", live=False)
        yield fake


def _token(fake: TwitchFake, **overrides: str) -> requests.Response:
    form = {"client_id": CLIENT_ID, "client_secret": SECRET, "grant_type": "client_credentials", **overrides}
    return requests.post(f"{fake.url}/oauth2/token", data=form, timeout=5)


def _helix(fake: TwitchFake, path: str, token: str | None, **params: Any) -> requests.Response:
    headers = {"Client-Id": CLIENT_ID}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return requests.get(f"{fake.url}/helix/{path}", params=params, headers=headers, timeout=5)


def test_app_token(twitch: TwitchFake) -> None:
    body = _token(twitch).json()
    assert body["token_type"] == "bearer" and body["expires_in"] == twitch.token_expires_in and body["access_token"]
    assert twitch.tokens_issued == 1


@pytest.mark.parametrize(
    ("overrides", "status"),
    [({"client_id": "nope"}, 400), ({"client_secret": "nope"}, 403), ({"grant_type": "password"}, 400)],
)
def test_bad_token_requests(twitch: TwitchFake, overrides: dict[str, str], status: int) -> None:
    response = _token(twitch, **overrides)
    assert response.status_code == status and response.json()["status"] == status and response.json()["message"]
    assert twitch.tokens_issued == 0


def test_users_streams_videos(twitch: TwitchFake) -> None:
    token = _token(twitch).json()["access_token"]
    (user,) = _helix(twitch, "users", token, login="shroud").json()["data"]
    assert user["login"] == "shroud" and user["id"].isdigit() and user["profile_image_url"]
    streams = _helix(twitch, "streams", token, user_login="shroud").json()
    (stream,) = streams["data"]
    assert streams["pagination"] == {}
    assert (stream["type"], stream["title"], stream["game_name"], stream["viewer_count"], stream["started_at"]) == (
        "live", "Ranked grind", "VALORANT", 12345, "2024-05-01T12:00:00Z")
    assert _helix(twitch, "streams", token, user_login="sleepy").json()["data"] == []
    assert _helix(twitch, "users", token, login="nobody").json()["data"] == []
    vods = _helix(twitch, "videos", token, user_id=user["id"], type="archive", first=5).json()["data"]
    assert [(v["title"], v["duration"], v["type"]) for v in vods] == [("Yesterday", "2h3m4s", "archive")]
    assert vods[0]["url"].startswith("https://www.twitch.tv/videos/")
    twitch.set_live("shroud", False)
    assert _helix(twitch, "streams", token, user_login="shroud").json()["data"] == []


def test_video_pagination_and_validation(twitch: TwitchFake) -> None:
    twitch.add_channel("archivist", live=False, vods=[{"title": f"VOD {i}"} for i in range(3)])
    token = _token(twitch).json()["access_token"]
    user_id = _helix(twitch, "users", token, login="archivist").json()["data"][0]["id"]
    first = _helix(twitch, "videos", token, user_id=user_id, first=2).json()
    assert [v["title"] for v in first["data"]] == ["VOD 0", "VOD 1"] and first["pagination"]["cursor"]
    rest = _helix(twitch, "videos", token, user_id=user_id, first=2, after=first["pagination"]["cursor"]).json()
    assert [v["title"] for v in rest["data"]] == ["VOD 2"] and rest["pagination"] == {}
    assert _helix(twitch, "videos", token).status_code == 400
    assert _helix(twitch, "videos", token, user_id=user_id, first=101).status_code == 400


def test_helix_auth_and_reauth(twitch: TwitchFake) -> None:
    token = _token(twitch).json()["access_token"]
    assert _helix(twitch, "users", None, login="shroud").json()["message"] == "OAuth token is missing"
    no_client = requests.get(f"{twitch.url}/helix/users", params={"login": "shroud"},
                             headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert no_client.status_code == 401
    twitch.revoke_tokens()
    revoked = _helix(twitch, "users", token, login="shroud")
    assert revoked.status_code == 401 and revoked.json() == {"error": "Unauthorized", "status": 401, "message": "Invalid OAuth token"}
    fresh = _token(twitch).json()["access_token"]
    assert _helix(twitch, "users", fresh, login="shroud").status_code == 200
    assert twitch.tokens_issued == 2


def test_expired_tokens_stop_working() -> None:
    with TwitchFake(token_expires_in=0) as twitch:
        token = _token(twitch).json()["access_token"]
        assert _helix(twitch, "users", token, login="x").status_code == 401


def test_rate_limit_headers_and_429() -> None:
    with TwitchFake(rate_limit=2) as twitch:
        token = _token(twitch).json()["access_token"]
        first = _helix(twitch, "users", token, login="x")
        assert first.headers["Ratelimit-Limit"] == "2" and first.headers["Ratelimit-Remaining"] == "1"
        assert int(first.headers["Ratelimit-Reset"]) > 0
        assert _helix(twitch, "users", token, login="x").headers["Ratelimit-Remaining"] == "0"
        limited = _helix(twitch, "users", token, login="x")
        assert limited.status_code == 429 and limited.json()["status"] == 429


def test_invented_channels_answer_for_any_name_the_same_way_every_time() -> None:
    """`make run`'s mode: any login is a channel, made up from its name; `offline_...` is
    offline, `unknown_...` does not exist; added channels keep their own data."""
    answers = []
    for _ in range(2):  # two fakes (two `make run`s): the same made-up data
        with TwitchFake(invent_channels=True) as twitch:
            twitch.add_channel("sandbox", live=True, title="Sandbox stream")
            token = _token(twitch).json()["access_token"]
            (user,) = _helix(twitch, "users", token, login="Any_Streamer").json()["data"]
            (stream,) = _helix(twitch, "streams", token, user_id=user["id"]).json()["data"]
            vods = _helix(twitch, "videos", token, user_id=user["id"], type="archive").json()["data"]
            (offline,) = _helix(twitch, "users", token, login="offline_bob").json()["data"]
            offline_streams = _helix(twitch, "streams", token, user_login="offline_bob").json()["data"]
            offline_vods = _helix(twitch, "videos", token, user_id=offline["id"]).json()["data"]
            unknown = _helix(twitch, "users", token, login="unknown_nobody").json()
            (sandbox,) = _helix(twitch, "streams", token, user_login="sandbox").json()["data"]
            timeless = [{k: v for k, v in vod.items() if not k.endswith("_at")} for vod in vods]
            answers.append((user, {k: v for k, v in stream.items() if k != "started_at"}, timeless, offline))
        assert user["login"] == "any_streamer" and user["id"].isdigit()
        assert stream["type"] == "live" and stream["user_id"] == user["id"] and stream["title"].startswith("[sandbox]")
        assert stream["game_id"] and stream["game_name"] and stream["viewer_count"] >= 10
        assert stream["started_at"].endswith("Z") and stream["thumbnail_url"]
        assert vods and all(v["user_id"] == user["id"] and v["type"] == "archive" for v in vods)
        assert offline_streams == [] and offline_vods
        assert unknown == {"data": []}
        assert sandbox["title"] == "Sandbox stream"
    assert answers[0] == answers[1]
    with TwitchFake(invent_channels=True) as twitch:
        token = _token(twitch).json()["access_token"]
        one = _helix(twitch, "users", token, login="alice").json()["data"][0]
        other = _helix(twitch, "users", token, login="bobby").json()["data"][0]
        assert one["id"] != other["id"]


def test_channels_are_not_invented_by_default(twitch: TwitchFake) -> None:
    token = _token(twitch).json()["access_token"]
    assert _helix(twitch, "users", token, login="anyone").json()["data"] == []
    assert _helix(twitch, "streams", token, user_login="anyone").json()["data"] == []
