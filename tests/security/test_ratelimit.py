"""Rate limits: classes, headers, 429 with no work done, fail open/closed, settings."""
from __future__ import annotations

import json

import pytest

from chalicelib.web import ratelimit
from chalicelib.core.errors import ConfigurationError, RateLimited, ServiceUnavailable
from chalicelib.core.settings import load_settings
from chalicelib.web.errors import headers_of
from tests.conftest import ORIGIN, PASSWORD, json_headers, unique_email
from tests.security.conftest import fresh_window


def test_route_classes():
    assert ratelimit.route_class("OPTIONS", "/auth/login", authenticated=False) == "exempt"
    assert ratelimit.route_class("POST", "/webhooks/stripe", authenticated=False) == "exempt"
    assert ratelimit.route_class("GET", "/health", authenticated=False) == "exempt"
    assert ratelimit.route_class("POST", "/auth/login", authenticated=False) == "auth"
    assert ratelimit.route_class("POST", "/transcription/stream", authenticated=True) == "spend"
    # Unlisted routes still get a limit: per user by method, per IP when anonymous.
    assert ratelimit.route_class("GET", "/new/thing", authenticated=True) == "read"
    assert ratelimit.route_class("POST", "/new/thing", authenticated=True) == "write"
    assert ratelimit.route_class("POST", "/new/thing", authenticated=False) == "public"


def test_settings_parse_and_refuse_typos():
    prod = load_settings({"STAGE": "prod", "JWT_SECRET": "x" * 40})
    assert prod.rate_limits["register"] == (10, 3600)
    assert prod.rate_limits["spend"] == (30, 60)
    assert prod.rate_limit_fail_closed == ("spend",)
    local = load_settings({"STAGE": "local", "JWT_SECRET": "x" * 40})
    assert local.rate_limits["register"][0] > 1000  # every local caller is 127.0.0.1
    assert local.rate_limits["spend"] == (30, 60)  # per-user classes as in production
    custom = load_settings(
        {"STAGE": "prod", "JWT_SECRET": "x" * 40, "RATE_LIMITS": "read:5/10, spend:off"}
    )
    assert custom.rate_limits["read"] == (5, 10) and custom.rate_limits["spend"] is None
    for bad in ("raed:5/10", "read:5", "read:0/10", "read:x/y"):
        with pytest.raises(ConfigurationError):
            load_settings({"STAGE": "prod", "JWT_SECRET": "x" * 40, "RATE_LIMITS": bad})


def test_window_arithmetic():
    assert ratelimit.window(1000.5, 60) == (960, 1020)
    assert ratelimit.window(1020, 60) == (1020, 1080)


def test_per_user_limit_headers_and_429(client, new_user, env_override):
    env_override(RATE_LIMITS=f"read:3/{fresh_window()}")
    alice, bob = new_user(), new_user()
    remaining = []
    for _ in range(3):
        r = client.http.get("/auth/user", headers=json_headers(alice["token"], origin=ORIGIN))
        assert r.status_code == 200, r.body
        assert r.headers["X-RateLimit-Limit"] == "3"
        remaining.append(r.headers["X-RateLimit-Remaining"])
    assert remaining == ["2", "1", "0"]
    r = client.http.get("/auth/user", headers=json_headers(alice["token"], origin=ORIGIN))
    assert r.status_code == 429
    body = json.loads(r.body)
    assert body["code"] == "rate_limited" and body["error"]
    assert 1 <= int(r.headers["Retry-After"]) <= 80_000 + 10_000
    assert body["retry_after"] == int(r.headers["Retry-After"])
    assert r.headers["X-RateLimit-Remaining"] == "0" and r.headers["X-RateLimit-Limit"] == "3"
    assert r.headers["Access-Control-Allow-Origin"] == ORIGIN  # errors keep CORS
    # Per user: another user is not affected.
    r = client.http.get("/auth/user", headers=json_headers(bob["token"]))
    assert r.status_code == 200 and r.headers["X-RateLimit-Remaining"] == "2"


def test_over_the_limit_does_no_work(client, env_override):
    """Registration per IP: past the limit no account (and no signup credit) is created."""
    env_override(RATE_LIMITS=f"register:2/{fresh_window()}")
    emails = [unique_email("farm") for _ in range(3)]
    statuses = []
    for email in emails:
        r = client.http.post(
            "/auth/register", headers=json_headers(),
            body=json.dumps({"email": email, "password": PASSWORD}),
        )
        statuses.append(r.status_code)
    assert statuses == [201, 201, 429]
    from chalicelib.aws import store

    assert store.get("emails", email=emails[2]) is None
    assert store.get("emails", email=emails[1]) is not None


def test_exempt_routes_are_never_limited(client, env_override):
    window = fresh_window()
    env_override(RATE_LIMITS=",".join(f"{c}:1/{window}" for c in
                                   ("register", "auth", "public", "account", "spend", "write", "read")))
    for _ in range(3):
        assert client.http.get("/health").status_code == 200
        r = client.http.options("/auth/login", headers={"Origin": ORIGIN})
        assert r.status_code == 204
        assert "X-RateLimit-Limit" not in r.headers


def test_limits_can_be_switched_off(client, new_user, env_override):
    session = new_user()
    env_override(RATE_LIMITS=f"read:1/{fresh_window()}", RATE_LIMITS_ENABLED="false")
    for _ in range(3):
        r = client.http.get("/auth/user", headers=json_headers(session["token"]))
        assert r.status_code == 200 and "X-RateLimit-Limit" not in r.headers


def test_limiter_failure_fails_open_for_writes(client, new_user, env_override, captured_logs):
    session = new_user()
    env_override(RATE_LIMITS_TABLE="no-such-table")  # every limiter write now fails
    r = client.http.post("/auth/refresh", headers=json_headers(),
                         body=json.dumps({"refresh_token": "not-a-token-" + "x" * 40}))
    assert r.status_code < 500, r.body
    assert "X-RateLimit-Limit" not in r.headers
    events = captured_logs("ratelimit.error")
    assert events and events[0]["route_class"] == "auth" and events[0]["fail_closed"] is False
    # Reads never touch the table: the same outage leaves their limit in force.
    r = client.http.get("/auth/user", headers=json_headers(session["token"]))
    assert r.status_code == 200 and r.headers["X-RateLimit-Limit"]


READ_ROUTES = ("/auth/user", "/credits/balance", "/credits/transactions", "/credits/packages",
               "/transcription/history", "/analytics/usage")


def dynamodb_operations() -> list[str]:
    """The name of every DynamoDB call the app's client makes from now on."""
    from chalicelib.aws import store

    calls: list[str] = []
    store.ddb().meta.events.register(
        "before-call.dynamodb", lambda model, **_: calls.append(model.name), unique_id="perf-ops")
    return calls


def test_read_routes_write_nothing(client, new_user, env_override):
    """A read is limited in the container's memory: no DynamoDB write, whatever the route."""
    from chalicelib.aws import store

    session = new_user()
    env_override(RATE_LIMITS=f"read:50/{fresh_window()},public:2/{fresh_window()}")
    calls = dynamodb_operations()
    try:
        for path in READ_ROUTES:
            r = client.http.get(path, headers=json_headers(session["token"]))
            assert r.status_code == 200, (path, r.body)
            assert r.headers["X-RateLimit-Limit"] in ("50", "2")
        writes = [name for name in calls if name not in ("GetItem", "Query", "BatchGetItem")]
        assert writes == [], writes
        before = len(calls)
        statuses = [client.http.get("/credits/packages").status_code for _ in range(2)]
        assert statuses == [200, 429]  # the in-process count is exact (1 packages read above)
        assert len(calls) == before  # and the refusal reads nothing either
    finally:
        store.ddb().meta.events.unregister("before-call.dynamodb", unique_id="perf-ops")


def test_in_process_counters_keep_the_fixed_window_contract():
    counters = ratelimit.InProcessCounters()
    assert [counters.hit("k", 2, window_end=60, now=1) for _ in range(3)] == [1, 2, None]
    assert counters.hit("k2", 2, window_end=120, now=61) == 1
    for n in range(1500):  # all current: kept
        counters.hit(f"old{n}", 5, window_end=60, now=59)
    for n in range(600):  # ended windows are dropped as new ones open
        counters.hit(f"new{n}", 5, window_end=200, now=130)
    assert len(counters._counts) < 700
    assert counters.hit("new0", 1, window_end=200, now=131) is None  # current counts survive


def test_limiter_failure_fails_closed_for_spends(aws_endpoint, env_override, captured_logs):
    env_override(RATE_LIMITS_TABLE="no-such-table")
    with pytest.raises(ServiceUnavailable):
        ratelimit.check("POST", "/transcription/stream", user_id="u1", source_ip="1.2.3.4")
    assert captured_logs("ratelimit.error")[0]["fail_closed"] is True
    # The policy is a setting: spends can fail open, and writes closed.
    env_override(RATE_LIMITS_TABLE="no-such-table", RATE_LIMIT_FAIL_CLOSED="write")
    assert ratelimit.check("POST", "/transcription/stream", user_id="u1",
                           source_ip="1.2.3.4") is None
    with pytest.raises(ServiceUnavailable):
        ratelimit.check("POST", "/credits/purchase", user_id="u1", source_ip="1.2.3.4")


def test_window_rolls_over(aws_endpoint, env_override):
    """A full window refuses until its end; the next window starts from zero."""
    env_override(RATE_LIMITS="spend:2/60")
    user = unique_email("window")
    start = 1_700_000_040  # a window boundary for 60 s windows
    for offset in (0, 30):
        assert ratelimit.check("POST", "/transcription/ask", user_id=user,
                               source_ip=None, now=start + offset) is not None
    with pytest.raises(RateLimited) as refused:
        ratelimit.check("POST", "/transcription/ask", user_id=user, source_ip=None,
                        now=start + 45)
    assert headers_of(refused.value)["Retry-After"] == "15"
    decision = ratelimit.check("POST", "/transcription/ask", user_id=user,
                               source_ip=None, now=start + 60)
    assert decision.remaining == 1
