"""GET /transcription/history: newest first, one Query per page, a cursor bound to its user."""
from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone

import pytest

from chalicelib.aws import store
from chalicelib.catchup import history
from tests.conftest import ORIGIN, json_headers


def get_history(client, token, **params):
    query = "&".join(f"{k}={v}" for k, v in params.items())
    response = client.http.get("/transcription/history" + (f"?{query}" if query else ""),
                               headers=json_headers(token, origin=ORIGIN))
    return response.status_code, json.loads(response.body or b"{}")


def seed(user_id: str, count: int) -> list[str]:
    """`count` entries of every kind, one minute apart; returns their ids oldest first."""
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    ids = []
    for i in range(count):
        kind = history.KINDS[i % 3]
        item_id = f"{kind}-{i:03d}"
        history.record(user_id, kind, item_id, store.iso(start + timedelta(minutes=i)),
                       credits_used=i, duration_minutes=i if kind != "ask" else None,
                       channel="chan" if kind != "ask" else None,
                       summary="what happened" if kind == "catchup" else None)
        ids.append(item_id)
    return ids


def test_pages_cover_everything_newest_first_without_duplicates(client, new_user):
    user = new_user()
    ids = seed(user["user"]["user_id"], 7)
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        status, body = get_history(client, user["token"], **params)
        assert status == 200, body
        pages += 1
        assert len(body["items"]) <= 3
        seen += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert [item["id"] for item in seen] == list(reversed(ids))
    created = [item["created_at"] for item in seen]
    assert created == sorted(created, reverse=True)
    catchup = next(item for item in seen if item["kind"] == "catchup")
    assert catchup["summary"] == "what happened" and catchup["channel"] == "chan"
    ask = next(item for item in seen if item["kind"] == "ask")
    assert "duration_minutes" not in ask and "summary" not in ask
    assert not any({"user_id", "sort_key"} & set(item) for item in seen)


def test_exactly_one_full_page_has_no_next_cursor(client, new_user):
    user = new_user()
    seed(user["user"]["user_id"], 3)
    status, body = get_history(client, user["token"], limit=3)
    assert status == 200 and len(body["items"]) == 3 and body["next_cursor"] is None


def test_a_new_user_has_an_empty_history(client, new_user):
    status, body = get_history(client, new_user()["token"])
    assert status == 200 and body == {"items": [], "next_cursor": None}


def test_histories_are_per_user(client, new_user):
    alice, bob = new_user(), new_user()
    seed(alice["user"]["user_id"], 2)
    status, body = get_history(client, bob["token"])
    assert status == 200 and body["items"] == []


def test_another_users_cursor_is_refused_not_followed(client, new_user):
    alice, bob = new_user(), new_user()
    seed(alice["user"]["user_id"], 4)
    seed(bob["user"]["user_id"], 4)
    _, page = get_history(client, alice["token"], limit=2)
    status, body = get_history(client, bob["token"], limit=2, cursor=page["next_cursor"])
    assert status == 400 and body["code"] == "invalid_cursor"
    assert "items" not in body


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage!!",
        base64.urlsafe_b64encode(b"not json").decode(),
        base64.urlsafe_b64encode(b'["a list"]').decode(),
        base64.urlsafe_b64encode(b'{"u": "x"}').decode(),
        "A" * 2000,
    ],
)
def test_garbage_cursor_is_400(client, new_user, cursor):
    status, body = get_history(client, new_user()["token"], cursor=cursor)
    assert status == 400 and body["code"] == "invalid_cursor"


@pytest.mark.parametrize("limit", ["0", "101", "-1", "ten", "1.5", "\u00b2", "\u0663", "00001"])
def test_limit_is_validated(client, new_user, limit):
    status, body = get_history(client, new_user()["token"], limit=limit)
    assert status == 422 and body["field"] == "limit"


def test_history_needs_a_token(client):
    response = client.http.get("/transcription/history", headers=json_headers(origin=ORIGIN))
    assert response.status_code == 401


def test_recording_the_same_entry_twice_keeps_one(client, new_user):
    user = new_user()
    user_id = user["user"]["user_id"]
    for _ in range(2):
        history.record(user_id, "stream", "session-1", "2026-02-01T10:00:00.000Z", credits_used=30)
    _, body = get_history(client, user["token"])
    assert [item["id"] for item in body["items"]] == ["session-1"]


def test_unknown_kind_is_a_programming_error():
    with pytest.raises(ValueError):
        history.entry("u", "purchase", "x", "2026-01-01T00:00:00.000Z")
