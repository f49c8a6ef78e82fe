"""How identity reaches a route: only through the authorizer's context."""
from __future__ import annotations

import ast
import os

import pytest
from chalice.app import Request

from chalicelib.core.errors import Unauthorized
from chalicelib.web.middleware import identity

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def request(context: dict | None, headers: dict | None = None) -> Request:
    event = {
        "multiValueQueryStringParameters": None, "headers": headers or {}, "pathParameters": None,
        "requestContext": {"httpMethod": "GET", "resourcePath": "/auth/user", **(context or {})},
        "stageVariables": None, "body": None, "isBase64Encoded": False,
    }
    return Request(event)


def test_identity_comes_from_the_authorizer_context():
    got = identity(request({"authorizer": {"user_id": "u-1", "email": "a@example.com", "role": "admin"}}))
    assert (got.user_id, got.email, got.role, got.is_admin) == ("u-1", "a@example.com", "admin", True)


def test_a_bearer_header_alone_is_not_an_identity():
    with pytest.raises(Unauthorized):
        identity(request({}, headers={"authorization": "Bearer anything"}))
    with pytest.raises(Unauthorized):
        identity(request({"authorizer": {"email": "a@example.com"}}))


def test_routes_never_read_the_token_themselves():
    """app.py reads identity with identity(request()) only: no JWT or header parsing."""
    with open(os.path.join(ROOT, "app.py"), encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    names |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    assert not names & {"verify_access_token", "bearer_token", "jwt"}
    strings = {node.value.lower() for node in ast.walk(tree)
               if isinstance(node, ast.Constant) and isinstance(node.value, str)}
    assert "authorization" not in strings
