"""GET /twitch/stream: server-side Helix lookup; no Twitch secret ever reaches the client."""
from __future__ import annotations

import json
import uuid

from tests.conftest import TWITCH_CLIENT_SECRET, json_headers


def _login() -> str:
    return "route_" + uuid.uuid4().hex[:10]


def test_live_channel(caller, fake_twitch):
    name = _login()
    fake_twitch.add_channel(name, live=True, title="Marathon", game_name="Chess", viewer_count=77,
                            vods=[{"duration": 600}])
    r = caller().get(f"/twitch/stream?channel={name.upper()}")
    assert r.status == 200, r.body
    body = r.body
    assert (body["channel"], body["live"], body["title"], body["game"], body["viewer_count"]) == (
        name, True, "Marathon", "Chess", 77)
    assert body["started_at"] and len(body["vods"]) == 1 and body["vods"][0]["duration_seconds"] == 600
    assert TWITCH_CLIENT_SECRET not in json.dumps(body)
    app_tokens = {req.headers["Authorization"].split()[-1] for req in fake_twitch.requests_to("/helix")}
    assert app_tokens and not any(token in json.dumps(body) for token in app_tokens)


def test_offline_channel(caller, fake_twitch):
    name = _login()
    fake_twitch.add_channel(name, live=False)
    r = caller().get(f"/twitch/stream?channel={name}")
    assert r.status == 200 and r.body["live"] is False and r.body["title"] is None


def test_unknown_channel_is_404(caller):
    r = caller().get(f"/twitch/stream?channel={_login()}")
    assert r.status == 404 and r.body["code"] == "channel_not_found"


def test_invalid_or_missing_channel_is_422(caller):
    user = caller()
    assert user.get("/twitch/stream").status == 422
    assert user.get("/twitch/stream?channel=bad%20name!").status == 422
    assert user.get("/twitch/stream?channel=" + "a" * 26).status == 422


def test_twitch_outage_is_502(caller, fake_twitch):
    name = _login()
    fake_twitch.add_channel(name)
    fake_twitch.fail_next(3, 500, path_prefix="/helix/users")
    r = caller().get(f"/twitch/stream?channel={name}")
    assert r.status == 502 and r.body["code"] == "upstream_error"


def test_requires_authentication(client, live):
    assert client.http.get("/twitch/stream?channel=x", headers=json_headers()).status_code == 401


def test_the_credentials_route_is_gone_and_serves_no_secret(caller):
    answer = caller().get("/twitch/credentials")
    assert answer.status == 410 and answer.body["code"] == "twitch_credentials_removed"
    assert "client_secret" not in answer.body and "client_id" not in answer.body
