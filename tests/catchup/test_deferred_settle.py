"""An Ask whose answer came back but whose settle failed: the price is owed, so it is settled
later through the worker's queue (chalicelib.credits.deferred), never released and never twice."""
from __future__ import annotations

import pytest

from chalicelib.credits import ledger
from chalicelib.ops import janitor
from tests.conftest import assert_books_balance, balance, usage_rows

TRANSACT = "TransactWriteItems"
ASK = {"question": "What happened?", "transcript": "A goal was scored in the last minute."}


@pytest.fixture
def answered_but_unsettled(stack, new_user, dynamodb_faults):
    """A user whose Ask was answered while every settle attempt was refused by a conflict."""
    session = new_user()
    user_id = session["user"]["user_id"]
    # the first transaction on reservations is the hold; every settle attempt after it fails
    dynamodb_faults.inject(TRANSACT, "TransactionConflict", table="reservations", skip=1,
                           count=ledger.TRANSIENT_ATTEMPTS)
    status, body = stack.post("/transcription/ask", session["token"], ASK)
    dynamodb_faults.clear()
    return session, user_id, status, body


def test_the_answer_is_given_and_reported_as_charged(answered_but_unsettled):
    session, user_id, status, body = answered_but_unsettled
    assert status == 200, body
    assert body["answer"] and body["credits_used"] == 5
    # as it will be once the queued settle lands: owned 195, nothing held
    assert body["remaining_balance"] == body["credits_balance"] == 195
    assert body["credits_held"] == 0 and body["credits_available"] == 195
    assert usage_rows(user_id) == []  # not settled yet: still held
    assert ledger.get_balance(user_id)["held"] == 5


def test_the_worker_settles_it_once_even_when_the_message_comes_twice(stack, answered_but_unsettled):
    session, user_id, status, _ = answered_but_unsettled
    assert status == 200
    message = stack.receive()
    stack.run_worker(message)
    stack.run_worker(message)  # SQS delivers at least once
    assert balance(user_id) == 195
    assert ledger.get_balance(user_id)["held"] == 0
    [usage] = usage_rows(user_id)
    assert usage["service_type"] == "ask" and int(usage["credits_used"]) == 5
    status, history = stack.get("/transcription/history", session["token"])
    assert status == 200 and [item["kind"] for item in history["items"]] == ["ask"]
    janitor.run()  # nothing left for the janitor to release
    assert balance(user_id) == 195
    assert_books_balance(user_id)


def test_a_worker_that_cannot_settle_yet_asks_for_the_message_again_soon(
        stack, answered_but_unsettled, dynamodb_faults):
    from chalicelib.catchup import worker

    _, user_id, status, _ = answered_but_unsettled
    assert status == 200
    message = stack.receive()
    dynamodb_faults.inject(TRANSACT, "TransactionConflict", table="reservations",
                           count=ledger.TRANSIENT_ATTEMPTS)
    with pytest.raises(worker.RetryLater) as retry:
        stack.run_worker(message)
    assert retry.value.delay == worker.SETTLE_RETRY_SECONDS
    dynamodb_faults.clear()
    stack.run_worker(message)
    assert balance(user_id) == 195 and ledger.get_balance(user_id)["held"] == 0
    assert_books_balance(user_id)
