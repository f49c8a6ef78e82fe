"""Renewing sessions: a chain of short tokens, each paid before it is minted, billed once."""
from __future__ import annotations

import pytest

from chalicelib.aws import store
from chalicelib.credits import ledger
from chalicelib.live import captions as streaming
from chalicelib.core.errors import DomainError
from chalicelib.web.errors import status_of
from tests.conftest import at_once, usage_rows
from tests.streaming.conftest import session_item
from tests.streaming.sandbox_client import SandboxSocket


def _reservation(session_id: str) -> dict:
    return store.get("reservations", reservation_id=f"live#{session_id}")


def test_a_45_minute_session_over_the_sandbox_socket_is_billed_45_minutes(caller, clock, fake_assemblyai):
    """The honest renewing client: renews when told, opens the new socket, then ends the old."""
    user = caller()
    user.make_paying(800)  # 1000 credits
    answer = user.stream("start", renewable=True).body
    session_id = answer["session_id"]
    socket = SandboxSocket(answer["websocket_url"])
    renew_at = clock.now + answer["renew_in_seconds"]
    tokens, sockets = [answer["token"]], [socket]
    started = clock.now
    while clock.now - started < 45 * 60:
        socket.send_audio(1)
        clock.advance(1)
        if clock.now >= renew_at:
            answer = user.stream("renew", session_id=session_id, token_number=answer["token_number"]).body
            assert answer["success"] is True, answer
            fresh = SandboxSocket(answer["websocket_url"])  # open the new one first: no gap
            assert fresh.begin["type"] == "Begin"
            assert socket.terminate() == 1000
            socket, renew_at = fresh, clock.now + answer["renew_in_seconds"]
            tokens.append(answer["token"])
            sockets.append(socket)
        socket.drain()
    stop = user.stream("stop", session_id=session_id).body
    assert socket.terminate() == 1000

    assert (stop["duration_minutes"], stop["credits_used"], stop["credits_refunded"]) == (45, 450, 50)
    assert len(tokens) == 5 and len(set(tokens)) == 5  # 10-minute tokens renewed at 9:15
    assert (stop["remaining_balance"], stop["credits_available"], stop["credits_held"]) == (550, 550, 0)
    # What AssemblyAI would bill: the sockets' durations, each ended at the handoff.
    provider = fake_assemblyai.provider_seconds(set(tokens))
    assert 45 * 60 <= provider <= 45 * 60 + len(tokens)
    assert all(s.of_type("Termination") and s.final_turns for s in sockets)
    assert sockets[0].final_turns[0].startswith("Welcome back everyone")
    [usage] = usage_rows(user.user_id, "live")
    assert usage["credits_used"] == 450
    assert usage["metadata"]["provider_seconds"] == 2700 and usage["metadata"]["tokens"] == 5
    assert ledger.check_invariant(user.user_id).ok


def test_renew_is_paid_before_the_token_is_minted(caller, clock, fake_assemblyai):
    user = caller()
    user.make_paying(300)  # 500
    first = user.stream("start", renewable=True).body
    assert user.available() == 400
    clock.advance(first["renew_in_seconds"])
    r = user.stream("renew", session_id=first["session_id"], token_number=1)
    assert r.status == 200, r.body
    body = r.body
    assert body["token_number"] == 2 and body["token"] != first["token"]
    assert (body["max_session_seconds"], body["renew_in_seconds"]) == (600, 555)
    assert body["credits_reserved"] == 200 and body["session_id"] == first["session_id"]
    assert (body["credits_balance"], body["credits_available"], body["credits_held"]) == (500, 300, 200)
    assert fake_assemblyai.token_info(body["token"]).max_session_duration_seconds == 600
    assert _reservation(first["session_id"])["amount"] == 200
    item = session_item(first["session_id"])
    assert (item["allowance_seconds"], item["committed_seconds"], item["token_number"]) == (1200, 600, 2)
    assert ledger.check_invariant(user.user_id).ok


def test_renewing_too_early_is_refused_with_when_to_retry(caller, clock, fake_assemblyai):
    user = caller()
    first = user.stream("start", renewable=True).body
    minted = len(fake_assemblyai.tokens)
    clock.advance(100)
    r = user.stream("renew", session_id=first["session_id"], token_number=1)
    assert r.status == 409 and r.body["code"] == "renew_too_early"
    assert r.body["renew_in_seconds"] == 600 - 100 - 120
    assert len(fake_assemblyai.tokens) == minted and user.available() == 100


def test_a_retried_renew_answers_the_same_token_without_paying_again(caller, clock, fake_assemblyai):
    user = caller()
    user.make_paying(300)
    first = user.stream("start", renewable=True).body
    clock.advance(560)
    renewed = user.stream("renew", session_id=first["session_id"], token_number=1).body
    minted = len(fake_assemblyai.tokens)
    clock.advance(5)
    again = user.stream("renew", session_id=first["session_id"], token_number=1)
    assert again.status == 200 and again.body["replayed"] is True
    assert again.body["token"] == renewed["token"] and again.body["token_number"] == 2
    assert again.body["expires_in_seconds"] == 55
    assert len(fake_assemblyai.tokens) == minted and user.available() == 300
    clock.advance(60)  # the token can no longer be opened: it is not handed out again
    late = user.stream("renew", session_id=first["session_id"], token_number=1)
    assert late.status == 409 and late.body["code"] == "token_superseded" and late.body["token_number"] == 2
    stale = user.stream("renew", session_id=first["session_id"], token_number=7)
    assert stale.status == 409 and stale.body["code"] == "token_superseded"


def test_parallel_renews_pay_and_mint_once(caller, clock, fake_assemblyai):
    user = caller()
    user.make_paying(300)
    first = user.stream("start", renewable=True).body
    clock.advance(560)
    minted = len(fake_assemblyai.tokens)

    def renew() -> object:
        try:
            return streaming.renew(user.user_id, first["session_id"], 1)
        except DomainError as error:
            return error

    outcomes = at_once(6, renew)
    tokens = {o["token"] for o in outcomes if isinstance(o, dict)}
    assert len(tokens) == 1
    assert all(isinstance(o, dict) or status_of(o) == 409 for o in outcomes)
    # A loser that minted before losing hands nothing out: an unopened token costs nothing.
    assert len(fake_assemblyai.tokens) - minted >= 1
    assert user.available() == 300 and _reservation(first["session_id"])["amount"] == 200
    assert ledger.check_invariant(user.user_id).ok


def test_renew_shrinks_the_token_to_the_balance_then_refuses(caller, clock):
    user = caller()  # 200, never paid
    answer = user.stream("start", renewable=True).body
    minutes = [answer["max_minutes"]]
    while True:
        clock.advance(answer["max_session_seconds"] - 60)
        r = user.stream("renew", session_id=answer["session_id"], token_number=answer["token_number"])
        if r.status != 200:
            break
        answer = r.body
        minutes.append(answer["max_minutes"])
    assert minutes == [10, 8, 2]  # room for Ask while it fits, then captions first
    assert r.status == 402 and r.body["code"] == "insufficient_credits"
    assert r.body["price_per_minute"] == 10 and user.available() == 0
    clock.advance(60)  # 9 + 7 + 2 minutes: the renewals committed the first two tokens
    stop = user.stream("stop", session_id=answer["session_id"]).body
    assert (stop["duration_minutes"], stop["credits_used"], stop["credits_refunded"]) == (18, 180, 20)


def test_a_failed_renew_mint_keeps_the_token_paid_for_the_retry(caller, clock, fake_assemblyai):
    user = caller()
    user.make_paying(300)
    first = user.stream("start", renewable=True).body
    clock.advance(560)
    fake_assemblyai.fail_next(3, 500, path_prefix="/v3/token")
    r = user.stream("renew", session_id=first["session_id"], token_number=1)
    assert r.status == 502 and "token" not in r.body
    assert user.available() == 300  # paid for the next token
    fake_assemblyai.clear_faults()
    retry = user.stream("renew", session_id=first["session_id"], token_number=1)
    assert retry.status == 200 and retry.body["token_number"] == 2
    assert user.available() == 300 and _reservation(first["session_id"])["amount"] == 200
    # Stopping refunds what was not used, the paid token included.
    clock.advance(30)
    stop = user.stream("stop", session_id=first["session_id"]).body
    assert (stop["duration_minutes"], stop["credits_used"], stop["credits_refunded"]) == (10, 100, 100)
    assert ledger.check_invariant(user.user_id).ok


def test_a_stop_with_a_paid_unminted_token_refunds_it(caller, clock, fake_assemblyai):
    user = caller()
    user.make_paying(300)
    first = user.stream("start", renewable=True).body
    clock.advance(560)
    fake_assemblyai.fail_next(3, 500, path_prefix="/v3/token")
    assert user.stream("renew", session_id=first["session_id"], token_number=1).status == 502
    fake_assemblyai.clear_faults()
    stop = user.stream("stop", session_id=first["session_id"]).body
    assert (stop["duration_minutes"], stop["credits_used"], stop["credits_refunded"]) == (10, 100, 100)
    assert user.available() == 400 and user.owned() == 400


def test_renew_of_a_legacy_or_stopped_session_is_409(caller, clock):
    user = caller()
    legacy = user.stream("start").body
    r = user.stream("renew", session_id=legacy["session_id"], token_number=1)
    assert r.status == 409 and r.body["code"] == "not_renewable"
    renewing = user.stream("start", renewable=True).body
    user.stream("stop", session_id=renewing["session_id"])
    clock.advance(560)
    r = user.stream("renew", session_id=renewing["session_id"], token_number=1)
    assert r.status == 409 and r.body["code"] == "session_not_active"


@pytest.mark.parametrize("rounds", range(4))
def test_stop_renew_and_cleanup_racing_settle_once(caller, clock, rounds):
    user = caller()
    user.make_paying(300)
    first = user.stream("start", renewable=True).body
    session_id = first["session_id"]
    clock.advance(570)

    def race(kind: str) -> object:
        try:
            if kind == "stop":
                return streaming.stop(user.user_id, session_id)
            if kind == "renew":
                return streaming.renew(user.user_id, session_id, 1)
            return streaming.settle_abandoned(session_item(session_id), store.epoch() + 7200)
        except DomainError as error:
            return error

    kinds = ["stop", "renew", "cleanup", "renew", "stop", "cleanup"]
    order = iter(kinds)  # each thread takes the next kind (next() on a list iterator is atomic)
    outcomes = at_once(len(kinds), lambda: race(next(order)))
    item = session_item(session_id)
    assert item["state"] in ("stopped", "settled_by_cleanup")
    reservation = _reservation(session_id)
    assert reservation["state"] == "settled"
    assert reservation["credits_used"] == item["credits_used"]
    assert len(usage_rows(user.user_id, "live")) == 1
    # Whoever won decides the figure, never twice: a stop bills 9:30 (or the 10 minutes a
    # renewal committed), the cleanup bills the last sign of life + 2 minutes of grace.
    assert item["credits_used"] in (20, 100, 120)
    assert user.owned() == 500 - item["credits_used"] and user.available() == user.owned()
    stops = [o for o in outcomes if isinstance(o, dict) and "already_stopped" in o]
    assert sum(not o["already_stopped"] for o in stops) <= 1
    assert ledger.check_invariant(user.user_id).ok

