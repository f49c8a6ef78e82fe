"""GET /analytics/usage: the caller's own credits, by service and by day, from one Query."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

from chalicelib.aws import store
from chalicelib.credits import ledger
from tests.analytics.conftest import get_json

SIGNUP = 200


def _day(days_ago: int) -> str:
    return (datetime.now(timezone.utc).date() - timedelta(days=days_ago)).isoformat()


def _usage_row(user_id: str, timestamp: str, service: str, credits: int, **metadata) -> None:
    """A usage row on a past day, as the ledger writes it (the ledger itself only writes 'now')."""
    store.ddb().put_item(
        TableName=store.table_name("usage"),
        Item=store.to_item({
            "user_id": user_id, "timestamp": f"{timestamp}#{uuid.uuid4().hex}", "service_type": service,
            "credits_used": credits, "balance_after": 0, "metadata": metadata or None,
        }),
    )


def _spend_now(user_id: str, service: str, credits: int) -> None:
    """Today's usage the real way: reserve, then settle to the used amount."""
    reservation_id = f"{service}#{uuid.uuid4().hex}"
    ledger.reserve(user_id, credits + 3, reservation_id=reservation_id, purpose=service,
                   ref_id=uuid.uuid4().hex, ttl_seconds=600)
    result = ledger.settle(reservation_id, credits, service_type=service,
                           metadata={"duration_minutes": 2, "seconds": 61.5})
    assert result.credits_used == credits


def test_usage_matches_hand_computed_figures_over_several_days_and_services(client, new_user, private_tables):
    session = new_user()
    user_id, token = session["user"]["user_id"], session["token"]
    # 40 days ago: outside a 30-day period. 6 days ago at 00:00:00.000: the first instant of
    # a 7-day period. 7 days ago at 23:59:59.999: the last instant before it.
    _usage_row(user_id, f"{_day(40)}T12:00:00.000Z", "live", 100)
    _usage_row(user_id, f"{_day(7)}T23:59:59.999Z", "ask", 5)
    _usage_row(user_id, f"{_day(6)}T00:00:00.000Z", "live", 30, duration_minutes=3, seconds=150.25)
    _usage_row(user_id, f"{_day(3)}T10:00:00.000Z", "ask", 5, ask_id="a1")
    _usage_row(user_id, f"{_day(3)}T11:00:00.000Z", "catchup", 40, job_id="j1")
    _usage_row(user_id, f"{_day(1)}T09:30:00.000Z", "catchup", 20)
    _spend_now(user_id, "live", 20)
    _spend_now(user_id, "ask", 5)

    status, body = get_json(client, "/analytics/usage?days=7", token)
    assert status == 200, body
    assert body["period"] == {"days": 7, "start": _day(6), "end": _day(0), "timezone": "UTC"}
    # in the period: live 30 + 20, ask 5 + 5, catchup 40 + 20
    assert body["total_credits_used"] == 120
    assert body["sessions"] == 6
    assert body["by_service"] == {
        "live": {"credits_used": 50, "sessions": 2},
        "catchup": {"credits_used": 60, "sessions": 2},
        "ask": {"credits_used": 10, "sessions": 2},
    }
    assert body["daily"] == [
        {"date": _day(6), "credits_used": 30, "sessions": 1},
        {"date": _day(5), "credits_used": 0, "sessions": 0},
        {"date": _day(4), "credits_used": 0, "sessions": 0},
        {"date": _day(3), "credits_used": 45, "sessions": 2},
        {"date": _day(2), "credits_used": 0, "sessions": 0},
        {"date": _day(1), "credits_used": 20, "sessions": 1},
        {"date": _day(0), "credits_used": 25, "sessions": 2},
    ]
    assert body["balance"] == SIGNUP - 25  # only today's rows went through the ledger
    recent = body["recent"]
    assert [row["service"] for row in recent] == ["ask", "live", "catchup", "catchup", "ask", "live"]
    assert [row["credits_used"] for row in recent] == [5, 20, 20, 40, 5, 30]
    assert recent[2]["timestamp"] == f"{_day(1)}T09:30:00.000Z"
    assert recent[3]["job_id"] == "j1" and recent[4]["ask_id"] == "a1"
    assert recent[5]["duration_minutes"] == 3
    assert recent[0]["balance_after"] == SIGNUP - 25

    status, body = get_json(client, "/analytics/usage?days=60", token)
    assert status == 200
    assert body["total_credits_used"] == 225 and body["sessions"] == 8
    assert body["by_service"]["live"] == {"credits_used": 150, "sessions": 3}
    assert len(body["daily"]) == 60 and sum(day["credits_used"] for day in body["daily"]) == 225


def test_default_period_is_30_zero_filled_days_and_only_the_callers_rows_count(client, new_user, private_tables):
    session, other = new_user(), new_user()
    status, body = get_json(client, "/analytics/usage", session["token"])
    assert status == 200, body
    assert body["days"] == 30 and len(body["daily"]) == 30
    assert body["daily"][0]["date"] == _day(29) and body["daily"][-1]["date"] == _day(0)
    assert all(day["credits_used"] == 0 and day["sessions"] == 0 for day in body["daily"])
    assert body["total_credits_used"] == 0 and body["recent"] == [] and body["balance"] == SIGNUP
    assert set(body["by_service"]) == {"live", "catchup", "ask"}

    _spend_now(other["user"]["user_id"], "live", 30)
    _usage_row(other["user"]["user_id"], f"{_day(2)}T10:00:00.000Z", "ask", 5)
    _spend_now(session["user"]["user_id"], "ask", 5)
    status, body = get_json(client, "/analytics/usage?days=7", session["token"])
    assert status == 200
    assert body["total_credits_used"] == 5 and body["sessions"] == 1


def test_days_is_an_integer_from_1_to_365_and_a_token_is_needed(client, new_user):
    token = new_user()["token"]
    for days in ("0", "366", "-1", "abc", "1.5", "", "1e2", "9999", "%207", "7,8"):
        status, body = get_json(client, f"/analytics/usage?days={days}", token)
        assert status == 422, (days, body)
        assert body["code"] == "validation_error" and body["field"] == "days" and body["error"]
    for days in ("1", "365", "007"):
        status, body = get_json(client, f"/analytics/usage?days={days}", token)
        assert status == 200 and len(body["daily"]) == int(days)
    assert get_json(client, "/analytics/usage", None)[0] == 401


def test_one_query_and_one_getitem_never_a_scan(client, new_user):
    session = new_user()
    for days_ago in range(5):
        _usage_row(session["user"]["user_id"], f"{_day(days_ago)}T08:00:00.000Z", "ask", 5)
    calls: list[tuple[str, str, str | None]] = []

    def record(params, model, **_):
        calls.append((model.name, params.get("TableName", ""), params.get("IndexName")))

    events = store.ddb().meta.events
    events.register("provide-client-params.dynamodb.*", record)
    try:
        status, body = get_json(client, "/analytics/usage?days=30", session["token"])
    finally:
        events.unregister("provide-client-params.dynamodb.*", record)
    assert status == 200 and body["sessions"] == 5
    usage_calls = [call for call in calls if call[1].endswith("-usage")]
    assert usage_calls == [("Query", store.table_name("usage"), None)]
    assert ("GetItem", store.table_name("users"), None) in calls
    assert not any(name == "Scan" for name, _, _ in calls)
