"""The JWT custom authorizer: stateless verification, routes ['*'], string-only context."""
from __future__ import annotations

import sys

import jwt
import pytest
from chalice.app import AuthRequest, AuthResponse

from chalicelib.authorizer import authorize
from chalicelib.settings import get_settings
from chalicelib.tokens import Identity, issue_access_token


@pytest.fixture(autouse=True)
def no_aws(monkeypatch):
    """The authorizer must never reach DynamoDB (or any AWS service)."""
    def refuse(service):
        raise AssertionError(f"authorizer called AWS ({service})")

    monkeypatch.setattr("chalicelib.aws.client", refuse)
    monkeypatch.setattr("chalicelib.store.client", refuse)


def header(identity: Identity) -> str:
    return "Bearer " + issue_access_token(get_settings(), identity)


def test_valid_token_allows_every_route_with_string_context():
    result = authorize(header(Identity(user_id="user-42", email="a@example.com", role="user")))
    assert isinstance(result, AuthResponse)
    assert result.routes == ["*"]
    assert result.principal_id == "user-42"
    assert result.context == {"user_id": "user-42", "email": "a@example.com", "role": "user"}
    assert all(isinstance(v, str) for v in result.context.values())


def test_policy_document_allows_all_methods_of_the_api():
    result = authorize(header(Identity(user_id="user-42", email="a@example.com")))
    request = AuthRequest(
        "TOKEN", "Bearer x", "arn:aws:execute-api:us-east-1:123456789012:abcdef/api/GET/auth/user"
    )
    policy = result.to_dict(request)
    assert policy["principalId"] == "user-42"
    (statement,) = policy["policyDocument"]["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Resource"] == ["arn:aws:execute-api:us-east-1:123456789012:abcdef/api/*/*"]
    assert all(isinstance(v, str) for v in policy["context"].values())


def test_admin_role_reaches_the_context():
    result = authorize(header(Identity(user_id="root", email="r@example.com", role="admin")))
    assert result.context["role"] == "admin"


INVALID = [
    None,
    "",
    "Bearer",
    "Basic dXNlcjpwYXNz",
    "Bearer not-a-jwt",
    "Bearer " + jwt.encode({"sub": "x"}, "wrong-secret-" + "w" * 40, algorithm="HS256"),
]


@pytest.mark.parametrize("value", INVALID)
def test_invalid_token_raises_the_gateway_401_on_lambda(value, monkeypatch):
    monkeypatch.delitem(sys.modules, "chalice.local", raising=False)
    with pytest.raises(Exception) as raised:
        authorize(value)
    assert str(raised.value) == "Unauthorized"  # the exact message API Gateway maps to 401


@pytest.mark.parametrize("value", INVALID)
def test_invalid_token_raises_not_authorized_under_chalice_local(value):
    import chalice.local

    with pytest.raises(chalice.local.NotAuthorizedError) as raised:
        authorize(value)
    assert raised.value.CODE == 401
    assert b'"error"' in raised.value.body and b'"code"' in raised.value.body


def test_expired_token_is_refused():
    import chalice.local

    token = issue_access_token(get_settings(), Identity("u", "e@example.com"), now=0)
    with pytest.raises(chalice.local.NotAuthorizedError):
        authorize("Bearer " + token)
