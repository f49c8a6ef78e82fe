"""Shared fixtures: the embedded AWS (moto's server over HTTP), the Chalice test client,
and the real local server for end-to-end tests.

The code under test reaches the embedded AWS only through `AWS_ENDPOINT_URL`, exactly as
`make run` does; there is no test-only code path.
"""
from __future__ import annotations

import os
import socket
import uuid

import pytest

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
}
for _name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
    os.environ.pop(_name, None)
os.environ.update(TEST_ENV)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}@example.com"


def reset_process_caches() -> None:
    from chalicelib.aws import reset_clients
    from chalicelib.settings import reset_settings

    reset_settings()
    reset_clients()


@pytest.fixture(scope="session")
def aws_endpoint():
    """moto's server on loopback with every table, bucket and queue created."""
    from devstack.embedded_aws import EmbeddedAws

    with EmbeddedAws() as aws:
        os.environ["AWS_ENDPOINT_URL"] = aws.url
        reset_process_caches()
        from chalicelib.settings import get_settings
        from infra.bootstrap import bootstrap

        bootstrap(get_settings())
        yield aws.url
        os.environ.pop("AWS_ENDPOINT_URL", None)
        reset_process_caches()


@pytest.fixture
def settings(aws_endpoint):
    from chalicelib.settings import get_settings

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


@pytest.fixture(scope="session")
def provider_env(fake_assemblyai, fake_openai, fake_twitch, fake_stripe) -> dict[str, str]:
    """Settings that point every provider at its fake; applied to os.environ for the session."""
    env = {
        "ASSEMBLYAI_API_KEY": ASSEMBLYAI_KEY,
        "ASSEMBLYAI_API_BASE": fake_assemblyai.url,
        "ASSEMBLYAI_STREAMING_API_BASE": fake_assemblyai.url,
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

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()


def start_live_server(env_overrides: dict[str, str], log_path: str, timeout: float = 90) -> LiveServer:
    import subprocess
    import sys
    import time

    import requests

    port = free_port()
    env = {**os.environ, **env_overrides, "PORT": str(port), "AUTORELOAD": "0", "PYTHONUNBUFFERED": "1"}
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
