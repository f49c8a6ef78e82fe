"""An account's standing, as the JWT authorizer checks it: one small read per token per cache period.

Kept apart from `accounts` so the internet-facing authorizer imports (and its IAM policy grants)
only this read, not the account operations that write.
"""
from __future__ import annotations

from chalicelib.aws import store
from chalicelib.accounts.tokens import Identity

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
    item = store.from_item(
        store.ddb()
        .get_item(
            TableName=store.table_name("users"),
            Key=store.key(user_id=identity.user_id),
            ProjectionExpression="is_active, #status, token_generation, #role, deletion_started_at",
            ExpressionAttributeNames={"#status": "status", "#role": "role"},
        )
        .get("Item")
    )
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
