"""Live caption sessions: credits reserved up front, a one-session AssemblyAI token, billing on stop.

The browser streams audio straight to AssemblyAI with a temporary token whose maximum
session duration is exactly the time the reserved credits pay for, so a session can never
outlast its credits, whatever the browser does. Time is measured by the server: from
start to stop, at least one minute, rounded up to whole minutes, never more than reserved.
A session whose browser never calls stop is settled by the cleanup job through
`settle_abandoned`, from its last heartbeat plus a grace period.

Session states: starting (credits held, token being minted) -> active -> stopped |
settled_by_cleanup; starting -> failed when minting fails (credits released).
"""
from __future__ import annotations

import logging
import math
import uuid
from datetime import datetime, timedelta
from typing import Any, Mapping

from chalicelib import history, idempotency, ledger, stats, store
from chalicelib.errors import Conflict, InsufficientCredits, NotFound, ValidationFailed
from chalicelib.logs import log_event
from chalicelib.settings import Settings, get_settings
from chalicelib.validation import Field, Schema

logger = logging.getLogger(__name__)

TABLE = "sessions"
SERVICE_TYPE = "live"
SLOT = "active_streams"
# AssemblyAI accepts max_session_duration_seconds up to 10800 s.
PROVIDER_MAX_MINUTES = 180
# A session still "starting" after this long lost its start request (the Lambda died).
STARTING_TIMEOUT_SECONDS = 300
# The reservation outlives the longest session by this much, so the cleanup job settles
# an abandoned session (charging its used time) before the hold could expire unused.
RESERVATION_MARGIN_SECONDS = 6 * 3600
FINAL_STATES = ("stopped", "settled_by_cleanup")
OUTCOME_FIELDS = ("duration_minutes", "credits_used", "credits_refunded", "remaining_balance")

TWITCH_LOGIN = r"[a-z0-9_]{1,25}"

STREAM_SCHEMA = Schema(
    {
        "action": Field(str, required=True, max_length=16, choices=("start", "heartbeat", "stop")),
        "session_id": Field(str, max_length=64, pattern=r"[A-Za-z0-9_-]{1,64}"),
        "max_minutes": Field(int, minimum=1, maximum=PROVIDER_MAX_MINUTES),
        "sample_rate": Field(int, minimum=8000, maximum=48000),
        "channel": Field(str, max_length=25, pattern=TWITCH_LOGIN, normalize=lambda v: v.strip().lower()),
        "title": Field(str, max_length=200, normalize=str.strip),
    },
    name="transcription_stream",
)


def handle(
    user_id: str, body: dict[str, Any], headers: Mapping[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    """POST /transcription/stream: dispatch on `action` (the published extension's shape).

    Returns (status, body). A start carrying an `Idempotency-Key` runs at most once per key
    (a retried start gets the first response, not a second reservation); stop is
    idempotent by itself, and a heartbeat must never be answered from a stored response.
    """
    action = body["action"]
    if action == "start":
        return idempotency.run(
            headers,
            user_id,
            "POST /transcription/stream start",
            body,
            lambda: start(
                user_id,
                max_minutes=body["max_minutes"],
                sample_rate=body["sample_rate"],
                channel=body["channel"],
                title=body["title"],
            ),
        )
    session_id = body["session_id"]
    if not session_id:
        raise ValidationFailed("'session_id' is required", code="missing_field", field="session_id")
    if action == "heartbeat":
        return 200, heartbeat(user_id, session_id)
    return 200, stop(user_id, session_id)


# ----- arithmetic ---------------------------------------------------------------------


def affordable_minutes(balance: int, price_per_minute: int, requested: int | None, ceiling: int) -> int:
    """Whole minutes the balance pays for, bounded by the request and the ceiling (may be 0)."""
    limit = min(ceiling, requested) if requested else ceiling
    return max(min(balance // price_per_minute, limit), 0)


def billed_minutes(elapsed_seconds: int, reserved_minutes: int) -> int:
    """Elapsed time rounded up to whole minutes, at least one, never more than reserved."""
    return min(max(math.ceil(max(elapsed_seconds, 0) / 60), 1), reserved_minutes)


# ----- start --------------------------------------------------------------------------


def start(
    user_id: str,
    *,
    max_minutes: int | None = None,
    sample_rate: int | None = None,
    channel: str | None = None,
    title: str | None = None,
) -> dict[str, Any]:
    """Reserve what the balance affords, mint the token, store the session."""
    from chalicelib.providers import assemblyai

    settings = get_settings()
    price = settings.live_credits_per_minute
    ceiling = min(settings.live_max_minutes, PROVIDER_MAX_MINUTES)
    balance = ledger.get_balance(user_id)["balance"]
    minutes = affordable_minutes(balance, price, max_minutes, ceiling)
    if minutes < 1:
        raise InsufficientCredits(
            f"Live captions cost {price} credits per minute; your balance is {balance}",
            balance=balance,
            required=price,
            price_per_minute=price,
        )
    session_id = uuid.uuid4().hex
    started = store.now()
    started_epoch = int(started.timestamp())
    session = _new_session(settings, user_id, session_id, started, started_epoch, minutes, price)
    session.update(sample_rate=sample_rate, channel=channel, title=title)
    try:
        reservation = ledger.reserve(
            user_id,
            session["reserved_credits"],
            reservation_id=session["reservation_id"],
            purpose=SERVICE_TYPE,
            ref_id=session_id,
            ttl_seconds=session["max_session_seconds"] + RESERVATION_MARGIN_SECONDS,
            slot=(SLOT, settings.live_max_concurrent_sessions),
            extra_items=[store.put_new(TABLE, "session_id", session)],
        )
    except InsufficientCredits as error:  # the balance moved since we read it
        error.details.setdefault("price_per_minute", price)
        raise
    try:
        minted = assemblyai.mint_streaming_token(
            settings.assemblyai_token_expires_seconds, session["max_session_seconds"]
        )
    except Exception:
        _abandon_start(session, reason="token_mint_failed")
        raise
    _mark_active(session_id, started_epoch + minted["expires_in_seconds"])
    log_event(logger, "live.started", session_id=session_id, reserved_minutes=minutes,
              credits_reserved=session["reserved_credits"])
    token = minted["token"]
    return {
        "success": True,
        "session_id": session_id,
        "token": token,
        "assemblyai_api_key": token,  # older extension builds read the token under this name
        "websocket_url": assemblyai.websocket_url(token, sample_rate),
        "expires_in_seconds": minted["expires_in_seconds"],
        "max_session_seconds": session["max_session_seconds"],
        "max_minutes": minutes,
        "expires_at": session["expires_at"],
        "credits_reserved": session["reserved_credits"],
        "credits_balance": reservation.balance_after,
        "price_per_minute": price,
        "heartbeat_interval_seconds": max(settings.live_heartbeat_grace_seconds // 4, 5),
    }


def _new_session(
    settings: Settings, user_id: str, session_id: str, started: datetime, started_epoch: int,
    minutes: int, price: int,
) -> dict[str, Any]:
    max_seconds = minutes * 60
    return {
        "session_id": session_id,
        "user_id": user_id,
        "state": "starting",
        "started_at": store.iso(started),
        "started_epoch": started_epoch,
        "last_heartbeat_epoch": started_epoch,
        "price_per_minute": price,
        "reserved_minutes": minutes,
        "reserved_credits": minutes * price,
        "reservation_id": f"live#{session_id}",
        "max_session_seconds": max_seconds,
        "ends_by_epoch": started_epoch + max_seconds,
        "expires_at": store.iso(started + timedelta(seconds=max_seconds)),
        "heartbeat_grace_seconds": settings.live_heartbeat_grace_seconds,
    }


def _mark_active(session_id: str, token_expires_epoch: int) -> None:
    store.ddb().update_item(
        TableName=store.table_name(TABLE),
        Key=store.key(session_id=session_id),
        UpdateExpression="SET #state = :active, token_expires_epoch = :exp",
        ConditionExpression="#state = :starting",
        ExpressionAttributeNames={"#state": "state"},
        ExpressionAttributeValues=store.values(active="active", starting="starting", exp=token_expires_epoch),
    )


def _abandon_start(session: dict[str, Any], reason: str) -> None:
    """Give the credits (and the slot) back and mark the session failed, in one transaction.

    Conditional on the session still starting: a session that became active is never
    released here, it is billed.
    """
    fail = {
        "Update": {
            "TableName": store.table_name(TABLE),
            "Key": store.key(session_id=session["session_id"]),
            "UpdateExpression": "SET #state = :failed, failure_reason = :reason, ended_at = :now",
            "ConditionExpression": "#state = :starting",
            "ExpressionAttributeNames": {"#state": "state"},
            "ExpressionAttributeValues": store.values(
                failed="failed", starting="starting", reason=reason, now=store.iso()
            ),
        }
    }
    try:
        ledger.release(session["reservation_id"], reason=reason, extra_items=[fail])
    except Exception:  # the original failure is what the client must see; the hold expires
        logger.exception("live.release_failed")
    log_event(logger, "live.start_failed", logging.WARNING, session_id=session["session_id"], reason=reason)


# ----- heartbeat ----------------------------------------------------------------------


def heartbeat(user_id: str, session_id: str) -> dict[str, Any]:
    """Record that the session is alive; only its owner can, and only while it is active."""
    now_epoch = store.epoch()
    try:
        response = store.ddb().update_item(
            TableName=store.table_name(TABLE),
            Key=store.key(session_id=session_id),
            UpdateExpression="SET last_heartbeat_epoch = :now ADD heartbeats :one",
            ConditionExpression="user_id = :uid AND #state = :active",
            ExpressionAttributeNames={"#state": "state"},
            ExpressionAttributeValues=store.values(now=now_epoch, one=1, uid=user_id, active="active"),
            ReturnValues="ALL_NEW",
        )
    except store.ddb().exceptions.ConditionalCheckFailedException:
        session = _owned(user_id, session_id)
        raise _not_active(session) from None
    session = store.from_item(response["Attributes"]) or {}
    elapsed = max(now_epoch - session["started_epoch"], 0)
    return {
        "success": True,
        "session_id": session_id,
        "seconds_elapsed": elapsed,
        "seconds_remaining": max(session["max_session_seconds"] - elapsed, 0),
    }


# ----- stop and settlement ------------------------------------------------------------


def stop(user_id: str, session_id: str) -> dict[str, Any]:
    """Bill the time used and refund the rest; stopping again answers the same figures.

    A repeated stop (a retry after a lost response) is a 200 with the stored outcome and
    `already_stopped: true`, never a second charge.
    """
    session = _owned(user_id, session_id)
    if session["state"] not in FINAL_STATES:
        if session["state"] != "active":
            raise _not_active(session)
        outcome = _settle(session, end_epoch=store.epoch(), final_state="stopped")
        if outcome is not None:
            return {"success": True, "session_id": session_id, **outcome, "already_stopped": False}
        session = _owned(user_id, session_id)  # settled concurrently (another stop, the cleanup)
    return {"success": True, "session_id": session_id, **_stored_outcome(session), "already_stopped": True}


def settle_abandoned(session: dict[str, Any], now_epoch: int) -> dict[str, Any] | None:
    """Settle a session whose browser never stopped it (called by the cleanup job).

    Billed time runs from start to the last heartbeat plus the grace period, bounded by the
    reservation. Returns the outcome when this call settled it; None when there is nothing
    (yet) to do: already settled, or possibly still alive. Safe to call any number of
    times, concurrently with a stop: the session and the reservation settle once.
    """
    state = session.get("state")
    if state == "starting":
        if now_epoch - int(session["started_epoch"]) < STARTING_TIMEOUT_SECONDS:
            return None
        _abandon_start(session, reason="start_interrupted")
        return {"state": "failed", "credits_used": 0}
    if state != "active":
        return None
    grace = int(session.get("heartbeat_grace_seconds") or get_settings().live_heartbeat_grace_seconds)
    last_seen = max(int(session.get("last_heartbeat_epoch") or 0), int(session["started_epoch"]))
    end_epoch = min(last_seen + grace, int(session["ends_by_epoch"]))
    if now_epoch < end_epoch:
        return None
    outcome = _settle(session, end_epoch=end_epoch, final_state="settled_by_cleanup")
    return None if outcome is None else {"state": "settled_by_cleanup", **outcome}


def _settle(session: dict[str, Any], *, end_epoch: int, final_state: str) -> dict[str, Any] | None:
    """Settle the reservation, close the session and write its history entry in one transaction.

    Returns the outcome, or None when the session was already closed by someone else.
    """
    elapsed = max(end_epoch - int(session["started_epoch"]), 0)
    minutes = billed_minutes(elapsed, int(session["reserved_minutes"]))
    used = min(minutes * int(session["price_per_minute"]), int(session["reserved_credits"]))
    provider_seconds = min(elapsed, int(session["max_session_seconds"]))
    ended_at = store.iso()
    close = {
        "Update": {
            "TableName": store.table_name(TABLE),
            "Key": store.key(session_id=session["session_id"]),
            "UpdateExpression": (
                "SET #state = :final, ended_at = :ended, ended_epoch = :end, duration_minutes = :minutes, "
                "seconds_billed = :elapsed, credits_used = :used, credits_refunded = :refunded"
            ),
            "ConditionExpression": "#state = :active",
            "ExpressionAttributeNames": {"#state": "state"},
            "ExpressionAttributeValues": store.values(
                final=final_state, ended=ended_at, end=end_epoch, minutes=minutes, elapsed=elapsed,
                used=used, refunded=int(session["reserved_credits"]) - used, active="active",
            ),
        }
    }
    metadata = {
        "session_id": session["session_id"],
        "duration_minutes": minutes,
        "seconds_elapsed": elapsed,
        "ended_by": final_state,
        "provider": "assemblyai",
        "provider_seconds": provider_seconds,
    }
    entry = history.put_item(
        session["user_id"], "stream", session["session_id"], session["started_at"],
        ended_at=ended_at, credits_used=used, duration_minutes=minutes,
        channel=session.get("channel"), title=session.get("title"),
    )
    try:
        result = ledger.settle(
            session["reservation_id"], used, service_type=SERVICE_TYPE, metadata=metadata,
            extra_items=[close, entry],
        )
    except Exception:
        current = store.get(TABLE, session_id=session["session_id"])
        if current is not None and current.get("state") in FINAL_STATES:
            return None
        raise
    if result.replayed:
        return None
    stats.record_usage(session["user_id"], SERVICE_TYPE, assemblyai_streaming_seconds=provider_seconds)
    outcome = {
        "duration_minutes": minutes,
        "credits_used": result.credits_used,
        "credits_refunded": result.credits_refunded,
        "remaining_balance": result.balance_after,
    }
    _store_balance(session["session_id"], result.balance_after)
    log_event(logger, "live.settled", session_id=session["session_id"], ended_by=final_state,
              duration_minutes=minutes, credits_used=result.credits_used,
              credits_refunded=result.credits_refunded, provider_seconds=provider_seconds)
    return outcome


def _store_balance(session_id: str, balance: int) -> None:
    """Keep the balance after settlement, so a repeated stop answers the same figures."""
    try:
        store.ddb().update_item(
            TableName=store.table_name(TABLE),
            Key=store.key(session_id=session_id),
            UpdateExpression="SET remaining_balance = :balance",
            ExpressionAttributeValues=store.values(balance=balance),
        )
    except Exception:  # the money is settled; a replay then reads the live balance instead
        logger.exception("live.store_balance_failed")


def _stored_outcome(session: dict[str, Any]) -> dict[str, Any]:
    outcome = {name: session.get(name) for name in OUTCOME_FIELDS}
    if outcome["remaining_balance"] is None:
        outcome["remaining_balance"] = ledger.get_balance(session["user_id"])["balance"]
    return outcome


def _owned(user_id: str, session_id: str) -> dict[str, Any]:
    """The caller's own session; someone else's is indistinguishable from an unknown one."""
    session = store.get(TABLE, session_id=session_id)
    if session is None or session.get("user_id") != user_id:
        raise NotFound("Session not found", code="session_not_found")
    return session


def _not_active(session: dict[str, Any]) -> Conflict:
    return Conflict("Session is not active", code="session_not_active", state=session.get("state"))
