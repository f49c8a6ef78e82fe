"""Access tokens (JWT HS256) and refresh tokens (random, stored hashed, rotated).

Access tokens are verified statelessly by the authorizer, so they are short-lived.
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

from chalicelib.errors import Unauthorized
from chalicelib.settings import Settings

ACCESS_TYPE = "access"
REQUIRED_CLAIMS = ["iss", "aud", "sub", "iat", "exp", "jti", "typ"]


@dataclass(frozen=True)
class Identity:
    user_id: str
    email: str
    role: str = "user"

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def issue_access_token(settings: Settings, identity: Identity, now: float | None = None) -> str:
    import jwt

    issued = int(time.time() if now is None else now)
    claims = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": identity.user_id,
        "email": identity.email,
        "role": identity.role,
        "iat": issued,
        "nbf": issued,
        "exp": issued + settings.access_token_ttl_seconds,
        "jti": uuid.uuid4().hex,
        "typ": ACCESS_TYPE,
    }
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")


def verify_access_token(settings: Settings, token: str) -> Identity:
    """Verify signature (JWT_SECRET, or JWT_SECRET_PREVIOUS during a rotation), algorithm,
    issuer, audience, expiry and type; any failure is 401."""
    import jwt

    claims: dict[str, Any] | None = None
    # During a rotation a token may carry either key's signature; every other check is the same.
    for key in filter(None, (settings.jwt_secret, settings.jwt_previous_secret)):
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=["HS256"],
                audience=settings.jwt_audience,
                issuer=settings.jwt_issuer,
                options={"require": REQUIRED_CLAIMS},
                leeway=5,
            )
            break
        except jwt.InvalidSignatureError:
            continue
        except jwt.PyJWTError:
            break
    if claims is None:
        raise Unauthorized("Invalid or expired token", code="invalid_token")
    if claims.get("typ") != ACCESS_TYPE or not isinstance(claims.get("sub"), str):
        raise Unauthorized("Invalid or expired token", code="invalid_token")
    return Identity(
        user_id=claims["sub"], email=str(claims.get("email", "")), role=str(claims.get("role", "user"))
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
