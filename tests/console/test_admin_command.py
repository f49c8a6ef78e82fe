"""CLI parity: `python -m chalicelib.ops.admin` runs the console's actions against `make run`
with no environment of its own (it reads the stack's endpoint from the state file)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import requests

from tests.conftest import register_over_http

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _command(state_file: str | None, *args: str) -> subprocess.CompletedProcess:
    """The operator command with a bare environment: no AWS endpoint, keys, stage or tables."""
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    env["DEVSTACK_STATE_FILE"] = state_file or os.path.join(ROOT, ".local", "no-such-state.json")
    return subprocess.run([sys.executable, "-m", "chalicelib.ops.admin", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_command_finds_the_running_stack_and_grants_with_a_reason(live_server):
    session = register_over_http(live_server.url, "cli")
    user_id, email = session["user"]["user_id"], session["user"]["email"]

    found = _command(live_server.state_file, "find", email)
    assert found.returncode == 0, found.stderr
    assert [item["user_id"] for item in json.loads(found.stdout)["items"]] == [user_id]

    granted = _command(live_server.state_file, "grant", user_id, "25", "--reason", "support ticket 42",
                       "--idempotency-key", "t42")
    assert granted.returncode == 0, granted.stderr
    assert json.loads(granted.stdout)["balance_after"] == 225
    again = _command(live_server.state_file, "grant", user_id, "25", "--reason", "support ticket 42",
                     "--idempotency-key", "t42")
    assert json.loads(again.stdout)["replayed"] is True
    balance = requests.get(live_server.url + "/credits/balance", timeout=10,
                           headers={"Authorization": f"Bearer {session['token']}"}).json()["balance"]
    assert balance == 225

    log = json.loads(_command(live_server.state_file, "audit", "--target", user_id).stdout)
    grants = [entry for entry in log["items"] if entry["action"] == "credits.grant"]
    assert len(grants) == 2 and all(entry["actor"].startswith("cli:") for entry in grants)
    assert grants[0]["reason"] == "support ticket 42"


def test_bad_input_and_unknown_users_get_an_error_and_write_nothing(live_server):
    session = register_over_http(live_server.url, "cli")
    user_id = session["user"]["user_id"]
    for args, code in (
        (("grant", user_id, "-5", "--reason", "negative"), 2),
        (("grant", user_id, "100001", "--reason", "absurd"), 2),
        (("grant", user_id, "5", "--reason", ""), 2),
        (("deduct", user_id, "500", "--reason", "more than the balance"), 3),
        (("grant", "0" * 32, "5", "--reason", "nobody"), 1),
        (("suspend", "0" * 32, "--reason", "nobody"), 1),
    ):
        result = _command(live_server.state_file, *args)
        assert result.returncode == code, (args, result.stdout, result.stderr)
        assert result.stderr.strip()
    shown = json.loads(_command(live_server.state_file, "show", user_id).stdout)
    assert shown["balance"]["balance"] == 200 and shown["invariant"]["ok"] is True


def test_without_a_running_stack_or_a_stage_it_says_so():
    result = _command(None, "find", "someone@example.com")
    assert result.returncode == 2
    assert "--stage is required" in result.stderr
