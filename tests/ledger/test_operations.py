"""The ledger's operations against the embedded AWS: effects, records, replays, refusals."""
from __future__ import annotations

import pytest

from chalicelib.aws import store
from chalicelib.credits import ledger
from chalicelib.credits.ledger import hints as ledger_hints
from chalicelib.core.errors import Conflict, InsufficientCredits, NotFound
from chalicelib.web.errors import answer, status_of
from tests.conftest import usage_rows
from tests.ledger.conftest import new_id

pytestmark = pytest.mark.usefixtures("private_tables")


def balance(user_id: str) -> int:
    return ledger.get_balance(user_id)["balance"]


def assert_invariant(user_id: str) -> ledger.InvariantReport:
    report = ledger.check_invariant(user_id)
    assert report.ok and report.quiescent, report
    return report


def test_signup_grant_explains_the_starting_balance(make_user):
    user_id = make_user()
    report = assert_invariant(user_id)
    assert (report.actual, report.granted, report.used, report.held) == (200, 200, 0, 0)
    assert ledger.get_balance(user_id) == {
        "balance": 200, "held": 0, "owned": 200, "subscription_tier": "free", "total_credits_purchased": 0,
        "total_usage": 0,
    }


def test_charge_writes_usage_row_with_exact_balance_after_and_replays(make_user):
    user_id = make_user()
    request_id = new_id()
    first = ledger.charge(user_id, 15, service_type="ask", request_id=request_id, metadata={"k": 1})
    assert (first.balance_after, first.replayed, first.credits) == (185, False, 15)
    again = ledger.charge(user_id, 15, service_type="ask", request_id=request_id)
    assert again == ledger.LedgerResult(185, True, first.record_id, 15)
    rows = usage_rows(user_id)
    assert len(rows) == 1
    row = rows[0]
    assert row["timestamp"] == first.record_id and row["timestamp"][:4].isdigit()
    assert (row["service_type"], row["credits_used"], row["balance_after"], row["metadata"]) == (
        "ask", 15, 185, {"k": 1})
    assert ledger.get_balance(user_id)["total_usage"] == 15
    assert_invariant(user_id)


def test_refused_charge_reports_balance_and_required_and_writes_nothing(make_user):
    user_id = make_user()
    with pytest.raises(InsufficientCredits) as refused:
        ledger.charge(user_id, 201, service_type="ask", request_id=new_id())
    assert status_of(refused.value) == 402
    assert answer(refused.value).body["balance"] == 200 and answer(refused.value).body["required"] == 201
    assert usage_rows(user_id) == [] and balance(user_id) == 200
    assert ledger.charge(user_id, 200, service_type="ask", request_id=new_id()).balance_after == 0
    with pytest.raises(InsufficientCredits):
        ledger.charge(user_id, 1, service_type="ask", request_id=new_id())
    assert_invariant(user_id)


def test_stale_balance_guess_is_corrected_in_the_same_call(make_user):
    user_id = make_user()
    ledger.charge(user_id, 10, service_type="ask", request_id=new_id())
    ledger_hints.remember_balance(user_id, 999)  # another process moved the balance meanwhile
    result = ledger.charge(user_id, 10, service_type="ask", request_id=new_id())
    assert result.balance_after == 180
    assert [r["balance_after"] for r in sorted(usage_rows(user_id), key=lambda r: r["timestamp"])] == [190, 180]


def test_grant_is_once_per_record_and_purchased_counts(make_user):
    user_id = make_user()
    invoice = new_id()
    first = ledger.grant(user_id, 500, source="subscription", record_id=invoice, amount=999,
                         purchased=True, metadata={"plan_id": "pro"})
    assert (first.balance_after, first.replayed, first.record_id) == (700, False, f"grant#subscription#{invoice}")
    again = ledger.grant(user_id, 500, source="subscription", record_id=invoice, purchased=True)
    assert (again.balance_after, again.replayed) == (700, True)
    view = ledger.get_balance(user_id)
    assert (view["balance"], view["total_credits_purchased"]) == (700, 500)
    other = make_user()
    with pytest.raises(Conflict):  # the same record id can never credit a second account
        ledger.grant(other, 500, source="subscription", record_id=invoice)
    assert balance(other) == 200
    assert_invariant(user_id)


def test_complete_purchase_moves_pending_row_once(make_user):
    user_id = make_user()
    transaction_id = new_id()
    store.ddb().put_item(TableName=store.table_name("transactions"), Item=store.to_item({
        "transaction_id": transaction_id, "user_id": user_id, "kind": "purchase", "status": "pending",
        "credits": 1000, "amount": 999, "currency": "usd", "created_at": store.iso(),
    }))
    assert_invariant(user_id)  # a pending purchase explains nothing yet
    result = ledger.complete_purchase(transaction_id, user_id=user_id, credits=1000, amount=999,
                                      currency="usd", stripe_fields={"payment_intent": "pi_1"})
    assert (result.balance_after, result.replayed) == (1200, False)
    row = store.get("transactions", transaction_id=transaction_id)
    assert (row["status"], row["payment_intent"], row["balance_after"]) == ("completed", "pi_1", 1200)
    again = ledger.complete_purchase(transaction_id, user_id=user_id, credits=1000, amount=999,
                                     currency="usd", stripe_fields={})
    assert (again.balance_after, again.replayed) == (1200, True)
    assert ledger.get_balance(user_id)["total_credits_purchased"] == 1000
    report = assert_invariant(user_id)
    assert report.purchased == 1000


def test_clawback_may_go_negative_and_then_every_spend_is_refused(make_user):
    user_id = make_user()
    ledger.charge(user_id, 150, service_type="ask", request_id=new_id())
    dispute = new_id()
    result = ledger.clawback(user_id, 120, source="dispute", record_id=dispute)
    assert result.balance_after == -70
    assert ledger.clawback(user_id, 120, source="dispute", record_id=dispute).replayed
    with pytest.raises(InsufficientCredits) as refused:
        ledger.charge(user_id, 1, service_type="ask", request_id=new_id())
    assert refused.value.details == {"balance": -70, "required": 1}
    with pytest.raises(InsufficientCredits):
        ledger.reserve(user_id, 1, reservation_id=new_id(), purpose="ask", ref_id="x", ttl_seconds=60)
    ledger.grant(user_id, 70, source="admin", record_id=new_id())
    with pytest.raises(InsufficientCredits):  # zero is not positive
        ledger.charge(user_id, 1, service_type="ask", request_id=new_id())
    ledger.grant(user_id, 5, source="admin", record_id=new_id())
    assert ledger.charge(user_id, 5, service_type="ask", request_id=new_id()).balance_after == 0
    assert assert_invariant(user_id).clawed_back == 120


def test_reserve_settle_refunds_the_rest_and_writes_usage(make_user):
    user_id = make_user()
    rid = new_id()
    held = ledger.reserve(user_id, 50, reservation_id=rid, purpose="live", ref_id="s1", ttl_seconds=600)
    assert (held.state, held.amount, held.balance_after, held.replayed) == ("held", 50, 150, False)
    assert assert_invariant(user_id).held == 50
    item = store.get("reservations", reservation_id=rid)
    assert item["held_shard"] in ledger.held_shards() and item["expires_at"] > store.iso()
    settled = ledger.settle(rid, 20, service_type="live", metadata={"minutes": 2})
    assert (settled.credits_used, settled.credits_refunded, settled.balance_after, settled.replayed) == (20, 30, 180, False)
    item = store.get("reservations", reservation_id=rid)
    assert item["state"] == "settled" and "held_shard" not in item
    (row,) = usage_rows(user_id)
    assert (row["credits_used"], row["balance_after"], row["reservation_id"], row["ref_id"]) == (20, 180, rid, "s1")
    assert ledger.get_balance(user_id)["total_usage"] == 20
    assert_invariant(user_id)


def test_settle_twice_release_after_settle_settle_after_release_never_double(make_user):
    user_id = make_user()
    a, b = new_id(), new_id()
    ledger.reserve(user_id, 40, reservation_id=a, purpose="ask", ref_id="a", ttl_seconds=60)
    ledger.reserve(user_id, 40, reservation_id=b, purpose="ask", ref_id="b", ttl_seconds=60)
    first = ledger.settle(a, 25, service_type="ask")
    assert ledger.settle(a, 25, service_type="ask") == ledger.SettleResult(25, 15, first.balance_after, True, "settled", first.record_id)
    assert ledger.settle(a, 40, service_type="ask").credits_used == 25  # the first settle wins
    assert ledger.release(a, reason="late") == ledger.SettleResult(25, 15, first.balance_after, True, "settled", first.record_id)
    released = ledger.release(b, reason="provider_failed")
    assert (released.credits_used, released.credits_refunded, released.state, released.replayed) == (0, 40, "released", False)
    assert ledger.settle(b, 10, service_type="ask") == ledger.SettleResult(0, 40, released.balance_after, True, "released")
    assert ledger.release(b, reason="again").replayed
    assert balance(user_id) == 200 - 25 == released.balance_after
    assert len(usage_rows(user_id)) == 1
    assert_invariant(user_id)


def test_settle_more_than_reserved_is_capped(make_user):
    user_id = make_user()
    rid = new_id()
    ledger.reserve(user_id, 30, reservation_id=rid, purpose="catchup", ref_id="j", ttl_seconds=60)
    result = ledger.settle(rid, 1000, service_type="catchup")
    assert (result.credits_used, result.credits_refunded, result.balance_after) == (30, 0, 170)
    assert_invariant(user_id)


def test_settle_and_release_from_a_cold_process(make_user):
    user_id = make_user()
    a, b = new_id(), new_id()
    ledger.reserve(user_id, 30, reservation_id=a, purpose="ask", ref_id="a", ttl_seconds=60)
    ledger.reserve(user_id, 30, reservation_id=b, purpose="ask", ref_id="b", ttl_seconds=60)
    ledger.clear_caches()  # as if the stop landed on another Lambda instance
    assert ledger.settle(a, 10, service_type="ask").balance_after == 160
    ledger.clear_caches()
    assert ledger.release(b, reason="x").balance_after == 190
    ledger.clear_caches()
    assert ledger.settle(a, 10, service_type="ask").replayed
    with pytest.raises(NotFound):
        ledger.settle(new_id(), 1, service_type="ask")
    assert_invariant(user_id)


def test_slot_limits_concurrent_reservations_and_is_given_back(make_user):
    user_id = make_user()
    slot = ("active_streams", 2)
    ids = [new_id() for _ in range(3)]
    for rid in ids[:2]:
        ledger.reserve(user_id, 10, reservation_id=rid, purpose="live", ref_id=rid, ttl_seconds=60, slot=slot)
    with pytest.raises(Conflict) as full:
        ledger.reserve(user_id, 10, reservation_id=ids[2], purpose="live", ref_id="x", ttl_seconds=60, slot=slot)
    assert full.value.code == "too_many_sessions"
    assert store.get("users", user_id=user_id)["active_streams"] == 2
    ledger.settle(ids[0], 5, service_type="live")
    ledger.settle(ids[0], 5, service_type="live")  # a replay gives nothing back twice
    ledger.release(ids[1], reason="stopped")
    assert store.get("users", user_id=user_id)["active_streams"] == 0
    ledger.reserve(user_id, 10, reservation_id=ids[2], purpose="live", ref_id="x", ttl_seconds=60, slot=slot)
    assert_invariant(user_id)


def test_reserve_replay_returns_the_stored_reservation(make_user):
    user_id = make_user()
    rid = new_id()
    first = ledger.reserve(user_id, 10, reservation_id=rid, purpose="ask", ref_id="r", ttl_seconds=60)
    again = ledger.reserve(user_id, 10, reservation_id=rid, purpose="ask", ref_id="r", ttl_seconds=60)
    assert again.replayed and again.balance_after == first.balance_after == 190
    assert balance(user_id) == 190


def test_extra_items_are_atomic_with_the_operation(make_user):
    user_id = make_user()
    marker = {"Put": {
        "TableName": store.table_name("jobs"),
        "Item": store.to_item({"job_id": new_id(), "user_id": user_id}),
        "ConditionExpression": "attribute_not_exists(job_id)",
    }}
    ledger.charge(user_id, 5, service_type="ask", request_id=new_id(), extra_items=[marker])
    with pytest.raises(ledger.TransactionConflict) as conflict:
        ledger.charge(user_id, 5, service_type="ask", request_id=new_id(), extra_items=[marker])
    assert conflict.value.reasons[0]["Code"] == "ConditionalCheckFailed"
    assert balance(user_id) == 195 and len(usage_rows(user_id)) == 1
    assert_invariant(user_id)


def test_unknown_account_is_not_found(aws_endpoint, private_tables):
    with pytest.raises(NotFound):
        ledger.charge(new_id(), 1, service_type="ask", request_id=new_id())
    with pytest.raises(NotFound):
        ledger.get_balance(new_id())


def test_expired_held_reservations_are_listed_for_cleanup(make_user):
    user_id = make_user()
    rid = new_id()
    ledger.reserve(user_id, 10, reservation_id=rid, purpose="ask", ref_id="r", ttl_seconds=1)
    later = store.iso(store.now().replace(year=store.now().year + 1))
    assert rid in {item["reservation_id"] for item in ledger.iter_expired_held(later)}
    ledger.release(rid, reason="expired")
    assert rid not in {item["reservation_id"] for item in ledger.iter_expired_held(later)}


@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_spends_must_be_positive_integers(make_user, bad):
    with pytest.raises(ValueError):
        ledger.charge("u", bad, service_type="ask", request_id="r")
