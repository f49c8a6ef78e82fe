"""Access tokens: HS256 pinned, every claim required, short-lived; refresh token helpers."""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import time

import jwt
import pytest

from chalicelib.core.errors import Unauthorized
from chalicelib.core.settings import load_settings
from chalicelib.accounts.tokens import (
    REQUIRED_CLAIMS,
    Identity,
    TokenExpired,
    bearer_token,
    issue_access_token,
    new_refresh_token,
    refresh_token_id,
    verify_access_token,
)
from chalicelib.web.errors import status_of

ENV = {"JWT_SECRET": "unit-test-secret-" + "k" * 64, "STAGE": "local"}
SETTINGS = load_settings(ENV)  # what the tokens below are issued and checked with
ALICE = Identity(user_id="user-123", email="alice@example.com", role="user")


@pytest.fixture(autouse=True)
def signing_settings(env_override):
    env_override(**ENV, JWT_SECRET_PREVIOUS="")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict, claims: dict, key: bytes | None = None, digest=hashlib.sha256) -> str:
    """A token with any header, HMAC-signed with `key` (or unsigned when key is None)."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    if key is None:
        return signing_input + "."
    signature = hmac.new(key, signing_input.encode(), digest).digest()
    return f"{signing_input}.{_b64(signature)}"


def valid_claims(**overrides) -> dict:
    now = int(time.time())
    claims = {
        "iss": SETTINGS.jwt_issuer, "aud": SETTINGS.jwt_audience, "sub": ALICE.user_id,
        "email": ALICE.email, "role": "user", "iat": now, "exp": now + 600,
        "jti": "abc", "typ": "access",
    }
    claims.update(overrides)
    return claims


def rejected(token: str) -> Unauthorized:
    with pytest.raises(Unauthorized) as raised:
        verify_access_token(token)
    assert status_of(raised.value) == 401
    return raised.value


def test_round_trip():
    token = issue_access_token(ALICE)
    assert verify_access_token(token) == ALICE


def test_claims_and_header():
    before = int(time.time())
    token = issue_access_token(ALICE)
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(token, options={"verify_signature": False})
    for name in ("iss", "aud", "sub", "iat", "exp", "jti", "typ"):
        assert name in claims, name
    assert claims["iss"] == SETTINGS.jwt_issuer
    assert claims["aud"] == SETTINGS.jwt_audience
    assert claims["sub"] == ALICE.user_id
    assert claims["typ"] == "access"
    assert claims["exp"] - claims["iat"] == SETTINGS.access_token_ttl_seconds == 900
    assert before <= claims["iat"] <= int(time.time())
    other = jwt.decode(issue_access_token(ALICE), options={"verify_signature": False})
    assert other["jti"] != claims["jti"]


def test_our_own_forge_helper_produces_accepted_tokens():
    """Guards the tests below: a correctly forged HS256 token is accepted."""
    token = forge({"alg": "HS256", "typ": "JWT"}, valid_claims(), SETTINGS.jwt_secret.encode())
    assert verify_access_token(token).user_id == ALICE.user_id


def test_alg_none_is_rejected():
    rejected(forge({"alg": "none", "typ": "JWT"}, valid_claims()))
    rejected(forge({"alg": "None", "typ": "JWT"}, valid_claims()))


def test_hs512_with_the_right_secret_is_rejected():
    token = jwt.encode(valid_claims(), SETTINGS.jwt_secret, algorithm="HS512")
    rejected(token)


def test_rs256_confusion_is_rejected():
    """An HMAC signature over a header that claims RS256 (the key-confusion attack)."""
    rejected(forge({"alg": "RS256", "typ": "JWT"}, valid_claims(), SETTINGS.jwt_secret.encode()))


def test_real_rs256_token_is_rejected():
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rejected(jwt.encode(valid_claims(), key, algorithm="RS256"))


def test_wrong_secret_and_tampering_are_rejected():
    rejected(jwt.encode(valid_claims(), "another-secret-" + "z" * 32, algorithm="HS256"))
    token = issue_access_token(ALICE)
    header, payload, signature = token.split(".")
    evil = _b64(json.dumps(valid_claims(sub="admin-user", role="admin")).encode())
    rejected(f"{header}.{evil}.{signature}")
    rejected(token[:-2] + ("AA" if not token.endswith("AA") else "BB"))


def test_expired_token_is_rejected():
    token = issue_access_token(ALICE, now=time.time() - SETTINGS.access_token_ttl_seconds - 60)
    refused = rejected(token)
    assert refused.code == "token_expired"
    # ...and still says whose it was, for the authorizer's in-app 401
    assert isinstance(refused, TokenExpired) and refused.identity == ALICE


def test_generation_is_carried_and_must_be_an_integer():
    token = issue_access_token(dataclasses.replace(ALICE, token_generation=3))
    assert verify_access_token(token).token_generation == 3
    key = SETTINGS.jwt_secret.encode()
    assert rejected(forge({"alg": "HS256", "typ": "JWT"}, valid_claims(gen="3"), key)).code == "invalid_token"
    assert rejected(forge({"alg": "HS256", "typ": "JWT"}, valid_claims(gen=True), key)).code == "invalid_token"
    assert verify_access_token(forge({"alg": "HS256", "typ": "JWT"}, valid_claims(), key)) == ALICE


def test_session_lifetime_is_chosen_by_the_caller():
    token = issue_access_token(ALICE, ttl_seconds=SETTINGS.session_token_ttl_seconds)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 7 * 24 * 3600


def test_wrong_issuer_or_audience_is_rejected(env_override):
    for variable, other in (("JWT_ISSUER", "someone-else"), ("JWT_AUDIENCE", "another-app")):
        env_override(**{variable: other})
        token = issue_access_token(ALICE)
        env_override(**{variable: getattr(SETTINGS, variable.lower())})
        rejected(token)


@pytest.mark.parametrize("missing", REQUIRED_CLAIMS)
def test_every_required_claim_is_required(missing):
    claims = valid_claims()
    del claims[missing]
    rejected(jwt.encode(claims, SETTINGS.jwt_secret, algorithm="HS256"))


def test_required_claims_cover_the_issue():
    assert set(REQUIRED_CLAIMS) >= {"iss", "aud", "sub", "iat", "exp", "jti", "typ"}


@pytest.mark.parametrize("typ", ["refresh", "id", "", "ACCESS"])
def test_token_type_must_be_access(typ):
    rejected(jwt.encode(valid_claims(typ=typ), SETTINGS.jwt_secret, algorithm="HS256"))


def test_subject_must_be_a_string():
    rejected(jwt.encode(valid_claims(sub=123), SETTINGS.jwt_secret, algorithm="HS256"))


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "eyJ.eyJ.sig"])
def test_garbage_is_rejected(garbage):
    rejected(garbage)


def test_bearer_token_parsing():
    assert bearer_token("Bearer abc.def") == "abc.def"
    assert bearer_token("bearer   abc ") == "abc"
    for header in (None, "", "Bearer", "Bearer   ", "Basic dXNlcjpwYXNz", "abc.def"):
        with pytest.raises(Unauthorized):
            bearer_token(header)


def test_refresh_tokens_are_random_and_stored_only_as_a_hash():
    tokens = {new_refresh_token() for _ in range(50)}
    assert len(tokens) == 50
    token = tokens.pop()
    assert len(token) >= 64  # 48 random bytes, url-safe base64
    token_id = refresh_token_id(token)
    assert token_id == "rt#" + hashlib.sha256(token.encode()).hexdigest()
    assert token not in token_id
    assert refresh_token_id(token) == token_id
