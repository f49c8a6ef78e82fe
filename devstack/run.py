"""`make run`: the whole service on a laptop, with no AWS account.

1. Local data (devstack.local_data): the folder kept between runs (`.local/`), and the
   JWT_SECRET kept there when none is set, so tokens stay valid across restarts.
2. AWS: use `AWS_ENDPOINT_URL` if it is set (DynamoDB Local, a shared moto, ...); otherwise
   start the embedded AWS (moto's server) on 127.0.0.1 and write back the data saved by the
   last run (devstack.aws_state), saving it again at stop and while it changes.
3. Create whatever is missing of our tables, bucket and queues (infra.bootstrap: the same
   definitions deployment uses).
4. Serve a built-in sandbox for every provider that has no key, and point the app at it.
5. Deliver SQS messages and schedules to the app's own handlers (devstack.local_events).
6. Serve the API with `chalice local --stage local` on PORT (default 8000), in its own
   process group (devstack.chalice_local).
7. Print what is where (the banner), then wait.

It stops cleanly (API server, event loops, a last save, sandboxes, embedded AWS; nothing
left running) on SIGINT, SIGTERM or SIGHUP, when the API server exits, and when the process
that started it goes away or is on its way out (ParentWatch): GNU make passes only SIGTERM on
to its recipe, so a SIGINT sent to make alone (`kill -INT <make>`, rather than Ctrl-C to the
terminal's whole process group) would leave make waiting for this process forever.
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

from devstack import local_data
from devstack.embedded_aws import EmbeddedAws

ROOT = local_data.ROOT
logger = logging.getLogger("devstack")
STATE_FILE_VARIABLE = "DEVSTACK_STATE_FILE"  # tests may point it elsewhere
# What an operator tool needs to reach this stack (python -m chalicelib.ops.admin reads it).
STATE_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                   "STAGE")


def _say(message: str = "") -> None:
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def _shown(path: str) -> str:
    """A path as the banner shows it: relative to the project when inside it."""
    relative = os.path.relpath(path, ROOT)
    return path if relative.startswith("..") else relative + ("/" if os.path.isdir(path) else "")


def state_file() -> str:
    return os.environ.get(STATE_FILE_VARIABLE) or os.path.join(local_data.data_dir(), local_data.STATE_FILE)


def write_state(env: dict[str, str], api_url: str, sandboxed_stripe: bool) -> None:
    """Where this stack runs, for `python -m chalicelib.ops.admin` (git-ignored, owner-only,
    removed at exit). The sandbox Stripe's key and address are included; a real key never is."""
    names = list(STATE_VARIABLES) + [name for name in env if name.endswith("_TABLE")]
    if sandboxed_stripe:
        names += ["STRIPE_SECRET_KEY", "STRIPE_API_BASE"]
    state = {"pid": os.getpid(), "api_url": api_url,
             "env": {name: env[name] for name in names if env.get(name)}}
    path = state_file()
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
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


def _aws(env: dict[str, str]) -> EmbeddedAws | None:
    env.setdefault("AWS_ACCESS_KEY_ID", "local")
    env.setdefault("AWS_SECRET_ACCESS_KEY", "local")
    env.setdefault("AWS_DEFAULT_REGION", env.get("AWS_REGION", "us-east-1"))
    if env.get("AWS_ENDPOINT_URL"):
        return None
    aws = EmbeddedAws(port=int(env.get("LOCAL_AWS_PORT", "0"))).start()
    env["AWS_ENDPOINT_URL"] = aws.url
    return aws


def _jwt_secret(env: dict[str, str], directory: str | None) -> str:
    """Sets JWT_SECRET when it is not set; returns the banner's line about it."""
    if env.get("JWT_SECRET"):
        return "from the environment"
    env["JWT_SECRET"], made = local_data.jwt_secret(directory)
    if directory is None:
        return "generated for this run only (LOCAL_DATA=off): tokens end with it"
    where = _shown(os.path.join(directory, local_data.JWT_SECRET_FILE))
    return f"{'generated and kept' if made else 'kept'} in {where}: tokens stay valid across restarts"


class ParentWatch:
    """Whether the process that started this one is gone, or is a make that got a fatal signal.

    On a fatal signal GNU make resets that signal to its default, blocks it and waits for its
    recipe to end before it dies: /proc/<make>/status then shows the signal no longer caught.
    That is how `kill -INT <make>` reaches us (on Linux; elsewhere only a parent that is gone).
    """

    FATAL = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)

    def __init__(self) -> None:
        self.pid = os.getppid()
        self.caught = self._caught() if self._command() == "make" else None

    def _command(self) -> str:
        try:
            with open(f"/proc/{self.pid}/comm", encoding="utf-8") as handle:
                return handle.read().strip()
        except OSError:
            return ""

    def _caught(self) -> int | None:
        """The parent's caught-signals mask (bit n-1 for signal n), or None when unknown."""
        try:
            with open(f"/proc/{self.pid}/status", encoding="utf-8") as handle:
                for line in handle:
                    if line.startswith("SigCgt:"):
                        return int(line.split()[1], 16)
        except (OSError, ValueError, IndexError):
            pass
        return None

    def gone(self) -> bool:
        if os.getppid() != self.pid:
            return True
        if self.caught is None:
            return False
        now = self._caught()
        return now is not None and any(self.caught & ~now & (1 << (sig - 1)) for sig in self.FATAL)


def _keep_data(aws: EmbeddedAws | None, directory: str | None, settings: Any,
               env: dict[str, str]) -> tuple[Any, str]:
    """Write back the embedded AWS's saved data and keep saving it; (the saver or None, the
    banner's line about local data)."""
    if aws is None:
        return None, "not kept by make run: AWS_ENDPOINT_URL points at your own store"
    if directory is None:
        return None, "not kept (LOCAL_DATA=off): everything is gone at stop"
    from devstack.aws_state import AwsState, Resources

    saver = AwsState(aws, directory, settings.region, Resources.of(settings))
    restored, problems = saver.restore()
    every = float(env.get("LOCAL_SAVE_SECONDS") or 10)
    saver.start(every)
    line = (f"{_shown(directory)} (restored {restored.counts()} saved {restored.saved_at})"
            if restored else f"{_shown(directory)} (empty: first run or after `make reset`)")
    line += f"; saved at stop and every {every:g} s while it changes; `make reset` wipes it"
    if problems:
        line += f"; NOT ALL RESTORED: {'; '.join(problems)}"
    return saver, line


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


def _stop_signals(stop: threading.Event) -> None:
    def _shutdown(*_: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _shutdown)  # also when started in the background, which ignores it
    signal.signal(signal.SIGTERM, _shutdown)
    hangup = getattr(signal, "SIGHUP", None)
    if hangup is not None and signal.getsignal(hangup) is not signal.SIG_IGN:  # under nohup, keep running
        signal.signal(hangup, _shutdown)


def _stop_api(api: subprocess.Popen[bytes]) -> None:
    """The API server and its reloader's worker: their whole process group."""
    try:
        os.killpg(api.pid, signal.SIGTERM)
        api.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(api.pid, signal.SIGKILL)
        api.wait()
    except ProcessLookupError:
        pass
    try:  # the worker, if the reloader went first
        os.killpg(api.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def main() -> int:
    env = dict(os.environ)
    sandboxed_stripe = not env.get("STRIPE_SECRET_KEY")
    env["STAGE"] = "local"
    port = env.setdefault("PORT", "8000")
    host = env.setdefault("HOST", "127.0.0.1")
    directory = local_data.data_dir(env) if local_data.keeping(env) else None
    jwt_line = _jwt_secret(env, directory)
    os.environ.update(env)

    from chalicelib.core import logs

    logs.configure(env.get("LOG_LEVEL", "INFO"))
    stop = threading.Event()
    _stop_signals(stop)
    parent = ParentWatch()
    aws = _aws(env)
    os.environ.update(env)
    from devstack.sandbox import banner_lines, start_sandboxes

    servers, providers = start_sandboxes(env)
    os.environ.update(env)

    from chalicelib.core.settings import get_settings
    from infra.bootstrap import bootstrap

    settings = get_settings()
    created = bootstrap(settings)
    saver, data_line = _keep_data(aws, directory, settings, env)
    app_module = importlib.import_module("app")
    from devstack.local_events import EventLoops

    loops = EventLoops(app_module, schedule_every=int(env.get("LOCAL_SCHEDULE_SECONDS", "0")) or None).start()
    command = [sys.executable, "-m", "devstack.chalice_local", "local", "--stage", "local",
               "--host", host, "--port", port]
    if env.get("AUTORELOAD", "1") in ("0", "false"):
        command.append("--no-autoreload")
    api = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
    url = f"http://{host}:{port}"
    try:
        _wait_healthy(url, api)
        write_state(env, url, sandboxed_stripe)
        _say(f"API:         {url}   (try {url}/health; operator console: {url}/admin)")
        _say(f"AWS:         {env['AWS_ENDPOINT_URL']}  ({'embedded moto' if aws else 'from AWS_ENDPOINT_URL'}); "
             f"created {sum(len(v) for v in created.values())} missing tables, buckets, queues")
        _say(f"Local data:  {data_line}")
        _say(f"JWT_SECRET:  {jwt_line}")
        for line in banner_lines(providers, env, url):
            _say(line)
        _say(f"Admin:       make admin EMAIL=you@example.com  (makes that account an admin of {url}/admin)")
        _say(f"Walkthrough: make walkthrough  (register, pay, live captions, ask, catch-up, history against {url})")
        _say("Press Ctrl-C to stop.")
        while not stop.is_set() and api.poll() is None:
            if parent.gone():  # whoever started us is gone, or is make stopping on a signal
                logger.warning("the parent process %s is gone or stopping: stopping too", parent.pid)
                stop.set()
            stop.wait(0.5)
    finally:
        _stop_api(api)
        remove_state()
        loops.stop()
        if saver is not None:
            try:
                saved = saver.stop()
                _say(f"Saved local data: {saved.counts()} in {_shown(saver.path)}")
            except Exception:
                logger.exception("saving local data at stop failed; the last periodic save is kept")
        for server in servers:
            server.stop()
        if aws is not None:
            aws.stop()
        _say("Stopped.")
    return 0 if stop.is_set() else (api.returncode or 1)


if __name__ == "__main__":
    sys.exit(main())
