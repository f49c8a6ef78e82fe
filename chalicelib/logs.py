"""Structured JSON log lines with redaction.

Every line is one JSON object with the request context (request id, route, user id).
Redaction happens in the formatter, after the message and any exception text are
rendered, so nothing can slip past it: sensitive field names are masked, known secret
shapes (JWTs, Stripe keys, bearer tokens) are scrubbed, and every secret value the
process knows about (register_secret) is replaced wherever it appears.
"""
from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import threading
import time
from typing import Any

REDACTED = "[REDACTED]"

request_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar(
    "request_context", default={}
)

SENSITIVE_KEY = re.compile(
    r"pass(word)?|secret|token|authorization|api[_-]?key|signature|cookie|card|cvc|"
    r"transcript|question|answer|audio|summary|key_points|text",
    re.IGNORECASE,
)
SECRET_PATTERNS = [
    re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),  # JWT
    re.compile(r"\b(sk|rk|pk)_(live|test)_[A-Za-z0-9]{6,}"),  # Stripe keys
    re.compile(r"\bwhsec_[A-Za-z0-9]{6,}"),  # Stripe webhook secrets
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"\b\d{4}[ -]?\d{4}[ -]?\d{4}[ -]?\d{1,7}\b"),  # card-like numbers
]

_known_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Make sure this exact value is never written to a log (keys, passwords, tokens)."""
    if value and len(value) >= 6:
        with _secrets_lock:
            _known_secrets.add(value)


def scrub(text: str) -> str:
    for secret in sorted(_known_secrets, key=len, reverse=True):
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


_configured = False


def configure(level: str = "INFO") -> None:
    """Route every logger through one JSON handler (idempotent)."""
    global _configured
    if _configured:
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("botocore", "boto3", "urllib3", "stripe"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _configured = True


def log_event(logger: logging.Logger, message: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured event: `log_event(log, "stripe.event", type=..., id=...)`."""
    logger.log(level, message, extra={"fields": fields})
