"""The user's own data: export everything we hold about them, or delete their account.

Where a user's data lives (keep this list in step with chalicelib.aws.resources):
  users (their item)            emails (the address claim)      refresh-tokens (user_id-index)
  usage, history (user's partition)                             jobs, reservations (user_id-index)
  sessions (user_id-started_at-index, keys only)                S3 `uploads/<user_id>/`
  transactions (user_id-created_at-index)
  stats (per-user daily items `users#<day>#<shard>` / user_id, and `latest#<shard>` / user_id,
         chalicelib.credits.stats)
  idempotency (keys `<user_id>#<digest>`, stored responses, 24 h)
Catch-up transcripts sit in the jobs table under `<job_id>#transcript`, without a user_id,
so they are found through the user's jobs; idempotency records through their user_id-index
(never a Scan: export and deletion cost what the user has, not what everyone has). Rate-limit
counters hold only hashes and expire within hours; Stripe event records hold ids only.

Deletion keeps what accounting must keep: rows that record money (a purchase, a
subscription payment, a refund) stay in the transactions table, their user_id replaced
by a one-way hash and personal attributes removed. Everything else is deleted.

The order makes a crash safe to retry: the account is first marked inactive (logins,
refreshes and every route that reads the user refuse it from that moment), the password
hash is removed last with the user item, so the same request can be sent again.
"""
from __future__ import annotations

import hashlib
import logging
import re
from typing import Any, Iterable, Mapping

from chalicelib.aws import store
from chalicelib.credits import ledger
from chalicelib.credits import stats
from chalicelib.aws.clients import client
from chalicelib.core.errors import Conflict, Forbidden, Unauthorized
from chalicelib.core.logs import log_event, register_secret
from chalicelib.accounts.passwords import verify_password
from chalicelib.core.settings import get_settings
from chalicelib.core.validation import Field, Schema

logger = logging.getLogger(__name__)
SESSIONS_INDEX = "user_id-started_at-index"  # keys only (chalicelib.aws.resources)

DELETE_SCHEMA = Schema(
    {"password": Field(str, required=True, max_length=1024, min_length=1)},
    name="delete_account",
    max_body_bytes=4 * 1024,
)

TRANSCRIPT_SUFFIX = "#transcript"  # chalicelib.catchup.jobs stores a job's transcript here
UPLOAD_PREFIX = "uploads/{user_id}/"  # chalicelib.catchup.uploads.user_prefix
ACTIVE_SUBSCRIPTION = ("active", "trialing", "past_due", "incomplete", "unpaid")
# Stored on a user item but never shown, not even to its owner.
PRIVATE_USER_FIELDS = ("password_hash",)
# A kept transaction row loses every attribute whose name says it is about a person.
PERSONAL_ATTRIBUTE = re.compile(r"email|name|customer|metadata|address|phone|card|(^|_)ip(_|$)", re.I)
MONEY_ROW_FIELDS = ("payment_intent", "stripe_session_id", "stripe_invoice_id", "invoice_id")


ANONYMOUS_PREFIX = "deleted-"


def anonymous_id(user_id: str) -> str:
    """The stand-in for a deleted user in kept accounting rows: a one-way hash."""
    return ANONYMOUS_PREFIX + hashlib.sha256(f"deleted-user:{user_id}".encode("utf-8")).hexdigest()[:32]


def is_anonymous(user_id: str) -> bool:
    """Whether a kept row belongs to an erased account (there is no balance behind it)."""
    return user_id.startswith(ANONYMOUS_PREFIX)


# --- reading -------------------------------------------------------------------------


def _by_partition(table: str, user_id: str) -> list[dict[str, Any]]:
    return list(
        store.query_all(
            {
                "TableName": store.table_name(table),
                "KeyConditionExpression": "user_id = :u",
                "ExpressionAttributeValues": store.values(u=user_id),
            }
        )
    )


def _by_index(table: str, index: str, user_id: str) -> list[dict[str, Any]]:
    return list(
        store.query_all(
            {
                "TableName": store.table_name(table),
                "IndexName": index,
                "KeyConditionExpression": "user_id = :u",
                "ExpressionAttributeValues": store.values(u=user_id),
            }
        )
    )


def _batch_get(table: str, key_name: str, ids: Iterable[str]) -> list[dict[str, Any]]:
    """Full items for keys found through a KEYS_ONLY index (100 keys per BatchGetItem)."""
    name, wanted, found = store.table_name(table), list(dict.fromkeys(ids)), []
    for offset in range(0, len(wanted), 100):
        request = {name: {"Keys": [store.key(**{key_name: i}) for i in wanted[offset:offset + 100]],
                          "ConsistentRead": True}}
        while request:
            response = store.ddb().batch_get_item(RequestItems=request)
            found += [store.from_item(item) for item in response.get("Responses", {}).get(name, [])]
            request = response.get("UnprocessedKeys") or {}
    return [item for item in found if item]


def _refresh_tokens(user_id: str) -> list[dict[str, Any]]:
    keys = _by_index("refresh-tokens", "user_id-index", user_id)
    return _batch_get("refresh-tokens", "token_id", [k["token_id"] for k in keys])


def _session_keys(user_id: str) -> list[dict[str, Any]]:
    return _by_index("sessions", SESSIONS_INDEX, user_id)


def _sessions(user_id: str) -> list[dict[str, Any]]:
    return _batch_get("sessions", "session_id", [k["session_id"] for k in _session_keys(user_id)])


def _jobs(user_id: str) -> list[dict[str, Any]]:
    return _by_index("jobs", "user_id-index", user_id)


def _stats_keys(user_id: str) -> list[dict[str, Any]]:
    """Every per-user stats key the user can have: one per day of the stats retention, and
    the user's latest day with a provider call."""
    shard = stats.user_shard(user_id)
    days = stats.days_back(get_settings().stats_retention_days + 2)
    return [store.key(stat_key=f"users#{day}#{shard}", shard=user_id) for day in days] + [
        store.key(**stats.latest_key(user_id))]


def _user_stats(user_id: str) -> list[dict[str, Any]]:
    """The user's daily items, oldest first, then their latest-day item."""
    name, keys, found = store.table_name("stats"), _stats_keys(user_id), []
    for offset in range(0, len(keys), 100):
        request = {name: {"Keys": keys[offset:offset + 100]}}
        while request:
            response = store.ddb().batch_get_item(RequestItems=request)
            found += [store.from_item(item) for item in response.get("Responses", {}).get(name, [])]
            request = response.get("UnprocessedKeys") or {}
    return sorted((item for item in found if item), key=lambda item: (item["stat_key"].startswith("latest#"),
                                                                     item["stat_key"]))


def _idempotency_records(user_id: str) -> list[dict[str, Any]]:
    return _by_index("idempotency", "user_id-index", user_id)


def _uploads(user_id: str) -> list[dict[str, Any]]:
    s3, bucket = client("s3"), get_settings().resource("audio")
    objects: list[dict[str, Any]] = []
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=UPLOAD_PREFIX.format(user_id=user_id)
    ):
        objects += page.get("Contents", [])
    return objects


def _live_user(user_id: str) -> dict[str, Any]:
    user = store.get("users", user_id=user_id)
    if user is None or not user.get("is_active", True):
        raise Unauthorized("Account no longer exists", code="account_not_found")
    return user


def export(user_id: str) -> dict[str, Any]:
    """Everything stored about the user, as JSON (`GET /auth/user/export`).

    Secrets are left out even here: the password hash and the refresh tokens' hashes
    are credentials, not information about the user.
    """
    user = _live_user(user_id)
    jobs = _jobs(user_id)
    transcripts = {
        item["job_id"][: -len(TRANSCRIPT_SUFFIX)]: item
        for item in _batch_get("jobs", "job_id", [job["job_id"] + TRANSCRIPT_SUFFIX for job in jobs])
    }
    return {
        "exported_at": store.iso(),
        "profile": {k: v for k, v in user.items() if k not in PRIVATE_USER_FIELDS},
        "usage": _by_partition("usage", user_id),
        "transactions": _by_index("transactions", "user_id-created_at-index", user_id),
        "reservations": _by_index("reservations", "user_id-index", user_id),
        # A live session keeps its current AssemblyAI token (to answer a retried renew):
        # a short-lived provider credential, left out like the stored idempotent responses.
        "sessions": [{k: v for k, v in item.items() if k != "token"}
                     for item in sorted(_sessions(user_id), key=lambda item: str(item.get("started_at")))],
        "jobs": [
            {**job, "transcript": _transcript_view(transcripts.get(job["job_id"]))} for job in jobs
        ],
        "history": _by_partition("history", user_id),
        "daily_usage": [
            {k: v for k, v in item.items() if k not in ("shard", "expires_at_epoch")}
            for item in _user_stats(user_id)
        ],
        # Replayable responses of the last 24 h: when and where, not the stored bodies
        # (they may hold short-lived provider tokens or checkout links).
        "idempotency_keys": [
            {k: item.get(k) for k in ("route", "state", "status", "created_at", "completed_at")}
            for item in _idempotency_records(user_id)
        ],
        "refresh_tokens": [
            {k: v for k, v in item.items() if k != "token_id"} for item in _refresh_tokens(user_id)
        ],
        "uploads": [
            {"key": obj["Key"], "size": obj.get("Size"), "last_modified": store.iso(obj["LastModified"])}
            for obj in _uploads(user_id)
        ],
    }


def _transcript_view(item: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if item is None or int(item.get("expires_at_epoch") or 0) <= store.epoch():
        return None  # past its retention: gone, even if DynamoDB has not swept it yet
    return {k: v for k, v in item.items() if k != "job_id"}


# --- deleting ------------------------------------------------------------------------


def _delete_keys(table: str, keys: Iterable[dict[str, Any]]) -> int:
    """BatchWriteItem deletes, 25 at a time, retrying whatever DynamoDB left unprocessed."""
    name, keys, count = store.table_name(table), list(keys), 0
    for offset in range(0, len(keys), 25):
        request = {name: [{"DeleteRequest": {"Key": key}} for key in keys[offset:offset + 25]]}
        while request:
            response = store.ddb().batch_write_item(RequestItems=request)
            request = response.get("UnprocessedItems") or {}
        count += len(keys[offset:offset + 25])
    return count


def _keys(items: Iterable[Mapping[str, Any]], *names: str) -> list[dict[str, Any]]:
    return [store.key(**{name: item[name] for name in names}) for item in items]


def _refuse_if_busy(user: Mapping[str, Any]) -> None:
    """Money in flight or a recurring charge: the user must finish it before deleting."""
    if str(user.get("subscription_status") or "") in ACTIVE_SUBSCRIPTION:
        raise Conflict(
            "Cancel your subscription (billing portal) before deleting your account",
            code="active_subscription",
        )
    held = [r for r in _by_index("reservations", "user_id-index", user["user_id"])
            if r.get("state") == ledger.HELD]
    if held:
        raise Conflict(
            "A live session or catch-up is still running; stop it or wait for it to finish, "
            "then delete your account",
            code="active_session",
        )


def _mark_deleting(user_id: str) -> None:
    store.ddb().update_item(
        TableName=store.table_name("users"),
        Key=store.key(user_id=user_id),
        UpdateExpression="SET is_active = :no, deletion_started_at = if_not_exists(deletion_started_at, :now)",
        ConditionExpression="attribute_exists(user_id)",
        ExpressionAttributeValues=store.values(no=False, now=store.iso()),
    )


def _revoke_and_delete_tokens(user_id: str) -> int:
    """Revoke every refresh-token family first (a concurrent refresh then fails), then delete."""
    items = _refresh_tokens(user_id)
    for family in (i for i in items if i.get("kind") == "family" and not i.get("revoked")):
        store.ddb().update_item(
            TableName=store.table_name("refresh-tokens"),
            Key=store.key(token_id=family["token_id"]),
            UpdateExpression="SET revoked = :yes, revoked_at = :now",
            ExpressionAttributeValues=store.values(yes=True, now=store.iso()),
        )
    return _delete_keys("refresh-tokens", _keys(items, "token_id"))


def _records_money(row: Mapping[str, Any]) -> bool:
    return int(row.get("amount") or 0) != 0 or any(row.get(name) for name in MONEY_ROW_FIELDS)


def _anonymise_transactions(user_id: str) -> tuple[int, int]:
    """Keep money rows under an anonymous id without personal attributes; delete the rest.

    Returns (kept, deleted). A row is rewritten in place (same transaction_id, so Stripe
    refunds and disputes still find it by payment intent or id) and then belongs to no one.
    """
    rows = _by_index("transactions", "user_id-created_at-index", user_id)
    kept, dropped = [r for r in rows if _records_money(r)], [r for r in rows if not _records_money(r)]
    anonymous = anonymous_id(user_id)
    for row in kept:
        personal = sorted(k for k in row if PERSONAL_ATTRIBUTE.search(k) and k != "user_id")
        names = {f"#p{i}": name for i, name in enumerate(personal)}
        update = "SET user_id = :anon, anonymised_at = :now"
        if names:
            update += " REMOVE " + ", ".join(names)
        request: dict[str, Any] = {
            "TableName": store.table_name("transactions"),
            "Key": store.key(transaction_id=row["transaction_id"]),
            "UpdateExpression": update,
            "ConditionExpression": "user_id = :me",
            "ExpressionAttributeValues": store.values(anon=anonymous, now=store.iso(), me=user_id),
        }
        if names:
            request["ExpressionAttributeNames"] = names
        try:
            store.ddb().update_item(**request)
        except store.ddb().exceptions.ConditionalCheckFailedException:
            pass  # anonymised by an earlier, interrupted attempt
    _delete_keys("transactions", _keys(dropped, "transaction_id"))
    return len(kept), len(dropped)


def _delete_uploads(user_id: str) -> int:
    objects = _uploads(user_id)
    s3, bucket = client("s3"), get_settings().resource("audio")
    for offset in range(0, len(objects), 1000):
        s3.delete_objects(
            Bucket=bucket,
            Delete={"Objects": [{"Key": o["Key"]} for o in objects[offset:offset + 1000]], "Quiet": True},
        )
    return len(objects)


def delete_account(user_id: str, password: str) -> dict[str, int]:
    """`DELETE /auth/user`: check the password, then remove the account and its data.

    Refused (409) while money is in flight (a held reservation: a live session or a
    catch-up still running) or a subscription would keep charging: settling those is the
    ledger's and Stripe's job, and deleting under them would lose or free credits.
    """
    register_secret(password)
    user = store.get("users", user_id=user_id)
    if user is None or (not user.get("is_active", True) and not user.get("deletion_started_at")):
        raise Unauthorized("Account no longer exists", code="account_not_found")
    if not verify_password(password, user.get("password_hash", "")):
        raise Forbidden("The password is not correct", code="invalid_password")
    _refuse_if_busy(user)
    _mark_deleting(user_id)
    counts = {"refresh_tokens": _revoke_and_delete_tokens(user_id)}
    jobs = _jobs(user_id)
    counts["jobs"] = _delete_keys(
        "jobs", _keys(jobs, "job_id") + [store.key(job_id=j["job_id"] + TRANSCRIPT_SUFFIX) for j in jobs]
    )
    counts["sessions"] = _delete_keys("sessions", _keys(_session_keys(user_id), "session_id"))
    counts["reservations"] = _delete_keys(
        "reservations", _keys(_by_index("reservations", "user_id-index", user_id), "reservation_id")
    )
    counts["usage"] = _delete_keys("usage", _keys(_by_partition("usage", user_id), "user_id", "timestamp"))
    counts["history"] = _delete_keys("history", _keys(_by_partition("history", user_id), "user_id", "sort_key"))
    counts["uploads"] = _delete_uploads(user_id)
    counts["daily_usage"] = _delete_keys("stats", _keys(_user_stats(user_id), "stat_key", "shard"))
    counts["idempotency_keys"] = _delete_keys(
        "idempotency", _keys(_idempotency_records(user_id), "idempotency_key")
    )
    counts["transactions_kept"], counts["transactions_deleted"] = _anonymise_transactions(user_id)
    ledger.delete_checkpoint(user_id)  # the invariant's sums of the user's records (by key)
    _delete_claim(user)
    store.ddb().delete_item(TableName=store.table_name("users"), Key=store.key(user_id=user_id))
    log_event(logger, "account.deleted", user_id=user_id, **counts)
    return counts


def _delete_claim(user: Mapping[str, Any]) -> None:
    """The email claim, only if it is still this user's (the address may be reused later)."""
    try:
        store.ddb().delete_item(
            TableName=store.table_name("emails"),
            Key=store.key(email=user["email"]),
            ConditionExpression="user_id = :u",
            ExpressionAttributeValues=store.values(u=user["user_id"]),
        )
    except store.ddb().exceptions.ConditionalCheckFailedException:
        pass
