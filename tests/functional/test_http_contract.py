"""What every response shares: the error envelope, no leaked internals, CORS, health."""
from __future__ import annotations

import io
import json
import logging
import re
import time

import pytest

from chalicelib.core.logs import JsonFormatter, register_secret
from tests.conftest import ORIGIN, OTHER_ORIGIN, PASSWORD, free_port, reset_process_caches, unique_email
from tests.functional.conftest import assert_envelope

FAKE_LIVE_KEY = "sk_" + "live_abcdef123456"  # built at run time: no key-shaped literal in git

REQUIRED_ALLOW_HEADERS = {"authorization", "content-type", "idempotency-key"}


def assert_cors(result, origin: str = ORIGIN) -> None:
    assert result.header("Access-Control-Allow-Origin") == origin, result.headers
    assert "origin" in [v.strip().lower() for v in (result.header("Vary") or "").split(",")]


def assert_no_cors(result) -> None:
    assert result.cors_headers() == {}, result.headers


@pytest.fixture
def failing_requests(call, new_user):
    """One request per kind of failure the accounts API gives, with their statuses."""
    session = new_user()
    return [
        (400, lambda **kw: call("POST", "/auth/register", raw=b"{not json", **kw)),
        (401, lambda **kw: call("POST", "/auth/login", {"email": unique_email(), "password": PASSWORD}, **kw)),
        (401, lambda **kw: call("POST", "/auth/refresh", {"refresh_token": "z" * 64}, **kw)),
        (409, lambda **kw: call("POST", "/auth/register",
                                {"email": session["user"]["email"], "password": PASSWORD}, **kw)),
        (413, lambda **kw: call("POST", "/auth/register", raw=b'{"a":"' + b"x" * 20_000 + b'"}', **kw)),
        (422, lambda **kw: call("POST", "/auth/register", {"email": "x", "password": PASSWORD}, **kw)),
        (422, lambda **kw: call("POST", "/auth/register", [1, 2], **kw)),
        (405, lambda **kw: call("PUT", "/auth/register", {}, **kw)),
        (415, lambda **kw: call("POST", "/auth/login", raw="{}",
                                headers={"Content-Type": "text/plain"}, **kw)),
    ]


def test_every_failure_uses_the_envelope_with_cors(failing_requests):
    for status, send in failing_requests:
        result = send(origin=ORIGIN)
        assert_envelope(result, status)
        assert_cors(result)


def test_refused_origin_gets_no_cors_on_errors(failing_requests):
    for status, send in failing_requests:
        result = send(origin=OTHER_ORIGIN)
        assert_envelope(result, status)
        assert_no_cors(result)


def test_method_not_allowed_keeps_allow(call):
    result = call("PUT", "/auth/user", origin=ORIGIN)
    assert_envelope(result, 405, "method_not_allowed")
    assert "GET" in result.header("Allow")


def test_success_responses_carry_cors_for_allowed_origins_only(call, new_user):
    session = new_user()
    for origin, check in ((ORIGIN, assert_cors), (OTHER_ORIGIN, assert_no_cors), (None, assert_no_cors)):
        for result in (
            call("GET", "/health", origin=origin),
            call("GET", "/auth/user", token=session["token"], origin=origin),
            call("POST", "/auth/register", {"email": unique_email(), "password": PASSWORD}, origin=origin),
            call("POST", "/auth/logout", {"refresh_token": "unknown-token-value"}, origin=origin),
        ):
            assert result.status < 300, result.raw
            check(result)
            assert result.header("Access-Control-Allow-Origin") != "*"


def test_cors_origin_match_is_exact(call):
    for near_miss in (ORIGIN + "/", ORIGIN.upper(), ORIGIN + "x", "null", "*", "https://evil.example"):
        assert_no_cors(call("GET", "/health", origin=near_miss))


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "abc123", path)


def test_preflight_answers_every_route_without_a_token(client):
    import app

    assert app.app.routes, "no routes"
    for path, methods in app.app.routes.items():
        response = client.http.options(_concrete(path), headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": next(m for m in methods if m != "OPTIONS"),
            "Access-Control-Request-Headers": "authorization,content-type,idempotency-key",
        })
        headers = {k.lower(): v for k, v in response.headers.items()}
        assert response.status_code in (200, 204), (path, response.status_code, response.body)
        assert headers.get("access-control-allow-origin") == ORIGIN, path
        assert "origin" in headers.get("vary", "").lower(), path
        allowed = {h.strip().lower() for h in headers["access-control-allow-headers"].split(",")}
        assert REQUIRED_ALLOW_HEADERS <= allowed, (path, allowed)
        allowed_methods = {m.strip().upper() for m in headers["access-control-allow-methods"].split(",")}
        assert set(methods) - {"OPTIONS"} <= allowed_methods, (path, methods, allowed_methods)


def test_preflight_from_a_refused_origin_grants_nothing(client):
    import app

    for path in app.app.routes:
        response = client.http.options(_concrete(path), headers={
            "Origin": OTHER_ORIGIN, "Access-Control-Request-Method": "POST"})
        assert not [k for k in response.headers if k.lower().startswith("access-control-")], path
        assert response.status_code >= 400


def test_authenticated_route_preflight_needs_no_token(call):
    result = call("OPTIONS", "/auth/user", origin=ORIGIN)
    assert result.status in (200, 204)
    assert_cors(result)


# --- no internals in responses, and redacted logs ----------------------------------------


@pytest.fixture
def root_log():
    """Everything logged through the root logger, formatted by the service's JSON formatter."""
    from chalicelib.core import logs

    logs.configure()  # first use replaces the root handlers: do it before adding ours
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logging.getLogger().addHandler(handler)
    yield stream
    logging.getLogger().removeHandler(handler)


def test_unexpected_exception_is_a_generic_500(call, new_user, monkeypatch, root_log):
    import chalicelib.accounts.auth as accounts

    session = new_user()
    secret = "internal-secret-" + "q" * 20
    register_secret(secret)

    def explode(user_id):
        raise RuntimeError(f"boom {secret} at /var/task/chalicelib/accounts/auth.py {FAKE_LIVE_KEY}")

    monkeypatch.setattr(accounts, "get_user", explode)
    result = call("GET", "/auth/user", token=session["token"], origin=ORIGIN)
    body = assert_envelope(result, 500, "internal_error")
    for leaked in ("boom", secret, "sk_live", "RuntimeError", "/var/task"):
        assert leaked not in result.raw.decode()
    assert set(body) == {"error", "message", "code"}
    assert_cors(result)
    assert result.header("X-Request-Id")
    logged = root_log.getvalue()
    assert "RuntimeError" in logged  # the operator sees what happened ...
    assert secret not in logged and FAKE_LIVE_KEY not in logged  # ... but no secret
    for line in logged.splitlines():
        json.loads(line)  # every line is JSON: nothing printed unformatted


def test_storage_error_text_never_reaches_the_client(call, monkeypatch):
    from botocore.exceptions import ClientError

    import chalicelib.accounts.auth as accounts

    def throttled(*args, **kwargs):
        raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException",
                                     "Message": "table transcription-backend-local-users"}}, "Query")

    monkeypatch.setattr(accounts.store, "get", throttled)
    result = call("POST", "/auth/login", {"email": unique_email(), "password": PASSWORD})
    assert_envelope(result, 500, "internal_error")
    assert b"transcription-backend" not in result.raw and b"Throughput" not in result.raw


def test_configuration_error_inside_a_route_is_503(call, monkeypatch):
    import chalicelib.accounts.auth as accounts
    from chalicelib.core.errors import ConfigurationError

    def misconfigured(*args, **kwargs):
        raise ConfigurationError("STRIPE_SECRET_KEY is required on stage 'prod'")

    monkeypatch.setattr(accounts, "login", misconfigured)
    result = call("POST", "/auth/login", {"email": unique_email(), "password": PASSWORD}, origin=ORIGIN)
    assert_envelope(result, 503, "service_unavailable")
    assert b"STRIPE" not in result.raw
    assert_cors(result)


@pytest.mark.parametrize("origin", [None, ORIGIN])
def test_a_stage_without_jwt_secret_answers_503(aws_endpoint, monkeypatch, origin):
    """The hard configuration error off `local` reaches clients as a clean 503.

    A stage of its own ("qa", absent from .chalice/config.json), so no stage config can
    point at an SSM parameter that another test left in the shared embedded AWS.
    """
    from chalice.test import Client

    import app
    from chalicelib.aws.ssm_secrets import PARAM_SUFFIX, PREFIX_VAR

    monkeypatch.setenv("STAGE", "qa")
    monkeypatch.delenv("JWT_SECRET")
    monkeypatch.delenv(PREFIX_VAR, raising=False)
    monkeypatch.delenv("JWT_SECRET" + PARAM_SUFFIX, raising=False)
    reset_process_caches()
    try:
        with Client(app.app, stage_name="qa") as dev:
            headers = {"Content-Type": "application/json", **({"Origin": origin} if origin else {})}
            for response in (
                dev.http.get("/health", headers=headers),
                dev.http.post("/auth/login", headers=headers,
                              body=json.dumps({"email": unique_email(), "password": PASSWORD})),
            ):
                assert response.status_code == 503, response.body
                body = json.loads(response.body)
                assert body["code"] == "service_unavailable" and isinstance(body["error"], str)
                assert b"JWT_SECRET" not in response.body
    finally:
        monkeypatch.undo()
        reset_process_caches()


# --- health -------------------------------------------------------------------------------


def test_health_is_healthy(call):
    result = call("GET", "/health")
    assert result.status == 200
    body = result.json
    assert body["status"] == "healthy"
    assert body["dynamodb"] == "connected"
    assert body["environment"] == "configured"


def test_health_is_503_when_dynamodb_is_unreachable(call, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens
    reset_process_caches()
    try:
        started = time.monotonic()
        result = call("GET", "/health", origin=ORIGIN)
        elapsed = time.monotonic() - started
    finally:
        monkeypatch.undo()
        reset_process_caches()
    assert result.status == 503, result.raw
    body = result.json
    assert body["status"] == "unhealthy" and body["dynamodb"] != "connected"
    assert_cors(result)
    assert elapsed < 15
    assert call("GET", "/health").status == 200  # and back once storage is reachable again


def test_logs_are_json_lines_with_the_request_id_and_no_secrets(call, root_log):
    email = unique_email()
    registered = call("POST", "/auth/register", {"email": email, "password": PASSWORD})
    logged_in = call("POST", "/auth/login", {"email": email, "password": PASSWORD})
    rotated = call("POST", "/auth/refresh", {"refresh_token": logged_in.json["refresh_token"]})
    call("POST", "/auth/login", {"email": email, "password": "wrong-" + PASSWORD})
    lines = [json.loads(line) for line in root_log.getvalue().splitlines()]
    access = [line for line in lines if line.get("message") == "request"]
    assert logged_in.header("X-Request-Id") in {line["request_id"] for line in access}
    assert {line["status"] for line in access} >= {201, 200, 401}
    text = root_log.getvalue()
    for secret in (PASSWORD, registered.json["token"], registered.json["refresh_token"],
                   logged_in.json["token"], logged_in.json["refresh_token"],
                   rotated.json["token"], rotated.json["refresh_token"]):
        assert secret not in text
