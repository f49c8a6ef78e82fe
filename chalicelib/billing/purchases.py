"""The purchase rows in the transactions table: written pending at purchase time, then moved
through the Checkout Session's life by webhook events.

Life of a row (`status`):

    pending --completed(unpaid)--> awaiting_payment --async failed--> failed
       |                                 |
       +--------- paid ------------------+--> completed   (ledger.complete_purchase only)
       +--------- paid, but not the price we asked --> needs_review  (an operator decides)
       +--------- expired / creation failed --> expired / failed

Every transition here is a conditional write that only moves *forward* from the states
listed, so an event arriving late (`expired` after `completed`) changes nothing. Only the
ledger moves a row to `completed` (with the credits, in one transaction), and it does so
from any state that is not already `completed`: money Stripe says it received always wins.

Refunds and disputes are remembered on the row (`refund_seen_amount`, `dispute_id`) before
they are applied, so one that arrives before the purchase completes is applied right after.

A refund or dispute may even arrive before any event has told us which purchase its
PaymentIntent paid (a dispute names only the PaymentIntent and the charge; a charge may lack
our metadata). Such facts wait on a *link row* of the same table, `pi#<payment intent>`
(`kind=payment_intent_link`, no `user_id`, so no user listing or index sees it): each
refund/dispute event adds its fact to the link row's sets, each session event names the
purchase on it, both with one UpdateItem returning the whole item. Whichever of the two
writes comes second sees the other's, so the facts always reach the purchase row.
"""
from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import asdict, dataclass
from typing import Any, Iterable

from chalicelib.aws import store

TABLE = "transactions"
PAYMENT_INTENT_INDEX = "payment_intent-index"
KIND = "purchase"

PENDING = "pending"
AWAITING_PAYMENT = "awaiting_payment"
COMPLETED = "completed"
FAILED = "failed"
EXPIRED = "expired"
# Stripe reported a payment that is not what we asked for (amount or currency): no credits,
# an operator decides (chalicelib.billing.fulfilment).
NEEDS_REVIEW = "needs_review"
OPEN_STATES = (PENDING, AWAITING_PAYMENT)
UNCOMPLETED_STATES = (PENDING, AWAITING_PAYMENT, FAILED, EXPIRED, NEEDS_REVIEW)
LINK_KIND = "payment_intent_link"

# A pending row carries `pending_shard`, which puts it in the sparse `pending-index`
# (pending_shard + created_at): how the cleanup finds Checkouts abandoned for a day
# without a Scan. The cleanup removes the attribute when it expires the row, or once the
# row has moved on (completed, expired, ...), so the index only holds recent rows.
PENDING_INDEX = "pending-index"
PENDING_SHARDS = 4


def pending_shard(transaction_id: str) -> str:
    digest = hashlib.sha256(transaction_id.encode("utf-8")).digest()
    return str(int.from_bytes(digest[:4], "big") % PENDING_SHARDS)


def pending_shards() -> tuple[str, ...]:
    return tuple(str(shard) for shard in range(PENDING_SHARDS))

_IDEMPOTENT_NAMESPACE = uuid.UUID("5b0e8a5e-9f43-4a47-9d3c-7f1f4f1c2b61")


def new_transaction_id(user_id: str, idempotency_key: str | None) -> str:
    """Random, or derived from the client's Idempotency-Key so a retried purchase finds its row."""
    if idempotency_key:
        return uuid.uuid5(_IDEMPOTENT_NAMESPACE, f"{user_id}\n{idempotency_key}").hex
    return uuid.uuid4().hex


def get(transaction_id: str) -> dict[str, Any] | None:
    row = store.get(TABLE, transaction_id=transaction_id)
    return row if row is not None and row.get("kind") == KIND else None


def by_payment_intent(payment_intent: str) -> dict[str, Any] | None:
    """The purchase paid by this PaymentIntent (how refunds and disputes find their purchase)."""
    rows = store.query_all(
        {
            "TableName": store.table_name(TABLE),
            "IndexName": PAYMENT_INTENT_INDEX,
            "KeyConditionExpression": "payment_intent = :pi",
            "ExpressionAttributeValues": store.values(pi=payment_intent),
        }
    )
    for row in rows:
        if row.get("kind") == KIND:
            return get(row["transaction_id"])  # the index is eventually consistent
    return None


def create_pending(row: dict[str, Any]) -> dict[str, Any]:
    """Write a new pending row; if the id exists (a retried purchase), return the stored row."""
    item = {**row, "pending_shard": pending_shard(row["transaction_id"])}
    try:
        store.ddb().put_item(
            TableName=store.table_name(TABLE),
            Item=store.to_item(item),
            ConditionExpression="attribute_not_exists(transaction_id)",
        )
        return row
    except store.ddb().exceptions.ConditionalCheckFailedException:
        existing = store.get(TABLE, transaction_id=row["transaction_id"])
        assert existing is not None  # rows are never deleted
        return existing


def _update(
    transaction_id: str, sets: dict[str, Any], condition: str, condition_values: dict[str, Any]
) -> bool:
    """SET `sets` on the row if `condition` holds; False when it did not (nothing written)."""
    sets = {name: value for name, value in sets.items() if value is not None}
    names = {f"#f{i}": name for i, name in enumerate(sets)}
    if "#status" in condition:
        names["#status"] = "status"
    values = {f":v{i}": store.to_attr(value) for i, value in enumerate(sets.values())}
    values.update(store.values(**condition_values))
    expression = "SET " + ", ".join(f"#f{i} = :v{i}" for i in range(len(sets)))
    try:
        store.ddb().update_item(
            TableName=store.table_name(TABLE),
            Key=store.key(transaction_id=transaction_id),
            UpdateExpression=expression,
            ConditionExpression=f"attribute_exists(transaction_id) AND ({condition})",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )
        return True
    except store.ddb().exceptions.ConditionalCheckFailedException:
        return False


def _status_in(states: Iterable[str]) -> tuple[str, dict[str, Any]]:
    states = tuple(states)
    placeholders = ", ".join(f":s{i}" for i in range(len(states)))
    return f"#status IN ({placeholders})", {f"s{i}": state for i, state in enumerate(states)}


def attach_session(transaction_id: str, session: dict[str, Any]) -> None:
    """Remember the Checkout Session (its id and URL, so a retried purchase replays it)."""
    _update(
        transaction_id,
        {
            "stripe_session_id": session["id"],
            "checkout_url": session.get("url") or "",
            "session_expires_at": session.get("expires_at"),
        },
        "attribute_not_exists(stripe_session_id) OR stripe_session_id = :sid",
        {"sid": session["id"]},
    )


def advance(
    transaction_id: str, status: str, from_states: Iterable[str], **fields: Any
) -> bool:
    """Move the row to `status` if it is in one of `from_states`; False if it had moved on."""
    condition, values = _status_in(from_states)
    return _update(transaction_id, {"status": status, "updated_at": store.iso(), **fields}, condition, values)


def remember_payment_intent(transaction_id: str, payment_intent: str | None) -> None:
    """Store the PaymentIntent as soon as an event names it, so refunds can find the row."""
    if payment_intent:
        _update(
            transaction_id,
            {"payment_intent": payment_intent},
            "attribute_not_exists(payment_intent) OR payment_intent = :pi",
            {"pi": payment_intent},
        )


def remember_refund(
    transaction_id: str, charge_id: str, amount_refunded: int, charge_amount: int
) -> bool:
    """Record the charge's cumulative refunded amount; only ever grows (stale events lose)."""
    return _update(
        transaction_id,
        {
            "refund_charge_id": charge_id,
            "refund_seen_amount": amount_refunded,
            "refund_charge_amount": charge_amount,
        },
        "attribute_not_exists(refund_seen_amount) OR refund_seen_amount < :amount",
        {"amount": amount_refunded},
    )


def remember_dispute(
    transaction_id: str, dispute_id: str, amount: int | None = None, closed_status: str | None = None
) -> bool:
    """Record the (first) dispute on the purchase's charge, with the disputed amount when
    Stripe gives one (the analytics count it as money given back), and its final status
    (`won`, `lost`, ...) once `charge.dispute.closed` reports it."""
    fields: dict[str, Any] = {"dispute_id": dispute_id, "disputed_at": store.iso(),
                              "dispute_status": closed_status}
    if isinstance(amount, int) and not isinstance(amount, bool) and amount >= 0:
        fields["dispute_amount"] = amount
    return _update(
        transaction_id,
        fields,
        "attribute_not_exists(dispute_id) OR dispute_id = :dispute",
        {"dispute": dispute_id},
    )


def chargeback_update(
    row: dict[str, Any], *, refunded_amount: int, credits_clawed_back: int, dispute_applied: bool
) -> dict[str, Any]:
    """A TransactWriteItems Update that advances what has been clawed back, optimistically.

    Conditional on the row still holding the values it was read with, so two refund events
    processed at the same time cannot both claw back the same share: the loser retries.
    """
    previous_refunded = int(row.get("refunded_amount") or 0)
    previous_clawed = int(row.get("credits_clawed_back") or 0)
    previous_dispute = bool(row.get("dispute_applied"))
    return {
        "Update": {
            "TableName": store.table_name(TABLE),
            "Key": store.key(transaction_id=row["transaction_id"]),
            "UpdateExpression": (
                "SET refunded_amount = :refunded, credits_clawed_back = :clawed, "
                "dispute_applied = :dispute, updated_at = :now"
            ),
            "ConditionExpression": (
                "#status = :completed"
                " AND (attribute_not_exists(refunded_amount) OR refunded_amount = :prev_refunded)"
                " AND (attribute_not_exists(credits_clawed_back) OR credits_clawed_back = :prev_clawed)"
                " AND (attribute_not_exists(dispute_applied) OR dispute_applied = :prev_dispute)"
            ),
            "ExpressionAttributeNames": {"#status": "status"},
            "ExpressionAttributeValues": store.values(
                refunded=refunded_amount,
                clawed=credits_clawed_back,
                dispute=dispute_applied,
                now=store.iso(),
                completed=COMPLETED,
                prev_refunded=previous_refunded,
                prev_clawed=previous_clawed,
                prev_dispute=previous_dispute,
            ),
        }
    }


# --- facts reported before we know their purchase (the PaymentIntent's link row) ------------


@dataclass(frozen=True)
class Refund:
    """What a `charge.refunded` says: the charge's cumulative refunded amount."""

    charge_id: str
    amount_refunded: int
    charge_amount: int


@dataclass(frozen=True)
class Dispute:
    """What a `charge.dispute.*` says; `closed_status` only from `charge.dispute.closed`."""

    dispute_id: str
    amount: int | None
    closed_status: str | None = None


def _link_update(payment_intent: str, expression: str, values: dict[str, Any]) -> dict[str, Any]:
    response = store.ddb().update_item(
        TableName=store.table_name(TABLE),
        Key=store.key(transaction_id=f"pi#{payment_intent}"),
        UpdateExpression=expression,
        ExpressionAttributeValues={**store.values(kind=LINK_KIND), **values},
        ReturnValues="ALL_NEW",
    )
    return store.from_item(response["Attributes"]) or {}


def report(payment_intent: str, fact: Refund | Dispute) -> str | None:
    """Keep a refund/dispute on the PaymentIntent's link row; the purchase id once linked."""
    encoded = json.dumps(asdict(fact), sort_keys=True)
    attribute = "refund_facts" if isinstance(fact, Refund) else "dispute_facts"
    row = _link_update(payment_intent, f"SET kind = :kind ADD {attribute} :fact",
                       {":fact": {"SS": [encoded]}})
    return row.get("purchase_id")


def link(payment_intent: str, transaction_id: str) -> tuple[str, list[Refund | Dispute]]:
    """Name the purchase this PaymentIntent pays (the first name stays); returns the linked
    purchase id and every fact reported so far."""
    row = _link_update(payment_intent,
                       "SET kind = :kind, purchase_id = if_not_exists(purchase_id, :tid)",
                       store.values(tid=transaction_id))
    facts: list[Refund | Dispute] = [Refund(**json.loads(raw)) for raw in sorted(row.get("refund_facts") or ())]
    facts += [Dispute(**json.loads(raw)) for raw in sorted(row.get("dispute_facts") or ())]
    return row["purchase_id"], facts
