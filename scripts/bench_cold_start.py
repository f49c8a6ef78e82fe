"""Cold starts of the real deployment package, run as Lambda runs it.

    python scripts/bench_cold_start.py [--before REF] [--zip PATH] [--no-callgrind]

Builds deployment.zip as `make package` does (infra.deploy.build_package; or measures --zip),
and, with --before, the package of a git ref as well (`git archive REF`, built by that ref's
own infra code). Each package is unzipped alone, and each measured invocation is a fresh
`python3.11 -S -B` (no site-packages, no .pyc written: /var/task is read-only) whose only
path besides the standard library is the package, importing the handler as the Lambda
runtime does and calling it once with an API Gateway event, with the prod stage's
environment, secrets in SSM (SecureString, behind SECRETS_SSM_PREFIX) and the tables,
all on moto's server:

- `jwt_auth`: the authorizer's first token (TOKEN event), including the SSM read;
- `api_handler`: the first `GET /credits/balance` (its authorizer context as the gateway
  passes it), including the SSM read and the DynamoDB GetItem.

Instructions are counted with valgrind's callgrind (they repeat exactly from run to run, where
times on a shared machine do not); CPU seconds (user + system, median of 3 runs without
valgrind) are printed beside them. The Lambda runtime's own bootstrap is not counted.
docs/performance.md quotes the output.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
import zipfile
from dataclasses import replace
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

STAGE = "prod"
ORIGIN = "chrome-extension://abcdefghijklmnopabcdefghijklmnop"
RUNTIME = "python3.11"
DRIVER = r"""
import json, os, sys, time
class Context:
    aws_request_id = "bench-request"
    function_name = os.environ["AWS_LAMBDA_FUNCTION_NAME"]
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:" + function_name
    def get_remaining_time_in_millis(self):
        return 10000
import app
handler = getattr(app, os.environ["BENCH_HANDLER"])
result = handler(json.loads(os.environ["BENCH_EVENT"]), Context())
sys.stdout.write("RESULT " + json.dumps(result) + "\n")
"""


def build_current(out_dir: str) -> str:
    """deployment.zip of the working tree, exactly as `make package STAGE=prod` builds it."""
    from infra import deploy

    cfg = deploy.stage_config(STAGE)
    cfg = replace(cfg, environment={**cfg.environment, "ALLOWED_ORIGINS": ORIGIN})
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1"}
    env.pop("AWS_ENDPOINT_URL", None)

    def runner(command: list[str]) -> None:
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)

    deploy.build_package(cfg, out_dir, runner)
    return os.path.join(out_dir, "deployment.zip")


def build_ref(ref: str, out_dir: str) -> str:
    """deployment.zip of a git ref, built by that ref's own infra code."""
    source = os.path.join(out_dir, "source")
    os.makedirs(source)
    archive = subprocess.run(["git", "-C", ROOT, "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", source], input=archive, check=True)
    code = (
        "import os, subprocess, sys; from dataclasses import replace; sys.path.insert(0, os.getcwd());"
        "from infra import deploy; cfg = deploy.stage_config('prod');"
        f"cfg = replace(cfg, environment={{**cfg.environment, 'ALLOWED_ORIGINS': {ORIGIN!r}}});"
        "run = lambda c: subprocess.run(c, check=True, stdout=subprocess.DEVNULL);"
        f"deploy.build_package(cfg, {out_dir!r}, run)"
    )
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1", "PATH": os.path.dirname(sys.executable) + ":" +
           os.environ.get("PATH", "")}
    env.pop("AWS_ENDPOINT_URL", None)
    subprocess.run([sys.executable, "-c", code], cwd=source, check=True, env=env, stdout=subprocess.DEVNULL)
    return os.path.join(out_dir, "deployment.zip")


def lambda_env(endpoint: str, function: str, prefix: str) -> dict[str, str]:
    """The prod stage's variables from .chalice/config.json, plus what Lambda itself sets."""
    with open(os.path.join(ROOT, ".chalice", "config.json"), encoding="utf-8") as handle:
        config = json.load(handle)
    env = {**config.get("environment_variables", {}), **config["stages"][STAGE]["environment_variables"]}
    env.update({
        "ALLOWED_ORIGINS": ORIGIN, "SECRETS_SSM_PREFIX": prefix,
        "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "ASIABENCHKEY", "AWS_SECRET_ACCESS_KEY": "bench-secret",
        "AWS_SESSION_TOKEN": "bench-session-token", "AWS_ENDPOINT_URL": endpoint,
        "AWS_LAMBDA_FUNCTION_NAME": function, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
        "LAMBDA_TASK_ROOT": "/var/task", "LANG": "en_US.UTF-8", "TZ": ":UTC",
        "PATH": "/usr/local/bin:/usr/bin:/bin",
    })
    return env


def prepare(endpoint: str) -> dict[str, Any]:
    """Secrets in SSM, the prod tables, a user with a balance and a token: what the runs need."""
    import boto3

    from chalicelib.accounts import tokens
    from chalicelib.aws import store
    from chalicelib.credits import ledger
    from chalicelib.core.settings import load_settings, reset_settings
    from infra.bootstrap import bootstrap

    prefix = f"/transcription-backend/bench-{uuid.uuid4().hex[:6]}/"
    secret = "bench-jwt-" + uuid.uuid4().hex + uuid.uuid4().hex
    env = lambda_env(endpoint, "bench", prefix)
    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
    ssm = boto3.session.Session().client("ssm", region_name="us-east-1", endpoint_url=endpoint)
    values = {"JWT_SECRET": secret, "STRIPE_SECRET_KEY": "sk_test_bench", "STRIPE_WEBHOOK_SECRET": "whsec_bench",
              "ASSEMBLYAI_API_KEY": "bench-assemblyai", "OPENAI_API_KEY": "bench-openai"}
    for name, value in values.items():
        ssm.put_parameter(Name=prefix + name, Value=value, Type="SecureString", Overwrite=True)
    reset_settings()
    settings = load_settings({**env, "JWT_SECRET": secret})
    bootstrap(settings)
    os.environ["STAGE"] = STAGE
    os.environ["ALLOWED_ORIGINS"] = ORIGIN
    os.environ["JWT_SECRET"] = secret
    reset_settings()
    user_id = uuid.uuid4().hex
    now = store.iso()
    store.ddb().transact_write_items(TransactItems=[
        {"Put": {"TableName": store.table_name("users"),
                 "Item": store.to_item({"user_id": user_id, "email": f"{user_id}@example.com", "credits_balance": 120,
                                        "total_credits_purchased": 0, "total_usage": 0, "subscription_tier": "free",
                                        "is_active": True, "created_at": now}),
                 "ConditionExpression": "attribute_not_exists(user_id)"}},
        ledger.signup_grant_put(user_id, 120, now),
    ])
    token = tokens.issue_access_token(tokens.Identity(user_id=user_id, email=f"{user_id}@example.com"))
    return {"prefix": prefix, "user_id": user_id, "token": token}


def events(fixture: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    user_id = fixture["user_id"]
    authorizer_event = {"type": "TOKEN", "authorizationToken": f"Bearer {fixture['token']}",
                        "methodArn": "arn:aws:execute-api:us-east-1:123456789012:abc123/api/GET/credits/balance"}
    balance_event = {
        "resource": "/credits/balance", "path": "/credits/balance", "httpMethod": "GET",
        "headers": {"Origin": ORIGIN, "Host": "abc123.execute-api.us-east-1.amazonaws.com"},
        "multiValueHeaders": {"Origin": [ORIGIN]}, "queryStringParameters": None,
        "multiValueQueryStringParameters": None, "pathParameters": None, "stageVariables": None,
        "requestContext": {"resourcePath": "/credits/balance", "httpMethod": "GET", "path": "/api/credits/balance",
                           "requestId": uuid.uuid4().hex, "stage": "api", "identity": {"sourceIp": "203.0.113.9"},
                           "authorizer": {"principalId": user_id, "user_id": user_id,
                                          "email": f"{user_id}@example.com", "role": "user"}},
        "body": None, "isBase64Encoded": False,
    }
    return {"jwt_auth": ("jwt_auth", authorizer_event), "api_handler": ("app", balance_event)}


def runtime_python() -> str:
    """The interpreter itself (not a venv's or pyenv's wrapper, which valgrind would measure)."""
    python = os.path.join(sys.base_prefix, "bin", RUNTIME)
    if sys.version_info[:2] != (3, 11) or not os.path.exists(python):
        raise SystemExit(f"needs {RUNTIME}: run it with the project's venv")
    return python


def invoke(task_root: str, function: str, handler: str, event: dict[str, Any], endpoint: str, prefix: str,
           callgrind: bool) -> tuple[float | None, float, str]:
    """(instructions or None, CPU seconds, result line) of one cold invocation."""
    env = lambda_env(endpoint, function, prefix)
    env.update({"PYTHONPATH": task_root, "BENCH_HANDLER": handler, "BENCH_EVENT": json.dumps(event)})
    python = runtime_python()
    command = [python, "-S", "-B", "-c", DRIVER]
    if callgrind:
        command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"] + command
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(command, cwd=task_root, env=env, capture_output=True, text=True, timeout=1800)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = next((line for line in done.stdout.splitlines() if line.startswith("RESULT ")), "")
    if done.returncode != 0 or not result:
        raise RuntimeError(f"{function} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    instructions = None
    if callgrind:
        found = re.search(r"Collected\s*:\s*(\d+)", done.stderr)
        instructions = float(found.group(1)) if found else None
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return instructions, cpu, result


def measure(zip_path: str, endpoint: str, fixture: dict[str, Any], callgrind: bool) -> dict[str, dict[str, Any]]:
    task_root = tempfile.mkdtemp(prefix="bench-task-")
    try:
        with zipfile.ZipFile(zip_path) as archive:
            archive.extractall(task_root)
        results = {}
        for function, (handler, event) in events(fixture).items():
            cpu_runs = [invoke(task_root, function, handler, event, endpoint, fixture["prefix"], False)
                        for _ in range(3)]
            check = cpu_runs[0][2]
            if function == "api_handler" and '"statusCode": 200' not in check:
                raise RuntimeError(f"balance did not answer 200: {check[:300]}")
            if function == "jwt_auth" and fixture["user_id"] not in check:
                raise RuntimeError(f"authorizer did not allow: {check[:300]}")
            instructions = invoke(task_root, function, handler, event, endpoint, fixture["prefix"], True)[0] \
                if callgrind else None
            results[function] = {"instructions": instructions,
                                 "cpu_seconds": statistics.median(run[1] for run in cpu_runs)}
        results["zip_mib"] = {"instructions": None, "cpu_seconds": os.path.getsize(zip_path) / 2**20}
        return results
    finally:
        shutil.rmtree(task_root, ignore_errors=True)


def report(rows: dict[str, dict[str, dict[str, Any]]]) -> str:
    lines = [f"{'package':<10} {'zip MiB':>8} {'function':<12} {'instructions':>15} {'CPU s':>7}"]
    for name, result in rows.items():
        total_i, total_cpu = 0.0, 0.0
        for function in ("jwt_auth", "api_handler"):
            figures = result[function]
            total_i += figures["instructions"] or 0
            total_cpu += figures["cpu_seconds"]
            instructions = f"{figures['instructions']:,.0f}" if figures["instructions"] else "-"
            lines.append(f"{name:<10} {result['zip_mib']['cpu_seconds']:>8.1f} {function:<12} {instructions:>15} "
                         f"{figures['cpu_seconds']:>7.2f}")
        lines.append(f"{name:<10} {'':>8} {'both':<12} {total_i:>15,.0f} {total_cpu:>7.2f}")
    if len(rows) == 2:
        before, after = rows.values()
        ratio = sum(after[f]["instructions"] or 0 for f in ("jwt_auth", "api_handler")) / max(
            1, sum(before[f]["instructions"] or 0 for f in ("jwt_auth", "api_handler")))
        lines.append(f"after / before (instructions, both functions): {ratio:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", help="also measure the package of this git ref (e.g. main)")
    parser.add_argument("--zip", help="measure this deployment.zip instead of building the working tree's")
    parser.add_argument("--no-callgrind", action="store_true", help="CPU times only (fast)")
    args = parser.parse_args(argv)
    import logging

    logging.disable(logging.WARNING)
    from devstack.embedded_aws import EmbeddedAws

    scratch = tempfile.mkdtemp(prefix="bench-cold-")
    try:
        packages = {}
        if args.before:
            packages[args.before] = build_ref(args.before, os.path.join(scratch, "before"))
        packages["this tree"] = args.zip or build_current(os.path.join(scratch, "after"))
        with EmbeddedAws() as aws:
            os.environ["AWS_ENDPOINT_URL"] = aws.url
            fixture = prepare(aws.url)
            rows = {name: measure(path, aws.url, fixture, not args.no_callgrind) for name, path in packages.items()}
        sys.stdout.write(report(rows) + "\n")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
