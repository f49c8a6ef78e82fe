"""The catch-up worker's finish when DynamoDB conflicts or throttles (tests/faults.py).

A finish that DynamoDB refused for a transient reason wrote nothing: the worker must put
the job back and have SQS redeliver the message, never take the refusal for "already
done" and drop the message (which would leave the job in `processing` for ever).
"""
from __future__ import annotations

import pytest

from chalicelib.catchup import jobs as catchup
from chalicelib.credits import ledger
from tests.catchup.test_jobs import PRICE, accepted
from tests.conftest import assert_books_balance

TRANSACT = "TransactWriteItems"


def test_a_settle_that_keeps_conflicting_is_redelivered_and_bills_once(stack, new_user, dynamodb_faults):
    user = new_user()
    body = accepted(stack, user["token"], seconds=60, duration_minutes=3)
    message = stack.receive()
    transcripts = len(stack.assemblyai.transcript_ids)
    fault = dynamodb_faults.inject(TRANSACT, "TransactionConflict", table="jobs")
    with pytest.raises(Exception, match="retried"):
        stack.run_worker(message)
    assert dynamodb_faults.get(fault)["fired"] == ledger.TRANSIENT_ATTEMPTS
    job = catchup.load_job(body["job_id"])
    assert job["status"] == "queued" and job["last_error"] == "processing_failed"
    assert stack.balance(user["token"]) == 200 - PRICE  # the measured minute is still reserved

    dynamodb_faults.clear()
    stack.run_worker(message)  # SQS redelivers it
    assert len(stack.assemblyai.transcript_ids) == transcripts + 1  # the saved transcript is reused
    job = stack.job(user["token"], body["job_id"])
    assert job["status"] == "completed" and job["credits_used"] == PRICE
    assert stack.balance(user["token"]) == 200 - PRICE
    assert_books_balance(user["user"]["user_id"])


def test_a_throttled_finish_after_the_reservation_expired_is_redelivered_not_swallowed(
    stack, new_user, dynamodb_faults
):
    """The reservation was released by cleanup (it expired) before the worker finished: the
    worker records the job as completed without a charge, in a transaction of its own. If
    DynamoDB throttles that transaction, the message must come back."""
    user = new_user()
    body = accepted(stack, user["token"], seconds=60, duration_minutes=3)
    message = stack.receive()
    job = catchup.load_job(body["job_id"])
    ledger.release(job["reservation_id"], reason="expired")  # what cleanup does after expiry
    ledger.clear_caches()  # as another Lambda instance: the reservation is read, not guessed
    fault = dynamodb_faults.inject(TRANSACT, "ThrottlingError", table="jobs")
    with pytest.raises(Exception, match="retried"):
        stack.run_worker(message)
    assert dynamodb_faults.get(fault)["fired"] >= 1
    assert catchup.load_job(body["job_id"])["status"] == "queued"

    dynamodb_faults.clear()
    stack.run_worker(message)
    job = stack.job(user["token"], body["job_id"])
    assert job["status"] == "completed" and job["credits_used"] == 0
    assert stack.balance(user["token"]) == 200
    assert_books_balance(user["user"]["user_id"])
