"""Operator support actions: look a user up, adjust credits, suspend, refund, see what is wrong.

Used by the admin routes (app.py, `/admin/api/...`) and by the operator command
(`python -m chalicelib.ops.admin`), so both offer exactly the same actions. Every action takes
the `audit.Actor` performing it and appends one audit entry after it succeeded; a refused
call (bad input, unknown user, not an admin) writes nothing.

Money still moves only through chalicelib.credits.ledger: a grant is `ledger.grant(source="admin")`
(`grant#admin#<id>`), a deduction `ledger.clawback(source="admin", allow_negative=False)`,
each ONE transaction with its record, at most once per record id. The record id derives
from the admin and the request's Idempotency-Key, so a retried grant never grants twice.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import uuid
from datetime import timedelta
from typing import Any, Mapping

from chalicelib.accounts import auth
from chalicelib.aws import store
from chalicelib.credits import ledger
from chalicelib.credits import statement
from chalicelib.ops import analytics
from chalicelib.ops import audit
from chalicelib.ops import janitor
from chalicelib.web import idempotency
from chalicelib.ops.audit import Actor
from chalicelib.billing import events as stripe_events
from chalicelib.billing import purchases, stripe_api
from chalicelib.core.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    InsufficientCredits,
    NotFound,
    ValidationFailed,
)
from chalicelib.accounts.tokens import Identity
from chalicelib.core.validation import Field, Schema, validate

ADMIN_SOURCE = "admin"
MAX_ADJUST_CREDITS = 100_000  # one action; larger amounts are a typo, not a goodwill gesture
MAX_REFUND_CENTS = 100_000_00
STUCK_JOB_SECONDS = 15 * 60  # a catch-up normally completes in a few minutes
FAILED_JOB_DAYS = 7
ATTENTION_LIMIT = 50
USER_ID = re.compile(r"[0-9a-f]{32}")
TRANSACTION_ID = re.compile(r"[A-Za-z0-9_#:.-]{1,256}")

REASON_FIELD = Field(str, required=True, min_length=3, max_length=500, normalize=str.strip)
ADJUST_SCHEMA = Schema({
    "credits": Field(int, required=True, minimum=1, maximum=MAX_ADJUST_CREDITS),
    "reason": REASON_FIELD,
}, name="admin_credits")
STATUS_SCHEMA = Schema({"reason": REASON_FIELD}, name="admin_status")
REFUND_SCHEMA = Schema({
    "reason": REASON_FIELD,
    "amount": Field(int, minimum=1, maximum=MAX_REFUND_CENTS),
}, name="admin_refund")
SEARCH_SCHEMA = Schema({"q": Field(str, required=True, min_length=1, max_length=254, normalize=str.strip)},
                       allow_unknown=True, name="admin_search")
PROFILE_FIELDS = (
    "user_id", "email", "name", "role", "created_at", "last_login", "credits_balance",
    "total_credits_purchased", "total_usage", "subscription_tier", "subscription_status",
    "status", "token_generation", "flagged", "flagged_reason", "flagged_at", "active_streams",
    "is_active",
)


def actor_of(caller: Identity) -> Actor:
    """The admin behind a request; anyone else is refused before anything is read."""
    if not caller.is_admin:
        raise Forbidden("Only administrators can use the console", code="forbidden")
    return Actor(caller.user_id, caller.email)


# --- finding a user ---------------------------------------------------------------------------


def _user(user_id: str) -> dict[str, Any]:
    user = store.get("users", user_id=user_id) if USER_ID.fullmatch(user_id or "") else None
    if user is None or not user.get("is_active", True):
        raise NotFound("User not found", code="user_not_found")
    return user


def _summary(user: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "user_id": user["user_id"], "email": user.get("email"), "name": user.get("name"),
        "credits_balance": user.get("credits_balance"), "created_at": user.get("created_at"),
        "status": user.get("status", auth.ACTIVE),
        "flagged": bool(user.get("flagged")), "role": user.get("role", "user"),
    }


def find_users(actor: Actor, params: Mapping[str, str] | None) -> dict[str, Any]:
    """A user by exact e-mail (case-insensitive) or user id: `{items: [summary]}` (0 or 1)."""
    query = validate(SEARCH_SCHEMA, dict(params or {}))["q"]
    user_id = query.lower() if USER_ID.fullmatch(query.lower()) else None
    if user_id is None and "@" in query:
        claim = store.get("emails", email=query.lower())
        user_id = claim["user_id"] if claim else None
    items = []
    if user_id:
        user = store.get("users", user_id=user_id)
        if user is not None and user.get("is_active", True):
            items.append(_summary(user))
    audit.record(actor, "user.search", details={"query": query, "found": len(items)})
    return {"items": items}


def _holds(user_id: str) -> list[dict[str, Any]]:
    return [
        {name: row.get(name) for name in ("reservation_id", "amount", "purpose", "ref_id",
                                          "created_at", "expires_at")}
        for row in ledger.iter_user_held(user_id)
    ]


def _invariant(user_id: str) -> dict[str, Any]:
    report = ledger.check_invariant(user_id)
    return {"ok": report.ok, "expected": report.expected, "actual": report.actual,
            "granted": report.granted, "purchased": report.purchased,
            "clawed_back": report.clawed_back, "used": report.used, "held": report.held,
            "quiescent": report.quiescent}


def user_detail(actor: Actor, user_id: str) -> dict[str, Any]:
    """Profile, balance, holds, subscription, flags and the ledger invariant of one user."""
    user = _user(user_id)
    profile = {name: user.get(name) for name in PROFILE_FIELDS if user.get(name) is not None}
    profile["status"] = user.get("status", auth.ACTIVE)
    detail = {
        "user": profile,
        "balance": {"balance": user.get("credits_balance", 0),
                    "total_credits_purchased": user.get("total_credits_purchased") or 0,
                    "total_usage": user.get("total_usage") or 0},
        "holds": _holds(user_id),
        "subscription": {"tier": user.get("subscription_tier") or "free",
                         "status": user.get("subscription_status"),
                         "subscription_id": user.get("subscription_id")},
        "flags": {"suspended": user.get("status") == auth.SUSPENDED, "flagged": bool(user.get("flagged")),
                  "flagged_reason": user.get("flagged_reason"), "is_admin": user.get("role") == "admin"},
        "invariant": _invariant(user_id),
    }
    audit.record(actor, "user.view", target=user_id)
    return detail


# --- the ledger of one user -------------------------------------------------------------------


def _entry(at: str, kind: str, **fields: Any) -> dict[str, Any]:
    return {"at": at, "kind": kind, **{k: v for k, v in fields.items() if v is not None}}


def _transaction_entry(row: Mapping[str, Any]) -> dict[str, Any]:
    sign = -1 if row.get("kind") == ledger.CLAWBACK else 1
    counted = row.get("status") == ledger.COMPLETED
    metadata = row.get("metadata") if isinstance(row.get("metadata"), dict) else {}
    return _entry(row.get("created_at") or "", str(row.get("kind")), id=row["transaction_id"],
                  source=row.get("source"), status=row.get("status"),
                  credits=sign * int(row.get("credits") or 0) if counted else 0,
                  balance_after=row.get("balance_after") if counted else None,
                  amount=row.get("amount"), currency=row.get("currency"),
                  reason=metadata.get("reason"), by=metadata.get("by"))


def _usage_entry(row: Mapping[str, Any]) -> dict[str, Any]:
    return _entry(str(row["timestamp"]).split("#", 1)[0], "usage", id=row["timestamp"],
                  source=row.get("service_type"), credits=-int(row.get("credits_used") or 0),
                  balance_after=row.get("balance_after"), reservation_id=row.get("reservation_id"))


def _reservation_entry(row: Mapping[str, Any]) -> dict[str, Any]:
    """A hold counts against the balance while held; once settled its usage row does, and
    once released nothing does: so the `credits` of all entries add up to the balance."""
    held = row.get("state") == ledger.HELD
    return _entry(row.get("created_at") or "", "reservation", id=row["reservation_id"],
                  source=row.get("purpose"), status=row.get("state"),
                  credits=-int(row.get("amount") or 0) if held else 0,
                  balance_after=row.get("balance_after"),
                  credits_used=row.get("credits_used"), credits_refunded=row.get("credits_refunded"))


def _order(entry: Mapping[str, Any]) -> tuple[str, str]:
    return entry["at"], entry["id"]


def user_ledger(actor: Actor, user_id: str, params: Mapping[str, str] | None) -> dict[str, Any]:
    """Grants, purchases, clawbacks, usage rows and reservations, newest first, paginated.

    Three sources merged by time: the transactions GSI and the usage partition are read
    in key order, `limit` past the cursor each; reservations (their index has no sort key)
    are read with a filter on their time window. `next_cursor` is the last entry's
    (time, id); the invariant's result comes with every page.
    """
    params = dict(params or {})
    _user(user_id)
    limit = statement.parse_limit(params.get("limit"))
    before = _decode_position(params.get("cursor")) if params.get("cursor") else None
    bound = before[0] if before else "9999"
    rows: list[dict[str, Any]] = []
    rows += [_transaction_entry(row) for row in _newest({
        "TableName": store.table_name("transactions"), "IndexName": statement.TRANSACTIONS_INDEX,
        "KeyConditionExpression": "user_id = :user AND created_at <= :bound",
        "ExpressionAttributeValues": store.values(user=user_id, bound=bound),
    }, limit)]
    rows += [_usage_entry(row) for row in _newest({
        "TableName": store.table_name("usage"),
        "KeyConditionExpression": "user_id = :user AND #ts <= :bound",
        "ExpressionAttributeNames": {"#ts": "timestamp"},
        "ExpressionAttributeValues": store.values(user=user_id, bound=bound + "#~"),
    }, limit)]
    if before:
        rows = [row for row in rows if _order(row) < before]
    rows.sort(key=_order, reverse=True)
    # Past a full page of them, older reservations belong to a later page.
    floor = rows[limit - 1]["at"] if len(rows) > limit else ""
    rows += [_reservation_entry(row) for row in store.query_all({
        "TableName": store.table_name("reservations"), "IndexName": "user_id-index",
        "KeyConditionExpression": "user_id = :user",
        "FilterExpression": "kind = :reservation AND created_at >= :floor AND created_at <= :bound",
        "ExpressionAttributeValues": store.values(user=user_id, reservation="reservation",
                                                  floor=floor, bound=bound),
    }) if not before or _order(_reservation_entry(row)) < before]
    rows.sort(key=_order, reverse=True)
    page, more = rows[:limit], len(rows) > limit
    audit.record(actor, "user.ledger", target=user_id)
    return {
        "items": page,
        "next_cursor": _encode_position(_order(page[-1])) if more and page else None,
        "invariant": _invariant(user_id),
    }


def _newest(request: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    response = store.ddb().query(**request, ScanIndexForward=False, Limit=limit + 1)
    return [store.from_item(item) or {} for item in response.get("Items", [])]


def _encode_position(position: tuple[str, str]) -> str:
    raw = json.dumps(list(position), separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _decode_position(cursor: str) -> tuple[str, str]:
    invalid = BadRequest("Invalid cursor", code="invalid_cursor", field="cursor")
    if len(cursor) > 1024:
        raise invalid
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise invalid from None
    if not (isinstance(value, list) and len(value) == 2
            and all(isinstance(part, str) and 0 < len(part) <= 300 for part in value)):
        raise invalid
    return value[0], value[1]


# --- actions ------------------------------------------------------------------------------------


def _record_id(actor: Actor, idempotency_key: str | None) -> str:
    """Fixed before the first attempt: from the Idempotency-Key (per admin) or random."""
    if idempotency_key:
        digest = hashlib.sha256(f"{actor.actor_id}\n{idempotency_key}".encode("utf-8")).hexdigest()
        return f"idem-{digest[:40]}"
    return uuid.uuid4().hex


def adjust_credits(actor: Actor, user_id: str, direction: str, body: Mapping[str, Any],
                   idempotency_key: str | None = None) -> dict[str, Any]:
    """Grant (`direction="grant"`) or deduct credits with a reason: one ledger record.

    A deduction never takes the balance below zero (409 `insufficient_balance`).
    """
    _user(user_id)
    amount, reason = body["credits"], body["reason"]
    metadata = {"reason": reason, "by": actor.actor_id}
    record_id = _record_id(actor, idempotency_key)
    if direction == "grant":
        result = ledger.grant(user_id, amount, source=ADMIN_SOURCE, record_id=record_id, metadata=metadata)
    else:
        try:
            result = ledger.clawback(user_id, amount, source=ADMIN_SOURCE, record_id=record_id,
                                     metadata=metadata, allow_negative=False)
        except InsufficientCredits as error:
            raise Conflict("The balance does not cover this deduction", code="insufficient_balance",
                           **error.details) from None
    outcome = {"user_id": user_id, "transaction_id": result.record_id, "credits": result.credits,
               "balance_after": result.balance_after, "replayed": result.replayed}
    audit.record(actor, f"credits.{direction}", target=user_id, reason=reason,
                 details={"credits": amount, "transaction_id": result.record_id,
                          "balance_after": result.balance_after, "replayed": result.replayed})
    return outcome


def set_status(actor: Actor, user_id: str, status: str, reason: str) -> dict[str, Any]:
    """Suspend or reactivate an account (auth.set_status: the status and a new token
    generation in one write, so the user's tokens stop within the authorizer's cache time)."""
    previous = _user(user_id).get("status", auth.ACTIVE)
    auth.set_status(user_id, status)
    action = "account.suspend" if status == auth.SUSPENDED else "account.reactivate"
    audit.record(actor, action, target=user_id, reason=reason, details={"previous": previous})
    return {"user_id": user_id, "status": status, "previous": previous}


def refund(actor: Actor, transaction_id: str, body: Mapping[str, Any],
           idempotency_key: str | None = None) -> dict[str, Any]:
    """Refund a completed purchase (all of it, or `amount` cents) through Stripe.

    Only Stripe is asked here; the credits come back through the `charge.refunded`
    webhook, which claws back the refunded share exactly once, as for any refund.
    Stripe's idempotency key comes from the admin's Idempotency-Key or, without one, from
    the purchase, the amount and what was refunded so far: a double click refunds once.
    """
    row = purchases.get(transaction_id) if TRANSACTION_ID.fullmatch(transaction_id or "") else None
    if row is None or row.get("kind") != purchases.KIND:
        raise NotFound("Purchase not found", code="purchase_not_found")
    if row.get("status") != purchases.COMPLETED or not row.get("payment_intent"):
        raise Conflict("Only a completed purchase can be refunded", code="purchase_not_refundable")
    paid = int(row.get("amount") or 0)
    already = max(int(row.get("refund_seen_amount") or 0), int(row.get("refunded_amount") or 0))
    amount = body.get("amount") or paid - already
    if amount <= 0 or amount > paid - already:
        raise ValidationFailed(f"'amount' must be at most {paid - already} (cents not yet refunded)",
                               field="amount")
    key = (f"refund-{_record_id(actor, idempotency_key)}" if idempotency_key
           else f"refund-{transaction_id}-{already}-{amount}")
    stripe = stripe_api.client()
    stripe_refund = stripe_api.call("refunds.create", lambda: stripe.v1.refunds.create(
        params={"payment_intent": row["payment_intent"], "amount": amount,
                "reason": "requested_by_customer",
                "metadata": {"transaction_id": transaction_id, "user_id": row["user_id"]}},
        options={"idempotency_key": key},
    ))
    outcome = {"transaction_id": transaction_id, "user_id": row["user_id"],
               "refund_id": stripe_refund.get("id"), "status": stripe_refund.get("status"),
               "amount": stripe_refund.get("amount"), "currency": stripe_refund.get("currency")}
    audit.record(actor, "purchase.refund", target=row["user_id"], reason=body["reason"],
                 details={"transaction_id": transaction_id, "refund_id": outcome["refund_id"],
                          "amount": outcome["amount"]})
    return outcome


# --- what needs attention -----------------------------------------------------------------------


def _jobs(status: str, condition: str, when: str) -> list[dict[str, Any]]:
    response = store.ddb().query(
        TableName=store.table_name("jobs"), IndexName="status-index",
        KeyConditionExpression=f"#status = :status AND created_at {condition} :when",
        ExpressionAttributeNames={"#status": "status"},
        ExpressionAttributeValues=store.values(status=status, when=when),
        ScanIndexForward=False, Limit=ATTENTION_LIMIT,
    )
    ids = [item["job_id"]["S"] for item in response.get("Items", [])]
    if not ids:
        return []
    table = store.table_name("jobs")
    found = store.ddb().batch_get_item(RequestItems={table: {
        "Keys": [store.key(job_id=job_id) for job_id in ids],
        "ProjectionExpression": "job_id, user_id, #status, created_at, updated_at, attempts, #error",
        "ExpressionAttributeNames": {"#status": "status", "#error": "error"},
    }}).get("Responses", {}).get(table, [])
    jobs = [store.from_item(item) or {} for item in found]
    return sorted(jobs, key=lambda job: job.get("created_at") or "", reverse=True)


def _events(status: str) -> list[dict[str, Any]]:
    """Webhook events left for an operator, newest first (stripe-events `status-index`)."""
    items = store.ddb().query(
        TableName=store.table_name(stripe_events.TABLE), IndexName="status-index",
        KeyConditionExpression="#status = :status",
        ExpressionAttributeNames={"#status": "status"},
        ExpressionAttributeValues=store.values(status=status),
        ScanIndexForward=False, Limit=ATTENTION_LIMIT,
    ).get("Items", [])
    return [{k: v for k, v in (store.from_item(item) or {}).items() if k != "expires_at_epoch"} for item in items]


def _breaches() -> dict[str, Any]:
    state = store.get("stats", **janitor.STATE_KEY) or {}
    return {"last_run_epoch": state.get("last_run_epoch"),
            "items": list(state.get("last_breaches") or [])}


def attention(actor: Actor) -> dict[str, Any]:
    """Failed or stuck catch-up jobs, orphaned or held-for-review webhook events, overdue holds,
    invariant breaches.

    Index queries only (jobs and stripe-events `status-index`, the ledger's held-index, the
    cleanup's last report), each bounded to ATTENTION_LIMIT items.
    """
    now = store.now()
    stuck_before = store.iso(now - timedelta(seconds=STUCK_JOB_SECONDS))
    failed_since = store.iso(now - timedelta(days=FAILED_JOB_DAYS))
    stuck = _jobs("queued", "<", stuck_before) + _jobs("processing", "<", stuck_before)

    overdue = []
    for row in ledger.iter_expired_held(store.iso(now)):
        overdue.append({name: row.get(name) for name in ("reservation_id", "user_id", "amount",
                                                         "purpose", "ref_id", "created_at", "expires_at")})
        if len(overdue) >= ATTENTION_LIMIT:
            break
    report = {
        "failed_jobs": _jobs("failed", ">=", failed_since),
        "stuck_jobs": stuck[:ATTENTION_LIMIT],
        "orphaned_events": _events(stripe_events.ORPHANED),
        "review_events": _events(stripe_events.NEEDS_REVIEW),
        "overdue_reservations": overdue,
        "invariant_breaches": _breaches(),
        "thresholds": {"stuck_job_seconds": STUCK_JOB_SECONDS, "failed_job_days": FAILED_JOB_DAYS,
                       "limit": ATTENTION_LIMIT},
    }
    audit.record(actor, "attention.view", details={
        name: len(report[name]) for name in ("failed_jobs", "stuck_jobs", "orphaned_events",
                                             "review_events", "overdue_reservations")})
    return report


# --- the audit log and the business picture -----------------------------------------------------


def audit_log(actor: Actor, params: Mapping[str, str] | None) -> dict[str, Any]:
    params = dict(params or {})
    target = params.get("target") or None
    if target is not None and not USER_ID.fullmatch(target):
        raise ValidationFailed("'target' must be a user id", field="target")
    page = audit.page(limit=statement.parse_limit(params.get("limit")), cursor=params.get("cursor"),
                      target=target)
    audit.record(actor, "audit.view", target=target)
    return page


def audit_export(actor: Actor) -> str:
    """The whole log as CSV; the export itself is the newest entry in it."""
    audit.record(actor, "audit.export")
    return audit.to_csv(audit.iter_all())


def business(actor: Actor, params: Mapping[str, str] | None) -> dict[str, Any]:
    """The figures behind the console's charts and its top users: GET /analytics/costs, by
    day, with the `top_users` of GET /analytics/costs/top-users (which reads per user)."""
    caller = Identity(actor.actor_id, actor.email, "admin")
    report = analytics.costs(caller, params)
    report["top_users"] = analytics.top_users(caller, params)["top_users"]
    audit.record(actor, "business.view", details={"days": report["period"]["days"]})
    return report




def _replay_noted(actor: Actor, ran: list[bool], route: str, target: str | None) -> None:
    """An Idempotency-Key replay runs nothing, but it is a call: audited as such."""
    if not ran:
        audit.record(actor, "request.replayed", target=target, details={"route": route})


def grant_once(headers: Mapping[str, str] | None, actor: Actor, user_id: str,
               body: Mapping[str, Any]) -> tuple[int, Any]:
    """`POST /admin/api/users/{user_id}/grant` with Idempotency-Key semantics."""
    ran: list[bool] = []
    answer = idempotency.run(headers, actor.actor_id, "POST /admin/api/users/{user_id}/grant",
                             {**body, "user_id": user_id}, lambda: ran.append(True) or adjust_credits(
                                 actor, user_id, "grant", body, idempotency.key_from(headers)))
    _replay_noted(actor, ran, "grant", user_id)
    return answer


def deduct_once(headers: Mapping[str, str] | None, actor: Actor, user_id: str,
                body: Mapping[str, Any]) -> tuple[int, Any]:
    """`POST /admin/api/users/{user_id}/deduct` with Idempotency-Key semantics."""
    ran: list[bool] = []
    answer = idempotency.run(headers, actor.actor_id, "POST /admin/api/users/{user_id}/deduct",
                             {**body, "user_id": user_id}, lambda: ran.append(True) or adjust_credits(
                                 actor, user_id, "deduct", body, idempotency.key_from(headers)))
    _replay_noted(actor, ran, "deduct", user_id)
    return answer


def refund_once(headers: Mapping[str, str] | None, actor: Actor, transaction_id: str,
                body: Mapping[str, Any]) -> tuple[int, Any]:
    """`POST /admin/api/purchases/{transaction_id}/refund` with Idempotency-Key semantics."""
    ran: list[bool] = []
    answer = idempotency.run(headers, actor.actor_id, "POST /admin/api/purchases/{transaction_id}/refund",
                             {**body, "transaction_id": transaction_id}, lambda: ran.append(True) or refund(
                                 actor, transaction_id, body, idempotency.key_from(headers)))
    _replay_noted(actor, ran, "refund", None)
    return answer
