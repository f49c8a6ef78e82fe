"""scripts/walkthrough.py, run as a developer runs it, against the suite's stack over real HTTP:
register, buy and pay on the Checkout page, live captions (start, renew, stop), ask, catch-up,
history. It is the README's walkthrough, so it must keep working."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import requests

pytestmark = pytest.mark.e2e

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "walkthrough.py")


def test_the_walkthrough_runs_every_step(live_server, stripe_to_server):
    result = subprocess.run([sys.executable, SCRIPT, "--api", live_server.url, "--live-seconds", "5"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    steps = re.findall(r"^\[(\d)/7\] (.+)$", out, re.M)
    assert [number for number, _ in steps] == [str(n) for n in range(1, 8)], steps
    assert re.search(r"the signed webhook reached the API: balance 200 -> 700", out)
    assert re.search(r"renew -> 200: token 2", out) and re.search(r"^    caption: \S", out, re.M)
    assert re.search(r"stopped: \d+ min billed, \d+ credits used", out)
    assert re.search(r"^    answer: \S", out, re.M) and re.search(r"^    summary: \S", out, re.M)
    assert re.search(r"catchup\s+\d+ credits", out) and re.search(r"ask\s+\d+ credits", out)
    email = re.search(r"Log in as (\S+) ", out).group(1)
    login = requests.post(live_server.url + "/auth/login", timeout=30,
                          json={"email": email, "password": "walkthrough password 123"})
    assert login.status_code == 200
    assert login.json()["user"]["credits_balance"] < 700  # live captions, ask and catch-up were paid


def test_the_walkthrough_says_where_it_failed():
    result = subprocess.run([sys.executable, SCRIPT, "--api", "http://127.0.0.1:9"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "FAILED at step 1" in result.stdout
