"""Analytics: where a user's credits went, and whether the business makes money.

`GET /analytics/usage` (any user, their own figures) is ONE Query over the user's usage
rows since the first day of the period (the usage table's key is user_id + timestamp, and
the timestamp starts with an ISO time, so a key condition `timestamp >= <day>` selects
exactly the period) plus one GetItem for the balance. Never a Scan.

`GET /analytics/costs` (admins only) never reads the usage table, nor anything per user: it
adds up the daily counters that `chalicelib.credits.stats` maintains as the usage and the
money happen, STATS_SHARDS + 1 Queries for any period up to a year, whatever the number of
users. Who costs the most is `GET /analytics/costs/top-users`: it sums each active user's
daily items, so it reads one item per user and day of the period (one Query per day and
shard): a drill-down, paid for when asked.

Money. Revenue is in cents (the smallest currency unit, as Stripe reports it) and net:
refunds and disputes (counted on the day the money went back) are subtracted from the
purchases and subscriptions, so the margin is what the business actually kept. Provider
costs are mostly fractions of a cent (a question costs about $0.0002), so they are
integers in micro-dollars (1 USD = 1,000,000 micro-USD): each figure is computed exactly
with Decimals from the measured quantities and the configured unit prices, then rounded
half-up to a whole micro-dollar. Every figure is rounded on its own, so a total may differ
from the sum of its rounded parts by a few micro-dollars. Prices are applied when the
report is read: changing a unit price re-prices the whole period shown.
"""
from __future__ import annotations

from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Mapping

from chalicelib.aws import store
from chalicelib.credits import ledger
from chalicelib.credits import stats
from chalicelib.core.errors import Forbidden, NotFound, Unauthorized, ValidationFailed
from chalicelib.core.settings import get_settings
from chalicelib.accounts.tokens import Identity
from chalicelib.core.validation import Field, Schema, validate

DEFAULT_DAYS = 30
MAX_DAYS = 365
RECENT_ROWS = 20
SERVICES = ("live", "catchup", "ask")
CURRENCY = "usd"  # provider prices are in US dollars; revenue in this currency makes the margin
MICRO = Decimal(1_000_000)
CENTS_PER_MICRO = Decimal(10_000)
RECENT_DETAILS = ("duration_minutes", "session_id", "job_id", "ask_id")

QUERY_SCHEMA = Schema(
    {"days": Field(str, min_length=1, max_length=3, pattern=r"[0-9]{1,3}")},
    allow_unknown=True,
    name="analytics",
)


def parse_days(params: Mapping[str, str] | None) -> int:
    """`days`: an integer from 1 to 365, 30 when absent; anything else is a 422."""
    raw = validate(QUERY_SCHEMA, dict(params or {}))["days"]
    if raw is None:
        return DEFAULT_DAYS
    days = int(raw)
    if not 1 <= days <= MAX_DAYS:
        raise ValidationFailed(f"'days' must be between 1 and {MAX_DAYS}", field="days")
    return days


def _period(days: int) -> tuple[list[str], dict[str, Any]]:
    dates = stats.days_back(days)
    return dates, {"days": days, "start": dates[0], "end": dates[-1], "timezone": "UTC"}


# --- user usage ----------------------------------------------------------------------------


def _empty_service() -> dict[str, int]:
    return {"credits_used": 0, "sessions": 0}


def _recent_row(row: Mapping[str, Any]) -> dict[str, Any]:
    metadata = row.get("metadata") if isinstance(row.get("metadata"), dict) else {}
    return {
        "timestamp": str(row["timestamp"]).split("#", 1)[0],
        "service": row.get("service_type"),
        "credits_used": int(row.get("credits_used") or 0),
        "balance_after": row.get("balance_after"),
        **{name: metadata[name] for name in RECENT_DETAILS if metadata.get(name) is not None},
    }


def usage(user_id: str, params: Mapping[str, str] | None) -> dict[str, Any]:
    """The caller's credits used in the last `days` days, by service and by day."""
    days = parse_days(params)
    dates, period = _period(days)
    rows = store.query_all({
        "TableName": store.table_name("usage"),
        "KeyConditionExpression": "user_id = :user AND #ts >= :start",
        "ExpressionAttributeNames": {"#ts": "timestamp"},
        "ExpressionAttributeValues": store.values(user=user_id, start=f"{dates[0]}T00:00:00.000Z"),
        "ProjectionExpression": "#ts, service_type, credits_used, balance_after, metadata",
        "ScanIndexForward": False,  # newest first: the first rows are the recent ones
        "ConsistentRead": True,
    })
    daily = {date: {"date": date, "credits_used": 0, "sessions": 0} for date in dates}
    by_service: dict[str, dict[str, int]] = {service: _empty_service() for service in SERVICES}
    recent: list[dict[str, Any]] = []
    total = sessions = 0
    for row in rows:
        credits = int(row.get("credits_used") or 0)
        service = str(row.get("service_type") or "other")
        bucket = by_service.setdefault(service, _empty_service())
        bucket["credits_used"] += credits
        bucket["sessions"] += 1
        day = daily.get(str(row["timestamp"])[:10])
        if day is not None:
            day["credits_used"] += credits
            day["sessions"] += 1
        total += credits
        sessions += 1
        if len(recent) < RECENT_ROWS:
            recent.append(_recent_row(row))
    try:
        balance = ledger.get_balance(user_id)["balance"]
    except NotFound:
        raise Unauthorized("Account no longer exists", code="account_not_found") from None
    return {
        "period": period,
        "days": days,
        "total_credits_used": total,
        "sessions": sessions,
        "by_service": by_service,
        "daily": list(daily.values()),
        "recent": recent,
        "balance": balance,
    }


# --- operator costs ------------------------------------------------------------------------


def _micro(quantity: Decimal, price: Decimal, per: int) -> Decimal:
    """Exact micro-dollars of `quantity` units at `price` dollars per `per` units."""
    return quantity * price * MICRO / per


def _round(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _cents(micro_usd: int) -> int:
    return _round(Decimal(micro_usd) / CENTS_PER_MICRO)


def _priced(measured: Mapping[str, Decimal]) -> dict[str, Decimal]:
    """Exact micro-dollars per provider for a set of measured quantities."""
    settings = get_settings()

    def get(name: str) -> Decimal:
        return measured.get(name, Decimal(0))

    assemblyai = (_micro(get("assemblyai_streaming_seconds"), settings.assemblyai_streaming_usd_per_hour, 3600)
                  + _micro(get("assemblyai_transcribe_seconds"), settings.assemblyai_transcribe_usd_per_hour, 3600))
    openai = (_micro(get("openai_prompt_tokens"), settings.openai_usd_per_1k_prompt_tokens, 1000)
              + _micro(get("openai_completion_tokens"), settings.openai_usd_per_1k_completion_tokens, 1000))
    return {"assemblyai": assemblyai, "openai": openai}


def _quantity(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


def _margin(revenue_cents: int, cost_micro: int) -> dict[str, Any]:
    amount = revenue_cents * int(CENTS_PER_MICRO) - cost_micro
    percent = None
    if revenue_cents > 0:
        percent = float((Decimal(amount) * 100 / (revenue_cents * CENTS_PER_MICRO)).quantize(Decimal("0.01")))
    return {"amount": amount, "amount_cents": _cents(amount), "percent": percent,
            "currency": CURRENCY, "unit": "micro_usd"}


def _net(values: Mapping[str, int]) -> int:
    """Money received less money given back (refunds, disputes)."""
    return sum(values[kind] for kind in stats.INCOME_KINDS) - values[stats.REFUNDS]


def _revenue(totals: Mapping[str, Decimal]) -> dict[str, Any]:
    """Revenue in cents for the report's currency, net of refunds and disputes (`total`);
    any other currency reported beside it."""
    amounts: dict[str, dict[str, int]] = defaultdict(lambda: {kind: 0 for kind in stats.REVENUE_KINDS})
    counts = {kind: 0 for kind in stats.REVENUE_KINDS}
    for name, value in totals.items():
        kind, _, suffix = name.partition("__")
        if kind not in stats.REVENUE_KINDS:
            continue
        if suffix == "count":
            counts[kind] += int(value)
        else:
            amounts[suffix][kind] += int(value)
    main = amounts.pop(CURRENCY, {kind: 0 for kind in stats.REVENUE_KINDS})
    report: dict[str, Any] = {
        "purchases": main[stats.PURCHASES],
        "subscriptions": main[stats.SUBSCRIPTIONS],
        "refunds": main[stats.REFUNDS],
        "total": _net(main),
        "currency": CURRENCY,
        "purchases_count": counts[stats.PURCHASES],
        "subscriptions_count": counts[stats.SUBSCRIPTIONS],
        "refunds_count": counts[stats.REFUNDS],
    }
    if amounts:
        report["other_currencies"] = {
            currency: {**values, "total": _net(values)} for currency, values in sorted(amounts.items())
        }
    return report


def _add(target: dict[str, Decimal], source: Mapping[str, Any]) -> None:
    for name, value in source.items():
        target[name] = target.get(name, Decimal(0)) + Decimal(str(value))


def _costs_block(measured: Mapping[str, Decimal]) -> dict[str, int]:
    priced = _priced(measured)
    return {
        "assemblyai": _round(priced["assemblyai"]),
        "openai": _round(priced["openai"]),
        "total": _round(priced["assemblyai"] + priced["openai"]),
    }


def _top_users(items: list[dict[str, Any]]) -> tuple[int, list[dict[str, Any]]]:
    """(distinct active users, the top users by provider cost) from the per-user day items."""
    per_user: dict[str, dict[str, Decimal]] = defaultdict(dict)
    revenue: dict[str, int] = defaultdict(int)
    for item in items:
        user_id = item.get("user_id") or item["shard"]
        if item.get(stats.CALLS):
            _add(per_user[user_id], {name: item.get(name) or 0 for name in (*stats.METRICS, stats.CALLS)})
        revenue[user_id] += (int(item.get(f"revenue__{CURRENCY}") or 0)
                             - int(item.get(f"{stats.REFUNDS}__{CURRENCY}") or 0))
    ranked = []
    for user_id, measured in per_user.items():
        priced = _priced(measured)
        cost = priced["assemblyai"] + priced["openai"]
        ranked.append((cost, user_id, measured))
    ranked.sort(key=lambda entry: (-entry[0], entry[1]))
    top = ranked[: get_settings().analytics_top_users]
    emails = _emails([user_id for _, user_id, _ in top])
    return len(per_user), [
        {
            "user_id": user_id,
            "email": emails.get(user_id),
            "provider_cost": _round(cost),
            "calls": int(measured.get(stats.CALLS, 0)),
            **{name: _quantity(measured.get(name, Decimal(0))) for name in stats.METRICS},
            "revenue": revenue.get(user_id, 0),
        }
        for cost, user_id, measured in top
    ]


def _emails(user_ids: list[str]) -> dict[str, str]:
    """The top users' emails, for the operator's eyes only (one BatchGetItem)."""
    if not user_ids:
        return {}
    table = store.table_name("users")
    response = store.ddb().batch_get_item(RequestItems={table: {
        "Keys": [store.key(user_id=user_id) for user_id in user_ids],
        "ProjectionExpression": "user_id, email",
    }})
    found = (store.from_item(item) for item in response.get("Responses", {}).get(table, []))
    return {item["user_id"]: item.get("email") for item in found if item}


def _admin_only(caller: Identity) -> None:
    if not caller.is_admin:
        raise Forbidden("Only administrators can see costs", code="forbidden")


def top_users(caller: Identity, params: Mapping[str, str] | None) -> dict[str, Any]:
    """The users with the highest provider cost over the last `days` days: admins only.

    Reads every per-user day item of the period (one Query per day and shard), so its cost
    grows with the active users; `costs` does not."""
    _admin_only(caller)
    dates, period = _period(parse_days(params))
    active_users, top = _top_users(stats.user_days(dates))
    return {"period": period, "active_users": active_users, "top_users": top}


def costs(caller: Identity, params: Mapping[str, str] | None) -> dict[str, Any]:
    """Revenue against provider costs over the last `days` days, from the day items only: admins only."""
    _admin_only(caller)
    settings = get_settings()
    days = parse_days(params)
    dates, period = _period(days)
    totals = stats.day_totals(dates)

    period_revenue: dict[str, Decimal] = {}
    period_usage: dict[str, dict[str, Decimal]] = defaultdict(dict)
    daily = []
    for date in dates:
        day = totals[date]
        _add(period_revenue, day.revenue)
        measured: dict[str, Decimal] = {}
        calls = 0
        for service, metrics in day.usage.items():
            _add(period_usage[service], metrics)
            _add(measured, {k: v for k, v in metrics.items() if k != stats.CALLS})
            calls += int(metrics.get(stats.CALLS, 0))
        revenue = _revenue(day.revenue)
        provider = _costs_block(measured)
        daily.append({
            "date": date,
            "revenue": revenue["total"],
            "refunds": revenue["refunds"],
            "credits_sold": day.credits.get(stats.CREDITS_SOLD, 0),
            "credits_used": day.credits.get(stats.CREDITS_USED, 0),
            "provider_cost": provider["total"],
            "assemblyai": provider["assemblyai"],
            "openai": provider["openai"],
            "margin": revenue["total"] * int(CENTS_PER_MICRO) - provider["total"],
            "active_users": day.active_users,
            "calls": calls,
        })

    by_service: dict[str, Any] = {}
    measured_total: dict[str, Decimal] = {}
    for service in sorted(set(SERVICES) | set(period_usage)):
        metrics = period_usage.get(service, {})
        quantities = {k: v for k, v in metrics.items() if k != stats.CALLS}
        _add(measured_total, quantities)
        cost = _costs_block(quantities)
        by_service[service] = {
            "calls": int(metrics.get(stats.CALLS, 0)),
            **{name: _quantity(metrics.get(name, Decimal(0))) for name in stats.METRICS},
            "provider_cost": cost["total"],
            "assemblyai": cost["assemblyai"],
            "openai": cost["openai"],
        }
    revenue = _revenue(period_revenue)
    provider_costs = {
        **_costs_block(measured_total),
        "currency": CURRENCY,
        "unit": "micro_usd",
        "usage": {name: _quantity(measured_total.get(name, Decimal(0))) for name in stats.METRICS},
    }
    provider_costs["total_cents"] = _cents(provider_costs["total"])
    return {
        "period": period,
        "credits": {"sold": sum(day["credits_sold"] for day in daily),
                    "used": sum(day["credits_used"] for day in daily)},
        "revenue": revenue,
        "provider_costs": provider_costs,
        "margin": _margin(revenue["total"], provider_costs["total"]),
        "by_service": by_service,
        "daily": daily,
        "active_users": sum(totals[date].latest_users for date in dates),  # distinct: see stats
        "unit_prices": {
            "assemblyai_streaming_usd_per_hour": str(settings.assemblyai_streaming_usd_per_hour),
            "assemblyai_transcribe_usd_per_hour": str(settings.assemblyai_transcribe_usd_per_hour),
            "openai_usd_per_1k_prompt_tokens": str(settings.openai_usd_per_1k_prompt_tokens),
            "openai_usd_per_1k_completion_tokens": str(settings.openai_usd_per_1k_completion_tokens),
        },
    }
