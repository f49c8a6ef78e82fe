"""The stripe-events table: every webhook event we handled, and what became of it.

It answers two questions. "Did we already handle this event?" lets a redelivery return at
once (correctness does not depend on it: every effect is also keyed by its business object).
"What could we not match, or not accept?" leaves orphaned and needs_review events (an unknown session, user or charge) for an
operator, with ids only: no names, emails, addresses or card details are kept.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chalicelib.aws import store

TABLE = "stripe-events"
PROCESSED = "processed"
IGNORED = "ignored"
ORPHANED = "orphaned"
# A payment that is not what we asked Stripe for: nothing granted, an operator decides.
NEEDS_REVIEW = "needs_review"

DAY = 24 * 3600
# Stripe retries for 3 days; orphans wait longer for an operator.
RETENTION_SECONDS = {PROCESSED: 30 * DAY, IGNORED: 30 * DAY, ORPHANED: 90 * DAY, NEEDS_REVIEW: 90 * DAY}


@dataclass(frozen=True)
class Outcome:
    """What handling one event did: its status, why, and the ids it concerned."""

    status: str
    reason: str | None = None
    refs: dict[str, Any] = field(default_factory=dict)


def processed(reason: str | None = None, **refs: Any) -> Outcome:
    return Outcome(PROCESSED, reason, refs)


def ignored(reason: str, **refs: Any) -> Outcome:
    return Outcome(IGNORED, reason, refs)


def orphaned(reason: str, **refs: Any) -> Outcome:
    return Outcome(ORPHANED, reason, refs)


def needs_review(reason: str, **refs: Any) -> Outcome:
    return Outcome(NEEDS_REVIEW, reason, refs)


def already_handled(event_id: str) -> bool:
    return store.get(TABLE, event_id=event_id) is not None


def record(event: dict[str, Any], outcome: Outcome) -> None:
    """Keep the first record of an event (a concurrent duplicate's write is dropped)."""
    obj = (event.get("data") or {}).get("object") or {}
    item = {
        "event_id": event["id"],
        "type": event.get("type"),
        "status": outcome.status,
        "reason": outcome.reason,
        "object_id": obj.get("id") if isinstance(obj.get("id"), str) else None,
        "livemode": bool(event.get("livemode")),
        "event_created": event.get("created") if isinstance(event.get("created"), int) else None,
        "handled_at": store.iso(),
        "expires_at_epoch": store.epoch() + RETENTION_SECONDS[outcome.status],
        **{name: value for name, value in outcome.refs.items() if isinstance(value, (str, int))},
    }
    try:
        store.ddb().put_item(
            TableName=store.table_name(TABLE),
            Item=store.to_item(item),
            ConditionExpression="attribute_not_exists(event_id)",
        )
    except store.ddb().exceptions.ConditionalCheckFailedException:
        pass
