"""Stripe fulfilment when DynamoDB conflicts, throttles or answers late (tests/faults.py).

Whatever fails, a webhook either took full effect or none: Stripe gets a 503 with
Retry-After (so it redelivers), the event is not recorded as handled (so the redelivery
does the work), and the work is done exactly once.
"""
from __future__ import annotations

import json

from chalicelib.credits import ledger
from tests.billing.conftest import deliver, signed
from tests.billing.test_fulfilment import SIGNUP, _completed_purchase, _purchase, _record, _row
from tests.conftest import assert_books_balance, balance

TRANSACT = "TransactWriteItems"


def deliver_raw(client, event):
    payload, headers = signed(event)
    return client.http.post("/webhooks/stripe", headers=headers, body=payload)


def test_a_purchase_that_keeps_conflicting_is_503_then_granted_once_on_redelivery(
    client, stripe_fake, buyer, tap, dynamodb_faults
):
    user = buyer()
    purchase = _purchase(client, user, "popular")
    stripe_fake.pay(purchase["session_id"])
    completed = tap.one("checkout.session.completed")
    fault = dynamodb_faults.inject(TRANSACT, "TransactionConflict", table="transactions")

    response = deliver_raw(client, completed)
    body = json.loads(response.body)
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert (body["code"], body["retry_after"]) == ("ledger_busy", 1)
    assert dynamodb_faults.get(fault)["fired"] == ledger.TRANSIENT_ATTEMPTS
    assert _record(completed) is None  # not "handled": the redelivery must do the work
    assert _row(purchase["transaction_id"])["status"] == "pending"
    assert balance(user.user_id) == SIGNUP

    dynamodb_faults.clear()
    assert deliver(client, completed) == (200, {"received": True, "status": "processed"})
    assert deliver(client, completed)[0] == 200
    assert balance(user.user_id) == SIGNUP + 2000
    assert _row(purchase["transaction_id"])["status"] == "completed"
    assert_books_balance(user.user_id)


def test_a_conflict_that_clears_is_retried_inside_one_delivery(client, stripe_fake, buyer, tap,
                                                                dynamodb_faults):
    user = buyer()
    purchase = _purchase(client, user, "popular")
    stripe_fake.pay(purchase["session_id"])
    dynamodb_faults.inject(TRANSACT, "ThrottlingError", table="transactions", count=2)
    status, body = deliver(client, tap.one("checkout.session.completed"))
    assert (status, body["status"]) == (200, "processed")
    assert balance(user.user_id) == SIGNUP + 2000
    assert_books_balance(user.user_id)


def test_a_grant_whose_answer_was_lost_is_granted_once(client, stripe_fake, buyer, tap,
                                                      dynamodb_faults, env_override):
    env_override(AWS_READ_TIMEOUT_SECONDS="0.5")
    user = buyer()
    purchase = _purchase(client, user, "popular")
    stripe_fake.pay(purchase["session_id"])
    completed = tap.one("checkout.session.completed")
    dynamodb_faults.inject(TRANSACT, "timeout", table="transactions", count=1, delay=1.0)
    assert deliver(client, completed) == (200, {"received": True, "status": "processed"})
    assert balance(user.user_id) == SIGNUP + 2000
    assert_books_balance(user.user_id)


def test_a_refund_that_keeps_being_throttled_is_503_then_clawed_back_once(
    client, stripe_fake, buyer, tap, dynamodb_faults
):
    user = buyer()
    purchase, session = _completed_purchase(client, stripe_fake, tap, user)
    stripe_fake.refund(session["payment_intent"])
    refunded = tap.take("charge.refunded")[-1]
    dynamodb_faults.inject(TRANSACT, "ProvisionedThroughputExceeded", table="transactions")

    response = deliver_raw(client, refunded)
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert balance(user.user_id) == SIGNUP + 2000 and _record(refunded) is None

    dynamodb_faults.clear()
    assert deliver(client, refunded)[0] == 200
    assert deliver(client, refunded)[0] == 200
    assert balance(user.user_id) == SIGNUP
    assert _row(purchase["transaction_id"])["credits_clawed_back"] == 2000
    assert_books_balance(user.user_id)
