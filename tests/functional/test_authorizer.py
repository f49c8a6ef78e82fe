"""The JWT custom authorizer: signature and claims first (gateway 401), then the account's
standing with one DynamoDB read (deleted, suspended, ended sessions: refused in-app)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import jwt
import pytest
from chalice.app import AuthRequest, AuthResponse

from chalicelib.accounts import auth as accounts
from chalicelib.accounts import standing
from chalicelib.accounts.tokens import Identity, issue_access_token
from chalicelib.aws import store
from chalicelib.web.authorizer import authorize
from tests.conftest import PASSWORD, unique_email


@pytest.fixture
def user(aws_endpoint):
    session = accounts.register(unique_email("authz"), PASSWORD, "Authz")
    return session


@pytest.fixture
def dynamodb_calls(monkeypatch):
    """Every DynamoDB operation the process sends, by name: through boto3 or json_client."""
    from chalicelib.aws import json_client

    calls: list[str] = []

    def record(model, **_):  # type: ignore[no-untyped-def]
        calls.append(model.name)

    def call(service, operation, payload, **kwargs):  # type: ignore[no-untyped-def]
        if service == "dynamodb":
            calls.append(operation)
        return real_call(service, operation, payload, **kwargs)

    real_call = json_client.call
    monkeypatch.setattr(json_client, "call", call)
    events = store.ddb().meta.events
    events.register("before-call.dynamodb", record)
    yield calls
    events.unregister("before-call.dynamodb", record)


def test_the_authorizer_loads_no_sdk(user, settings):
    """Its two AWS calls (the secret, the account's standing) go through json_client: a cold
    authorizer imports neither boto3 nor botocore (most of its cold start otherwise)."""
    script = (
        "import json, sys\n"
        "from chalicelib.web.authorizer import authorize\n"
        "context = authorize(sys.argv[1]).context\n"
        "loaded = sorted(m for m in ('boto3', 'botocore') if m in sys.modules)\n"
        "print(json.dumps({'context': context, 'loaded': loaded}))\n"
    )
    # this process's settings (another test may have moved the environment since they were read)
    env = {**os.environ, "USERS_TABLE": settings.resource("users"), "JWT_SECRET": settings.jwt_secret}
    done = subprocess.run([sys.executable, "-c", script, bearer(user["token"])], capture_output=True, text=True,
                          env=env, timeout=180, cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["context"]["user_id"] == user["user"]["user_id"] and "refusal" not in answer["context"]
    assert answer["loaded"] == []


def bearer(token: str) -> str:
    return "Bearer " + token


def test_valid_token_allows_every_route_with_string_context(user, dynamodb_calls):
    result = authorize(bearer(user["token"]))
    assert isinstance(result, AuthResponse)
    assert result.routes == ["*"]
    assert result.principal_id == user["user"]["user_id"]
    assert result.context == {"user_id": user["user"]["user_id"], "email": user["user"]["email"], "role": "user"}
    assert all(isinstance(v, str) for v in result.context.values())
    assert dynamodb_calls == ["GetItem"]  # the one read per token per cache period


def test_policy_document_allows_all_methods_of_the_api(user):
    result = authorize(bearer(user["user"]["token"]))
    request = AuthRequest(
        "TOKEN", "Bearer x", "arn:aws:execute-api:us-east-1:123456789012:abcdef/api/GET/auth/user"
    )
    policy = result.to_dict(request)
    assert policy["principalId"] == user["user"]["user_id"]
    (statement,) = policy["policyDocument"]["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Resource"] == ["arn:aws:execute-api:us-east-1:123456789012:abcdef/api/*/*"]
    assert all(isinstance(v, str) for v in policy["context"].values())


def test_the_role_comes_from_the_account_not_the_token(user):
    """A promotion or demotion takes effect within the cache time, not at the next login."""
    store.ddb().update_item(
        TableName=store.table_name("users"), Key=store.key(user_id=user["user"]["user_id"]),
        UpdateExpression="SET #r = :admin", ExpressionAttributeNames={"#r": "role"},
        ExpressionAttributeValues=store.values(admin="admin"),
    )
    assert authorize(bearer(user["token"])).context["role"] == "admin"


def test_session_and_access_tokens_have_their_own_lifetimes(settings, user):
    session = jwt.decode(user["user"]["token"], options={"verify_signature": False})
    access = jwt.decode(user["token"], options={"verify_signature": False})
    assert session["exp"] - session["iat"] == settings.session_token_ttl_seconds == 7 * 24 * 3600
    assert access["exp"] - access["iat"] == settings.access_token_ttl_seconds == user["expires_in"]
    assert session["gen"] == access["gen"] == 0


INVALID = [
    None,
    "",
    "Bearer",
    "Basic dXNlcjpwYXNz",
    "Bearer not-a-jwt",
    "Bearer " + jwt.encode({"sub": "x"}, "wrong-secret-" + "w" * 40, algorithm="HS256"),
]


@pytest.mark.parametrize("value", INVALID)
def test_invalid_token_raises_the_gateway_401_on_lambda(value, monkeypatch, dynamodb_calls):
    monkeypatch.delitem(sys.modules, "chalice.local", raising=False)
    with pytest.raises(Exception) as raised:
        authorize(value)
    assert str(raised.value) == "Unauthorized"  # the exact message API Gateway maps to 401
    assert dynamodb_calls == []  # refused before any read


@pytest.mark.parametrize("value", INVALID)
def test_invalid_token_raises_not_authorized_under_chalice_local(value):
    import chalice.local

    with pytest.raises(chalice.local.NotAuthorizedError) as raised:
        authorize(value)
    assert raised.value.CODE == 401
    assert b'"error"' in raised.value.body and b'"code"' in raised.value.body


def test_expired_token_is_refused_in_app_without_a_read(user, dynamodb_calls):
    identity = Identity(user["user"]["user_id"], user["user"]["email"])
    token = issue_access_token(identity, now=0)
    result = authorize(bearer(token))
    assert result.context["refusal"] == "token_expired"
    assert result.context["user_id"] == identity.user_id
    assert dynamodb_calls == []


def test_deleted_account_is_refused(user):
    store.ddb().delete_item(TableName=store.table_name("users"), Key=store.key(user_id=user["user"]["user_id"]))
    assert authorize(bearer(user["user"]["token"])).context["refusal"] == "account_not_found"


def test_logout_ends_every_token_issued_before(user):
    accounts.logout(user["refresh_token"])
    for token in (user["token"], user["user"]["token"]):
        assert authorize(bearer(token)).context["refusal"] == "token_revoked"
    again = accounts.login(user["user"]["email"], PASSWORD)
    assert "refusal" not in authorize(bearer(again["user"]["token"])).context


def test_suspension_ends_tokens_and_reinstatement_does_not_revive_them(user):
    user_id = user["user"]["user_id"]
    accounts.set_status(user_id, accounts.SUSPENDED)
    assert authorize(bearer(user["user"]["token"])).context["refusal"] == "account_suspended"
    with pytest.raises(Exception):
        accounts.login(user["user"]["email"], PASSWORD)
    with pytest.raises(Exception):
        accounts.refresh(user["refresh_token"])
    accounts.set_status(user_id, accounts.ACTIVE)
    assert authorize(bearer(user["user"]["token"])).context["refusal"] == "token_revoked"
    again = accounts.login(user["user"]["email"], PASSWORD)
    assert "refusal" not in authorize(bearer(again["user"]["token"])).context


def test_unknown_status_is_refused():
    with pytest.raises(ValueError):
        accounts.set_status("someone", "deleted")


class GatewayCache:
    """API Gateway's authorizer cache: one answer per token for `ttl` seconds."""

    def __init__(self, ttl: int) -> None:
        self.ttl = ttl
        self.answers: dict[str, tuple[float, AuthResponse]] = {}

    def authorize(self, header: str, now: float) -> AuthResponse:
        cached = self.answers.get(header)
        if cached is None or now - cached[0] >= self.ttl:
            cached = (now, authorize(header))
            self.answers[header] = cached
        return cached[1]


def test_reads_per_active_user_per_hour(user, dynamodb_calls):
    """The figure in the README: an hour of requests every 30 s (the published extension
    polls the balance that often while captioning) costs 12 GetItems for a client on the
    session token, and 12 for a client that refreshes its 15-minute token (4 tokens,
    3 cache periods each), with AUTHORIZER_TTL_SECONDS=300."""
    cache = GatewayCache(ttl=300)
    session_header = bearer(user["user"]["token"])
    for second in range(0, 3600, 30):
        assert "refusal" not in cache.authorize(session_header, now=second).context
    assert dynamodb_calls == ["GetItem"] * 12
    dynamodb_calls.clear()
    identity = Identity(user["user"]["user_id"], user["user"]["email"])
    short_tokens = {start: bearer(issue_access_token(identity)) for start in range(0, 3600, 900)}
    for second in range(0, 3600, 30):
        cache.authorize(short_tokens[second - second % 900], now=second)
    assert dynamodb_calls == ["GetItem"] * 12


def test_a_half_deleted_account_may_only_finish_its_deletion(user):
    """privacy.delete_account marks the account inactive first; if it is interrupted, the
    same token may send DELETE /auth/user again (web.refuse_ended_session), nothing else."""
    store.ddb().update_item(
        TableName=store.table_name("users"), Key=store.key(user_id=user["user"]["user_id"]),
        UpdateExpression="SET is_active = :no, deletion_started_at = :now",
        ExpressionAttributeValues=store.values(no=False, now=store.iso()),
    )
    assert authorize(bearer(user["token"])).context["refusal"] == standing.DELETING
