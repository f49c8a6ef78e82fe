"""Daily counters for operator analytics, kept as the usage and the money happen.

Why: the operator's cost view must never read the usage table (it grows with every
question asked). Instead every provider call adds what it measured (seconds of audio,
tokens) to a few counters per day, and every completed purchase or paid subscription
invoice adds its amount (and every refund or dispute the money given back), so `GET /analytics/costs` reads a handful of items per day.

Items in the `stats` table (`stat_key` is the partition key, `shard` the sort key):

    stat_key                 shard       what
    day#<YYYY-MM-DD>#<n>     usage       <service>__<metric>, <service>__calls
    day#<YYYY-MM-DD>#<n>     revenue     purchases__<currency>, purchases__count,
                                         subscriptions__<currency>, subscriptions__count,
                                         refunds__<currency>, refunds__count
    day#<YYYY-MM-DD>#<n>     credits     sold, used (credits, not money)
    users#<YYYY-MM-DD>#<m>   <user_id>   calls, <metric>, revenue__<currency>,
                                         refunds__<currency>, last_epoch

Sharding. Every write picks `n` at random from 0..STATS_SHARDS-1, and the shard is part of
the *partition* key, so one busy day spreads its atomic `ADD`s over STATS_SHARDS
partitions instead of queueing on one item (DynamoDB's per-partition write limit is what
a hot counter hits). A reader fetches all `n` of a day with one BatchGetItem and adds
them up. Usage and revenue live in separate items so that the revenue update, which rides
in the ledger's transaction, never conflicts with the far more frequent usage `ADD`s.

Per-user items are one per user and day (`m` is a stable hash of the user id, so the
users of a day are spread over STATS_SHARDS partitions too). They answer "who costs the
most" (sum each user's items over the period, sort) and "who was active", and they tell
the cleanup which users were touched recently. Reading them costs one Query per day and
shard, returning one small item per active user: proportional to user-days, never to
usage rows. STATS_SHARDS may be raised later but never lowered (counters in the higher
shards would no longer be read).

Exactness. Revenue counters are written inside the ledger transaction that moves the
credits (`revenue_items` as `extra_items`), so a Stripe retry that the ledger refuses
adds nothing: exactly once. Money given back (refunds, disputes) is its own kind, `refunds`,
kept apart from the gross amounts (the report subtracts it) and written the same way: in
the transaction that claws the credits back and advances the purchase row's applied
refund, so a redelivered refund event adds nothing. It counts on the day the money went
back, not on the day of the purchase. Usage counters are plain `UpdateItem ADD`s made right after a
provider call completes (`record_usage`); a provider call that happened is a cost even if
the request later failed, so they are recorded whatever happens to the credits. They are
best-effort: a failed write is logged and never fails the user's request.

Every item expires STATS_RETENTION_DAYS after its day (TTL attribute `expires_at_epoch`).
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

from chalicelib.aws import store
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


def _day_key(day: str, shard: int, item: str) -> dict[str, Any]:
    return store.key(stat_key=f"day#{day}#{shard}", shard=item)


def _user_key(day: str, user_id: str) -> dict[str, Any]:
    return store.key(stat_key=f"users#{day}#{user_shard(user_id)}", shard=user_id)


def _expires(day: str) -> int:
    start = datetime.fromisoformat(day).replace(tzinfo=timezone.utc)
    return int(start.timestamp()) + (get_settings().stats_retention_days + 1) * 86400


def _number(value: Any) -> Decimal:
    return Decimal(str(value)) if value is not None else Decimal(0)


# --- writes ---------------------------------------------------------------------------------


def _add_update(key: dict[str, Any], adds: Mapping[str, Any], sets: Mapping[str, Any]) -> dict[str, Any]:
    """One UpdateItem's arguments: ADD each counter, SET each plain attribute."""
    names: dict[str, str] = {}
    values: dict[str, Any] = {}
    add_parts, set_parts = [], []
    for index, (name, amount) in enumerate(adds.items()):
        names[f"#a{index}"] = name
        values[f":a{index}"] = store.to_attr(amount)
        add_parts.append(f"#a{index} :a{index}")
    for index, (name, value) in enumerate(sets.items()):
        names[f"#s{index}"] = name
        values[f":s{index}"] = store.to_attr(value)
        set_parts.append(f"#s{index} = :s{index}")
    expression = "ADD " + ", ".join(add_parts)
    if set_parts:
        expression += " SET " + ", ".join(set_parts)
    return {
        "TableName": store.table_name(TABLE),
        "Key": key,
        "UpdateExpression": expression,
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
    }


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

    Two `UpdateItem ADD`s: the day's usage item (a random shard) and the user's item of
    the day. Returns False when nothing was recorded (nothing measured, or a write
    failed); never raises, because the provider call already happened and the caller's
    request must not fail over analytics.
    """
    measured = {
        "assemblyai_streaming_seconds": assemblyai_streaming_seconds,
        "assemblyai_transcribe_seconds": assemblyai_transcribe_seconds,
        "openai_prompt_tokens": openai_prompt_tokens,
        "openai_completion_tokens": openai_completion_tokens,
    }
    measured = {name: _number(value) for name, value in measured.items() if value and value > 0}
    if not measured or not _NAME.fullmatch(service):
        return False
    try:
        day = day_of(at)
        expires = _expires(day)
        now = store.epoch()
        ddb = store.ddb()
        aggregate = {f"{service}__{name}": value for name, value in measured.items()}
        aggregate[f"{service}__{CALLS}"] = max(calls, 1)
        ddb.update_item(**_add_update(
            _day_key(day, random.randrange(_shards()), USAGE), aggregate,
            {"expires_at_epoch": expires},
        ))
        ddb.update_item(**_add_update(
            _user_key(day, user_id), {**measured, CALLS: max(calls, 1)},
            {"user_id": user_id, "last_epoch": now, "expires_at_epoch": expires},
        ))
    except Exception as error:  # noqa: BLE001 - analytics must never fail the request
        log_event(logger, "stats.record_failed", logging.WARNING, service=service,
                  error=type(error).__name__)
        return False
    return True


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
        {"Update": _add_update(
            _day_key(day, random.randrange(_shards()), REVENUE),
            {f"{kind}__{currency}": amount, f"{kind}__count": 1},
            {"expires_at_epoch": expires},
        )},
        {"Update": _add_update(
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
    return {"Update": _add_update(_day_key(day, random.randrange(_shards()), CREDITS),
                                  {kind: max(int(credits), 0)}, {"expires_at_epoch": _expires(day)})}


# --- reads ----------------------------------------------------------------------------------


@dataclass
class DayTotals:
    """The summed shards of one day: `usage[service][metric or "calls"]`, `revenue[name]`,
    `credits["sold" | "used"]`."""

    day: str
    usage: dict[str, dict[str, Decimal]]
    revenue: dict[str, Decimal]
    credits: dict[str, int] = field(default_factory=dict)


def _split(name: str) -> tuple[str, str] | None:
    head, sep, tail = name.partition("__")
    return (head, tail) if sep else None


def _batch_get(keys: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every existing item among `keys`, by BatchGetItem (retrying unprocessed keys)."""
    table = store.table_name(TABLE)
    items: list[dict[str, Any]] = []
    for start in range(0, len(keys), BATCH_GET_LIMIT):
        pending: dict[str, Any] = {table: {"Keys": list(keys[start:start + BATCH_GET_LIMIT])}}
        for round_number in range(MAX_BATCH_ROUNDS):
            response = store.ddb().batch_get_item(RequestItems=pending)
            items.extend(store.from_item(item) for item in response.get("Responses", {}).get(table, []))
            pending = response.get("UnprocessedKeys") or {}
            if not pending:
                break
            time.sleep(min(0.05 * 2 ** round_number, 1.0))
        else:
            raise RuntimeError("stats read throttled: unprocessed keys remain")
    return items  # type: ignore[return-value]


def day_totals(days: Sequence[str]) -> dict[str, DayTotals]:
    """Usage, revenue and credits of each day, every shard added up: 3 x STATS_SHARDS items a day."""
    shards = _shards()
    keys = [_day_key(day, n, item) for day in days for n in range(shards)
            for item in (USAGE, REVENUE, CREDITS)]
    totals = {day: DayTotals(day, {}, {}) for day in days}
    for item in _batch_get(keys):
        day = item["stat_key"].split("#")[1]
        if item["shard"] == CREDITS:
            for kind in (CREDITS_SOLD, CREDITS_USED):
                totals[day].credits[kind] = totals[day].credits.get(kind, 0) + int(item.get(kind) or 0)
            continue
        for name, value in item.items():
            parts = _split(name)
            if parts is None or not isinstance(value, (int, float)):
                continue
            if item["shard"] == USAGE:
                service, metric = parts
                bucket = totals[day].usage.setdefault(service, {})
                bucket[metric] = bucket.get(metric, Decimal(0)) + _number(value)
            elif item["shard"] == REVENUE:
                totals[day].revenue[name] = totals[day].revenue.get(name, Decimal(0)) + _number(value)
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
