"""Analytics fixtures: private tables per test, admins, known unit prices.

Why private tables: the stats counters and the cleanup's view of the world are global
(every test in the session writes usage and revenue). On tables of their own, created
from the same definitions as production, the figures a test reads are exactly the ones
it wrote, so they can be compared with hand-computed values instead of deltas.
"""
from __future__ import annotations

import json
import os
import uuid
from typing import Any, Callable, Iterator

import pytest

from tests.conftest import json_headers, post_json, restore_tables, use_private_tables
from tests.billing.conftest import buyer, tap  # noqa: F401 - fixtures reused here
from tests.catchup.conftest import stack  # noqa: F401 - the catch-up worker, driven like Lambda
from tests.streaming.conftest import caller, live  # noqa: F401 - live captions and Ask callers

# Unit prices chosen so that costs come out in round micro-dollars:
# streaming 100 micro-USD/s, transcription 50 micro-USD/s, 1 and 2 micro-USD per token.
KNOWN_PRICES = {
    "ASSEMBLYAI_STREAMING_USD_PER_HOUR": "0.36",
    "ASSEMBLYAI_TRANSCRIBE_USD_PER_HOUR": "0.18",
    "OPENAI_USD_PER_1K_PROMPT_TOKENS": "0.001",
    "OPENAI_USD_PER_1K_COMPLETION_TOKENS": "0.002",
}


@pytest.fixture
def private_tables(aws_endpoint) -> Iterator[str]:
    saved = use_private_tables(f"an{uuid.uuid4().hex[:8]}")
    yield os.environ["STATS_TABLE"]
    restore_tables(saved)


@pytest.fixture
def prices(private_tables, env_override) -> dict[str, str]:
    env_override(**KNOWN_PRICES)
    return KNOWN_PRICES


def get_json(client, path: str, token: str | None) -> tuple[int, Any]:
    response = client.http.get(path, headers=json_headers(token))
    return response.status_code, (json.loads(response.body) if response.body else None)


def top_users(client, token: str, days: int = 1) -> list[dict[str, Any]]:
    """GET /analytics/costs/top-users' list, as an admin."""
    status, body = get_json(client, f"/analytics/costs/top-users?days={days}", token)
    assert status == 200, body
    return body["top_users"]


def refreshed_token(client, refresh_token: str) -> tuple[str, str]:
    """(access token, new refresh token) from POST /auth/refresh."""
    status, body = post_json(client, "/auth/refresh", None, {"refresh_token": refresh_token})
    assert status == 200, body
    return body["token"], body["refresh_token"]


@pytest.fixture
def admin(client, new_user, private_tables) -> Callable[[], dict[str, Any]]:
    """A registered user made admin the operator's way (chalicelib.ops.admin), with a refreshed token."""
    from chalicelib.ops import admin as admin_command
    from chalicelib.aws.clients import client as aws_client

    def make() -> dict[str, Any]:
        session = new_user()
        admin_command.set_role(aws_client("dynamodb"), "local", session["user"]["email"], "admin")
        token, refresh_token = refreshed_token(client, session["refresh_token"])
        return {**session, "token": token, "refresh_token": refresh_token}

    return make
