"""At most one open subscription Checkout Session per user: a claim on the user item.

Two Checkout Sessions open at once would let one person pay two subscriptions, and
`is_subscribed` cannot prevent it: nothing is subscribed until a session is paid. So before
creating a session, `POST /credits/subscribe` claims the user's `subscribe_checkout`
attribute with a conditional UpdateItem; the claim is free when there is none, when the
session it opened has expired (`expires_at`, also cleared by `checkout.session.expired`), or
when its holder died before storing a session (`claimed_at` older than CLAIM_SECONDS, or at once
for a retry of that very request: same Idempotency-Key).
Whoever loses the race reuses the winner's session (same plan) once it is stored.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chalicelib.aws import store

ATTRIBUTE = "subscribe_checkout"
CLAIM_SECONDS = 30      # a claim without a session after this was abandoned (Lambda timeout)
WAIT_SECONDS = 10.0     # how long a parallel request waits for the winner's session


@dataclass(frozen=True)
class Held:
    """Who holds the claim: its request, its plan, and its session once stored."""

    request_id: str
    plan_id: str
    session_id: str | None
    url: str | None


def claim(user_id: str, request_id: str, plan_id: str, now: int, *, replaces: str | None = None) -> Held | None:
    """Take the user's checkout claim (None), or return who holds it.

    `replaces`: also take it from that request (whose session the caller has just expired).
    """
    free = (
        f"attribute_not_exists({ATTRIBUTE}) OR {ATTRIBUTE}.expires_at <= :now"
        f" OR (attribute_not_exists({ATTRIBUTE}.session_id)"
        f"     AND ({ATTRIBUTE}.claimed_at < :stale OR {ATTRIBUTE}.request_id = :rid))"
    )
    values = store.values(claim={"request_id": request_id, "plan_id": plan_id, "claimed_at": now},
                          now=now, stale=now - CLAIM_SECONDS, rid=request_id)
    if replaces:
        free += f" OR {ATTRIBUTE}.request_id = :replaces"
        values.update(store.values(replaces=replaces))
    try:
        store.ddb().update_item(
            TableName=store.table_name("users"),
            Key=store.key(user_id=user_id),
            UpdateExpression=f"SET {ATTRIBUTE} = :claim",
            ConditionExpression=f"attribute_exists(user_id) AND ({free})",
            ExpressionAttributeValues=values,
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
        return None
    except store.ddb().exceptions.ConditionalCheckFailedException as error:
        held = (store.from_item(error.response.get("Item")) or {}).get(ATTRIBUTE)
        if held is None:
            raise  # no user item: the account was deleted meanwhile
        return Held(held["request_id"], held["plan_id"], held.get("session_id"), held.get("url"))


def attach(user_id: str, request_id: str, session: dict[str, Any]) -> None:
    """Store the session our claim opened, so parallel and later requests reuse it."""
    _write(user_id, f"SET {ATTRIBUTE}.session_id = :sid, {ATTRIBUTE}.#url = :url, {ATTRIBUTE}.expires_at = :exp",
           f"{ATTRIBUTE}.request_id = :rid",
           sid=session["id"], url=session["url"], exp=int(session["expires_at"]), rid=request_id)


def release(user_id: str, request_id: str) -> None:
    """Give the claim up (creating its session failed)."""
    _write(user_id, f"REMOVE {ATTRIBUTE}", f"{ATTRIBUTE}.request_id = :rid", rid=request_id)


def session_expired(user_id: str, session_id: str) -> bool:
    """Stripe expired the claim's session (`checkout.session.expired`): the claim is free."""
    return _write(user_id, f"REMOVE {ATTRIBUTE}", f"{ATTRIBUTE}.session_id = :sid", sid=session_id)


def _write(user_id: str, update: str, condition: str, **values: Any) -> bool:
    try:
        store.ddb().update_item(
            TableName=store.table_name("users"),
            Key=store.key(user_id=user_id),
            UpdateExpression=update,
            ConditionExpression=condition,
            ExpressionAttributeValues=store.values(**values),
            **({"ExpressionAttributeNames": {"#url": "url"}} if "#url" in update else {}),
        )
        return True
    except store.ddb().exceptions.ConditionalCheckFailedException:
        return False  # the claim moved on (taken over, or already released)
