"""POST /transcription/stream: start, heartbeat, stop, their billing, and what cannot happen."""
from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from chalicelib import ledger, store, streaming
from chalicelib.errors import ApiError
from tests.conftest import at_once, usage_rows
from tests.streaming.conftest import age_session, session_item


def test_start_reserves_what_the_balance_affords_and_mints_a_capped_token(caller, fake_assemblyai):
    user = caller()
    r = user.stream("start")
    assert r.status == 200, r.body
    body = r.body
    assert body["success"] is True
    assert body["max_minutes"] == 20 and body["max_session_seconds"] == 1200
    assert body["credits_reserved"] == 200 and body["credits_balance"] == 0
    assert body["expires_in_seconds"] == 60
    assert body["token"] and body["assemblyai_api_key"] == body["token"]
    minted = fake_assemblyai.token_info(body["token"])
    assert minted.max_session_duration_seconds == 1200 and minted.expires_in_seconds == 60
    url = urlsplit(body["websocket_url"])
    assert url.scheme == "ws" and url.path == "/v3/ws"
    assert url.netloc == urlsplit(fake_assemblyai.url).netloc
    query = parse_qs(url.query)
    assert query["token"] == [body["token"]] and query["sample_rate"] == ["16000"]
    assert query["format_turns"] == ["true"]
    assert user.balance() == 0
    item = session_item(body["session_id"])
    assert item["state"] == "active" and item["user_id"] == user.user_id
    assert (item["reserved_minutes"], item["reserved_credits"]) == (20, 200)
    assert item["last_heartbeat_epoch"] == item["started_epoch"]
    assert item["ends_by_epoch"] == item["started_epoch"] + 1200


def test_the_permanent_key_never_reaches_the_client(caller):
    from tests.conftest import ASSEMBLYAI_KEY

    r = caller().stream("start", max_minutes=1)
    assert ASSEMBLYAI_KEY not in str(r.body) and ASSEMBLYAI_KEY not in str(r.headers)


def test_start_is_bounded_by_max_minutes_and_the_ceiling(caller, live):
    user = caller()
    r = user.stream("start", max_minutes=3, sample_rate=44100)
    assert (r.body["max_minutes"], r.body["credits_reserved"], r.body["credits_balance"]) == (3, 30, 170)
    assert parse_qs(urlsplit(r.body["websocket_url"]).query)["sample_rate"] == ["44100"]
    live(LIVE_MAX_MINUTES=5)
    r = user.stream("start")
    assert (r.body["max_minutes"], r.body["max_session_seconds"], r.body["credits_reserved"]) == (5, 300, 50)
    assert user.balance() == 120


def test_start_with_too_few_credits_is_402_with_balance_and_price(caller, fake_assemblyai):
    user = caller()
    user.set_balance(9)
    minted = len(fake_assemblyai.tokens)
    r = user.stream("start")
    assert r.status == 402
    assert r.body["code"] == "insufficient_credits"
    assert (r.body["balance"], r.body["price_per_minute"], r.body["required"]) == (9, 10, 10)
    assert isinstance(r.body["error"], str) and r.body["message"]
    assert len(fake_assemblyai.tokens) == minted
    assert user.balance() == 9


def test_stop_bills_elapsed_time_rounded_up_and_refunds_the_rest(caller):
    user = caller()
    session_id = user.stream("start", max_minutes=10).body["session_id"]
    assert user.balance() == 100
    age_session(session_id, 125)
    r = user.stream("stop", session_id=session_id)
    assert r.status == 200, r.body
    assert r.body["success"] is True and r.body["session_id"] == session_id
    assert (r.body["duration_minutes"], r.body["credits_used"], r.body["credits_refunded"]) == (3, 30, 70)
    assert r.body["remaining_balance"] == 170 == user.balance()
    item = session_item(session_id)
    assert item["state"] == "stopped" and item["credits_used"] == 30
    assert ledger.check_invariant(user.user_id).ok


def test_stop_right_away_bills_one_minute(caller):
    user = caller()
    session_id = user.stream("start", max_minutes=5).body["session_id"]
    r = user.stream("stop", session_id=session_id)
    assert (r.body["duration_minutes"], r.body["credits_used"], r.body["credits_refunded"]) == (1, 10, 40)
    assert user.balance() == 190


def test_stop_never_bills_more_than_reserved(caller):
    user = caller()
    session_id = user.stream("start", max_minutes=2).body["session_id"]
    age_session(session_id, 3 * 3600)
    r = user.stream("stop", session_id=session_id)
    assert (r.body["duration_minutes"], r.body["credits_used"], r.body["credits_refunded"]) == (2, 20, 0)
    assert user.balance() == 180


def test_stop_twice_answers_the_same_figures_and_charges_once(caller):
    user = caller()
    session_id = user.stream("start", max_minutes=4).body["session_id"]
    age_session(session_id, 70)
    first = user.stream("stop", session_id=session_id)
    second = user.stream("stop", session_id=session_id)
    assert second.status == 200
    keys = ("duration_minutes", "credits_used", "credits_refunded", "remaining_balance")
    assert [first.body[k] for k in keys] == [second.body[k] for k in keys] == [2, 20, 20, 180]
    assert first.body["already_stopped"] is False and second.body["already_stopped"] is True
    assert user.balance() == 180
    assert ledger.check_invariant(user.user_id).ok


def test_concurrent_stops_settle_once(caller):
    user = caller()
    session_id = user.stream("start", max_minutes=6).body["session_id"]
    age_session(session_id, 150)
    results = at_once(4, lambda: streaming.stop(user.user_id, session_id))
    assert {r["credits_used"] for r in results} == {30}
    assert sum(not r["already_stopped"] for r in results) == 1
    assert user.balance() == 170
    assert ledger.check_invariant(user.user_id).ok


def test_someone_elses_session_is_404_and_untouched(caller):
    owner, other = caller(), caller()
    session_id = owner.stream("start", max_minutes=2).body["session_id"]
    for action in ("stop", "heartbeat"):
        r = other.stream(action, session_id=session_id)
        assert r.status == 404 and r.body["code"] == "session_not_found"
    assert session_item(session_id)["state"] == "active"
    assert other.balance() == 200 and owner.balance() == 180


def test_unknown_session_is_404(caller):
    user = caller()
    for action in ("stop", "heartbeat"):
        assert user.stream(action, session_id="0" * 32).status == 404


def test_heartbeat_reports_elapsed_and_remaining_and_is_recorded(caller):
    user = caller()
    session_id = user.stream("start", max_minutes=5).body["session_id"]
    age_session(session_id, 100)
    before = store.epoch()
    r = user.stream("heartbeat", session_id=session_id)
    assert r.status == 200, r.body
    assert r.body["success"] is True and r.body["session_id"] == session_id
    assert 100 <= r.body["seconds_elapsed"] <= 103
    assert r.body["seconds_remaining"] == 300 - r.body["seconds_elapsed"]
    assert session_item(session_id)["last_heartbeat_epoch"] >= before


def test_heartbeat_after_stop_is_409(caller):
    user = caller()
    session_id = user.stream("start", max_minutes=1).body["session_id"]
    user.stream("stop", session_id=session_id)
    r = user.stream("heartbeat", session_id=session_id)
    assert r.status == 409 and r.body["code"] == "session_not_active"


@pytest.mark.parametrize("status, expected", [(500, 502), (401, 503)])
def test_minting_failure_releases_the_reservation(caller, fake_assemblyai, status, expected):
    user = caller()
    fake_assemblyai.fail_next(3, status, path_prefix="/v3/token")
    r = user.stream("start", max_minutes=5)
    assert r.status == expected and r.body["code"] in ("upstream_error", "provider_unavailable")
    assert "token" not in r.body
    assert user.balance() == 200
    [item] = [i for i in _sessions_of(user.user_id)]
    assert item["state"] == "failed"
    assert ledger.check_invariant(user.user_id).ok
    fake_assemblyai.clear_faults()
    # The concurrency slot was given back too: two sessions can still start.
    assert user.stream("start", max_minutes=1).status == 200
    assert user.stream("start", max_minutes=1).status == 200


def test_concurrent_session_limit(caller):
    user = caller()
    first = user.stream("start", max_minutes=2).body["session_id"]
    assert user.stream("start", max_minutes=2).status == 200
    r = user.stream("start", max_minutes=2)
    assert r.status == 409 and r.body["code"] == "too_many_sessions"
    assert user.balance() == 160
    user.stream("stop", session_id=first)
    assert user.stream("start", max_minutes=2).status == 200


def test_parallel_starts_cannot_reserve_more_than_the_balance(caller, live):
    live(LIVE_MAX_CONCURRENT_SESSIONS=10)
    user = caller()

    def start() -> object:
        try:
            return streaming.start(user.user_id, max_minutes=7)
        except ApiError as error:
            return error

    outcomes = at_once(6, start)
    started = [o for o in outcomes if isinstance(o, dict)]
    refused = [o for o in outcomes if isinstance(o, ApiError)]
    assert len(started) == 2  # 2 x 70 of 200; a third 70 never fits
    assert all(e.status == 402 for e in refused) and len(refused) == 4
    assert all(e.details.get("price_per_minute") == 10 for e in refused)
    assert user.balance() == 60
    assert ledger.check_invariant(user.user_id).ok


def test_settle_abandoned_bills_last_heartbeat_plus_grace(caller):
    user = caller()
    session_id = user.stream("start", max_minutes=20).body["session_id"]
    age_session(session_id, 600, heartbeat_seconds_ago=400)
    now = store.epoch()
    session = session_item(session_id)
    outcome = streaming.settle_abandoned(session, now)
    # Billed from start to last heartbeat (200 s) + 120 s grace = 320 s -> 6 minutes.
    assert outcome["state"] == "settled_by_cleanup"
    assert (outcome["duration_minutes"], outcome["credits_used"], outcome["credits_refunded"]) == (6, 60, 140)
    assert user.balance() == 140
    assert session_item(session_id)["state"] == "settled_by_cleanup"
    assert streaming.settle_abandoned(session, now) is None  # idempotent, even with a stale copy
    assert streaming.settle_abandoned(session_item(session_id), now) is None
    r = user.stream("stop", session_id=session_id)
    assert r.status == 200 and r.body["already_stopped"] is True
    assert (r.body["credits_used"], r.body["remaining_balance"]) == (60, 140)
    assert user.balance() == 140
    assert ledger.check_invariant(user.user_id).ok


def test_settle_abandoned_leaves_a_live_session_alone(caller):
    user = caller()
    session_id = user.stream("start", max_minutes=20).body["session_id"]
    age_session(session_id, 600, heartbeat_seconds_ago=30)
    assert streaming.settle_abandoned(session_item(session_id), store.epoch()) is None
    assert session_item(session_id)["state"] == "active"


def test_settle_abandoned_is_bounded_by_the_reservation(caller):
    user = caller()
    session_id = user.stream("start", max_minutes=2).body["session_id"]
    age_session(session_id, 7200, heartbeat_seconds_ago=10)  # heartbeats past the end
    outcome = streaming.settle_abandoned(session_item(session_id), store.epoch())
    assert (outcome["duration_minutes"], outcome["credits_used"]) == (2, 20)


def test_settle_abandoned_releases_a_start_that_never_finished(caller, monkeypatch):
    """The start request died between reserving and answering: no token reached the user."""
    user = caller()

    def crash(*args, **kwargs):
        raise RuntimeError("the Lambda was cut off here")

    with monkeypatch.context() as patch:
        patch.setattr(streaming, "_mark_active", crash)
        with pytest.raises(RuntimeError):
            streaming.start(user.user_id, max_minutes=3)
    [item] = _sessions_of(user.user_id)
    assert item["state"] == "starting" and user.balance() == 170
    assert streaming.settle_abandoned(item, store.epoch()) is None  # it may still be starting
    later = item["started_epoch"] + streaming.STARTING_TIMEOUT_SECONDS
    assert streaming.settle_abandoned(item, later) == {"state": "failed", "credits_used": 0}
    assert user.balance() == 200
    assert session_item(item["session_id"])["state"] == "failed"
    assert streaming.settle_abandoned(session_item(item["session_id"]), later) is None
    assert ledger.check_invariant(user.user_id).ok


def test_stop_writes_history_and_usage(caller):
    from chalicelib import history

    user = caller()
    session_id = user.stream("start", max_minutes=3, channel="SomeChannel", title="Talk").body["session_id"]
    age_session(session_id, 61)
    user.stream("stop", session_id=session_id)
    [entry] = history.list_history(user.user_id)["items"]
    assert entry["kind"] == "stream" and entry["id"] == session_id
    assert (entry["credits_used"], entry["duration_minutes"]) == (20, 2)
    assert (entry["channel"], entry["title"]) == ("somechannel", "Talk")
    usage = usage_rows(user.user_id, "live")
    assert len(usage) == 1
    metadata = usage[0]["metadata"]
    assert metadata["provider"] == "assemblyai" and metadata["provider_seconds"] >= 61


@pytest.mark.parametrize(
    "body",
    [
        {"action": "dance"},
        {"action": "stop"},
        {"action": "heartbeat"},
        {"action": "start", "max_minutes": 0},
        {"action": "start", "max_minutes": 181},
        {"action": "start", "max_minutes": "5"},
        {"action": "start", "sample_rate": 100},
        {"action": "start", "surprise": 1},
        {"action": "stop", "session_id": "../../etc"},
    ],
)
def test_invalid_bodies_are_422(caller, body):
    user = caller()
    r = user.post("/transcription/stream", body)
    assert r.status == 422, r.body
    assert user.balance() == 200


def test_requires_authentication(client, live):
    from tests.conftest import json_headers

    r = client.http.post("/transcription/stream", headers=json_headers(), body='{"action": "start"}')
    assert r.status_code == 401


def _sessions_of(user_id: str) -> list[dict]:
    return list(
        store.query_all(
            {
                "TableName": store.table_name("sessions"),
                "IndexName": "user_id-index",
                "KeyConditionExpression": "user_id = :u",
                "ExpressionAttributeValues": store.values(u=user_id),
            }
        )
    )


def test_a_retried_start_with_an_idempotency_key_reserves_once(caller, fake_assemblyai):
    user = caller()
    minted = len(fake_assemblyai.tokens)
    first = user.post("/transcription/stream", {"action": "start", "max_minutes": 4}, **{"Idempotency-Key": "k-1"})
    again = user.post("/transcription/stream", {"action": "start", "max_minutes": 4}, **{"Idempotency-Key": "k-1"})
    assert first.status == again.status == 200
    assert again.body == first.body
    assert len(fake_assemblyai.tokens) == minted + 1
    assert user.balance() == 160
    other = user.post("/transcription/stream", {"action": "start", "max_minutes": 2}, **{"Idempotency-Key": "k-1"})
    assert other.status == 422 and other.body["code"] == "idempotency_key_mismatch"
