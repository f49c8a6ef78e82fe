"""Every webhook event's effect, exactly once, in any order (through chalice's test client).

The events are the Stripe fake's own (real shapes, signed like Stripe), delivered by the
test so it can repeat, reorder and parallelise them.
"""
from __future__ import annotations

import threading
import time

import pytest

from chalicelib.aws import store
from chalicelib.credits import ledger
from chalicelib.core.errors import InsufficientCredits
from devstack.fakes.stripe_signing import build_event
from tests.billing.conftest import EventTap, deliver, user_item
from tests.conftest import assert_books_balance, at_once, balance, post_json

SIGNUP = 200


def _purchase(client, user, package_id: str = "starter") -> dict:
    status, body = post_json(client, "/credits/purchase", user.token, {"package_id": package_id})
    assert status == 200, body
    return body


def _row(transaction_id: str) -> dict:
    return store.get("transactions", transaction_id=transaction_id)


def _deliver_all(client, events) -> list[dict]:
    bodies = []
    for event in events:
        status, body = deliver(client, event)
        assert status == 200, body
        bodies.append(body)
    return bodies


def _record(event: dict) -> dict | None:
    return store.get("stripe-events", event_id=event["id"])


# --- packs -------------------------------------------------------------------------------


def test_paid_checkout_grants_the_pack_once_and_completes_the_row(client, stripe_fake, buyer, tap):
    user = buyer()
    purchase = _purchase(client, user, "popular")
    stripe_fake.pay(purchase["session_id"])
    completed = tap.one("checkout.session.completed")
    status, body = deliver(client, completed)
    assert (status, body) == (200, {"received": True, "status": "processed"})

    assert balance(user.user_id) == SIGNUP + 2000
    row = _row(purchase["transaction_id"])
    assert row["status"] == "completed" and row["completed_at"]
    assert row["payment_intent"] == completed["data"]["object"]["payment_intent"]
    record = _record(completed)
    assert record["status"] == "processed" and record["transaction_id"] == purchase["transaction_id"]
    assert 29 * 86400 < record["expires_at_epoch"] - time.time() <= 30 * 86400
    assert user_item(user.user_id)["total_credits_purchased"] == 2000

    # a redelivery is acknowledged and changes nothing
    assert deliver(client, completed)[0] == 200
    assert balance(user.user_id) == SIGNUP + 2000
    assert_books_balance(user.user_id)


def test_the_same_event_ten_times_in_parallel_grants_once(client, stripe_fake, buyer, tap):
    user = buyer()
    purchase = _purchase(client, user, "power")
    stripe_fake.pay(purchase["session_id"])
    completed = tap.one("checkout.session.completed")
    assert at_once(10, lambda: deliver(client, completed)[0]) == [200] * 10
    assert balance(user.user_id) == SIGNUP + 5000
    assert_books_balance(user.user_id)


def test_completed_and_async_succeeded_for_one_session_grant_once(client, stripe_fake, buyer, tap):
    user = buyer()
    purchase = _purchase(client, user)
    stripe_fake.pay(purchase["session_id"])
    completed = tap.one("checkout.session.completed")
    # Stripe would not send both for a card payment, but a second event type for the same
    # session must not grant again: the grant is keyed by the session's purchase row.
    succeeded = build_event("checkout.session.async_payment_succeeded", completed["data"]["object"])
    _deliver_all(client, [completed, succeeded, completed])
    assert balance(user.user_id) == SIGNUP + 500
    assert_books_balance(user.user_id)


def test_delayed_payment_waits_then_succeeds(client, stripe_fake, buyer, tap):
    user = buyer()
    purchase = _purchase(client, user)
    stripe_fake.pay(purchase["session_id"], async_payment=True)
    _deliver_all(client, tap.take())
    assert _row(purchase["transaction_id"])["status"] == "awaiting_payment"
    assert balance(user.user_id) == SIGNUP

    stripe_fake.complete_async_payment(purchase["session_id"], succeeded=True)
    _deliver_all(client, tap.take("checkout.session.async_payment_succeeded"))
    assert _row(purchase["transaction_id"])["status"] == "completed"
    assert balance(user.user_id) == SIGNUP + 500
    assert_books_balance(user.user_id)


def test_delayed_payment_that_fails_is_marked_failed(client, stripe_fake, buyer, tap):
    user = buyer()
    purchase = _purchase(client, user)
    stripe_fake.pay(purchase["session_id"], async_payment=True)
    stripe_fake.complete_async_payment(purchase["session_id"], succeeded=False)
    _deliver_all(client, tap.take())
    assert _row(purchase["transaction_id"])["status"] == "failed"
    assert balance(user.user_id) == SIGNUP


def test_expired_session_is_marked_expired(client, stripe_fake, buyer, tap):
    user = buyer()
    purchase = _purchase(client, user)
    stripe_fake.expire(purchase["session_id"])
    _deliver_all(client, tap.take())
    assert _row(purchase["transaction_id"])["status"] == "expired"
    assert balance(user.user_id) == SIGNUP


def test_expired_arriving_after_completed_does_not_uncomplete(client, stripe_fake, buyer, tap):
    user = buyer()
    purchase = _purchase(client, user)
    stripe_fake.pay(purchase["session_id"])
    completed = tap.one("checkout.session.completed")
    session = dict(completed["data"]["object"], status="expired", payment_status="unpaid")
    late_expired = build_event("checkout.session.expired", session)
    _deliver_all(client, [completed, late_expired])
    assert _row(purchase["transaction_id"])["status"] == "completed"
    assert _record(late_expired)["reason"] == "stale"
    assert balance(user.user_id) == SIGNUP + 500

    # and a payment Stripe reports for a row we had closed still counts (money received wins)
    other = _purchase(client, user)
    stripe_fake.pay(other["session_id"])
    paid = tap.one("checkout.session.completed", other["session_id"])
    early_expired = build_event("checkout.session.expired", dict(paid["data"]["object"], status="expired"))
    _deliver_all(client, [early_expired, paid])
    assert _row(other["transaction_id"])["status"] == "completed"
    assert balance(user.user_id) == SIGNUP + 1000
    assert_books_balance(user.user_id)


def test_unknown_session_or_user_is_recorded_for_an_operator_and_grants_nothing(client, stripe_fake, buyer, tap):
    user = buyer()
    purchase = _purchase(client, user)
    stripe_fake.pay(purchase["session_id"])
    session = tap.one("checkout.session.completed")["data"]["object"]

    forged_metadata = build_event("checkout.session.completed",
                                  dict(session, metadata={**session["metadata"], "transaction_id": "nope"}))
    other_user = build_event("checkout.session.completed",
                             dict(session, client_reference_id="someone-else",
                                  metadata={**session["metadata"], "user_id": "someone-else"}))
    no_metadata = build_event("checkout.session.completed", dict(session, id="cs_test_foreign", metadata={}))
    bodies = _deliver_all(client, [forged_metadata, other_user, no_metadata])
    assert [b["status"] for b in bodies] == ["orphaned"] * 3
    assert [_record(e)["reason"] for e in (forged_metadata, other_user, no_metadata)] == [
        "unknown_transaction", "user_mismatch", "unknown_transaction"]
    assert balance(user.user_id) == SIGNUP
    assert _row(purchase["transaction_id"])["status"] == "pending"


# --- refunds and disputes --------------------------------------------------------------------


def _completed_purchase(client, stripe_fake, tap, user, package_id="popular") -> tuple[dict, dict]:
    purchase = _purchase(client, user, package_id)
    stripe_fake.pay(purchase["session_id"])
    completed = tap.one("checkout.session.completed", purchase["session_id"])
    deliver(client, completed)
    return purchase, completed["data"]["object"]


def test_partial_then_full_refund_claws_back_proportionally_once(client, stripe_fake, buyer, tap):
    user = buyer()
    purchase, session = _completed_purchase(client, stripe_fake, tap, user)  # 2000 credits for 999
    assert balance(user.user_id) == SIGNUP + 2000
    stripe_fake.refund(session["payment_intent"], 333)
    first = tap.take("charge.refunded")[-1]
    _deliver_all(client, [first, first])
    taken_first = 2000 * 333 // 999
    assert balance(user.user_id) == SIGNUP + 2000 - taken_first

    stripe_fake.refund(session["payment_intent"])  # the rest
    second = tap.take("charge.refunded")[-1]
    assert second["data"]["object"]["amount_refunded"] == 999
    _deliver_all(client, [second, first, second])  # the old event again changes nothing
    assert balance(user.user_id) == SIGNUP
    row = _row(purchase["transaction_id"])
    assert (row["refunded_amount"], row["credits_clawed_back"]) == (999, 2000)
    assert_books_balance(user.user_id)


def test_refunds_delivered_in_parallel_and_out_of_order_take_the_right_total(client, stripe_fake, buyer, tap):
    user = buyer()
    _, session = _completed_purchase(client, stripe_fake, tap, user)
    for amount in (100, 200, 300):
        stripe_fake.refund(session["payment_intent"], amount)
    refunds = tap.take("charge.refunded")
    threads = [threading.Thread(target=deliver, args=(client, event)) for event in reversed(refunds * 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert balance(user.user_id) == SIGNUP + 2000 - 2000 * 600 // 999
    assert_books_balance(user.user_id)


def test_refund_before_completion_is_applied_when_the_purchase_completes(client, stripe_fake, buyer, tap):
    user = buyer()
    purchase = _purchase(client, user, "popular")
    stripe_fake.pay(purchase["session_id"])
    stripe_fake.refund(stripe_fake.get(purchase["session_id"])["payment_intent"], 500)
    refunded = tap.one("charge.refunded")
    status, body = deliver(client, refunded)
    assert status == 200 and _record(refunded)["reason"] == "recorded_until_completed"
    assert balance(user.user_id) == SIGNUP

    _deliver_all(client, [tap.one("checkout.session.completed")])
    assert balance(user.user_id) == SIGNUP + 2000 - 2000 * 500 // 999
    assert _row(purchase["transaction_id"])["status"] == "completed"
    assert_books_balance(user.user_id)


def test_refund_after_spending_goes_negative_and_then_spends_are_refused(client, stripe_fake, buyer, tap):
    user = buyer()
    _, session = _completed_purchase(client, stripe_fake, tap, user, "starter")
    ledger.charge(user.user_id, SIGNUP + 450, service_type="test", request_id=f"spend-{user.user_id}")
    assert balance(user.user_id) == 50
    stripe_fake.refund(session["payment_intent"])
    _deliver_all(client, tap.take("charge.refunded"))
    assert balance(user.user_id) == 50 - 500
    with pytest.raises(InsufficientCredits):
        ledger.charge(user.user_id, 1, service_type="test", request_id=f"spend2-{user.user_id}")
    assert balance(user.user_id) == -450
    assert_books_balance(user.user_id)


def test_dispute_claws_back_the_purchase_and_flags_the_account(client, stripe_fake, buyer, tap):
    user = buyer()
    purchase, session = _completed_purchase(client, stripe_fake, tap, user)
    stripe_fake.refund(session["payment_intent"], 333)
    stripe_fake.dispute(stripe_fake.get(session["payment_intent"])["latest_charge"])
    _deliver_all(client, tap.take("charge.refunded") + tap.take("charge.dispute.created") * 2)
    assert balance(user.user_id) == SIGNUP
    flagged = user_item(user.user_id)
    assert flagged["flagged"] is True and flagged["flagged_reason"] == "dispute"
    assert _row(purchase["transaction_id"])["credits_clawed_back"] == 2000
    assert_books_balance(user.user_id)


def test_a_charge_we_do_not_know_is_orphaned(client, stripe_fake):
    charge = {"id": "ch_unknown", "object": "charge", "amount": 999, "amount_refunded": 999,
              "payment_intent": "pi_unknown", "metadata": {}}
    status, body = deliver(client, build_event("charge.refunded", charge))
    assert status == 200 and body["status"] == "orphaned"


# --- subscriptions -------------------------------------------------------------------------


def _subscribe_and_pay(client, stripe_fake, tap, user, plan_id="basic_monthly") -> dict:
    status, body = post_json(client, "/credits/subscribe", user.token, {"plan_id": plan_id})
    assert status == 200, body
    stripe_fake.pay(body["session_id"])
    _deliver_all(client, tap.take())
    return stripe_fake.get(stripe_fake.get(body["session_id"])["subscription"])


def test_subscription_grants_each_paid_period_once_and_follows_the_status(client, stripe_fake, buyer, tap):
    user = buyer()
    subscription = _subscribe_and_pay(client, stripe_fake, tap, user)
    state = user_item(user.user_id)
    assert (state["subscription_tier"], state["subscription_status"]) == ("basic", "active")
    assert state["subscription_id"] == subscription["id"]
    assert balance(user.user_id) == SIGNUP + 1500
    first_invoice = tap.take("invoice.paid")[0]
    assert deliver(client, first_invoice)[1]["status"] == "processed"  # acknowledged ...
    assert balance(user.user_id) == SIGNUP + 1500                        # ... once

    status, body = post_json(client, "/credits/subscribe", user.token, {"plan_id": "pro_monthly"})
    assert status == 409 and body["code"] == "already_subscribed"

    renewals = EventTap(stripe_fake)
    stripe_fake.renew(subscription["id"])
    stripe_fake.renew(subscription["id"])
    assert len(renewals.take("invoice.paid")) == 2
    _deliver_all(client, renewals.take())
    _deliver_all(client, renewals.take("invoice.paid"))  # and the invoices again
    assert balance(user.user_id) == SIGNUP + 3 * 1500

    stripe_fake.fail_invoice(subscription["id"])
    _deliver_all(client, tap.take("invoice.payment_failed") + tap.take("customer.subscription.updated")[-1:])
    state = user_item(user.user_id)
    assert (state["subscription_tier"], state["subscription_status"]) == ("basic", "past_due")
    assert balance(user.user_id) == SIGNUP + 3 * 1500

    stripe_fake.cancel_subscription(subscription["id"])
    deleted = tap.one("customer.subscription.deleted")
    _deliver_all(client, [deleted])
    state = user_item(user.user_id)
    assert (state["subscription_tier"], state["subscription_status"]) == ("free", "canceled")

    # an older "active" update arriving late (a new event id: not caught as a duplicate)
    # cannot revive it
    old = tap.take("customer.subscription.updated")[0]
    assert old["data"]["object"]["status"] == "active"
    stale = build_event(old["type"], old["data"]["object"], created=old["created"])
    assert deliver(client, stale)[1]["status"] == "processed"
    assert _record(stale)["reason"] == "stale"
    assert user_item(user.user_id)["subscription_tier"] == "free"
    assert balance(user.user_id) == SIGNUP + 3 * 1500  # allowances already granted stay
    assert_books_balance(user.user_id)


def test_subscription_events_for_an_unknown_user_are_orphaned(client, stripe_fake, buyer, tap):
    user = buyer()
    _subscribe_and_pay(client, stripe_fake, tap, user)
    invoice = dict(tap.take("invoice.paid")[0]["data"]["object"], id="in_foreign")
    invoice["parent"] = {"type": "subscription_details",
                         "subscription_details": {"subscription": "sub_foreign", "metadata": {"user_id": "ghost"}}}
    status, body = deliver(client, build_event("invoice.paid", invoice))
    assert status == 200 and body["status"] == "orphaned"
    assert balance(user.user_id) == SIGNUP + 1500


def test_a_late_incomplete_or_foreign_subscription_event_changes_nothing(client, stripe_fake, buyer, tap):
    """Same-second events arrive in any order: `incomplete` (pre-payment) never overwrites
    `active`, and the end of a subscription that is not the user's current one is ignored."""
    user = buyer()
    subscription = _subscribe_and_pay(client, stripe_fake, tap, user)
    created = tap.one("customer.subscription.created")
    late = build_event(created["type"], dict(created["data"]["object"], status="incomplete"),
                       created=created["created"])
    assert deliver(client, late)[1]["status"] == "ignored"
    other = build_event("customer.subscription.deleted",
                        dict(subscription, id="sub_older_one", status="canceled"))
    assert deliver(client, other)[1]["status"] == "processed"
    assert _record(other)["reason"] == "stale"
    state = user_item(user.user_id)
    assert (state["subscription_tier"], state["subscription_status"]) == ("basic", "active")
