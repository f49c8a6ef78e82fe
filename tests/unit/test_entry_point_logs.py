"""Every entry point logs structured, redacted JSON from its very first line.

Each Lambda is invoked the way Lambda invokes it (the Chalice-wrapped handler, a Lambda
event, a context) in a process whose root logger carries a plain-text handler, as the
Python runtime's does. Everything it writes must be JSON lines naming the function, and
no secret may appear, including lines logged before the settings exist (the local
JWT_SECRET warning, `secrets.loaded` read from SSM).
"""
from __future__ import annotations

import json
import logging
import os
import sys
import uuid
from types import SimpleNamespace

import boto3
import pytest

from chalicelib.core import logs
from tests.conftest import JWT_SECRET, PASSWORD, reset_process_caches, unique_email

PREFIX = "/transcription-backend/logtest/"


@pytest.fixture
def lambda_logging(monkeypatch):
    """A fresh process's logging: only the runtime's plain handler, JSON not configured yet."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    plain = logging.StreamHandler(sys.stderr)
    plain.setFormatter(logging.Formatter("[%(levelname)s] %(message)s"))
    root.handlers[:] = [plain]
    monkeypatch.setattr(logs, "_configured", False)
    yield
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    logs.request_context.set({})


def context(request_id: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(
        aws_request_id=request_id or uuid.uuid4().hex,
        get_remaining_time_in_millis=lambda: 280_000,
        function_name="test",
    )


def json_lines(text: str) -> list[dict]:
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "nothing was logged"
    return [json.loads(line) for line in lines]  # fails on any plain-text line


def assert_only_json(capsys, function: str, *secrets: str) -> list[dict]:
    out, err = capsys.readouterr()
    assert err == "", f"plain-text output: {err}"
    for secret in secrets:
        assert secret not in out
    events = json_lines(out)
    assert {event.get("function") for event in events} == {function}
    return events


def test_jwt_auth_logs_json_from_its_first_line(lambda_logging, capsys, monkeypatch):
    import app

    monkeypatch.delenv("JWT_SECRET")  # local stage: settings warn (before anything else) and generate one
    reset_process_caches()
    try:
        forged = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXRoYXQtZG9lcy1ub3QtbWF0Y2g"
        event = {"type": "TOKEN", "authorizationToken": f"Bearer {forged}",
                 "methodArn": "arn:aws:execute-api:us-east-1:123456789012:abc/api/GET/auth/user"}
        with pytest.raises(Exception):
            app.jwt_auth(event, context())
    finally:
        monkeypatch.setenv("JWT_SECRET", JWT_SECRET)
        reset_process_caches()
    events = assert_only_json(capsys, "jwt_auth", forged)
    assert events[0]["message"].startswith("JWT_SECRET is not set") and events[0]["level"] == "WARNING"
    assert events[-1]["message"] == "authorizer.denied" and events[-1]["reason"] == "invalid_token"


def test_catchup_worker_logs_json_with_the_invocation_id(lambda_logging, capsys):
    import app

    record = {"messageId": "m-1", "receiptHandle": "r-1", "body": "this is not a job",
              "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
              "eventSource": "aws:sqs",
              "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:transcription-backend-local-catchup"}
    app.catchup_worker({"Records": [record]}, context("worker-invocation-1"))
    (event,) = assert_only_json(capsys, "catchup_worker")
    assert (event["message"], event["level"], event["request_id"]) == (
        "catchup.bad_message", "ERROR", "worker-invocation-1")


def test_cleanup_logs_json_with_the_invocation_id(lambda_logging, capsys, aws_endpoint):
    import app

    event = {"version": "0", "id": "e-1", "detail-type": "Scheduled Event", "source": "aws.events",
             "account": "123456789012", "time": "2026-12-01T02:00:00Z", "region": "us-east-1",
             "resources": ["arn:aws:events:us-east-1:123456789012:rule/cleanup"], "detail": {}}
    app.cleanup(event, context("cleanup-invocation-1"))
    events = assert_only_json(capsys, "cleanup", JWT_SECRET)
    assert events[-1]["message"] == "cleanup.finished"
    assert {e["request_id"] for e in events} == {"cleanup-invocation-1"}


def _api_event(method: str, path: str, body: dict | None = None) -> dict:
    return {
        "resource": path, "path": path, "httpMethod": method,
        "headers": {"Content-Type": "application/json", "Host": "abc.execute-api.us-east-1.amazonaws.com"},
        "multiValueHeaders": {}, "queryStringParameters": None, "multiValueQueryStringParameters": None,
        "pathParameters": None, "stageVariables": None,
        "requestContext": {"resourcePath": path, "httpMethod": method, "requestId": "api-request-1",
                           "stage": "api", "identity": {"sourceIp": "203.0.113.9"}},
        "body": json.dumps(body) if body is not None else None, "isBase64Encoded": False,
    }


def test_api_handler_logs_secrets_loaded_as_json_and_redacts(lambda_logging, capsys, aws_endpoint, monkeypatch):
    """The issue's case: SSM secrets are logged about before any request handling ran."""
    import app

    secret = "ssm-held-jwt-secret-" + uuid.uuid4().hex
    ssm = boto3.client("ssm", region_name="us-east-1")
    ssm.put_parameter(Name=PREFIX + "JWT_SECRET", Value=secret, Type="SecureString", Overwrite=True)
    monkeypatch.setenv("JWT_SECRET", "")
    monkeypatch.setenv("SECRETS_SSM_PREFIX", PREFIX)
    from chalicelib.aws.ssm_secrets import reset_secrets

    reset_secrets()
    reset_process_caches()
    try:
        response = app.app(_api_event("POST", "/auth/login", {"email": unique_email(), "password": PASSWORD}),
                           context())
    finally:
        ssm.delete_parameter(Name=PREFIX + "JWT_SECRET")
        monkeypatch.setenv("JWT_SECRET", JWT_SECRET)
        monkeypatch.delenv("SECRETS_SSM_PREFIX")
        reset_secrets()
        reset_process_caches()
    assert response["statusCode"] == 401
    events = assert_only_json(capsys, "api_handler", secret, PASSWORD)
    assert events[0]["message"] == "secrets.loaded" and events[0]["request_id"] == "api-request-1"
    assert events[-1]["message"] == "request" and events[-1]["status"] == 401


def test_admin_command_logs_json_to_stderr(aws_endpoint, new_user, lambda_logging, capsys, monkeypatch):
    from chalicelib.ops import admin

    session = new_user()  # through the API, which configured the logs: start again as a fresh CLI
    monkeypatch.setattr(logs, "_configured", False)
    capsys.readouterr()
    assert admin.main(["grant-admin", session["user"]["email"], "--stage", "local"]) == admin.EXIT_OK
    assert admin.main(["revoke-admin", unique_email("nobody"), "--stage", "local"]) == admin.EXIT_NOT_FOUND
    out, err = capsys.readouterr()
    assert "user -> admin" in out
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert [e["message"] for e in events] == ["admin.role_changed", "admin.role_change_refused"]
    assert events[0]["user_id"] == session["user"]["user_id"] and events[0]["role"] == "admin"
    assert session["user"]["email"] not in err
    assert all(e["function"] == "admin" for e in events)
    assert os.environ["STAGE"] == "local"
