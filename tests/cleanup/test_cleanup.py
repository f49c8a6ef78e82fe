"""The scheduled cleanup: each case, twice in a row, two runs at once, and the schedule's path."""
from __future__ import annotations

import logging
import uuid

from chalicelib.aws import store
from chalicelib.catchup import jobs as catchup
from chalicelib.credits import ledger
from chalicelib.ops import janitor
from tests.billing.conftest import deliver
from tests.conftest import assert_books_balance, at_once, balance, post_json, usage_rows
from tests.billing.conftest import paid_checkout

SIGNUP = 200
HOUR = 3600


def _run(offset: int = 0, **kwargs) -> dict:
    return janitor.run(now_epoch=store.epoch() + offset, **kwargs)


def _actions(counts: dict) -> dict:
    return {name: counts[name] for name in janitor.ACTIONS if counts[name]}


def _reservation(reservation_id: str) -> dict:
    return store.get("reservations", reservation_id=reservation_id)


def _update(table: str, key: dict, **values) -> None:
    names = {f"#n{i}": name for i, name in enumerate(values)}
    store.ddb().update_item(
        TableName=store.table_name(table), Key=store.key(**key),
        UpdateExpression="SET " + ", ".join(f"#n{i} = :v{i}" for i in range(len(values))),
        ExpressionAttributeNames=names,
        ExpressionAttributeValues={f":v{i}": store.to_attr(v) for i, v in enumerate(values.values())},
    )


# --- live sessions ---------------------------------------------------------------------------


def _start(user, minutes: int) -> dict:
    response = user.stream("start", max_minutes=minutes)
    assert response.status == 200, response.body
    return store.get("sessions", session_id=response.body["session_id"])


def _age(session: dict, started_ago: int, heartbeat_ago: int) -> None:
    """Move a session's start (and its token) into the past, as if time had passed."""
    started = session["started_epoch"] - started_ago
    _update("sessions", {"session_id": session["session_id"]},
            started_epoch=started,
            token_minted_epoch=session["token_minted_epoch"] - started_ago,
            ends_by_epoch=session["ends_by_epoch"] - started_ago,
            last_heartbeat_epoch=started + started_ago - heartbeat_ago)


def test_silent_live_sessions_are_billed_to_their_last_sign_of_life(private_tables, caller):
    silent, alive, overrun, unstarted = caller(), caller(), caller(), caller()
    silent_session = _start(silent, 10)       # one 10-minute token: 100 credits held
    alive_session = _start(alive, 10)
    overrun_session = _start(overrun, 2)      # 20 credits held
    unstarted_session = _start(unstarted, 5)
    # unstarted: the Lambda died between holding the credits and activating the session
    _update("sessions", {"session_id": unstarted_session["session_id"]}, state="starting")
    assert _actions(_run()) == {}             # everyone started just now: all alive

    # silent: started 12 min ago (its token can no longer be open), last heartbeat 5 min
    # ago (7 minutes in), grace 120 s -> 9 minutes billed
    _age(silent_session, started_ago=720, heartbeat_ago=300)
    # overrun: still heartbeating, but past the 2 minutes its token allowed
    _age(overrun_session, started_ago=600, heartbeat_ago=0)
    _age(alive_session, started_ago=0, heartbeat_ago=0)  # started and heard from this second
    counts = _run()
    assert _actions(counts) == {"live_settled": 2}
    assert balance(silent.user_id) == SIGNUP - 90
    assert balance(overrun.user_id) == SIGNUP - 20
    assert balance(alive.user_id) == SIGNUP - 100  # still held: its token may still be open
    assert store.get("sessions", session_id=silent_session["session_id"])["state"] == "settled_by_cleanup"
    assert store.get("users", user_id=silent.user_id)["active_streams"] == 0
    stopped = silent.stream("stop", session_id=silent_session["session_id"])
    assert stopped.status == 200 and stopped.body["already_stopped"] and stopped.body["credits_used"] == 90

    assert _actions(_run()) == {}  # a second run finds nothing left
    assert balance(silent.user_id) == SIGNUP - 90 and len(usage_rows(silent.user_id)) == 1
    assert balance(unstarted.user_id) == SIGNUP - 50  # not long enough to be sure it is dead

    # five minutes later a start that never finished gives everything back (it is surely
    # dead now); the alive session's token may still be open, so it is left alone
    assert _actions(_run(streaming_timeout() + 1)) == {"live_starts_failed": 1}
    assert balance(unstarted.user_id) == SIGNUP
    assert store.get("sessions", session_id=unstarted_session["session_id"])["state"] == "failed"
    assert store.get("users", user_id=unstarted.user_id)["active_streams"] == 0
    # once its token has run out, the session silent since that second: 2 minutes billed
    assert _actions(_run(60 + 600 + 1)) == {"live_settled": 1}
    assert balance(alive.user_id) == SIGNUP - 20
    assert _actions(_run(60 + 600 + 1)) == {}
    assert_books_balance(silent.user_id, alive.user_id, overrun.user_id, unstarted.user_id)


def streaming_timeout() -> int:
    from chalicelib.live import captions

    return captions.STARTING_TIMEOUT_SECONDS


# --- catch-up jobs ---------------------------------------------------------------------------


def _submit(stack, session: dict) -> dict:
    status, body = stack.submit(session["token"], seconds=300, duration_minutes=5)
    assert status == 202, body
    return catchup.load_job(body["job_id"])


def test_a_catchup_stuck_in_the_queue_fails_and_gives_the_credits_back(private_tables, stack, new_user, settings):
    session = new_user()
    user_id = session["user"]["user_id"]
    job = _submit(stack, session)
    assert balance(user_id) == SIGNUP - 50
    stuck_after = settings.cleanup_catchup_stuck_seconds
    assert _actions(_run(stuck_after - 60)) == {}  # SQS may still deliver it
    assert _actions(_run(stuck_after + 1)) == {"catchup_failed": 1}
    assert balance(user_id) == SIGNUP
    view = stack.job(session["token"], job["job_id"])
    assert view["status"] == "failed" and view["credits_used"] == 0 and view["error"] == "processing_failed"
    assert _reservation(job["reservation_id"])["state"] == "released"

    # the message arrives after all: the worker finds the job finished and does nothing
    stack.run_worker(stack.receive())
    assert stack.job(session["token"], job["job_id"])["status"] == "failed"
    assert balance(user_id) == SIGNUP
    assert _actions(_run(stuck_after + 1)) == {}
    assert_books_balance(user_id)


def test_a_dead_workers_job_fails_but_a_live_lease_is_left_alone(
        private_tables, stack, new_user, settings, monkeypatch):
    dead, busy, racing = new_user(), new_user(), new_user()
    dead_job, busy_job, racing_job = _submit(stack, dead), _submit(stack, busy), _submit(stack, racing)
    later = settings.cleanup_catchup_stuck_seconds + 1
    now = store.epoch()
    _update("jobs", {"job_id": dead_job["job_id"]}, status="processing", lease_id="lease-dead",
            lease_expires_at_epoch=now + 300, attempts=3, last_error="transcription_failed")
    _update("jobs", {"job_id": busy_job["job_id"]}, status="processing", lease_id="lease-busy",
            lease_expires_at_epoch=now + later + 300, attempts=1)
    _update("jobs", {"job_id": racing_job["job_id"]}, status="processing", lease_id="lease-new",
            lease_expires_at_epoch=now + later + 300, attempts=1)
    assert _actions(_run(later)) == {"catchup_failed": 1}
    assert catchup.load_job(dead_job["job_id"])["status"] == "failed"
    assert catchup.load_job(dead_job["job_id"])["error"] == "transcription_failed"
    assert balance(dead["user"]["user_id"]) == SIGNUP
    assert catchup.load_job(busy_job["job_id"])["status"] == "processing"
    assert balance(busy["user"]["user_id"]) == SIGNUP - 50
    # racing: the cleanup reads it as it was (queued, long stuck) while a worker has claimed
    # it; the cleanup's transaction is refused and the worker keeps the job, credits held
    load_job = catchup.load_job
    monkeypatch.setattr(janitor.catchup, "load_job",
                        lambda job_id: racing_job if job_id == racing_job["job_id"] else load_job(job_id))
    counts = _run(later)
    assert _actions(counts) == {} and counts["skipped"] == 1
    assert _reservation(racing_job["reservation_id"])["state"] == "held"
    assert store.get("jobs", job_id=racing_job["job_id"])["status"] == "processing"
    assert balance(racing["user"]["user_id"]) == SIGNUP - 50
    assert_books_balance(dead["user"]["user_id"], busy["user"]["user_id"], racing["user"]["user_id"])


# --- other reservations ----------------------------------------------------------------------


def _hold(user_id: str, credits: int = 5, ttl: int = 900, purpose: str = "ask") -> str:
    reservation_id = f"{purpose}#{uuid.uuid4().hex}"
    ledger.reserve(user_id, credits, reservation_id=reservation_id, purpose=purpose,
                   ref_id=uuid.uuid4().hex, ttl_seconds=ttl)
    return reservation_id


def test_reservations_held_past_their_expiry_are_released(private_tables, client, new_user):
    user_id = new_user()["user"]["user_id"]
    expired = _hold(user_id, 5, ttl=900)
    later = _hold(user_id, 7, ttl=3 * HOUR)
    orphan_live = _hold(user_id, 11, ttl=900, purpose="live")  # no session behind it
    assert balance(user_id) == SIGNUP - 23
    assert _actions(_run(600)) == {}
    # out of time: nothing is done, everything is left to the next run
    counts = _run(HOUR, budget_seconds=1e-9)
    assert _actions(counts) == {} and counts["deferred"] > 0
    assert _actions(_run(HOUR)) == {"reservations_released": 2}
    assert _reservation(expired)["state"] == "released"
    assert _reservation(orphan_live)["state"] == "released"
    assert _reservation(later)["state"] == "held"
    assert balance(user_id) == SIGNUP - 7
    assert _actions(_run(HOUR)) == {}

    # the schedule's path: the `cleanup` Lambda invoked with a scheduled event, at the real now
    _update("reservations", {"reservation_id": later}, expires_at="2000-01-01T00:00:00.000Z")
    event = client.events.generate_cw_event(
        source="aws.events", detail_type="Scheduled Event", detail={},
        resources=["arn:aws:events:us-east-1:123456789012:rule/transcription-backend-local-cleanup"],
    )
    response = client.lambda_.invoke("cleanup", event)
    assert set(response.payload) == set(janitor.COUNTS)
    assert _actions(response.payload) == {"reservations_released": 1}
    assert balance(user_id) == SIGNUP
    assert _actions(client.lambda_.invoke("cleanup", event).payload) == {}
    assert_books_balance(user_id)


# --- abandoned checkouts ---------------------------------------------------------------------


def test_checkouts_pending_for_a_day_expire_and_the_index_forgets_finished_ones(
        private_tables, client, buyer, stripe_fake, tap):
    user = buyer()
    status, abandoned = post_json(client, "/credits/purchase", user.token, {"package_id": "starter"})
    assert status == 200, abandoned
    paid = paid_checkout(client, stripe_fake, user.token)
    assert deliver(client, tap.one("checkout.session.completed"))[0] == 200
    assert balance(user.user_id) == SIGNUP + 2000

    assert _actions(_run(23 * HOUR)) == {}
    assert _actions(_run(25 * HOUR)) == {"checkouts_expired": 1, "pending_index_pruned": 1}
    expired = store.get("transactions", transaction_id=abandoned["transaction_id"])
    assert expired["status"] == "expired" and "pending_shard" not in expired
    completed = store.get("transactions", transaction_id=paid["transaction_id"])
    assert completed["status"] == "completed" and "pending_shard" not in completed
    assert balance(user.user_id) == SIGNUP + 2000
    assert _actions(_run(25 * HOUR)) == {}

    # Stripe reports the abandoned one paid after all: the money wins over our expiry
    stripe_fake.pay(abandoned["session_id"])
    assert deliver(client, tap.one("checkout.session.completed", abandoned["session_id"]))[0] == 200
    assert store.get("transactions", transaction_id=abandoned["transaction_id"])["status"] == "completed"
    assert balance(user.user_id) == SIGNUP + 2500
    assert_books_balance(user.user_id)


# --- the books -------------------------------------------------------------------------------


def test_the_books_of_users_touched_since_the_last_run_are_checked(private_tables, caller, new_user, caplog):
    active = caller()
    assert active.ask("What happened?", "A goal was scored.").status == 200  # recorded in the stats
    broken = new_user()["user"]["user_id"]
    reservation = _hold(broken, 5, ttl=900)
    _update("reservations", {"reservation_id": reservation}, expires_at="2000-01-01T00:00:00.000Z")
    # something outside the ledger changed the balance
    store.ddb().update_item(
        TableName=store.table_name("users"), Key=store.key(user_id=broken),
        UpdateExpression="SET credits_balance = credits_balance + :x", ExpressionAttributeValues=store.values(x=7),
    )
    ledger.clear_caches()
    with caplog.at_level(logging.INFO):
        counts = janitor.run()
    assert counts["reservations_released"] == 1  # and so `broken` was touched by this run
    assert counts["invariant_checked"] == 2 and counts["invariant_breaches"] == 1
    breach = [r for r in caplog.records if r.getMessage() == "cleanup.invariant_breach"]
    assert len(breach) == 1 and breach[0].levelno == logging.ERROR
    assert breach[0].fields == {"checked": 2, "breaches": 1}
    finished = [r for r in caplog.records if r.getMessage() == "cleanup.finished"]
    assert finished[-1].fields["invariant_breaches"] == 1 and finished[-1].fields["errors"] == 0


# --- twice, in parallel, on schedule ----------------------------------------------------------


def _everything(client, caller, stack, new_user) -> dict:
    """One of each case; returns what to check afterwards."""
    live_user = caller()
    session = _start(live_user, 10)
    _age(session, started_ago=600, heartbeat_ago=300)
    job_owner = new_user()
    job = _submit(stack, job_owner)
    ask_user = new_user()["user"]["user_id"]
    reservation = _hold(ask_user, 5, ttl=900)
    return {"live": (live_user.user_id, session), "job": (job_owner, job), "ask": (ask_user, reservation)}


def _check_everything(cases: dict) -> None:
    live_user, session = cases["live"]
    assert balance(live_user) == SIGNUP - 70 and len(usage_rows(live_user)) == 1
    owner, job = cases["job"]
    assert balance(owner["user"]["user_id"]) == SIGNUP
    assert catchup.load_job(job["job_id"])["status"] == "failed"
    ask_user, reservation = cases["ask"]
    assert balance(ask_user) == SIGNUP and _reservation(reservation)["state"] == "released"
    assert_books_balance(live_user, owner["user"]["user_id"], ask_user)


EXPECTED = {"live_settled": 1, "catchup_failed": 1, "reservations_released": 1}


def test_twice_in_a_row_the_second_run_does_nothing(private_tables, client, caller, stack, new_user, settings):
    cases = _everything(client, caller, stack, new_user)
    later = settings.cleanup_catchup_stuck_seconds + 1
    assert _actions(_run(later)) == EXPECTED
    second = _run(later)
    assert _actions(second) == {} and second["errors"] == 0
    _check_everything(cases)


def test_two_runs_at_once_settle_everything_exactly_once(private_tables, client, caller, stack, new_user, settings):
    cases = _everything(client, caller, stack, new_user)
    now = store.epoch() + settings.cleanup_catchup_stuck_seconds + 1
    results = at_once(2, lambda: janitor.run(now_epoch=now))  # a run that raises fails the test
    for name, expected in EXPECTED.items():
        assert sum(result[name] for result in results) == expected, (name, results)
    _check_everything(cases)
    assert _actions(janitor.run(now_epoch=now)) == {}
