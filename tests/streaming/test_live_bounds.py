"""Whatever the client does, the provider time its tokens allow minus what is billed is
bounded by the token length (README, "The bound"). Each hostile behaviour, measured on the
sandbox socket: what AssemblyAI would bill (the sockets' durations) against the bill."""
from __future__ import annotations

import time

from chalicelib.aws import store
from chalicelib.credits import ledger
from chalicelib.ops import janitor
from tests.conftest import usage_rows
from tests.streaming.conftest import session_item
from tests.streaming.sandbox_client import SandboxSocket


def _stream_until_closed(socket: SandboxSocket, clock, limit_seconds: int) -> int | None:
    """Keep sending audio second by second until the server closes the socket."""
    for _ in range(limit_seconds):
        try:
            socket.send_audio(1)
        except Exception:  # closed under us
            break
        clock.advance(1)
        socket.drain()
        if socket.ws.close_code is not None:
            break
    return socket.wait_closed()


def _billed_seconds(user_id: str) -> int:
    [usage] = usage_rows(user_id, "live")
    return usage["credits_used"] // 10 * 60


def _allowed_seconds(fake, tokens: list[str]) -> int:
    return sum(fake.token_info(t).max_session_duration_seconds for t in tokens)


def test_stop_at_once_and_keep_streaming(caller, clock, fake_assemblyai):
    user = caller()
    user.make_paying(500)
    answer = user.stream("start", renewable=True).body
    socket = SandboxSocket(answer["websocket_url"])
    stop = user.stream("stop", session_id=answer["session_id"]).body
    assert stop["credits_used"] == 10
    # The socket is out of our reach: AssemblyAI ends it at the token's duration.
    assert _stream_until_closed(socket, clock, 700) == 3008
    assert socket.of_type("Termination") and socket.of_type("Error")[0]["error_code"] == 3008
    # And the stopped session cannot get another token.
    assert user.stream("renew", session_id=answer["session_id"], token_number=1).status == 409
    provider = fake_assemblyai.provider_seconds({answer["token"]})
    assert provider == _allowed_seconds(fake_assemblyai, [answer["token"]]) == 600
    assert provider - _billed_seconds(user.user_id) == 540 <= 10 * 60  # LIVE_TOKEN_MINUTES


def test_legacy_start_stopped_at_once_is_bounded_by_its_one_token(caller, clock, fake_assemblyai):
    user = caller()
    user.make_paying(500)
    answer = user.stream("start").body
    socket = SandboxSocket(answer["websocket_url"])
    user.stream("stop", session_id=answer["session_id"])
    assert _stream_until_closed(socket, clock, 1900) == 3008
    provider = fake_assemblyai.provider_seconds({answer["token"]})
    assert provider == 1800
    assert provider - _billed_seconds(user.user_id) == 1740 <= 30 * 60  # LIVE_LEGACY_TOKEN_MINUTES


def test_never_stop_never_heartbeat_with_an_expired_access_token(caller, clock, fake_assemblyai, client):
    """Renews twice, then its access token expires: no renew, no stop ever arrives again."""
    from chalicelib.accounts.tokens import Identity, issue_access_token
    from tests.conftest import ORIGIN, json_headers

    user = caller()
    user.make_paying(500)
    answer = user.stream("start", renewable=True).body
    session_id, tokens = answer["session_id"], [answer["token"]]
    socket = SandboxSocket(answer["websocket_url"])
    for _ in range(2):
        clock.advance(answer["renew_in_seconds"])
        answer = user.stream("renew", session_id=session_id, token_number=answer["token_number"]).body
        fresh = SandboxSocket(answer["websocket_url"])
        socket.terminate()
        socket = fresh
        tokens.append(answer["token"])
    expired = issue_access_token(Identity(user.user_id, "x@example.com"), now=time.time() - 3600)
    refused = client.http.post("/transcription/stream", headers=json_headers(expired, origin=ORIGIN),
                               body=f'{{"action": "stop", "session_id": "{session_id}"}}')
    assert refused.status_code == 401
    assert _stream_until_closed(socket, clock, 700) == 3008
    assert session_item(session_id)["state"] == "active"
    # The hourly cleanup settles it once its last token can no longer be open.
    counts = janitor.run(now_epoch=store.epoch() + 3600)
    assert counts["live_settled"] == 1
    item = session_item(session_id)
    assert item["state"] == "settled_by_cleanup"
    billed = _billed_seconds(user.user_id)
    # Last sign of life (the second renew, 18:30) + 2 minutes of grace: 21 minutes.
    assert (billed, item["duration_minutes"]) == (1260, 21)
    allowed = _allowed_seconds(fake_assemblyai, tokens)
    provider = fake_assemblyai.provider_seconds(set(tokens))
    assert allowed == 1800 and provider <= allowed
    assert allowed - billed <= 600 and provider - billed <= 600
    assert ledger.check_invariant(user.user_id).ok


def test_a_legacy_session_never_stopped_is_billed_the_grace(caller, clock, fake_assemblyai):
    user = caller()
    user.make_paying(500)
    answer = user.stream("start").body
    socket = SandboxSocket(answer["websocket_url"])
    assert _stream_until_closed(socket, clock, 1900) == 3008
    janitor.run(now_epoch=store.epoch() + 3600)
    assert session_item(answer["session_id"])["state"] == "settled_by_cleanup"
    billed = _billed_seconds(user.user_id)
    assert billed == 120  # LIVE_HEARTBEAT_GRACE_SECONDS, rounded up
    assert fake_assemblyai.provider_seconds({answer["token"]}) - billed == 1680 <= 30 * 60
    assert user.owned() == 700 - 20


def test_heartbeats_only_ever_add_to_a_never_stopped_session(caller, clock, fake_assemblyai):
    user = caller()
    user.make_paying(500)
    answer = user.stream("start").body
    for _ in range(10):
        clock.advance(60)
        assert user.stream("heartbeat", session_id=answer["session_id"]).status == 200
    clock.advance(3600)
    janitor.run(now_epoch=store.epoch())
    assert _billed_seconds(user.user_id) == (600 + 120)


def test_start_stop_cycles_are_capped_per_day(caller, clock, live, fake_assemblyai):
    """Each session may leave up to one token unpaid: the daily cap bounds it per account."""
    live(LIVE_MAX_SESSIONS_PER_DAY=3)
    user = caller()
    user.make_paying(500)
    for _ in range(3):
        session_id = user.stream("start", renewable=True).body["session_id"]
        assert user.stream("stop", session_id=session_id).status == 200
    minted = len(fake_assemblyai.tokens)
    r = user.stream("start", renewable=True)
    assert r.status == 429 and r.body["code"] == "too_many_sessions_today"
    assert int(r.headers["Retry-After"]) <= 86400
    assert len(fake_assemblyai.tokens) == minted and user.available() == 700 - 30
    clock.advance(86400)
    assert user.stream("start", renewable=True).status == 200


def test_a_start_refused_for_credits_does_not_count_against_the_day(caller, live):
    live(LIVE_MAX_SESSIONS_PER_DAY=1)
    user = caller()
    user.set_balance(5)
    assert user.stream("start").status == 402
    user.make_paying(100)
    assert user.stream("start").status == 200
