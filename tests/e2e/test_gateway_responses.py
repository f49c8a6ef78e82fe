"""Errors API Gateway makes itself look the same locally as deployed (devstack.local_gateway)."""
from __future__ import annotations

import pytest
import requests

from devstack.local_gateway import gateway_response_type
from tests.conftest import ORIGIN

pytestmark = pytest.mark.e2e


def _envelope(response: requests.Response, code: str) -> dict:
    body = response.json()
    assert body["code"] == code and body["error"] == body["message"]
    return body


def test_a_missing_token_is_our_401_envelope_with_cors(live_server):
    response = requests.get(f"{live_server.url}/credits/balance", headers={"Origin": ORIGIN}, timeout=10)
    assert response.status_code == 401
    _envelope(response, "unauthorized")
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN


def test_a_forged_token_is_the_same_401(live_server):
    response = requests.get(
        f"{live_server.url}/auth/user", headers={"Authorization": "Bearer forged.token.value"}, timeout=10
    )
    assert response.status_code == 401
    _envelope(response, "unauthorized")


def test_an_unknown_path_is_404_and_never_echoes_the_authorization_header(live_server):
    secret = "Bearer do-not-echo-this-token-0123456789"
    response = requests.get(f"{live_server.url}/no/such/route", headers={"Authorization": secret}, timeout=10)
    assert response.status_code == 404
    _envelope(response, "not_found")
    assert "do-not-echo" not in response.text


@pytest.mark.parametrize(
    "code, headers, expected",
    [
        (401, {}, "UNAUTHORIZED"),
        (403, {"x-amzn-ErrorType": "AccessDeniedException"}, "ACCESS_DENIED"),
        (403, {"x-amzn-ErrorType": "UnauthorizedException"}, "MISSING_AUTHENTICATION_TOKEN"),
        (502, {}, None),
    ],
)
def test_gateway_response_types(code, headers, expected):
    assert gateway_response_type(code, headers) == expected


def test_gateway_answers_name_only_the_first_allowed_origin():
    """The documented limitation (README, API Gateway's own responses): a gateway response
    is static, so a missing or forged token and an unknown path name the first origin only.
    Refused tokens of ours are answered in-app with every origin (tests/functional/test_sessions.py)."""
    from devstack.local_gateway import render
    from tests.conftest import OTHER_ORIGIN

    for kind in ("UNAUTHORIZED", "MISSING_AUTHENTICATION_TOKEN"):
        _, headers, _ = render(kind, "req-1", (ORIGIN, OTHER_ORIGIN))
        assert headers["Access-Control-Allow-Origin"] == ORIGIN
