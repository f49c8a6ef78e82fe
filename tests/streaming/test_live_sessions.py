"""POST /transcription/stream: start (legacy and renewing), heartbeat, stop, their billing."""
from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from chalicelib.aws import store
from chalicelib.credits import ledger
from chalicelib.live import captions
from chalicelib.core.errors import DomainError
from chalicelib.web.errors import status_of
from tests.conftest import at_once, usage_rows
from tests.streaming.conftest import session_item


def test_legacy_start_gets_one_token_and_leaves_room_for_asks(caller, fake_assemblyai):
    user = caller()
    user.make_paying(500)  # 700 credits, a paying account
    r = user.stream("start")  # exactly what the published extension sends
    assert r.status == 200, r.body
    body = r.body
    assert body["success"] is True and body["renewable"] is False
    assert body["max_minutes"] == 30 and body["max_session_seconds"] == 1800
    assert body["renew_in_seconds"] is None and body["token_number"] == 1
    assert body["credits_reserved"] == 300
    assert (body["credits_balance"], body["credits_available"], body["credits_held"]) == (700, 400, 300)
    assert body["expires_in_seconds"] == 60
    assert body["token"] and body["assemblyai_api_key"] == body["token"]
    minted = fake_assemblyai.token_info(body["token"])
    assert minted.max_session_duration_seconds == 1800 and minted.expires_in_seconds == 60
    url = urlsplit(body["websocket_url"])
    assert url.scheme == "ws" and url.path == "/v3/ws"
    assert url.netloc == urlsplit(fake_assemblyai.streaming_url).netloc
    query = parse_qs(url.query)
    assert query["token"] == [body["token"]] and query["sample_rate"] == ["16000"]
    assert query["format_turns"] == ["true"]
    assert user.available() == 400 and user.owned() == 700
    item = session_item(body["session_id"])
    assert item["state"] == "active" and item["user_id"] == user.user_id
    assert (item["reserved_minutes"], item["reserved_credits"]) == (30, 300)
    # the token's lifetime counts from its mint, which may fall in the second after the start's
    assert item["started_epoch"] <= item["token_minted_epoch"] <= item["started_epoch"] + 5
    assert item["ends_by_epoch"] == item["token_minted_epoch"] + 60 + 1800
    assert ledger.check_invariant(user.user_id).ok


def test_a_never_paid_account_gets_shorter_tokens_and_keeps_room_for_asks(caller):
    user = caller()  # 200 signup credits, never paid
    r = user.stream("start")
    assert (r.body["max_minutes"], r.body["credits_reserved"], r.body["credits_available"]) == (10, 100, 100)
    other = caller()
    other.set_balance(150)
    other.make_paying(1)  # 151 credits, paying: (151 - 20) // 10 = 13 minutes
    r = other.stream("start")
    assert (r.body["max_minutes"], r.body["credits_available"]) == (13, 21)


def test_a_renewing_start_gets_a_short_token_and_when_to_renew(caller):
    user = caller()
    user.make_paying(500)
    r = user.stream("start", renewable=True, sample_rate=44100)
    assert r.status == 200, r.body
    body = r.body
    assert body["renewable"] is True and body["token_number"] == 1
    assert (body["max_minutes"], body["max_session_seconds"], body["renew_in_seconds"]) == (10, 600, 555)
    assert body["session_max_minutes"] == 180
    assert (body["credits_reserved"], body["credits_available"]) == (100, 600)
    assert parse_qs(urlsplit(body["websocket_url"]).query)["sample_rate"] == ["44100"]


def test_the_permanent_key_never_reaches_the_client(caller):
    from tests.conftest import ASSEMBLYAI_KEY

    r = caller().stream("start", max_minutes=1)
    assert ASSEMBLYAI_KEY not in str(r.body) and ASSEMBLYAI_KEY not in str(r.headers)


def test_start_with_max_minutes_renews_and_is_capped_by_it(caller, live, clock):
    user = caller()
    r = user.stream("start", max_minutes=3)
    assert (r.body["renewable"], r.body["max_minutes"], r.body["session_max_minutes"]) == (True, 3, 3)
    assert (r.body["credits_reserved"], r.body["credits_available"]) == (30, 170)
    clock.advance(150)
    again = user.stream("renew", session_id=r.body["session_id"], token_number=1)
    assert again.status == 409 and again.body["code"] == "session_limit_reached"
    live(LIVE_TOKEN_MINUTES=4)
    r = user.stream("start", renewable=True)
    assert (r.body["max_minutes"], r.body["max_session_seconds"], r.body["credits_reserved"]) == (4, 240, 40)


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


def test_stop_bills_elapsed_time_rounded_up_and_refunds_the_rest(caller, clock):
    user = caller()
    session_id = user.stream("start", max_minutes=10).body["session_id"]
    assert user.available() == 100
    clock.advance(125)
    r = user.stream("stop", session_id=session_id)
    assert r.status == 200, r.body
    assert r.body["success"] is True and r.body["session_id"] == session_id
    assert (r.body["duration_minutes"], r.body["credits_used"], r.body["credits_refunded"]) == (3, 30, 70)
    assert r.body["remaining_balance"] == 170 == user.owned() == user.available()
    assert (r.body["credits_available"], r.body["credits_held"]) == (170, 0)
    item = session_item(session_id)
    assert item["state"] == "stopped" and item["credits_used"] == 30 and "token" not in item
    assert ledger.check_invariant(user.user_id).ok


def test_stop_right_away_bills_one_minute(caller):
    user = caller()
    session_id = user.stream("start", max_minutes=5).body["session_id"]
    r = user.stream("stop", session_id=session_id)
    assert (r.body["duration_minutes"], r.body["credits_used"], r.body["credits_refunded"]) == (1, 10, 40)
    assert user.available() == 190


def test_a_late_stop_bills_no_more_than_the_tokens_allowed(caller, clock):
    user = caller()
    session_id = user.stream("start", max_minutes=2).body["session_id"]
    clock.advance(3 * 3600)
    r = user.stream("stop", session_id=session_id)
    assert (r.body["duration_minutes"], r.body["credits_used"], r.body["credits_refunded"]) == (2, 20, 0)
    assert user.available() == 180


def test_stop_twice_answers_the_same_figures_and_charges_once(caller, clock):
    user = caller()
    session_id = user.stream("start", max_minutes=4).body["session_id"]
    clock.advance(70)
    first = user.stream("stop", session_id=session_id)
    second = user.stream("stop", session_id=session_id)
    assert second.status == 200
    keys = ("duration_minutes", "credits_used", "credits_refunded", "remaining_balance")
    assert [first.body[k] for k in keys] == [second.body[k] for k in keys] == [2, 20, 20, 180]
    assert first.body["already_stopped"] is False and second.body["already_stopped"] is True
    assert user.available() == 180
    assert ledger.check_invariant(user.user_id).ok


def test_concurrent_stops_settle_once(caller, clock):
    user = caller()
    session_id = user.stream("start", max_minutes=6).body["session_id"]
    clock.advance(150)
    results = at_once(4, lambda: captions.stop(user.user_id, session_id))
    assert {r["credits_used"] for r in results} == {30}
    assert sum(not r["already_stopped"] for r in results) == 1
    assert user.available() == 170
    assert ledger.check_invariant(user.user_id).ok


def test_someone_elses_session_is_404_and_untouched(caller):
    owner, other = caller(), caller()
    session_id = owner.stream("start", max_minutes=2).body["session_id"]
    for action in ("stop", "heartbeat", "renew"):
        r = other.stream(action, session_id=session_id, **({"token_number": 1} if action == "renew" else {}))
        assert r.status == 404 and r.body["code"] == "session_not_found"
    assert session_item(session_id)["state"] == "active"
    assert other.balance() == 200 and owner.balance() == 180


def test_unknown_session_is_404(caller):
    user = caller()
    for action in ("stop", "heartbeat"):
        assert user.stream(action, session_id="0" * 32).status == 404


def test_heartbeat_reports_elapsed_and_remaining_and_is_recorded(caller, clock):
    user = caller()
    session_id = user.stream("start", max_minutes=5).body["session_id"]
    clock.advance(100)
    r = user.stream("heartbeat", session_id=session_id)
    assert r.status == 200, r.body
    assert r.body["success"] is True and r.body["session_id"] == session_id
    assert (r.body["seconds_elapsed"], r.body["seconds_remaining"]) == (100, 200)
    assert session_item(session_id)["last_heartbeat_epoch"] == store.epoch()


def test_the_user_index_holds_only_keys_so_heartbeats_do_not_write_it(caller, clock):
    """Privacy reads the index for keys; a heartbeat changes no attribute the index holds."""
    from chalicelib.accounts import privacy

    user = caller()
    session_id = user.stream("start", max_minutes=5).body["session_id"]
    clock.advance(30)
    assert user.stream("heartbeat", session_id=session_id).status == 200
    (entry,) = privacy._session_keys(user.user_id)
    assert set(entry) == {"session_id", "user_id", "started_at"}
    assert [s["session_id"] for s in privacy._sessions(user.user_id)] == [session_id]
    assert privacy._sessions(user.user_id)[0]["last_heartbeat_epoch"] == store.epoch()


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
            return captions.start(user.user_id, max_minutes=7)
        except DomainError as error:
            return error

    outcomes = at_once(8, start)
    started = [o for o in outcomes if isinstance(o, dict)]
    refused = [o for o in outcomes if isinstance(o, DomainError)]
    held = sum(o["credits_reserved"] for o in started)
    # Each start sizes its token from the balance it read; the conditional reservation
    # refuses one whose balance moved meanwhile, so together they never hold more than 200.
    assert len(started) >= 2 and held <= 200
    assert all(10 <= o["credits_reserved"] <= 70 for o in started)
    assert user.available() == 200 - held and user.owned() == 200
    assert all(status_of(e) == 402 and e.details.get("price_per_minute") == 10 for e in refused)
    assert len(started) + len(refused) == 8
    assert ledger.check_invariant(user.user_id).ok


def test_settle_abandoned_waits_for_the_last_token_then_bills_last_sign_of_life(caller, clock):
    user = caller()
    session_id = user.stream("start", max_minutes=20).body["session_id"]  # a 10-minute token
    clock.advance(200)
    user.stream("heartbeat", session_id=session_id)
    clock.advance(200)
    assert captions.settle_abandoned(session_item(session_id), store.epoch()) is None  # may be open
    clock.advance(600 + 60 - 400)  # the token can no longer be open
    session = session_item(session_id)
    outcome = captions.settle_abandoned(session, store.epoch())
    # Billed from start to last heartbeat (200 s) + 120 s grace = 320 s -> 6 minutes.
    assert outcome["state"] == "settled_by_cleanup"
    assert (outcome["duration_minutes"], outcome["credits_used"], outcome["credits_refunded"]) == (6, 60, 40)
    assert user.available() == 140
    assert session_item(session_id)["state"] == "settled_by_cleanup"
    assert captions.settle_abandoned(session, store.epoch()) is None  # idempotent, even with a stale copy
    assert captions.settle_abandoned(session_item(session_id), store.epoch()) is None
    r = user.stream("stop", session_id=session_id)
    assert r.status == 200 and r.body["already_stopped"] is True
    assert (r.body["credits_used"], r.body["remaining_balance"]) == (60, 140)
    assert user.available() == 140
    assert ledger.check_invariant(user.user_id).ok


def test_settle_abandoned_is_bounded_by_the_tokens(caller, clock):
    user = caller()
    session_id = user.stream("start", max_minutes=2).body["session_id"]
    clock.advance(100)
    user.stream("heartbeat", session_id=session_id)
    clock.advance(7200)
    outcome = captions.settle_abandoned(session_item(session_id), store.epoch())
    assert (outcome["duration_minutes"], outcome["credits_used"]) == (2, 20)


def test_settle_abandoned_releases_a_start_that_never_finished(caller, monkeypatch):
    """The start request died between reserving and answering: no token reached the user."""
    user = caller()

    def crash(*args, **kwargs):
        raise RuntimeError("the Lambda was cut off here")

    with monkeypatch.context() as patch:
        patch.setattr(captions, "_commit_token", crash)
        with pytest.raises(RuntimeError):
            captions.start(user.user_id, max_minutes=3)
    [item] = _sessions_of(user.user_id)
    assert item["state"] == "starting" and user.balance() == 170
    assert captions.settle_abandoned(item, store.epoch()) is None  # it may still be starting
    later = item["started_epoch"] + captions.STARTING_TIMEOUT_SECONDS
    assert captions.settle_abandoned(item, later) == {"state": "failed", "credits_used": 0}
    assert user.balance() == 200
    assert session_item(item["session_id"])["state"] == "failed"
    assert captions.settle_abandoned(session_item(item["session_id"]), later) is None
    assert ledger.check_invariant(user.user_id).ok


def test_stop_writes_history_and_usage(caller, clock):
    from chalicelib.catchup import history

    user = caller()
    session_id = user.stream("start", max_minutes=3, channel="SomeChannel", title="Talk").body["session_id"]
    clock.advance(61)
    user.stream("stop", session_id=session_id)
    [entry] = history.list_history(user.user_id)["items"]
    assert entry["kind"] == "stream" and entry["id"] == session_id
    assert (entry["credits_used"], entry["duration_minutes"]) == (20, 2)
    assert (entry["channel"], entry["title"]) == ("somechannel", "Talk")
    usage = usage_rows(user.user_id, "live")
    assert len(usage) == 1
    metadata = usage[0]["metadata"]
    assert metadata["provider"] == "assemblyai" and metadata["provider_seconds"] == 61
    assert (metadata["provider_seconds_allowed"], metadata["tokens"]) == (180, 1)


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
        {"action": "renew", "session_id": "0" * 32},
        {"action": "renew", "session_id": "0" * 32, "token_number": 0},
        {"action": "start", "renewable": "yes"},
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
    """The user's sessions, found as privacy finds them (keys from the index, then the items)."""
    from chalicelib.accounts import privacy

    return privacy._sessions(user_id)


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
