"""Structured logs: request context on every line, and redaction that nothing slips past."""
from __future__ import annotations

import json
import logging

import pytest

from chalicelib.core import logs
from tests.conftest import JWT_SECRET, ORIGIN, PASSWORD, STRIPE_WEBHOOK_SECRET, json_headers

logger = logging.getLogger("tests.security.logs")


def render(record_factory) -> dict:
    """Log one record through the service's formatter and return the emitted JSON."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep()
    logger.addHandler(keep)
    try:
        record_factory()
    finally:
        logger.removeHandler(keep)
    line = logs.JsonFormatter().format(records[-1])
    return json.loads(line) | {"_line": line}


SHAPES = {
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLWJ5dGVz",
    "stripe key": "sk_" + "live_4eC39HqLyjWDarjtT1zdp7dc",
    "restricted key": "rk_test_51Habcdefghijklmnop",
    "webhook secret": "whsec_abcdefghijklmnop0123",
    "stripe signature": "t=1700000000,v1=" + "ab" * 32,
    "openai key": "sk-" + "proj-abcdefghijklmnopqrstuvwx0123",
    "bearer": "Authorization: Bearer abcdefghijklmnop.qrstuv",
    "basic": "Authorization: Basic dXNlcjpwYXNzd29yZA==",
    "card": "card 4242 4242 4242 4242 exp",
    "card dashed": "4000-0566-5566-5556",
}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_secret_shapes_are_scrubbed_from_messages(name):
    value = SHAPES[name]
    out = render(lambda: logger.warning("provider said: %s", value))
    assert logs.REDACTED in out["message"]
    secretish = value.split()[-1] if name in ("bearer", "basic") else value
    assert secretish not in out["_line"]


def test_sensitive_fields_are_masked_by_name_and_numbers_kept():
    fields = {
        "password": "hunter2hunter2", "refresh_token": "abc123abc123", "api_key": "k" * 20,
        "Authorization": "whatever-value", "transcript": "what the streamer said",
        "question": "what did they say?", "answer": "they said hi", "summary": "a talk",
        "card_number": "4242", "messages": [{"role": "user", "content": "hello there"}],
        "prompt_tokens": 120, "credits_used": 5, "channel": "somechannel",
    }
    out = render(lambda: logs.log_event(logger, "x.event", **fields))
    for name in ("password", "refresh_token", "api_key", "Authorization", "transcript", "question",
                 "answer", "summary", "card_number", "messages"):
        assert out[name] == logs.REDACTED, name
    assert out["prompt_tokens"] == 120 and out["credits_used"] == 5 and out["channel"] == "somechannel"
    for secret in ("hunter2hunter2", "what the streamer said", "they said hi", "hello there"):
        assert secret not in out["_line"]


def test_registered_secrets_are_scrubbed_from_exception_tracebacks():
    secret = "a-password-nobody-should-see"
    logs.register_secret(secret)

    def fail() -> None:
        try:
            raise RuntimeError(f"login failed for password={secret}")
        except RuntimeError:
            logger.exception("unhandled error with %s", secret)

    out = render(fail)
    assert "RuntimeError" in out["exception"]
    assert secret not in out["_line"]
    assert out["exception"].count(logs.REDACTED) >= 1


def test_settings_secrets_are_pinned_after_one_request(client):
    client.http.get("/health")
    out = render(lambda: logger.error("config dump: jwt=%s", JWT_SECRET))
    assert JWT_SECRET not in out["_line"]


def test_recent_secrets_are_bounded_but_pinned_ones_stay(monkeypatch):
    from collections import OrderedDict

    # A registry of its own, so the session's registered secrets are not evicted.
    monkeypatch.setattr(logs, "_recent_secrets", OrderedDict())
    monkeypatch.setattr(logs, "_pinned_secrets", set(logs._pinned_secrets))
    monkeypatch.setattr(logs, "_ordered_secrets", None)
    monkeypatch.setattr(logs, "MAX_RECENT_SECRETS", 3)
    logs.register_secret("pinned-secret-value", pinned=True)
    for i in range(5):
        logs.register_secret(f"request-secret-{i}")
    text = " ".join(["pinned-secret-value"] + [f"request-secret-{i}" for i in range(5)])
    scrubbed = logs.scrub(text)
    assert "pinned-secret-value" not in scrubbed
    assert "request-secret-4" not in scrubbed and "request-secret-2" not in scrubbed
    assert "request-secret-0" in scrubbed  # evicted: oldest per-request value
    monkeypatch.undo()
    logs.register_secret("after-the-test-secret")  # rebuilds the ordered cache from the real one


def test_access_log_line_has_the_request_context(client, new_user, caplog):
    session = new_user()
    caplog.set_level(logging.INFO)
    r = client.http.get("/auth/user", headers=json_headers(session["token"], origin=ORIGIN))
    assert r.status_code == 200
    record = [rec for rec in caplog.records if rec.getMessage() == "request"][-1]
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["request_id"] == r.headers["X-Request-Id"]
    assert line["route"] == "GET /auth/user"
    assert line["user_id"] == session["user"]["user_id"]
    assert line["status"] == 200 and line["method"] == "GET"
    assert isinstance(line["latency_ms"], (int, float))
    assert line["level"] == "INFO" and line["time"].endswith("Z")


def test_unhandled_errors_are_logged_redacted_and_answered_generically(client, new_user, caplog,
                                                                       monkeypatch):
    """Even an exception whose text carries the password and the token never leaks it."""
    session = new_user()
    from chalicelib.accounts import auth as accounts

    def explode(user_id: str) -> dict:
        raise RuntimeError(f"db said {PASSWORD} / {session['token']} / {STRIPE_WEBHOOK_SECRET}")

    monkeypatch.setattr(accounts, "get_user", explode)
    caplog.set_level(logging.INFO)
    r = client.http.get("/auth/user", headers=json_headers(session["token"]))
    assert r.status_code == 500
    assert json.loads(r.body)["code"] == "internal_error"
    assert PASSWORD not in r.body.decode() and "db said" not in r.body.decode()
    lines = [logs.JsonFormatter().format(rec) for rec in caplog.records]
    error_lines = [line for line in lines if "RuntimeError" in line]
    assert error_lines, lines
    for line in lines:
        for secret in (PASSWORD, session["token"], STRIPE_WEBHOOK_SECRET):
            assert secret not in line
