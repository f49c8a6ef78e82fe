"""`make run` on a bare machine: its own embedded AWS, sandboxed providers, a banner that says
what is where, one log line per request, data kept across restarts, and a clean stop whichever
process gets the signal."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

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
MAKE = shutil.which("make")


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


def port_is_free(port: int) -> bool:
    """Whether a new server could listen there (as servers do, with SO_REUSEADDR: the
    closed connections' TIME_WAIT does not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Stack:
    """`make run` (or `python -m devstack.run`) in its own session, with its output in a file."""

    def __init__(self, command: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self.port = int(env["PORT"])
        self.url = f"http://127.0.0.1:{self.port}"
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        self.processes: dict[int, int] = {}
        deadline = time.monotonic() + 120
        while "Press Ctrl-C to stop." not in self.output():
            assert self.process.poll() is None, self.output()[-4000:]
            assert time.monotonic() < deadline, self.output()[-4000:]
            time.sleep(0.2)
        self.processes = {self.process.pid: self.process.pid, **descendants(self.process.pid)}

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def assert_all_gone(self) -> None:
        """Every process of the stack ended, no group left, the port free (within 15 s)."""
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (
                any(os.path.exists(f"/proc/{pid}") for pid in self.processes) or not port_is_free(self.port)):
            time.sleep(0.1)
        self.process.poll()
        left = [pid for pid in self.processes if os.path.exists(f"/proc/{pid}")]
        assert not left, f"processes left behind: {left}\n{self.output()[-3000:]}"
        for group in set(self.processes.values()):
            assert not group_exists(group), f"process group {group} still has members"
        assert port_is_free(self.port), "the API port is still taken"

    def kill(self) -> None:
        """Whatever happened in the test: nothing of this stack survives it."""
        for pid in self.processes:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.process.poll() is None:
            self.process.wait()


@pytest.fixture
def bare_environment(tmp_path):
    """The developer's shell: no AWS endpoint, no JWT secret, no provider key but OpenAI's; its
    own data folder (never the developer's .local/)."""
    env = {k: v for k, v in os.environ.items()
           if k not in PROVIDER_VARIABLES and k not in ("AWS_ENDPOINT_URL", "JWT_SECRET", "DEVSTACK_STATE_FILE")}
    env.update({"PORT": str(free_port()), "PYTHONUNBUFFERED": "1", "OPENAI_API_KEY": REAL_OPENAI_KEY,
                "LOCAL_DATA_DIR": str(tmp_path / "local-data")})
    env.pop("AUTORELOAD", None)  # exactly as `make run`: chalice local with its reloader
    return env


def _lines(output: str, **fields: object) -> list[dict]:
    """The JSON log lines whose fields include `fields`."""
    found = []
    for line in output.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if all(record.get(k) == v for k, v in fields.items()):
                found.append(record)
    return found


def test_make_run_starts_everything_explains_itself_and_ctrl_c_leaves_nothing(bare_environment, tmp_path):
    stack = Stack([sys.executable, "-m", "devstack.run"], bare_environment, tmp_path / "make-run.log")
    try:
        output, url = stack.output(), stack.url
        assert re.search(rf"^API:\s+{re.escape(url)}\b", output, re.M), output
        aws = re.search(r"^AWS:\s+(http://127\.0\.0\.1:\d+)\s+\(embedded moto\)", output, re.M)
        assert aws, output
        providers = dict(re.findall(r"^Provider:\s+(\w+)\s+(.+)$", output, re.M))
        assert {"assemblyai", "openai", "twitch", "stripe"} <= set(providers), providers
        assert providers["openai"].startswith("REAL")
        for name in ("assemblyai", "twitch", "stripe"):
            assert providers[name].startswith("sandboxed"), providers
        assert "offline_<name> is offline, unknown_<name> does not exist" in output
        dashboard = re.search(r"^Dashboard:\s+(http://127\.0\.0\.1:\d+/_fake)\b", output, re.M)
        assert dashboard and requests.get(dashboard.group(1), timeout=5).status_code == 200
        assert re.search(r"^Pay:\s+POST .*/credits/purchase, open its checkout_url, press Pay", output, re.M)
        data_dir = bare_environment["LOCAL_DATA_DIR"]
        assert re.search(rf"^Local data:\s+{re.escape(data_dir)} \(empty: first run", output, re.M), output
        assert re.search(rf"^JWT_SECRET:\s+generated and kept in {re.escape(data_dir)}/jwt-secret", output, re.M)
        assert "make admin EMAIL=" in output and "make walkthrough" in output and "docs/sandbox.md" in output
        assert "JWT_SECRET is not set" not in output  # the secret is made before any settings warn
        assert REAL_OPENAI_KEY not in output

        health = requests.get(url + "/health", timeout=10)
        assert health.status_code == 200 and health.json()["status"] == "healthy"
        assert requests.get(aws.group(1), timeout=5).status_code < 500  # the embedded AWS answers
        email = unique_email("makerun")
        registered = requests.post(url + "/auth/register", timeout=30, json={"email": email, "password": PASSWORD})
        assert registered.status_code == 201, registered.text
        user = requests.get(url + "/auth/user", timeout=10,
                            headers={"Authorization": "Bearer " + registered.json()["token"]})
        assert user.status_code == 200 and user.json()["user"]["email"] == email
        assert requests.get(url + "/no/such/path", timeout=10).status_code in (403, 404)
        twitch = requests.get(url + "/twitch/stream?channel=anyone_at_all", timeout=10,
                              headers={"Authorization": "Bearer " + registered.json()["token"]})
        assert twitch.status_code == 200 and twitch.json()["live"] is True
        time.sleep(0.5)

        log = stack.output()
        assert len(_lines(log, message="request", path="/auth/register")) == 1
        assert len(_lines(log, message="request", path="/auth/user")) == 1
        assert len(_lines(log, message="request", path="/no/such/path", logger="gateway")) == 1
        assert not re.search(r'"(GET|POST) /\S* HTTP/1\.1" \d{3}', log), "the server's own access line is back"
        assert "Restarting local dev server" not in log  # saving local data must not trigger the reloader

        children = stack.processes
        assert len(children) >= 3, "chalice local (reloader and worker) should run as child processes"
        os.killpg(stack.process.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        assert stack.process.wait(timeout=30) == 0
        assert "Stopped." in stack.output()
        assert re.search(r"^Saved local data: \d+ items", stack.output(), re.M)
        stack.assert_all_gone()
    finally:  # never leave a stray server behind, even when an assertion failed
        stack.kill()


def _make_run(env: dict[str, str], log_path: Path) -> Stack:
    """The real `make run`, with this interpreter and without the venv step."""
    return Stack([MAKE, "--no-print-directory", "run", f"PY={sys.executable}", "STAMP="], env, log_path)


def _make(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([MAKE, "--no-print-directory", *args, f"PY={sys.executable}", "STAMP="], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.skipif(MAKE is None, reason="make is not installed")
def test_data_and_tokens_survive_restarts_until_make_reset_whichever_process_gets_the_signal(
        bare_environment, tmp_path):
    env = bare_environment
    email = unique_email("kept")
    # Run 1: register; SIGINT to make alone (as `kill -INT <make>`): make dies without passing
    # it on, and make run notices its parent is gone.
    first = _make_run(env, tmp_path / "run1.log")
    try:
        registered = requests.post(first.url + "/auth/register", timeout=30, json={"email": email, "password": PASSWORD})
        assert registered.status_code == 201, registered.text
        token, user_id = registered.json()["token"], registered.json()["user"]["user_id"]
        os.kill(first.process.pid, signal.SIGINT)
        first.process.wait(timeout=30)
        first.assert_all_gone()
        assert re.search(r"^Saved local data: [1-9]\d* items", first.output(), re.M), first.output()[-3000:]
    finally:
        first.kill()

    # Run 2: the same token still works, the account and its credits are back; `make admin
    # EMAIL=...` needs nothing but make run's own data folder; SIGTERM to the python process.
    second = _make_run(env, tmp_path / "run2.log")
    try:
        assert re.search(r"^Local data:.*\(restored [1-9]\d* items", second.output(), re.M), second.output()
        assert re.search(r"^JWT_SECRET:\s+kept in ", second.output(), re.M)
        user = requests.get(second.url + "/auth/user", headers=_bearer(token), timeout=10)
        assert user.status_code == 200, user.text
        assert user.json()["user"]["user_id"] == user_id and user.json()["user"]["credits_balance"] == 200
        admin_env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"),
                     "LOCAL_DATA_DIR": env["LOCAL_DATA_DIR"]}
        granted = _make(admin_env, "admin", f"EMAIL={email}")
        assert granted.returncode == 0, granted.stdout + granted.stderr
        assert "role user -> admin" in granted.stdout
        login = requests.post(second.url + "/auth/login", json={"email": email, "password": PASSWORD}, timeout=30)
        assert login.status_code == 200, login.text
        admin_page = requests.get(second.url + "/admin/api/users", params={"q": email}, timeout=10,
                                  headers=_bearer(login.json()["token"]))
        assert admin_page.status_code == 200, admin_page.text
        python = [pid for pid, _ in descendants(second.process.pid).items()
                  if "devstack.run" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")]
        assert len(python) == 1
        os.kill(python[0], signal.SIGTERM)
        second.process.wait(timeout=30)
        second.assert_all_gone()
    finally:
        second.kill()

    refused = _make(env, "reset")
    assert refused.returncode == 0, refused.stdout + refused.stderr
    assert not os.path.exists(env["LOCAL_DATA_DIR"])

    # Run 3, after `make reset`: nothing is back, the old token is refused; SIGTERM to make.
    third = _make_run(env, tmp_path / "run3.log")
    try:
        assert re.search(r"^Local data:.*\(empty: first run or after `make reset`\)", third.output(), re.M)
        assert requests.get(third.url + "/auth/user", headers=_bearer(token), timeout=10).status_code == 401
        login = requests.post(third.url + "/auth/login", json={"email": email, "password": PASSWORD}, timeout=30)
        assert login.status_code == 401
        os.kill(third.process.pid, signal.SIGTERM)
        third.process.wait(timeout=30)
        third.assert_all_gone()
    finally:
        third.kill()


def test_make_reset_refuses_while_make_run_uses_the_folder(tmp_path):
    """The folder of a live `make run` is not wiped under it (its next save would recreate it)."""
    folder = tmp_path / "local-data"
    folder.mkdir()
    (folder / "devstack.json").write_text(json.dumps({"pid": os.getpid(), "env": {}}))
    result = subprocess.run([sys.executable, "-m", "devstack.local_data", "reset"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, env={**os.environ, "LOCAL_DATA_DIR": str(folder)})
    assert result.returncode == 1 and "stop it first" in result.stderr
    assert (folder / "devstack.json").exists()
