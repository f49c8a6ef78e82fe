"""The embedded AWS's TransactWriteItems: all or nothing, with ALL_OLD on a failed condition."""
from __future__ import annotations

import uuid

import pytest
from boto3.dynamodb.types import TypeDeserializer

from chalicelib.aws.clients import client


@pytest.fixture
def table(aws_endpoint):
    name = f"txn-test-{uuid.uuid4().hex[:8]}"
    ddb = client("dynamodb")
    ddb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
    )
    yield name
    ddb.delete_table(TableName=name)


def _get(name: str, pk: str) -> dict | None:
    item = client("dynamodb").get_item(TableName=name, Key={"pk": {"S": pk}}, ConsistentRead=True).get("Item")
    return None if item is None else {k: TypeDeserializer().deserialize(v) for k, v in item.items()}


def test_a_failed_condition_rolls_back_every_earlier_write(table):
    ddb = client("dynamodb")
    ddb.put_item(TableName=table, Item={"pk": {"S": "balance"}, "n": {"N": "5"}})
    with pytest.raises(ddb.exceptions.TransactionCanceledException) as caught:
        ddb.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": table, "Item": {"pk": {"S": "new"}, "n": {"N": "1"}}}},
                {"Update": {"TableName": table, "Key": {"pk": {"S": "balance"}},
                            "UpdateExpression": "SET n = n - :c", "ExpressionAttributeValues": {":c": {"N": "1"}}}},
                {"Update": {"TableName": table, "Key": {"pk": {"S": "guard"}},
                            "UpdateExpression": "SET n = :c", "ConditionExpression": "attribute_exists(pk)",
                            "ExpressionAttributeValues": {":c": {"N": "1"}}}},
            ]
        )
    codes = [r["Code"] for r in caught.value.response["CancellationReasons"]]
    assert codes == ["None", "None", "ConditionalCheckFailed"]
    assert _get(table, "new") is None
    assert _get(table, "balance") == {"pk": "balance", "n": 5}
    assert _get(table, "guard") is None


def test_a_refused_condition_returns_the_stored_item(table):
    ddb = client("dynamodb")
    ddb.put_item(TableName=table, Item={"pk": {"S": "user"}, "n": {"N": "3"}})
    with pytest.raises(ddb.exceptions.TransactionCanceledException) as caught:
        ddb.transact_write_items(
            TransactItems=[{"Update": {
                "TableName": table, "Key": {"pk": {"S": "user"}}, "UpdateExpression": "SET n = n - :c",
                "ConditionExpression": "n >= :c", "ExpressionAttributeValues": {":c": {"N": "10"}},
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}}]
        )
    assert caught.value.response["CancellationReasons"][0]["Item"]["n"] == {"N": "3"}


def test_a_successful_transaction_writes_everything(table):
    client("dynamodb").transact_write_items(
        TransactItems=[
            {"Put": {"TableName": table, "Item": {"pk": {"S": "a"}}, "ConditionExpression": "attribute_not_exists(pk)"}},
            {"Put": {"TableName": table, "Item": {"pk": {"S": "b"}}}},
        ]
    )
    assert _get(table, "a") == {"pk": "a"} and _get(table, "b") == {"pk": "b"}
