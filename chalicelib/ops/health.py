"""GET /health: is storage reachable and is the service configured?"""
from __future__ import annotations

import logging
from typing import Any

from chalicelib.aws import store
from chalicelib.core.errors import ConfigurationError
from chalicelib.core.settings import get_settings

logger = logging.getLogger(__name__)


def check() -> tuple[int, dict[str, Any]]:
    """One cheap DescribeTable on the users table; 503 when it fails."""
    try:
        settings = get_settings()
        environment = "configured"
    except ConfigurationError as error:
        logger.error("health: configuration error: %s", error)
        return 503, {"status": "unhealthy", "dynamodb": "unknown", "environment": "misconfigured"}
    try:
        store.ddb().describe_table(TableName=settings.resource("users"))
        dynamodb = "connected"
    except Exception as error:  # any failure to reach storage means unhealthy
        logger.error("health: dynamodb unreachable: %s", type(error).__name__)
        dynamodb = "unreachable"
    healthy = dynamodb == "connected"
    return (200 if healthy else 503), {
        "status": "healthy" if healthy else "unhealthy",
        "dynamodb": dynamodb,
        "environment": environment,
        "stage": settings.stage,
    }
