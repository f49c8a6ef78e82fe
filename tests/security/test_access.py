"""Who may call what: forged and misused tokens, routes without a token, other users' ids,
deleted accounts, CORS. Routes are enumerated from `app.app.routes`, so new ones are covered.
"""
from __future__ import annotations

import base64
import json
import time
import uuid

import jwt
import pytest

from chalicelib.aws import store
from chalicelib.web import ratelimit
from chalicelib.core.settings import get_settings
from tests.conftest import JWT_SECRET, ORIGIN, OTHER_ORIGIN, PASSWORD, json_headers
from tests.security.routes import INPUTS, all_routes, authenticated_routes

AUTH_ROUTES = authenticated_routes()


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def claims(user_id: str, **overrides) -> dict:
    settings, now = get_settings(), int(time.time())
    base = {"iss": settings.jwt_issuer, "aud": settings.jwt_audience, "sub": user_id,
            "email": "x@example.com", "role": "user", "iat": now, "nbf": now, "exp": now + 600,
            "jti": uuid.uuid4().hex, "typ": "access"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def forged_tokens(session: dict, other_user_id: str) -> dict[str, str]:
    user_id, token = session["user"]["user_id"], session["token"]
    header, payload, _signature = token.split(".")
    tampered = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    tampered["sub"] = other_user_id
    now = int(time.time())
    return {
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims(user_id))}.",
        "alg None": f"{b64({'alg': 'None', 'typ': 'JWT'})}.{b64(claims(user_id))}.",
        "another key": jwt.encode(claims(user_id), "another-secret-" + "k" * 40, algorithm="HS256"),
        "signature stripped": f"{header}.{payload}.",
        "no signature part": f"{header}.{payload}",
        "expired": jwt.encode(claims(user_id, iat=now - 7200, nbf=now - 7200, exp=now - 3600),
                              JWT_SECRET, algorithm="HS256"),
        "not yet valid": jwt.encode(claims(user_id, nbf=now + 3600), JWT_SECRET, algorithm="HS256"),
        "wrong iss": jwt.encode(claims(user_id, iss="someone-else"), JWT_SECRET, algorithm="HS256"),
        "wrong aud": jwt.encode(claims(user_id, aud="another-app"), JWT_SECRET, algorithm="HS256"),
        "no exp": jwt.encode(claims(user_id, exp=None), JWT_SECRET, algorithm="HS256"),
        "typ refresh": jwt.encode(claims(user_id, typ="refresh"), JWT_SECRET, algorithm="HS256"),
        "HS512 with the right key": jwt.encode(claims(user_id), JWT_SECRET, algorithm="HS512"),
        "refresh token as access token": session["refresh_token"],
        "tampered sub": f"{header}.{b64(tampered)}.{_signature}",
        "garbage": "not-a-token",
        "empty": "",
    }


@pytest.fixture
def two_users(new_user):
    return new_user(), new_user()


def call(client, route, token: str | None = None, headers: dict | None = None, **url):
    body = b"{}" if route.method in ("POST", "PUT", "DELETE") else b""
    return client.http.request(route.method, route.url(**url),
                               headers=headers if headers is not None else json_headers(token),
                               body=body)


def test_every_route_is_described_and_classed():
    """A new route must be given inputs (fuzzing, access) and a rate-limit class on purpose."""
    for route in all_routes():
        assert route.inputs is not None, f"add {route.id} to tests/security/routes.py INPUTS"
        assert (route.method, route.path) in ratelimit.ROUTE_CLASSES, (
            f"add {route.id} to chalicelib.web.ratelimit.ROUTE_CLASSES")
    stale = set(INPUTS) - {(r.method, r.path) for r in all_routes()}
    assert not stale, f"routes listed but gone: {stale}"
    assert ratelimit.ROUTE_CLASSES[("POST", "/webhooks/stripe")] == ratelimit.EXEMPT


def test_forged_and_misused_tokens_are_401(client, two_users):
    alice, bob = two_users
    assert client.http.get("/auth/user", headers=json_headers(alice["token"])).status_code == 200
    for name, token in forged_tokens(alice, bob["user"]["user_id"]).items():
        r = client.http.get("/auth/user", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401, name
        assert bob["user"]["email"].encode() not in r.body and alice["user"]["email"].encode() not in r.body


def test_wrong_schemes_are_401(client, two_users):
    token = two_users[0]["token"]
    for header in (token, f"Basic {token}", "Bearer", "Bearer  ", f"Token {token}"):
        r = client.http.get("/auth/user", headers={"Authorization": header})
        assert r.status_code == 401, header


def test_every_authenticated_route_refuses_missing_and_forged_tokens(client, two_users):
    alice, bob = two_users
    forged = forged_tokens(alice, bob["user"]["user_id"])
    attacks = [None, forged["alg none"], forged["another key"], forged["expired"],
               forged["refresh token as access token"], forged["tampered sub"]]
    assert AUTH_ROUTES, "no authenticated routes found"
    for route in AUTH_ROUTES:
        for token in attacks:
            r = call(client, route, token)
            assert r.status_code == 401, (route.id, token and token[:20])
            body = json.loads(r.body)  # the gateway's own 401 carries only `message`
            assert body.get("error") or body.get("message")


def seed_owned_by(user_id: str) -> dict:
    """Things that belong to a user, keyed as the features store them."""
    now, job_id, session_id = store.iso(), uuid.uuid4().hex, uuid.uuid4().hex
    items = {
        "jobs": {"job_id": job_id, "user_id": user_id, "status": "completed", "created_at": now,
                 "updated_at": now, "duration_minutes": 5, "credits_reserved": 50,
                 "result": {"summary": "private summary", "key_points": []}},
        "sessions": {"session_id": session_id, "user_id": user_id, "state": "active",
                     "started_at": now, "started_epoch": int(time.time()),
                     "last_heartbeat_epoch": int(time.time()), "reserved_minutes": 5,
                     "reserved_credits": 50, "price_per_minute": 10,
                     "reservation_id": f"live#{session_id}", "max_session_seconds": 300,
                     "ends_by_epoch": int(time.time()) + 300},
        "history": {"user_id": user_id, "sort_key": f"{now}#catchup#{job_id}", "id": job_id,
                    "kind": "catchup", "created_at": now, "summary": "private summary"},
    }
    for table, item in items.items():
        store.ddb().put_item(TableName=store.table_name(table), Item=store.to_item(item))
    return {"job_id": job_id, "session_id": session_id}


def test_another_users_ids_get_404_never_their_data(client, two_users):
    alice, bob = two_users
    owned = seed_owned_by(alice["user"]["user_id"])
    secrets_of_alice = [alice["user"]["user_id"], alice["user"]["email"], "private summary"]
    bob_headers = json_headers(bob["token"])
    r = client.http.get(f"/transcription/catchup/{owned['job_id']}", headers=bob_headers)
    assert r.status_code == 404
    for action in ("heartbeat", "stop"):
        r = client.http.post("/transcription/stream", headers=bob_headers,
                             body=json.dumps({"action": action, "session_id": owned["session_id"]}))
        assert r.status_code in (403, 404), (action, r.status_code, r.body)
    assert store.get("sessions", session_id=owned["session_id"])["state"] == "active"
    # Alice's history cursor is bound to Alice.
    page = json.loads(client.http.get("/transcription/history?limit=1",
                                      headers=json_headers(alice["token"])).body)
    assert page["items"]
    from chalicelib.catchup.history import encode_cursor

    cursor = encode_cursor(alice["user"]["user_id"], page["items"][0]["created_at"] + "#zzz")
    r = client.http.get(f"/transcription/history?cursor={cursor}", headers=bob_headers)
    assert r.status_code in (400, 403, 404)
    # Whatever Bob calls, with Alice's ids wherever an id goes, nothing of Alice's comes back.
    for route in AUTH_ROUTES:
        if route.method == "DELETE":
            continue
        r = call(client, route, bob["token"], params={p: owned["job_id"] for p in route.params},
                 query={"job_id": owned["job_id"], "user_id": alice["user"]["user_id"]})
        assert r.status_code < 500, route.id
        for secret in secrets_of_alice:
            assert secret.encode() not in r.body, (route.id, secret)


def test_deleted_accounts_get_401_and_nothing_is_recreated(client, new_user, provider_env):
    """After deletion both of the account's tokens (the short one and the published
    extension's long session token) get 401 `account_not_found` on every authenticated
    route, from the authorizer's one check, and nothing is written for the ghost."""
    session = new_user()
    user_id = session["user"]["user_id"]
    r = client.http.delete("/auth/user", headers=json_headers(session["token"]),
                           body=json.dumps({"password": PASSWORD}))
    assert r.status_code == 204
    valid_bodies = {
        "/transcription/stream": {"action": "start"},
        "/transcription/ask": {"question": "what?", "transcript": "hello there"},
        "/transcription/catchup/upload": {"content_type": "audio/webm", "file_size": 1000},
        "/transcription/catchup": {"channel": "somechannel", "duration_minutes": 5,
                                   "audio": base64.b64encode(b"OggS" + b"0" * 200).decode()},
        "/credits/purchase": {"package_id": "starter"},
        "/credits/subscribe": {"plan_id": "basic_monthly"},
        "/auth/user": {"password": PASSWORD},
        "/auth/password": {"current_password": PASSWORD, "new_password": PASSWORD + "!"},
    }
    for token in (session["token"], session["user"]["token"]):
        for route in AUTH_ROUTES:
            body = json.dumps(valid_bodies.get(route.path, {})) if route.method != "GET" else ""
            r = client.http.request(route.method, route.url(query={"channel": "somechannel"}),
                                    headers=json_headers(token), body=body.encode())
            assert r.status_code == 401, (route.id, r.status_code, r.body)
            assert json.loads(r.body)["code"] == "account_not_found", route.id
    assert store.get("users", user_id=user_id) is None
    from tests.security.data import owned_counts

    assert owned_counts(user_id) == dict.fromkeys(owned_counts(user_id), 0)


def cors_headers_of(response) -> dict:
    return {k: v for k, v in response.headers.items() if k.lower().startswith("access-control-")}


def test_unlisted_origins_get_no_cors_headers(client, new_user):
    token = new_user()["token"]
    for route in all_routes():
        for auth in (None, token):
            r = call(client, route, headers=json_headers(auth, origin=OTHER_ORIGIN))
            assert cors_headers_of(r) == {}, (route.id, r.headers)
        r = client.http.options(route.url(), headers={"Origin": OTHER_ORIGIN,
                                                      "Access-Control-Request-Method": route.method})
        assert r.status_code == 403 and cors_headers_of(r) == {}, route.id


def test_listed_origin_preflight_and_responses(client, new_user):
    token = new_user()["token"]
    for route in all_routes():
        r = client.http.options(route.url(), headers={
            "Origin": ORIGIN, "Access-Control-Request-Method": route.method,
            "Access-Control-Request-Headers": "authorization,content-type,idempotency-key"})
        assert r.status_code in (200, 204), route.id
        assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert route.method in r.headers["Access-Control-Allow-Methods"].split(",")
        allowed = {h.strip().lower() for h in r.headers["Access-Control-Allow-Headers"].split(",")}
        assert {"authorization", "content-type", "idempotency-key"} <= allowed
        assert "Origin" in r.headers.get("Vary", "")
        response = call(client, route, headers=json_headers(token if route.authenticated else None,
                                                            origin=ORIGIN))
        assert response.headers.get("Access-Control-Allow-Origin") == ORIGIN, route.id
        assert "*" not in response.headers.get("Access-Control-Allow-Origin", "")
