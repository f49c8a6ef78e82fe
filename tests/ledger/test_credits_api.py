"""GET /credits/balance and GET /credits/transactions through the Chalice test client."""
from __future__ import annotations

import json

import pytest

from chalicelib.credits import ledger
from tests.conftest import ORIGIN, json_headers
from tests.ledger.conftest import new_id


def get(client, path: str, token: str | None):
    response = client.http.get(path, headers=json_headers(token, origin=ORIGIN))
    return response.status_code, json.loads(response.body or b"null")


def test_balance_shape_the_extension_reads(client, new_user):
    session = new_user()
    status, body = get(client, "/credits/balance", session["token"])
    assert status == 200
    assert body == {"balance": 200, "credits_available": 200, "credits_held": 0, "subscription_tier": "free",
                    "total_credits_purchased": 0, "total_usage": 0}
    ledger.charge(session["user"]["user_id"], 7, service_type="ask", request_id=new_id())
    assert get(client, "/credits/balance", session["token"])[1]["balance"] == 193


def test_balance_is_what_the_user_owns_while_credits_are_held(client, new_user):
    """The published popup disables Start at `balance` 0: held credits still count."""
    session = new_user()
    user_id = session["user"]["user_id"]
    ledger.reserve(user_id, 193, reservation_id=new_id(), purpose="live", ref_id="x", ttl_seconds=600)
    body = get(client, "/credits/balance", session["token"])[1]
    assert (body["balance"], body["credits_available"], body["credits_held"]) == (200, 7, 193)
    user = get(client, "/auth/user", session["token"])[1]["user"]
    assert (user["credits_balance"], user["credits_available"], user["credits_held"]) == (200, 7, 193)


def test_balance_needs_a_token(client):
    status, body = get(client, "/credits/balance", None)
    assert status == 401


def test_transactions_newest_first_paginated_with_opaque_cursor(client, new_user):
    session = new_user()
    user_id = session["user"]["user_id"]
    for number in range(4):
        ledger.grant(user_id, 10 + number, source="admin", record_id=f"{new_id()}-{number}")
    ledger.clawback(user_id, 3, source="refund", record_id=new_id())
    seen, cursor, pages = [], None, 0
    while True:
        path = "/credits/transactions?limit=2" + (f"&cursor={cursor}" if cursor else "")
        status, body = get(client, path, session["token"])
        assert status == 200, body
        assert len(body["items"]) <= 2
        seen += body["items"]
        pages += 1
        cursor = body["next_cursor"]
        if not cursor:
            break
        assert user_id not in cursor  # opaque: the user id is implied, never carried
    assert pages >= 3
    kinds = [(item["kind"], item["credits"]) for item in seen]
    assert kinds == [("clawback", 3), ("grant", 13), ("grant", 12), ("grant", 11), ("grant", 10), ("grant", 200)]
    created = [item["created_at"] for item in seen]
    assert created == sorted(created, reverse=True)
    assert all("user_id" not in item and "metadata" not in item for item in seen)
    assert seen[-1]["source"] == "signup" and seen[0]["balance_after"] == 243


def test_transactions_are_only_the_callers(client, new_user):
    mine, other = new_user(), new_user()
    ledger.grant(other["user"]["user_id"], 50, source="admin", record_id=new_id())
    status, body = get(client, "/credits/transactions", mine["token"])
    assert status == 200 and [item["source"] for item in body["items"]] == ["signup"]
    assert body["next_cursor"] is None


@pytest.mark.parametrize("cursor", ["garbage!", "bm90LWpzb24", "e30", "W10", "eyJ0IjoxLCJjIjoyfQ", "x" * 2000])
def test_garbage_cursor_is_400(client, new_user, cursor):
    session = new_user()
    status, body = get(client, f"/credits/transactions?cursor={cursor}", session["token"])
    assert status == 400 and body["code"] == "invalid_cursor"


@pytest.mark.parametrize("limit", ["0", "101", "-1", "abc", "1.5", "9999"])
def test_limit_is_bounded(client, new_user, limit):
    session = new_user()
    status, body = get(client, f"/credits/transactions?limit={limit}", session["token"])
    assert status == 422 and body["field"] == "limit"
