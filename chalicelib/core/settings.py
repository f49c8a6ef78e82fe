"""Typed settings, read from the environment once per process and only when first needed.

Nothing here runs at import time: a Lambda cold start that never needs Stripe never
parses Stripe settings, and a missing secret fails the request that needs it with a
clear configuration error instead of crashing the whole module import.
"""
from __future__ import annotations

import logging
import os
import secrets
import threading
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Mapping

from chalicelib.core.errors import ConfigurationError
from chalicelib.core.logs import register_settings_secrets

APP_NAME = "transcription-backend"
LOCAL_STAGE = "local"

# Audio formats a catch-up upload may have (browsers' MediaRecorder and common files).
CATCHUP_CONTENT_TYPES = (
    "audio/webm", "audio/ogg", "audio/wav", "audio/x-wav", "audio/wave", "audio/mpeg",
    "audio/mp4", "audio/x-m4a", "audio/aac", "audio/flac",
)

logger = logging.getLogger(__name__)


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigurationError(f"{name} must be at least {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, got {raw!r}") from None


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{name} must be true or false, got {raw!r}")


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in env.get(name, "").split(",") if item.strip())


def _str(env: Mapping[str, str], name: str, default: str = "") -> str:
    return env.get(name, "").strip() or default


def _usd(env: Mapping[str, str], name: str, default: str) -> Decimal:
    """A non-negative unit price in US dollars, kept exact (a Decimal, never a float)."""
    raw = _str(env, name, default)
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ConfigurationError(f"{name} must be a decimal number of dollars, got {raw!r}") from None
    if not value.is_finite() or value < 0:
        raise ConfigurationError(f"{name} must be a non-negative number of dollars, got {raw!r}")
    return value


def resource_name(stage: str, suffix: str) -> str:
    """The deterministic physical name of a table, bucket or queue for a stage."""
    return f"{APP_NAME}-{stage}-{suffix}"


@dataclass(frozen=True)
class Settings:
    stage: str
    region: str
    jwt_secret: str = field(repr=False)
    jwt_issuer: str
    jwt_audience: str
    access_token_ttl_seconds: int
    session_token_ttl_seconds: int
    refresh_token_ttl_seconds: int
    bcrypt_rounds: int
    allowed_origins: tuple[str, ...]
    signup_credits: int
    log_level: str

    assemblyai_api_key: str = field(repr=False)
    openai_api_key: str = field(repr=False)
    stripe_secret_key: str = field(repr=False)
    stripe_webhook_secrets: tuple[str, ...] = field(repr=False)
    twitch_client_id: str = field(repr=False)
    twitch_client_secret: str = field(repr=False)

    assemblyai_api_base: str
    assemblyai_streaming_api_base: str
    openai_api_base: str
    stripe_api_base: str
    twitch_api_base: str
    twitch_auth_base: str

    # Prices (credits) and limits of the paid features.
    live_credits_per_minute: int = 10
    live_max_minutes: int = 180
    live_max_concurrent_sessions: int = 2
    live_heartbeat_grace_seconds: int = 120
    live_token_minutes: int = 10
    live_legacy_token_minutes: int = 30
    live_free_token_minutes: int = 10
    live_renew_window_seconds: int = 120
    live_renew_lead_seconds: int = 45
    live_ask_room_credits: int = 20
    live_max_sessions_per_day: int = 24
    ask_credits: int = 5
    catchup_credits_per_minute: int = 10

    # Billing: where Stripe Checkout sends the browser back to (never taken from a client).
    checkout_success_url: str = "https://example.invalid/checkout/success"
    checkout_cancel_url: str = "https://example.invalid/checkout/cancel"
    billing_portal_return_url: str = "https://example.invalid/account"
    # `<pack or plan id>=price_...` entries binding catalogue items to Stripe Prices (issue 4).
    stripe_price_ids: tuple[str, ...] = ()

    # Live captions, Ask and the provider clients (issue 5).
    assemblyai_token_expires_seconds: int = 60
    assemblyai_streaming_speech_model: str = "universal-streaming-english"
    openai_model: str = "gpt-4o-mini"
    ask_max_question_chars: int = 1000
    ask_max_transcript_chars: int = 200_000
    ask_max_transcript_tokens: int = 6000
    ask_max_answer_tokens: int = 500
    ask_max_body_bytes: int = 1_000_000
    twitch_vods_limit: int = 5
    provider_connect_timeout_seconds: float = 3.05
    provider_read_timeout_seconds: float = 10.0
    openai_read_timeout_seconds: float = 20.0
    provider_max_attempts: int = 3
    provider_budget_seconds: float = 20.0
    provider_backoff_seconds: float = 0.5
    aws_read_timeout_seconds: float = 10.0  # every boto3 client (chalicelib.aws.clients)

    # How long a process trusts the balance it last saw before reading it first (the ledger;
    # docs/performance.md: on a fleet a guess is usually stale, and a refused transaction
    # costs more than a read). "inf" = always guess (one process: `make run`).
    ledger_guess_seconds: float = 0.0

    # Rate limits, login lockout (issue 7): see README "Security" for the meaning of each.
    rate_limits_enabled: bool = True
    rate_limits: Mapping[str, tuple[int, int] | None] = field(
        default_factory=lambda: _rate_limits({}, "prod")
    )
    rate_limit_fail_closed: tuple[str, ...] = ("spend",)
    login_max_failures: int = 10
    login_failure_window_seconds: int = 900
    login_lockout_seconds: int = 900
    login_slowdown_after: int = 5
    login_slowdown_ms: int = 250
    login_ip_max_failures: int = 100

    # Catch-up jobs (issue 6).
    catchup_max_minutes: int = 60
    catchup_inline_audio_max_bytes: int = 3 * 1024 * 1024
    catchup_upload_max_bytes: int = 200 * 1024 * 1024
    catchup_upload_content_types: tuple[str, ...] = CATCHUP_CONTENT_TYPES
    catchup_upload_url_ttl_seconds: int = 300
    catchup_audio_url_ttl_seconds: int = 3600
    catchup_transcript_retention_days: int = 7
    catchup_job_retention_days: int = 30
    catchup_transcribe_budget_seconds: int = 240
    catchup_speech_models: tuple[str, ...] = ("universal-2",)
    summary_model: str = ""
    summary_max_completion_tokens: int = 800
    summary_chunk_tokens: int = 16000

    # Idempotency-Key (issue 3): how long a key replays, how long a duplicate waits for the
    # first request to finish, and when an unfinished first attempt counts as abandoned.
    idempotency_ttl_seconds: int = 24 * 3600
    idempotency_wait_seconds: int = 20
    idempotency_lock_seconds: int = 120

    # Analytics, daily stats and the scheduled cleanup (issue 8): provider unit prices in
    # US dollars, the write shards per day of the stats table, and the cleanup thresholds.
    assemblyai_streaming_usd_per_hour: Decimal = Decimal("0.15")
    assemblyai_transcribe_usd_per_hour: Decimal = Decimal("0.15")
    openai_usd_per_1k_prompt_tokens: Decimal = Decimal("0.00015")
    openai_usd_per_1k_completion_tokens: Decimal = Decimal("0.0006")
    stats_shards: int = 4
    stats_retention_days: int = 400
    analytics_top_users: int = 10
    cleanup_pending_checkout_hours: int = 24
    cleanup_catchup_stuck_seconds: int = 6000
    cleanup_invariant_sample: int = 25
    # A second key access tokens may be signed with, during a JWT_SECRET rotation (docs/operations.md).
    jwt_previous_secret: str = field(default="", repr=False)

    resource_overrides: Mapping[str, str] = field(default_factory=dict, repr=False)

    def resource(self, suffix: str) -> str:
        """Physical name of one of our resources; `<SUFFIX>_TABLE`-style overrides win."""
        return self.resource_overrides.get(suffix) or resource_name(self.stage, suffix)


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


def _resource_overrides(env: Mapping[str, str]) -> dict[str, str]:
    """`USERS_TABLE=...`, `AUDIO_BUCKET=...`, `CATCHUP_QUEUE=...` override derived names."""
    from chalicelib.aws.resources import RESOURCE_ENV_VARS

    return {suffix: env[var] for var, suffix in RESOURCE_ENV_VARS.items() if env.get(var)}


# Requests per window, per route class (chalicelib.web.ratelimit.ROUTE_CLASSES says which
# route is in which class). register/auth/public count per client IP, the others per user.
DEFAULT_RATE_LIMITS = (
    "register:10/3600,auth:30/60,public:120/60,"
    "account:10/3600,spend:30/60,write:60/60,read:300/60"
)
# `chalice local` reports every caller as 127.0.0.1, so on a laptop (and in the test suite,
# which signs up hundreds of users) the per-IP classes would throttle everyone as one client.
LOCAL_RATE_LIMITS = "register:100000/3600,auth:100000/60,public:100000/60"


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


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build settings from an environment mapping (os.environ by default)."""
    from chalicelib.aws.ssm_secrets import with_secrets

    env = with_secrets(os.environ if env is None else env)  # SSM-held secrets, once per process
    stage = _str(env, "STAGE", LOCAL_STAGE)
    return Settings(
        stage=stage,
        region=_str(env, "AWS_REGION", _str(env, "AWS_DEFAULT_REGION", "us-east-1")),
        jwt_secret=_jwt_secret(env, stage),
        jwt_previous_secret=_jwt_previous_secret(env, stage),
        jwt_issuer=_str(env, "JWT_ISSUER", APP_NAME),
        jwt_audience=_str(env, "JWT_AUDIENCE", f"{APP_NAME}-extension"),
        access_token_ttl_seconds=_int(env, "ACCESS_TOKEN_TTL_SECONDS", 900, minimum=5),
        session_token_ttl_seconds=_int(env, "SESSION_TOKEN_TTL_SECONDS", 7 * 24 * 3600, minimum=5),
        refresh_token_ttl_seconds=_int(
            env, "REFRESH_TOKEN_TTL_SECONDS", 30 * 24 * 3600, minimum=300
        ),
        bcrypt_rounds=_int(env, "BCRYPT_ROUNDS", 12, minimum=4),
        allowed_origins=_list(env, "ALLOWED_ORIGINS"),
        signup_credits=_int(env, "SIGNUP_CREDITS", 200),
        log_level=_str(env, "LOG_LEVEL", "INFO").upper(),
        assemblyai_api_key=_str(env, "ASSEMBLYAI_API_KEY"),
        openai_api_key=_str(env, "OPENAI_API_KEY"),
        stripe_secret_key=_str(env, "STRIPE_SECRET_KEY"),
        stripe_webhook_secrets=_list(env, "STRIPE_WEBHOOK_SECRET"),
        twitch_client_id=_str(env, "TWITCH_CLIENT_ID"),
        twitch_client_secret=_str(env, "TWITCH_CLIENT_SECRET"),
        assemblyai_api_base=_str(env, "ASSEMBLYAI_API_BASE", "https://api.assemblyai.com"),
        assemblyai_streaming_api_base=_str(
            env, "ASSEMBLYAI_STREAMING_API_BASE", "https://streaming.assemblyai.com"
        ),
        openai_api_base=_str(env, "OPENAI_API_BASE", "https://api.openai.com/v1"),
        stripe_api_base=_str(env, "STRIPE_API_BASE", "https://api.stripe.com"),
        twitch_api_base=_str(env, "TWITCH_API_BASE", "https://api.twitch.tv/helix"),
        twitch_auth_base=_str(env, "TWITCH_AUTH_BASE", "https://id.twitch.tv/oauth2"),
        ledger_guess_seconds=max(0.0, _float(env, "LEDGER_GUESS_SECONDS", 0.0)),
        live_credits_per_minute=_int(env, "LIVE_CREDITS_PER_MINUTE", 10, minimum=1),
        live_max_minutes=min(_int(env, "LIVE_MAX_MINUTES", 180, minimum=1), 180),
        live_max_concurrent_sessions=_int(env, "LIVE_MAX_CONCURRENT_SESSIONS", 2, minimum=1),
        live_heartbeat_grace_seconds=_int(env, "LIVE_HEARTBEAT_GRACE_SECONDS", 120, minimum=10),
        # Token lengths cap the provider time a session may use unpaid (README: the bound);
        # AssemblyAI accepts 1..180 minutes.
        live_token_minutes=min(_int(env, "LIVE_TOKEN_MINUTES", 10, minimum=1), 180),
        live_legacy_token_minutes=min(_int(env, "LIVE_LEGACY_TOKEN_MINUTES", 30, minimum=1), 180),
        live_free_token_minutes=min(_int(env, "LIVE_FREE_TOKEN_MINUTES", 10, minimum=1), 180),
        live_renew_window_seconds=_int(env, "LIVE_RENEW_WINDOW_SECONDS", 120, minimum=10),
        live_renew_lead_seconds=_int(env, "LIVE_RENEW_LEAD_SECONDS", 45, minimum=5),
        live_ask_room_credits=_int(env, "LIVE_ASK_ROOM_CREDITS", 20, minimum=0),
        live_max_sessions_per_day=_int(env, "LIVE_MAX_SESSIONS_PER_DAY", 24, minimum=1),
        ask_credits=_int(env, "ASK_CREDITS", 5, minimum=1),
        catchup_credits_per_minute=_int(env, "CATCHUP_CREDITS_PER_MINUTE", 10, minimum=1),
        checkout_success_url=_str(
            env, "CHECKOUT_SUCCESS_URL", "https://example.invalid/checkout/success"
        ),
        checkout_cancel_url=_str(
            env, "CHECKOUT_CANCEL_URL", "https://example.invalid/checkout/cancel"
        ),
        billing_portal_return_url=_str(
            env, "BILLING_PORTAL_RETURN_URL", "https://example.invalid/account"
        ),
        stripe_price_ids=_list(env, "STRIPE_PRICE_IDS"),
        assemblyai_token_expires_seconds=min(
            _int(env, "ASSEMBLYAI_TOKEN_EXPIRES_SECONDS", 60, minimum=1), 600
        ),
        assemblyai_streaming_speech_model=_str(
            env, "ASSEMBLYAI_STREAMING_SPEECH_MODEL", "universal-streaming-english"
        ),
        openai_model=_str(env, "OPENAI_MODEL", "gpt-4o-mini"),
        ask_max_question_chars=_int(env, "ASK_MAX_QUESTION_CHARS", 1000, minimum=1),
        ask_max_transcript_chars=_int(env, "ASK_MAX_TRANSCRIPT_CHARS", 200_000, minimum=1),
        ask_max_transcript_tokens=_int(env, "ASK_MAX_TRANSCRIPT_TOKENS", 6000, minimum=100),
        ask_max_answer_tokens=_int(env, "ASK_MAX_ANSWER_TOKENS", 500, minimum=16),
        ask_max_body_bytes=min(_int(env, "ASK_MAX_BODY_BYTES", 1_000_000, minimum=1024), 5 * 1024 * 1024),
        twitch_vods_limit=min(_int(env, "TWITCH_VODS_LIMIT", 5, minimum=1), 100),
        provider_connect_timeout_seconds=min(
            max(_float(env, "PROVIDER_CONNECT_TIMEOUT_SECONDS", 3.05), 0.1), 10.0
        ),
        provider_read_timeout_seconds=min(
            max(_float(env, "PROVIDER_READ_TIMEOUT_SECONDS", 10.0), 0.5), 25.0
        ),
        openai_read_timeout_seconds=min(
            max(_float(env, "OPENAI_READ_TIMEOUT_SECONDS", 20.0), 0.5), 25.0
        ),
        provider_max_attempts=min(_int(env, "PROVIDER_MAX_ATTEMPTS", 3, minimum=1), 5),
        provider_budget_seconds=min(max(_float(env, "PROVIDER_BUDGET_SECONDS", 20.0), 1.0), 25.0),
        provider_backoff_seconds=min(max(_float(env, "PROVIDER_BACKOFF_SECONDS", 0.5), 0.0), 5.0),
        aws_read_timeout_seconds=min(max(_float(env, "AWS_READ_TIMEOUT_SECONDS", 10.0), 0.5), 25.0),
        rate_limits_enabled=_bool(env, "RATE_LIMITS_ENABLED", True),
        rate_limits=_rate_limits(env, stage),
        rate_limit_fail_closed=_list(env, "RATE_LIMIT_FAIL_CLOSED") or ("spend",),
        login_max_failures=min(_int(env, "LOGIN_MAX_FAILURES", 10, minimum=1), 100),
        login_failure_window_seconds=_int(env, "LOGIN_FAILURE_WINDOW_SECONDS", 900, minimum=60),
        login_lockout_seconds=_int(env, "LOGIN_LOCKOUT_SECONDS", 900, minimum=60),
        login_slowdown_after=_int(env, "LOGIN_SLOWDOWN_AFTER", 5, minimum=1),
        login_slowdown_ms=min(_int(env, "LOGIN_SLOWDOWN_MS", 250), 3000),
        login_ip_max_failures=_int(
            env, "LOGIN_IP_MAX_FAILURES", 100_000 if stage == LOCAL_STAGE else 100, minimum=1
        ),
        catchup_max_minutes=min(_int(env, "CATCHUP_MAX_MINUTES", 60, minimum=1), 180),
        catchup_inline_audio_max_bytes=min(
            _int(env, "CATCHUP_INLINE_AUDIO_MAX_BYTES", 3 * 1024 * 1024, minimum=1024),
            3 * 1024 * 1024,
        ),
        catchup_upload_max_bytes=min(
            _int(env, "CATCHUP_UPLOAD_MAX_BYTES", 200 * 1024 * 1024, minimum=1024), 5 * 1024**3
        ),
        catchup_upload_content_types=tuple(
            t.lower() for t in _list(env, "CATCHUP_UPLOAD_CONTENT_TYPES")
        ) or CATCHUP_CONTENT_TYPES,
        catchup_upload_url_ttl_seconds=min(
            _int(env, "CATCHUP_UPLOAD_URL_TTL_SECONDS", 300, minimum=30), 3600
        ),
        catchup_audio_url_ttl_seconds=min(
            _int(env, "CATCHUP_AUDIO_URL_TTL_SECONDS", 3600, minimum=300), 7 * 24 * 3600
        ),
        catchup_transcript_retention_days=_int(env, "CATCHUP_TRANSCRIPT_RETENTION_DAYS", 7, minimum=1),
        catchup_job_retention_days=_int(env, "CATCHUP_JOB_RETENTION_DAYS", 30, minimum=1),
        catchup_transcribe_budget_seconds=min(
            _int(env, "CATCHUP_TRANSCRIBE_BUDGET_SECONDS", 240, minimum=1), 280
        ),
        catchup_speech_models=_list(env, "ASSEMBLYAI_SPEECH_MODELS") or ("universal-2",),
        summary_model=_str(env, "OPENAI_SUMMARY_MODEL"),
        summary_max_completion_tokens=min(
            _int(env, "OPENAI_SUMMARY_MAX_TOKENS", 800, minimum=100), 4000
        ),
        summary_chunk_tokens=_int(env, "OPENAI_SUMMARY_CHUNK_TOKENS", 16000, minimum=200),
        idempotency_ttl_seconds=_int(env, "IDEMPOTENCY_TTL_SECONDS", 24 * 3600, minimum=60),
        idempotency_wait_seconds=min(_int(env, "IDEMPOTENCY_WAIT_SECONDS", 20, minimum=0), 25),
        idempotency_lock_seconds=_int(env, "IDEMPOTENCY_LOCK_SECONDS", 120, minimum=30),
        assemblyai_streaming_usd_per_hour=_usd(env, "ASSEMBLYAI_STREAMING_USD_PER_HOUR", "0.15"),
        assemblyai_transcribe_usd_per_hour=_usd(env, "ASSEMBLYAI_TRANSCRIBE_USD_PER_HOUR", "0.15"),
        openai_usd_per_1k_prompt_tokens=_usd(env, "OPENAI_USD_PER_1K_PROMPT_TOKENS", "0.00015"),
        openai_usd_per_1k_completion_tokens=_usd(env, "OPENAI_USD_PER_1K_COMPLETION_TOKENS", "0.0006"),
        stats_shards=min(_int(env, "STATS_SHARDS", 4, minimum=1), 64),
        stats_retention_days=_int(env, "STATS_RETENTION_DAYS", 400, minimum=7),
        analytics_top_users=min(_int(env, "ANALYTICS_TOP_USERS", 10, minimum=1), 100),
        cleanup_pending_checkout_hours=_int(env, "CLEANUP_PENDING_CHECKOUT_HOURS", 24, minimum=2),
        cleanup_catchup_stuck_seconds=_int(env, "CLEANUP_CATCHUP_STUCK_SECONDS", 6000, minimum=600),
        cleanup_invariant_sample=min(_int(env, "CLEANUP_INVARIANT_SAMPLE", 25), 1000),
        resource_overrides=_resource_overrides(env),
    )


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
