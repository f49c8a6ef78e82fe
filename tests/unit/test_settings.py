"""Settings: names operators set, defaults, parsing, and the JWT_SECRET rule per stage."""
from __future__ import annotations

import logging

import pytest

from chalicelib.core.errors import ConfigurationError
from chalicelib.aws.resources import BUCKETS, QUEUES, TABLES
from chalicelib.core.settings import APP_NAME, load_settings, resource_name

SECRET = "x" * 40


def load(**env: str):
    return load_settings({"JWT_SECRET": SECRET, **env})


def test_defaults():
    s = load()
    assert s.stage == "local"
    assert s.access_token_ttl_seconds == 900
    assert s.session_token_ttl_seconds == 7 * 24 * 3600
    assert s.refresh_token_ttl_seconds == 30 * 24 * 3600
    assert s.bcrypt_rounds == 12
    assert s.signup_credits == 200
    assert s.allowed_origins == ()
    assert s.stripe_webhook_secrets == ()
    assert s.assemblyai_api_base == "https://api.assemblyai.com"
    assert s.assemblyai_streaming_api_base == "https://streaming.assemblyai.com"
    assert s.openai_api_base == "https://api.openai.com/v1"
    assert s.stripe_api_base == "https://api.stripe.com"
    assert s.twitch_api_base == "https://api.twitch.tv/helix"
    assert s.twitch_auth_base == "https://id.twitch.tv/oauth2"
    assert s.assemblyai_api_key == s.openai_api_key == s.stripe_secret_key == ""
    assert s.jwt_issuer and s.jwt_audience and s.jwt_issuer != s.jwt_audience


# Every variable the issue names, with a value that differs from its default.
ISSUE_VARIABLES = {
    "STAGE": ("stage", "prod", "prod"),
    "JWT_SECRET": ("jwt_secret", "j" * 48, "j" * 48),
    "JWT_ISSUER": ("jwt_issuer", "issuer-x", "issuer-x"),
    "JWT_AUDIENCE": ("jwt_audience", "audience-x", "audience-x"),
    "ACCESS_TOKEN_TTL_SECONDS": ("access_token_ttl_seconds", "600", 600),
    "SESSION_TOKEN_TTL_SECONDS": ("session_token_ttl_seconds", "86400", 86400),
    "REFRESH_TOKEN_TTL_SECONDS": ("refresh_token_ttl_seconds", "86400", 86400),
    "BCRYPT_ROUNDS": ("bcrypt_rounds", "10", 10),
    "ALLOWED_ORIGINS": (
        "allowed_origins",
        "chrome-extension://aaa, chrome-extension://bbb,,",
        ("chrome-extension://aaa", "chrome-extension://bbb"),
    ),
    "SIGNUP_CREDITS": ("signup_credits", "50", 50),
    "ASSEMBLYAI_API_KEY": ("assemblyai_api_key", "aai-key", "aai-key"),
    "OPENAI_API_KEY": ("openai_api_key", "sk-openai", "sk-openai"),
    "STRIPE_SECRET_KEY": ("stripe_secret_key", "sk_test_abc", "sk_test_abc"),
    "STRIPE_WEBHOOK_SECRET": (
        "stripe_webhook_secrets", "whsec_new, whsec_old", ("whsec_new", "whsec_old")
    ),
    "TWITCH_CLIENT_ID": ("twitch_client_id", "tw-id", "tw-id"),
    "TWITCH_CLIENT_SECRET": ("twitch_client_secret", "tw-secret", "tw-secret"),
    "ASSEMBLYAI_API_BASE": ("assemblyai_api_base", "http://127.0.0.1:1", "http://127.0.0.1:1"),
    "ASSEMBLYAI_STREAMING_API_BASE": (
        "assemblyai_streaming_api_base", "http://127.0.0.1:2", "http://127.0.0.1:2"
    ),
    "OPENAI_API_BASE": ("openai_api_base", "http://127.0.0.1:3/v1", "http://127.0.0.1:3/v1"),
    "STRIPE_API_BASE": ("stripe_api_base", "http://127.0.0.1:4", "http://127.0.0.1:4"),
    "TWITCH_API_BASE": ("twitch_api_base", "http://127.0.0.1:5/helix", "http://127.0.0.1:5/helix"),
    "TWITCH_AUTH_BASE": ("twitch_auth_base", "http://127.0.0.1:6/oauth2", "http://127.0.0.1:6/oauth2"),
}


@pytest.mark.parametrize("variable", sorted(ISSUE_VARIABLES))
def test_every_issue_variable_is_read(variable):
    attribute, raw, expected = ISSUE_VARIABLES[variable]
    assert getattr(load(**{variable: raw}), attribute) == expected


def test_secrets_are_not_in_repr():
    s = load(STRIPE_SECRET_KEY="sk_test_visible", OPENAI_API_KEY="sk-visible-openai")
    text = repr(s)
    assert SECRET not in text and "sk_test_visible" not in text and "sk-visible-openai" not in text


@pytest.mark.parametrize("variable", ["ACCESS_TOKEN_TTL_SECONDS", "BCRYPT_ROUNDS", "SIGNUP_CREDITS"])
def test_bad_integer_is_a_configuration_error_naming_the_variable(variable):
    with pytest.raises(ConfigurationError, match=variable):
        load(**{variable: "twelve"})


def test_integer_minimums():
    with pytest.raises(ConfigurationError, match="BCRYPT_ROUNDS"):
        load(BCRYPT_ROUNDS="3")
    with pytest.raises(ConfigurationError, match="ACCESS_TOKEN_TTL_SECONDS"):
        load(ACCESS_TOKEN_TTL_SECONDS="4")
    with pytest.raises(ConfigurationError, match="SESSION_TOKEN_TTL_SECONDS"):
        load(SESSION_TOKEN_TTL_SECONDS="4")


def test_local_stage_generates_a_jwt_secret_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="chalicelib.core.settings"):
        first = load_settings({"STAGE": "local"})
    second = load_settings({"STAGE": "local"})
    assert len(first.jwt_secret) >= 32
    assert first.jwt_secret != second.jwt_secret  # random, not a constant baked into code
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("JWT_SECRET" in r.getMessage() for r in warnings)


def test_stage_defaults_to_local_and_generates_a_secret():
    assert load_settings({}).stage == "local"
    assert len(load_settings({}).jwt_secret) >= 32


@pytest.mark.parametrize("stage", ["dev", "prod", "staging"])
def test_missing_jwt_secret_is_a_hard_error_off_local(stage):
    with pytest.raises(ConfigurationError) as raised:
        load_settings({"STAGE": stage})
    assert "JWT_SECRET" in str(raised.value)
    assert stage in str(raised.value)


def test_short_jwt_secret_is_refused_off_local():
    with pytest.raises(ConfigurationError, match="JWT_SECRET"):
        load_settings({"STAGE": "prod", "JWT_SECRET": "short"})
    assert load_settings({"STAGE": "prod", "JWT_SECRET": SECRET}).jwt_secret == SECRET


def test_resource_names_derive_from_app_and_stage():
    s = load(STAGE="dev")
    for table in TABLES:
        assert s.resource(table.suffix) == f"{APP_NAME}-dev-{table.suffix}"
    assert s.resource("users") == resource_name("dev", "users") == "transcription-backend-dev-users"
    assert load(STAGE="prod").resource("audio") == "transcription-backend-prod-audio"


def test_resource_names_can_be_overridden():
    s = load(
        STAGE="prod",
        USERS_TABLE="legacy-users",
        REFRESH_TOKENS_TABLE="legacy-refresh",
        AUDIO_BUCKET="my-audio-bucket",
        CATCHUP_QUEUE="my-queue",
    )
    assert s.resource("users") == "legacy-users"
    assert s.resource("refresh-tokens") == "legacy-refresh"
    assert s.resource("audio") == "my-audio-bucket"
    assert s.resource("catchup") == "my-queue"
    assert s.resource("transactions") == "transcription-backend-prod-transactions"


def test_every_resource_has_an_override_variable():
    from chalicelib.aws.resources import RESOURCE_ENV_VARS

    suffixes = {t.suffix for t in TABLES} | {b.suffix for b in BUCKETS} | {q.suffix for q in QUEUES}
    assert set(RESOURCE_ENV_VARS.values()) == suffixes
    assert RESOURCE_ENV_VARS["USERS_TABLE"] == "users"


def test_settings_are_cached_and_resettable(monkeypatch):
    from chalicelib.core.settings import get_settings, reset_settings

    reset_settings()
    try:
        first = get_settings()
        assert get_settings() is first
        monkeypatch.setenv("SIGNUP_CREDITS", "77")
        assert get_settings().signup_credits == first.signup_credits  # read once per process
        reset_settings()
        assert get_settings().signup_credits == 77
    finally:
        monkeypatch.undo()
        reset_settings()


def test_concurrent_first_use_builds_one_settings(monkeypatch):
    """On `local` without JWT_SECRET each build generates a secret: two builds racing on
    the first requests would sign tokens with one secret and verify with another."""
    from chalicelib.core.settings import get_settings, reset_settings
    from tests.conftest import at_once

    monkeypatch.delenv("JWT_SECRET", raising=False)
    monkeypatch.setenv("STAGE", "local")
    try:
        for _ in range(5):
            reset_settings()
            built = at_once(16, get_settings)
            assert len({s.jwt_secret for s in built}) == 1
            assert all(s is get_settings() for s in built)
    finally:
        monkeypatch.undo()
        reset_settings()
