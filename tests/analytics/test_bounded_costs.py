"""GET /analytics/costs reads only day items: a bounded number of requests, the same figures.

The figures are compared with a report computed here, independently, from the raw events a
random workload recorded (provider calls on random days, in random order; purchases,
subscriptions and refunds in several currencies; credits sold and used), and the old
layout's items are copied by `stats.migrate_legacy_days` into the same report.
"""
from __future__ import annotations

import json
import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.aws import expressions, store
from chalicelib.credits import stats
from tests.analytics.conftest import KNOWN_PRICES, get_json, top_users

MAX_REQUESTS = 40  # issue 17: a year's report, whatever the number of users
PRICE_MICRO = {  # KNOWN_PRICES in micro-USD per unit
    "assemblyai_streaming_seconds": 100, "assemblyai_transcribe_seconds": 50,
    "openai_prompt_tokens": 1, "openai_completion_tokens": 2,
}
ASSEMBLYAI = ("assemblyai_streaming_seconds", "assemblyai_transcribe_seconds")
SERVICES = {"live": ("assemblyai_streaming_seconds",), "ask": ("openai_prompt_tokens", "openai_completion_tokens"),
            "catchup": ("assemblyai_transcribe_seconds", "openai_prompt_tokens", "openai_completion_tokens")}


def _at(days_ago: int) -> datetime:
    now = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    return now - timedelta(days=days_ago)


def _costs(client, token: str, days: int) -> dict:
    status, body = get_json(client, f"/analytics/costs?days={days}", token)
    assert status == 200, body
    return body


def _requests_of(action) -> list[str]:
    """The DynamoDB operations the app's client makes while `action` runs."""
    calls: list[str] = []
    events = store.ddb().meta.events
    events.register("before-call.dynamodb", lambda model, **_: calls.append(model.name), unique_id="bounded-costs")
    try:
        action()
    finally:
        events.unregister("before-call.dynamodb", unique_id="bounded-costs")
    return calls


# --- a workload and the report it should give ---------------------------------------------------


def _workload(seed: int, users: int, days: int) -> list[tuple]:
    """Random events on the last `days` days, in random order (so later days are often recorded
    before earlier ones: a user's latest day must only move forward)."""
    rng = random.Random(seed)
    people = [f"u{seed}-{n:03d}" + "x" * 24 for n in range(users)]
    events: list[tuple] = []
    for user in people:
        for _ in range(rng.randint(0, 6)):
            service = rng.choice(sorted(SERVICES))
            measured = {name: rng.randint(1, 900) for name in SERVICES[service]}
            events.append(("usage", user, service, rng.randrange(days), measured, rng.randint(1, 3)))
        for _ in range(rng.randint(0, 2)):
            kind = rng.choice((stats.PURCHASES, stats.SUBSCRIPTIONS, stats.REFUNDS))
            events.append(("revenue", user, kind, rng.randint(1, 5000), rng.choice(("usd", "usd", "eur")),
                           rng.randrange(days)))
    for _ in range(rng.randint(1, 8)):
        events.append(("credits", rng.choice((stats.CREDITS_SOLD, stats.CREDITS_USED)), rng.randint(1, 900),
                       rng.randrange(days)))
    rng.shuffle(events)
    return events


def _record(event: tuple) -> None:
    """An event the way the app records it (record_usage; the ledger's transaction items)."""
    if event[0] == "usage":
        _, user, service, days_ago, measured, calls = event
        assert stats.record_usage(user, service, calls=calls, at=_at(days_ago), **measured)
    elif event[0] == "revenue":
        _, user, kind, amount, currency, days_ago = event
        store.ddb().transact_write_items(TransactItems=stats.revenue_items(user, kind, amount, currency, _at(days_ago)))
    else:
        _, kind, credits, days_ago = event
        store.ddb().transact_write_items(TransactItems=[stats.credits_item(kind, credits, _at(days_ago))])


def _record_as_before(event: tuple) -> None:
    """An event the way the code before the `days#<n>` layout recorded it (its items, its keys)."""
    def add(key, adds, sets=None):
        store.ddb().update_item(**expressions.update(stats.TABLE, key, add=adds, set=sets or {}))

    shard = random.randrange(4)
    if event[0] == "usage":
        _, user, service, days_ago, measured, calls = event
        day = stats.day_of(_at(days_ago))
        add({"stat_key": f"day#{day}#{shard}", "shard": "usage"},
            {**{f"{service}__{k}": v for k, v in measured.items()}, f"{service}__calls": calls})
        add({"stat_key": f"users#{day}#{stats.user_shard(user)}", "shard": user}, {**measured, "calls": calls},
            {"user_id": user, "last_epoch": store.epoch()})
    elif event[0] == "revenue":
        _, user, kind, amount, currency, days_ago = event
        day = stats.day_of(_at(days_ago))
        add({"stat_key": f"day#{day}#{shard}", "shard": "revenue"},
            {f"{kind}__{currency}": amount, f"{kind}__count": 1})
        add({"stat_key": f"users#{day}#{stats.user_shard(user)}", "shard": user},
            {f"{stats.USER_ATTRIBUTE[kind]}__{currency}": amount}, {"user_id": user})
    else:
        _, kind, credits, days_ago = event
        add({"stat_key": f"day#{stats.day_of(_at(days_ago))}#{shard}", "shard": "credits"}, {kind: credits})


def _expected(events: list[tuple], days: int) -> dict:
    """The report's figures for the last `days` days, computed from the events alone."""
    dates = [stats.day_of(_at(n)) for n in range(days - 1, -1, -1)]
    daily = {d: {"date": d, "revenue": 0, "refunds": 0, "credits_sold": 0, "credits_used": 0, "provider_cost": 0,
                 "assemblyai": 0, "openai": 0, "margin": 0, "active_users": 0, "calls": 0} for d in dates}
    active: dict[str, set] = defaultdict(set)
    money = defaultdict(lambda: {stats.PURCHASES: 0, stats.SUBSCRIPTIONS: 0, stats.REFUNDS: 0})
    counts = {stats.PURCHASES: 0, stats.SUBSCRIPTIONS: 0, stats.REFUNDS: 0}
    by_service: dict[str, dict] = {}
    credits = {"sold": 0, "used": 0}
    for event in events:
        day = stats.day_of(_at(event[-1] if event[0] != "usage" else event[3]))
        if day not in daily:
            continue
        if event[0] == "usage":
            _, user, service, _, measured, calls = event
            entry = by_service.setdefault(service, {"calls": 0, **{m: 0 for m in PRICE_MICRO}, "provider_cost": 0,
                                                    "assemblyai": 0, "openai": 0})
            entry["calls"] += calls
            daily[day]["calls"] += calls
            active[day].add(user)
            for metric, quantity in measured.items():
                cost = quantity * PRICE_MICRO[metric]
                provider = "assemblyai" if metric in ASSEMBLYAI else "openai"
                entry[metric] += quantity
                for target in (entry, daily[day]):
                    target[provider] += cost
                    target["provider_cost"] += cost
        elif event[0] == "revenue":
            _, _, kind, amount, currency, _ = event
            money[currency][kind] += amount
            counts[kind] += 1
            if currency == "usd":
                daily[day]["revenue"] += -amount if kind == stats.REFUNDS else amount
                daily[day]["refunds"] += amount if kind == stats.REFUNDS else 0
        else:
            _, kind, amount, _ = event
            credits[kind] += amount
            daily[day][f"credits_{kind}"] += amount
    for day, entry in daily.items():
        entry["active_users"] = len(active[day])
        entry["margin"] = entry["revenue"] * 10_000 - entry["provider_cost"]
    usd = money.pop("usd", {stats.PURCHASES: 0, stats.SUBSCRIPTIONS: 0, stats.REFUNDS: 0})
    net = lambda m: m[stats.PURCHASES] + m[stats.SUBSCRIPTIONS] - m[stats.REFUNDS]  # noqa: E731
    revenue = {"purchases": usd[stats.PURCHASES], "subscriptions": usd[stats.SUBSCRIPTIONS],
               "refunds": usd[stats.REFUNDS], "total": net(usd), "currency": "usd",
               **{f"{kind}_count": counts[kind] for kind in counts}}
    if money:
        revenue["other_currencies"] = {
            c: {"purchases": m[stats.PURCHASES], "subscriptions": m[stats.SUBSCRIPTIONS],
                "refunds": m[stats.REFUNDS], "total": net(m)} for c, m in sorted(money.items())}
    provider = {k: sum(e[k] for e in daily.values()) for k in ("assemblyai", "openai", "provider_cost")}
    return {"daily": list(daily.values()), "active_users": len(set().union(*active.values())), "revenue": revenue,
            "credits": credits, "by_service": by_service, "provider": provider,
            "margin": revenue["total"] * 10_000 - provider["provider_cost"]}


def _assert_report(body: dict, expected: dict) -> None:
    assert body["daily"] == expected["daily"]
    assert body["active_users"] == expected["active_users"]
    assert body["revenue"] == expected["revenue"]
    assert body["credits"] == expected["credits"]
    assert {k: body["provider_costs"][k] for k in ("assemblyai", "openai")} == {
        k: expected["provider"][k] for k in ("assemblyai", "openai")}
    assert body["provider_costs"]["total"] == expected["provider"]["provider_cost"]
    assert body["margin"]["amount"] == expected["margin"]
    for service, figures in expected["by_service"].items():
        assert body["by_service"][service] == figures, service


# --- the tests -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2])
def test_the_report_from_day_items_equals_the_report_from_the_raw_events(client, admin, prices, seed):
    operator = admin()
    events = _workload(seed, users=25, days=40)
    for event in events:
        _record(event)
    for days in (1, 7, 30, 40):
        _assert_report(_costs(client, operator["token"], days), _expected(events, days))
    # the drill-down agrees with the report on who was active
    status, body = get_json(client, "/analytics/costs/top-users?days=40", operator["token"])
    assert status == 200 and body["active_users"] == _expected(events, 40)["active_users"]


def test_a_year_costs_the_same_few_requests_with_3_users_or_with_30(client, admin, prices):
    operator = admin()

    def report_requests() -> list[str]:
        return _requests_of(lambda: _costs(client, operator["token"], 365))

    def activity(users: range) -> None:
        for n in users:
            for days_ago in (0, 3, 40, 200, 364):
                stats.record_usage(f"user-{n:04d}" + "y" * 23, "ask", openai_prompt_tokens=n + 1, at=_at(days_ago))
                store.ddb().transact_write_items(
                    TransactItems=stats.revenue_items(f"user-{n:04d}" + "y" * 23, stats.PURCHASES, 299, "usd",
                                                      _at(days_ago)))

    activity(range(3))
    few = report_requests()
    activity(range(3, 30))
    many = report_requests()
    body = _costs(client, operator["token"], 365)
    assert body["active_users"] == 30 and body["revenue"]["purchases_count"] == 150
    assert [d["active_users"] for d in body["daily"] if d["active_users"]] == [30] * 5
    assert len(few) <= MAX_REQUESTS and len(many) <= MAX_REQUESTS
    # the same requests whatever the number of users: one Query per shard and one for the
    # days migrated from the old layout (besides the authorizer's account check, when its
    # cache has none)
    assert [name for name in few if name != "GetItem"] == [name for name in many if name != "GetItem"] == \
        ["Query"] * 5


def test_a_stage_upgraded_from_the_old_layout_reports_the_same_figures(client, admin, prices, env_override, capsys):
    """Before the deploy (days 30..2 ago, and the deploy day's morning) the old code wrote the
    old layout; from the deploy on, the new code; the migration runs the next day."""
    env_override(STATS_SHARDS="4")
    operator = admin()
    before = [e for e in _workload(7, users=20, days=30) if _days_ago(e) >= 1]
    after = [e for e in _workload(8, users=20, days=2) if _days_ago(e) <= 1]
    veteran = next(event[1] for event in before if event[0] == "usage")
    shared = [("usage", veteran, "ask", 1, {"openai_prompt_tokens": 5}, 1),
              ("usage", veteran, "live", 0, {"assemblyai_streaming_seconds": 60}, 1)]
    for event in before:
        _record_as_before(event)
    for event in after + shared:  # a user active before the deploy is active after it too
        _record(event)
    from chalicelib.ops import admin as admin_command

    assert admin_command.main(["migrate-stats", "--stage", "local"]) == admin_command.EXIT_OK  # the operator's way
    counts = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert counts["days"] >= 20 and counts["users"] >= 15
    everything = before + after + shared
    for days in (1, 2, 7, 30):
        _assert_report(_costs(client, operator["token"], days), _expected(everything, days))
    assert stats.migrate_legacy_days() == counts | {"latest_moved": 0}  # again: nothing changes
    _assert_report(_costs(client, operator["token"], 30), _expected(everything, 30))
    assert top_users(client, operator["token"], days=30)  # the per-user items were never moved


def _days_ago(event: tuple) -> int:
    return event[3] if event[0] == "usage" else event[-1]


def test_a_users_latest_day_only_moves_forward(private_tables, env_override):
    env_override(**KNOWN_PRICES)
    user = "z" * 32
    for days_ago in (5, 9, 2, 7, 2, 30):
        assert stats.record_usage(user, "ask", openai_prompt_tokens=1, at=_at(days_ago))
    assert store.get(stats.TABLE, **stats.latest_key(user))["day"] == stats.day_of(_at(2))
    totals = stats.day_totals([stats.day_of(_at(n)) for n in range(30, -1, -1)])
    assert {day: t.latest_users for day, t in totals.items() if t.latest_users} == {stats.day_of(_at(2)): 1}
    assert sorted(day for day, t in totals.items() if t.active_users) == sorted(
        stats.day_of(_at(n)) for n in (5, 9, 2, 7, 30))
