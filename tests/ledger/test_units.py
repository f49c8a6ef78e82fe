"""Pure parts of the ledger, the credits views and the idempotency mechanism."""
from __future__ import annotations

import pytest

from chalicelib.aws import store
from chalicelib.credits import ledger
from chalicelib.credits import statement
from chalicelib.credits.ledger import commit, hints, operations, records
from chalicelib.web import idempotency
from chalicelib.core.errors import BadRequest, ValidationFailed


def readable(update: dict) -> tuple[str, str]:
    """(update expression, condition) with every placeholder replaced by its name or value."""
    texts = [update["UpdateExpression"], update["ConditionExpression"]]
    values = {k: store.from_item({"v": v})["v"] for k, v in update["ExpressionAttributeValues"].items()}
    for placeholder, value in sorted({**update["ExpressionAttributeNames"], **values}.items(),
                                     key=lambda item: -len(item[0])):  # :u10 before :u1
        texts = [text.replace(placeholder, str(value)) for text in texts]
    return texts[0], texts[1]


def test_spend_update_is_conditional_on_exact_balance_and_cost():
    update = records.user_update("u1", records.UserChange(delta=-5, required=5, usage=5), 42)["Update"]
    expression, condition = readable(update)
    assert condition == "credits_balance = 42 AND credits_balance >= 5"
    assert expression == "ADD credits_balance -5, ledger_seq 1, total_usage 5"
    assert update["ReturnValuesOnConditionCheckFailure"] == "ALL_OLD"


def test_clawback_update_has_no_spend_condition():
    update = records.user_update("u1", records.UserChange(delta=-500), 10)["Update"]
    assert readable(update) == ("ADD credits_balance -500, ledger_seq 1", "credits_balance = 10")


def test_a_spend_is_refused_while_suspended():
    update = records.user_update("u1", records.UserChange(delta=-1, required=1, spend=True), 10)["Update"]
    assert readable(update)[1] == ("credits_balance = 10 AND credits_balance >= 1 AND "
                                   "(attribute_not_exists(status) OR status <> suspended)")


def test_slot_update_takes_a_slot_below_the_limit():
    change = records.UserChange(delta=-10, required=10, slot="active_streams", slot_step=1, slot_max=2, held=10)
    expression, condition = readable(records.user_update("u1", change, 10)["Update"])
    assert expression == "ADD credits_balance -10, ledger_seq 1, credits_held 10, active_streams 1"
    assert condition.endswith(" AND (attribute_not_exists(active_streams) OR active_streams < 2)")


def test_closing_a_reservation_is_conditional_on_the_facts_it_was_built_from():
    held = records.Held("r1", "u1", 30, "active_streams", "s1", 170, counts_held=True)
    close, usage, _stats = records.close_items(
        182, held=held, state=records.SETTLED, credits_used=18, service_type="live", metadata=None,
        reason=None, usage_timestamp="t#r1", now="2024-01-01T00:00:00.000Z")
    expression, condition = readable(close["Update"])
    assert condition == "state = held AND user_id = u1 AND amount = 30"
    assert expression == ("SET state = settled, credits_used = 18, credits_refunded = 12, closed_balance_after = 182, "
                          "settled_at = 2024-01-01T00:00:00.000Z, expires_at_epoch = 1707091200, "
                          "usage_timestamp = t#r1 REMOVE held_shard")  # it expires 35 days after it closed
    assert usage["Put"]["Item"]["balance_after"] == {"N": "182"}


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
    keys = {records.usage_key(f"{i}") for i in range(100)}
    assert len(keys) == 100
    assert all(key[:4].isdigit() and key[23] == "Z" and key[24] == "#" for key in keys)


def test_lru_keeps_the_most_recent():
    cache = hints.Lru[str, int](size=2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)


def test_metadata_is_bounded():
    assert operations._metadata({"a": 1}) == {"a": 1}
    with pytest.raises(ValueError, match="^metadata must be at most 8192 bytes"):
        operations._metadata({"a": "x" * (ledger.MAX_METADATA_BYTES + 1)})


@pytest.mark.parametrize("call, names", [
    (lambda: ledger.reserve("u", 5, reservation_id="r", purpose="p", ref_id="x", ttl_seconds=0),
     "ttl_seconds"),
    (lambda: ledger.reserve("u", 0, reservation_id="r", purpose="p", ref_id="x", ttl_seconds=9), "amount"),
    (lambda: ledger.reserve("u", 5, reservation_id="", purpose="p", ref_id="x", ttl_seconds=9),
     "reservation_id"),
    (lambda: ledger.reserve("u", 5, reservation_id="r", purpose="p", ref_id="x", ttl_seconds=9,
                            slot=("credits_balance", 2)), "slot name"),
    (lambda: ledger.settle("r", -1, service_type="x"), "actual_cost"),
    (lambda: ledger.settle("r", 1, service_type=""), "service_type"),
    (lambda: ledger.release("r", reason=""), "reason"),
    (lambda: ledger.grant("u", 0, source="admin", record_id="r"), "credits"),
    (lambda: ledger.grant("u", 1, source="", record_id="r"), "source"),
    (lambda: ledger.grant("u", 1, source="admin", record_id=""), "record_id"),
    (lambda: ledger.clawback("u", 1, source="", record_id="r"), "source"),
    (lambda: ledger.clawback("u", 1, source="admin", record_id=""), "record_id"),
    (lambda: ledger.clawback("u", 0, source="admin", record_id="r"), "credits"),
    (lambda: ledger.charge("u", 0, service_type="ask", request_id="r"), "cost"),
    (lambda: ledger.charge("u", 1, service_type="", request_id="r"), "service_type"),
    (lambda: ledger.charge("u", 1, service_type="ask", request_id=""), "request_id"),
    (lambda: ledger.complete_purchase("", user_id="u", credits=1, amount=1, currency="usd",
                                      stripe_fields={}), "transaction_id"),
    (lambda: ledger.complete_purchase("t", user_id="u", credits=0, amount=1, currency="usd",
                                      stripe_fields={}), "credits"),
    (lambda: ledger.complete_purchase("t", user_id="u", credits=1, amount=1, currency="usd",
                                      stripe_fields={"status": "completed"}), "stripe field"),
])
def test_programming_errors_are_refused_before_any_request(call, names):
    """Refused before any request, with the argument named (the message is for the developer)."""
    with pytest.raises(ValueError, match=f"^{names}"):
        call()


def test_cursor_round_trip_is_bound_to_the_caller():
    key = {"transaction_id": {"S": "grant#admin#1"}, "user_id": {"S": "u1"},
           "created_at": {"S": "2024-01-01T00:00:00.000Z"}}
    cursor = statement.encode_cursor(key)
    assert "u1" not in cursor and "=" not in cursor
    assert statement.decode_cursor(cursor, "u1") == key
    assert statement.decode_cursor(cursor, "u2")["user_id"] == {"S": "u2"}  # never another partition


@pytest.mark.parametrize("cursor", ["%%%", "e30", "eyJ0IjoiYSJ9", "eyJ0IjoiYSIsImMiOiIiLCJ4IjoxfQ", "x" * 1025])
def test_invalid_cursors(cursor):
    with pytest.raises(BadRequest):
        statement.decode_cursor(cursor, "u1")


@pytest.mark.parametrize("raw, expected", [(None, 20), ("", 20), ("1", 1), ("100", 100)])
def test_limit(raw, expected):
    assert statement.parse_limit(raw) == expected


@pytest.mark.parametrize("raw", ["0", "101", "-5", "ten", " 5", "5.0"])
def test_bad_limit(raw):
    with pytest.raises(ValidationFailed):
        statement.parse_limit(raw)


def test_public_transaction_hides_internals():
    row = {"transaction_id": "t", "kind": "purchase", "credits": 5, "user_id": "u",
           "payment_intent": "pi_secret", "checkout_url": "https://x", "metadata": {"a": 1}}
    assert statement.public_transaction(row) == {"transaction_id": "t", "kind": "purchase", "credits": 5}


def test_fingerprint_ignores_key_order_but_not_values_or_route():
    assert idempotency.fingerprint("ask", {"a": 1, "b": [1, 2]}) == idempotency.fingerprint("ask", {"b": [1, 2], "a": 1})
    assert idempotency.fingerprint("ask", {"a": 1}) != idempotency.fingerprint("ask", {"a": 2})
    assert idempotency.fingerprint("ask", {"a": 1}) != idempotency.fingerprint("catchup", {"a": 1})


def test_header_lookup_is_case_insensitive():
    assert idempotency.key_from({"IDEMPOTENCY-KEY": "k1"}) == "k1"
    assert idempotency.key_from({"idempotency-key": "k1"}) == "k1"
    assert idempotency.key_from({"other": "x"}) is None
    assert idempotency.request_id({"Idempotency-Key": "k"}, "u", "f").startswith("idem-")


LEDGER_ATTRIBUTES = ["user_id", "credits_balance", "credits_held", "total_usage", "total_credits_purchased",
                     "ledger_seq", "email", "role", "is_active", "subscription_tier"]
PURCHASE_ATTRIBUTES = ["transaction_id", "user_id", "kind", "status", "credits", "amount", "currency",
                       "created_at", "completed_at", "balance_after", "source"]


@pytest.mark.parametrize("name", LEDGER_ATTRIBUTES + ["Bad-Name", "", "x" * 65])
def test_a_slot_can_never_be_a_ledger_attribute_or_an_odd_name(name):
    """A slot counter moved by `ADD #slot :step` must never touch the balance or the identity."""
    with pytest.raises(ValueError):
        ledger.reserve("u", 5, reservation_id="r", purpose="p", ref_id="x", ttl_seconds=9, slot=(name, 2))


@pytest.mark.parametrize("name", PURCHASE_ATTRIBUTES + ["Bad-Name"])
def test_stripe_fields_can_never_overwrite_the_purchase_itself(name):
    with pytest.raises(ValueError):
        ledger.complete_purchase("t", user_id="u", credits=1, amount=1, currency="usd",
                                 stripe_fields={name: "x"})


def test_backoff_is_full_jitter_doubling_from_5ms_capped_at_320ms(monkeypatch):
    import random
    import time

    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    random.seed(5)
    for losses in range(1, 10):
        slept.clear()
        for _ in range(200):
            commit.backoff(losses)
        bound = 0.005 * 2 ** min(losses, 6)
        assert all(0 <= delay <= bound for delay in slept), losses
        assert min(slept) < bound * 0.05 and max(slept) > bound * 0.95  # the whole range is used


@pytest.mark.parametrize("value", [
    ledger.LedgerResult(1, False, "r"),
    ledger.Reservation("r", "u", 1, "held", "", 0),
    ledger.SettleResult(1, 0, 0, False),
    ledger.InvariantReport(True, 0, 0, 0, 0, 0, 0, 0, True),
    records.Held("r", "u", 1, None, None, 0),
    records.UserChange(delta=1),
])
def test_results_and_cached_facts_are_immutable(value):
    """Results are handed to callers and `Held` facts are shared across threads by the cache."""
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        value.state = "changed"
    hash(value)
