"""Every ledger record as stored, field by field: what /credits/transactions, history,
analytics, the cleanup job and an auditor read back."""
from __future__ import annotations

import re

import pytest

from chalicelib.aws import store
from chalicelib.core.errors import Conflict
from chalicelib.credits import ledger
from chalicelib.web.errors import status_of
from tests.conftest import usage_rows
from tests.ledger.conftest import new_id

pytestmark = pytest.mark.usefixtures("private_tables")

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def without_times(item: dict, *names: str) -> dict:
    """The item without its timestamps, after checking each is an ISO time."""
    for name in names:
        assert ISO.match(str(item[name])), (name, item.get(name))
    return {k: v for k, v in item.items() if k not in names}


def test_grant_and_clawback_rows(make_user):
    user_id = make_user()
    record = new_id()
    ledger.grant(user_id, 40, source="subscription", record_id=record, amount=999, currency="eur",
                 purchased=True, metadata={"plan_id": "pro"})
    row = store.get("transactions", transaction_id=f"grant#subscription#{record}")
    assert without_times(row, "created_at", "completed_at") == {
        "transaction_id": f"grant#subscription#{record}", "user_id": user_id, "kind": "grant",
        "source": "subscription", "credits": 40, "amount": 999, "currency": "eur", "status": "completed",
        "purchased": True, "balance_after": 240, "metadata": {"plan_id": "pro"}}
    ledger.clawback(user_id, 15, source="refund", record_id=record, metadata={"transaction_id": "t"})
    row = store.get("transactions", transaction_id=f"clawback#refund#{record}")
    assert without_times(row, "created_at", "completed_at") == {
        "transaction_id": f"clawback#refund#{record}", "user_id": user_id, "kind": "clawback",
        "source": "refund", "credits": 15, "status": "completed", "balance_after": 225,
        "metadata": {"transaction_id": "t"}}


def test_purchase_row_completed_from_nothing(make_user):
    user_id = make_user()
    transaction_id = new_id()
    ledger.complete_purchase(transaction_id, user_id=user_id, credits=100, amount=499, currency="usd",
                             stripe_fields={"payment_intent": "pi_1", "stripe_session_id": None})
    row = store.get("transactions", transaction_id=transaction_id)
    assert without_times(row, "created_at", "completed_at") == {
        "transaction_id": transaction_id, "user_id": user_id, "kind": "purchase", "source": "purchase",
        "credits": 100, "amount": 499, "currency": "usd", "status": "completed", "balance_after": 300,
        "payment_intent": "pi_1"}
    assert row["created_at"] == row["completed_at"]


def test_charge_guard_and_usage_row(make_user):
    user_id = make_user()
    request_id = new_id()
    result = ledger.charge(user_id, 6, service_type="ask", request_id=request_id, metadata={"q": 1})
    guard = store.get("reservations", reservation_id=f"charge#{user_id}#{request_id}")
    assert without_times(guard, "created_at") == {
        "reservation_id": f"charge#{user_id}#{request_id}", "kind": "charge", "user_id": user_id,
        "state": "charged", "amount": 6, "credits_used": 6, "balance_after": 194,
        "usage_timestamp": result.record_id, "request_id": request_id, "service_type": "ask",
        "expires_at_epoch": ledger.closed_expiry(guard["created_at"])}  # closed when written: it expires
    [row] = usage_rows(user_id)
    assert row == {"user_id": user_id, "timestamp": result.record_id, "service_type": "ask",
                   "credits_used": 6, "balance_after": 194, "metadata": {"q": 1}, "request_id": request_id}


def test_reservation_through_settle_and_release(make_user):
    user_id = make_user()
    settled_id, released_id = new_id(), new_id()
    held = ledger.reserve(user_id, 30, reservation_id=settled_id, purpose="catchup", ref_id="job1",
                          ttl_seconds=60, slot=("active_jobs", 3))
    item = store.get("reservations", reservation_id=settled_id)
    assert without_times(item, "created_at", "expires_at") == {
        "reservation_id": settled_id, "kind": "reservation", "user_id": user_id, "amount": 30,
        "state": "held", "held_shard": ledger.held_shard(settled_id), "purpose": "catchup",
        "ref_id": "job1", "slot": "active_jobs", "balance_after": 170, "counts_held": True}
    assert held.expires_at == item["expires_at"] and held.slot == "active_jobs"
    assert store.get("users", user_id=user_id)["active_jobs"] == 1

    result = ledger.settle(settled_id, 12, service_type="catchup", metadata={"m": 2})
    item = store.get("reservations", reservation_id=settled_id)
    assert without_times(item, "created_at", "expires_at", "settled_at") == {
        "reservation_id": settled_id, "kind": "reservation", "user_id": user_id, "amount": 30,
        "state": "settled", "purpose": "catchup", "ref_id": "job1", "slot": "active_jobs",
        "balance_after": 170, "counts_held": True, "credits_used": 12, "credits_refunded": 18, "closed_balance_after": 188,
        "usage_timestamp": result.record_id, "expires_at_epoch": ledger.closed_expiry(item["settled_at"])}
    [row] = usage_rows(user_id)
    assert row == {"user_id": user_id, "timestamp": result.record_id, "service_type": "catchup",
                   "credits_used": 12, "balance_after": 188, "metadata": {"m": 2},
                   "reservation_id": settled_id, "ref_id": "job1"}
    assert store.get("users", user_id=user_id)["active_jobs"] == 0

    ledger.reserve(user_id, 8, reservation_id=released_id, purpose="live", ref_id="s", ttl_seconds=60)
    released = ledger.release(released_id, reason="provider_failed")
    assert (released.state, released.credits_used, released.credits_refunded, released.record_id) == (
        "released", 0, 8, None)
    item = store.get("reservations", reservation_id=released_id)
    assert without_times(item, "created_at", "expires_at", "released_at") == {
        "reservation_id": released_id, "kind": "reservation", "user_id": user_id, "amount": 8,
        "state": "released", "purpose": "live", "ref_id": "s", "balance_after": 180, "counts_held": True,
        "credits_used": 0, "credits_refunded": 8, "closed_balance_after": 188,
        "release_reason": "provider_failed", "expires_at_epoch": ledger.closed_expiry(item["released_at"])}
    ledger.clear_caches()  # a cold process reads the stored outcomes back
    assert ledger.settle(settled_id, 1, service_type="catchup") == ledger.SettleResult(
        12, 18, 188, True, "settled", result.record_id)
    assert ledger.settle(released_id, 1, service_type="live") == ledger.SettleResult(
        0, 8, 188, True, "released", None)
    assert ledger.reserve(user_id, 8, reservation_id=released_id, purpose="live", ref_id="s",
                          ttl_seconds=60).state == "released"


def test_a_charge_whose_guard_belongs_to_another_account_is_a_conflict(make_user):
    user_id, other = make_user(), make_user()
    request_id = new_id()
    store.ddb().put_item(TableName=store.table_name("reservations"), Item=store.to_item({
        "reservation_id": f"charge#{user_id}#{request_id}", "kind": "charge", "user_id": other,
        "state": "charged", "amount": 1, "credits_used": 1, "balance_after": 0,
        "usage_timestamp": "t"}))
    with pytest.raises(Conflict) as conflict:
        ledger.charge(user_id, 5, service_type="ask", request_id=request_id)
    assert (status_of(conflict.value), conflict.value.code) == (409, "ledger_record_conflict")
    assert ledger.get_balance(user_id)["balance"] == 200 and usage_rows(user_id) == []
