"""Domain errors know no HTTP; the web layer's one table answers them (chalicelib.web.errors)."""
from __future__ import annotations

import importlib
import json
import os
import pkgutil
import subprocess
import sys

import pytest
from chalice.test import Client

import chalicelib
from chalicelib.core import errors
from chalicelib.web import errors as web_errors
from chalicelib.web.errors import Answer, answer
from chalicelib.web.idempotency import StillInProgress
from chalicelib.web.middleware import Api
from chalicelib.web.ratelimit import LimiterUnavailable

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The HTTP edge: the only chalicelib modules allowed to import chalice (with app.py).
CHALICE_MODULES = {"chalicelib.web.middleware", "chalicelib.web.authorizer"}


def all_modules() -> list[str]:
    return sorted(info.name for info in pkgutil.walk_packages(chalicelib.__path__, "chalicelib."))


def subclasses(kind: type) -> set[type]:
    found = set(kind.__subclasses__())
    for sub in list(found):
        found |= subclasses(sub)
    return found


def test_the_logic_imports_no_chalice():
    """Ledger, billing, catch-up, live, accounts, ops (every module outside the HTTP edge),
    each imported in turn in a fresh interpreter: chalice is never loaded."""
    modules = [name for name in all_modules() if name not in CHALICE_MODULES]
    assert {"chalicelib.credits.ledger", "chalicelib.billing.fulfilment", "chalicelib.catchup.worker",
            "chalicelib.live.captions", "chalicelib.accounts.auth", "chalicelib.ops.janitor"} <= set(modules)
    probe = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "    if 'chalice' in sys.modules:\n"
        "        print(json.dumps(name)); break\n"
        "else:\n"
        "    print(json.dumps(None))\n"
    )
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONDONTWRITEBYTECODE": "1", "STAGE": "local"}
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) is None, "imports chalice: " + done.stdout


def test_every_domain_error_has_a_status_in_the_table():
    for name in all_modules():
        importlib.import_module(name)
    for kind in subclasses(errors.DomainError):
        assert any(ancestor in web_errors.STATUS for ancestor in kind.__mro__), kind
    assert not issubclass(errors.ConfigurationError, errors.DomainError)


@pytest.mark.parametrize("error, expected", [
    (errors.InsufficientCredits(balance=3, required=5),
     Answer(402, {"error": "Insufficient credits", "message": "Insufficient credits",
                  "code": "insufficient_credits", "balance": 3, "required": 5}, {})),
    (errors.Unauthorized("This session has ended", code="session_ended"),
     Answer(401, {"error": "This session has ended", "message": "This session has ended",
                  "code": "session_ended"}, {})),
    (errors.StorageBusy("ThrottlingException"),
     Answer(503, {"error": "The service is busy; please retry", "message": "The service is busy; please retry",
                  "code": "storage_busy", "retry_after": 1}, {"Retry-After": "1"})),
    (errors.RateLimited("Slow down", retry_after=7, window_limit=30),
     Answer(429, {"error": "Slow down", "message": "Slow down", "code": "rate_limited", "retry_after": 7},
            {"Retry-After": "7", "X-RateLimit-Limit": "30", "X-RateLimit-Remaining": "0"})),
    (errors.RateLimited("Tomorrow", code="too_many_sessions_today", retry_after=60, limit=5),
     Answer(429, {"error": "Tomorrow", "message": "Tomorrow", "code": "too_many_sessions_today",
                  "retry_after": 60, "limit": 5}, {"Retry-After": "60"})),
    # A class's fixed hint is a header only.
    (StillInProgress(),
     Answer(409, {"error": StillInProgress.default_message, "message": StillInProgress.default_message,
                  "code": "idempotency_in_progress"}, {"Retry-After": "1"})),
    (LimiterUnavailable(),
     Answer(503, {"error": "Service temporarily unavailable", "message": "Service temporarily unavailable",
                  "code": "service_unavailable"}, {"Retry-After": "5"})),
])
def test_answers(error, expected):
    assert answer(error) == expected


def test_a_configuration_error_is_a_generic_503_that_names_nothing(caplog):
    got = answer(errors.ConfigurationError("JWT_SECRET is not set"))
    assert got == Answer(503, {"error": "Service is not configured", "message": "Service is not configured",
                               "code": "service_unavailable"}, {})
    assert "JWT_SECRET is not set" in caplog.text  # for the operator, in the log only


def test_api_routes_answer_domain_errors_and_leave_the_rest_to_chalice():
    app = Api(app_name="errors-test")

    @app.route("/poor")
    def poor():
        raise errors.InsufficientCredits(balance=0, required=1)

    @app.route("/unconfigured")
    def unconfigured():
        raise errors.ConfigurationError("STRIPE_SECRET_KEY is not set")

    @app.route("/bug")
    def bug():
        raise ValueError("a bug")

    @app.route("/fine/{name}")
    def fine(name):
        return {"name": name}

    with Client(app) as client:
        poor_response = client.http.get("/poor")
        assert poor_response.status_code == 402
        assert json.loads(poor_response.body)["code"] == "insufficient_credits"
        assert client.http.get("/unconfigured").status_code == 503
        assert client.http.get("/bug").status_code == 500  # Chalice's own answer (the middleware's envelope)
        assert json.loads(client.http.get("/fine/x").body) == {"name": "x"}
