"""Sessions that last without weakening revocation: the published extension's 7-day session
token and the short access token both end at logout, password change, deletion and
suspension, answered by the app with the reason, on every allowed origin."""
from __future__ import annotations

import time

import pytest

from chalicelib.accounts import auth as accounts
from tests.conftest import ORIGIN, OTHER_ORIGIN, PASSWORD
from tests.functional.conftest import assert_envelope

NEW_PASSWORD = PASSWORD + " again"


@pytest.fixture
def two_origins(env_override):
    env_override(ALLOWED_ORIGINS=f"{ORIGIN},{OTHER_ORIGIN}")


def tokens_of(session: dict) -> tuple[str, str]:
    return session["token"], session["user"]["token"]


def test_the_session_token_outlives_the_access_token(call, new_user, env_override):
    env_override(ACCESS_TOKEN_TTL_SECONDS="5")
    session = new_user()
    time.sleep(11)  # past the lifetime and the 5 s leeway
    assert_envelope(call("GET", "/auth/user", token=session["token"]), 401, "token_expired")
    assert call("GET", "/auth/user", token=session["user"]["token"]).status == 200


def test_logout_ends_both_tokens(call, new_user):
    session = new_user()
    assert call("POST", "/auth/logout", {"refresh_token": session["refresh_token"]}).status == 204
    for token in tokens_of(session):
        assert_envelope(call("GET", "/credits/balance", token=token), 401, "token_revoked")
    assert_envelope(call("POST", "/auth/refresh", {"refresh_token": session["refresh_token"]}), 401)


def test_logout_on_one_device_keeps_the_others_refresh_token(call, new_user):
    """The generation is per user: another device's access token ends too, but its refresh
    token still works and gets a fresh one (a client that refreshes never notices)."""
    first = new_user()
    other = call("POST", "/auth/login", {"email": first["user"]["email"], "password": PASSWORD}).json
    assert call("POST", "/auth/logout", {"refresh_token": first["refresh_token"]}).status == 204
    assert_envelope(call("GET", "/auth/user", token=other["token"]), 401, "token_revoked")
    renewed = call("POST", "/auth/refresh", {"refresh_token": other["refresh_token"]})
    assert renewed.status == 200
    assert call("GET", "/auth/user", token=renewed.json["token"]).status == 200


def test_password_change_ends_every_earlier_token_and_refresh_token(call, new_user):
    session = new_user()
    other = call("POST", "/auth/login", {"email": session["user"]["email"], "password": PASSWORD}).json
    wrong = call("POST", "/auth/password", {"current_password": "not it at all", "new_password": NEW_PASSWORD},
                 token=session["token"])
    assert_envelope(wrong, 403, "invalid_password")
    weak = call("POST", "/auth/password", {"current_password": PASSWORD, "new_password": "short"},
                token=session["token"])
    assert_envelope(weak, 422)
    changed = call("POST", "/auth/password", {"current_password": PASSWORD, "new_password": NEW_PASSWORD},
                   token=session["user"]["token"])
    assert changed.status == 200, changed.raw
    for token in (*tokens_of(session), *tokens_of(other)):
        assert_envelope(call("GET", "/auth/user", token=token), 401, "token_revoked")
    for refresh_token in (session["refresh_token"], other["refresh_token"]):
        assert_envelope(call("POST", "/auth/refresh", {"refresh_token": refresh_token}), 401)
    for token in tokens_of(changed.json):
        assert call("GET", "/auth/user", token=token).status == 200
    assert call("POST", "/auth/refresh", {"refresh_token": changed.json["refresh_token"]}).status == 200
    assert_envelope(call("POST", "/auth/login", {"email": session["user"]["email"], "password": PASSWORD}), 401)
    assert call("POST", "/auth/login", {"email": session["user"]["email"], "password": NEW_PASSWORD}).status == 200


def test_suspension_is_answered_with_its_reason(call, new_user):
    session = new_user()
    accounts.set_status(session["user"]["user_id"], accounts.SUSPENDED)
    for token in tokens_of(session):
        body = assert_envelope(call("POST", "/transcription/stream", {"action": "start"}, token=token),
                               401, "account_suspended")
        assert "suspended" in body["message"]


def test_refusals_carry_cors_for_every_allowed_origin(call, new_user, two_origins, env_override):
    """Refused in-app (not by the gateway), so the second extension id can read them too."""
    session = new_user()
    assert call("POST", "/auth/logout", {"refresh_token": session["refresh_token"]}).status == 204
    for origin in (ORIGIN, OTHER_ORIGIN):
        result = call("GET", "/auth/user", token=session["user"]["token"], origin=origin)
        assert result.status == 401 and result.header("Access-Control-Allow-Origin") == origin
