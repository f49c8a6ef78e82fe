"""Brute-force defence on login: per-account and per-IP counters, slowdown and lock."""
from __future__ import annotations

import json
import time

import pytest

from chalicelib.accounts import lockout
from chalicelib.aws import store
from chalicelib.web.ratelimit import subject_hash
from tests.conftest import PASSWORD, json_headers, unique_email
from tests.security.conftest import fresh_window

WRONG = "wrong password entirely"
LOCAL_IP = "127.0.0.1"  # what chalice reports for every local caller


@pytest.fixture(autouse=True)
def unlock_local_ip(aws_endpoint):
    """An IP lock would refuse every login of the rest of the session: lift it afterwards."""
    yield
    store.ddb().delete_item(
        TableName=store.table_name("rate-limits"),
        Key=store.key(limit_key=f"lock#ip#{subject_hash(LOCAL_IP)}"),
    )


def login(client, email: str, password: str):
    return client.http.post(
        "/auth/login", headers=json_headers(), body=json.dumps({"email": email, "password": password})
    )


def lockout_env(env_override, **extra: str) -> None:
    env = {"LOGIN_MAX_FAILURES": "3", "LOGIN_SLOWDOWN_MS": "0", **extra}
    env_override(LOGIN_FAILURE_WINDOW_SECONDS=str(fresh_window()), **env)


def test_account_locks_with_the_same_generic_answer(client, new_user, env_override):
    lockout_env(env_override)
    email = new_user()["user"]["email"]
    answers = [login(client, email, WRONG) for _ in range(3)]
    assert [a.status_code for a in answers] == [401, 401, 401]
    locked = login(client, email, PASSWORD)  # the right password, during the lock
    assert locked.status_code == 401
    assert json.loads(locked.body) == json.loads(answers[0].body)
    assert "Retry-After" not in locked.headers  # no lockout oracle
    lock = store.get("rate-limits", limit_key=f"lock#account#{subject_hash(email)}")
    assert 850 < lock["locked_until"] - time.time() <= 900
    # Another account from the same IP is not locked.
    other = new_user()
    assert login(client, other["user"]["email"], PASSWORD).status_code == 200


def test_unknown_emails_lock_the_same_way(client, env_override):
    lockout_env(env_override)
    email = unique_email("nobody")
    bodies = {login(client, email, WRONG).body for _ in range(4)}
    assert len(bodies) == 1
    assert store.get("rate-limits", limit_key=f"lock#account#{subject_hash(email)}") is not None


def test_success_clears_the_account_counter(client, new_user, env_override):
    lockout_env(env_override)
    email = new_user()["user"]["email"]
    for _ in range(2):
        assert login(client, email, WRONG).status_code == 401
    assert login(client, email, PASSWORD).status_code == 200
    for _ in range(2):
        assert login(client, email, WRONG).status_code == 401
    assert login(client, email, PASSWORD).status_code == 200  # 2 + 2 fails never reached 3


def test_per_ip_failures_lock_the_ip(client, new_user, env_override):
    """Credential stuffing: many accounts, one address."""
    lockout_env(env_override, LOGIN_MAX_FAILURES="10", LOGIN_IP_MAX_FAILURES="4")
    victim = new_user()["user"]["email"]
    for _ in range(4):
        assert login(client, unique_email("stuffing"), WRONG).status_code == 401
    assert login(client, victim, PASSWORD).status_code == 401
    assert store.get("rate-limits", limit_key=f"lock#ip#{subject_hash(LOCAL_IP)}") is not None


def test_successes_do_not_use_up_the_ip_budget(client, new_user, env_override):
    lockout_env(env_override, LOGIN_IP_MAX_FAILURES="2")
    email = new_user()["user"]["email"]
    for _ in range(4):
        assert login(client, email, PASSWORD).status_code == 200


def test_slowdown_after_some_failures(client, new_user, env_override):
    lockout_env(env_override, LOGIN_MAX_FAILURES="5", LOGIN_SLOWDOWN_AFTER="2", LOGIN_SLOWDOWN_MS="300")
    email = new_user()["user"]["email"]
    durations = []
    for _ in range(4):
        started = time.monotonic()
        assert login(client, email, WRONG).status_code == 401
        durations.append(time.monotonic() - started)
    assert max(durations[:2]) < 0.3
    assert durations[2] >= 0.3 and durations[3] >= 0.6


def test_lock_lasts_the_cooling_period_then_expires(aws_endpoint, env_override):
    """Unit level, with a clock: the lock outlives the window it started in."""
    env_override(LOGIN_MAX_FAILURES="2", LOGIN_FAILURE_WINDOW_SECONDS="900", LOGIN_LOCKOUT_SECONDS="900")
    email = unique_email("clock")
    t0 = 1_700_000_100  # 800 s before the end of a 900 s window
    for offset in (0, 1):
        attempt = lockout.begin(email, None, now=t0 + offset)
        assert not attempt.refused
        lockout.failed(attempt, now=t0 + offset)
    assert lockout.begin(email, None, now=t0 + 2).refused
    assert lockout.begin(email, None, now=t0 + 850).refused  # next window, still locked
    assert not lockout.begin(email, None, now=t0 + 902).refused


def test_delay_is_capped(env_override):
    env_override(LOGIN_SLOWDOWN_MS="3000")
    attempt = lockout.Attempt(scopes=[], start=0, counts={"account": 50})
    assert attempt.delay_seconds() == 3.0
    assert lockout.Attempt(scopes=[], start=0, counts={"account": 5}).delay_seconds() == 0
