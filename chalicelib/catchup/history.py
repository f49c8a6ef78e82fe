"""The user's history: live sessions, catch-ups and asks, newest first, one Query per page.

One item per finished thing, stored under the user's partition with the sort key
`<created_at iso>#<kind>#<id>`. ISO timestamps sort in time order, so a reverse Query is
the timeline and a page never needs a Scan or an index. The features write their own
entries (`record`, or `put_item` inside the transaction that settles the credits, so an
entry exists exactly when the charge does); this module only reads them back.

The pagination cursor is the last key of a page, base64-encoded JSON. It is opaque to
clients but not secret, so it is bound to its user: a cursor whose user is not the
caller is refused rather than used as a starting key.
"""
from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Mapping

from chalicelib.aws import store
from chalicelib.core.errors import BadRequest, ValidationFailed

TABLE = "history"
KINDS = ("stream", "catchup", "ask")
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_CURSOR_CHARS = 1024
MAX_SUMMARY_CHARS = 1000
MAX_TEXT_CHARS = 300
# Attributes that are storage mechanics, never shown to the user.
_PRIVATE = ("user_id", "sort_key", "expires_at_epoch")


def sort_key(created_at: str, kind: str, item_id: str) -> str:
    return f"{created_at}#{kind}#{item_id}"


def entry(user_id: str, kind: str, item_id: str, created_at: str, **fields: Any) -> dict[str, Any]:
    """The history item for one finished session, catch-up or ask (None fields left out).

    Long free text is bounded here so that one chatty summary cannot bloat every page.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown history kind {kind!r}")
    for name, limit in (("summary", MAX_SUMMARY_CHARS), ("title", MAX_TEXT_CHARS),
                        ("channel", MAX_TEXT_CHARS)):
        if isinstance(fields.get(name), str):
            fields[name] = fields[name][:limit]
    return {
        **{k: v for k, v in fields.items() if v is not None},
        "user_id": user_id,
        "sort_key": sort_key(created_at, kind, item_id),
        "id": item_id,
        "kind": kind,
        "created_at": created_at,
    }


def put_item(user_id: str, kind: str, item_id: str, created_at: str, **fields: Any) -> dict[str, Any]:
    """The entry as a TransactWriteItems `Put`, to write it atomically with a ledger settle.

    Unconditional on purpose: the key is deterministic, so writing the same entry twice
    (a replayed settle) stores the same item and cannot fail the money transaction.
    """
    return {
        "Put": {
            "TableName": store.table_name(TABLE),
            "Item": store.to_item(entry(user_id, kind, item_id, created_at, **fields)),
        }
    }


def record(user_id: str, kind: str, item_id: str, created_at: str, **fields: Any) -> dict[str, Any]:
    """Write one history entry on its own (idempotent: same arguments, same item)."""
    item = entry(user_id, kind, item_id, created_at, **fields)
    store.ddb().put_item(TableName=store.table_name(TABLE), Item=store.to_item(item))
    return _public(item)


def _public(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k not in _PRIVATE}


def encode_cursor(user_id: str, last_sort_key: str) -> str:
    raw = json.dumps({"u": user_id, "s": last_sort_key}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(user_id: str, cursor: str) -> dict[str, Any]:
    """The ExclusiveStartKey a cursor stands for; 400 for garbage or another user's cursor."""
    invalid = BadRequest("The cursor is not valid", code="invalid_cursor")
    if len(cursor) > MAX_CURSOR_CHARS:
        raise invalid
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise invalid from None
    if (
        not isinstance(data, dict)
        or data.get("u") != user_id
        or not isinstance(data.get("s"), str)
        or not 0 < len(data["s"]) <= 512
    ):
        raise invalid
    return store.key(user_id=user_id, sort_key=data["s"])


def list_history(user_id: str, limit: int = DEFAULT_LIMIT, cursor: str | None = None) -> dict[str, Any]:
    """One page of the user's history, newest first: `{items, next_cursor}`.

    Asks DynamoDB for one item more than the page holds, so `next_cursor` is null exactly
    when there is nothing after this page (no empty last page for the client to fetch).
    """
    request: dict[str, Any] = {
        "TableName": store.table_name(TABLE),
        "KeyConditionExpression": "user_id = :u",
        "ExpressionAttributeValues": store.values(u=user_id),
        "ScanIndexForward": False,
        "Limit": limit + 1,
    }
    if cursor:
        request["ExclusiveStartKey"] = decode_cursor(user_id, cursor)
    response = store.ddb().query(**request)
    items = [store.from_item(item) or {} for item in response.get("Items", [])]
    page, more = items[:limit], len(items) > limit
    return {
        "items": [_public(item) for item in page],
        "next_cursor": encode_cursor(user_id, page[-1]["sort_key"]) if more and page else None,
    }


def parse_limit(raw: str | None) -> int:
    """The `limit` query parameter: an integer 1..100, 20 when absent."""
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 4:  # "²".isdigit() is True
        raise ValidationFailed("'limit' must be an integer", field="limit")
    value = int(raw)
    if not 1 <= value <= MAX_LIMIT:
        raise ValidationFailed(f"'limit' must be between 1 and {MAX_LIMIT}", field="limit")
    return value


def list_page(user_id: str, params: Mapping[str, str] | None) -> dict[str, Any]:
    """`GET /transcription/history`: validate the query parameters, then one Query."""
    params = params or {}
    return list_history(user_id, parse_limit(params.get("limit")), params.get("cursor") or None)
