"""The shared update-expression builder: placeholders numbered once, values encoded, nothing clashes."""
import pytest

from chalicelib.aws import expressions


def test_set_add_remove_and_condition_in_one_update():
    params = expressions.update(
        "users", {"user_id": "u1"},
        set={"status": "active", "skipped": None, "count": 2},
        set_if_absent={"created_at": "2026-01-01"},
        add={"balance": -5},
        remove=["held_shard"],
        condition="#s = :from",
        names={"#s": "status"},
        values={":from": "new"},
        return_old_on_failure=True,
    )
    assert params["TableName"].endswith("users")
    assert params["Key"] == {"user_id": {"S": "u1"}}
    assert params["UpdateExpression"] == (
        "SET #u0 = :u0, #u1 = :u1, #u2 = if_not_exists(#u2, :u2) ADD #u3 :u3 REMOVE #u4"
    )
    assert params["ExpressionAttributeNames"] == {
        "#s": "status", "#u0": "status", "#u1": "count", "#u2": "created_at", "#u3": "balance",
        "#u4": "held_shard",
    }
    assert params["ExpressionAttributeValues"] == {
        ":from": {"S": "new"}, ":u0": {"S": "active"}, ":u1": {"N": "2"},
        ":u2": {"S": "2026-01-01"}, ":u3": {"N": "-5"},
    }
    assert params["ConditionExpression"] == "#s = :from"
    assert params["ReturnValuesOnConditionCheckFailure"] == "ALL_OLD"


def test_an_update_that_changes_nothing_is_refused():
    with pytest.raises(ValueError):
        expressions.update("users", {"user_id": "u1"}, set={"a": None})


def test_remove_only_sends_no_values():
    params = expressions.update("users", {"user_id": "u1"}, remove=["x"])
    assert "ExpressionAttributeValues" not in params
    assert params["UpdateExpression"] == "REMOVE #u0"
