"""Access tokens (JWT HS256) and refresh tokens (random, stored hashed, rotated).

Two lifetimes of one access token type: short ones (ACCESS_TOKEN_TTL_SECONDS) for clients
that refresh, and session ones (SESSION_TOKEN_TTL_SECONDS, 7 days) for the published
extension, which never refreshes. Both carry the user's token generation (`gen`): the
authorizer compares it with the user item, so logout, a password change, deletion or a
suspension ends every token within the authorizer's cache time, however long it has left.
Refresh tokens belong to a family: each use rotates the token, and presenting a token
that was already rotated means it leaked, so the whole family is revoked.
"""
from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

from chalicelib.core.errors import Unauthorized
from chalicelib.core.settings import get_settings

ACCESS_TYPE = "access"
REQUIRED_CLAIMS = ["iss", "aud", "sub", "iat", "exp", "jti", "typ"]


@dataclass(frozen=True)
class Identity:
    user_id: str
    email: str
    role: str = "user"
    token_generation: int = 0  # the user's generation when the token was issued

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def issue_access_token(
    identity: Identity, now: float | None = None, ttl_seconds: int | None = None
) -> str:
    """A signed access token; `ttl_seconds` defaults to the short ACCESS_TOKEN_TTL_SECONDS."""
    import jwt

    settings = get_settings()
    issued = int(time.time() if now is None else now)
    lifetime = settings.access_token_ttl_seconds if ttl_seconds is None else ttl_seconds
    claims = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": identity.user_id,
        "email": identity.email,
        "role": identity.role,
        "iat": issued,
        "nbf": issued,
        "exp": issued + lifetime,
        "jti": uuid.uuid4().hex,
        "typ": ACCESS_TYPE,
        "gen": identity.token_generation,
    }
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")


class TokenExpired(Unauthorized):
    """A token of ours, correct in every way but its age: `identity` says who it was issued to
    (the authorizer answers it in-app, so a client on any allowed origin can refresh)."""

    def __init__(self, identity: Identity) -> None:
        super().__init__("Invalid or expired token", code="token_expired")
        self.identity = identity


def verify_access_token(token: str) -> Identity:
    """Verify signature (JWT_SECRET, or JWT_SECRET_PREVIOUS during a rotation), algorithm,
    issuer, audience, expiry and type; any failure is 401 (`TokenExpired` for age alone).
    """
    import jwt

    settings = get_settings()
    def decode(key: str, verify_exp: bool) -> dict[str, Any]:
        return jwt.decode(
            token,
            key,
            algorithms=["HS256"],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={"require": REQUIRED_CLAIMS, "verify_exp": verify_exp},
            leeway=5,
        )

    claims: dict[str, Any] | None = None
    # During a rotation a token may carry either key's signature; every other check is the same.
    for key in filter(None, (settings.jwt_secret, settings.jwt_previous_secret)):
        try:
            claims = decode(key, verify_exp=True)
            break
        except jwt.InvalidSignatureError:
            continue
        except jwt.ExpiredSignatureError:  # the signature was checked first: ours, too old
            raise TokenExpired(_identity(decode(key, verify_exp=False))) from None
        except jwt.PyJWTError:
            break
    if claims is None:
        raise Unauthorized("Invalid or expired token", code="invalid_token")
    return _identity(claims)


def _identity(claims: dict[str, Any]) -> Identity:
    generation = claims.get("gen", 0)  # tokens issued before generations existed: 0
    if (
        claims.get("typ") != ACCESS_TYPE
        or not isinstance(claims.get("sub"), str)
        or type(generation) is not int
    ):
        raise Unauthorized("Invalid or expired token", code="invalid_token")
    return Identity(
        user_id=claims["sub"],
        email=str(claims.get("email", "")),
        role=str(claims.get("role", "user")),
        token_generation=generation,
    )


def bearer_token(header: str | None) -> str:
    if not header:
        raise Unauthorized("Missing bearer token", code="missing_token")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Missing bearer token", code="missing_token")
    return token.strip()


def new_refresh_token() -> str:
    return secrets.token_urlsafe(48)


def refresh_token_id(token: str) -> str:
    """Only the SHA-256 of a refresh token is stored; the token itself has 384 random bits."""
    return "rt#" + hashlib.sha256(token.encode("utf-8")).hexdigest()


def family_id_key(family_id: str) -> str:
    return "family#" + family_id
