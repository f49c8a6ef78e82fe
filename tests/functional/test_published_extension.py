"""Every request the published extension sends, exactly as it sends it (read from
shared/reference/published-extension/: popup.js, background.js, twitch-api.js,
audio-uploader.js), answered by the real app: fields it sends are accepted (identity comes
only from the token), routes it knows never answer 404, and what this backend will not do
gets a readable answer in the `error`/`message` envelope the extension displays."""
from __future__ import annotations

import pytest

from chalicelib.web import legacy
from tests.conftest import OTHER_ORIGIN, TWITCH_CLIENT_ID, TWITCH_CLIENT_SECRET, PASSWORD, unique_email
from tests.functional.conftest import assert_envelope


@pytest.fixture
def extension_user(call):
    """Signed up the way popup.js does it; the extension keeps only `user.token`."""
    result = call("POST", "/auth/register", {"name": "Ext", "email": unique_email("ext"), "password": PASSWORD})
    assert result.status == 201, result.raw
    return result.json["user"]


def test_popup_requests(call, extension_user, stripe_fake):
    token = extension_user["token"]
    login = call("POST", "/auth/login", {"email": extension_user["email"], "password": PASSWORD})
    assert login.status == 200 and login.json["user"]["token"]
    assert call("GET", "/auth/user", token=token).json["user"]["user_id"] == extension_user["user_id"]
    assert call("GET", "/credits/balance", token=token).json["balance"] == 200
    purchase = call("POST", "/credits/purchase", {"package_id": "starter"}, token=token)
    assert purchase.status == 200 and purchase.json["checkout_url"], purchase.raw


def test_background_requests(call, extension_user, provider_env):
    token = extension_user["token"]
    started = call("POST", "/transcription/stream", {"action": "start"}, token=token)
    assert started.status == 200 and started.json["success"] and started.json["assemblyai_api_key"]
    stopped = call("POST", "/transcription/stream",
                   {"action": "stop", "session_id": started.json["session_id"]}, token=token)
    assert stopped.status == 200 and stopped.json["success"], stopped.raw


def test_catchup_server_fallback_is_told_what_to_do(call, extension_user, new_user):
    """background.js requestCatchup's fallback: no audio, a `user_id` (any: 'unknown' or
    someone else's) and a `fallback_reason`. Both fields are accepted and never read; the
    answer says the supported flow, in `message` (what background.js shows)."""
    someone_else = new_user()["user"]["user_id"]
    for user_id in (extension_user["user_id"], "unknown", someone_else):
        result = call("POST", "/transcription/catchup", {
            "stream_url": "https://www.twitch.tv/somechannel", "duration_minutes": 30,
            "user_id": user_id, "fallback_reason": "Failed to get Twitch credentials: 410",
        }, token=extension_user["token"])
        body = assert_envelope(result, 422, "audio_required")
        assert "/transcription/catchup/upload" in body["message"]
    assert call("GET", "/credits/balance", token=extension_user["token"]).json["balance"] == 200


def test_other_unknown_fields_are_still_refused(call, extension_user):
    result = call("POST", "/transcription/catchup", {
        "stream_url": "https://www.twitch.tv/somechannel", "duration_minutes": 30,
        "user_id": "unknown", "processing_id": "x",
    }, token=extension_user["token"])
    assert assert_envelope(result, 422, "unknown_field")["field"] == "processing_id"
    result = call("POST", "/auth/login", {"email": extension_user["email"], "password": PASSWORD,
                                          "user_id": extension_user["user_id"]})
    assert assert_envelope(result, 422, "unknown_field")["field"] == "user_id"


def test_twitch_credentials_are_gone_and_no_secret_is_served(call, extension_user):
    result = call("GET", "/twitch/credentials", token=extension_user["token"])
    body = assert_envelope(result, 410, "twitch_credentials_removed")
    assert "/twitch/stream" in body["message"]
    assert TWITCH_CLIENT_SECRET.encode() not in result.raw and TWITCH_CLIENT_ID.encode() not in result.raw
    assert set(body) == {"error", "message", "code"}


LEGACY_UPLOAD_BODIES = {  # as audio-uploader.js sends them
    "/transcription/get-presigned-upload-url": {"file_size": 960000, "content_type": "audio/pcm",
                                                "metadata": {"stream_url": "https://www.twitch.tv/x"}},
    "/transcription/process-s3-audio": {"processing_id": "p1", "s3_key": "k", "metadata": {}},
    "/transcription/process-audio": {"audio_data": "AAAA", "format": "pcm16", "sample_rate": 16000,
                                     "is_single_chunk": True, "metadata": {}},
    "/transcription/init-chunked-upload": {"total_size": 10, "total_chunks": 1, "metadata": {}},
    "/transcription/upload-chunk": {"upload_id": "u", "chunk_index": 0, "chunk_data": "AAAA", "chunk_size": 3},
    "/transcription/finalize-chunked-upload": {"upload_id": "u", "metadata": {}},
}


@pytest.mark.parametrize("path", sorted(LEGACY_UPLOAD_BODIES))
def test_legacy_upload_routes_name_the_supported_flow(call, extension_user, path):
    assert ("POST", path) in legacy.GONE_ROUTES
    for token in (extension_user["token"], None):  # nothing is read, not even the token
        body = assert_envelope(call("POST", path, LEGACY_UPLOAD_BODIES[path], token=token),
                               410, "legacy_upload_removed")
        assert "/transcription/catchup/upload" in body["message"]
        assert "/transcription/catchup" in body["error"]  # popup/uploader show `error` first


def test_gone_answers_carry_cors_for_every_allowed_origin(call, env_override):
    from chalicelib.core.settings import get_settings

    env_override(ALLOWED_ORIGINS="chrome-extension://" + "a" * 32 + "," + OTHER_ORIGIN)
    assert OTHER_ORIGIN in get_settings().allowed_origins
    result = call("GET", "/twitch/credentials", origin=OTHER_ORIGIN)
    assert result.status == 410 and result.header("Access-Control-Allow-Origin") == OTHER_ORIGIN
