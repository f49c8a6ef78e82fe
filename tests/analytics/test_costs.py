"""GET /analytics/costs: revenue against provider costs from the daily counters, admins only."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from chalicelib.aws import store
from chalicelib.credits import stats
from tests.analytics.conftest import KNOWN_PRICES, get_json, top_users
from tests.billing.conftest import deliver
from tests.conftest import at_once, post_json
from tests.billing.conftest import paid_checkout

PACK_CENTS = {"starter": 299, "popular": 999, "power": 1999}
BASIC_MONTHLY_CENTS = 499


def _at(days_ago: int, hour: int = 12) -> datetime:
    today = datetime.now(timezone.utc).replace(hour=hour, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days_ago)


def _day(days_ago: int) -> str:
    return _at(days_ago).date().isoformat()


def _costs(client, token: str, days: int = 7) -> dict:
    status, body = get_json(client, f"/analytics/costs?days={days}", token)
    assert status == 200, body
    return body


def test_costs_match_hand_computed_figures_with_known_unit_prices(client, admin, new_user, prices):
    operator = admin()
    alice = new_user()["user"]["user_id"]
    registered = new_user()
    bob, bob_token = registered["user"]["user_id"], registered["token"]
    # 3 days ago: Alice streams one hour (3600 s x 100 = 360,000), Bob asks twice
    # (1000 + 200 prompt tokens x 1, 300 + 100 completion tokens x 2 = 2,000).
    assert stats.record_usage(alice, "live", assemblyai_streaming_seconds=3600, at=_at(3))
    assert stats.record_usage(bob, "ask", openai_prompt_tokens=1000, openai_completion_tokens=300, at=_at(3))
    assert stats.record_usage(bob, "ask", openai_prompt_tokens=200, openai_completion_tokens=100, at=_at(3, 23))
    # 1 day ago: Bob's catch-up transcribes 600.5 s (x 50 = 30,025) and summarises
    # in 3 calls: 4000 prompt, 500 completion tokens (4,000 + 1,000 = 5,000).
    assert stats.record_usage(bob, "catchup", assemblyai_transcribe_seconds=600.5, at=_at(1))
    assert stats.record_usage(bob, "catchup", calls=3, openai_prompt_tokens=4000,
                              openai_completion_tokens=500, at=_at(1))
    # 20 days ago: outside a 7-day period.
    assert stats.record_usage(alice, "live", assemblyai_streaming_seconds=7200, at=_at(20))
    # Nothing measured: nothing recorded.
    assert not stats.record_usage(alice, "ask", openai_prompt_tokens=0, at=_at(2))

    body = _costs(client, operator["token"], days=7)
    assert body["period"] == {"days": 7, "start": _day(6), "end": _day(0), "timezone": "UTC"}
    assert body["provider_costs"] == {
        "assemblyai": 390_025, "openai": 7_000, "total": 397_025, "currency": "usd",
        "unit": "micro_usd", "total_cents": 40,
        "usage": {"assemblyai_streaming_seconds": 3600, "assemblyai_transcribe_seconds": 600.5,
                  "openai_prompt_tokens": 5200, "openai_completion_tokens": 900},
    }
    assert body["revenue"] == {"purchases": 0, "subscriptions": 0, "refunds": 0, "total": 0, "currency": "usd",
                               "purchases_count": 0, "subscriptions_count": 0, "refunds_count": 0}
    assert body["margin"] == {"amount": -397_025, "amount_cents": -40, "percent": None,
                              "currency": "usd", "unit": "micro_usd"}
    assert body["by_service"]["live"] == {
        "calls": 1, "assemblyai_streaming_seconds": 3600, "assemblyai_transcribe_seconds": 0,
        "openai_prompt_tokens": 0, "openai_completion_tokens": 0,
        "provider_cost": 360_000, "assemblyai": 360_000, "openai": 0,
    }
    assert body["by_service"]["ask"]["calls"] == 2 and body["by_service"]["ask"]["provider_cost"] == 2_000
    assert body["by_service"]["catchup"] == {
        "calls": 4, "assemblyai_streaming_seconds": 0, "assemblyai_transcribe_seconds": 600.5,
        "openai_prompt_tokens": 4000, "openai_completion_tokens": 500,
        "provider_cost": 35_025, "assemblyai": 30_025, "openai": 5_000,
    }
    daily = {day["date"]: day for day in body["daily"]}
    assert list(daily) == [_day(n) for n in range(6, -1, -1)]
    assert daily[_day(3)] == {"date": _day(3), "revenue": 0, "provider_cost": 362_000,
                              "assemblyai": 360_000, "openai": 2_000, "margin": -362_000,
                              "active_users": 2, "calls": 3, "refunds": 0, "credits_sold": 0,
                              "credits_used": 0}
    assert daily[_day(1)]["provider_cost"] == 35_025 and daily[_day(1)]["active_users"] == 1
    assert daily[_day(2)]["provider_cost"] == 0 and daily[_day(2)]["active_users"] == 0
    assert body["active_users"] == 2
    assert "top_users" not in body  # their own route: it reads per user
    top = top_users(client, operator["token"], days=7)
    assert [(u["user_id"], u["provider_cost"], u["calls"]) for u in top] == [(alice, 360_000, 1), (bob, 37_025, 6)]
    assert top[0]["assemblyai_streaming_seconds"] == 3600
    assert top[0]["email"].endswith("@example.com")
    assert body["unit_prices"]["assemblyai_streaming_usd_per_hour"] == "0.36"

    wide = _costs(client, operator["token"], days=30)
    assert wide["provider_costs"]["assemblyai"] == 390_025 + 720_000
    assert wide["active_users"] == 2 and wide["daily"][-21]["active_users"] == 1
    assert [u["user_id"] for u in top_users(client, operator["token"], days=30)] == [alice, bob]
    status, body = get_json(client, "/analytics/costs/top-users?days=7", bob_token)
    assert status == 403 and body["code"] == "forbidden"


def test_revenue_counts_each_completed_purchase_and_paid_invoice_once(
        client, admin, buyer, stripe_fake, tap, prices):
    operator = admin()
    user = buyer()
    paid_checkout(client, stripe_fake, user.token)
    completed = tap.one("checkout.session.completed")
    assert at_once(4, lambda: deliver(client, completed)[0]) == [200] * 4

    status, subscription = post_json(client, "/credits/subscribe", user.token, {"plan_id": "basic_monthly"})
    assert status == 200, subscription
    stripe_fake.pay(subscription["session_id"])
    for event in tap.take():
        if event["id"] != completed["id"]:
            assert deliver(client, event)[0] == 200
    for event in tap.take("invoice.paid"):  # Stripe retries: nothing more
        assert deliver(client, event)[0] == 200

    stats.record_usage(user.user_id, "ask", openai_prompt_tokens=10_000, openai_completion_tokens=5_000)
    body = _costs(client, operator["token"], days=1)
    assert body["revenue"] == {
        "purchases": PACK_CENTS["popular"], "subscriptions": BASIC_MONTHLY_CENTS, "refunds": 0,
        "total": PACK_CENTS["popular"] + BASIC_MONTHLY_CENTS, "currency": "usd",
        "purchases_count": 1, "subscriptions_count": 1, "refunds_count": 0,
    }
    cost = 10_000 * 1 + 5_000 * 2
    revenue_micro = (PACK_CENTS["popular"] + BASIC_MONTHLY_CENTS) * 10_000
    assert body["provider_costs"]["total"] == cost
    assert body["margin"]["amount"] == revenue_micro - cost
    assert body["margin"]["percent"] == round((revenue_micro - cost) * 100 / revenue_micro, 2)
    assert body["daily"][-1]["revenue"] == PACK_CENTS["popular"] + BASIC_MONTHLY_CENTS
    [top] = top_users(client, operator["token"])
    assert top["user_id"] == user.user_id and top["revenue"] == PACK_CENTS["popular"] + BASIC_MONTHLY_CENTS
    assert "other_currencies" not in body["revenue"]

    # revenue in another currency is reported beside the dollars, never added to them
    store.ddb().transact_write_items(TransactItems=stats.revenue_items(user.user_id, stats.PURCHASES, 700, "EUR"))
    store.ddb().transact_write_items(TransactItems=stats.revenue_items(user.user_id, stats.PURCHASES, 5, "€"))
    body = _costs(client, operator["token"], days=1)
    assert body["revenue"]["total"] == PACK_CENTS["popular"] + BASIC_MONTHLY_CENTS
    assert body["revenue"]["purchases_count"] == 3
    assert body["revenue"]["other_currencies"] == {
        "eur": {"purchases": 700, "subscriptions": 0, "refunds": 0, "total": 700},
        "other": {"purchases": 5, "subscriptions": 0, "refunds": 0, "total": 5},
    }
    # money given back in another currency is netted there, never from the dollars
    store.ddb().transact_write_items(TransactItems=stats.revenue_items(user.user_id, stats.REFUNDS, 200, "eur"))
    body = _costs(client, operator["token"], days=1)
    assert body["revenue"]["total"] == PACK_CENTS["popular"] + BASIC_MONTHLY_CENTS
    assert body["revenue"]["other_currencies"]["eur"] == {
        "purchases": 700, "subscriptions": 0, "refunds": 200, "total": 500}


def test_a_hot_day_spreads_over_the_shards_and_still_adds_up(client, admin, env_override):
    env_override(STATS_SHARDS="4", **KNOWN_PRICES)
    operator = admin()
    user_id = "h" * 32
    for _ in range(20):
        stats.record_usage(user_id, "ask", openai_prompt_tokens=1, openai_completion_tokens=1)
    shards = [store.get("stats", stat_key=f"days#{n}", shard=f"{_day(0)}#usage") for n in range(4)]
    assert sum(1 for item in shards if item) >= 2  # 20 writes all on one shard of 4: probability 4^-19
    assert sum(item["ask__calls"] for item in shards if item) == 20
    body = _costs(client, operator["token"], days=1)
    assert body["by_service"]["ask"]["calls"] == 20
    assert body["provider_costs"]["openai"] == 20 * 3


def test_costs_never_touch_the_usage_table(client, admin, private_tables):
    operator = admin()
    stats.record_usage("x" * 32, "live", assemblyai_streaming_seconds=10)
    calls: list[tuple[str, str]] = []

    def record(params, model, **_):
        calls.append((model.name, params.get("TableName", "") or ",".join(params.get("RequestItems", {}))))

    events = store.ddb().meta.events
    events.register("provide-client-params.dynamodb.*", record)
    try:
        _costs(client, operator["token"], days=30)
    finally:
        events.unregister("provide-client-params.dynamodb.*", record)
    assert not any(table.endswith("-usage") for _, table in calls)
    assert not any(name == "Scan" for name, _ in calls)
    # the day items: one Query per shard (4) and one for the days copied from the old layout
    assert [name for name, table in calls if table.endswith("-stats")] == ["Query"] * 5

    for days in ("0", "366", "x", ""):
        status, body = get_json(client, f"/analytics/costs?days={days}", operator["token"])
        assert status == 422 and body["code"] == "validation_error", (days, body)
