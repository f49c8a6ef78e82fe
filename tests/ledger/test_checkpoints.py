"""The invariant check reads what happened since its checkpoint; closed reservations expire.

Old records are written with the store's clock moved back (the ledger takes every record's
time from `store.now`), so they are older than the checkpoint margin.
"""
from __future__ import annotations

import time
from datetime import timedelta

import pytest

from chalicelib.aws import store
from chalicelib.credits import ledger
from chalicelib.credits.ledger import invariant, records
from tests.ledger.conftest import new_id

pytestmark = pytest.mark.usefixtures("private_tables")


@pytest.fixture
def past(monkeypatch):
    """`with past(days=2):` runs the ledger as if it were that long ago."""
    import contextlib

    real = store.now

    @contextlib.contextmanager
    def moved(**delta):
        monkeypatch.setattr(store, "now", lambda: real() - timedelta(**delta))
        try:
            yield
        finally:
            monkeypatch.setattr(store, "now", real)

    return moved


@pytest.fixture
def reads(monkeypatch):
    """The items each DynamoDB read returns, by table suffix (boto3's client)."""
    counted: dict[str, int] = {}

    def after(model, parsed, params=None, **_):  # type: ignore[no-untyped-def]
        found = {(params or {}).get("TableName", ""): len(parsed.get("Items", [])) + (1 if parsed.get("Item") else 0)}
        found.update({table: len(items) for table, items in parsed.get("Responses", {}).items()})
        for table, items in found.items():
            for suffix in ("usage", "transactions", "reservations"):
                if table.endswith("-" + suffix):
                    counted[suffix] = counted.get(suffix, 0) + items

    def before(params, **_):  # type: ignore[no-untyped-def]
        last["params"] = params

    last: dict = {}
    events = store.ddb().meta.events
    events.register("provide-client-params.dynamodb.*", before, unique_id="reads-before")
    events.register("after-call.dynamodb", lambda **kw: after(params=last.get("params"), **kw),
                    unique_id="reads-after")
    yield counted
    events.unregister("provide-client-params.dynamodb.*", unique_id="reads-before")
    events.unregister("after-call.dynamodb", unique_id="reads-after")


def _pending_purchase(user_id: str, credits: int) -> str:
    transaction_id = new_id()
    store.ddb().put_item(TableName=store.table_name("transactions"), Item=store.to_item({
        "transaction_id": transaction_id, "user_id": user_id, "kind": "purchase", "status": "pending",
        "credits": credits, "amount": 999, "currency": "usd", "created_at": store.iso(),
    }))
    return transaction_id


def _history(user_id: str, uses: int) -> None:
    for _ in range(uses):
        ledger.charge(user_id, 1, service_type="ask", request_id=new_id())
    reservation = ledger.reserve(user_id, 10, reservation_id=new_id(), purpose="ask", ref_id="r",
                                 ttl_seconds=900)
    ledger.settle(reservation.reservation_id, 4, service_type="ask")
    ledger.grant(user_id, 50, source="admin", record_id=new_id())


def test_a_check_reads_only_what_happened_since_its_checkpoint(make_user, past, reads):
    with past(days=3):
        user_id = make_user()
        _history(user_id, uses=30)
        late = _pending_purchase(user_id, 1000)  # a checkout never finished (yet)
    first = ledger.check_invariant(user_id)
    assert first.ok and first.quiescent and first.checkpoint is None
    assert first.used == 30 + 4 and first.granted == 200 + 50
    checkpoint = records.get_checkpoint(user_id)
    assert checkpoint["used"] == 34 and checkpoint["granted"] == 250 and checkpoint["open"] == [late]
    assert "user_id" not in checkpoint  # out of the user_id GSI, out of every sum

    ledger.charge(user_id, 2, service_type="ask", request_id=new_id())  # recent: after the checkpoint
    reads.clear()
    second = ledger.check_invariant(user_id)
    assert second.ok and second.checkpoint == checkpoint["through"] and second.used == 36
    assert reads["usage"] == 1  # the one recent row, not the 32
    assert reads["transactions"] == 2  # the checkpoint, and the open purchase read again by key

    # Stripe completes the old checkout days later: the open row is counted when it completes
    ledger.complete_purchase(late, user_id=user_id, credits=1000, amount=999, currency="usd", stripe_fields={})
    third = ledger.check_invariant(user_id)
    assert third.ok and third.purchased == 1000
    assert records.get_checkpoint(user_id)["open"] == []

    # a breach is still a breach
    store.ddb().update_item(TableName=store.table_name("users"), Key=store.key(user_id=user_id),
                            UpdateExpression="ADD credits_balance :x", ExpressionAttributeValues=store.values(x=7))
    broken = ledger.check_invariant(user_id, attempts=1)
    assert not broken.ok and broken.actual == broken.expected + 7


def test_a_full_check_ignores_the_checkpoint_and_rebuilds_it(make_user, past):
    """After a restore that lost an old usage row, only a full check can see it."""
    with past(days=2):
        user_id = make_user()
        _history(user_id, uses=3)
    assert ledger.check_invariant(user_id).ok  # folds the three days old rows
    (lost,) = [row for row in store.query_all({
        "TableName": store.table_name("usage"), "KeyConditionExpression": "user_id = :u",
        "ExpressionAttributeValues": store.values(u=user_id)}) if row["credits_used"] == 4]
    store.ddb().delete_item(TableName=store.table_name("usage"),
                            Key=store.key(user_id=user_id, timestamp=lost["timestamp"]))
    assert ledger.check_invariant(user_id).ok  # the checkpoint remembers the row
    full = ledger.check_invariant(user_id, full=True)
    assert not full.ok and full.expected == full.actual + 4
    assert records.get_checkpoint(user_id)["used"] == 3  # rebuilt from what is there now


def test_records_in_flight_are_never_behind_a_checkpoint(make_user):
    """Everything newer than the margin is read from the tables, never folded."""
    user_id = make_user()
    _history(user_id, uses=2)
    assert ledger.check_invariant(user_id).ok
    assert records.get_checkpoint(user_id) is None  # nothing old enough: nothing written
    assert invariant.CHECKPOINT_MARGIN_SECONDS >= 15 * 60  # longer than a Lambda can run


def test_a_checkpoint_only_moves_forward(make_user, past):
    with past(days=1):
        user_id = make_user()
    assert ledger.check_invariant(user_id).ok
    newer = records.get_checkpoint(user_id)
    older = {**newer, "through": "2000-01-01T00:00:00.000Z", "used": 999}
    assert records.put_checkpoint(older) is False
    assert records.get_checkpoint(user_id) == newer


def test_closed_reservations_expire_and_held_ones_do_not(make_user):
    user_id = make_user()
    settled = ledger.reserve(user_id, 10, reservation_id=new_id(), purpose="ask", ref_id="r", ttl_seconds=900)
    released = ledger.reserve(user_id, 10, reservation_id=new_id(), purpose="ask", ref_id="r", ttl_seconds=900)
    held = ledger.reserve(user_id, 10, reservation_id=new_id(), purpose="ask", ref_id="r", ttl_seconds=900)
    ledger.settle(settled.reservation_id, 3, service_type="ask")
    ledger.release(released.reservation_id, reason="provider_failed")
    charged = ledger.charge(user_id, 1, service_type="ask", request_id="req-1")
    assert charged.balance_after is not None
    expected = time.time() + ledger.CLOSED_RESERVATION_TTL_SECONDS
    window = (expected - 60, expected + 60)
    for reservation_id in (settled.reservation_id, released.reservation_id, records.charge_guard_id(user_id, "req-1")):
        item = store.get("reservations", reservation_id=reservation_id)
        assert window[0] <= item["expires_at_epoch"] <= window[1], item
    assert "expires_at_epoch" not in store.get("reservations", reservation_id=held.reservation_id)
    from chalicelib.aws import resources

    assert resources.table("reservations").ttl_attribute == "expires_at_epoch"


def test_reservations_closed_before_the_ttl_get_it_from_the_migration(make_user):
    from chalicelib.ops import migrations

    user_id = make_user()
    old = ledger.reserve(user_id, 10, reservation_id=new_id(), purpose="ask", ref_id="r", ttl_seconds=900)
    ledger.settle(old.reservation_id, 3, service_type="ask")
    held = ledger.reserve(user_id, 10, reservation_id=new_id(), purpose="ask", ref_id="r", ttl_seconds=900)
    store.ddb().update_item(  # as the code before the TTL left it
        TableName=store.table_name("reservations"), Key=store.key(reservation_id=old.reservation_id),
        UpdateExpression="REMOVE expires_at_epoch SET settled_at = :at",
        ExpressionAttributeValues=store.values(at="2026-01-01T00:00:00.000Z"))
    counts = migrations.expire_closed_reservations()
    assert counts["expiring"] >= 1
    expiry = store.get("reservations", reservation_id=old.reservation_id)["expires_at_epoch"]
    assert expiry == ledger.closed_expiry("2026-01-01T00:00:00.000Z")
    assert "expires_at_epoch" not in store.get("reservations", reservation_id=held.reservation_id)
    assert migrations.expire_closed_reservations()["expiring"] == 0  # again: nothing left
    assert ledger.check_invariant(user_id).ok
