"""Operator console fixtures: private tables per module, admins made the operator's way."""
from __future__ import annotations

import json
import uuid
from typing import Any, Callable, Iterator

import pytest

from tests.billing.conftest import buyer, tap  # noqa: F401 - fixtures reused here
from tests.conftest import json_headers, post_json, restore_tables, use_private_tables


@pytest.fixture(scope="module")
def console_tables(aws_endpoint) -> Iterator[None]:
    """Tables of this module's own: the audit log and attention lists hold only its entries."""
    saved = use_private_tables(f"co{uuid.uuid4().hex[:8]}")
    yield
    restore_tables(saved)


def get_json(client, path: str, token: str | None) -> tuple[int, Any]:
    response = client.http.get(path, headers=json_headers(token))
    return response.status_code, (json.loads(response.body) if response.body else None)


@pytest.fixture
def admin(client, new_user, console_tables) -> Callable[[], dict[str, Any]]:
    """A registered user given the admin role with `python -m chalicelib.ops.admin grant-admin`."""
    from chalicelib.ops import admin as admin_command
    from chalicelib.aws.clients import client as aws_client

    def make() -> dict[str, Any]:
        session = new_user()
        admin_command.set_role(aws_client("dynamodb"), "local", session["user"]["email"], "admin")
        status, body = post_json(client, "/auth/refresh", None, {"refresh_token": session["refresh_token"]})
        assert status == 200, body
        return {**session, "token": body["token"], "user_id": session["user"]["user_id"]}

    return make


@pytest.fixture
def member(new_user, console_tables) -> Callable[[], dict[str, Any]]:
    """An ordinary registered user: `{user_id, email, token, refresh_token}`."""

    def make() -> dict[str, Any]:
        session = new_user()
        return {**session, "user_id": session["user"]["user_id"], "email": session["user"]["email"]}

    return make


def audit_entries(target: str | None = None) -> list[dict[str, Any]]:
    from chalicelib.ops import audit

    return list(audit.iter_all(target))
