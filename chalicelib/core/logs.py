"""Structured JSON log lines with redaction.

Every line is one JSON object with the request context (request id, route, user id).
Redaction happens in the formatter, after the message and any exception text are
rendered, so nothing can slip past it: sensitive field names are masked, known secret
shapes (JWTs, Stripe keys, bearer tokens) are scrubbed, and every secret value the
process knows about (register_secret) is replaced wherever it appears.
"""
from __future__ import annotations

import contextvars
import dataclasses
import json
import logging
import os
import re
import sys
import threading
import time
from collections import OrderedDict
from typing import Any

REDACTED = "[REDACTED]"

request_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar(
    "request_context", default={}
)

SENSITIVE_KEY = re.compile(
    r"pass(word)?|secret|token|authorization|api[_-]?key|private[_-]?key|signature|cookie|"
    r"credential|card|cvc|cvv|transcript|question|answer|audio|summary|key_points|text|"
    r"messages|prompt|^content$",
    re.IGNORECASE,
)
SECRET_PATTERNS = [
    re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),  # JWT
    re.compile(r"\b(sk|rk|pk)_(live|test)_[A-Za-z0-9]{6,}"),  # Stripe keys
    re.compile(r"\bwhsec_[A-Za-z0-9]{6,}"),  # Stripe webhook secrets
    re.compile(r"\bv1=[0-9a-f]{64}"),  # a Stripe-Signature's HMAC
    re.compile(r"\bsk-[A-Za-z0-9_-]{20,}"),  # OpenAI keys (sk-..., sk-proj-...)
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"(?i)\bbasic\s+[A-Za-z0-9+/=]{8,}"),  # HTTP basic credentials
    re.compile(r"\b\d{4}[ -]?\d{4}[ -]?\d{4}[ -]?\d{1,7}\b"),  # card-like numbers
]

# Settings (and SSM) secrets stay registered for the life of the process; per-request
# values (passwords, tokens) are kept for the most recent MAX_RECENT_SECRETS, so a warm
# Lambda's list neither grows without bound nor slows every log line down.
MAX_RECENT_SECRETS = 2000
_pinned_secrets: set[str] = set()
_recent_secrets: "OrderedDict[str, None]" = OrderedDict()
_ordered_secrets: list[str] | None = None
_secrets_lock = threading.Lock()
_registered_settings: set[int] = set()


def register_secret(value: str | None, pinned: bool = False) -> None:
    """Make sure this exact value is never written to a log (keys, passwords, tokens)."""
    global _ordered_secrets
    if not value or len(value) < 6:
        return
    with _secrets_lock:
        if pinned:
            _pinned_secrets.add(value)
        else:
            _recent_secrets[value] = None
            _recent_secrets.move_to_end(value)
            while len(_recent_secrets) > MAX_RECENT_SECRETS:
                _recent_secrets.popitem(last=False)
        _ordered_secrets = None


def register_settings_secrets(settings: Any) -> None:
    """Pin every secret field of a Settings object (by its convention: `repr=False` strings)."""
    if id(settings) in _registered_settings:
        return
    for spec in dataclasses.fields(settings):
        if spec.repr:
            continue
        value = getattr(settings, spec.name)
        for item in (value if isinstance(value, (tuple, list)) else (value,)):
            if isinstance(item, str):
                register_secret(item, pinned=True)
    _registered_settings.add(id(settings))


def _secrets_longest_first() -> list[str]:
    global _ordered_secrets
    ordered = _ordered_secrets
    if ordered is None:
        with _secrets_lock:
            ordered = sorted(_pinned_secrets | set(_recent_secrets), key=len, reverse=True)
            _ordered_secrets = ordered
    return ordered


def scrub(text: str) -> str:
    for secret in _secrets_longest_first():
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern in SECRET_PATTERNS:
        text = pattern.sub(REDACTED, text)
    return text


def redact(value: Any, key: str = "") -> Any:
    """Mask sensitive fields by name, recursively, and scrub every string."""
    if key and SENSITIVE_KEY.search(key) and isinstance(value, (str, dict, list)) and value:
        return REDACTED  # numbers (token counts, durations) are not secrets
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return scrub(value)
    return value


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(request_context.get())
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(redact(line), default=str, ensure_ascii=False)


class _CurrentStream(logging.StreamHandler):
    """Writes to whatever sys.stdout/sys.stderr is at emit time (a test's capture included)."""

    def __init__(self, stream_name: str) -> None:
        super().__init__()
        self.stream_name = stream_name

    @property  # type: ignore[override]
    def stream(self):  # type: ignore[no-untyped-def]
        return getattr(sys, self.stream_name)

    @stream.setter
    def stream(self, value) -> None:  # type: ignore[no-untyped-def]
        pass  # logging.StreamHandler.__init__ assigns one; ours is always the current one


_configured = False


def configure(level: str | None = None, stream_name: str = "stdout") -> None:
    """Route every logger through one JSON handler (idempotent).

    Needs no settings (LOG_LEVEL is read from the environment), so it can be the first
    thing every entry point does, before settings or secrets are loaded and log anything.
    """
    global _configured
    if _configured:
        return
    handler = _CurrentStream(stream_name)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):  # the Lambda runtime's plain-text handler included
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel((level or os.environ.get("LOG_LEVEL") or "INFO").upper())
    for noisy in ("botocore", "boto3", "urllib3", "stripe", "werkzeug"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _configured = True


def start_invocation(function: str, context: Any = None, **fields: Any) -> None:
    """The first line of every Lambda entry point: JSON logs on, context of this invocation.

    `function` names the Lambda (api_handler, jwt_auth, cleanup, catchup_worker); the
    Lambda context, when there is one, gives the invocation's request id.
    """
    configure()
    request_id = getattr(context, "aws_request_id", None)
    request_context.set({"function": function, **({"request_id": request_id} if request_id else {}), **fields})


def log_event(logger: logging.Logger, message: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured event: `log_event(log, "stripe.event", type=..., id=...)`."""
    logger.log(level, message, extra={"fields": fields})
