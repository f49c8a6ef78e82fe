"""Fixtures for the security suite: fresh rate-limit windows, and the session-wide log capture.

Rate-limit counters are keyed by class, subject and window length, and every test here
talks from 127.0.0.1 like the rest of the suite. `fresh_window()` hands each test its own
window length, so its per-IP counters start at zero whatever other tests did before.
"""
from __future__ import annotations

import itertools
import random
import time

import pytest

from tests.security import logcapture

_windows = itertools.count(0)
_rng = random.Random()


def pytest_configure(config: pytest.Config) -> None:
    """Capture every log line of the session (this runs at collection, before any test)."""
    logcapture.install()


def pytest_collection_modifyitems(session, config, items) -> None:  # type: ignore[no-untyped-def]
    """The log check reads what the whole session logged, so it runs after every other test."""
    last = [item for item in items if "test_zz_logs_clean" in item.nodeid]
    items[:] = [item for item in items if item not in last] + last


def fresh_window(minimum_left: int = 60) -> int:
    """A window length used by no other test, whose current window has time left.

    Window lengths are about a day, so a test never straddles a window boundary unless
    it starts within `minimum_left` seconds of one; then another length is picked.
    """
    while True:
        seconds = 80_000 + next(_windows) * 7 + _rng.randrange(7)
        if seconds - int(time.time()) % seconds > minimum_left:
            return seconds


# Log files of every server the security suite started, for the final log check.
SERVER_LOGS: list[str] = []

# The limits of the server the parallel-load tests hammer (window lengths of their own).
LIMITED_WINDOW = fresh_window(minimum_left=300)
LIMITED_ENV = {
    "RATE_LIMITS": f"read:10/{LIMITED_WINDOW},register:5/{LIMITED_WINDOW}",
    "LOGIN_MAX_FAILURES": "5",
    "LOGIN_FAILURE_WINDOW_SECONDS": str(LIMITED_WINDOW),
    "LOGIN_SLOWDOWN_MS": "0",
}


@pytest.fixture(scope="session")
def limited_server(aws_endpoint, provider_env, tmp_path_factory):
    """A second `python -m devstack.run` with small limits, for tests over real HTTP."""
    from tests.conftest import start_live_server, stop_live_server

    log_path = str(tmp_path_factory.mktemp("limited") / "server.log")
    SERVER_LOGS.append(log_path)
    server = start_live_server({"AWS_ENDPOINT_URL": aws_endpoint, **provider_env, **LIMITED_ENV}, log_path)
    yield server
    stop_live_server(server)
