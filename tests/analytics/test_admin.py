"""The admin role: only the operator command grants it, and only admins see costs."""
from __future__ import annotations

import os
import subprocess
import sys

from tests.analytics.conftest import get_json, refreshed_token
from tests.conftest import unique_email

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _admin_command(*args: str) -> subprocess.CompletedProcess:
    """`python -m chalicelib.ops.admin ...` in a fresh process, against the embedded AWS (AWS_ENDPOINT_URL)."""
    env = {name: value for name, value in os.environ.items() if name != "STAGE"}
    return subprocess.run([sys.executable, "-m", "chalicelib.ops.admin", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_registering_with_an_admin_looking_email_grants_nothing(client, new_user):
    for local_part in ("admin", "root", "administrator"):
        session = new_user(f"{local_part}@{unique_email().split('@')[0]}.example.com")
        assert session["user"]["is_admin"] is False
        status, body = get_json(client, "/analytics/costs", session["token"])
        assert (status, body["code"]) == (403, "forbidden")
        status, body = get_json(client, "/auth/user", session["token"])
        assert body["user"]["is_admin"] is False


def test_costs_are_forbidden_to_users_and_need_a_token(client, new_user):
    status, body = get_json(client, "/analytics/costs?days=7", new_user()["token"])
    assert status == 403 and body["code"] == "forbidden" and body["error"]
    status, _ = get_json(client, "/analytics/costs", None)
    assert status == 401
    status, _ = get_json(client, "/analytics/costs", "not-a-jwt")
    assert status == 401


def test_grant_admin_command_reaches_existing_tokens(client, new_user):
    """The authorizer reads the role from the user item: a grant or a revocation reaches
    every token of the user (short, session or refreshed) without a new login."""
    session = new_user()
    email = session["user"]["email"]
    assert get_json(client, "/analytics/costs", session["token"])[0] == 403
    result = _admin_command("grant-admin", email.upper(), "--stage", "local")
    assert result.returncode == 0, result.stderr
    assert "user -> admin" in result.stdout and session["user"]["user_id"] in result.stdout

    for token in (session["token"], session["user"]["token"]):
        status, body = get_json(client, "/analytics/costs?days=3", token)
        assert status == 200, body
        assert len(body["daily"]) == 3
    token, refresh_token = refreshed_token(client, session["refresh_token"])
    assert get_json(client, "/auth/user", token)[1]["user"]["is_admin"] is True

    again = _admin_command("grant-admin", email, "--stage", "local")
    assert again.returncode == 0 and "unchanged" in again.stdout

    revoked = _admin_command("revoke-admin", email, "--stage", "local")
    assert revoked.returncode == 0 and "admin -> user" in revoked.stdout
    for token in (token, session["user"]["token"]):
        assert get_json(client, "/analytics/costs", token)[0] == 403


def test_admin_command_refuses_unknown_accounts_and_bad_input(aws_endpoint):
    unknown = _admin_command("grant-admin", unique_email(), "--stage", "local")
    assert unknown.returncode == 1 and "no account" in unknown.stderr
    assert _admin_command("grant-admin", "not-an-email", "--stage", "local").returncode == 2
    assert _admin_command("make-admin", unique_email(), "--stage", "local").returncode == 2
    assert _admin_command("grant-admin", unique_email()).returncode == 2  # no stage
