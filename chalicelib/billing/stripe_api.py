"""The one place that builds a stripe-python client and turns Stripe's failures into ours.

stripe-python is imported here, inside functions, so a cold start that never calls Stripe
never loads it. One client per process (per key and base address), reused by warm Lambdas.
Timeouts are short because API Gateway cuts a request at 29 s; retries are safe because
every POST we send carries an idempotency key.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from chalicelib.core.errors import ConfigurationError, Conflict, ServiceUnavailable, UpstreamError
from chalicelib.core.logs import log_event, register_secret
from chalicelib.core.settings import get_settings

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 5.0
READ_TIMEOUT_SECONDS = 15.0
MAX_NETWORK_RETRIES = 2

_lock = threading.Lock()
_clients: dict[tuple[str, str], Any] = {}


def client() -> Any:
    """The process-wide `stripe.StripeClient` for the current key and API base."""
    settings = get_settings()
    if not settings.stripe_secret_key:
        raise ConfigurationError("STRIPE_SECRET_KEY is not set: billing is unavailable")
    register_secret(settings.stripe_secret_key)
    cache_key = (settings.stripe_secret_key, settings.stripe_api_base)
    with _lock:
        existing = _clients.get(cache_key)
        if existing is None:
            import stripe

            existing = stripe.StripeClient(
                settings.stripe_secret_key,
                base_addresses={"api": settings.stripe_api_base},
                http_client=stripe.RequestsClient(
                    timeout=(CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS)
                ),
                max_network_retries=MAX_NETWORK_RETRIES,
            )
            _clients[cache_key] = existing
        return existing


def call(operation: str, request: Callable[[], Any]) -> dict[str, Any]:
    """Run one Stripe request and return the object as a plain dict.

    Stripe's failures become our errors, and never carry Stripe's text to a client.
    """
    import stripe

    try:
        return request().to_dict()
    except stripe.StripeError as error:
        log_event(
            logger,
            "stripe.request_failed",
            logging.WARNING,
            operation=operation,
            error_type=type(error).__name__,
            http_status=error.http_status,
            stripe_code=error.code,
            stripe_request_id=error.request_id,
        )
        if isinstance(error, stripe.IdempotencyError):
            raise Conflict(
                "This Idempotency-Key was already used with a different request",
                code="idempotency_conflict",
            ) from None
        if isinstance(error, (stripe.AuthenticationError, stripe.PermissionError)):
            logger.error("Stripe refused our API key: check STRIPE_SECRET_KEY")
            raise ServiceUnavailable(
                "Payments are temporarily unavailable", code="payments_unavailable"
            ) from None
        if isinstance(error, (stripe.APIConnectionError, stripe.RateLimitError)) or (
            error.http_status or 0
        ) >= 500:
            raise ServiceUnavailable(
                "Payments are temporarily unavailable", code="payments_unavailable"
            ) from None
        raise UpstreamError("The payment provider refused the request", code="payment_provider_error") from None

