"""Lazily created, process-wide boto3 clients.

Clients are built on first use (never at import) and reused across invocations of a
warm Lambda. The endpoint comes from boto3's own configuration (`AWS_ENDPOINT_URL`,
`AWS_ENDPOINT_URL_DYNAMODB`, ...), so local runs and tests against moto's server use
exactly the same code path as production.
"""
from __future__ import annotations

import threading
from typing import Any

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

    from chalicelib.settings import get_settings

    return boto3.session.Session().client(
        service,
        region_name=get_settings().region,
        config=Config(
            connect_timeout=3,
            read_timeout=10,
            retries={"max_attempts": 3, "mode": "standard"},
            max_pool_connections=64,
            signature_version="s3v4" if service == "s3" else None,
        ),
    )


def reset_clients() -> None:
    """Drop cached clients (tests that move the endpoint call this)."""
    with _lock:
        _clients.clear()
