"""Log lines are JSON and never carry a password, token, secret or key."""
from __future__ import annotations

import io
import json
import logging

import pytest

from chalicelib.core import logs
from chalicelib.core.logs import REDACTED, JsonFormatter, log_event, redact, register_secret, scrub

FAKE_LIVE_KEY = "sk_" + "live_abcdef123456"  # built at run time: no key-shaped literal in git

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEyMyJ9.c2lnbmF0dXJlLXZhbHVl"


@pytest.fixture
def captured():
    """A logger whose records go through the real JSON formatter into a buffer."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.unit.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False

    def lines() -> list[dict]:
        return [json.loads(line) for line in stream.getvalue().splitlines()]

    yield logger, lines, stream
    logger.removeHandler(handler)


@pytest.mark.parametrize(
    "key",
    ["password", "new_password", "token", "refresh_token", "access_token", "Authorization",
     "api_key", "apiKey", "x-api-key", "client_secret", "stripe_signature", "card_number",
     "transcript", "question", "answer"],
)
def test_sensitive_fields_are_masked(key):
    assert redact({key: "hunter2-value"}) == {key: REDACTED}
    assert redact({"outer": {key: "hunter2-value"}}) == {"outer": {key: REDACTED}}
    assert redact({key: {"nested": "v"}}) == {key: REDACTED}


def test_numbers_are_not_masked():
    fields = {"prompt_tokens": 120, "completion_tokens": 30, "token_count": 5, "duration": 1.5,
              "password_attempts": 3, "credits": 10}
    assert redact(fields) == fields


def test_ordinary_fields_are_kept():
    fields = {"user_id": "u-1", "status": 201, "route": "POST /auth/login", "email_domain": "x.com"}
    assert redact(fields) == fields


@pytest.mark.parametrize(
    "secret",
    [JWT, "sk_" + "live_4eC39HqLyjWDarjtT1zdp7dc", "sk_test_abcdef123456", "rk_live_abcdef123456",
     "whsec_abcdefghijkl123456", "Bearer abcdefghijklmnop.qrs", "bearer SOMEOPAQUETOKEN123"],
)
def test_secret_shapes_are_scrubbed_anywhere(secret):
    text = scrub(f"calling upstream with {secret} now")
    assert secret not in text and REDACTED in text
    assert redact({"detail": f"x {secret} y"})["detail"] == f"x {REDACTED} y"
    assert redact(["a", f"{secret}"]) == ["a", REDACTED]


def test_registered_secrets_are_scrubbed():
    value = "opaque-provider-key-5d41402abc4b2a76"
    assert scrub(f"key={value}") == f"key={value}"
    register_secret(value)
    assert scrub(f"key={value};") == f"key={REDACTED};"
    register_secret("short")  # too short to scrub safely: ignored, not an error
    assert scrub("a short story") == "a short story"


def test_json_lines_with_context_and_fields(captured):
    logger, lines, _ = captured
    token = logs.request_context.set({"request_id": "req-1", "route": "GET /x", "user_id": "u-1"})
    try:
        log_event(logger, "account.login", user_id="u-1", password="pw-123456", status=200)
    finally:
        logs.request_context.reset(token)
    (line,) = lines()
    assert line["message"] == "account.login" and line["level"] == "INFO"
    assert line["request_id"] == "req-1" and line["route"] == "GET /x"
    assert line["password"] == REDACTED and line["status"] == 200
    assert line["time"].endswith("Z")


def test_message_and_exception_traceback_are_scrubbed(captured):
    logger, lines, stream = captured
    key = "registered-secret-value-0123456789"
    register_secret(key)
    try:
        raise RuntimeError(f"upstream said no to {key} and {JWT} with {FAKE_LIVE_KEY}")
    except RuntimeError:
        logger.exception("provider failed for %s", "Bearer abcdefghijklmnop")
    raw = stream.getvalue()
    for leaked in (key, JWT, FAKE_LIVE_KEY, "abcdefghijklmnop"):
        assert leaked not in raw
    (line,) = lines()
    assert "RuntimeError" in line["exception"] and REDACTED in line["exception"]
    assert "Traceback" in line["exception"]  # the operator still gets the stack


def test_configure_routes_everything_through_one_json_handler():
    root = logging.getLogger()
    logs.configure()
    logs.configure()  # idempotent
    streams = [h for h in root.handlers if isinstance(h, logging.StreamHandler)
               and isinstance(h.formatter, JsonFormatter)]
    assert len(streams) == 1  # one JSON stream however often it is called
