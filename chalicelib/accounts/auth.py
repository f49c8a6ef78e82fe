"""Registration, login, refresh-token rotation, logout, password change and the user profile.

Every user item carries `status` (`active` or `suspended`) and `token_generation`. Access
tokens are issued with the generation of their moment; logout, a password change and a
suspension bump it, and deletion marks the item inactive, so the authorizer (which reads
these through `token_refusal`) refuses every older token within its cache time.
"""
from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from chalicelib.accounts import lockout
from chalicelib.aws import store
from chalicelib.credits import ledger
from chalicelib.core.errors import Conflict, Forbidden, Unauthorized
from chalicelib.core.logs import log_event, register_secret
from chalicelib.accounts.passwords import (
    check_password_rules,
    dummy_hash,
    hash_password,
    verify_password,
)
from chalicelib.core.settings import get_settings
from chalicelib.accounts.standing import ACTIVE, SUSPENDED, USER_STATUSES  # noqa: F401 (re-exported)
from chalicelib.accounts.tokens import (
    Identity,
    family_id_key,
    issue_access_token,
    new_refresh_token,
    refresh_token_id,
)
from chalicelib.core.validation import Field, Schema

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
CHANGE_PASSWORD_SCHEMA = Schema(
    {"current_password": PASSWORD_FIELD, "new_password": PASSWORD_FIELD},
    name="change_password",
    max_body_bytes=4 * 1024,
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
    return Identity(
        user_id=user["user_id"],
        email=user["email"],
        role=user.get("role", "user"),
        token_generation=int(user.get("token_generation", 0)),
    )


def _may_sign_in(user: dict[str, Any] | None) -> bool:
    return user is not None and user.get("is_active", True) and user.get("status", ACTIVE) == ACTIVE


def _refresh_token_puts(user_id: str, family_id: str) -> tuple[str, list[dict[str, Any]]]:
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
            "expires_at_epoch": store.epoch() + get_settings().refresh_token_ttl_seconds,
        })
    ]
    return token, puts


def _family_put(user_id: str, family_id: str) -> dict[str, Any]:
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
                    "expires_at_epoch": store.epoch() + get_settings().refresh_token_ttl_seconds,
                }
            ),
        }
    }


def _session_response(user: dict[str, Any], refresh_token: str) -> dict[str, Any]:
    """Both kinds of session: `user.token` lives SESSION_TOKEN_TTL_SECONDS for clients that
    keep only it and never refresh (the published extension); `token` is short and comes with
    the `refresh_token` that renews it. Both end at logout, password change, deletion and
    suspension (the authorizer checks the token generation)."""
    settings = get_settings()
    identity = _identity(user)
    session_token = issue_access_token(identity, ttl_seconds=settings.session_token_ttl_seconds)
    access = issue_access_token(identity)
    register_secret(session_token)
    register_secret(access)
    return {
        "user": {**public_user(user), "token": session_token},
        "token": access,
        "refresh_token": refresh_token,
        "expires_in": settings.access_token_ttl_seconds,
    }


def register(email: str, password: str, name: str | None) -> dict[str, Any]:
    """Create the account, its email claim, its signup grant and a session in one transaction."""
    settings = get_settings()
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
        "status": ACTIVE,
        "token_generation": 0,
        "created_at": now,
        "last_login": now,
    }
    family_id = uuid.uuid4().hex
    refresh_token, token_puts = _refresh_token_puts(user_id, family_id)
    items = [
        store.put_new("emails", "email", {"email": email, "user_id": user_id, "created_at": now}),
        store.put_new("users", "user_id", user),
        ledger.signup_grant_put(user_id, settings.signup_credits, now),
        _family_put(user_id, family_id),
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
    return _session_response(user, refresh_token)


def login(
    email: str, password: str, source_ip: str | None = None
) -> dict[str, Any]:
    """Same status, message and (one bcrypt) cost for an unknown email, a wrong password
    and a locked account or IP (chalicelib.accounts.lockout: no lockout oracle)."""
    settings = get_settings()
    register_secret(password)
    attempt = lockout.begin(email, source_ip)
    if attempt.refused:
        verify_password(password, dummy_hash(settings.bcrypt_rounds))
        raise Unauthorized(INVALID_LOGIN, code="invalid_credentials")
    time.sleep(attempt.delay_seconds())
    claim = store.get("emails", email=email)
    user = store.get("users", user_id=claim["user_id"]) if claim else None
    if not _may_sign_in(user):
        verify_password(password, dummy_hash(settings.bcrypt_rounds))
        lockout.failed(attempt)
        raise Unauthorized(INVALID_LOGIN, code="invalid_credentials")
    if not verify_password(password, user.get("password_hash", "")):
        lockout.failed(attempt)
        raise Unauthorized(INVALID_LOGIN, code="invalid_credentials")
    lockout.succeeded(attempt)
    now = store.iso()
    family_id = uuid.uuid4().hex
    refresh_token, token_puts = _refresh_token_puts(user["user_id"], family_id)
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
            _family_put(user["user_id"], family_id),
            *token_puts,
        ]
    )
    user["last_login"] = now
    log_event(logger, "account.login", user_id=user["user_id"])
    return _session_response(user, refresh_token)


def _revoke_family(family_id: str) -> None:
    store.ddb().update_item(
        TableName=store.table_name("refresh-tokens"),
        Key=store.key(token_id=family_id_key(family_id)),
        UpdateExpression="SET revoked = :yes, revoked_at = :now",
        ConditionExpression="attribute_exists(token_id)",
        ExpressionAttributeValues=store.values(yes=True, now=store.iso()),
    )


def refresh(refresh_token: str) -> dict[str, Any]:
    """Rotate a refresh token; a second use of a rotated token revokes its whole family."""
    settings = get_settings()
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
    if not _may_sign_in(user):
        raise invalid
    new_token, token_puts = _refresh_token_puts(user["user_id"], record["family_id"])
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
    access = issue_access_token(_identity(user))
    register_secret(access)
    return {"token": access, "refresh_token": new_token, "expires_in": settings.access_token_ttl_seconds}


def _try_revoke(family_id: str) -> None:
    try:
        _revoke_family(family_id)
    except store.ddb().exceptions.ConditionalCheckFailedException:
        pass


def logout(refresh_token: str) -> None:
    """Revoke the token's family and end every access token issued so far; unknown tokens
    are fine (logout is idempotent).

    The generation is per user: the other devices' refresh tokens still work and get a new
    access token on their next refresh, while a session token (a client that never
    refreshes) ends everywhere. That is the price of one read per token in the authorizer.
    """
    register_secret(refresh_token)
    record = store.get("refresh-tokens", token_id=refresh_token_id(refresh_token))
    if record is not None and record.get("kind") == "token":
        _try_revoke(record["family_id"])
        end_access_tokens(record["user_id"])
        log_event(logger, "account.logout", user_id=record["user_id"])


def end_access_tokens(user_id: str, **also_set: Any) -> None:
    """Bump the user's token generation (and set `also_set` attributes in the same write):
    every access token issued before is refused from the authorizer's next check on."""
    assignments = "".join(f", #{name} = :{name}" for name in also_set)
    try:
        store.ddb().update_item(
            TableName=store.table_name("users"),
            Key=store.key(user_id=user_id),
            UpdateExpression="SET token_generation = if_not_exists(token_generation, :zero) + :one"
            + assignments,
            ConditionExpression="attribute_exists(user_id)",
            ExpressionAttributeValues=store.values(zero=0, one=1, **also_set),
            **({"ExpressionAttributeNames": {f"#{name}": name for name in also_set}} if also_set else {}),
        )
    except store.ddb().exceptions.ConditionalCheckFailedException:
        pass  # no such user (deleted): nothing left to end


def set_status(user_id: str, status: str) -> None:
    """Suspend or reinstate an account (the operator's switch). Suspending ends its tokens
    within the authorizer's cache time and refuses login and refresh; reinstating lets the
    user log in again (old tokens stay ended)."""
    if status not in USER_STATUSES:
        raise ValueError(f"status must be one of {USER_STATUSES}")
    end_access_tokens(user_id, status=status)
    log_event(logger, "account.status_changed", user_id=user_id, status=status)


def revoke_all_refresh_tokens(user_id: str) -> None:
    """Revoke every refresh-token family of the user (found through user_id-index)."""
    for item in store.query_all(
        {
            "TableName": store.table_name("refresh-tokens"),
            "IndexName": "user_id-index",
            "KeyConditionExpression": "user_id = :u",
            "ExpressionAttributeValues": store.values(u=user_id),
        }
    ):
        if item["token_id"].startswith(family_id_key("")):
            _try_revoke(item["token_id"][len(family_id_key("")):])


def change_password(user_id: str, current: str, new: str) -> dict[str, Any]:
    """`POST /auth/password`: every earlier token and refresh token ends; the caller gets a
    new session (same shape as login)."""
    settings = get_settings()
    register_secret(current)
    register_secret(new)
    user = get_user(user_id)
    if not verify_password(current, user.get("password_hash", "")):
        raise Forbidden("The current password is not correct", code="invalid_password")
    check_password_rules(new)
    new_hash = hash_password(new, settings.bcrypt_rounds)
    try:
        store.ddb().update_item(
            TableName=store.table_name("users"),
            Key=store.key(user_id=user_id),
            UpdateExpression="SET password_hash = :new, password_changed_at = :now, "
            "token_generation = if_not_exists(token_generation, :zero) + :one",
            ConditionExpression="password_hash = :old",  # a concurrent change wins once
            ExpressionAttributeValues=store.values(
                new=new_hash, old=user["password_hash"], now=store.iso(), zero=0, one=1
            ),
        )
    except store.ddb().exceptions.ConditionalCheckFailedException:
        raise Conflict("The password was changed meanwhile; log in again", code="password_changed") from None
    revoke_all_refresh_tokens(user_id)
    log_event(logger, "account.password_changed", user_id=user_id)
    user = get_user(user_id)
    family_id = uuid.uuid4().hex
    refresh_token, token_puts = _refresh_token_puts(user_id, family_id)
    store.ddb().transact_write_items(TransactItems=[_family_put(user_id, family_id), *token_puts])
    return _session_response(user, refresh_token)


def get_user(user_id: str) -> dict[str, Any]:
    """The caller's own user item; a deleted account's still-valid access token gets 401."""
    user = store.get("users", user_id=user_id)
    if user is None or not user.get("is_active", True):
        raise Unauthorized("Account no longer exists", code="account_not_found")
    return user
