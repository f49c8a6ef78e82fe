"""Typed settings, declared once, read from the environment once per process when first needed.

Every setting is one field of `Settings` below, and that field is its whole declaration: the
attribute and its type, the environment variable, the default, the bounds or allowed values
and a one-line meaning. `load_settings` reads them all from that declaration and refuses a
malformed or out-of-range value with a ConfigurationError naming the variable, the value
(never a secret's) and what is allowed: nothing is silently clamped. docs/configuration.md
is generated from the same declaration (`python -m chalicelib.core.settings --markdown`)
and a test fails when it is out of step.

One way to get settings into a function: code that needs a value calls `get_settings()`
where it needs it; no function takes a Settings parameter, and nothing passes one around.
The exceptions are the tools that act on a stage's settings as their subject (infra's
`bootstrap`/`ensure_tables` create the resources of the stage they are given) and tests that
call `load_settings(env)` to examine how an environment is read. A test that needs other
values for the code under test changes the environment and calls `reset_settings()` (the
`env_override` fixture). Module-level code that runs when app.py is imported (the
authorizer's cache time, the queue's name) reads its one value with `read_setting(NAME)`.

Nothing here runs at import time: a Lambda cold start that never needs Stripe never
parses Stripe settings, and a missing secret fails the request that needs it with a
clear configuration error instead of crashing the whole module import.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import secrets
import sys
import threading
import typing
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Mapping

from chalicelib.core.errors import ConfigurationError
from chalicelib.core.logs import register_settings_secrets

APP_NAME = "transcription-backend"
LOCAL_STAGE = "local"

# Audio formats a catch-up upload may have (browsers' MediaRecorder and common files).
CATCHUP_CONTENT_TYPES = (
    "audio/webm", "audio/ogg", "audio/wav", "audio/x-wav", "audio/wave", "audio/mpeg",
    "audio/mp4", "audio/x-m4a", "audio/aac", "audio/flac",
)

# Requests per window, per route class (chalicelib.web.ratelimit.ROUTE_CLASSES says which
# route is in which class). register/auth/public count per client IP, the others per user.
DEFAULT_RATE_LIMITS = (
    "register:10/3600,auth:30/60,public:120/60,"
    "account:10/3600,spend:30/60,write:60/60,read:300/60"
)
# `chalice local` reports every caller as 127.0.0.1, so on a laptop (and in the test suite,
# which signs up hundreds of users) the per-IP classes would throttle everyone as one client.
LOCAL_RATE_LIMITS = "register:100000/3600,auth:100000/60,public:100000/60"
RATE_LIMIT_CLASSES = tuple(entry.split(":")[0] for entry in DEFAULT_RATE_LIMITS.split(","))

KIB, MIB, GIB = 1024, 1024**2, 1024**3
HOUR, DAY = 3600, 24 * 3600
HTTP_URL = (r"https?://[^\s/?#]+\S*", "an http:// or https:// URL")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

logger = logging.getLogger(__name__)


def resource_name(stage: str, suffix: str) -> str:
    """The deterministic physical name of a table, bucket or queue for a stage."""
    return f"{APP_NAME}-{stage}-{suffix}"


# ----- the declaration of one setting --------------------------------------------------

Reader = Callable[[Mapping[str, str], str], Any]  # (environment, stage) -> value


@dataclass(frozen=True)
class Setting:
    """One environment variable: how it is read, what it may be and what it means.

    `minimum`/`maximum` bound numbers (inclusive); `choices` and `pattern` constrain a
    string or each item of a list. A value that is unset or blank gets the default.
    A few settings need a rule of their own (`reader`); they describe it in `default_text`
    and `allowed_text` for the docs.
    """

    env: str
    default: Any
    meaning: str
    section: str
    minimum: Any = None
    maximum: Any = None
    choices: tuple[str, ...] = ()
    pattern: tuple[str, str] | None = None  # (regular expression, the same in words)
    local_default: Any = None  # the default on STAGE=local, when it differs
    fallback_env: str = ""  # read when `env` is unset
    secret: bool = False
    case: str = ""  # "upper" or "lower": how a string (or each item) is normalised
    reader: Reader | None = None
    default_text: str = ""
    allowed_text: str = ""
    # Filled in from the Settings field that holds the declaration:
    attribute: str = ""
    kind: Any = None  # int, float, bool, str, Decimal or tuple (of str); `int | None` is int

    def default_for(self, stage: str) -> Any:
        return self.local_default if self.local_default is not None and stage == LOCAL_STAGE else self.default

    def requirement(self) -> str:
        """What a value must be, in words (error messages and the docs say the same)."""
        if self.allowed_text:
            return self.allowed_text
        if self.kind is bool:
            return "true or false (also 1/0, yes/no, on/off)"
        if self.kind in (int, float, Decimal):
            noun = {int: "an integer", float: "a number", Decimal: "a decimal number"}[self.kind]
            low, high = _human(self, self.minimum), _human(self, self.maximum)
            if self.minimum is not None and self.maximum is not None:
                return f"{noun} from {low} to {high}"
            if self.minimum is not None:
                extra = " (`inf`: no limit)" if self.kind is float else ""
                return f"{noun} of at least {low}{extra}"
            return noun
        if self.kind is tuple:
            if self.choices:
                return f"a comma-separated list of: {', '.join(self.choices)}"
            return "a comma-separated list" + (f", each {self.pattern[1]}" if self.pattern else "")
        if self.choices:
            return f"one of {', '.join(self.choices)}"
        return self.pattern[1] if self.pattern else "any text"

    def refuse(self, raw: str) -> ConfigurationError:
        shown = "(a secret value, not shown)" if self.secret else repr(raw)
        return ConfigurationError(f"{self.env}={shown} is refused: it must be {self.requirement()}")

    def read(self, env: Mapping[str, str], stage: str) -> Any:
        """This setting's value in `env` (on `stage`), or a ConfigurationError."""
        if self.reader is not None:
            return self.reader(env, stage)
        raw = env.get(self.env, "").strip()
        if not raw and self.fallback_env:
            raw = env.get(self.fallback_env, "").strip()
        if not raw:
            return self.default_for(stage)
        if self.kind is tuple:
            items = tuple(self._normalised(item.strip()) for item in raw.split(",") if item.strip())
            for item in items:
                self._check_text(item, raw)
            return items or self.default_for(stage)
        value = self._parse(raw)
        if isinstance(value, str):
            self._check_text(value, raw)
        elif self.kind is not bool and not self._within_bounds(value):
            raise self.refuse(raw)
        return value

    def _normalised(self, text: str) -> str:
        return text.upper() if self.case == "upper" else text.lower() if self.case == "lower" else text

    def _parse(self, raw: str) -> Any:
        try:
            if self.kind is int:
                return int(raw)
            if self.kind is float:
                value = float(raw)
                if math.isnan(value):
                    raise ValueError(raw)
                return value
            if self.kind is Decimal:
                number = Decimal(raw)
                if not number.is_finite():
                    raise ValueError(raw)
                return number
        except (ValueError, InvalidOperation):
            raise self.refuse(raw) from None
        if self.kind is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise self.refuse(raw)
        return self._normalised(raw)

    def _within_bounds(self, value: Any) -> bool:
        return (self.minimum is None or value >= self.minimum) and (self.maximum is None or value <= self.maximum)

    def _check_text(self, value: str, raw: str) -> None:
        if self.choices and value not in self.choices:
            raise self.refuse(raw)
        if self.pattern and not re.fullmatch(self.pattern[0], value):
            raise self.refuse(raw)


def _section(title: str) -> Callable[..., Any]:
    """A declarer of this section's settings: `name: int = declare(ENV, default, meaning, ...)`."""

    def declare(env: str, default: Any, meaning: str, **rules: Any) -> Any:
        spec = Setting(env, default, meaning, title, **rules)
        return field(repr=not spec.secret, metadata={"setting": spec})

    return declare


# ----- special rules ------------------------------------------------------------------


def _jwt_secret(env: Mapping[str, str], stage: str) -> str:
    secret = env.get("JWT_SECRET", "")
    if secret:
        if len(secret) < 32 and stage != LOCAL_STAGE:
            raise ConfigurationError("JWT_SECRET must be at least 32 characters")
        return secret
    if stage == LOCAL_STAGE:
        logger.warning(
            "JWT_SECRET is not set: generated a random one for this process; "
            "tokens will not survive a restart"
        )
        return secrets.token_urlsafe(48)
    raise ConfigurationError(
        f"JWT_SECRET is required on stage {stage!r}: set it (or its SSM parameter) "
        "to a random string of at least 32 characters"
    )


def _jwt_previous_secret(env: Mapping[str, str], stage: str) -> str:
    """JWT_SECRET_PREVIOUS: verified, never signed with; same strength rule as JWT_SECRET."""
    secret = env.get("JWT_SECRET_PREVIOUS", "").strip()
    if secret and len(secret) < 32 and stage != LOCAL_STAGE:
        raise ConfigurationError("JWT_SECRET_PREVIOUS must be at least 32 characters")
    return secret


def _rate_limits(env: Mapping[str, str], stage: str) -> dict[str, tuple[int, int] | None]:
    """`RATE_LIMITS="auth:20/60,spend:off"` over the stage's defaults: class -> (limit, window)."""
    limits: dict[str, tuple[int, int] | None] = {}
    sources = [DEFAULT_RATE_LIMITS] + ([LOCAL_RATE_LIMITS] if stage == LOCAL_STAGE else [])
    sources.append(env.get("RATE_LIMITS", ""))
    for index, source in enumerate(sources):
        for entry in (part.strip() for part in source.split(",")):
            if not entry:
                continue
            name, _, spec = entry.partition(":")
            name, spec = name.strip(), spec.strip().lower()
            if index and name not in limits:
                raise ConfigurationError(
                    f"RATE_LIMITS: unknown class {name!r} (known: {', '.join(limits)})"
                )
            if spec == "off":
                limits[name] = None
                continue
            count, _, window = spec.partition("/")
            try:
                parsed = (int(count), int(window))
            except ValueError:
                raise ConfigurationError(
                    f"RATE_LIMITS: {entry!r} must look like class:limit/seconds or class:off"
                ) from None
            if parsed[0] < 1 or parsed[1] < 1:
                raise ConfigurationError(f"RATE_LIMITS: {entry!r} needs a positive limit and window")
            limits[name] = parsed
    return limits


# ----- the settings -------------------------------------------------------------------

_runtime = _section("Stage and runtime")
_accounts = _section("Accounts and tokens")
_providers = _section("Provider credentials, endpoints and timeouts")
_live = _section("Live captions, Ask and Twitch")
_catchup = _section("Catch-up and summaries")
_billing = _section("Billing (Stripe)")
_security = _section("Rate limits and login lockout")
_idempotency = _section("Idempotency-Key")
_analytics = _section("Analytics, stats and the scheduled cleanup")


@dataclass(frozen=True)
class Settings:
    # --- Stage and runtime ---
    stage: str = _runtime(
        "STAGE", LOCAL_STAGE,
        "`local`, `dev` or `prod`; names resources `transcription-backend-<stage>-<name>`",
        pattern=(r"[a-z][a-z0-9-]{0,19}", "lowercase letters, digits and hyphens, starting with a letter (at most 20)"))
    region: str = _runtime(
        "AWS_REGION", "us-east-1", "AWS region of the tables, bucket and queue (`AWS_DEFAULT_REGION` when unset)",
        fallback_env="AWS_DEFAULT_REGION", pattern=(r"[a-z]{2}(-[a-z]+)+-\d+", "an AWS region name such as eu-west-1"))
    log_level: str = _runtime("LOG_LEVEL", "INFO", "level of the JSON logs", choices=LOG_LEVELS, case="upper")
    aws_read_timeout_seconds: float = _runtime(
        "AWS_READ_TIMEOUT_SECONDS", 10.0, "read timeout of every boto3 client (chalicelib.aws.clients)",
        minimum=0.5, maximum=25.0)
    ledger_guess_seconds: float = _runtime(
        "LEDGER_GUESS_SECONDS", 0.0,
        "how long a process trusts the balance it last saw instead of reading it before a spend "
        "([performance](performance.md)); `inf`: always (one process, `make run`)", minimum=0.0)
    authorizer_ttl_seconds: int = _runtime(
        "AUTHORIZER_TTL_SECONDS", 300,
        "API Gateway's cache of the authorizer's answer per token: how long a revoked token may still "
        "pass (read when the app is packaged)", minimum=0, maximum=300)

    # --- Accounts and tokens ---
    jwt_secret: str = _accounts(
        "JWT_SECRET", "", "HS256 key for access tokens", secret=True, reader=_jwt_secret,
        default_text="generated on `local` (with a warning); **required** elsewhere",
        allowed_text="at least 32 characters (any length on `local`)")
    jwt_previous_secret: str = _accounts(
        "JWT_SECRET_PREVIOUS", "", "a second key access tokens are accepted with during a rotation "
        "(never signed with; [procedure](operations.md#rotating-jwt_secret-without-logging-anyone-out))",
        secret=True, reader=_jwt_previous_secret, allowed_text="at least 32 characters (any length on `local`)")
    jwt_issuer: str = _accounts("JWT_ISSUER", APP_NAME, "`iss` claim issued and required")
    jwt_audience: str = _accounts("JWT_AUDIENCE", f"{APP_NAME}-extension", "`aud` claim issued and required")
    access_token_ttl_seconds: int = _accounts(
        "ACCESS_TOKEN_TTL_SECONDS", 900, "lifetime of the short access token (`token`), renewed with a refresh token",
        minimum=5)
    session_token_ttl_seconds: int = _accounts(
        "SESSION_TOKEN_TTL_SECONDS", 7 * DAY,
        "lifetime of the session token (`user.token`) for clients that never refresh, such as the published extension",
        minimum=5)
    refresh_token_ttl_seconds: int = _accounts(
        "REFRESH_TOKEN_TTL_SECONDS", 30 * DAY, "refresh token lifetime (rotated on every use)", minimum=300)
    bcrypt_rounds: int = _accounts("BCRYPT_ROUNDS", 12, "bcrypt cost of stored passwords", minimum=4, maximum=31)
    signup_credits: int = _accounts("SIGNUP_CREDITS", 200, "credits granted to a new account", minimum=0)
    allowed_origins: tuple[str, ...] = _accounts(
        "ALLOWED_ORIGINS", (), "`chrome-extension://<id>` origins that get CORS headers (the first one also "
        "in API Gateway's own error responses)",
        pattern=(r"[a-z][a-z0-9+.-]*://[^\s/]+", "an origin such as `chrome-extension://<id>`"))

    # --- Provider credentials, endpoints and timeouts ---
    assemblyai_api_key: str = _providers("ASSEMBLYAI_API_KEY", "", "AssemblyAI key (live captions, catch-up)", secret=True)
    openai_api_key: str = _providers("OPENAI_API_KEY", "", "OpenAI key (Ask, catch-up summaries)", secret=True)
    twitch_client_id: str = _providers("TWITCH_CLIENT_ID", "", "Twitch app client id (the Twitch lookup)", secret=True)
    twitch_client_secret: str = _providers("TWITCH_CLIENT_SECRET", "", "Twitch app client secret", secret=True)
    assemblyai_api_base: str = _providers(
        "ASSEMBLYAI_API_BASE", "https://api.assemblyai.com",
        "AssemblyAI REST base URL (tests and the sandbox point the base URLs at fakes)", pattern=HTTP_URL)
    assemblyai_streaming_api_base: str = _providers(
        "ASSEMBLYAI_STREAMING_API_BASE", "https://streaming.assemblyai.com", "AssemblyAI streaming base URL",
        pattern=HTTP_URL)
    openai_api_base: str = _providers("OPENAI_API_BASE", "https://api.openai.com/v1", "OpenAI base URL", pattern=HTTP_URL)
    twitch_api_base: str = _providers("TWITCH_API_BASE", "https://api.twitch.tv/helix", "Twitch Helix base URL",
                                      pattern=HTTP_URL)
    twitch_auth_base: str = _providers("TWITCH_AUTH_BASE", "https://id.twitch.tv/oauth2", "Twitch OAuth base URL",
                                       pattern=HTTP_URL)
    provider_connect_timeout_seconds: float = _providers(
        "PROVIDER_CONNECT_TIMEOUT_SECONDS", 3.05, "TCP connect timeout, every provider", minimum=0.1, maximum=10.0)
    provider_read_timeout_seconds: float = _providers(
        "PROVIDER_READ_TIMEOUT_SECONDS", 10.0, "read timeout (AssemblyAI, Twitch)", minimum=0.5, maximum=25.0)
    openai_read_timeout_seconds: float = _providers(
        "OPENAI_READ_TIMEOUT_SECONDS", 20.0, "read timeout of a chat completion", minimum=0.5, maximum=25.0)
    provider_max_attempts: int = _providers(
        "PROVIDER_MAX_ATTEMPTS", 3, "attempts per provider call", minimum=1, maximum=5)
    provider_budget_seconds: float = _providers(
        "PROVIDER_BUDGET_SECONDS", 20.0, "total time one provider call may take, waits included",
        minimum=1.0, maximum=25.0)
    provider_backoff_seconds: float = _providers(
        "PROVIDER_BACKOFF_SECONDS", 0.5, "first backoff between attempts; doubles per attempt, with jitter",
        minimum=0.0, maximum=5.0)

    # --- Live captions, Ask and Twitch ---
    live_credits_per_minute: int = _live("LIVE_CREDITS_PER_MINUTE", 10, "price of live captions", minimum=1)
    live_max_minutes: int = _live(
        "LIVE_MAX_MINUTES", 180, "longest session (`max_minutes` may ask for less)", minimum=1, maximum=180)
    live_max_concurrent_sessions: int = _live(
        "LIVE_MAX_CONCURRENT_SESSIONS", 2, "live sessions a user may hold at once", minimum=1)
    live_heartbeat_grace_seconds: int = _live(
        "LIVE_HEARTBEAT_GRACE_SECONDS", 120,
        "billed after the last sign of life (start, renew, heartbeat) of a session never stopped", minimum=10)
    live_token_minutes: int = _live(
        "LIVE_TOKEN_MINUTES", 10, "token length of a renewing session: its bound of unpaid provider time "
        "(AssemblyAI accepts 1 to 180)", minimum=1, maximum=180)
    live_legacy_token_minutes: int = _live(
        "LIVE_LEGACY_TOKEN_MINUTES", 30, "the one token of a legacy start (the published extension)",
        minimum=1, maximum=180)
    live_free_token_minutes: int = _live(
        "LIVE_FREE_TOKEN_MINUTES", 10, "the longest token of a never-paid account (no purchase, no subscription)",
        minimum=1, maximum=180)
    live_renew_window_seconds: int = _live(
        "LIVE_RENEW_WINDOW_SECONDS", 120,
        "a renew is accepted when the current token has at most this left (else 409 `renew_too_early`)", minimum=10)
    live_renew_lead_seconds: int = _live(
        "LIVE_RENEW_LEAD_SECONDS", 45, "`renew_in_seconds` = token length minus this", minimum=5)
    live_ask_room_credits: int = _live(
        "LIVE_ASK_ROOM_CREDITS", 20, "what a token's reservation leaves available for Ask, when the balance allows",
        minimum=0)
    live_max_sessions_per_day: int = _live(
        "LIVE_MAX_SESSIONS_PER_DAY", 24, "live sessions a user may start per UTC day (429 `too_many_sessions_today`)",
        minimum=1)
    assemblyai_token_expires_seconds: int = _live(
        "ASSEMBLYAI_TOKEN_EXPIRES_SECONDS", 60, "time the browser has to open the socket with its token",
        minimum=1, maximum=600)
    assemblyai_streaming_speech_model: str = _live(
        "ASSEMBLYAI_STREAMING_SPEECH_MODEL", "universal-streaming-english",
        "`speech_model` in `websocket_url` (AssemblyAI requires one)")
    ask_credits: int = _live("ASK_CREDITS", 5, "price of one answer", minimum=1)
    openai_model: str = _live("OPENAI_MODEL", "gpt-4o-mini", "chat model for Ask")
    ask_max_question_chars: int = _live("ASK_MAX_QUESTION_CHARS", 1000, "longest question", minimum=1)
    ask_max_transcript_chars: int = _live(
        "ASK_MAX_TRANSCRIPT_CHARS", 200_000, "longest transcript accepted", minimum=1)
    ask_max_transcript_tokens: int = _live(
        "ASK_MAX_TRANSCRIPT_TOKENS", 6000, "transcript budget sent to OpenAI (the most recent part)", minimum=100)
    ask_max_answer_tokens: int = _live(
        "ASK_MAX_ANSWER_TOKENS", 500, "`max_completion_tokens` of an answer", minimum=16)
    ask_max_body_bytes: int = _live(
        "ASK_MAX_BODY_BYTES", 1_000_000, "largest Ask body (413 past it)", minimum=KIB, maximum=5 * MIB)
    twitch_vods_limit: int = _live(
        "TWITCH_VODS_LIMIT", 5, "archive VODs returned by the Twitch lookup", minimum=1, maximum=100)

    # --- Catch-up and summaries ---
    catchup_credits_per_minute: int = _catchup(
        "CATCHUP_CREDITS_PER_MINUTE", 10, "price per minute of audio", minimum=1)
    catchup_max_minutes: int = _catchup(
        "CATCHUP_MAX_MINUTES", 60, "largest `duration_minutes` a job may ask for", minimum=1, maximum=180)
    catchup_upload_max_bytes: int = _catchup(
        "CATCHUP_UPLOAD_MAX_BYTES", 200 * MIB, "largest upload a URL is issued for", minimum=KIB, maximum=5 * GIB)
    catchup_upload_content_types: tuple[str, ...] = _catchup(
        "CATCHUP_UPLOAD_CONTENT_TYPES", CATCHUP_CONTENT_TYPES, "allowed upload types", case="lower",
        pattern=(r"[a-z0-9.+-]+/[a-z0-9.+-]+", "a media type such as audio/webm"))
    catchup_inline_audio_max_bytes: int = _catchup(
        "CATCHUP_INLINE_AUDIO_MAX_BYTES", 3 * MIB,
        "largest decoded inline `audio` (its base64 must fit API Gateway's body limit)", minimum=KIB, maximum=3 * MIB)
    catchup_upload_url_ttl_seconds: int = _catchup(
        "CATCHUP_UPLOAD_URL_TTL_SECONDS", 300, "lifetime of the presigned PUT", minimum=30, maximum=HOUR)
    catchup_audio_url_ttl_seconds: int = _catchup(
        "CATCHUP_AUDIO_URL_TTL_SECONDS", HOUR, "lifetime of the presigned GET handed to AssemblyAI",
        minimum=300, maximum=7 * DAY)
    catchup_transcribe_budget_seconds: int = _catchup(
        "CATCHUP_TRANSCRIBE_BUDGET_SECONDS", 240,
        "longest the worker polls AssemblyAI (also bounded by the Lambda's remaining time)", minimum=1, maximum=280)
    catchup_transcript_retention_days: int = _catchup(
        "CATCHUP_TRANSCRIPT_RETENTION_DAYS", 7, "how long a transcript is kept and shown", minimum=1)
    catchup_job_retention_days: int = _catchup(
        "CATCHUP_JOB_RETENTION_DAYS", 30, "how long a job item is kept", minimum=1)
    catchup_speech_models: tuple[str, ...] = _catchup(
        "ASSEMBLYAI_SPEECH_MODELS", ("universal-2",),
        "`speech_models` for pre-recorded transcription, in priority order")
    catchup_max_concurrency: int | None = _catchup(
        "CATCHUP_MAX_CONCURRENCY", None,
        "most batches the queue's poller runs at once (read when the app is packaged; `make deploy` also "
        "requires at most the worker's reserved concurrency)", minimum=2, maximum=1000, default_text="unset (no limit)")
    summary_model: str = _catchup(
        "OPENAI_SUMMARY_MODEL", "", "chat model for summaries", default_text="`OPENAI_MODEL`'s value")
    summary_max_completion_tokens: int = _catchup(
        "OPENAI_SUMMARY_MAX_TOKENS", 800, "`max_completion_tokens` per summary call", minimum=100, maximum=4000)
    summary_chunk_tokens: int = _catchup(
        "OPENAI_SUMMARY_CHUNK_TOKENS", 16000, "input budget per call; longer transcripts are split and merged",
        minimum=200)

    # --- Billing (Stripe) ---
    stripe_secret_key: str = _billing(
        "STRIPE_SECRET_KEY", "", "`sk_test_...`/`sk_live_...` (or a restricted key); unset: billing routes answer 503",
        secret=True)
    stripe_webhook_secrets: tuple[str, ...] = _billing(
        "STRIPE_WEBHOOK_SECRET", (), "the endpoint's `whsec_...` secrets; list the new and the old one while rolling "
        "it; unset: the webhook answers 503 (Stripe retries)", secret=True)
    stripe_api_base: str = _billing("STRIPE_API_BASE", "https://api.stripe.com", "Stripe API base URL",
                                    pattern=HTTP_URL)
    stripe_price_ids: tuple[str, ...] = _billing(
        "STRIPE_PRICE_IDS", (), "optional `<pack or plan id>=price_...` entries binding catalogue items to Stripe "
        "Prices (which must charge the catalogue's amount); unbound items use inline `price_data`",
        pattern=(r"[a-z0-9_]+=price_\S+", "`<pack or plan id>=price_...`"))
    checkout_success_url: str = _billing(
        "CHECKOUT_SUCCESS_URL", "https://example.invalid/checkout/success",
        "where Checkout sends the browser back after paying (may contain `{CHECKOUT_SESSION_ID}`)", pattern=HTTP_URL)
    checkout_cancel_url: str = _billing(
        "CHECKOUT_CANCEL_URL", "https://example.invalid/checkout/cancel",
        "where Checkout sends the browser back when cancelled", pattern=HTTP_URL)
    billing_portal_return_url: str = _billing(
        "BILLING_PORTAL_RETURN_URL", "https://example.invalid/account", "where the billing portal's \"return\" goes",
        pattern=HTTP_URL)

    # --- Rate limits and login lockout ---
    rate_limits_enabled: bool = _security("RATE_LIMITS_ENABLED", True, "master switch of the rate limits")
    rate_limits: Mapping[str, tuple[int, int] | None] = _security(
        "RATE_LIMITS", None, "overrides of the per-class limits, e.g. `spend:20/60,read:off`", reader=_rate_limits,
        default_text=f"`{DEFAULT_RATE_LIMITS}`; on `local` also `{LOCAL_RATE_LIMITS}`",
        allowed_text="comma-separated `class:limit/seconds` or `class:off` (limit and seconds at least 1), "
                     f"classes {', '.join(RATE_LIMIT_CLASSES)}")
    rate_limit_fail_closed: tuple[str, ...] = _security(
        "RATE_LIMIT_FAIL_CLOSED", ("spend",),
        "classes answered 503 when the limiter cannot reach DynamoDB (the others pass)", choices=RATE_LIMIT_CLASSES)
    login_max_failures: int = _security(
        "LOGIN_MAX_FAILURES", 10, "password checks per account per window before the lock", minimum=1, maximum=100)
    login_failure_window_seconds: int = _security(
        "LOGIN_FAILURE_WINDOW_SECONDS", 900, "the window failed logins are counted in", minimum=60)
    login_lockout_seconds: int = _security(
        "LOGIN_LOCKOUT_SECONDS", 900, "how long a lock lasts from the failure that set it", minimum=60)
    login_slowdown_after: int = _security(
        "LOGIN_SLOWDOWN_AFTER", 5, "attempts per window before each further one is slowed", minimum=1)
    login_slowdown_ms: int = _security(
        "LOGIN_SLOWDOWN_MS", 250, "added delay per attempt past that point", minimum=0, maximum=3000)
    login_ip_max_failures: int = _security(
        "LOGIN_IP_MAX_FAILURES", 100, "failed logins per IP per window before the IP is locked", minimum=1,
        local_default=100_000)

    # --- Idempotency-Key ---
    idempotency_ttl_seconds: int = _idempotency(
        "IDEMPOTENCY_TTL_SECONDS", DAY, "how long a key replays its first response", minimum=60)
    idempotency_wait_seconds: int = _idempotency(
        "IDEMPOTENCY_WAIT_SECONDS", 20, "how long a duplicate waits for the first request before 409",
        minimum=0, maximum=25)
    idempotency_lock_seconds: int = _idempotency(
        "IDEMPOTENCY_LOCK_SECONDS", 120, "after this, an unfinished first attempt counts as abandoned", minimum=30)

    # --- Analytics, stats and the scheduled cleanup ---
    assemblyai_streaming_usd_per_hour: Decimal = _analytics(
        "ASSEMBLYAI_STREAMING_USD_PER_HOUR", Decimal("0.15"),
        "AssemblyAI streaming price, US dollars per hour of session", minimum=Decimal(0))
    assemblyai_transcribe_usd_per_hour: Decimal = _analytics(
        "ASSEMBLYAI_TRANSCRIBE_USD_PER_HOUR", Decimal("0.15"),
        "pre-recorded transcription price per hour of audio (0.15 to 0.21 depending on the model: set your plan's)",
        minimum=Decimal(0))
    openai_usd_per_1k_prompt_tokens: Decimal = _analytics(
        "OPENAI_USD_PER_1K_PROMPT_TOKENS", Decimal("0.00015"), "OpenAI input price per 1,000 tokens (gpt-4o-mini)",
        minimum=Decimal(0))
    openai_usd_per_1k_completion_tokens: Decimal = _analytics(
        "OPENAI_USD_PER_1K_COMPLETION_TOKENS", Decimal("0.0006"), "OpenAI output price per 1,000 tokens (gpt-4o-mini)",
        minimum=Decimal(0))
    stats_shards: int = _analytics(
        "STATS_SHARDS", 4, "write shards per day of the stats counters; may be raised later, never lowered "
        "(counters in the higher shards would no longer be read)", minimum=1, maximum=64)
    stats_retention_days: int = _analytics(
        "STATS_RETENTION_DAYS", 400, "how long daily counters are kept (TTL)", minimum=7)
    analytics_top_users: int = _analytics(
        "ANALYTICS_TOP_USERS", 10,
        "length of `top_users` in `GET /analytics/costs/top-users` (and the console's business view)",
        minimum=1, maximum=100)
    cleanup_pending_checkout_hours: int = _analytics(
        "CLEANUP_PENDING_CHECKOUT_HOURS", 24,
        "age at which a pending Checkout is expired (must exceed the Checkout session lifetime, 1 h here)", minimum=2)
    cleanup_catchup_stuck_seconds: int = _analytics(
        "CLEANUP_CATCHUP_STUCK_SECONDS", 6000,
        "age at which a queued/processing catch-up is failed (after all 3 SQS deliveries of 30 min visibility)",
        minimum=600)
    cleanup_invariant_sample: int = _analytics(
        "CLEANUP_INVARIANT_SAMPLE", 25, "users whose ledger invariant each run checks (0: none)", minimum=0, maximum=1000)

    # Not a setting of its own: `USERS_TABLE=...`, `AUDIO_BUCKET=...` override derived names.
    resource_overrides: Mapping[str, str] = field(default_factory=dict, repr=False)

    def resource(self, suffix: str) -> str:
        """Physical name of one of our resources; `<SUFFIX>_TABLE`-style overrides win."""
        return self.resource_overrides.get(suffix) or resource_name(self.stage, suffix)


def _declarations() -> tuple[Setting, ...]:
    """Every Setting, in declaration order, completed with its attribute and type."""
    hints = typing.get_type_hints(Settings)
    declared = []
    for spec in dataclasses.fields(Settings):
        setting = spec.metadata.get("setting")
        if setting is None:
            continue
        kind = hints[spec.name]
        if type(None) in typing.get_args(kind):  # `int | None`: unset is the default, None
            kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
        kind = tuple if typing.get_origin(kind) is tuple else kind
        declared.append(dataclasses.replace(setting, attribute=spec.name, kind=kind))
    return tuple(declared)


SETTINGS: tuple[Setting, ...] = _declarations()
BY_ENV: dict[str, Setting] = {setting.env: setting for setting in SETTINGS}
SECRET_NAMES: tuple[str, ...] = tuple(setting.env for setting in SETTINGS if setting.secret)


def _stage(env: Mapping[str, str]) -> str:
    return BY_ENV["STAGE"].read(env, LOCAL_STAGE)  # type: ignore[no-any-return]


def read_setting(name: str, env: Mapping[str, str] | None = None) -> Any:
    """One declared setting from the environment (for code that runs when app.py is imported)."""
    env = os.environ if env is None else env
    return BY_ENV[name].read(env, _stage(env))


def _resource_overrides(env: Mapping[str, str]) -> dict[str, str]:
    """`USERS_TABLE=...`, `AUDIO_BUCKET=...`, `CATCHUP_QUEUE=...` override derived names."""
    from chalicelib.aws.resources import RESOURCE_ENV_VARS

    return {suffix: env[var] for var, suffix in RESOURCE_ENV_VARS.items() if env.get(var)}


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build settings from an environment mapping (os.environ by default).

    Every value is checked against its declaration; all refusals are reported together.
    """
    from chalicelib.aws.ssm_secrets import with_secrets

    env = with_secrets(os.environ if env is None else env)  # SSM-held secrets, once per process
    stage = _stage(env)
    values: dict[str, Any] = {}
    problems: list[str] = []
    for setting in SETTINGS:
        try:
            values[setting.attribute] = setting.read(env, stage)
        except ConfigurationError as error:
            problems.append(str(error))
    if problems:
        raise ConfigurationError("; ".join(problems))
    return Settings(**values, resource_overrides=_resource_overrides(env))


_settings_lock = threading.Lock()
_settings: list[Settings] = []  # zero or one: the process-wide settings


def get_settings() -> Settings:
    """The process-wide settings, built on first use and then cached.

    Built exactly once even when threads (chalice local) race on the first requests:
    on `local` each build generates its own JWT secret.
    """
    if _settings:
        return _settings[0]
    with _settings_lock:
        if not _settings:
            settings = load_settings()
            register_settings_secrets(settings)  # never logged, whichever function logs
            _settings.append(settings)
        return _settings[0]


def reset_settings() -> None:
    """Forget the cached settings (tests that change the environment call this)."""
    with _settings_lock:
        _settings.clear()


# ----- the configuration reference (docs/configuration.md) -----------------------------

DOC_PATH = "docs/configuration.md"
DOC_COMMAND = ".venv/bin/python -m chalicelib.core.settings --markdown > docs/configuration.md"


def _human(setting: Setting, value: Any, quote: str = "") -> str:
    """A number as the docs show it: `604800` (7 days), `3145728` (3 MiB), `3.05`."""
    if isinstance(value, float):
        return quote + ("inf" if math.isinf(value) else f"{value:g}") + quote
    shown = f"{quote}{value}{quote}"
    if not isinstance(value, int) or isinstance(value, bool):
        return shown
    units: tuple[tuple[int, str], ...] = ()
    if setting.env.endswith("_SECONDS") and value >= 60:
        units = ((DAY, "day"), (HOUR, "hour"), (60, "minute"))
    elif setting.env.endswith("_BYTES") and value >= KIB:
        units = ((GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB"))
    for size, unit in units:
        if value % size == 0:
            count = value // size
            plural = "s" if count != 1 and not unit.endswith("B") else ""
            return f"{shown} ({count} {unit}{plural})"
    return shown


def _shown_default(setting: Setting) -> str:
    if setting.default_text:
        return setting.default_text

    def one(value: Any) -> str:
        if value is None or value in ("", ()):
            return "unset"
        if isinstance(value, bool):
            return "`true`" if value else "`false`"
        if isinstance(value, tuple):
            return "`" + ",".join(value) + "`"
        return _human(setting, value, quote="`")

    text = one(setting.default)
    if setting.local_default is not None:
        text += f" ({one(setting.local_default)} on `local`)"
    return text


# Environment variables that are not Settings: read by boto3, the secrets loader, make run.
OTHER_VARIABLES = (
    ("`SECRETS_SSM_PREFIX`", "unset (set per stage in config.json)",
     ("read every secret (`JWT_SECRET`, `STRIPE_SECRET_KEY`, ...) from `<prefix><NAME>` in SSM Parameter "
      "Store (chalicelib.aws.ssm_secrets)")),
    ("`<NAME>_PARAM`", "unset",
     "read that one secret from this SSM parameter instead (e.g. `JWT_SECRET_PARAM`); a plain `<NAME>=...` wins"),
    ("`<NAME>_TABLE`, `AUDIO_BUCKET`, `CATCHUP_QUEUE`, `CATCHUP_DLQ_QUEUE`", "derived",
     "override a physical resource name (e.g. `USERS_TABLE`); otherwise `transcription-backend-<stage>-<name>`"),
    ("`AWS_ENDPOINT_URL`", "unset", "boto3's own endpoint setting; `make run` starts the embedded AWS when it is unset"),
    ("`PORT`, `HOST`", "`8000`, `127.0.0.1`", "where `make run` serves"),
)


def render_markdown() -> str:
    """docs/configuration.md, generated from the declarations above."""
    lines = [
        "# Configuration",
        "",
        "<!-- Generated from chalicelib/core/settings.py: do not edit. Regenerate with",
        f"     {DOC_COMMAND} -->",
        "",
        "Every setting is an environment variable, read once per process when first needed",
        "(`chalicelib.core.settings.get_settings()`). Locally, export them before `make run`; on AWS,",
        "non-secret ones are in `.chalice/config.json` per stage and secrets come from SSM Parameter",
        "Store ([Deployment](deployment.md#deployment)). An unset or blank variable takes its default.",
        "",
        "A malformed or out-of-range value is **refused**, never shortened to fit, with a configuration",
        "error naming the variable, the value and what is allowed (a secret's value is never shown), e.g.",
        "`LIVE_MAX_MINUTES='500' is refused: it must be an integer from 1 to 180`. `make deploy` refuses",
        "a stage whose `.chalice/config.json` holds such a value; `make run` refuses to start; deployed,",
        "every request fails with the logged message (the API answers 503) instead of running with it.",
        "",
    ]
    sections: dict[str, list[Setting]] = {}
    for setting in SETTINGS:
        sections.setdefault(setting.section, []).append(setting)
    for title, members in sections.items():
        lines += [f"## {title}", "", "| Variable | Default | Allowed | Meaning |", "|---|---|---|---|"]
        for setting in members:
            meaning = setting.meaning + ("; **secret** (SSM on AWS, never logged)" if setting.secret else "")
            lines.append(f"| `{setting.env}` | {_shown_default(setting)} | {setting.requirement()} | {meaning} |")
        lines.append("")
    lines += ["## Read elsewhere", "", "| Variable | Default | Meaning |", "|---|---|---|"]
    for names, default, meaning in OTHER_VARIABLES:
        lines.append(f"| {names} | {default} | {meaning} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if argv != ["--markdown"]:
        print("usage: python -m chalicelib.core.settings --markdown > docs/configuration.md", file=sys.stderr)
        return 2
    sys.stdout.write(render_markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
