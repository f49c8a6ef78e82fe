"""Twitch client: app-token reuse, expiry and 401 renewal; live, offline and unknown channels."""
from __future__ import annotations

import time
import uuid

import pytest

from chalicelib.core.errors import NotFound, ServiceUnavailable
from chalicelib.providers import twitch


def login() -> str:
    return "ch_" + uuid.uuid4().hex[:12]


def test_live_channel_with_vods(providers, fake_twitch):
    name = login()
    fake_twitch.add_channel(
        name, live=True, title="Speedrun", game_name="Celeste", viewer_count=1234,
        started_at="2026-01-02T03:04:05Z", vods=[{"duration": 3723}, {"duration": "45m"}],
    )
    info = twitch.channel_info(name)
    assert info["channel"] == name and info["live"] is True
    assert (info["title"], info["game"], info["viewer_count"]) == ("Speedrun", "Celeste", 1234)
    assert info["started_at"] == "2026-01-02T03:04:05Z"
    assert [v["duration_seconds"] for v in info["vods"]] == [3723, 2700]
    assert all(v["url"].startswith("https://www.twitch.tv/videos/") for v in info["vods"])
    videos = fake_twitch.requests_to("/helix/videos")[-1]
    assert videos.query["type"] == "archive" and videos.query["first"] == "5"


def test_offline_channel(providers, fake_twitch):
    name = login()
    fake_twitch.add_channel(name, live=False, vods=[{}])
    info = twitch.channel_info(name)
    assert info["live"] is False
    assert (info["title"], info["game"], info["started_at"], info["viewer_count"]) == (None, None, None, 0)
    assert len(info["vods"]) == 1


def test_unknown_channel(providers):
    with pytest.raises(NotFound) as caught:
        twitch.channel_info(login())
    assert caught.value.code == "channel_not_found"


def test_app_token_is_reused(providers, fake_twitch):
    name = login()
    fake_twitch.add_channel(name)
    issued = fake_twitch.tokens_issued
    twitch.channel_info(name)
    twitch.channel_info(name)
    assert fake_twitch.tokens_issued == issued + 1
    token_requests = fake_twitch.requests_to("/oauth2/token")
    form = token_requests[-1].form()
    assert form["grant_type"] == "client_credentials" and form["client_id"]


def test_401_renews_the_token_once_and_retries(providers, fake_twitch, captured_logs):
    name = login()
    fake_twitch.add_channel(name)
    twitch.channel_info(name)
    issued = fake_twitch.tokens_issued
    fake_twitch.revoke_tokens()
    assert twitch.channel_info(name)["channel"] == name
    assert fake_twitch.tokens_issued == issued + 1
    assert captured_logs("provider.credentials_rejected") == []


def test_persistent_401_is_503_after_one_renewal(providers, fake_twitch, captured_logs):
    name = login()
    fake_twitch.add_channel(name)
    twitch.channel_info(name)
    issued = fake_twitch.tokens_issued
    fake_twitch.fail_next(2, 401, path_prefix="/helix/users")
    with pytest.raises(ServiceUnavailable):
        twitch.channel_info(name)
    assert fake_twitch.tokens_issued == issued + 1
    assert [e["provider"] for e in captured_logs("provider.credentials_rejected")] == ["twitch"]


def test_expired_token_is_renewed_before_use(providers, monkeypatch):
    from chalicelib.core.settings import reset_settings
    from devstack.fakes.twitch import TwitchFake

    with TwitchFake(client_id="short-id", client_secret="short-secret-123456", token_expires_in=1) as fake:
        monkeypatch.setenv("TWITCH_CLIENT_ID", "short-id")
        monkeypatch.setenv("TWITCH_CLIENT_SECRET", "short-secret-123456")
        monkeypatch.setenv("TWITCH_API_BASE", fake.url + "/helix")
        monkeypatch.setenv("TWITCH_AUTH_BASE", fake.url + "/oauth2")
        reset_settings()
        name = login()
        fake.add_channel(name)
        twitch.channel_info(name)
        assert fake.tokens_issued == 1
        time.sleep(1.0)
        twitch.channel_info(name)
        assert fake.tokens_issued == 2
        # Renewed before use: exactly three Helix calls per lookup, none answered 401 and retried.
        helix_tokens = [r.headers["Authorization"] for r in fake.requests if r.path.startswith("/helix")]
        assert len(helix_tokens) == 6 and len(set(helix_tokens)) == 2


def test_bad_client_secret_is_503_naming_the_settings(providers, monkeypatch, captured_logs):
    from chalicelib.core.settings import reset_settings

    monkeypatch.setenv("TWITCH_CLIENT_SECRET", "not-the-secret-000000")
    reset_settings()
    with pytest.raises(ServiceUnavailable) as caught:
        twitch.channel_info(login())
    assert caught.value.code == "provider_unavailable"
    [event] = captured_logs("provider.credentials_rejected")
    assert "TWITCH_CLIENT_SECRET" in event["operator_action"]


def test_duration_parsing():
    assert twitch.duration_seconds("1h2m3s") == 3723
    assert twitch.duration_seconds("59s") == 59
    assert twitch.duration_seconds("") is None
    assert twitch.duration_seconds("abc") is None
