"""Daily counters for operator analytics, kept as the usage and the money happen.

Why: the operator's cost view must never read the usage table (it grows with every
question asked), nor anything that grows with the users. Instead every provider call adds
what it measured (seconds of audio, tokens) to a few counters per day, and every completed
purchase or paid subscription invoice adds its amount (and every refund or dispute the money
given back), so `GET /analytics/costs` reads the day items of its period: one Query per
shard, whatever the number of users.

Items in the `stats` table (`stat_key` is the partition key, `shard` the sort key):

    stat_key          shard                  what
    days#<n>          <YYYY-MM-DD>#usage     <service>__<metric>, <service>__calls,
                                             active_users, latest_users
    days#<n>          <YYYY-MM-DD>#revenue   purchases__<currency>, purchases__count,
                                             subscriptions__<currency>, subscriptions__count,
                                             refunds__<currency>, refunds__count
    days#<n>          <YYYY-MM-DD>#credits   sold, used (credits, not money)
    users#<day>#<m>   <user_id>              calls, <metric>, revenue__<currency>,
                                             refunds__<currency>, last_epoch
    latest#<m>        <user_id>              day: the user's latest day with a provider call

Sharding. Every write to a day item picks `n` at random from 0..STATS_SHARDS-1, and the
shard is the *partition* key, so a busy day spreads its atomic `ADD`s over STATS_SHARDS
partitions instead of queueing on one item (DynamoDB's per-partition write limit is what a
hot counter hits). Within a partition the items sort by day, so a reader gets a whole
period with one Query per shard (`shard BETWEEN <first day> AND <last day>#~`; 365 days
of one shard are well under 1 MB: one page) and adds the shards up. Usage and revenue live
in separate items so that the revenue update, which rides in the ledger's transaction,
never conflicts with the far more frequent usage `ADD`s. STATS_SHARDS may be raised later
but never lowered (counters in the higher shards would no longer be read).

Users. The day's `active_users` counts the users with at least one provider call that day:
a call adds 1 when it finds the user's item of the day without calls (the first write of
the user's day returns the old values). Distinct users over a *period* cannot be added up
from days (a user active on two days would count twice), so each user's latest day with a
call is kept (`latest#<m>`, moved forward only, conditionally), and `latest_users` counts,
per day, the users whose latest day it is: moving a user from day P to day D adds 1 to D
and subtracts 1 from P. The distinct users of the last N days are then the sum of
`latest_users` over those days, exactly. Per-user day items are one per user and day (`m`
is a stable hash of the user id): they answer "who costs the most" (`GET
/analytics/costs/top-users`, which reads one item per active user and day) and tell the
cleanup which users were touched recently.

Exactness. Revenue counters are written inside the ledger transaction that moves the
credits (`revenue_items` as `extra_items`), so a Stripe retry that the ledger refuses
adds nothing: exactly once. Money given back (refunds, disputes) is its own kind, `refunds`,
kept apart from the gross amounts (the report subtracts it) and written the same way: in
the transaction that claws the credits back and advances the purchase row's applied
refund, so a redelivered refund event adds nothing. It counts on the day the money went
back, not on the day of the purchase. Usage counters are plain `UpdateItem`s made right
after a provider call completes (`record_usage`): two, or four on the user's first call of
the day; a provider call that happened is a cost even if the request later failed, so they
are recorded whatever happens to the credits. They are best-effort: a failed write is logged
and never fails the user's request.

Every item expires STATS_RETENTION_DAYS after its day (TTL attribute `expires_at_epoch`).
Day items of the layout before `days#<n>` (`day#<YYYY-MM-DD>#<n>`) are copied over by
`migrate_legacy_days` (docs/operations.md, "Migrations of deployed stages").
"""
from __future__ import annotations

import hashlib
import logging
import random
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Iterable, Mapping, Sequence

from chalicelib.aws import expressions, store
from chalicelib.core.logs import log_event
from chalicelib.core.settings import get_settings

logger = logging.getLogger(__name__)

TABLE = "stats"
USAGE, REVENUE, CREDITS = "usage", "revenue", "credits"
CREDITS_SOLD, CREDITS_USED = "sold", "used"
PURCHASES, SUBSCRIPTIONS, REFUNDS = "purchases", "subscriptions", "refunds"
INCOME_KINDS = (PURCHASES, SUBSCRIPTIONS)  # money received, gross
REVENUE_KINDS = (*INCOME_KINDS, REFUNDS)  # REFUNDS: money given back, subtracted when reported
# What a provider call can measure; the unit prices in settings price each of them.
METRICS = (
    "assemblyai_streaming_seconds",
    "assemblyai_transcribe_seconds",
    "openai_prompt_tokens",
    "openai_completion_tokens",
)
CALLS = "calls"
ACTIVE_USERS = "active_users"  # on a day's usage items: users with a provider call that day
LATEST_USERS = "latest_users"  # on a day's usage items: users whose latest day with a call it is
MIGRATED = "migrated"  # the day items' partition `days#migrated`: sums copied from the old layout
# The per-user item's money attribute for each kind: received money adds up in `revenue`.
USER_ATTRIBUTE = {PURCHASES: "revenue", SUBSCRIPTIONS: "revenue", REFUNDS: REFUNDS}
_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
_CURRENCY = re.compile(r"[a-z]{3}")
BATCH_GET_LIMIT = 100  # keys per BatchGetItem (a DynamoDB limit)
MAX_BATCH_ROUNDS = 8
READ_THREADS = 8


# --- keys ----------------------------------------------------------------------------------


def day_of(moment: datetime | None = None) -> str:
    """The UTC calendar day of a moment, `YYYY-MM-DD`."""
    return (moment or store.now()).astimezone(timezone.utc).strftime("%Y-%m-%d")


def days_back(count: int, today: date | None = None) -> list[str]:
    """The last `count` UTC days, oldest first, ending with today."""
    last = today or store.now().date()
    return [(last - timedelta(days=offset)).isoformat() for offset in range(count - 1, -1, -1)]


def _shards() -> int:
    return get_settings().stats_shards


def user_shard(user_id: str) -> int:
    digest = hashlib.sha256(user_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") % _shards()


def _day_key(day: str, shard: int | str, item: str) -> dict[str, str]:
    return {"stat_key": f"days#{shard}", "shard": f"{day}#{item}"}


def _user_key(day: str, user_id: str) -> dict[str, str]:
    return {"stat_key": f"users#{day}#{user_shard(user_id)}", "shard": user_id}


def latest_key(user_id: str) -> dict[str, str]:
    return {"stat_key": f"latest#{user_shard(user_id)}", "shard": user_id}


def _expires(day: str) -> int:
    start = datetime.fromisoformat(day).replace(tzinfo=timezone.utc)
    return int(start.timestamp()) + (get_settings().stats_retention_days + 1) * 86400


def _number(value: Any) -> Decimal:
    return Decimal(str(value)) if value is not None else Decimal(0)


# --- writes ---------------------------------------------------------------------------------


def _add(key: Mapping[str, str], adds: Mapping[str, Any], sets: Mapping[str, Any]) -> dict[str, Any]:
    """One UpdateItem's arguments: ADD each counter, SET each plain attribute."""
    return expressions.update(TABLE, key, add=adds, set=sets)


def record_usage(
    user_id: str,
    service: str,
    *,
    calls: int = 1,
    assemblyai_streaming_seconds: float = 0,
    assemblyai_transcribe_seconds: float = 0,
    openai_prompt_tokens: int = 0,
    openai_completion_tokens: int = 0,
    at: datetime | None = None,
) -> bool:
    """Add one completed provider call's measured usage to today's counters (or `at`'s day).

    `UpdateItem ADD`s: the user's item of the day, then the day's usage item (a random
    shard); on the user's first call of the day, the day also counts an active user and the
    user's latest day moves to it (`_move_latest`: two more writes). Returns False when
    nothing was recorded (nothing measured, or a write failed); never raises, because the
    provider call already happened and the caller's request must not fail over analytics.
    """
    measured = {
        "assemblyai_streaming_seconds": assemblyai_streaming_seconds,
        "assemblyai_transcribe_seconds": assemblyai_transcribe_seconds,
        "openai_prompt_tokens": openai_prompt_tokens,
        "openai_completion_tokens": openai_completion_tokens,
    }
    quantities = {name: _number(value) for name, value in measured.items() if value and value > 0}
    if not quantities or not _NAME.fullmatch(service):
        return False
    try:
        day = day_of(at)
        expires = _expires(day)
        ddb = store.ddb()
        before = ddb.update_item(
            **_add(_user_key(day, user_id), {**quantities, CALLS: max(calls, 1)},
                   {"user_id": user_id, "last_epoch": store.epoch(), "expires_at_epoch": expires}),
            ReturnValues="UPDATED_OLD",
        ).get("Attributes", {})
        aggregate: dict[str, Any] = {f"{service}__{name}": value for name, value in quantities.items()}
        aggregate[f"{service}__{CALLS}"] = max(calls, 1)
        moved_from = None
        if CALLS not in before:  # the user's first call of the day
            aggregate[ACTIVE_USERS] = 1
            moved, moved_from = _move_latest(user_id, day, expires)
            if moved:
                aggregate[LATEST_USERS] = 1
        ddb.update_item(**_add(_day_key(day, random.randrange(_shards()), USAGE), aggregate,
                               {"expires_at_epoch": expires}))
        if moved_from is not None:
            ddb.update_item(**_add(_day_key(moved_from, random.randrange(_shards()), USAGE), {LATEST_USERS: -1},
                                   {"expires_at_epoch": _expires(moved_from)}))
    except Exception as error:  # noqa: BLE001 - analytics must never fail the request
        log_event(logger, "stats.record_failed", logging.WARNING, service=service,
                  error=type(error).__name__)
        return False
    return True


def _move_latest(user_id: str, day: str, expires: int) -> tuple[bool, str | None]:
    """Make `day` the user's latest day with a call, unless a later one already is.

    Returns (moved, the previous latest day or None). Conditional, so of two first calls
    racing on different days the later day wins, and each move is counted once. A failure
    is logged and counts as no move: the day's usage counters are written all the same.
    """
    try:
        response = store.ddb().update_item(
            **expressions.update(TABLE, latest_key(user_id),
                                 set={"day": day, "user_id": user_id, "expires_at_epoch": expires},
                                 condition="attribute_not_exists(#day) OR #day < :day",
                                 names={"#day": "day"}, values={":day": day}),
            ReturnValues="UPDATED_OLD",
        )
    except store.ddb().exceptions.ConditionalCheckFailedException:
        return False, None
    except Exception as error:  # noqa: BLE001 - analytics must never fail the request
        log_event(logger, "stats.record_failed", logging.WARNING, service="latest", error=type(error).__name__)
        return False, None
    return True, (response.get("Attributes") or {}).get("day", {}).get("S")


def revenue_items(
    user_id: str, kind: str, amount: int, currency: str, at: datetime | None = None
) -> list[dict[str, Any]]:
    """Transaction items adding `amount` (smallest currency unit) to the day's revenue.

    For the ledger's `extra_items` (complete_purchase, the subscription grant, a refund's
    clawback): written in the very transaction that moves the credits, so exactly once per
    purchase, invoice or refund step. `kind=REFUNDS` counts money given back (a positive
    amount, subtracted by the report) under `refunds__<currency>` on the user's item too,
    instead of `revenue__<currency>`. No condition, and nothing here raises on odd input (a currency that is not a
    3-letter code is counted as `other`): they can never be the reason a grant fails.
    """
    if kind not in REVENUE_KINDS:
        raise ValueError(f"unknown revenue kind {kind!r}")  # a programming error, not input
    currency = str(currency or "").lower()
    if not _CURRENCY.fullmatch(currency):
        currency = "other"
    amount = max(amount, 0) if isinstance(amount, int) and not isinstance(amount, bool) else 0
    day = day_of(at)
    expires = _expires(day)
    return [
        {"Update": _add(
            _day_key(day, random.randrange(_shards()), REVENUE),
            {f"{kind}__{currency}": amount, f"{kind}__count": 1},
            {"expires_at_epoch": expires},
        )},
        {"Update": _add(
            _user_key(day, user_id), {f"{USER_ATTRIBUTE[kind]}__{currency}": amount},
            {"user_id": user_id, "last_epoch": store.epoch(), "expires_at_epoch": expires},
        )},
    ]


def credits_item(kind: str, credits: int, at: datetime | None = None) -> dict[str, Any]:
    """A transaction item adding `credits` to the day's credits sold or used.

    The ledger puts it in the transaction that sells (a completed purchase, a paid
    subscription allowance) or uses (a charge, a settlement) the credits, so a replay,
    refused by the ledger, adds nothing. No condition: it can never make a spend fail.
    """
    if kind not in (CREDITS_SOLD, CREDITS_USED):
        raise ValueError(f"unknown credits kind {kind!r}")  # a programming error, not input
    day = day_of(at)
    return {"Update": _add(_day_key(day, random.randrange(_shards()), CREDITS),
                           {kind: max(int(credits), 0)}, {"expires_at_epoch": _expires(day)})}


# --- reads ----------------------------------------------------------------------------------


@dataclass
class DayTotals:
    """The summed shards of one day: `usage[service][metric or "calls"]`, `revenue[name]`,
    `credits["sold" | "used"]`, the day's active users, and `latest_users` (the users whose
    latest day with a call is this one: summed over a period, its distinct users)."""

    day: str
    usage: dict[str, dict[str, Decimal]]
    revenue: dict[str, Decimal]
    credits: dict[str, int] = field(default_factory=dict)
    active_users: int = 0
    latest_users: int = 0
    migrated_active_users: int = 0  # migrate_legacy_days' count: see day_totals


def _split(name: str) -> tuple[str, str] | None:
    head, sep, tail = name.partition("__")
    return (head, tail) if sep else None


def _query_days(shard: int | str, first: str, last: str) -> list[dict[str, Any]]:
    """Every day item of one shard from day `first` to day `last`, in order."""
    return list(store.query_all({
        "TableName": store.table_name(TABLE),
        "KeyConditionExpression": "stat_key = :partition AND #sort BETWEEN :first AND :last",
        "ExpressionAttributeNames": {"#sort": "shard"},
        "ExpressionAttributeValues": store.values(partition=f"days#{shard}", first=first, last=f"{last}#~"),
    }))


def day_totals(days: Sequence[str]) -> dict[str, DayTotals]:
    """Usage, revenue, credits and users of each of `days` (consecutive, oldest first), every
    shard added up: one Query per shard (a second page only past 1 MB of one shard's items).

    A day copied from the old layout by `migrate_legacy_days` also has an item counting every
    user active that day; the day's new counter counts only users whose first call of the
    day came after the deploy, a subset of them, so the larger of the two is the day's count.
    """
    shards = [*range(_shards()), MIGRATED]
    totals = {day: DayTotals(day, {}, {}) for day in days}
    if not days:
        return totals
    with ThreadPoolExecutor(max_workers=min(READ_THREADS, len(shards))) as pool:
        pages = list(pool.map(lambda shard: _query_days(shard, days[0], days[-1]), shards))
    for item in (item for page in pages for item in page):
        day, _, kind = item["shard"].partition("#")
        if day not in totals:
            continue
        total = totals[day]
        if kind == CREDITS:
            for name in (CREDITS_SOLD, CREDITS_USED):
                total.credits[name] = total.credits.get(name, 0) + int(item.get(name) or 0)
            continue
        if kind == USAGE:
            active = int(item.get(ACTIVE_USERS) or 0)
            if item["stat_key"] == f"days#{MIGRATED}":
                total.migrated_active_users += active
            else:
                total.active_users += active
            total.latest_users += int(item.get(LATEST_USERS) or 0)
        for name, value in item.items():
            parts = _split(name)
            if parts is None or not isinstance(value, (int, float)):
                continue
            if kind == USAGE:
                service, metric = parts
                bucket = total.usage.setdefault(service, {})
                bucket[metric] = bucket.get(metric, Decimal(0)) + _number(value)
            elif kind == REVENUE:
                total.revenue[name] = total.revenue.get(name, Decimal(0)) + _number(value)
    for total in totals.values():
        total.active_users = max(total.active_users, total.migrated_active_users)
    return totals


def _query_users(day: str, shard: int, since_epoch: int | None) -> list[dict[str, Any]]:
    request: dict[str, Any] = {
        "TableName": store.table_name(TABLE),
        "KeyConditionExpression": "stat_key = :key",
        "ExpressionAttributeValues": store.values(key=f"users#{day}#{shard}"),
    }
    if since_epoch is not None:
        request["FilterExpression"] = "last_epoch >= :since"
        request["ExpressionAttributeValues"].update(store.values(since=since_epoch))
    items = []
    for item in store.query_all(request):
        item["day"] = day
        items.append(item)
    return items


def user_days(days: Iterable[str], since_epoch: int | None = None) -> list[dict[str, Any]]:
    """Every per-user item of `days` (with a `day` field), optionally only those touched
    at or after `since_epoch`. One Query per day and shard, run a few at a time."""
    work = [(day, shard) for day in days for shard in range(_shards())]
    if not work:
        return []
    with ThreadPoolExecutor(max_workers=min(READ_THREADS, len(work))) as pool:
        pages = pool.map(lambda job: _query_users(job[0], job[1], since_epoch), work)
        return [item for page in pages for item in page]


# --- from the layout before `days#<n>` ---------------------------------------------------------


def _batch_get(keys: Sequence[Mapping[str, str]]) -> list[dict[str, Any]]:
    """Every existing item among `keys`, by BatchGetItem (retrying unprocessed keys)."""
    table = store.table_name(TABLE)
    items: list[dict[str, Any]] = []
    for start in range(0, len(keys), BATCH_GET_LIMIT):
        pending: dict[str, Any] = {table: {"Keys": [store.key(**k) for k in keys[start:start + BATCH_GET_LIMIT]]}}
        for round_number in range(MAX_BATCH_ROUNDS):
            response = store.ddb().batch_get_item(RequestItems=pending)
            found = (store.from_item(item) for item in response.get("Responses", {}).get(table, []))
            items.extend(item for item in found if item)
            pending = response.get("UnprocessedKeys") or {}
            if not pending:
                break
            time.sleep(min(0.05 * 2 ** round_number, 1.0))
        else:
            raise RuntimeError("stats read throttled: unprocessed keys remain")
    return items


def migrate_legacy_days(until: date | None = None) -> dict[str, int]:
    """Copy the old layout's day items (`day#<YYYY-MM-DD>#<n>`, read by key) into the partition
    `days#migrated`, for every day of the retention before `until` (default today: a day is
    copied once it is over), count each day's active users from the per-user items, and give
    every user their latest day with a call.

    Run once after deploying the layout, on a later day than the deploy (the old code's last
    writes are then over); running it again is harmless: a day's copy is Put whole (the
    same sums), and a user's latest day only ever moves forward, counted in the transaction
    that moves it. Reads what the retention holds, one Query per day and shard: an operator
    command (`python -m chalicelib.ops.admin migrate-stats`), not a request path.
    """
    last = (until or store.now().date()) - timedelta(days=1)
    days = days_back(get_settings().stats_retention_days + 1, last)
    kinds = (USAGE, REVENUE, CREDITS)
    sums: dict[tuple[str, str], dict[str, Decimal]] = {}
    legacy = [{"stat_key": f"day#{day}#{n}", "shard": kind} for day in days for n in range(_shards())
              for kind in kinds]
    for item in _batch_get(legacy):
        copy = sums.setdefault((item["stat_key"].split("#")[1], item["shard"]), {})
        for name, value in item.items():
            if name not in ("stat_key", "shard", "expires_at_epoch") and isinstance(value, (int, float)):
                copy[name] = copy.get(name, Decimal(0)) + _number(value)
    latest: dict[str, str] = {}
    for item in user_days(days):
        if item.get(CALLS):
            copy = sums.setdefault((item["day"], USAGE), {})
            copy[ACTIVE_USERS] = copy.get(ACTIVE_USERS, Decimal(0)) + 1
            user_id = item.get("user_id") or item["shard"]
            latest[user_id] = max(latest.get(user_id, ""), item["day"])
    for (day, kind), values in sorted(sums.items()):
        store.ddb().put_item(TableName=store.table_name(TABLE), Item=store.to_item(
            {**_day_key(day, MIGRATED, kind), **values, "expires_at_epoch": _expires(day)}))
    moved = sum(_migrate_latest(user_id, day) for user_id, day in sorted(latest.items()))
    counts = {"days": len({day for day, _ in sums}), "items": len(sums), "users": len(latest), "latest_moved": moved}
    log_event(logger, "stats.migrated", **counts)
    return counts


def _migrate_latest(user_id: str, day: str, attempts: int = 5) -> bool:
    """Make `day` the user's latest day unless a later one is, moving the `latest_users`
    count with it in one transaction (conditional on the latest day as read)."""
    for _ in range(attempts):
        current = store.get(TABLE, consistent=True, **latest_key(user_id))
        previous = (current or {}).get("day")
        if previous is not None and previous >= day:
            return False
        items = [
            {"Update": expressions.update(
                TABLE, latest_key(user_id), set={"day": day, "user_id": user_id, "expires_at_epoch": _expires(day)},
                condition="attribute_not_exists(#day)" if previous is None else "#day = :previous",
                names={"#day": "day"}, values={} if previous is None else {":previous": previous})},
            {"Update": _add(_day_key(day, random.randrange(_shards()), USAGE), {LATEST_USERS: 1},
                            {"expires_at_epoch": _expires(day)})},
        ]
        if previous is not None:
            items.append({"Update": _add(_day_key(previous, random.randrange(_shards()), USAGE), {LATEST_USERS: -1},
                                         {"expires_at_epoch": _expires(previous)})})
        try:
            store.ddb().transact_write_items(TransactItems=items)
            return True
        except store.ddb().exceptions.TransactionCanceledException:
            continue  # the user's latest day moved meanwhile (a call): read it again
    raise RuntimeError(f"the latest day of user {user_id} keeps moving")
