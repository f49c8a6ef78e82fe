"""An account's standing, as the JWT authorizer checks it: one small read per token per cache period.

Kept apart from `accounts` so the internet-facing authorizer imports (and its IAM policy grants)
only this read, not the account operations that write. The read is a DynamoDB GetItem made
with `chalicelib.aws.json_client` (a signed POST over the standard library), not boto3: the
authorizer then loads no SDK at all, which was most of its cold start (docs/performance.md).
infra/policy.py reads the call below and grants exactly dynamodb:GetItem on the users table.
"""
from __future__ import annotations

from typing import Any

from chalicelib.accounts.tokens import Identity
from chalicelib.aws import json_client
from chalicelib.core.errors import StorageBusy
from chalicelib.core.settings import get_settings

ACTIVE, SUSPENDED = "active", "suspended"
USER_STATUSES = (ACTIVE, SUSPENDED)


# A half-deleted account (privacy.delete_account was interrupted): its token is refused as
# `account_not_found` everywhere except the one request that finishes the deletion.
DELETING = "account_deleting"
FINISH_DELETION = ("DELETE", "/auth/user")

# Why a correctly signed token is refused. The authorizer puts the code in its context and
# the HTTP middleware answers 401 with it before any route runs: one mechanism for all.
TOKEN_REFUSALS = {
    "token_expired": "Your session has expired; please refresh it or log in again",
    "account_not_found": "Account no longer exists",
    "account_suspended": "This account is suspended; contact support",
    "token_revoked": "This session has ended; please log in again",
}


def token_refusal(identity: Identity) -> tuple[str | None, str]:
    """(refusal code or None, current role) for a verified token: the authorizer's one read.

    An eventually consistent GetItem of five small attributes (0.5 read units); API Gateway
    caches the authorizer's answer per token for AUTHORIZER_TTL_SECONDS, so this runs at most
    once per token per cache period.
    """
    item = _standing(identity.user_id)
    if item is None:
        return "account_not_found", identity.role
    if not item.get("is_active", True):
        return (DELETING if item.get("deletion_started_at") else "account_not_found"), identity.role
    role = str(item.get("role", identity.role))
    if item.get("status", ACTIVE) != ACTIVE:
        return "account_suspended", role
    if identity.token_generation < int(item.get("token_generation", 0)):
        return "token_revoked", role
    return None, role


def _standing(user_id: str) -> dict[str, Any] | None:
    """The user item's standing attributes (None: no such user), eventually consistent."""
    settings = get_settings()
    try:
        answer = json_client.call("dynamodb", "GetItem", {
            "TableName": settings.resource("users"),
            "Key": {"user_id": {"S": user_id}},
            "ProjectionExpression": "is_active, #status, token_generation, #role, deletion_started_at",
            "ExpressionAttributeNames": {"#status": "status", "#role": "role"},
        }, region=settings.region, timeout=settings.aws_read_timeout_seconds)
    except json_client.AwsError as error:  # after its retries: as boto3's calls are answered
        raise StorageBusy(error.code) from None
    except OSError as error:  # no answer (refused, timed out)
        raise StorageBusy(type(error).__name__) from None
    item = answer.get("Item")
    return None if item is None else {name: _plain(value) for name, value in item.items()}


def _plain(value: dict[str, Any]) -> Any:
    """One attribute of DynamoDB's JSON (S, N, BOOL or NULL: what the standing holds)."""
    (kind, raw), = value.items()
    if kind == "N":
        return int(raw) if raw.lstrip("-").isdigit() else float(raw)
    if kind == "NULL":
        return None
    return raw  # S, BOOL
