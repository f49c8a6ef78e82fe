"""The slimmed deployment.zip, run alone as Lambda runs it: every route answers, every client loads.

The zip holds only four botocore service models and compiled modules (infra/slim.py), so
these tests run the package itself in a fresh `python3.11 -S -B` whose only path besides
the standard library is the unzipped package, against the embedded AWS.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import pytest

from infra import slim
from tests.conftest import ORIGIN

pytestmark = pytest.mark.slow

ZIP_BUDGET_BYTES = 8 * 1024 * 1024  # docs/performance.md: the package size target

SERVE_EVERY_ROUTE = r"""
import json, os, sys
import app
class Context:
    aws_request_id = "r"; function_name = "api_handler"; memory_limit_in_mb = 512
    def get_remaining_time_in_millis(self): return 20000
answers = []
for path, methods in app.app.routes.items():
    for method, entry in methods.items():
        concrete = "/".join("x" if p.startswith("{") else p for p in path.split("/"))
        context = {"resourcePath": path, "httpMethod": method, "requestId": "r", "identity": {"sourceIp": "192.0.2.1"}}
        if entry.authorizer is not None:
            context["authorizer"] = {"principalId": "nobody", "user_id": "nobody", "email": "n@example.com", "role": "user"}
        event = {"resource": path, "path": concrete, "httpMethod": method,
                 "headers": {"Origin": os.environ["ALLOWED_ORIGINS"], "Content-Type": "application/json"},
                 "multiValueHeaders": {}, "queryStringParameters": None, "multiValueQueryStringParameters": None,
                 "pathParameters": {p.strip("{}"): "x" for p in path.split("/") if p.startswith("{")} or None,
                 "stageVariables": None, "requestContext": context,
                 "body": "{}" if method in ("POST", "PUT", "PATCH", "DELETE") else None, "isBase64Encoded": False}
        response = app.app(event, Context())
        answers.append([method, path, response["statusCode"], response["body"][:200]])
import boto3, stripe
for service in json.loads(os.environ["SERVICES"]):
    boto3.session.Session().client(service, region_name="us-east-1")
import importlib.util
uncompiled = sorted(m.__name__ for m in list(sys.modules.values())
                    if (getattr(m, "__file__", None) or "").startswith(os.getcwd()) and m.__file__.endswith(".py")
                    and not os.path.exists(importlib.util.cache_from_source(m.__file__)))
print(json.dumps({"answers": answers, "uncompiled": uncompiled}))
"""


@pytest.fixture(scope="module")
def task_root(chalice_package, tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("var-task")
    with zipfile.ZipFile(chalice_package.zip_path) as archive:
        archive.extractall(root)
    return str(root)


def test_the_package_fits_the_budget_and_keeps_only_the_used_service_models(chalice_package, task_root):
    assert os.path.getsize(chalice_package.zip_path) <= ZIP_BUDGET_BYTES
    models = {name for name in os.listdir(os.path.join(task_root, "botocore", "data"))
              if os.path.isdir(os.path.join(task_root, "botocore", "data", name))}
    assert models == slim.used_services() == {"dynamodb", "s3", "sqs", "ssm"}
    assert os.path.exists(os.path.join(task_root, "__pycache__", slim.pyc_name("app")))
    assert os.path.exists(os.path.join(task_root, "chalicelib", "credits", "ledger", "__pycache__",
                                       slim.pyc_name("operations")))


def test_every_route_answers_from_the_package_alone(task_root, aws_endpoint):
    from chalicelib.core.settings import load_settings
    from infra.bootstrap import bootstrap

    bootstrap(load_settings({"STAGE": "prod", "JWT_SECRET": "p" * 48, "ALLOWED_ORIGINS": ORIGIN}))
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": task_root, "STAGE": "prod", "ALLOWED_ORIGINS": ORIGIN,
           "JWT_SECRET": "p" * 48, "AWS_ENDPOINT_URL": aws_endpoint, "AWS_ACCESS_KEY_ID": "k",
           "AWS_SECRET_ACCESS_KEY": "s", "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
           "LOG_LEVEL": "ERROR", "SERVICES": json.dumps(sorted(slim.used_services()))}
    python = os.path.join(sys.base_prefix, "bin", "python3.11")
    done = subprocess.run([python, "-S", "-B", "-c", SERVE_EVERY_ROUTE], cwd=task_root, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    import app

    assert len(result["answers"]) == sum(len(m) for m in app.app.routes.values())
    for method, path, status, body in result["answers"]:
        assert status < 500 or status == 503, (method, path, status, body)  # 503: provider keys not set here
        assert status == 204 or "error" in body or status < 300, (method, path, status, body)
    assert result["uncompiled"] == [], "modules loaded from source: the package should hold their .pyc"


def test_stripe_probe_names_every_service_the_billing_code_calls():
    """slim.STRIPE_SERVICES is what gets compiled of stripe: it must follow the code."""
    import re

    root = os.path.join(os.path.dirname(slim.__file__), "..", "chalicelib")
    called = set()
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(folder, name), encoding="utf-8") as handle:
                    called |= {m.rsplit(".", 1)[0] for m in re.findall(r"stripe\.v1\.([a-z_.]+)\(", handle.read())}
    assert called == set(slim.STRIPE_SERVICES)
