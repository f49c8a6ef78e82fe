"""`make run`: the whole service on a laptop, with no AWS account.

1. AWS: use `AWS_ENDPOINT_URL` if it is set (DynamoDB Local, a shared moto, ...); otherwise
   start the embedded AWS (moto's server) on 127.0.0.1.
2. Create whatever is missing of our tables, bucket and queues (infra.bootstrap: the same
   definitions deployment uses).
3. Serve a built-in sandbox for every provider that has no key, and point the app at it.
4. Deliver SQS messages and schedules to the app's own handlers (devstack.local_events).
5. Serve the API with `chalice local --stage local` on PORT (default 8000).
Ctrl-C (or SIGTERM) stops everything; the API server runs in its own process group so no
process is left behind.
"""
from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import requests

from devstack import local_gateway
from devstack.embedded_aws import EmbeddedAws

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
logger = logging.getLogger("devstack")


def _say(message: str) -> None:
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def _aws(env: dict[str, str]) -> EmbeddedAws | None:
    env.setdefault("AWS_ACCESS_KEY_ID", "local")
    env.setdefault("AWS_SECRET_ACCESS_KEY", "local")
    env.setdefault("AWS_DEFAULT_REGION", env.get("AWS_REGION", "us-east-1"))
    if env.get("AWS_ENDPOINT_URL"):
        return None
    aws = EmbeddedAws(port=int(env.get("LOCAL_AWS_PORT", "0"))).start()
    env["AWS_ENDPOINT_URL"] = aws.url
    return aws


def _sandboxes(env: dict[str, str]) -> tuple[list[Any], dict[str, str]]:
    """Start a fake for each provider without a key; returns the servers and a status table."""
    from devstack.sandbox import start_sandboxes

    return start_sandboxes(env)


CHALICE_LOCAL = "--chalice-local"
LISTEN_BACKLOG = 128


def chalice_local(args: list[str]) -> None:
    """`chalice <args>` (the local server) with a listen backlog that survives bursts, and
    API Gateway's own error responses rendered as deployed (devstack.local_gateway).

    chalice's dev server keeps socketserver's default backlog of 5: twenty clients
    connecting at once get connection resets. Its autoreloader re-executes `sys.argv`
    for the worker, so `sys.argv` is set to a command that comes back here.
    """
    import chalice.local
    from chalice.cli import cli

    chalice.local.ThreadedHTTPServer.request_queue_size = LISTEN_BACKLOG
    local_gateway.install()  # deployed Gateway Responses: our envelope and CORS
    sys.argv = [sys.executable, "-m", "devstack.run", CHALICE_LOCAL, *args]
    cli.main(args=args, prog_name="chalice", obj={})


def _wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"chalice local exited with status {process.returncode}")
        try:
            if requests.get(url + "/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the API did not become healthy at {url} within {timeout:.0f}s")


STATE_FILE_VARIABLE = "DEVSTACK_STATE_FILE"  # tests point it elsewhere


def state_file() -> str:
    return os.environ.get(STATE_FILE_VARIABLE) or os.path.join(ROOT, ".local", "devstack.json")
# What an operator tool needs to reach this stack (python -m chalicelib.ops.admin reads it).
STATE_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                   "STAGE")


def write_state(env: dict[str, str], api_url: str, sandboxed_stripe: bool) -> None:
    """Where this stack runs, for `python -m chalicelib.ops.admin` (git-ignored, owner-only, removed
    at exit). The sandbox Stripe's key and address are included; a real key never is."""
    names = list(STATE_VARIABLES) + [name for name in env if name.endswith("_TABLE")]
    if sandboxed_stripe:
        names += ["STRIPE_SECRET_KEY", "STRIPE_API_BASE"]
    state = {"pid": os.getpid(), "api_url": api_url,
             "env": {name: env[name] for name in names if env.get(name)}}
    path = state_file()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    descriptor = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump(state, handle, indent=2)
    os.replace(path + ".tmp", path)


def remove_state() -> None:
    try:
        with open(state_file(), encoding="utf-8") as handle:
            if json.load(handle).get("pid") != os.getpid():
                return  # another `make run` wrote it since
        os.remove(state_file())
    except (OSError, ValueError):
        pass


def main() -> int:
    env = dict(os.environ)
    sandboxed_stripe = not env.get("STRIPE_SECRET_KEY")
    env["STAGE"] = "local"
    port = env.setdefault("PORT", "8000")
    host = env.setdefault("HOST", "127.0.0.1")
    os.environ.update(env)

    from chalicelib.core import logs

    logs.configure(env.get("LOG_LEVEL", "INFO"))
    aws = _aws(env)
    os.environ.update(env)
    servers, providers = _sandboxes(env)
    os.environ.update(env)

    from chalicelib.core.settings import get_settings
    from infra.bootstrap import bootstrap

    created = bootstrap(get_settings())
    app_module = importlib.import_module("app")
    from devstack.local_events import EventLoops

    loops = EventLoops(app_module, schedule_every=int(env.get("LOCAL_SCHEDULE_SECONDS", "0")) or None).start()

    command = [sys.executable, "-m", "devstack.run", CHALICE_LOCAL, "local", "--stage", "local",
               "--host", host, "--port", port]
    if env.get("AUTORELOAD", "1") in ("0", "false"):
        command.append("--no-autoreload")
    api = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
    stop = threading.Event()

    def _shutdown(*_: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _shutdown)
    signal.signal(signal.SIGTERM, _shutdown)
    url = f"http://{host}:{port}"
    try:
        _wait_healthy(url, api)
        write_state(env, url, sandboxed_stripe)
        _say(f"API:       {url}   (try {url}/health; operator console: {url}/admin)")
        _say(f"AWS:       {env['AWS_ENDPOINT_URL']}  ({'embedded moto' if aws else 'from AWS_ENDPOINT_URL'})")
        _say(f"Resources: created {sum(len(v) for v in created.values())} missing (tables, bucket, queues)")
        for name, status in providers.items():
            _say(f"Provider:  {name:<10} {status}")
        _say("Press Ctrl-C to stop.")
        while not stop.is_set() and api.poll() is None:
            stop.wait(0.5)
    finally:
        if api.poll() is None:
            os.killpg(api.pid, signal.SIGTERM)
            try:
                api.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(api.pid, signal.SIGKILL)
                api.wait()
        remove_state()
        loops.stop()
        for server in servers:
            server.stop()
        if aws is not None:
            aws.stop()
        _say("Stopped.")
    return 0 if stop.is_set() else (api.returncode or 1)


if __name__ == "__main__":
    if sys.argv[1:2] == [CHALICE_LOCAL]:
        chalice_local(sys.argv[2:])
    sys.exit(main())
