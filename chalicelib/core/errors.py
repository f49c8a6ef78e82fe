"""The business errors: plain exceptions with a stable machine code, a safe message and details.

They know nothing of HTTP. The web layer (chalicelib.web.errors) holds the one table that
gives each kind its status and headers, and renders the envelope the API documents; a
worker or the admin command catches the same exceptions without any web framework.

`message` and `details` are written for the caller (a details value is chosen per error:
a field name, a balance, never an exception's own text); `code` is what a program
branches on.
"""
from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A refusal or failure the caller is told about: `code`, `message` and `details`.

    `retry_after` (seconds) says when trying again may succeed. Given when raised, it is
    also one of the details (`retry_after` in the body); a class may instead declare a
    fixed `retry_after` that is only a hint to the transport (the web layer's Retry-After).
    """

    code = "bad_request"
    default_message = "Bad request"
    retry_after: int | None = None

    def __init__(
        self, message: str | None = None, *, code: str | None = None, retry_after: int | None = None,
        **details: Any,
    ) -> None:
        self.message = message or self.default_message
        if code is not None:
            self.code = code
        if retry_after is not None:
            self.retry_after = retry_after
            details["retry_after"] = retry_after
        self.details = details
        super().__init__(self.message)


class BadRequest(DomainError):
    code, default_message = "bad_request", "Bad request"


class ValidationFailed(DomainError):
    code, default_message = "validation_error", "Invalid input"


class Unauthorized(DomainError):
    code, default_message = "unauthorized", "Authentication required"


class Forbidden(DomainError):
    code, default_message = "forbidden", "Forbidden"


class Gone(DomainError):
    code, default_message = "gone", "This endpoint is no longer available"


class NotFound(DomainError):
    code, default_message = "not_found", "Not found"


class Conflict(DomainError):
    code, default_message = "conflict", "Conflict"


class PayloadTooLarge(DomainError):
    code, default_message = "payload_too_large", "Request body too large"


class InsufficientCredits(DomainError):
    code, default_message = "insufficient_credits", "Insufficient credits"


class RateLimited(DomainError):
    """Too many requests. `window_limit` is the limit of the window the caller used up
    (the web layer sends it as X-RateLimit-Limit, with X-RateLimit-Remaining 0)."""

    code, default_message = "rate_limited", "Too many requests"

    def __init__(self, message: str | None = None, *, window_limit: int | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.window_limit = window_limit


class UpstreamError(DomainError):
    """A provider failed or is unreachable; the client may retry later."""

    code, default_message = "upstream_error", "An upstream service failed"


class ServiceUnavailable(DomainError):
    code, default_message = "service_unavailable", "Service temporarily unavailable"


class StorageBusy(ServiceUnavailable):
    """DynamoDB throttled a call, cancelled a transaction over a conflict, or did not answer,
    even after botocore's retries (raised for every DynamoDB call: chalicelib.aws.store).

    Nothing is half-written (each write is one request or one transaction) and every write
    is idempotent, so the client is told to retry after RETRY_AFTER_SECONDS.
    """

    code, default_message = "storage_busy", "The service is busy; please retry"
    RETRY_AFTER_SECONDS = 1

    def __init__(self, reason: str) -> None:
        super().__init__(retry_after=self.RETRY_AFTER_SECONDS)
        self.reason = reason  # the DynamoDB error code, for logs; never sent to the client


class ConfigurationError(Exception):
    """The deployment is misconfigured: an operator must act, the client cannot.

    Not a DomainError on purpose: its text names settings and is logged for the operator,
    while the client only sees a generic `service_unavailable` (chalicelib.web.errors).
    """
