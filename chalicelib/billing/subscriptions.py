"""The user's subscription state (`subscription_tier`, `subscription_status`, ...) following
Stripe's subscription, whatever order its events arrive in.

Each change is one conditional UpdateItem on the user item that only applies when:
- the event is not older than the last one applied (`subscription_event_at`, the event's
  `created`), so a late `updated: active` cannot undo a newer `deleted`;
- the subscription is not already `canceled` (terminal in Stripe: nothing revives it);
- for anything but activation, it is the user's current subscription, so the end of an old
  subscription cannot downgrade a user who has since subscribed again.
"""
from __future__ import annotations

from typing import Any

from chalicelib.aws import store
from chalicelib.billing.catalogue import FREE_TIER, Plan

ACTIVATING = ("active", "trialing")
DEGRADED = ("past_due",)  # keeps the tier while Stripe retries the payment
# Before its first payment a subscription is `incomplete`: nothing to follow yet (and after
# activation Stripe never returns to it, so a late `incomplete` must not overwrite `active`).
NOT_STARTED = "incomplete"
CANCELED = "canceled"
SUBSCRIBED = ACTIVATING + ("past_due",)  # a second subscription would bill twice


def is_subscribed(user: dict[str, Any]) -> bool:
    return user.get("subscription_status") in SUBSCRIBED


def apply(
    user_id: str, *, subscription_id: str, status: str, plan: Plan | None, event_created: int
) -> bool:
    """Follow one subscription status; False when the event was stale (nothing written)."""
    sets: dict[str, Any] = {
        "subscription_status": status,
        "subscription_event_at": int(event_created),
        "subscription_updated_at": store.iso(),
    }
    condition = [
        "attribute_exists(user_id)",
        "(attribute_not_exists(subscription_event_at) OR subscription_event_at <= :at)",
        "NOT (subscription_id = :sid AND subscription_status = :canceled)",
    ]
    if status in ACTIVATING:
        if plan is None:
            raise ValueError("activating a subscription needs its plan")
        sets.update(
            subscription_tier=plan.tier, subscription_id=subscription_id, subscription_plan_id=plan.id
        )
    else:
        condition.append("subscription_id = :sid")
        if status not in DEGRADED:
            sets["subscription_tier"] = FREE_TIER
    names = {f"#f{i}": name for i, name in enumerate(sets)}
    values = {f":v{i}": store.to_attr(value) for i, value in enumerate(sets.values())}
    values.update(store.values(at=int(event_created), sid=subscription_id, canceled=CANCELED))
    try:
        store.ddb().update_item(
            TableName=store.table_name("users"),
            Key=store.key(user_id=user_id),
            UpdateExpression="SET " + ", ".join(f"#f{i} = :v{i}" for i in range(len(sets))),
            ConditionExpression=" AND ".join(condition),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )
        return True
    except store.ddb().exceptions.ConditionalCheckFailedException:
        return False
