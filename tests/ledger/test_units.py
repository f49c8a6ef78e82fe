"""Pure parts of the ledger, the credits views and the idempotency mechanism."""
from __future__ import annotations

import pytest

from chalicelib import credits, idempotency, ledger
from chalicelib.errors import BadRequest, ValidationFailed


def test_spend_update_is_conditional_on_exact_balance_and_cost():
    update = ledger._user_update("u1", ledger._UserChange(delta=-5, required=5, usage=5), 42)["Update"]
    assert update["ConditionExpression"] == "credits_balance = :expected AND credits_balance >= :required"
    assert update["ExpressionAttributeValues"][":expected"] == {"N": "42"}
    assert update["ExpressionAttributeValues"][":required"] == {"N": "5"}
    assert update["ReturnValuesOnConditionCheckFailure"] == "ALL_OLD"
    assert "total_usage" in update["UpdateExpression"] and "ADD ledger_seq :one" in update["UpdateExpression"]


def test_clawback_update_has_no_spend_condition():
    update = ledger._user_update("u1", ledger._UserChange(delta=-500), 10)["Update"]
    assert update["ConditionExpression"] == "credits_balance = :expected"


def test_slot_update_takes_a_slot_below_the_limit():
    change = ledger._UserChange(delta=-10, required=10, slot="active_streams", slot_step=1, slot_max=2)
    update = ledger._user_update("u1", change, 10)["Update"]
    assert "(attribute_not_exists(#slot) OR #slot < :slot_max)" in update["ConditionExpression"]
    assert update["ExpressionAttributeNames"] == {"#slot": "active_streams"}
    assert "#slot :slot_step" in update["UpdateExpression"]


def test_records_are_written_at_most_once_and_report_what_is_there():
    put = ledger.signup_grant_put("u1", 200, "2024-01-01T00:00:00.000Z")["Put"]
    assert put["ConditionExpression"] == "attribute_not_exists(#key)"
    assert put["ExpressionAttributeNames"] == {"#key": "transaction_id"}
    assert put["ReturnValuesOnConditionCheckFailure"] == "ALL_OLD"
    assert put["Item"]["transaction_id"] == {"S": "grant#signup#u1"}
    assert put["Item"]["balance_after"] == {"N": "200"}


def test_held_shard_is_stable_and_in_range():
    shards = {ledger.held_shard(f"r{i}") for i in range(200)}
    assert shards == set(ledger.held_shards())
    assert ledger.held_shard("abc") == ledger.held_shard("abc")


def test_usage_keys_start_with_the_time_and_never_collide():
    keys = {ledger._usage_key(f"{i}") for i in range(100)}
    assert len(keys) == 100
    assert all(key[:4].isdigit() and key[23] == "Z" and key[24] == "#" for key in keys)


def test_lru_keeps_the_most_recent():
    cache = ledger._Lru[str, int](size=2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)


def test_metadata_is_bounded():
    assert ledger._metadata({"a": 1}) == {"a": 1}
    with pytest.raises(ValueError):
        ledger._metadata({"a": "x" * (ledger.MAX_METADATA_BYTES + 1)})


@pytest.mark.parametrize("call", [
    lambda: ledger.reserve("u", 5, reservation_id="r", purpose="p", ref_id="x", ttl_seconds=0),
    lambda: ledger.reserve("u", 5, reservation_id="r", purpose="p", ref_id="x", ttl_seconds=9,
                           slot=("credits_balance", 2)),
    lambda: ledger.settle("r", -1, service_type="x"),
    lambda: ledger.grant("u", 0, source="admin", record_id="r"),
    lambda: ledger.clawback("u", 1, source="", record_id="r"),
    lambda: ledger.complete_purchase("t", user_id="u", credits=1, amount=1, currency="usd",
                                     stripe_fields={"status": "completed"}),
])
def test_programming_errors_are_refused_before_any_request(call):
    with pytest.raises(ValueError):
        call()


def test_cursor_round_trip_is_bound_to_the_caller():
    key = {"transaction_id": {"S": "grant#admin#1"}, "user_id": {"S": "u1"},
           "created_at": {"S": "2024-01-01T00:00:00.000Z"}}
    cursor = credits.encode_cursor(key)
    assert "u1" not in cursor and "=" not in cursor
    assert credits.decode_cursor(cursor, "u1") == key
    assert credits.decode_cursor(cursor, "u2")["user_id"] == {"S": "u2"}  # never another partition


@pytest.mark.parametrize("cursor", ["%%%", "e30", "eyJ0IjoiYSJ9", "eyJ0IjoiYSIsImMiOiIiLCJ4IjoxfQ", "x" * 1025])
def test_invalid_cursors(cursor):
    with pytest.raises(BadRequest):
        credits.decode_cursor(cursor, "u1")


@pytest.mark.parametrize("raw, expected", [(None, 20), ("", 20), ("1", 1), ("100", 100)])
def test_limit(raw, expected):
    assert credits.parse_limit(raw) == expected


@pytest.mark.parametrize("raw", ["0", "101", "-5", "ten", " 5", "5.0"])
def test_bad_limit(raw):
    with pytest.raises(ValidationFailed):
        credits.parse_limit(raw)


def test_public_transaction_hides_internals():
    row = {"transaction_id": "t", "kind": "purchase", "credits": 5, "user_id": "u",
           "payment_intent": "pi_secret", "checkout_url": "https://x", "metadata": {"a": 1}}
    assert credits.public_transaction(row) == {"transaction_id": "t", "kind": "purchase", "credits": 5}


def test_fingerprint_ignores_key_order_but_not_values_or_route():
    assert idempotency.fingerprint("ask", {"a": 1, "b": [1, 2]}) == idempotency.fingerprint("ask", {"b": [1, 2], "a": 1})
    assert idempotency.fingerprint("ask", {"a": 1}) != idempotency.fingerprint("ask", {"a": 2})
    assert idempotency.fingerprint("ask", {"a": 1}) != idempotency.fingerprint("catchup", {"a": 1})


def test_header_lookup_is_case_insensitive():
    assert idempotency.key_from({"IDEMPOTENCY-KEY": "k1"}) == "k1"
    assert idempotency.key_from({"idempotency-key": "k1"}) == "k1"
    assert idempotency.key_from({"other": "x"}) is None
    assert idempotency.request_id({"Idempotency-Key": "k"}, "u", "f").startswith("idem-")
