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
