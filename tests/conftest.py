"""Shared fixtures: the embedded AWS (moto's server over HTTP), the Chalice test client,
and the real local server for end-to-end tests.

The code under test reaches the embedded AWS only through `AWS_ENDPOINT_URL`, exactly as
`make run` does; there is no test-only code path.
"""
from __future__ import annotations

import atexit
import os
import shutil
import socket
import tempfile
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator, Mapping, TypeVar

import pytest

T = TypeVar("T")

ORIGIN = "chrome-extension://abcdefghijklmnopabcdefghijklmnop"
OTHER_ORIGIN = "chrome-extension://zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"
PASSWORD = "correct horse battery staple"
JWT_SECRET = "test-jwt-secret-" + "s3cr3t" * 8

TEST_ENV = {
    "STAGE": "local",
    "JWT_SECRET": JWT_SECRET,
    "BCRYPT_ROUNDS": "4",
    "ALLOWED_ORIGINS": ORIGIN,
    "SIGNUP_CREDITS": "200",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "LOG_LEVEL": "INFO",
    # Where a `make run` started by a test keeps its data: never the developer's own `.local/`.
    "LOCAL_DATA_DIR": tempfile.mkdtemp(prefix="local-data-"),
}
atexit.register(shutil.rmtree, TEST_ENV["LOCAL_DATA_DIR"], True)
for _name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
    os.environ.pop(_name, None)
os.environ.update(TEST_ENV)

# Every entry point configures JSON logging on first use, replacing the root logger's handlers
# (the Lambda runtime's). Done once here, before any test, so it never removes the handler
# of a test's `caplog` in whichever test happens to run first in a worker.
from chalicelib.core import logs as _logs  # noqa: E402

_logs.configure()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}@example.com"


def reset_process_caches() -> None:
    from chalicelib.aws.clients import reset_clients
    from chalicelib.core.settings import reset_settings

    reset_settings()
    reset_clients()


def set_env(values: Mapping[str, str]) -> dict[str, str | None]:
    """Apply environment variables and drop cached settings; returns what to restore."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    reset_process_caches()
    return previous


def restore_env(previous: Mapping[str, str | None]) -> None:
    """Undo one `set_env` (a variable that was not set is removed again)."""
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    reset_process_caches()


@pytest.fixture
def env_override() -> Iterator[Callable[..., None]]:
    """env_override(NAME=value, ...) changes settings for the rest of one test; restored afterwards."""
    applied: list[dict[str, str | None]] = []

    def apply(**values: str) -> None:
        applied.append(set_env(values))

    yield apply
    for previous in reversed(applied):
        restore_env(previous)


def use_private_tables(prefix: str) -> dict[str, str | None]:
    """Point every table at `<prefix>-<suffix>` (created if missing); returns what to restore.

    Private tables, created from the same definitions as production, hold only what one
    test (or module) wrote: global figures can be compared with exact values, and moto's
    transactions stay fast whatever the rest of the session stored.
    """
    from chalicelib.aws import resources
    from chalicelib.credits import ledger
    from chalicelib.core.settings import get_settings
    from infra.bootstrap import ensure_tables

    saved = set_env({var: f"{prefix}-{suffix}" for var, suffix in resources.RESOURCE_ENV_VARS.items()
                     if var.endswith("_TABLE")})
    ledger.clear_caches()
    ensure_tables(get_settings())
    return saved


def restore_tables(saved: Mapping[str, str | None]) -> None:
    """Back to the session's tables after `use_private_tables`."""
    from chalicelib.credits import ledger

    restore_env(saved)
    ledger.clear_caches()


def usage_rows(user_id: str, service_type: str | None = None) -> list[dict[str, Any]]:
    """A user's usage rows (only those of `service_type`, if given)."""
    from chalicelib.aws import store

    rows = store.query_all({
        "TableName": store.table_name("usage"),
        "KeyConditionExpression": "user_id = :u",
        "ExpressionAttributeValues": store.values(u=user_id),
    })
    return [row for row in rows if service_type is None or row.get("service_type") == service_type]


def balance(user_id: str) -> int:
    """The balance as stored on the user item."""
    from chalicelib.aws import store

    user = store.get("users", user_id=user_id)
    assert user is not None
    return int(user["credits_balance"])


def assert_books_balance(*user_ids: str) -> None:
    """The ledger explains each user's balance from the records."""
    from chalicelib.credits import ledger

    for user_id in user_ids:
        report = ledger.check_invariant(user_id)
        assert report.ok, report


def at_once(count: int, action: Callable[[], T], timeout: float = 30) -> list[T]:
    """Call `action` from `count` threads released together; their results, in thread order.

    An exception raised in a thread is raised here.
    """
    barrier = threading.Barrier(count)

    def run(_: int) -> T:
        barrier.wait(timeout)
        return action()

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


@pytest.fixture(scope="session")
def aws_endpoint():
    """moto's server on loopback with every table, bucket and queue created."""
    from devstack.embedded_aws import EmbeddedAws

    with EmbeddedAws() as aws:
        os.environ["AWS_ENDPOINT_URL"] = aws.url
        reset_process_caches()
        from chalicelib.core.settings import get_settings
        from infra.bootstrap import bootstrap

        bootstrap(get_settings())
        yield aws.url
        os.environ.pop("AWS_ENDPOINT_URL", None)
        reset_process_caches()


@pytest.fixture
def settings(aws_endpoint):
    from chalicelib.core.settings import get_settings

    return get_settings()


@pytest.fixture
def client(aws_endpoint):
    """chalice.test.Client over the real app, talking to the embedded AWS."""
    from chalice.test import Client

    import app

    with Client(app.app, stage_name="local") as test_client:
        yield test_client


def json_headers(token: str | None = None, origin: str | None = None, **extra: str) -> dict[str, str]:
    headers = {"Content-Type": "application/json", **extra}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if origin:
        headers["Origin"] = origin
    return headers


def post_json(client, path: str, token: str | None, body: Any = None, **headers: str) -> tuple[int, Any]:
    """POST through chalice's test client: (status, parsed body or None)."""
    import json

    response = client.http.post(
        path, headers=json_headers(token, **headers), body=json.dumps(body if body is not None else {})
    )
    return response.status_code, (json.loads(response.body) if response.body else None)


@pytest.fixture
def captured_logs(caplog):
    """The structured events (message, fields) logged during one test."""
    import logging

    caplog.set_level(logging.INFO)

    def events(name: str) -> list[dict]:
        return [
            getattr(record, "fields", {}) for record in caplog.records if record.getMessage() == name
        ]

    return events


def register_over_http(base_url: str, prefix: str = "user", **fields: str) -> dict:
    """Register a fresh user on a running server over real HTTP; returns the register body."""
    import requests

    response = requests.post(base_url + "/auth/register", timeout=30,
                             json={"email": unique_email(prefix), "password": PASSWORD, **fields})
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
def new_user(client):
    """Register a fresh user through the API; returns the register response body."""
    import json

    def make(email: str | None = None, password: str = PASSWORD) -> dict:
        response = client.http.post(
            "/auth/register",
            headers=json_headers(),
            body=json.dumps({"email": email or unique_email(), "password": password, "name": "Test"}),
        )
        assert response.status_code == 201, response.body
        return json.loads(response.body)

    return make


# --- fake providers (real HTTP on loopback) and the real local server -----------------

ASSEMBLYAI_KEY = "test-assemblyai-key-0123456789"
OPENAI_KEY = "test-openai-key-0123456789"
TWITCH_CLIENT_ID = "test-twitch-client-id"
TWITCH_CLIENT_SECRET = "test-twitch-client-secret-0123456789"
STRIPE_KEY = "sk_test_fakekey0123456789abcdef"
STRIPE_WEBHOOK_SECRET = "whsec_testsecret0123456789abcdef"


@pytest.fixture(scope="session")
def fake_assemblyai():
    from devstack.fakes import AssemblyAIFake

    with AssemblyAIFake(api_key=ASSEMBLYAI_KEY) as fake:
        yield fake


@pytest.fixture(scope="session")
def fake_openai():
    from devstack.fakes import OpenAIFake

    with OpenAIFake(api_key=OPENAI_KEY) as fake:
        yield fake


@pytest.fixture(scope="session")
def fake_twitch():
    from devstack.fakes import TwitchFake

    with TwitchFake(client_id=TWITCH_CLIENT_ID, client_secret=TWITCH_CLIENT_SECRET) as fake:
        yield fake


@pytest.fixture(scope="session")
def fake_stripe():
    """Fake Stripe; tests point `webhook_url` at the server they exercise (None: no delivery)."""
    from devstack.fakes import StripeFake

    with StripeFake(api_key=STRIPE_KEY, webhook_secret=STRIPE_WEBHOOK_SECRET) as fake:
        yield fake


@pytest.fixture
def stripe_fake(fake_stripe, provider_env):
    """The session's Stripe fake with delivery off: tests deliver its events themselves."""
    previous = fake_stripe.webhook_url
    fake_stripe.webhook_url = None
    fake_stripe.clear_faults()
    yield fake_stripe
    fake_stripe.webhook_url = previous
    fake_stripe.clear_faults()


@pytest.fixture(scope="session")
def provider_env(fake_assemblyai, fake_openai, fake_twitch, fake_stripe) -> dict[str, str]:
    """Settings that point every provider at its fake; applied to os.environ for the session."""
    env = {
        "ASSEMBLYAI_API_KEY": ASSEMBLYAI_KEY,
        "ASSEMBLYAI_API_BASE": fake_assemblyai.url,
        "ASSEMBLYAI_STREAMING_API_BASE": fake_assemblyai.streaming_url,
        "OPENAI_API_KEY": OPENAI_KEY,
        "OPENAI_API_BASE": fake_openai.url + "/v1",
        "TWITCH_CLIENT_ID": TWITCH_CLIENT_ID,
        "TWITCH_CLIENT_SECRET": TWITCH_CLIENT_SECRET,
        "TWITCH_API_BASE": fake_twitch.url + "/helix",
        "TWITCH_AUTH_BASE": fake_twitch.url + "/oauth2",
        "STRIPE_SECRET_KEY": STRIPE_KEY,
        "STRIPE_API_BASE": fake_stripe.url,
        "STRIPE_WEBHOOK_SECRET": STRIPE_WEBHOOK_SECRET,
    }
    os.environ.update(env)
    reset_process_caches()
    yield env
    for name in env:
        os.environ.pop(name, None)
    reset_process_caches()


class LiveServer:
    """The service started exactly as `make run` starts it, as a child process."""

    def __init__(self, url: str, process, log_path: str) -> None:
        self.url = url
        self.process = process
        self.log_path = log_path
        self.state_file = log_path + ".devstack.json"  # what `make run` writes for operator tools

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()


def start_live_server(env_overrides: dict[str, str], log_path: str, timeout: float = 90) -> LiveServer:
    import subprocess
    import sys
    import time

    import requests

    port = free_port()
    env = {**os.environ, **env_overrides, "PORT": str(port), "AUTORELOAD": "0", "PYTHONUNBUFFERED": "1",
           "DEVSTACK_STATE_FILE": log_path + ".devstack.json"}  # never a developer's own file
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    log = open(log_path, "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "devstack.run"], cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"devstack.run exited early:\n{open(log_path).read()[-4000:]}")
        try:
            if requests.get(url + "/health", timeout=2).status_code == 200:
                return LiveServer(url, process, log_path)
        except requests.RequestException:
            pass
        time.sleep(0.25)
    stop_live_server(LiveServer(url, process, log_path))
    raise RuntimeError(f"live server not healthy in {timeout}s:\n{open(log_path).read()[-4000:]}")


def stop_live_server(server: LiveServer) -> None:
    """Ctrl-C, as a developer would; then make sure nothing is left behind."""
    import signal
    import subprocess

    if server.process.poll() is None:
        server.process.send_signal(signal.SIGINT)
        try:
            server.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait()


@pytest.fixture(scope="session")
def live_server(aws_endpoint, provider_env, tmp_path_factory):
    """`python -m devstack.run` against the session's embedded AWS and fake providers."""
    server = start_live_server({"AWS_ENDPOINT_URL": aws_endpoint, **provider_env},
                               str(tmp_path_factory.mktemp("live") / "server.log"))
    yield server
    stop_live_server(server)


@pytest.fixture
def stripe_to_server(live_server, fake_stripe):
    """The fake delivers its webhooks to the live server, like Stripe to a deployed API."""
    previous = fake_stripe.webhook_url
    fake_stripe.webhook_url = live_server.url + "/webhooks/stripe"
    fake_stripe.clear_faults()
    yield fake_stripe
    fake_stripe.wait_for_deliveries()
    fake_stripe.webhook_url = previous


@pytest.fixture
def dynamodb_faults(aws_endpoint):
    """Fault injection on the embedded AWS's DynamoDB (tests/faults.py); cleared after the test.

    Fresh boto3 clients before and after: botocore's retry quota starts full, so a test's
    faults have the same effect whatever ran before it.
    """
    from tests.faults import DynamoDBFaults

    faults = DynamoDBFaults(aws_endpoint)
    faults.clear()
    reset_process_caches()
    yield faults
    faults.clear()
    reset_process_caches()
