"""What the ledger tells an operator, and the totals of accounts written before the counters.

The operator log events are the only trace of a caller that asked for something the ledger
did not do (a replay with another amount, a settle above the reservation): they must be
emitted exactly then, at WARNING, with the figures. The user update's `if_not_exists`
fallbacks keep `total_usage` / `total_credits_purchased` right on a user item that has no
such attribute yet (accounts created before the counters existed, or imported).
"""
from __future__ import annotations

import logging

import pytest

from chalicelib.aws import store
from chalicelib.credits import ledger
from tests.ledger.conftest import new_id

pytestmark = pytest.mark.usefixtures("private_tables")


@pytest.fixture
def warnings(caplog):
    caplog.set_level(logging.INFO)

    def events(name: str) -> list[tuple[int, dict]]:
        return [(record.levelno, getattr(record, "fields", {})) for record in caplog.records
                if record.getMessage() == name]

    return events


def test_a_replay_with_another_amount_keeps_the_first_and_is_reported(make_user, warnings):
    user_id = make_user()
    request_id = new_id()
    ledger.charge(user_id, 10, service_type="ask", request_id=request_id)
    ledger.charge(user_id, 10, service_type="ask", request_id=request_id)  # same amount: silent
    assert warnings("ledger.replay_mismatch") == []
    again = ledger.charge(user_id, 12, service_type="ask", request_id=request_id)
    assert (again.replayed, again.credits, again.balance_after) == (True, 10, 190)
    assert warnings("ledger.replay_mismatch") == [(logging.WARNING, {
        "kind": "charge", "record_id": f"charge#{user_id}#{request_id}", "asked": 12, "stored": 10})]


@pytest.mark.parametrize("operation", ["grant", "clawback", "reserve"])
def test_replay_mismatch_of_every_record_kind(make_user, warnings, operation):
    user_id = make_user()
    record_id = new_id()
    if operation == "reserve":
        def call(amount):
            return ledger.reserve(user_id, amount, reservation_id=record_id, purpose="catchup",
                                  ref_id="job", ttl_seconds=60)
    else:
        def call(amount):
            return getattr(ledger, operation)(user_id, amount, source="admin", record_id=record_id)
    call(5)
    assert call(5).replayed and warnings("ledger.replay_mismatch") == []
    assert call(7).replayed
    [(level, fields)] = warnings("ledger.replay_mismatch")
    assert level == logging.WARNING and (fields["asked"], fields["stored"]) == (7, 5)
    assert ledger.get_balance(user_id)["balance"] == {"grant": 205, "clawback": 195, "reserve": 195}[operation]


def test_settling_above_the_reservation_is_capped_and_reported_once(make_user, warnings):
    user_id = make_user()
    exact, above = new_id(), new_id()
    for rid in (exact, above):
        ledger.reserve(user_id, 30, reservation_id=rid, purpose="catchup", ref_id="j", ttl_seconds=60)
    ledger.settle(exact, 30, service_type="catchup")
    assert warnings("ledger.settle_capped") == []
    result = ledger.settle(above, 45, service_type="catchup")
    assert (result.credits_used, result.credits_refunded) == (30, 0)
    assert ledger.settle(above, 45, service_type="catchup").replayed  # the replay is not reported again
    assert warnings("ledger.settle_capped") == [(logging.WARNING, {
        "reservation_id": above, "asked": 45, "reserved": 30})]


def test_totals_start_from_zero_on_a_user_item_without_them(make_user):
    user_id = make_user()
    store.ddb().update_item(  # an account written before the counters existed
        TableName=store.table_name("users"), Key=store.key(user_id=user_id),
        UpdateExpression="REMOVE total_usage, total_credits_purchased",
    )
    ledger.clear_caches()
    ledger.charge(user_id, 3, service_type="ask", request_id=new_id())
    ledger.grant(user_id, 50, source="subscription", record_id=new_id(), purchased=True)
    assert ledger.get_balance(user_id) == {"balance": 247, "held": 0, "owned": 247, "subscription_tier": "free",
                                           "total_credits_purchased": 50, "total_usage": 3}
    ledger.complete_purchase(new_id(), user_id=user_id, credits=20, amount=199, currency="usd",
                             stripe_fields={})
    rid = new_id()
    ledger.reserve(user_id, 10, reservation_id=rid, purpose="catchup", ref_id="j", ttl_seconds=60)
    ledger.settle(rid, 4, service_type="catchup")
    assert ledger.get_balance(user_id) == {"balance": 263, "held": 0, "owned": 263, "subscription_tier": "free",
                                           "total_credits_purchased": 70, "total_usage": 7}
    report = ledger.check_invariant(user_id)
    assert report.ok, report


def test_every_balance_change_is_logged_with_its_figures(make_user, warnings):
    user_id = make_user()
    grant_id, claw_id, request_id, held_id, freed_id, purchase_id = (new_id() for _ in range(6))
    ledger.grant(user_id, 10, source="admin", record_id=grant_id)
    ledger.clawback(user_id, 4, source="refund", record_id=claw_id)
    ledger.complete_purchase(purchase_id, user_id=user_id, credits=50, amount=99, currency="usd",
                             stripe_fields={})
    ledger.charge(user_id, 6, service_type="ask", request_id=request_id)
    ledger.reserve(user_id, 20, reservation_id=held_id, purpose="catchup", ref_id="j", ttl_seconds=60)
    ledger.settle(held_id, 5, service_type="catchup")
    ledger.reserve(user_id, 3, reservation_id=freed_id, purpose="live", ref_id="s", ttl_seconds=60)
    ledger.release(freed_id, reason="provider_failed")
    info = logging.INFO
    assert warnings("ledger.grant") == [(info, {"user_id": user_id, "source": "admin", "credits": 10,
                                                "balance_after": 210})]
    assert warnings("ledger.clawback") == [(info, {"user_id": user_id, "source": "refund", "credits": 4,
                                                   "balance_after": 206})]
    assert warnings("ledger.purchase") == [(info, {"user_id": user_id, "transaction_id": purchase_id,
                                                   "credits": 50, "balance_after": 256})]
    assert warnings("ledger.charge") == [(info, {"user_id": user_id, "service_type": "ask", "credits": 6,
                                                 "balance_after": 250})]
    assert warnings("ledger.reserve") == [
        (info, {"user_id": user_id, "reservation_id": held_id, "credits": 20, "balance_after": 230}),
        (info, {"user_id": user_id, "reservation_id": freed_id, "credits": 3, "balance_after": 242})]
    assert warnings("ledger.settled") == [(info, {"user_id": user_id, "reservation_id": held_id,
                                                  "credits_used": 5, "credits_refunded": 15,
                                                  "balance_after": 245})]
    assert warnings("ledger.released") == [(info, {"user_id": user_id, "reservation_id": freed_id,
                                                   "credits_used": 0, "credits_refunded": 3,
                                                   "balance_after": 245})]
    # replays change nothing and log nothing new
    ledger.grant(user_id, 10, source="admin", record_id=grant_id)
    ledger.charge(user_id, 6, service_type="ask", request_id=request_id)
    assert len(warnings("ledger.grant")) == len(warnings("ledger.charge")) == 1


def test_a_broken_invariant_is_an_error_for_the_operator(make_user, warnings):
    user_id = make_user()
    assert ledger.check_invariant(user_id).ok and warnings("ledger.invariant_broken") == []
    store.ddb().update_item(  # a balance changed outside the ledger
        TableName=store.table_name("users"), Key=store.key(user_id=user_id),
        UpdateExpression="SET credits_balance = credits_balance + :one",
        ExpressionAttributeValues=store.values(one=1),
    )
    report = ledger.check_invariant(user_id)
    assert (report.ok, report.expected, report.actual, report.quiescent) == (False, 200, 201, True)
    assert warnings("ledger.invariant_broken") == [(logging.ERROR, {
        "user_id": user_id, "expected": 200, "actual": 201, "quiescent": True})]
