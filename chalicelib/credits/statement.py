"""The read side of credits: GET /credits/balance and GET /credits/transactions."""
from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from chalicelib.aws import store
from chalicelib.credits import ledger
from chalicelib.core.errors import BadRequest, NotFound, Unauthorized, ValidationFailed

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_CURSOR_CHARS = 1024
TRANSACTIONS_INDEX = "user_id-created_at-index"
# What a user sees of a transactions row: never Stripe ids, checkout URLs or internal state.
PUBLIC_FIELDS = (
    "transaction_id", "kind", "source", "status", "credits", "amount", "currency",
    "package_id", "plan_id", "balance_after", "created_at", "completed_at",
)
_LIMIT = re.compile(r"[0-9]{1,3}")


def balance(user_id: str) -> dict[str, Any]:
    """`balance` is what the user owns (the published popup shows it and disables Start at 0),
    `credits_held` what sessions and jobs in progress hold, `credits_available` what can be
    spent now; one GetItem."""
    try:
        account = ledger.get_balance(user_id)
    except NotFound:
        # Same answer as GET /auth/user: a deleted account's still-valid token gets 401.
        raise Unauthorized("Account no longer exists", code="account_not_found") from None
    return {
        "balance": account["owned"],
        "credits_available": account["balance"],
        "credits_held": account["held"],
        "subscription_tier": account["subscription_tier"],
        "total_credits_purchased": account["total_credits_purchased"],
        "total_usage": account["total_usage"],
    }


def summary(user_id: str) -> dict[str, int]:
    """The balance every spending answer carries (live captions, Ask), so clients need not
    poll: owned (`credits_balance`), held and available, from one consistent read."""
    account = ledger.get_balance(user_id)
    return {
        "credits_balance": account["owned"],
        "credits_available": account["balance"],
        "credits_held": account["held"],
    }


def parse_limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if not _LIMIT.fullmatch(raw) or not 1 <= int(raw) <= MAX_LIMIT:
        raise ValidationFailed(f"'limit' must be an integer from 1 to {MAX_LIMIT}", field="limit")
    return int(raw)


def encode_cursor(last_key: dict[str, Any]) -> str:
    """Opaque to clients: where the next page starts, without the user id (it is implied)."""
    position = {"t": last_key["transaction_id"]["S"], "c": last_key["created_at"]["S"]}
    raw = json.dumps(position, separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str, user_id: str) -> dict[str, Any]:
    """The ExclusiveStartKey for a cursor; anything that is not one of ours is a 400."""
    invalid = BadRequest("Invalid cursor", code="invalid_cursor", field="cursor")
    if len(cursor) > MAX_CURSOR_CHARS:
        raise invalid
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise invalid from None
    if (
        not isinstance(position, dict)
        or set(position) != {"t", "c"}
        or not all(isinstance(v, str) and 0 < len(v) <= 256 for v in position.values())
    ):
        raise invalid
    return {
        "transaction_id": {"S": position["t"]},
        "user_id": {"S": user_id},
        "created_at": {"S": position["c"]},
    }


def public_transaction(row: dict[str, Any]) -> dict[str, Any]:
    return {name: row[name] for name in PUBLIC_FIELDS if row.get(name) is not None}


def transactions(user_id: str, *, limit: str | None, cursor: str | None) -> dict[str, Any]:
    """Purchases, grants and clawbacks, newest first; one Query per page."""
    request: dict[str, Any] = {
        "TableName": store.table_name("transactions"),
        "IndexName": TRANSACTIONS_INDEX,
        "KeyConditionExpression": "user_id = :user",
        "ExpressionAttributeValues": store.values(user=user_id),
        "ScanIndexForward": False,
        "Limit": parse_limit(limit),
    }
    if cursor:
        request["ExclusiveStartKey"] = decode_cursor(cursor, user_id)
    response = store.ddb().query(**request)
    items = [public_transaction(store.from_item(item)) for item in response.get("Items", [])]
    last = response.get("LastEvaluatedKey")
    return {"items": items, "next_cursor": encode_cursor(last) if last else None}
