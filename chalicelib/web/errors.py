"""Domain errors as HTTP answers: the one table of statuses, the headers, the envelope.

The published extension reads `body.error || body.message` as text, so the envelope is
flat: `{"error": "<readable text>", "message": "<same text>", "code": "<stable code>",
...details}`. An exception's own text or a stack trace never reaches a client.

Plain Python (no chalice): the middleware renders these answers, and Idempotency-Key
stores them (web.idempotency).
"""
from __future__ import annotations

import logging
from typing import Any, NamedTuple

from chalicelib.core import errors

logger = logging.getLogger("api")

# Each kind of domain error's status; a subclass answers as its nearest listed ancestor
# (StorageBusy as ServiceUnavailable, a provider's OutcomeUnknown as UpstreamError).
STATUS: dict[type[errors.DomainError], int] = {
    errors.BadRequest: 400,
    errors.Unauthorized: 401,
    errors.InsufficientCredits: 402,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.Gone: 410,
    errors.PayloadTooLarge: 413,
    errors.ValidationFailed: 422,
    errors.RateLimited: 429,
    errors.UpstreamError: 502,
    errors.ServiceUnavailable: 503,
}


class Answer(NamedTuple):
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


def envelope(code: str, message: str, **details: Any) -> dict[str, Any]:
    return {"error": message, "message": message, "code": code, **details}


def status_of(error: errors.DomainError) -> int:
    for kind in type(error).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 400  # a DomainError raised as itself: the caller's request was refused


def headers_of(error: errors.DomainError) -> dict[str, str]:
    """Retry-After from the error's retry hint; a rate limit's window as X-RateLimit-*."""
    headers: dict[str, str] = {}
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    if isinstance(error, errors.RateLimited) and error.window_limit is not None:
        headers["X-RateLimit-Limit"] = str(error.window_limit)
        headers["X-RateLimit-Remaining"] = "0"
    return headers


def answer(error: errors.DomainError | errors.ConfigurationError) -> Answer:
    """A domain error's answer. A configuration error's text names settings: the operator
    reads it in the log, the client gets a generic 503."""
    if isinstance(error, errors.ConfigurationError):
        logger.error("configuration error: %s", error)
        return Answer(503, envelope("service_unavailable", "Service is not configured"), {})
    return Answer(status_of(error), envelope(error.code, error.message, **error.details), headers_of(error))


def internal_error() -> Answer:
    return Answer(500, envelope("internal_error", "Internal error"), {})
