"""The ledger's rows: their types, and the only DynamoDB requests that build or read them.

The ledger owns the `usage` and `reservations` tables, its rows in `transactions` (grants,
clawbacks, the completion of a purchase) and its attributes on the `users` item
(`credits_balance`, `credits_held`, `total_usage`, `total_credits_purchased`, `ledger_seq`
and the concurrency slots). Every expression for them is written here.

Writers are pure: `*_items(balance_after, ...)` returns the TransactWriteItems elements of
one operation for the balance_after the commit loop is trying (commit.py), so a retry with
another expected balance simply builds them again. Each record is conditional so that it
happens at most once, and returns what is stored when refused (ALL_OLD).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Final, Iterator, Literal, Mapping, NotRequired, TypedDict

from chalicelib.aws import store
from chalicelib.aws.expressions import update
from chalicelib.credits import stats

USERS, TRANSACTIONS, USAGE, RESERVATIONS = "users", "transactions", "usage", "reservations"

SIGNUP = "signup"
SUSPENDED = "suspended"  # the user item's `status` while an operator has suspended it (accounts)
# Reservation states (a charge guard is `charged` from the start) and transactions kinds/status.
HELD: Final = "held"
SETTLED: Final = "settled"
RELEASED: Final = "released"
CHARGED: Final = "charged"
GRANT: Final = "grant"
PURCHASE: Final = "purchase"
CLAWBACK: Final = "clawback"
COMPLETED: Final = "completed"
HELD_SHARDS = 8  # held-index partitions; cleanup queries each of `held_shards()`
# A closed reservation (settled, released, or a charge guard, closed when written) expires this
# long after it closed (TTL `expires_at_epoch`): past every redelivery that could still ask for
# its outcome (SQS retention 4 days, the dead-letter queue's 14, a redrive) and the 24-hour
# Idempotency-Key window. Held reservations never expire: the money in them is not settled.
CLOSED_RESERVATION_TTL_SECONDS = 35 * 86400
CHECKPOINT: Final = "checkpoint"


# --- row types -------------------------------------------------------------------------


class TransactionRow(TypedDict):
    """A grant (`grant#<source>#<id>`) or a clawback (`clawback#<source>#<id>`) in transactions."""

    transaction_id: str
    user_id: str
    kind: Literal["grant", "clawback"]
    source: str
    credits: int
    status: Literal["completed"]
    balance_after: int
    created_at: str
    completed_at: str
    amount: NotRequired[int]  # grants: cents paid (0 unless a paid allowance)
    currency: NotRequired[str]
    purchased: NotRequired[bool]  # grants: counted in total_credits_purchased
    metadata: NotRequired[dict[str, Any] | None]


class PurchaseCompletion(TypedDict):
    """What completing a purchase sets on its transactions row (billing owns the rest of it)."""

    kind: Literal["purchase"]
    user_id: str
    credits: int
    amount: int
    currency: str
    status: Literal["completed"]
    completed_at: str
    balance_after: int


class ChargeGuardRow(TypedDict):
    """`charge#<user>#<request_id>` in reservations: makes a charge happen at most once."""

    reservation_id: str
    kind: Literal["charge"]
    user_id: str
    state: Literal["charged"]
    amount: int
    credits_used: int
    balance_after: int
    usage_timestamp: str  # the usage row's key, so a replay returns it
    request_id: str
    service_type: str
    created_at: str
    expires_at_epoch: int  # closed when written: it expires (CLOSED_RESERVATION_TTL_SECONDS)


class ReservationRow(TypedDict):
    """A hold in reservations, as reserve writes it. extend adds `extensions` and
    `extended_balance_after`; settle/release add `credits_used`, `credits_refunded`,
    `closed_balance_after`, `<state>_at`, `expires_at_epoch` and `usage_timestamp` or
    `release_reason`."""

    reservation_id: str
    kind: Literal["reservation"]
    user_id: str
    amount: int
    state: str  # held -> settled | released
    held_shard: str  # the sparse held-index's key, removed when the hold closes
    created_at: str
    expires_at: str
    purpose: str
    ref_id: str
    slot: str | None
    counts_held: bool  # its amount is in the user's credits_held
    balance_after: int


class UsageRow(TypedDict):
    """One use of the service, keyed by `<ISO time>#<unique>` under the user."""

    user_id: str
    timestamp: str
    service_type: str | None
    credits_used: int
    balance_after: int
    metadata: dict[str, Any] | None
    request_id: NotRequired[str]  # a charge
    reservation_id: NotRequired[str]  # a settled reservation
    ref_id: NotRequired[str | None]


@dataclass(frozen=True)
class Held:
    """The immutable facts of a held reservation that settle/release need to build their write."""

    reservation_id: str
    user_id: str
    amount: int
    slot: str | None
    ref_id: str | None
    balance_after: int  # after its latest reserve/extend: the guess for closing it
    counts_held: bool = False  # reserved since credits_held exists: closing it moves credits_held

    @classmethod
    def of(cls, item: Mapping[str, Any]) -> Held:
        latest_balance = item.get("extended_balance_after", item.get("balance_after"))
        return cls(item["reservation_id"], item["user_id"], int(item["amount"]), item.get("slot"),
                   item.get("ref_id"), int(latest_balance or 0), bool(item.get("counts_held")))


@dataclass(frozen=True)
class UserChange:
    """What an operation does to the user item besides writing its records."""

    delta: int  # signed change of credits_balance
    required: int | None = None  # the balance must cover this
    spend: bool = False  # a use of the service: refused while the account is suspended
    usage: int = 0  # added to total_usage
    purchased: int = 0  # added to total_credits_purchased
    slot: str | None = None  # a per-user counter moved by `slot_step`
    slot_step: int = 0
    slot_max: int | None = None  # reserve: the counter must be below this
    held: int = 0  # added to credits_held (reserve/extend +, settle/release -)


# --- the user item ---------------------------------------------------------------------


def user_update(user_id: str, change: UserChange, expected: int) -> dict[str, Any]:
    """The balance moves only from exactly `expected` (commit.py), by `change.delta`."""
    add = {"credits_balance": change.delta, "ledger_seq": 1}
    names = {"#balance": "credits_balance"}
    values: dict[str, Any] = {":expected": expected}
    conditions = ["#balance = :expected"]
    if change.required is not None:
        conditions.append("#balance >= :required")
        values[":required"] = change.required
    if change.spend:
        names["#status"] = "status"
        conditions.append("(attribute_not_exists(#status) OR #status <> :suspended)")
        values[":suspended"] = SUSPENDED
    for attribute, amount in (("total_usage", change.usage), ("total_credits_purchased", change.purchased),
                              ("credits_held", change.held)):
        if amount:
            add[attribute] = amount
    if change.slot:
        add[change.slot] = change.slot_step
        if change.slot_max is not None:
            names["#slot"] = change.slot
            conditions.append("(attribute_not_exists(#slot) OR #slot < :slot_max)")
            values[":slot_max"] = change.slot_max
    return {"Update": update(USERS, {"user_id": user_id}, add=add, condition=" AND ".join(conditions),
                             names=names, values=values, return_old_on_failure=True)}


def read_balance(user_id: str) -> int | None:
    """The stored balance (strongly consistent GetItem), None without an account."""
    response = store.ddb().get_item(
        TableName=store.table_name(USERS), Key=store.key(user_id=user_id),
        ProjectionExpression="credits_balance", ConsistentRead=True,
    )
    balance = (store.from_item(response.get("Item")) or {}).get("credits_balance")
    return balance if isinstance(balance, int) else None


def balance_item(user_id: str) -> dict[str, Any] | None:
    """The user item's balance and totals (one consistent GetItem)."""
    response = store.ddb().get_item(
        TableName=store.table_name(USERS),
        Key=store.key(user_id=user_id),
        ConsistentRead=True,
        ProjectionExpression="credits_balance, credits_held, subscription_tier, total_credits_purchased, "
                             "total_usage, is_active",
    )
    return store.from_item(response.get("Item"))


def ledger_state(user_id: str) -> dict[str, Any] | None:
    """credits_balance, credits_held and ledger_seq (one consistent GetItem)."""
    response = store.ddb().get_item(
        TableName=store.table_name(USERS), Key=store.key(user_id=user_id), ConsistentRead=True,
        ProjectionExpression="credits_balance, credits_held, ledger_seq",
    )
    return store.from_item(response.get("Item"))


# --- records written once --------------------------------------------------------------


def put_once(table: str, key_name: str, item: Mapping[str, Any]) -> dict[str, Any]:
    """A record Put that happens at most once and, when refused, returns what is there."""
    return {
        "Put": {
            "TableName": store.table_name(table),
            "Item": store.to_item(item),
            "ConditionExpression": "attribute_not_exists(#key)",
            "ExpressionAttributeNames": {"#key": key_name},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
    }


def signup_grant_record(user_id: str, credits: int, created_at: str) -> TransactionRow:
    """The transactions-table record that explains a new account's starting balance.

    Registration writes it in the same transaction as the user item (whose
    `credits_balance` starts at `credits`), so the invariant holds from the first moment.
    """
    return {
        "transaction_id": f"{GRANT}#{SIGNUP}#{user_id}",
        "user_id": user_id,
        "kind": GRANT,
        "source": SIGNUP,
        "credits": credits,
        "amount": 0,
        "currency": "usd",
        "status": COMPLETED,
        "balance_after": credits,
        "created_at": created_at,
        "completed_at": created_at,
    }


def signup_grant_put(user_id: str, credits: int, created_at: str) -> dict[str, Any]:
    return put_once(TRANSACTIONS, "transaction_id", signup_grant_record(user_id, credits, created_at))


def grant_items(balance_after: int, *, transaction_id: str, user_id: str, source: str, credits: int,
                amount: int, currency: str, purchased: bool, metadata: dict[str, Any] | None,
                now: str) -> list[dict[str, Any]]:
    row: TransactionRow = {
        "transaction_id": transaction_id, "user_id": user_id, "kind": GRANT, "source": source,
        "credits": credits, "amount": amount, "currency": currency, "status": COMPLETED,
        "purchased": purchased, "balance_after": balance_after, "metadata": metadata,
        "created_at": now, "completed_at": now,
    }
    sold = [stats.credits_item(stats.CREDITS_SOLD, credits)] if purchased else []
    return [put_once(TRANSACTIONS, "transaction_id", row), *sold]


def clawback_items(balance_after: int, *, transaction_id: str, user_id: str, source: str, credits: int,
                   metadata: dict[str, Any] | None, now: str) -> list[dict[str, Any]]:
    row: TransactionRow = {
        "transaction_id": transaction_id, "user_id": user_id, "kind": CLAWBACK, "source": source,
        "credits": credits, "status": COMPLETED, "balance_after": balance_after, "metadata": metadata,
        "created_at": now, "completed_at": now,
    }
    return [put_once(TRANSACTIONS, "transaction_id", row)]


def purchase_items(balance_after: int, *, transaction_id: str, user_id: str, credits: int, amount: int,
                   currency: str, stripe_fields: Mapping[str, Any], now: str) -> list[dict[str, Any]]:
    """Complete the purchase row from any state but `completed` (created if missing)."""
    completion: PurchaseCompletion = {
        "kind": PURCHASE, "user_id": user_id, "credits": credits, "amount": amount, "currency": currency,
        "status": COMPLETED, "completed_at": now, "balance_after": balance_after,
    }
    return [{"Update": update(
        TRANSACTIONS, {"transaction_id": transaction_id},
        set={**completion, **stripe_fields},
        set_if_absent={"created_at": now, "source": PURCHASE},
        condition="attribute_not_exists(#tid) OR (#status <> :completed AND #uid = :uid)",
        names={"#tid": "transaction_id", "#status": "status", "#uid": "user_id"},
        values={":completed": COMPLETED, ":uid": user_id},
        return_old_on_failure=True,
    )}, stats.credits_item(stats.CREDITS_SOLD, credits)]


# --- charges ---------------------------------------------------------------------------


def usage_key(suffix: str) -> str:
    """`<ISO time>#<unique>`: time-ordered, and two rows in one millisecond never collide."""
    return f"{store.iso()}#{suffix}"


def charge_guard_id(user_id: str, request_id: str) -> str:
    return f"charge#{user_id}#{request_id}"


def closed_expiry(now: str) -> int:
    """When a reservation closed at `now` (ISO) expires: an epoch second, for the TTL."""
    from datetime import datetime

    return int(datetime.fromisoformat(now.replace("Z", "+00:00")).timestamp()) + CLOSED_RESERVATION_TTL_SECONDS


def charge_items(balance_after: int, *, user_id: str, request_id: str, cost: int, service_type: str,
                 usage_timestamp: str, metadata: dict[str, Any] | None, now: str) -> list[dict[str, Any]]:
    """The guard (first: a replay is refused there), the usage row and the day's credits used."""
    guard: ChargeGuardRow = {
        "reservation_id": charge_guard_id(user_id, request_id), "kind": "charge", "user_id": user_id,
        "state": CHARGED, "amount": cost, "credits_used": cost, "balance_after": balance_after,
        "usage_timestamp": usage_timestamp, "request_id": request_id, "service_type": service_type,
        "created_at": now, "expires_at_epoch": closed_expiry(now),
    }
    usage: UsageRow = {
        "user_id": user_id, "timestamp": usage_timestamp, "service_type": service_type,
        "credits_used": cost, "balance_after": balance_after, "metadata": metadata, "request_id": request_id,
    }
    return [put_once(RESERVATIONS, "reservation_id", guard), put_once(USAGE, "timestamp", usage),
            stats.credits_item(stats.CREDITS_USED, cost)]


# --- reservations ----------------------------------------------------------------------


def held_shard(reservation_id: str) -> str:
    digest = hashlib.sha256(reservation_id.encode("utf-8")).digest()
    return str(int.from_bytes(digest[:4], "big") % HELD_SHARDS)


def held_shards() -> tuple[str, ...]:
    return tuple(str(shard) for shard in range(HELD_SHARDS))


@dataclass(frozen=True)
class Hold:
    """What reserve holds: everything in its reservation row but the balance after it."""

    reservation_id: str
    user_id: str
    amount: int
    created_at: str
    expires_at: str
    purpose: str
    ref_id: str
    slot: str | None

    def row(self, balance_after: int) -> ReservationRow:
        return {
            "reservation_id": self.reservation_id, "kind": "reservation", "user_id": self.user_id,
            "amount": self.amount, "state": HELD, "held_shard": held_shard(self.reservation_id),
            "created_at": self.created_at, "expires_at": self.expires_at, "purpose": self.purpose,
            "ref_id": self.ref_id, "slot": self.slot, "counts_held": True, "balance_after": balance_after,
        }


def reserve_items(balance_after: int, *, hold: Hold) -> list[dict[str, Any]]:
    return [put_once(RESERVATIONS, "reservation_id", hold.row(balance_after))]


def extend_items(balance_after: int, *, reservation_id: str, user_id: str, amount: int, step: int,
                 expires_at: str) -> list[dict[str, Any]]:
    """Add `amount` to a held reservation that has exactly `step` extensions (so once per step)."""
    values: dict[str, Any] = {":held": HELD, ":uid": user_id}
    if step == 0:
        extensions = "attribute_not_exists(#ext)"
    else:
        extensions = "#ext = :step"
        values[":step"] = step
    return [{"Update": update(
        RESERVATIONS, {"reservation_id": reservation_id},
        set={"extensions": step + 1, "expires_at": expires_at, "extended_balance_after": balance_after},
        add={"amount": amount},
        condition=f"#state = :held AND #uid = :uid AND {extensions}",
        names={"#state": "state", "#uid": "user_id", "#ext": "extensions"},
        values=values,
        return_old_on_failure=True,
    )}]


def close_items(balance_after: int, *, held: Held, state: str, credits_used: int, service_type: str | None,
                metadata: dict[str, Any] | None, reason: str | None, usage_timestamp: str,
                now: str) -> list[dict[str, Any]]:
    """Move a held reservation to settled (with its usage row) or released, once.

    Conditional on the facts the caller built the write from (still held, same owner, same
    amount), so stale cached facts are refused rather than acted on.
    """
    refund = held.amount - credits_used
    closed: dict[str, Any] = {"state": state, "credits_used": credits_used, "credits_refunded": refund,
                              "closed_balance_after": balance_after, f"{state}_at": now,
                              "expires_at_epoch": closed_expiry(now)}
    if state == SETTLED:
        closed["usage_timestamp"] = usage_timestamp
    else:
        closed["release_reason"] = reason
    items = [{"Update": update(
        RESERVATIONS, {"reservation_id": held.reservation_id},
        set=closed,
        remove=["held_shard"],
        condition="#state = :held AND #uid = :uid AND #amount = :amount",
        names={"#state": "state", "#uid": "user_id", "#amount": "amount"},
        values={":held": HELD, ":uid": held.user_id, ":amount": held.amount},
        return_old_on_failure=True,
    )}]
    if state == SETTLED:
        usage: UsageRow = {
            "user_id": held.user_id, "timestamp": usage_timestamp, "service_type": service_type,
            "credits_used": credits_used, "balance_after": balance_after, "metadata": metadata,
            "reservation_id": held.reservation_id, "ref_id": held.ref_id,
        }
        items.append(put_once(USAGE, "timestamp", usage))
        if credits_used:
            items.append(stats.credits_item(stats.CREDITS_USED, credits_used))
    return items


def get_reservation(reservation_id: str) -> dict[str, Any] | None:
    """A reservation record (charge guards excluded: they share the table)."""
    item = store.get(RESERVATIONS, reservation_id=reservation_id)
    return item if item is not None and item.get("kind") == "reservation" else None


def iter_expired_held(before: str) -> Iterator[dict[str, Any]]:
    """Held reservations whose `expires_at` is before `before` (ISO), via the sparse held-index.

    The index is eventually consistent: a reservation listed here may have just been
    settled; `release` then simply returns its stored outcome.
    """
    for shard in held_shards():
        yield from store.query_all({
            "TableName": store.table_name(RESERVATIONS),
            "IndexName": "held-index",
            "KeyConditionExpression": "held_shard = :shard AND expires_at < :before",
            "ExpressionAttributeValues": store.values(shard=shard, before=before),
        })


def iter_user_held(user_id: str) -> Iterator[dict[str, Any]]:
    """The user's reservations still held (the reservations table's user_id-index)."""
    yield from store.query_all({
        "TableName": store.table_name(RESERVATIONS),
        "IndexName": "user_id-index",
        "KeyConditionExpression": "user_id = :user",
        "FilterExpression": "#state = :held",
        "ExpressionAttributeNames": {"#state": "state"},
        "ExpressionAttributeValues": store.values(user=user_id, held=HELD),
    })


# --- the invariant's reads -------------------------------------------------------------


def iter_user_transactions(user_id: str, since: str | None = None) -> Iterator[dict[str, Any]]:
    """The user's transactions rows (grants, purchases, clawbacks), by the user_id GSI; only
    those created at or after `since` (ISO), when given."""
    condition, values = "user_id = :user", {"user": user_id}
    if since is not None:
        condition, values = condition + " AND created_at >= :since", {**values, "since": since}
    yield from store.query_all({
        "TableName": store.table_name(TRANSACTIONS),
        "IndexName": "user_id-created_at-index",
        "KeyConditionExpression": condition,
        "ExpressionAttributeValues": store.values(**values),
    })


def get_transactions(transaction_ids: list[str]) -> list[dict[str, Any]]:
    """Transactions rows by id (consistent BatchGetItem, 100 a request); missing ones left out."""
    table, found = store.table_name(TRANSACTIONS), []
    for start in range(0, len(transaction_ids), 100):
        request: dict[str, Any] = {table: {"Keys": [store.key(transaction_id=i) for i in
                                                    transaction_ids[start:start + 100]], "ConsistentRead": True}}
        while request:
            response = store.ddb().batch_get_item(RequestItems=request)
            found += [store.from_item(item) for item in response.get("Responses", {}).get(table, [])]
            request = response.get("UnprocessedKeys") or {}
    return [item for item in found if item]


def iter_user_usage_credits(user_id: str, since: str | None = None) -> Iterator[dict[str, Any]]:
    """The user's usage rows, `timestamp` and `credits_used` only (consistent); only those
    at or after `since` (ISO), when given (a usage row's key starts with its ISO time)."""
    condition, values = "user_id = :user", {"user": user_id}
    if since is not None:
        condition, values = condition + " AND #ts >= :since", {**values, "since": since}
    yield from store.query_all({
        "TableName": store.table_name(USAGE),
        "KeyConditionExpression": condition,
        "ExpressionAttributeNames": {"#ts": "timestamp"},
        "ExpressionAttributeValues": store.values(**values),
        "ProjectionExpression": "#ts, credits_used",
        "ConsistentRead": True,
    })


class CheckpointRow(TypedDict):
    """`checkpoint#<user>` in transactions: the invariant's sums over the user's records older
    than `through` (ISO), so a check reads only what came after (invariant.py). No `user_id`
    attribute (the owner is `owner`): it stays out of the user_id GSI and out of the sums."""

    transaction_id: str
    kind: Literal["checkpoint"]
    owner: str
    through: str
    granted: int
    purchased: int
    clawed_back: int
    used: int
    open: list[str]  # transactions rows older than `through` not completed then: read again
    updated_at: str


def checkpoint_id(user_id: str) -> str:
    return f"{CHECKPOINT}#{user_id}"


def get_checkpoint(user_id: str) -> CheckpointRow | None:
    return store.get(TRANSACTIONS, transaction_id=checkpoint_id(user_id))  # type: ignore[return-value]


def put_checkpoint(row: CheckpointRow) -> bool:
    """Store a newer checkpoint; False when one at least as new is already there."""
    try:
        store.ddb().put_item(
            TableName=store.table_name(TRANSACTIONS), Item=store.to_item(row),
            ConditionExpression="attribute_not_exists(#through) OR #through < :through",
            ExpressionAttributeNames={"#through": "through"},
            ExpressionAttributeValues=store.values(through=row["through"]),
        )
    except store.ddb().exceptions.ConditionalCheckFailedException:
        return False
    return True


def delete_checkpoint(user_id: str) -> None:
    store.ddb().delete_item(TableName=store.table_name(TRANSACTIONS),
                            Key=store.key(transaction_id=checkpoint_id(user_id)))
