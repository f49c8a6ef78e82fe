"""Rate limits and lockout under parallel load: threads over real HTTP against `chalice local`.

Each limit is one conditional write in DynamoDB, so however the requests interleave,
exactly `limit` of them get through. The server runs with small limits (LIMITED_ENV).
"""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from chalicelib.accounts import auth as accounts
from chalicelib.aws import store
from chalicelib.web.ratelimit import subject_hash, window
from tests.conftest import PASSWORD, json_headers, unique_email
from tests.security.conftest import LIMITED_WINDOW

pytestmark = pytest.mark.e2e
THREADS = 16


def parallel(count: int, call) -> list[requests.Response]:
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        return list(pool.map(call, range(count)))


def register(server, email: str) -> requests.Response:
    return requests.post(
        server.url + "/auth/register", headers=json_headers(),
        data=json.dumps({"email": email, "password": PASSWORD}), timeout=30,
    )


def test_per_user_limit_holds_under_parallel_requests(limited_server):
    session = register(limited_server, unique_email("burst")).json()
    headers = json_headers(session["token"])
    responses = parallel(
        30, lambda _: requests.get(limited_server.url + "/auth/user", headers=headers, timeout=30)
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) == 10 and statuses.count(429) == 20, statuses
    remaining = sorted(int(r.headers["X-RateLimit-Remaining"]) for r in responses if r.status_code == 200)
    assert remaining == list(range(10))  # every count from 1 to 10 was handed out exactly once
    for refused in (r for r in responses if r.status_code == 429):
        assert 1 <= int(refused.headers["Retry-After"]) <= LIMITED_WINDOW
        assert refused.json()["code"] == "rate_limited"


def test_registration_per_ip_holds_under_parallel_signups(limited_server):
    """Signup-credit farming: 20 parallel sign-ups from one address, 5 accounts at most.

    The registration above already used one of this window's five.
    """
    emails = [unique_email("farm") for _ in range(20)]
    responses = parallel(20, lambda i: register(limited_server, emails[i]))
    created = [email for email, r in zip(emails, responses) if r.status_code == 201]
    assert len(created) == 4, sorted(r.status_code for r in responses)
    assert {r.status_code for r in responses} == {201, 429}
    claimed = [email for email in emails if store.get("emails", email=email) is not None]
    assert sorted(claimed) == sorted(created)


def test_lockout_holds_under_parallel_guessing(limited_server, aws_endpoint):
    # Created in-process: this window's sign-ups from 127.0.0.1 are used up above.
    email = unique_email("victim")
    accounts.register(email, PASSWORD, "Victim")

    def guess(i: int) -> requests.Response:
        return requests.post(
            limited_server.url + "/auth/login", headers=json_headers(),
            data=json.dumps({"email": email, "password": f"wrong guess {i:04d}"}), timeout=30,
        )

    responses = parallel(40, guess)
    assert {r.status_code for r in responses} == {401}
    assert len({r.text for r in responses}) == 1  # locked or wrong: one answer
    start, _ = window(time.time(), LIMITED_WINDOW)
    counter = store.get(
        "rate-limits", limit_key=f"login#account#{subject_hash(email)}#{LIMITED_WINDOW}#{start}"
    )
    assert counter["attempts"] == 5  # only five passwords were ever checked
    right = requests.post(
        limited_server.url + "/auth/login", headers=json_headers(),
        data=json.dumps({"email": email, "password": PASSWORD}), timeout=30,
    )
    assert right.status_code == 401 and right.text == responses[0].text
