"""Accounts over real HTTP against `python -m devstack.run` (chalice local + embedded AWS)."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import jwt
import pytest
import requests

from tests.conftest import ORIGIN, OTHER_ORIGIN, PASSWORD, unique_email
from tests.functional.test_accounts import BAD_REGISTRATIONS, PROFILE_FIELDS, SESSION_USER_FIELDS

pytestmark = pytest.mark.e2e


def envelope(response: requests.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["message"], str) and body["code"]
    if code:
        assert body["code"] == code, body
    assert "Traceback" not in response.text and 'File "' not in response.text
    return body


def register(api, email=None, password=PASSWORD):
    return api.call("POST", "/auth/register", {"email": email or unique_email("e2e"),
                                               "password": password, "name": "E2E"}, origin=ORIGIN)


def test_health(api):
    response = api.call("GET", "/health")
    assert response.status_code == 200
    assert response.json()["status"] == "healthy" and response.json()["dynamodb"] == "connected"


def test_register_login_and_user(api):
    email = unique_email("e2e")
    registered = register(api, email=email)
    assert registered.status_code == 201, registered.text
    body = registered.json()
    assert SESSION_USER_FIELDS <= set(body["user"])
    assert body["user"]["token"] != body["token"] and body["user"]["credits_balance"] == 200
    assert api.call("GET", "/auth/user", token=body["user"]["token"]).status_code == 200  # session token
    assert body["expires_in"] == 900 and body["refresh_token"]
    assert registered.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Origin" in registered.headers["Vary"]

    logged_in = api.call("POST", "/auth/login", {"email": email.upper(), "password": PASSWORD})
    assert logged_in.status_code == 200, logged_in.text
    session = logged_in.json()
    assert session["user"]["user_id"] == body["user"]["user_id"]
    assert jwt.get_unverified_header(session["user"]["token"])["alg"] == "HS256"
    assert jwt.get_unverified_header(session["token"])["alg"] == "HS256"

    user = api.call("GET", "/auth/user", token=session["token"], origin=ORIGIN)
    assert user.status_code == 200, user.text
    profile = user.json()["user"]
    assert PROFILE_FIELDS <= set(profile)
    assert profile["email"] == email and profile["credits_balance"] == 200
    assert user.headers["Access-Control-Allow-Origin"] == ORIGIN


def test_login_failures_are_indistinguishable(api):
    email = unique_email("e2e")
    register(api, email=email)
    wrong = api.call("POST", "/auth/login", {"email": email, "password": "wrong password"})
    unknown = api.call("POST", "/auth/login", {"email": unique_email("e2e"), "password": PASSWORD})
    assert envelope(wrong, 401) == envelope(unknown, 401)


def test_refresh_rotation_reuse_detection_and_logout(api):
    session = register(api).json()
    rotated = api.call("POST", "/auth/refresh", {"refresh_token": session["refresh_token"]})
    assert rotated.status_code == 200, rotated.text
    rotated = rotated.json()
    assert rotated["refresh_token"] != session["refresh_token"] and rotated["expires_in"] == 900
    assert api.call("GET", "/auth/user", token=rotated["token"]).status_code == 200

    newest = api.call("POST", "/auth/refresh", {"refresh_token": rotated["refresh_token"]}).json()
    reuse = api.call("POST", "/auth/refresh", {"refresh_token": session["refresh_token"]})
    envelope(reuse, 401, "refresh_token_reused")
    envelope(api.call("POST", "/auth/refresh", {"refresh_token": newest["refresh_token"]}), 401)

    other = api.call("POST", "/auth/login", {"email": session["user"]["email"], "password": PASSWORD}).json()
    logout = api.call("POST", "/auth/logout", {"refresh_token": other["refresh_token"]}, origin=ORIGIN)
    assert logout.status_code == 204 and logout.content == b""
    assert logout.headers["Access-Control-Allow-Origin"] == ORIGIN
    envelope(api.call("POST", "/auth/refresh", {"refresh_token": other["refresh_token"]}), 401)
    assert api.call("POST", "/auth/logout", {"refresh_token": "never-issued-" + "n" * 40}).status_code == 204


def test_user_requires_a_valid_token(api):
    session = register(api).json()
    claims = jwt.decode(session["token"], options={"verify_signature": False})
    forged = jwt.encode(claims, "attacker-secret-" + "a" * 40, algorithm="HS256")
    for headers in ({}, {"Authorization": "Bearer " + forged},
                    {"Authorization": "Bearer " + session["refresh_token"]}):
        response = api.call("GET", "/auth/user", headers=headers)
        assert response.status_code == 401, response.text
        body = response.json()
        assert isinstance(body.get("error") or body.get("message"), str)


@pytest.mark.parametrize("path,method", [("/auth/user", "GET"), ("/auth/register", "POST"),
                                         ("/auth/refresh", "POST"), ("/health", "GET")])
def test_cors_preflight(api, path, method):
    allowed = api.call("OPTIONS", path, headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization,content-type,idempotency-key"})
    assert allowed.status_code in (200, 204), allowed.text
    assert allowed.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Origin" in allowed.headers["Vary"]
    allow_headers = {h.strip().lower() for h in allowed.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "idempotency-key"} <= allow_headers
    assert method in allowed.headers["Access-Control-Allow-Methods"]

    refused = api.call("OPTIONS", path, headers={"Origin": OTHER_ORIGIN,
                                                 "Access-Control-Request-Method": method})
    assert not [h for h in refused.headers if h.lower().startswith("access-control-")]
    assert refused.status_code >= 400


def test_refused_origin_gets_no_cors_on_real_responses(api):
    for response in (api.call("GET", "/health", origin=OTHER_ORIGIN),
                     api.call("POST", "/auth/register", {"email": "bad"}, origin=OTHER_ORIGIN)):
        assert response.status_code in (200, 422)
        assert not [h for h in response.headers if h.lower().startswith("access-control-")]


@pytest.mark.parametrize("body,status,field", [c[1:] for c in BAD_REGISTRATIONS],
                         ids=[c[0] for c in BAD_REGISTRATIONS])
def test_bad_registration_input(api, body, status, field):
    raw = body if isinstance(body, bytes) else None
    response = api.call("POST", "/auth/register", None if raw is not None else body, raw=raw,
                        origin=ORIGIN)
    body = envelope(response, status)
    if field:
        assert body["field"] == field
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN


def test_twenty_parallel_registrations_of_one_email(api):
    email = unique_email("race")
    start = threading.Barrier(20)

    def attempt(i: int) -> int:
        session = requests.Session()  # one connection per racer
        start.wait(timeout=30)
        response = session.post(api.base_url + "/auth/register", timeout=60,
                                json={"email": email, "password": f"{PASSWORD}-{i}"})
        return response.status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(attempt, range(20)))
    assert sorted(statuses) == [201] + [409] * 19, statuses
    winners = [i for i, s in enumerate(statuses) if s == 201]
    winner_password = f"{PASSWORD}-{winners[0]}"
    assert api.call("POST", "/auth/login", {"email": email, "password": winner_password}).status_code == 200


def test_uses_the_endpoint_it_is_given(live_server, aws_endpoint):
    """With AWS_ENDPOINT_URL set, `make run` starts no AWS of its own and uses that one."""
    log = live_server.log()
    # the session already bootstrapped it; the data lives there, so make run keeps none itself
    assert f"AWS:         {aws_endpoint}  (from AWS_ENDPOINT_URL); created 0 missing" in log
    assert "(embedded moto)" not in log
    assert "Local data:  not kept by make run: AWS_ENDPOINT_URL points at your own store" in log
