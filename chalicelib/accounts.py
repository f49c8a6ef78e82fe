"""Registration, login, refresh-token rotation, logout and the user profile."""
from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from chalicelib import ledger, lockout, store
from chalicelib.errors import Conflict, Unauthorized
from chalicelib.logs import log_event, register_secret
from chalicelib.passwords import (
    check_password_rules,
    dummy_hash,
    hash_password,
    verify_password,
)
from chalicelib.settings import Settings
from chalicelib.tokens import (
    Identity,
    family_id_key,
    issue_access_token,
    new_refresh_token,
    refresh_token_id,
)
from chalicelib.validation import Field, Schema

logger = logging.getLogger(__name__)

EMAIL_PATTERN = r"[^@\s]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+"
INVALID_LOGIN = "Invalid email or password"


def _normalize_email(value: str) -> str:
    return value.strip().lower()


EMAIL_FIELD = Field(str, required=True, max_length=254, pattern=EMAIL_PATTERN, normalize=_normalize_email)
PASSWORD_FIELD = Field(str, required=True, max_length=1024, min_length=1)

REGISTER_SCHEMA = Schema(
    {
        "email": EMAIL_FIELD,
        "password": PASSWORD_FIELD,
        "name": Field(str, max_length=100, normalize=str.strip),
    },
    name="register",
)
LOGIN_SCHEMA = Schema({"email": EMAIL_FIELD, "password": PASSWORD_FIELD}, name="login")
REFRESH_SCHEMA = Schema(
    {"refresh_token": Field(str, required=True, max_length=256, min_length=1)}, name="refresh"
)

PUBLIC_USER_FIELDS = (
    "user_id", "email", "name", "credits_balance", "subscription_tier", "subscription_status",
    "created_at", "last_login", "total_credits_purchased", "total_usage",
)


def public_user(user: dict[str, Any]) -> dict[str, Any]:
    """The user as clients see it: `credits_balance` is what the user owns (credits held for a
    session in progress included; the published popup shows it), with what is held and
    what can be spent now beside it."""
    view = {name: user.get(name) for name in PUBLIC_USER_FIELDS}
    available = user.get("credits_balance")
    held = int(user.get("credits_held") or 0)
    if isinstance(available, int):
        view.update(credits_balance=available + held, credits_available=available, credits_held=held)
    view["is_admin"] = user.get("role") == "admin"
    return view


def _identity(user: dict[str, Any]) -> Identity:
    return Identity(user_id=user["user_id"], email=user["email"], role=user.get("role", "user"))


def _refresh_token_puts(settings: Settings, user_id: str, family_id: str) -> tuple[str, list[dict[str, Any]]]:
    """A new refresh token of `family_id`, and its item as transaction Puts."""
    token = new_refresh_token()
    register_secret(token)
    puts = [
        store.put_new("refresh-tokens", "token_id", {
            "token_id": refresh_token_id(token),
            "kind": "token",
            "user_id": user_id,
            "family_id": family_id,
            "used": False,
            "created_at": store.iso(),
            "expires_at_epoch": store.epoch() + settings.refresh_token_ttl_seconds,
        })
    ]
    return token, puts


def _family_put(settings: Settings, user_id: str, family_id: str) -> dict[str, Any]:
    return {
        "Put": {
            "TableName": store.table_name("refresh-tokens"),
            "Item": store.to_item(
                {
                    "token_id": family_id_key(family_id),
                    "kind": "family",
                    "user_id": user_id,
                    "revoked": False,
                    "created_at": store.iso(),
                    "expires_at_epoch": store.epoch() + settings.refresh_token_ttl_seconds,
                }
            ),
        }
    }


def _session_response(settings: Settings, user: dict[str, Any], refresh_token: str) -> dict[str, Any]:
    access = issue_access_token(settings, _identity(user))
    register_secret(access)
    return {
        "user": {**public_user(user), "token": access},
        "token": access,
        "refresh_token": refresh_token,
        "expires_in": settings.access_token_ttl_seconds,
    }


def register(settings: Settings, email: str, password: str, name: str | None) -> dict[str, Any]:
    """Create the account, its email claim, its signup grant and a session in one transaction."""
    register_secret(password)
    check_password_rules(password)
    user_id = uuid.uuid4().hex
    now = store.iso()
    user = {
        "user_id": user_id,
        "email": email,
        "name": name or "",
        "password_hash": hash_password(password, settings.bcrypt_rounds),
        "credits_balance": settings.signup_credits,
        "total_credits_purchased": 0,
        "total_usage": 0,
        "subscription_tier": "free",
        "role": "user",
        "is_active": True,
        "created_at": now,
        "last_login": now,
    }
    family_id = uuid.uuid4().hex
    refresh_token, token_puts = _refresh_token_puts(settings, user_id, family_id)
    items = [
        store.put_new("emails", "email", {"email": email, "user_id": user_id, "created_at": now}),
        store.put_new("users", "user_id", user),
        ledger.signup_grant_put(user_id, settings.signup_credits, now),
        _family_put(settings, user_id, family_id),
        *token_puts,
    ]
    try:
        store.ddb().transact_write_items(TransactItems=items)
    except store.ddb().exceptions.TransactionCanceledException as error:
        reasons = store.cancellation_reasons(error)
        if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
            raise Conflict("An account with this email already exists", code="email_taken") from None
        raise
    log_event(logger, "account.registered", user_id=user_id)
    return _session_response(settings, user, refresh_token)


def login(
    settings: Settings, email: str, password: str, source_ip: str | None = None
) -> dict[str, Any]:
    """Same status, message and (one bcrypt) cost for an unknown email, a wrong password
    and a locked account or IP (chalicelib.lockout: no lockout oracle)."""
    register_secret(password)
    attempt = lockout.begin(settings, email, source_ip)
    if attempt.refused:
        verify_password(password, dummy_hash(settings.bcrypt_rounds))
        raise Unauthorized(INVALID_LOGIN, code="invalid_credentials")
    time.sleep(attempt.delay_seconds(settings))
    claim = store.get("emails", email=email)
    user = store.get("users", user_id=claim["user_id"]) if claim else None
    if user is None or not user.get("is_active", True):
        verify_password(password, dummy_hash(settings.bcrypt_rounds))
        lockout.failed(settings, attempt)
        raise Unauthorized(INVALID_LOGIN, code="invalid_credentials")
    if not verify_password(password, user.get("password_hash", "")):
        lockout.failed(settings, attempt)
        raise Unauthorized(INVALID_LOGIN, code="invalid_credentials")
    lockout.succeeded(settings, attempt)
    now = store.iso()
    family_id = uuid.uuid4().hex
    refresh_token, token_puts = _refresh_token_puts(settings, user["user_id"], family_id)
    store.ddb().transact_write_items(
        TransactItems=[
            {
                "Update": {
                    "TableName": store.table_name("users"),
                    "Key": store.key(user_id=user["user_id"]),
                    "UpdateExpression": "SET last_login = :now",
                    "ConditionExpression": "attribute_exists(user_id)",
                    "ExpressionAttributeValues": store.values(now=now),
                }
            },
            _family_put(settings, user["user_id"], family_id),
            *token_puts,
        ]
    )
    user["last_login"] = now
    log_event(logger, "account.login", user_id=user["user_id"])
    return _session_response(settings, user, refresh_token)


def _revoke_family(family_id: str) -> None:
    store.ddb().update_item(
        TableName=store.table_name("refresh-tokens"),
        Key=store.key(token_id=family_id_key(family_id)),
        UpdateExpression="SET revoked = :yes, revoked_at = :now",
        ConditionExpression="attribute_exists(token_id)",
        ExpressionAttributeValues=store.values(yes=True, now=store.iso()),
    )


def refresh(settings: Settings, refresh_token: str) -> dict[str, Any]:
    """Rotate a refresh token; a second use of a rotated token revokes its whole family."""
    register_secret(refresh_token)
    invalid = Unauthorized("Invalid or expired refresh token", code="invalid_refresh_token")
    token_id = refresh_token_id(refresh_token)
    record = store.get("refresh-tokens", token_id=token_id)
    if record is None or record.get("kind") != "token" or record["expires_at_epoch"] <= store.epoch():
        raise invalid
    if record.get("used"):
        _try_revoke(record["family_id"])
        log_event(logger, "refresh_token.reuse_detected", logging.WARNING, user_id=record["user_id"])
        raise Unauthorized("Refresh token reuse detected; please log in again", code="refresh_token_reused")
    user = store.get("users", user_id=record["user_id"])
    if user is None or not user.get("is_active", True):
        raise invalid
    new_token, token_puts = _refresh_token_puts(settings, user["user_id"], record["family_id"])
    table = store.table_name("refresh-tokens")
    try:
        store.ddb().transact_write_items(
            TransactItems=[
                {
                    "Update": {
                        "TableName": table,
                        "Key": store.key(token_id=token_id),
                        "UpdateExpression": "SET used = :yes, used_at = :now",
                        "ConditionExpression": "used = :no",
                        "ExpressionAttributeValues": store.values(yes=True, no=False, now=store.iso()),
                    }
                },
                {
                    "ConditionCheck": {
                        "TableName": table,
                        "Key": store.key(token_id=family_id_key(record["family_id"])),
                        "ConditionExpression": "revoked = :no",
                        "ExpressionAttributeValues": store.values(no=False),
                    }
                },
                *token_puts,
            ]
        )
    except store.ddb().exceptions.TransactionCanceledException:
        # Used concurrently by someone else, or the family was revoked: treat as reuse.
        _try_revoke(record["family_id"])
        raise invalid from None
    access = issue_access_token(settings, _identity(user))
    register_secret(access)
    return {"token": access, "refresh_token": new_token, "expires_in": settings.access_token_ttl_seconds}


def _try_revoke(family_id: str) -> None:
    try:
        _revoke_family(family_id)
    except store.ddb().exceptions.ConditionalCheckFailedException:
        pass


def logout(refresh_token: str) -> None:
    """Revoke the token's family; unknown tokens are fine (logout is idempotent)."""
    register_secret(refresh_token)
    record = store.get("refresh-tokens", token_id=refresh_token_id(refresh_token))
    if record is not None and record.get("kind") == "token":
        _try_revoke(record["family_id"])
        log_event(logger, "account.logout", user_id=record["user_id"])


def get_user(user_id: str) -> dict[str, Any]:
    """The caller's own user item; a deleted account's still-valid access token gets 401."""
    user = store.get("users", user_id=user_id)
    if user is None or not user.get("is_active", True):
        raise Unauthorized("Account no longer exists", code="account_not_found")
    return user
