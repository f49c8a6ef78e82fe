"""Live caption sessions: a chain of short AssemblyAI tokens, each paid before it is minted.

A temporary token is money: once its socket is open nothing can end it before its
`max_session_duration_seconds`, and AssemblyAI bills us for the socket's duration. So a
session holds ONE reservation that grows by each token's minutes before that token is
minted (`ledger.extend`), and the provider time a session's tokens allow minus the time
billed is at most the last token's duration, whatever the client does:

    billed seconds = min(allowed, max(elapsed, committed))

`allowed` is the sum of the minted tokens' durations; `committed` the sum of the tokens a
renewal replaced (renewing means the old token was used up); `elapsed` runs from start to
stop on the server's clock. Minutes are rounded up once per session. A session that is never
stopped is settled by the cleanup job once its last token can no longer be open, billed up to
its last sign of life plus a grace period, and at least its committed time.

Two kinds of start: a renewing client (the client kit: `renewable`, or any `max_minutes`)
gets tokens of LIVE_TOKEN_MINUTES and renews each one shortly before it ends; a legacy
start (the published extension: `{"action": "start"}` only) gets one token of
LIVE_LEGACY_TOKEN_MINUTES. Never-paid accounts get at most LIVE_FREE_TOKEN_MINUTES.

Session states: starting (credits held, first token being minted) -> active -> stopped |
settled_by_cleanup; starting -> failed when the first mint fails (credits released).
Token bookkeeping on the session item: `paid_tokens` (tokens reserved for) is
`token_number` (tokens minted) or one more, when a renewal paid and its mint failed: the
next renew then mints without paying again. Every session write is conditional on the
token counts it read, so stop, renew and the cleanup racing each other settle once.
"""
from __future__ import annotations

import logging
import math
import uuid
from typing import Any, Mapping

from chalicelib.aws import store
from chalicelib.catchup import history
from chalicelib.credits import ledger
from chalicelib.credits import statement
from chalicelib.credits import stats
from chalicelib.web import idempotency
from chalicelib.web import ratelimit
from chalicelib.core.errors import Conflict, InsufficientCredits, NotFound, RateLimited, ValidationFailed
from chalicelib.core.logs import log_event, register_secret
from chalicelib.core.settings import get_settings
from chalicelib.core.validation import Field, Schema

logger = logging.getLogger(__name__)

TABLE = "sessions"
SERVICE_TYPE = "live"
SLOT = "active_streams"
# AssemblyAI accepts max_session_duration_seconds up to 10800 s.
PROVIDER_MAX_MINUTES = 180
# A session still "starting" after this long lost its start request (the Lambda died).
STARTING_TIMEOUT_SECONDS = 300
# The reservation outlives the session's last token by this much, so the cleanup job
# settles an abandoned session (charging its used time) before the hold could expire unused.
RESERVATION_MARGIN_SECONDS = 6 * 3600
DAY_SECONDS = 86400
FINAL_STATES = ("stopped", "settled_by_cleanup")
OUTCOME_FIELDS = ("duration_minutes", "credits_used", "credits_refunded", "remaining_balance")
SETTLE_ATTEMPTS = 5

TWITCH_LOGIN = r"[a-z0-9_]{1,25}"

STREAM_SCHEMA = Schema(
    {
        "action": Field(str, required=True, max_length=16, choices=("start", "renew", "heartbeat", "stop")),
        "session_id": Field(str, max_length=64, pattern=r"[A-Za-z0-9_-]{1,64}"),
        "max_minutes": Field(int, minimum=1, maximum=PROVIDER_MAX_MINUTES),
        "sample_rate": Field(int, minimum=8000, maximum=48000),
        "channel": Field(str, max_length=25, pattern=TWITCH_LOGIN, normalize=lambda v: v.strip().lower()),
        "title": Field(str, max_length=200, normalize=str.strip),
        "renewable": Field(bool),
        "token_number": Field(int, minimum=1, maximum=100_000),
    },
    name="transcription_stream",
)


def handle(
    user_id: str, body: dict[str, Any], headers: Mapping[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    """POST /transcription/stream: dispatch on `action` (the published extension's shape).

    Returns (status, body). A start carrying an `Idempotency-Key` runs at most once per key
    (a retried start gets the first response, not a second reservation); renew is
    idempotent per `token_number`, stop by itself, and a heartbeat must never be answered
    from a stored response.
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
                renewable=body["renewable"],
            ),
        )
    session_id = _required(body, "session_id")
    if action == "renew":
        return 200, renew(user_id, session_id, _required(body, "token_number"))
    if action == "heartbeat":
        return 200, heartbeat(user_id, session_id)
    return 200, stop(user_id, session_id)


def _required(body: dict[str, Any], name: str) -> Any:
    if body.get(name) is None:
        raise ValidationFailed(f"'{name}' is required", code="missing_field", field=name)
    return body[name]


# ----- arithmetic (pure) ----------------------------------------------------------------


def longest_token_minutes(*, renewable: bool, never_paid: bool) -> int:
    """The longest token this kind of session may get; never-paid accounts get shorter ones."""
    settings = get_settings()
    longest = settings.live_token_minutes if renewable else settings.live_legacy_token_minutes
    if never_paid:
        longest = min(longest, settings.live_free_token_minutes)
    return min(longest, PROVIDER_MAX_MINUTES)


def token_minutes(available: int, price_per_minute: int, *, longest: int, cap_remaining: int,
                  ask_room: int) -> int:
    """Whole minutes the next token gets (0: the balance cannot pay one minute).

    The reservation leaves `ask_room` credits available for Ask when the balance allows;
    when it does not, captions come first and the token takes what pays whole minutes.
    """
    limit = min(longest, cap_remaining)
    if limit < 1:
        return 0
    with_room = (available - ask_room) // price_per_minute
    if with_room >= 1:
        return min(limit, with_room)
    return max(min(limit, available // price_per_minute), 0)


def billed_seconds(elapsed: int, committed: int, allowed: int) -> int:
    """What a session is billed for: its elapsed time, at least what renewals committed,
    never more than its tokens allowed."""
    return max(min(allowed, max(elapsed, committed)), 0)


def billed_minutes(seconds: int, reserved_minutes: int) -> int:
    """Seconds rounded up to whole minutes, at least one, never more than reserved."""
    return min(max(math.ceil(max(seconds, 0) / 60), 1), reserved_minutes)


def _never_paid(account: Mapping[str, Any]) -> bool:
    return not account.get("total_credits_purchased") and account.get("subscription_tier", "free") == "free"


# ----- start --------------------------------------------------------------------------


def start(
    user_id: str,
    *,
    max_minutes: int | None = None,
    sample_rate: int | None = None,
    channel: str | None = None,
    title: str | None = None,
    renewable: bool | None = None,
) -> dict[str, Any]:
    """Reserve the first token's minutes, mint it, store the session."""
    settings = get_settings()
    price = settings.live_credits_per_minute
    renewable = (max_minutes is not None) if renewable is None else renewable
    session_cap = min(max_minutes or settings.live_max_minutes, settings.live_max_minutes)
    account = ledger.get_balance(user_id)
    longest = longest_token_minutes(renewable=renewable, never_paid=_never_paid(account))
    minutes = token_minutes(account["balance"], price, longest=longest, cap_remaining=session_cap,
                            ask_room=settings.live_ask_room_credits)
    if minutes < 1:
        raise _insufficient(account["balance"], price)
    now = store.epoch()
    _count_session_today(user_id, now)
    session_id = uuid.uuid4().hex
    session = {
        "session_id": session_id,
        "user_id": user_id,
        "state": "starting",
        "renewable": renewable,
        "started_at": store.iso(),
        "started_epoch": now,
        "last_heartbeat_epoch": now,
        "price_per_minute": price,
        "session_max_minutes": session_cap if renewable else minutes,
        "token_number": 0,
        "paid_tokens": 1,
        "pending_token_minutes": minutes,
        "allowance_seconds": 0,
        "committed_seconds": 0,
        "reserved_minutes": minutes,
        "reserved_credits": minutes * price,
        "reservation_id": f"live#{session_id}",
        "ends_by_epoch": now + settings.assemblyai_token_expires_seconds + minutes * 60,
        "heartbeat_grace_seconds": settings.live_heartbeat_grace_seconds,
        "sample_rate": sample_rate,
        "channel": channel,
        "title": title,
    }
    try:
        ledger.reserve(
            user_id,
            session["reserved_credits"],
            reservation_id=session["reservation_id"],
            purpose=SERVICE_TYPE,
            ref_id=session_id,
            ttl_seconds=_hold_seconds(minutes),
            slot=(SLOT, settings.live_max_concurrent_sessions),
            extra_items=[store.put_new(TABLE, "session_id", session)],
        )
    except InsufficientCredits as error:  # the balance moved since we read it
        error.details.setdefault("price_per_minute", price)
        raise
    try:
        minted = _mint(minutes)
    except Exception:
        _abandon_start(session, reason="token_mint_failed")
        raise
    session = _commit_token(session, minted, store.epoch(), from_state="starting")
    log_event(logger, "live.started", session_id=session_id, renewable=renewable,
              token_minutes=minutes, credits_reserved=session["reserved_credits"])
    return _token_answer(session, minted["expires_in_seconds"])


def _insufficient(balance: int, price: int) -> InsufficientCredits:
    return InsufficientCredits(
        f"Live captions cost {price} credits per minute; your available balance is {balance}",
        balance=balance, required=price, price_per_minute=price,
    )


def _hold_seconds(minutes: int) -> int:
    return minutes * 60 + get_settings().assemblyai_token_expires_seconds + RESERVATION_MARGIN_SECONDS


def _count_session_today(user_id: str, now: int) -> None:
    """At most LIVE_MAX_SESSIONS_PER_DAY starts per user per UTC day: what bounds the unpaid
    provider time per account per day (README, "The bound")."""
    settings = get_settings()
    day_start, day_end = ratelimit.window(now, DAY_SECONDS)
    key = ratelimit.counter_key("live_sessions", f"user:{user_id}", DAY_SECONDS, day_start)
    if ratelimit.hit(key, settings.live_max_sessions_per_day, expires_at=day_end + 3600) is None:
        retry_after = max(day_end - now, 1)
        raise RateLimited(
            f"At most {settings.live_max_sessions_per_day} live sessions a day; try again tomorrow",
            code="too_many_sessions_today", retry_after=retry_after,
            limit=settings.live_max_sessions_per_day,
        )


def _mint(minutes: int) -> dict[str, Any]:
    from chalicelib.providers import assemblyai

    return assemblyai.mint_streaming_token(get_settings().assemblyai_token_expires_seconds, minutes * 60)


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


# ----- tokens -------------------------------------------------------------------------


def _commit_token(
    session: dict[str, Any], minted: dict[str, Any], now: int, *, from_state: str
) -> dict[str, Any]:
    """Record a freshly minted token on the session; returns the session as now stored.

    Conditional on the counts read (and the state), so a renewal that lost a race with a
    stop never hands out its token: None of it is returned and an unopened token costs
    nothing. Raises Conflict when that happened.
    """
    current = int(session["token_number"])
    seconds = int(session["pending_token_minutes"]) * 60
    token = minted["token"]
    register_secret(token)
    changes = {
        "state": "active",
        "token_number": current + 1,
        "token_minted_epoch": now,
        "token_seconds": seconds,
        "allowance_seconds": int(session["allowance_seconds"]) + seconds,
        "committed_seconds": int(session["allowance_seconds"]),
        "token": token,
        "token_expires_epoch": now + int(minted["expires_in_seconds"]),
        "ends_by_epoch": max(int(session["ends_by_epoch"]),
                             now + int(minted["expires_in_seconds"]) + seconds),
        "last_heartbeat_epoch": max(int(session["last_heartbeat_epoch"]), now),
    }
    names = {f"#f{i}": name for i, name in enumerate(changes)}
    values = {f":f{i}": store.to_attr(value) for i, value in enumerate(changes.values())}
    names.update({"#state": "state", "#minted": "token_number", "#paid": "paid_tokens"})
    values.update(store.values(from_state=from_state, current=current, paid=current + 1))
    try:
        store.ddb().update_item(
            TableName=store.table_name(TABLE),
            Key=store.key(session_id=session["session_id"]),
            UpdateExpression="SET " + ", ".join(f"#f{i} = :f{i}" for i in range(len(changes))),
            ConditionExpression="#state = :from_state AND #minted = :current AND #paid = :paid",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )
    except store.ddb().exceptions.ConditionalCheckFailedException:
        raise _lost_race(session) from None
    return {**session, **changes}


def _lost_race(session: dict[str, Any]) -> Conflict:
    current = store.get(TABLE, session_id=session["session_id"]) or {}
    if current.get("state") != "active":
        return _not_active(current or session)
    return Conflict("The session changed meanwhile; renew again with the current token_number",
                    code="token_superseded", token_number=current.get("token_number"))


def _token_answer(session: dict[str, Any], expires_in: int,
                  replayed: bool = False) -> dict[str, Any]:
    from chalicelib.providers import assemblyai

    settings = get_settings()
    seconds = int(session["token_seconds"])
    token = session["token"]
    answer = {
        "success": True,
        "session_id": session["session_id"],
        "renewable": bool(session.get("renewable")),
        "token": token,
        "assemblyai_api_key": token,  # older extension builds read the token under this name
        "websocket_url": assemblyai.websocket_url(token, session.get("sample_rate")),
        "token_number": int(session["token_number"]),
        "expires_in_seconds": expires_in,
        "max_session_seconds": seconds,
        "max_minutes": seconds // 60,
        "renew_in_seconds": (max(seconds - settings.live_renew_lead_seconds, 0)
                             if session.get("renewable") else None),
        "session_max_minutes": int(session["session_max_minutes"]),
        "expires_at": store.iso_epoch(int(session["token_minted_epoch"]) + seconds),
        "credits_reserved": int(session["reserved_credits"]),
        "price_per_minute": int(session["price_per_minute"]),
        "heartbeat_interval_seconds": max(settings.live_heartbeat_grace_seconds // 4, 5),
        **statement.summary(session["user_id"]),
    }
    if replayed:
        answer["replayed"] = True
    return answer


# ----- renew --------------------------------------------------------------------------


def renew(user_id: str, session_id: str, token_number: int) -> dict[str, Any]:
    """Pay for and mint the token after `token_number`, the one the client holds.

    Idempotent per token_number: asking again for a token already handed out answers it
    again (`replayed`) while it can still be opened.
    """
    session = _owned(user_id, session_id)
    if session["state"] != "active":
        raise _not_active(session)
    if not session.get("renewable"):
        raise Conflict("This session has one token and cannot be renewed; start a new one",
                       code="not_renewable")
    current = int(session["token_number"])
    if token_number == current - 1:
        return _replay(session)
    if token_number != current:
        raise Conflict("token_number is not the current token", code="token_superseded",
                       token_number=current)
    now = store.epoch()
    if int(session["paid_tokens"]) == current:
        session = _pay_next_token(session, now)
    minted = _mint(int(session["pending_token_minutes"]))  # a failure keeps it paid
    now = store.epoch()
    session = _commit_token(session, minted, now, from_state="active")
    log_event(logger, "live.renewed", session_id=session_id, token_number=current + 1,
              token_minutes=int(session["token_seconds"]) // 60,
              credits_reserved=int(session["reserved_credits"]))
    return _token_answer(session, int(minted["expires_in_seconds"]))


def _replay(session: dict[str, Any]) -> dict[str, Any]:
    left = int(session.get("token_expires_epoch") or 0) - store.epoch()
    if left <= 0:
        raise Conflict("That renewal's token can no longer be opened", code="token_superseded",
                       token_number=int(session["token_number"]))
    return _token_answer(session, left, replayed=True)


def _pay_next_token(session: dict[str, Any], now: int) -> dict[str, Any]:
    """Reserve the next token's minutes on the session's reservation; returns the session."""
    settings = get_settings()
    left = int(session["token_minted_epoch"]) + int(session["token_seconds"]) - now
    if left > settings.live_renew_window_seconds:
        raise Conflict("Too early to renew this token", code="renew_too_early",
                       renew_in_seconds=left - settings.live_renew_window_seconds)
    # No token may run past the session's longest duration, counted from its start.
    session_end = int(session["started_epoch"]) + int(session["session_max_minutes"]) * 60
    cap_remaining = (session_end - now) // 60
    if cap_remaining < 1:
        raise Conflict("The session reached its longest duration; start a new one",
                       code="session_limit_reached", session_max_minutes=int(session["session_max_minutes"]))
    price = int(session["price_per_minute"])
    account = ledger.get_balance(session["user_id"])
    longest = longest_token_minutes(renewable=True, never_paid=_never_paid(account))
    minutes = token_minutes(account["balance"], price, longest=longest, cap_remaining=cap_remaining,
                            ask_room=settings.live_ask_room_credits)
    if minutes < 1:
        raise _insufficient(account["balance"], price)
    current = int(session["token_number"])
    credits = minutes * price
    pay = {
        "Update": {
            "TableName": store.table_name(TABLE),
            "Key": store.key(session_id=session["session_id"]),
            "UpdateExpression": (
                "SET paid_tokens = :next, pending_token_minutes = :minutes, "
                "reserved_minutes = reserved_minutes + :minutes, "
                "reserved_credits = reserved_credits + :credits"
            ),
            "ConditionExpression": "#state = :active AND token_number = :current AND paid_tokens = :current",
            "ExpressionAttributeNames": {"#state": "state"},
            "ExpressionAttributeValues": store.values(
                next=current + 1, minutes=minutes, credits=credits, active="active", current=current
            ),
        }
    }
    try:
        result = ledger.extend(session["reservation_id"], credits, step=current - 1,
                               ttl_seconds=_hold_seconds(minutes), extra_items=[pay])
    except ledger.TransactionConflict:
        result = None
    except InsufficientCredits as error:
        error.details.setdefault("price_per_minute", price)
        raise
    if result is None or result.replayed:  # a concurrent renew paid, or a stop closed it
        fresh = _owned(session["user_id"], session["session_id"])
        if fresh["state"] != "active":
            raise _not_active(fresh)
        if int(fresh["token_number"]) != current or int(fresh["paid_tokens"]) != current + 1:
            raise Conflict("The session changed meanwhile; renew again with the current token_number",
                           code="token_superseded", token_number=int(fresh["token_number"]))
        return fresh
    return {**session, "paid_tokens": current + 1, "pending_token_minutes": minutes,
            "reserved_minutes": int(session["reserved_minutes"]) + minutes,
            "reserved_credits": int(session["reserved_credits"]) + credits}


# ----- heartbeat ----------------------------------------------------------------------


def heartbeat(user_id: str, session_id: str) -> dict[str, Any]:
    """Record that the session is alive (optional: it only moves a never-stopped session's
    "last seen"); only its owner can, and only while it is active."""
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
    token_end = int(session["token_minted_epoch"]) + int(session["token_seconds"])
    return {
        "success": True,
        "session_id": session_id,
        "seconds_elapsed": max(now_epoch - int(session["started_epoch"]), 0),
        "seconds_remaining": max(token_end - now_epoch, 0),
    }


# ----- stop and settlement ------------------------------------------------------------


def stop(user_id: str, session_id: str) -> dict[str, Any]:
    """Bill the time used and refund the rest; stopping again answers the same figures.

    A repeated stop (a retry after a lost response) is a 200 with the stored outcome and
    `already_stopped: true`, never a second charge.
    """
    session = _owned(user_id, session_id)
    for _ in range(SETTLE_ATTEMPTS):
        if session["state"] in FINAL_STATES:
            break
        if session["state"] != "active":
            raise _not_active(session)
        outcome = _settle(session, end_epoch=store.epoch(), final_state="stopped")
        if outcome is not None:
            return {"success": True, "session_id": session_id, **outcome, "already_stopped": False}
        session = _owned(user_id, session_id)  # settled concurrently, or a renewal moved it
    else:
        raise Conflict("The session keeps changing; retry the stop", code="session_busy")
    return {"success": True, "session_id": session_id, **_stored_outcome(session), "already_stopped": True}


def settle_abandoned(session: dict[str, Any], now_epoch: int) -> dict[str, Any] | None:
    """Settle a session whose client never stopped it (called by the cleanup job).

    Due once its last token can no longer be open (`ends_by_epoch`); billed up to the last
    sign of life (start, renew, heartbeat) plus the grace period, at least what renewals
    committed, never more than the tokens allowed. Returns the outcome when this call
    settled it; None when there is nothing (yet) to do. Safe to call any number of times,
    concurrently with a stop or a renew: the session and the reservation settle once.
    """
    state = session.get("state")
    if state == "starting":
        if now_epoch - int(session["started_epoch"]) < STARTING_TIMEOUT_SECONDS:
            return None
        _abandon_start(session, reason="start_interrupted")
        return {"state": "failed", "credits_used": 0}
    if state != "active" or now_epoch < int(session["ends_by_epoch"]):
        return None
    grace = int(session.get("heartbeat_grace_seconds") or get_settings().live_heartbeat_grace_seconds)
    last_seen = max(int(session.get("last_heartbeat_epoch") or 0), int(session["started_epoch"]))
    outcome = _settle(session, end_epoch=last_seen + grace, final_state="settled_by_cleanup")
    return None if outcome is None else {"state": "settled_by_cleanup", **outcome}


def _settle(session: dict[str, Any], *, end_epoch: int, final_state: str) -> dict[str, Any] | None:
    """Settle the reservation, close the session and write its history entry in one transaction.

    Conditional on the session being active with the token counts read. Returns the
    outcome, or None when the session changed meanwhile (closed by someone else, or a
    renewal): the caller reads it again.
    """
    elapsed = max(end_epoch - int(session["started_epoch"]), 0)
    seconds = billed_seconds(elapsed, int(session["committed_seconds"]), int(session["allowance_seconds"]))
    minutes = billed_minutes(seconds, int(session["reserved_minutes"]))
    used = min(minutes * int(session["price_per_minute"]), int(session["reserved_credits"]))
    ended_at = store.iso()
    close = {
        "Update": {
            "TableName": store.table_name(TABLE),
            "Key": store.key(session_id=session["session_id"]),
            "UpdateExpression": (
                "SET #state = :final, ended_at = :ended, ended_epoch = :end, duration_minutes = :minutes, "
                "seconds_elapsed = :elapsed, seconds_billed = :seconds, credits_used = :used, "
                "credits_refunded = :refunded REMOVE #token"
            ),
            "ConditionExpression": "#state = :active AND token_number = :minted AND paid_tokens = :paid",
            "ExpressionAttributeNames": {"#state": "state", "#token": "token"},
            "ExpressionAttributeValues": store.values(
                final=final_state, ended=ended_at, end=end_epoch, minutes=minutes, elapsed=elapsed,
                seconds=seconds, used=used, refunded=int(session["reserved_credits"]) - used,
                active="active", minted=int(session["token_number"]), paid=int(session["paid_tokens"]),
            ),
        }
    }
    metadata = {
        "session_id": session["session_id"],
        "duration_minutes": minutes,
        "seconds_elapsed": elapsed,
        "ended_by": final_state,
        "provider": "assemblyai",
        "provider_seconds": seconds,
        "provider_seconds_allowed": int(session["allowance_seconds"]),
        "tokens": int(session["token_number"]),
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
    except ledger.TransactionConflict:
        return None
    if result.replayed:
        return None
    stats.record_usage(session["user_id"], SERVICE_TYPE, assemblyai_streaming_seconds=seconds)
    balance = statement.summary(session["user_id"])
    outcome = {
        "duration_minutes": minutes,
        "credits_used": result.credits_used,
        "credits_refunded": result.credits_refunded,
        "remaining_balance": balance["credits_balance"],
        "credits_available": balance["credits_available"],
        "credits_held": balance["credits_held"],
    }
    _store_balance(session["session_id"], balance["credits_balance"])
    log_event(logger, "live.settled", session_id=session["session_id"], ended_by=final_state,
              duration_minutes=minutes, credits_used=result.credits_used,
              credits_refunded=result.credits_refunded, provider_seconds=seconds,
              provider_seconds_allowed=int(session["allowance_seconds"]))
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
    balance = statement.summary(session["user_id"])
    if outcome["remaining_balance"] is None:
        outcome["remaining_balance"] = balance["credits_balance"]
    outcome["credits_available"] = balance["credits_available"]
    outcome["credits_held"] = balance["credits_held"]
    return outcome


def _owned(user_id: str, session_id: str) -> dict[str, Any]:
    """The caller's own session; someone else's is indistinguishable from an unknown one."""
    session = store.get(TABLE, session_id=session_id)
    if session is None or session.get("user_id") != user_id:
        raise NotFound("Session not found", code="session_not_found")
    return session


def _not_active(session: dict[str, Any]) -> Conflict:
    return Conflict("Session is not active", code="session_not_active", state=session.get("state"))
