"""Where `make run` keeps its data between runs, and `make reset`, which wipes it.

Everything lives in one git-ignored folder, `LOCAL_DATA_DIR` (default `.local/` in the
project), owner-only:

- `aws-state.zip`: the embedded AWS's tables, objects and queued messages (devstack.aws_state);
- `jwt-secret`: the JWT_SECRET generated at the first `make run` (when none is set), so
  tokens stay valid across restarts;
- `devstack.json`: while `make run` is up, how to reach it (for `make admin`); removed at stop.

`LOCAL_DATA=off make run` starts empty and keeps nothing (a secret for that run only).
The test suite points LOCAL_DATA_DIR at a temporary folder: it never reads or writes yours.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
from typing import Mapping

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIR_VARIABLE = "LOCAL_DATA_DIR"
SWITCH_VARIABLE = "LOCAL_DATA"  # "off": keep nothing
JWT_SECRET_FILE = "jwt-secret"
STATE_FILE = "devstack.json"


def data_dir(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return os.path.abspath(env.get(DIR_VARIABLE) or os.path.join(ROOT, ".local"))


def keeping(env: Mapping[str, str] | None = None) -> bool:
    """Whether `make run` keeps data between runs (the default)."""
    env = os.environ if env is None else env
    return env.get(SWITCH_VARIABLE, "on").strip().lower() not in ("off", "0", "false", "no")


def _private_dir(directory: str) -> str:
    os.makedirs(directory, mode=0o700, exist_ok=True)
    return directory


def jwt_secret(directory: str | None) -> tuple[str, bool]:
    """(the local JWT secret, whether it was just made): read from `directory/jwt-secret`,
    or generated and written there (mode 600); `directory` None: a new one, not kept."""
    if directory is None:
        return secrets.token_urlsafe(48), True
    path = os.path.join(_private_dir(directory), JWT_SECRET_FILE)
    try:
        with open(path, encoding="utf-8") as handle:
            secret = handle.read().strip()
        if len(secret) >= 32:
            return secret, False
    except FileNotFoundError:
        pass
    secret = secrets.token_urlsafe(48)
    descriptor = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(secret + "\n")
    os.replace(path + ".tmp", path)
    return secret, True


def running_stack(directory: str) -> int | None:
    """The pid of the `make run` whose state file is in `directory`, if it is alive."""
    try:
        with open(os.path.join(directory, STATE_FILE), encoding="utf-8") as handle:
            pid = json.load(handle).get("pid")
        if isinstance(pid, int):
            os.kill(pid, 0)
            return pid
    except (OSError, ValueError, AttributeError):
        pass
    return None


def reset(directory: str) -> int:
    """`make reset`: delete the kept data (refused while a `make run` uses it)."""
    pid = running_stack(directory)
    if pid is not None:
        sys.stderr.write(f"make run (pid {pid}) is using {directory}: stop it first, then reset.\n")
        return 1
    if os.path.isdir(directory):
        shutil.rmtree(directory)
        sys.stdout.write(f"Removed {directory}: the next `make run` starts empty, with a new JWT secret.\n")
    else:
        sys.stdout.write(f"Nothing to remove: {directory} does not exist.\n")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] != ["reset"]:
        sys.exit("usage: python -m devstack.local_data reset")
    sys.exit(reset(data_dir()))
