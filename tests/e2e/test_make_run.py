"""`make run` on a bare machine: its own embedded AWS, sandboxed providers, clean Ctrl-C."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
import requests

from tests.conftest import PASSWORD, free_port, unique_email

pytestmark = pytest.mark.e2e

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROVIDER_VARIABLES = (
    "ASSEMBLYAI_API_KEY", "ASSEMBLYAI_API_BASE", "ASSEMBLYAI_STREAMING_API_BASE",
    "OPENAI_API_KEY", "OPENAI_API_BASE", "STRIPE_SECRET_KEY", "STRIPE_API_BASE",
    "STRIPE_WEBHOOK_SECRET", "TWITCH_CLIENT_ID", "TWITCH_CLIENT_SECRET", "TWITCH_API_BASE",
    "TWITCH_AUTH_BASE",
)
REAL_OPENAI_KEY = "sk-this-key-is-set-so-openai-counts-as-real"


def _proc_table() -> dict[int, tuple[int, int]]:
    """{pid: (ppid, pgid)} for every process, from /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        table[int(entry)] = (int(fields[1]), int(fields[2]))
    return table


def descendants(root: int) -> dict[int, int]:
    """{pid: pgid} of every process below `root`."""
    table = _proc_table()
    found, frontier = {}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, pgid) in table.items():
            if ppid == parent and pid not in found:
                found[pid] = pgid
                frontier.append(pid)
    return found


def group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def bare_environment(tmp_path):
    """The developer's shell: no AWS endpoint, no JWT secret, no provider key but OpenAI's."""
    env = {k: v for k, v in os.environ.items()
           if k not in PROVIDER_VARIABLES and k not in ("AWS_ENDPOINT_URL", "JWT_SECRET")}
    env.update({"PORT": str(free_port()), "PYTHONUNBUFFERED": "1", "OPENAI_API_KEY": REAL_OPENAI_KEY})
    env.pop("AUTORELOAD", None)  # exactly as `make run`: chalice local with its reloader
    return env


def test_make_run_starts_everything_and_ctrl_c_leaves_nothing(bare_environment, tmp_path):
    log_path = tmp_path / "make-run.log"
    port = bare_environment["PORT"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "devstack.run"], cwd=ROOT,
                                   env=bare_environment, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    pgid = process.pid
    children: dict[int, int] = {}
    try:
        deadline = time.monotonic() + 90
        output = ""
        while "Press Ctrl-C to stop." not in output:
            assert process.poll() is None, log_path.read_text()[-4000:]
            assert time.monotonic() < deadline, output[-4000:]
            time.sleep(0.2)
            output = log_path.read_text(errors="replace")

        url = f"http://127.0.0.1:{port}"
        assert re.search(rf"^API:\s+{re.escape(url)}\b", output, re.M), output
        aws = re.search(r"^AWS:\s+(http://127\.0\.0\.1:\d+)\s+\(embedded moto\)", output, re.M)
        assert aws, output
        providers = dict(re.findall(r"^Provider:\s+(\w+)\s+(.+)$", output, re.M))
        assert {"assemblyai", "openai", "twitch", "stripe"} <= set(providers), providers
        assert providers["openai"].startswith("REAL")
        for name in ("assemblyai", "twitch", "stripe"):
            assert providers[name].startswith("sandboxed"), providers
        assert "JWT_SECRET is not set" in output  # the local stage generated one, and said so
        assert REAL_OPENAI_KEY not in output

        health = requests.get(url + "/health", timeout=10)
        assert health.status_code == 200 and health.json()["status"] == "healthy"
        assert requests.get(aws.group(1), timeout=5).status_code < 500  # the embedded AWS answers
        email = unique_email("makerun")
        registered = requests.post(url + "/auth/register", timeout=30,
                                   json={"email": email, "password": PASSWORD})
        assert registered.status_code == 201, registered.text
        user = requests.get(url + "/auth/user", timeout=10,
                            headers={"Authorization": "Bearer " + registered.json()["token"]})
        assert user.status_code == 200 and user.json()["user"]["email"] == email

        children = descendants(process.pid)
        assert children, "chalice local should run as a child process"
        os.killpg(pgid, signal.SIGINT)  # what Ctrl-C in the terminal does
        assert process.wait(timeout=30) == 0
        assert "Stopped." in log_path.read_text(errors="replace")

        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") for p in children):
            time.sleep(0.1)
        assert not [p for p in children if os.path.exists(f"/proc/{p}")], "processes left behind"
        for group in {pgid, *children.values()}:
            assert not group_exists(group), f"process group {group} still has members"
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/health", timeout=2)
    finally:  # never leave a stray server behind, even when an assertion failed
        if process.poll() is None:
            os.killpg(pgid, signal.SIGKILL)
            process.wait()
        for group in set(children.values()) - {pgid}:
            if group_exists(group):
                os.killpg(group, signal.SIGKILL)
