"""The operator audit log: every admin action, appended, never changed.

One item per action in the `audit` table, written by this module only (it offers no update
and no delete, and no route edits or removes an entry):

    log       "admin" (one partition: admin actions come at human pace)
    entry_id  <ISO time>#<random>: time-ordered, so a page is one reverse Query
    actor     who acted: the admin's user id (or `cli:<login>` for the operator command)
    actor_email, action, target (a user id, when the action concerns one), reason,
    request_id (the API request, also in the access log), details (ids, amounts; never secrets)

The sparse `target-index` (only entries with a target) lists what was done to one user.
An entry is written with `attribute_not_exists`, so even a colliding id never overwrites one.
"""
from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import uuid
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from chalicelib.aws import store
from chalicelib.core import jsonutil
from chalicelib.core import logs
from chalicelib.core.errors import BadRequest

TABLE = "audit"
LOG = "admin"
TARGET_INDEX = "target-index"
EXPORT_FIELDS = ("entry_id", "at", "actor", "actor_email", "action", "target", "reason",
                 "request_id", "details")
MAX_CURSOR_CHARS = 512


@dataclass(frozen=True)
class Actor:
    """Who performs an admin action: an admin's id and email, or the operator command."""

    actor_id: str
    email: str = ""


def record(
    actor: Actor,
    action: str,
    *,
    target: str | None = None,
    reason: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Append one entry (a conditional PutItem) and return it."""
    at = store.iso()
    entry = {
        "log": LOG,
        "entry_id": f"{at}#{uuid.uuid4().hex[:12]}",
        "at": at,
        "actor": actor.actor_id,
        "actor_email": actor.email or None,
        "action": action,
        "target": target,
        "reason": reason,
        "request_id": (logs.request_context.get() or {}).get("request_id"),
        "details": jsonutil.plain(dict(details)) if details else None,
    }
    store.ddb().put_item(
        TableName=store.table_name(TABLE),
        Item=store.to_item(entry),
        ConditionExpression="attribute_not_exists(entry_id)",
    )
    return public(entry)


def public(item: Mapping[str, Any]) -> dict[str, Any]:
    return {name: item.get(name) for name in EXPORT_FIELDS}


def _encode(last_key: Mapping[str, Any]) -> str:
    raw = json.dumps({"e": last_key["entry_id"]["S"]}, separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _decode(cursor: str) -> str:
    invalid = BadRequest("Invalid cursor", code="invalid_cursor", field="cursor")
    if len(cursor) > MAX_CURSOR_CHARS:
        raise invalid
    try:
        position = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise invalid from None
    if not isinstance(position, dict) or set(position) != {"e"} or not isinstance(position["e"], str) \
            or not 0 < len(position["e"]) <= 128:
        raise invalid
    return position["e"]


def _request(target: str | None, limit: int, cursor: str | None) -> dict[str, Any]:
    request: dict[str, Any] = {"TableName": store.table_name(TABLE), "ScanIndexForward": False,
                               "Limit": limit}
    if target:
        request.update(IndexName=TARGET_INDEX, KeyConditionExpression="target = :target",
                       ExpressionAttributeValues=store.values(target=target))
    else:
        request.update(KeyConditionExpression="#log = :log", ExpressionAttributeNames={"#log": "log"},
                       ExpressionAttributeValues=store.values(log=LOG))
    if cursor:
        entry_id = _decode(cursor)
        start = {"log": {"S": LOG}, "entry_id": {"S": entry_id}}
        if target:
            start["target"] = {"S": target}
        request["ExclusiveStartKey"] = start
    return request


def page(*, limit: int, cursor: str | None = None, target: str | None = None) -> dict[str, Any]:
    """Entries newest first (all, or those about one user): `{items, next_cursor}`."""
    response = store.ddb().query(**_request(target, limit, cursor))
    items = [public(store.from_item(item) or {}) for item in response.get("Items", [])]
    last = response.get("LastEvaluatedKey")
    return {"items": items, "next_cursor": _encode(last) if last else None}


def iter_all(target: str | None = None) -> Iterator[dict[str, Any]]:
    """Every entry, newest first (the export)."""
    request = _request(target, 500, None)
    for item in store.query_all(request):
        yield public(item)


def to_csv(entries: Iterator[dict[str, Any]]) -> str:
    """The export as CSV (RFC 4180), one row per entry, `details` as JSON.

    Cells starting with = + - @ are prefixed with ' so that a spreadsheet never runs a
    reason an admin typed as a formula.
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(EXPORT_FIELDS)
    for entry in entries:
        row = []
        for name in EXPORT_FIELDS:
            value = entry.get(name)
            text = "" if value is None else (
                json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value))
            row.append("'" + text if text[:1] in ("=", "+", "-", "@") else text)
        writer.writerow(row)
    return out.getvalue()
