"""Accounts through the real app (chalice.test.Client) against the embedded AWS."""
from __future__ import annotations

import hashlib
import re
import time

import jwt
import pytest

from chalicelib.aws import store
from tests.conftest import ORIGIN, PASSWORD, unique_email
from tests.functional.conftest import assert_envelope

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
SESSION_USER_FIELDS = {"user_id", "email", "name", "credits_balance", "subscription_tier", "is_admin",
                       "token"}
PROFILE_FIELDS = {"user_id", "email", "name", "credits_balance", "subscription_tier", "is_admin",
                  "created_at", "last_login", "total_credits_purchased", "total_usage"}


def register(call, email=None, password=PASSWORD, name="Test", **extra):
    return call("POST", "/auth/register", {"email": email or unique_email(), "password": password,
                                           "name": name, **extra})


def login(call, email, password=PASSWORD):
    return call("POST", "/auth/login", {"email": email, "password": password})


def record_transactions(monkeypatch) -> list[list[dict]]:
    """The TransactItems of every TransactWriteItems from now on (the writes still happen)."""
    writes: list[list[dict]] = []
    ddb = store.ddb()
    original = ddb.transact_write_items

    def spy(**kwargs):
        writes.append(kwargs["TransactItems"])
        return original(**kwargs)

    monkeypatch.setattr(ddb, "transact_write_items", spy)
    return writes


def assert_session(body: dict, settings) -> None:
    assert SESSION_USER_FIELDS <= set(body["user"]), body
    # user.token: the long session token the published extension keeps; token: the short one
    assert body["user"]["token"] != body["token"]
    session = jwt.decode(body["user"]["token"], settings.jwt_secret, algorithms=["HS256"],
                         audience=settings.jwt_audience, issuer=settings.jwt_issuer)
    assert session["exp"] - session["iat"] == settings.session_token_ttl_seconds
    assert isinstance(body["refresh_token"], str) and len(body["refresh_token"]) >= 40
    assert body["expires_in"] == settings.access_token_ttl_seconds == 900
    assert body["user"]["is_admin"] is False
    assert "password_hash" not in body["user"] and "password" not in body["user"]
    claims = jwt.decode(body["token"], settings.jwt_secret, algorithms=["HS256"],
                        audience=settings.jwt_audience, issuer=settings.jwt_issuer)
    assert claims["sub"] == body["user"]["user_id"] and claims["typ"] == "access"


# --- register ---------------------------------------------------------------------------


def test_register_returns_the_extension_shape(call, settings):
    result = register(call, name="Ada")
    assert result.status == 201, result.raw
    body = result.json
    assert_session(body, settings)
    user = body["user"]
    assert user["credits_balance"] == 200 and type(user["credits_balance"]) is int
    assert user["subscription_tier"] == "free"
    assert user["name"] == "Ada"
    assert re.fullmatch(r"[0-9a-f]{32}", user["user_id"])


def test_register_trims_and_lowercases_the_email(call):
    local = unique_email("MiXeD").split("@")[0]
    result = register(call, email=f"  {local.upper()}@Example.COM \t")
    assert result.status == 201, result.raw
    assert result.json["user"]["email"] == f"{local.lower()}@example.com"
    assert login(call, f"{local.lower()}@EXAMPLE.com").status == 200
    taken = register(call, email=f"{local.lower()}@example.com")
    assert_envelope(taken, 409, "email_taken")


def users_with_email(email: str) -> list[dict]:
    """Every user item with this email (a scan: the users table has no email index)."""
    pages = store.ddb().get_paginator("scan").paginate(
        TableName=store.table_name("users"), FilterExpression="email = :e",
        ExpressionAttributeValues=store.values(e=email))
    return [store.from_item(item) for page in pages for item in page["Items"]]


def test_duplicate_email_is_409_and_writes_nothing(call, monkeypatch):
    email = unique_email()
    assert register(call, email=email).status == 201
    writes = record_transactions(monkeypatch)
    result = register(call, email=email, password="another password")
    body = assert_envelope(result, 409, "email_taken")
    assert "already" in body["error"]
    assert len(users_with_email(email)) == 1
    (items,) = [w for w in writes if any("users" in i.get("Put", {}).get("TableName", "") for i in w)]
    refused_user_id = next(i["Put"]["Item"]["user_id"]["S"] for i in items
                           if i.get("Put", {}).get("TableName") == store.table_name("users"))
    assert store.get("users", user_id=refused_user_id) is None
    assert store.get("transactions", transaction_id=f"grant#signup#{refused_user_id}") is None


def test_signup_grant_is_recorded_in_the_same_transaction(call, monkeypatch):
    writes = record_transactions(monkeypatch)
    result = register(call)
    assert result.status == 201
    user_id = result.json["user"]["user_id"]
    tables = {store.table_name(s): s for s in ("users", "emails", "transactions")}
    registering = [w for w in writes
                   if {tables.get(i.get("Put", {}).get("TableName")) for i in w} >= set(tables.values())]
    assert len(registering) == 1, "user, email claim and grant must be one TransactWriteItems"
    grant = store.get("transactions", transaction_id=f"grant#signup#{user_id}")
    assert grant is not None
    assert grant["user_id"] == user_id and grant["credits"] == 200
    assert grant["kind"] == "grant" and grant["source"] == "signup" and grant["status"] == "completed"
    user = store.get("users", user_id=user_id)
    assert user["credits_balance"] == grant["credits"]
    assert user["password_hash"].startswith("$2b$04$")  # bcrypt at BCRYPT_ROUNDS
    assert PASSWORD not in str(user)


def test_signup_credits_follow_the_setting(call, env_override):
    env_override(SIGNUP_CREDITS="50")
    result = register(call)
    assert result.status == 201
    assert result.json["user"]["credits_balance"] == 50
    grant = store.get("transactions", transaction_id=f"grant#signup#{result.json['user']['user_id']}")
    assert grant["credits"] == 50


def good(**overrides):
    return {"email": unique_email(), "password": PASSWORD, **overrides}


def without(name):
    body = good()
    del body[name]
    return body


BAD_REGISTRATIONS = [
    # (id, body or raw bytes, status, field)
    ("no-at", good(email="not-an-email"), 422, "email"),
    ("no-domain-dot", good(email="someone@localhost"), 422, "email"),
    ("space", good(email="some one@example.com"), 422, "email"),
    ("two-ats", good(email="a@b@example.com"), 422, "email"),
    ("empty-email", good(email=""), 422, "email"),
    ("long-email", good(email="a" * 250 + "@example.com"), 422, "email"),
    ("short-password", good(password="1234567"), 422, "password"),
    ("long-password-73-bytes", good(password="a" * 73), 422, "password"),
    ("multibyte-74-bytes", good(password="é" * 37), 422, "password"),
    ("huge-password", good(password="a" * 5000), 422, "password"),
    ("missing-email", without("email"), 422, "email"),
    ("missing-password", without("password"), 422, "password"),
    ("null-password", good(password=None), 422, "password"),
    ("email-int", good(email=12345), 422, "email"),
    ("email-list", good(email=["a@example.com"]), 422, "email"),
    ("password-int", good(password=12345678), 422, "password"),
    ("password-bool", good(password=True), 422, "password"),
    ("name-int", good(name=5), 422, "name"),
    ("name-too-long", good(name="n" * 101), 422, "name"),
    ("unknown-field", good(is_admin=True), 422, "is_admin"),
    ("unknown-credits", good(credits_balance=10**6), 422, "credits_balance"),
    ("malformed-json", b'{"email": "a@example.com", "password": ', 400, None),
    ("trailing-comma", b'{"email": "a@example.com",}', 400, None),
    ("nan", b'{"email": "a@example.com", "password": NaN}', 400, None),
    ("invalid-utf8", b'{"email": "\xff@example.com", "password": "12345678"}', 400, None),
    ("list-body", b'[{"email": "a@example.com"}]', 422, None),
    ("string-body", b'"a@example.com"', 422, None),
    ("null-body", b"null", 422, None),
    ("empty-body", b"", 422, "email"),
    ("too-large", b'{"name": "' + b"x" * 20_000 + b'"}', 413, None),
]


@pytest.mark.parametrize("body,status,field", [c[1:] for c in BAD_REGISTRATIONS],
                         ids=[c[0] for c in BAD_REGISTRATIONS])
def test_bad_registration_input(call, body, status, field):
    raw = body if isinstance(body, bytes) else None
    result = call("POST", "/auth/register", None if raw is not None else body, raw=raw, origin=ORIGIN)
    envelope = assert_envelope(result, status)
    if field is not None:
        assert envelope.get("field") == field, envelope
        assert field in envelope["error"].lower()
    assert result.header("Access-Control-Allow-Origin") == ORIGIN  # errors carry CORS too


def test_password_limits_are_inclusive(call):
    assert register(call, password="12345678").status == 201
    assert register(call, password="a" * 72).status == 201
    assert register(call, password="é" * 36).status == 201  # 72 bytes


def test_unknown_field_cannot_make_an_admin(call):
    email = unique_email()
    register(call, email=email, role="admin")
    assert users_with_email(email) == []


# --- login ------------------------------------------------------------------------------


def test_login_returns_the_same_shape_and_updates_last_login(call, settings):
    email = unique_email()
    registered = register(call, email=email).json
    before = store.get("users", user_id=registered["user"]["user_id"])["last_login"]
    time.sleep(0.01)
    result = login(call, email)
    assert result.status == 200, result.raw
    body = result.json
    assert_session(body, settings)
    assert body["user"]["user_id"] == registered["user"]["user_id"]
    assert body["user"]["credits_balance"] == 200
    assert body["token"] != registered["token"]
    assert body["refresh_token"] != registered["refresh_token"]
    stored = store.get("users", user_id=body["user"]["user_id"])["last_login"]
    assert ISO.fullmatch(stored) and stored > before
    assert body["user"]["last_login"] == stored


def test_wrong_password_and_unknown_email_are_indistinguishable(call, monkeypatch):
    import chalicelib.accounts.auth as accounts

    email = unique_email()
    register(call, email=email)
    checks: list[str] = []
    original = accounts.verify_password

    def counting(password, password_hash):
        checks.append(password_hash)
        return original(password, password_hash)

    monkeypatch.setattr(accounts, "verify_password", counting)
    wrong = login(call, email, "wrong password!")
    wrong_checks = len(checks)
    unknown = login(call, unique_email(), PASSWORD)
    unknown_checks = len(checks) - wrong_checks
    assert_envelope(wrong, 401, "invalid_credentials")
    assert_envelope(unknown, 401, "invalid_credentials")
    assert wrong.json == unknown.json
    assert wrong_checks == unknown_checks == 1  # one bcrypt each: the dummy hash for unknown emails
    assert checks[1].startswith("$2b$04$")  # the dummy hash costs what a real one does


@pytest.mark.parametrize("password", ["a" * 73, "é" * 40, "x" * 1000, "short"])
def test_login_with_an_out_of_rules_password_is_401_not_500(call, password):
    email = unique_email()
    register(call, email=email)
    assert_envelope(login(call, email, password), 401, "invalid_credentials")


@pytest.mark.parametrize(
    "body,status,field",
    [({"email": "a@example.com"}, 422, "password"), ({"password": PASSWORD}, 422, "email"),
     ({"email": "nope", "password": PASSWORD}, 422, "email"),
     ({"email": "a@example.com", "password": PASSWORD, "remember": True}, 422, "remember"),
     (b"{oops", 400, None)],
    ids=["missing-password", "missing-email", "bad-email", "unknown-field", "malformed"],
)
def test_bad_login_input(call, body, status, field):
    raw = body if isinstance(body, bytes) else None
    envelope = assert_envelope(call("POST", "/auth/login", None if raw else body, raw=raw), status)
    if field:
        assert envelope["field"] == field


# --- refresh, rotation, reuse, logout ---------------------------------------------------


def refresh(call, token):
    return call("POST", "/auth/refresh", {"refresh_token": token})


def test_refresh_rotates(call, new_user, settings):
    session = new_user()
    first = refresh(call, session["refresh_token"])
    assert first.status == 200, first.raw
    body = first.json
    assert set(body) >= {"token", "refresh_token", "expires_in"} and body["expires_in"] == 900
    assert body["refresh_token"] != session["refresh_token"]
    assert call("GET", "/auth/user", token=body["token"]).status == 200
    claims = jwt.decode(body["token"], settings.jwt_secret, algorithms=["HS256"],
                        audience=settings.jwt_audience)
    assert claims["sub"] == session["user"]["user_id"]
    second = refresh(call, body["refresh_token"])  # a chain of rotations keeps working
    assert second.status == 200 and second.json["refresh_token"] != body["refresh_token"]
    assert_envelope(refresh(call, session["refresh_token"]), 401)  # the old one stopped working


def test_reuse_of_a_rotated_token_revokes_the_family(call, new_user):
    session = new_user()
    other_session = login(call, session["user"]["email"]).json  # a second family (another device)
    rotated = refresh(call, session["refresh_token"]).json
    newest = refresh(call, rotated["refresh_token"]).json
    reuse = refresh(call, session["refresh_token"])  # the stolen, already-rotated token
    assert_envelope(reuse, 401, "refresh_token_reused")
    assert_envelope(refresh(call, newest["refresh_token"]), 401)  # the legitimate newest is gone too
    assert refresh(call, other_session["refresh_token"]).status == 200  # other families untouched


def test_refresh_tokens_are_stored_hashed_with_a_ttl(call, new_user):
    session = new_user()
    token = session["refresh_token"]
    record = store.get("refresh-tokens", token_id="rt#" + hashlib.sha256(token.encode()).hexdigest())
    assert record is not None and record["user_id"] == session["user"]["user_id"]
    assert token not in str(record)
    assert abs(record["expires_at_epoch"] - (time.time() + 30 * 24 * 3600)) < 120
    family = store.get("refresh-tokens", token_id="family#" + record["family_id"])
    assert family is not None and family["revoked"] is False


def test_expired_refresh_token_is_refused(call, new_user):
    session = new_user()
    token_id = "rt#" + hashlib.sha256(session["refresh_token"].encode()).hexdigest()
    store.ddb().update_item(
        TableName=store.table_name("refresh-tokens"), Key=store.key(token_id=token_id),
        UpdateExpression="SET expires_at_epoch = :past",
        ExpressionAttributeValues=store.values(past=int(time.time()) - 1),
    )
    assert_envelope(refresh(call, session["refresh_token"]), 401, "invalid_refresh_token")


@pytest.mark.parametrize(
    "body,status",
    [({"refresh_token": "x" * 64}, 401), ({"refresh_token": ""}, 422), ({}, 422),
     ({"refresh_token": 5}, 422), ({"refresh_token": "x" * 257}, 422)],
    ids=["unknown", "empty", "missing", "int", "too-long"],
)
def test_bad_refresh_input(call, body, status):
    assert_envelope(call("POST", "/auth/refresh", body), status)


def test_logout_revokes_that_session_only(call, new_user):
    session = new_user()
    other = login(call, session["user"]["email"]).json
    result = call("POST", "/auth/logout", {"refresh_token": session["refresh_token"]}, origin=ORIGIN)
    assert result.status == 204 and result.raw == b""
    assert result.header("Access-Control-Allow-Origin") == ORIGIN
    assert_envelope(refresh(call, session["refresh_token"]), 401)
    assert call("POST", "/auth/logout", {"refresh_token": session["refresh_token"]}).status == 204
    assert refresh(call, other["refresh_token"]).status == 200


def test_logout_also_ends_the_rotated_chain(call, new_user):
    session = new_user()
    rotated = refresh(call, session["refresh_token"]).json
    assert call("POST", "/auth/logout", {"refresh_token": rotated["refresh_token"]}).status == 204
    assert_envelope(refresh(call, rotated["refresh_token"]), 401)


def test_logout_of_an_unknown_token_is_204(call):
    assert call("POST", "/auth/logout", {"refresh_token": "never-issued-" + "x" * 40}).status == 204


def test_logout_validates_its_body(call):
    assert assert_envelope(call("POST", "/auth/logout", {}), 422)["field"] == "refresh_token"


# --- GET /auth/user ---------------------------------------------------------------------


def test_get_user_profile(call, new_user):
    session = new_user()
    result = call("GET", "/auth/user", token=session["token"])
    assert result.status == 200, result.raw
    user = result.json["user"]
    assert PROFILE_FIELDS <= set(user), user
    assert user["user_id"] == session["user"]["user_id"]
    assert user["email"] == session["user"]["email"]
    assert user["credits_balance"] == 200
    assert user["total_credits_purchased"] == 0 and user["total_usage"] == 0
    assert user["is_admin"] is False and user["subscription_tier"] == "free"
    assert ISO.fullmatch(user["created_at"]) and ISO.fullmatch(user["last_login"])
    assert "password_hash" not in user and "token" not in user
    assert b'"credits_balance":200' in result.raw  # a JSON integer, not a Decimal string


def test_balance_read_from_dynamodb_serialises_as_a_number(call, new_user):
    session = new_user()
    store.ddb().update_item(
        TableName=store.table_name("users"), Key=store.key(user_id=session["user"]["user_id"]),
        UpdateExpression="SET credits_balance = :big, total_usage = :u",
        ExpressionAttributeValues=store.values(big=12345678901234, u=7),
    )
    result = call("GET", "/auth/user", token=session["token"])
    assert b'"credits_balance":12345678901234' in result.raw
    assert result.json["user"]["total_usage"] == 7


def _expired_token(user_id: str) -> str:
    from chalicelib.accounts.tokens import Identity, issue_access_token

    return issue_access_token(Identity(user_id, "x@example.com"), now=time.time() - 3600)


def test_get_user_without_a_valid_token_is_401(call, new_user):
    session = new_user()
    user_id = session["user"]["user_id"]
    claims = jwt.decode(session["token"], options={"verify_signature": False})
    forged = jwt.encode(claims, "attacker-secret-" + "a" * 40, algorithm="HS256")
    unsigned = jwt.encode(claims, None, algorithm="none")
    for headers in (
        {},
        {"Authorization": "Bearer " + forged},
        {"Authorization": "Bearer " + unsigned},
        {"Authorization": "Bearer " + _expired_token(user_id)},
        {"Authorization": "Bearer " + session["refresh_token"]},
        {"Authorization": "Basic " + session["token"]},
        {"Authorization": session["token"]},
    ):
        result = call("GET", "/auth/user", headers=headers)
        assert result.status == 401, (headers, result.raw)
        body = result.json
        assert isinstance(body.get("error") or body.get("message"), str)  # readable for the extension
        assert user_id not in result.raw.decode()


def test_deleted_account_token_is_401(call, new_user):
    session = new_user()
    store.ddb().delete_item(TableName=store.table_name("users"),
                            Key=store.key(user_id=session["user"]["user_id"]))
    assert_envelope(call("GET", "/auth/user", token=session["token"]), 401, "account_not_found")
