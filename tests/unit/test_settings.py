"""Settings: names operators set, defaults, parsing, bounds, the generated reference, and the JWT_SECRET rule per stage."""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
from decimal import Decimal

import pytest
from hypothesis import given, settings as hypothesis_settings, strategies as st

from chalicelib.core import settings as settings_module
from chalicelib.core.errors import ConfigurationError
from chalicelib.aws.resources import BUCKETS, QUEUES, TABLES
from chalicelib.core.settings import (
    APP_NAME, BY_ENV, SETTINGS, Settings, load_settings, read_setting, render_markdown, resource_name,
)

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


# ----- the declarations: one place for name, type, default, bounds and meaning -----------

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NUMERIC = [s for s in SETTINGS if s.kind in (int, float, Decimal)]
BOUNDED = [s for s in NUMERIC if s.minimum is not None or s.maximum is not None]


def test_every_settings_attribute_is_declared_once_with_a_meaning():
    declared = [s.attribute for s in SETTINGS]
    assert sorted(declared) == sorted(f.name for f in dataclasses.fields(Settings) if f.name != "resource_overrides")
    assert len({s.env for s in SETTINGS}) == len(SETTINGS)  # one variable, one setting
    for setting in SETTINGS:
        assert setting.meaning and setting.section and setting.kind is not None, setting.env
        assert setting.secret == (not next(f for f in dataclasses.fields(Settings) if f.name == setting.attribute).repr)


def test_the_secret_names_read_from_ssm_are_the_declared_secrets():
    from chalicelib.aws.ssm_secrets import SECRET_NAMES

    assert set(SECRET_NAMES) == {
        "JWT_SECRET", "JWT_SECRET_PREVIOUS", "ASSEMBLYAI_API_KEY", "OPENAI_API_KEY", "STRIPE_SECRET_KEY",
        "STRIPE_WEBHOOK_SECRET", "TWITCH_CLIENT_ID", "TWITCH_CLIENT_SECRET",
    }


@pytest.mark.parametrize("stage", ["local", "prod"])
def test_unset_variables_take_their_declared_default(stage):
    loaded = load_settings({"STAGE": stage, "JWT_SECRET": SECRET})
    for setting in SETTINGS:
        if setting.reader is None and setting.env != "STAGE":
            assert getattr(loaded, setting.attribute) == setting.default_for(stage), setting.env
    assert loaded.login_ip_max_failures == (100_000 if stage == "local" else 100)


def test_a_blank_variable_is_unset():
    assert load(LIVE_MAX_MINUTES="  ", ASSEMBLYAI_SPEECH_MODELS=" , ").live_max_minutes == 180
    assert load(ASSEMBLYAI_SPEECH_MODELS=" , ").catchup_speech_models == ("universal-2",)


def _documented_defaults() -> dict[str, str]:
    """{variable: the Default column} of docs/configuration.md, as committed."""
    with open(os.path.join(ROOT, "docs", "configuration.md"), encoding="utf-8") as handle:
        rows = [line.split(" | ") for line in handle if line.startswith("| `")]
    return {row[0].strip("| `"): row[1] for row in rows if len(row) == 4}


def test_the_defaults_in_the_docs_are_the_defaults_the_code_uses():
    documented = _documented_defaults()
    loaded = load()  # nothing set but the secret
    checked = 0
    for setting in SETTINGS:
        value = getattr(loaded, setting.attribute)
        if setting.default_text or setting.secret or setting.local_default is not None:
            continue
        shown = re.match(r"`([^`]*)`|unset", documented[setting.env])
        assert shown, (setting.env, documented[setting.env])
        text = shown.group(1)
        if text is None:
            assert value in ("", (), None), setting.env
        elif isinstance(value, tuple):
            assert ",".join(value) == text, setting.env
        elif isinstance(value, bool):
            assert value == (text == "true"), setting.env
        else:
            assert type(value)(text) == value, setting.env
        checked += 1
    assert checked > 70


def test_the_committed_configuration_reference_is_what_the_declarations_generate():
    with open(os.path.join(ROOT, settings_module.DOC_PATH), encoding="utf-8") as handle:
        committed = handle.read()
    assert committed == render_markdown(), (
        f"{settings_module.DOC_PATH} is out of step with chalicelib/core/settings.py; "
        f"regenerate it: {settings_module.DOC_COMMAND}"
    )


def test_the_generator_command_prints_the_reference(capsys):
    assert settings_module.main(["--markdown"]) == 0
    assert capsys.readouterr().out == render_markdown()
    assert settings_module.main([]) == 2


# ----- refusals: named, with the value and what is allowed; never clamped ---------------


def _refused(env: dict[str, str]) -> str:
    with pytest.raises(ConfigurationError) as raised:
        load_settings({"JWT_SECRET": SECRET, **env})
    return str(raised.value)


def _bound_cases(setting):
    """(value just inside, value just outside) at each declared bound."""
    step = {int: 1, float: 0.001, Decimal: Decimal("0.00001")}[setting.kind]
    cases = []
    if setting.minimum is not None:
        cases.append((setting.minimum, setting.minimum - step))
    if setting.maximum is not None:
        cases.append((setting.maximum, setting.maximum + step))
    return cases


@hypothesis_settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_values_just_inside_the_bounds_are_kept_and_just_outside_refused(data):
    setting = data.draw(st.sampled_from(BOUNDED))
    inside, outside = data.draw(st.sampled_from(_bound_cases(setting)))
    assert getattr(load(**{setting.env: str(inside)}), setting.attribute) == setting.kind(str(inside))
    message = _refused({setting.env: str(outside)})
    assert f"{setting.env}={str(outside)!r} is refused: it must be {setting.requirement()}" in message
    for bound in (setting.minimum, setting.maximum):
        if bound is not None:
            assert settings_module._human(setting, bound) in message


@hypothesis_settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_any_value_within_the_bounds_is_read_exactly(data):
    setting = data.draw(st.sampled_from([s for s in BOUNDED if s.kind is int]))
    high = setting.maximum if setting.maximum is not None else setting.minimum + 10**6
    value = data.draw(st.integers(setting.minimum if setting.minimum is not None else -10**6, high))
    assert getattr(load(**{setting.env: str(value)}), setting.attribute) == value


def test_former_silent_caps_now_refuse():
    """These were shortened to fit with min(...) before; a typo must not quietly change a bound."""
    for variable, value, allowed in [
        ("LIVE_MAX_MINUTES", "500", "an integer from 1 to 180"),
        ("LIVE_TOKEN_MINUTES", "181", "an integer from 1 to 180"),
        ("ASK_MAX_BODY_BYTES", "6000000", "an integer from 1024 (1 KiB) to 5242880 (5 MiB)"),
        ("PROVIDER_READ_TIMEOUT_SECONDS", "0.2", "a number from 0.5 to 25"),
        ("PROVIDER_BUDGET_SECONDS", "60", "a number from 1 to 25"),
        ("LOGIN_SLOWDOWN_MS", "5000", "an integer from 0 to 3000"),
        ("IDEMPOTENCY_WAIT_SECONDS", "30", "an integer from 0 to 25"),
        ("STATS_SHARDS", "65", "an integer from 1 to 64"),
        ("LEDGER_GUESS_SECONDS", "-1", "a number of at least 0 (`inf`: no limit)"),
        ("CATCHUP_TRANSCRIBE_BUDGET_SECONDS", "281", "an integer from 1 to 280"),
    ]:
        assert _refused({variable: value}) == f"{variable}={value!r} is refused: it must be {allowed}"


@pytest.mark.parametrize("variable, value", [
    ("LIVE_MAX_MINUTES", "ten"), ("LIVE_MAX_MINUTES", "1.5"), ("PROVIDER_READ_TIMEOUT_SECONDS", "nan"),
    ("PROVIDER_READ_TIMEOUT_SECONDS", "inf"), ("OPENAI_USD_PER_1K_PROMPT_TOKENS", "Infinity"),
    ("OPENAI_USD_PER_1K_PROMPT_TOKENS", "-0.001"), ("RATE_LIMITS_ENABLED", "maybe"), ("LOG_LEVEL", "LOUD"),
    ("STAGE", "Prod"), ("STAGE", "my stage"), ("AWS_REGION", "moon"), ("OPENAI_API_BASE", "api.openai.com"),
    ("CHECKOUT_SUCCESS_URL", "javascript:alert(1)"), ("RATE_LIMIT_FAIL_CLOSED", "spend,spends"),
    ("ALLOWED_ORIGINS", "chrome-extension://abc/"), ("CATCHUP_UPLOAD_CONTENT_TYPES", "audio"),
    ("STRIPE_PRICE_IDS", "starter=prod_1"), ("CATCHUP_MAX_CONCURRENCY", "1"),
])
def test_malformed_values_are_refused_with_the_variable_the_value_and_what_is_allowed(variable, value):
    setting = BY_ENV[variable]
    assert f"{variable}={value!r} is refused: it must be {setting.requirement()}" in _refused({variable: value})


def test_every_refusal_is_reported_at_once():
    message = _refused({"LIVE_MAX_MINUTES": "0", "LOG_LEVEL": "loud", "STATS_SHARDS": "x"})
    assert all(name in message for name in ("LIVE_MAX_MINUTES", "LOG_LEVEL", "STATS_SHARDS"))


def test_inf_is_allowed_only_where_there_is_no_upper_bound():
    assert math.isinf(load(LEDGER_GUESS_SECONDS="inf").ledger_guess_seconds)
    assert load(LOG_LEVEL="debug").log_level == "DEBUG"
    assert load(CATCHUP_UPLOAD_CONTENT_TYPES="Audio/WebM").catchup_upload_content_types == ("audio/webm",)
    assert load(AWS_REGION="", AWS_DEFAULT_REGION="eu-west-1").region == "eu-west-1"


def test_a_secret_value_never_appears_in_a_refusal():
    secret_value = "tiny-but-secret"
    message = _refused({"STAGE": "prod", "JWT_SECRET": secret_value, "LIVE_MAX_MINUTES": "0"})
    assert "JWT_SECRET must be at least 32 characters" in message and "LIVE_MAX_MINUTES" in message
    assert secret_value not in message
    refusal = str(BY_ENV["OPENAI_API_KEY"].refuse("sk-should-stay-hidden"))
    assert "sk-should-stay-hidden" not in refusal and "OPENAI_API_KEY" in refusal


def test_read_setting_reads_one_declared_setting_for_import_time_code():
    assert read_setting("AUTHORIZER_TTL_SECONDS", {}) == 300
    assert read_setting("CATCHUP_MAX_CONCURRENCY", {}) is None
    assert read_setting("CATCHUP_MAX_CONCURRENCY", {"CATCHUP_MAX_CONCURRENCY": "5"}) == 5
    with pytest.raises(ConfigurationError, match="AUTHORIZER_TTL_SECONDS='301'"):
        read_setting("AUTHORIZER_TTL_SECONDS", {"AUTHORIZER_TTL_SECONDS": "301"})


def test_every_stage_of_config_json_is_within_the_bounds():
    with open(os.path.join(ROOT, ".chalice", "config.json"), encoding="utf-8") as handle:
        config = json.load(handle)
    for stage, stage_config in config["stages"].items():
        environment = {**config.get("environment_variables", {}), **stage_config.get("environment_variables", {})}
        declared = [name for name in environment if name in BY_ENV]
        assert "STAGE" in declared and "LOG_LEVEL" in declared
        for name in declared:
            read_setting(name, environment)  # raises when out of bounds
        assert set(environment) - set(BY_ENV) <= {"SECRETS_SSM_PREFIX"}, stage
