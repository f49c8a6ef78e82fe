"""Lazily created, process-wide boto3 clients.

Clients are built on first use (never at import) and reused across invocations of a
warm Lambda. The endpoint comes from boto3's own configuration (`AWS_ENDPOINT_URL`,
`AWS_ENDPOINT_URL_DYNAMODB`, ...), so local runs and tests against moto's server use
exactly the same code path as production.
"""
from __future__ import annotations

import threading
from typing import Any

# botocore's standard retry mode: throttling (ThrottlingException,
# ProvisionedThroughputExceededException, RequestLimitExceeded), 5xx and timeouts are
# retried with jittered backoff, up to this many attempts in all. TransactWriteItems carries
# a ClientRequestToken, so its retry after a timeout cannot apply the write twice. A
# TransactionCanceledException is never retried by botocore. What still fails after that
# (throttling, a transaction cancelled only by conflicts or throttling, no answer) is raised
# as errors.StorageBusy (a 503 with Retry-After) by hooks on the DynamoDB client
# (chalicelib.aws.store.raise_busy_*); the ledger retries it a few times itself first.
TOTAL_MAX_ATTEMPTS = 4

_lock = threading.Lock()
_clients: dict[str, Any] = {}


def client(service: str) -> Any:
    """The process's one client for `service`.

    Exactly one, even when threads (chalice local) race on first use: clients from
    different sessions have different exception classes, so an
    `except store.ddb().exceptions.X` would miss an error raised by another instance.
    """
    cached = _clients.get(service)
    if cached is not None:
        return cached
    with _lock:  # boto3 sessions are not thread-safe while creating clients
        if service not in _clients:
            _clients[service] = _new_client(service)
        return _clients[service]


def _new_client(service: str) -> Any:
    import boto3
    from botocore.config import Config

    from chalicelib.core.settings import get_settings

    settings = get_settings()
    new = boto3.session.Session().client(
        service,
        region_name=settings.region,
        config=Config(
            connect_timeout=3,
            read_timeout=settings.aws_read_timeout_seconds,
            retries={"total_max_attempts": TOTAL_MAX_ATTEMPTS, "mode": "standard"},
            max_pool_connections=64,
            signature_version="s3v4" if service == "s3" else None,
        ),
    )
    if service == "dynamodb":
        from chalicelib.aws import store

        new.meta.events.register("after-call.dynamodb", store.raise_busy_after_call)
        new.meta.events.register("after-call-error.dynamodb", store.raise_busy_after_error)
    return new


def reset_clients() -> None:
    """Drop cached clients (tests that move the endpoint call this)."""
    with _lock:
        _clients.clear()
