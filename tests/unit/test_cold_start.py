"""`import app` stays cheap and safe: no AWS call, no required setting, no heavy import."""
from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAZY_MODULES = ("stripe", "requests", "bcrypt", "jwt")

PROBE = """
import json, sys
import app
print(json.dumps({
    "loaded": sorted(m for m in %r if m in sys.modules),
    "ttl": app.jwt_auth.config.ttl_seconds,
    "chalice_log_handlers": len(app.app.log.handlers),
}))
""" % (LAZY_MODULES,)


def run_import(**extra_env: str) -> subprocess.CompletedProcess:
    """Import app.py in a fresh interpreter with a bare environment (prod, nothing set)."""
    env = {"PATH": os.environ.get("PATH", ""), "STAGE": "prod", "PYTHONDONTWRITEBYTECODE": "1",
           # An endpoint nothing listens on: any AWS call at import would fail loudly.
           "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_DEFAULT_REGION": "us-east-1", **extra_env}
    return subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


def import_app(**extra_env: str) -> dict:
    done = run_import(**extra_env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_app_loads_no_heavy_module_and_needs_no_settings():
    result = import_app()  # STAGE=prod without JWT_SECRET: a request would fail, the import not
    assert result["loaded"] == [], f"imported at cold start: {result['loaded']}"


def test_authorizer_ttl_is_at_most_300_seconds_and_a_longer_one_is_refused():
    assert import_app()["ttl"] == 300
    assert import_app(AUTHORIZER_TTL_SECONDS="60")["ttl"] == 60
    refused = run_import(AUTHORIZER_TTL_SECONDS="3600")  # `chalice package` fails: never shortened
    assert refused.returncode != 0
    assert "AUTHORIZER_TTL_SECONDS='3600' is refused: it must be an integer from 0 to 300" in refused.stderr


def test_chalice_adds_no_unredacted_log_handler():
    assert import_app()["chalice_log_handlers"] == 0
