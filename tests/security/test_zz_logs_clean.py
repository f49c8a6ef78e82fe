"""After the whole suite: no log line holds a secret or password the tests used.

Runs last (tests/security/conftest.py moves it to the end of the session). It reads the
in-process log lines (tests/security/logcapture.py), the log of the real `chalice local`
server (`live_server`, which it drives once more with fresh secrets) and of any server the
security suite started.
"""
from __future__ import annotations

import json
import re

import requests

from tests import conftest as shared
from tests.security import logcapture
from tests.security.conftest import SERVER_LOGS

JWT_SHAPE = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]+")
BCRYPT_HASH = re.compile(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}")
FIXED_SECRETS = (
    shared.PASSWORD, shared.JWT_SECRET, shared.ASSEMBLYAI_KEY, shared.OPENAI_KEY,
    shared.TWITCH_CLIENT_SECRET, shared.STRIPE_KEY, shared.STRIPE_WEBHOOK_SECRET,
)


def drive(server) -> set[str]:
    """Register, log in (right and wrong), refresh, read and log out; return the secrets used."""
    email, password = shared.unique_email("logcheck"), "log-check password 9f3a77"
    post = lambda path, body, token=None: requests.post(  # noqa: E731
        server.url + path, headers=shared.json_headers(token), data=json.dumps(body), timeout=30
    )
    session = post("/auth/register", {"email": email, "password": password}).json()
    assert post("/auth/login", {"email": email, "password": "wrong " + password}).status_code == 401
    login = post("/auth/login", {"email": email, "password": password}).json()
    rotated = post("/auth/refresh", {"refresh_token": login["refresh_token"]}).json()
    requests.get(server.url + "/auth/user", headers=shared.json_headers(rotated["token"]), timeout=30)
    post("/auth/logout", {"refresh_token": rotated["refresh_token"]})
    return {password, session["token"], session["refresh_token"], login["token"],
            login["refresh_token"], rotated["token"], rotated["refresh_token"]}


def leaks(lines: list[str], secrets: set[str]) -> list[str]:
    found = []
    for line in lines:
        if JWT_SHAPE.search(line) or BCRYPT_HASH.search(line):
            found.append(line[:300])
            continue
        for secret in secrets:
            if secret in line:
                found.append(f"{secret[:4]}... in {line[:300]}")
    return found


def test_no_secret_in_any_log(live_server):
    used = drive(live_server)
    secrets = {s for s in (*FIXED_SECRETS, *used, *logcapture.SEEN_SECRETS) if len(s) >= 8}
    in_process = logcapture.lines()
    assert any('"message": "request"' in line for line in in_process), "log capture saw nothing"
    server_lines = live_server.log().splitlines()
    assert any("/auth/login" in line for line in server_lines)
    for path in SERVER_LOGS:
        with open(path, encoding="utf-8", errors="replace") as handle:
            server_lines += handle.read().splitlines()
    found = leaks(in_process + server_lines, secrets)
    print(f"log check: {len(in_process)} in-process lines, {len(server_lines)} server lines, "
          f"{len(secrets)} secrets looked for, {len(found)} leaks")
    assert not found, found[:5]
