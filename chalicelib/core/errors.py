"""One error hierarchy and one JSON envelope for every failure the API reports.

The published extension reads `body.error || body.message` as text, so the envelope is
flat: `{"error": "<readable text>", "message": "<same text>", "code": "<stable code>",
...details}`. Details are deliberately chosen per error (a field name, a balance); an
exception's own text or a stack trace never reaches a client.
"""
from __future__ import annotations

from typing import Any

from chalice.app import ChaliceUnhandledError


class ApiError(ChaliceUnhandledError):
    """An error with an HTTP status, a stable machine code and a safe message.

    Subclassing ChaliceUnhandledError makes Chalice re-raise it to our HTTP middleware
    (chalicelib.web.middleware.handle), which renders the envelope, instead of turning it into a 500.
    """

    status = 400
    code = "bad_request"
    default_message = "Bad request"

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        **details: Any,
    ) -> None:
        self.message = message or self.default_message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = headers or {}
        self.details = details
        super().__init__(self.message)

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "message": self.message, "code": self.code, **self.details}


class BadRequest(ApiError):
    status, code, default_message = 400, "bad_request", "Bad request"


class ValidationFailed(ApiError):
    status, code, default_message = 422, "validation_error", "Invalid input"


class Unauthorized(ApiError):
    status, code, default_message = 401, "unauthorized", "Authentication required"


class Forbidden(ApiError):
    status, code, default_message = 403, "forbidden", "Forbidden"


class Gone(ApiError):
    status, code, default_message = 410, "gone", "This endpoint is no longer available"


class NotFound(ApiError):
    status, code, default_message = 404, "not_found", "Not found"


class Conflict(ApiError):
    status, code, default_message = 409, "conflict", "Conflict"


class PayloadTooLarge(ApiError):
    status, code, default_message = 413, "payload_too_large", "Request body too large"


class InsufficientCredits(ApiError):
    status, code, default_message = 402, "insufficient_credits", "Insufficient credits"


class RateLimited(ApiError):
    status, code, default_message = 429, "rate_limited", "Too many requests"


class UpstreamError(ApiError):
    """A provider failed or is unreachable; the client may retry later."""

    status, code, default_message = 502, "upstream_error", "An upstream service failed"


class ServiceUnavailable(ApiError):
    status, code, default_message = 503, "service_unavailable", "Service temporarily unavailable"


class StorageBusy(ServiceUnavailable):
    """DynamoDB throttled a call, cancelled a transaction over a conflict, or did not answer,
    even after botocore's retries (raised for every DynamoDB call: chalicelib.aws.store).

    Nothing is half-written (each write is one request or one transaction) and every write
    is idempotent, so the client is told to retry: 503 with Retry-After.
    """

    code, default_message = "storage_busy", "The service is busy; please retry"
    RETRY_AFTER_SECONDS = 1

    def __init__(self, reason: str) -> None:
        super().__init__(headers={"Retry-After": str(self.RETRY_AFTER_SECONDS)},
                         retry_after=self.RETRY_AFTER_SECONDS)
        self.reason = reason  # the DynamoDB error code, for logs; never sent to the client


class ConfigurationError(ChaliceUnhandledError):
    """The deployment is misconfigured: an operator must act, the client cannot.

    Not an ApiError on purpose: its text names settings and is logged for the operator,
    while the client only sees a generic 503. A ChaliceUnhandledError so that one raised
    inside a view reaches the middleware (503) instead of becoming Chalice's generic 500.
    """
