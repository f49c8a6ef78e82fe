"""Input limits: a body cap per route (413), bounded fields, unknown fields refused, bounded
query parameters, and text that is not text (lone surrogates) refused before it is stored."""
from __future__ import annotations

import json

import pytest

from chalicelib.core.validation import Schema
from chalicelib.web.middleware import GLOBAL_MAX_BODY_BYTES
from tests.conftest import PASSWORD, json_headers, unique_email
from tests.security.routes import all_routes

BODY_ROUTES = [r for r in all_routes() if r.method in ("POST", "PUT", "DELETE")]
SCHEMA_ROUTES = [r for r in BODY_ROUTES if isinstance(r.inputs.body, Schema)]


@pytest.fixture
def admin_token(client, new_user) -> str:
    """The operator console's routes refuse non-admins first: their bodies are checked as admin."""
    from chalicelib.ops import admin
    from chalicelib.aws.clients import client as aws_client

    session = new_user()
    admin.set_role(aws_client("dynamodb"), "local", session["user"]["email"], "admin")
    response = client.http.post("/auth/refresh", headers=json_headers(),
                                body=json.dumps({"refresh_token": session["refresh_token"]}))
    return json.loads(response.body)["token"]


def token_for(route, user_token: str, admin_token: str) -> str | None:
    if not route.authenticated:
        return None
    return admin_token if route.path.startswith("/admin/api/") else user_token


def send(client, route, body: bytes, token: str | None):
    return client.http.request(route.method, route.url(), headers=json_headers(token), body=body)


def test_every_body_schema_is_bounded_and_strict():
    for route in SCHEMA_ROUTES:
        schema = route.inputs.body
        assert not schema.allow_unknown, route.id
        assert schema.max_body_bytes <= GLOBAL_MAX_BODY_BYTES, route.id
        for name, spec in schema.fields.items():
            if spec.kind in (str, list):
                assert spec.max_length <= schema.max_body_bytes, (route.id, name)
            if spec.kind is int:
                assert spec.minimum is not None and spec.maximum is not None, (route.id, name)


@pytest.mark.parametrize("route", SCHEMA_ROUTES, ids=[r.id for r in SCHEMA_ROUTES])
def test_a_body_past_the_route_limit_is_413(route, client, new_user, env_override, admin_token):
    env_override(RATE_LIMITS_ENABLED="false")
    token = token_for(route, new_user()["token"], admin_token)
    limit = route.inputs.body.max_body_bytes
    r = send(client, route, json.dumps({"x": "a" * limit}).encode(), token)
    assert r.status_code == 413, r.body
    assert json.loads(r.body)["code"] == "payload_too_large"


def test_the_global_cap_applies_to_every_route(client, new_user, env_override, admin_token):
    env_override(RATE_LIMITS_ENABLED="false")
    token = new_user()["token"]
    oversized = b"{" + b" " * GLOBAL_MAX_BODY_BYTES + b"}"
    for route in BODY_ROUTES:
        r = send(client, route, oversized, token_for(route, token, admin_token))
        assert r.status_code == 413, route.id


def test_unknown_fields_are_refused(client, new_user, env_override, admin_token):
    env_override(RATE_LIMITS_ENABLED="false")
    token = new_user()["token"]
    for route in SCHEMA_ROUTES:
        r = send(client, route, json.dumps({"is_admin": True}).encode(), token_for(route, token, admin_token))
        assert r.status_code == 422, (route.id, r.body)
    # Even next to valid fields: a sign-up cannot smuggle in a role or a balance.
    r = client.http.post("/auth/register", headers=json_headers(), body=json.dumps(
        {"email": unique_email(), "password": PASSWORD, "role": "admin", "credits_balance": 10**9}))
    assert r.status_code == 422 and json.loads(r.body)["code"] == "unknown_field"


@pytest.mark.parametrize("text", ["\\ud800", "abc\\udfffdef", "\\udc00\\ud800"])
def test_lone_surrogates_are_refused_not_stored(client, text):
    email = unique_email("surrogate")
    body = '{"email": "%s", "password": "%s", "name": "%s"}' % (email, PASSWORD, text)
    r = client.http.post("/auth/register", headers=json_headers(), body=body.encode())
    assert r.status_code == 400 and json.loads(r.body)["code"] == "invalid_json"
    ok = '{"email": "%s", "password": "%s", "name": "\\ud83d\\ude00"}' % (email, PASSWORD)
    assert client.http.post("/auth/register", headers=json_headers(), body=ok.encode()).status_code == 201


# "²".isdigit() and "٣".isdigit() are true (and int("²") raises): digits must be ASCII.
GARBAGE_NUMBERS = ["-1", "0", "1e3", "abc", "9" * 400, " 5", "0x10", "5.0", "٣", "²", "NaN", "+5"]
NUMERIC_PARAMS = [("/transcription/history", "limit", "101"), ("/credits/transactions", "limit", "101"),
                  ("/analytics/usage", "days", "366")]


@pytest.mark.parametrize("path,name,too_big", NUMERIC_PARAMS)
@pytest.mark.parametrize("value", GARBAGE_NUMBERS + ["TOO_BIG"])
def test_numeric_query_parameters_are_bounded(client, new_user, path, name, too_big, value):
    token = new_user()["token"]
    value = too_big if value == "TOO_BIG" else value
    r = client.http.get(f"{path}?{name}={value}", headers=json_headers(token))
    assert r.status_code in (400, 422), (path, value, r.status_code)


@pytest.mark.parametrize("channel", ["", "a" * 26, "bad channel", "<script>", "%00", "ab%2Fcd"])
def test_string_query_parameters_are_validated(client, new_user, provider_env, channel):
    token = new_user()["token"]
    r = client.http.get(f"/twitch/stream?channel={channel}", headers=json_headers(token))
    assert r.status_code in (400, 422), (channel, r.status_code)
