"""The embedded AWS's fault switch (devstack.dynamodb_faults) as a boto3 client sees it.

A plain client with botocore's retries off shows exactly what DynamoDB's wire format
carries: the error class, the cancellation reasons, the counters of the switch.
"""
from __future__ import annotations

import uuid

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError, ReadTimeoutError

from tests.faults import PATH


@pytest.fixture
def raw(aws_endpoint):
    """A DynamoDB client without retries, so each call is one request."""
    return boto3.client("dynamodb", endpoint_url=aws_endpoint, region_name="us-east-1",
                        config=Config(retries={"total_max_attempts": 1}, read_timeout=0.5))


@pytest.fixture
def table(raw, dynamodb_faults):
    name = f"faults-test-{uuid.uuid4().hex[:8]}"
    raw.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    yield name
    dynamodb_faults.clear()
    raw.delete_table(TableName=name)


def inject(aws_endpoint, **spec) -> str:
    response = requests.post(aws_endpoint + PATH, json=spec, timeout=5)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def add(table: str, pk: str, by: int = 1) -> dict:
    return {"Update": {"TableName": table, "Key": {"pk": {"S": pk}}, "UpdateExpression": "ADD n :by",
                       "ExpressionAttributeValues": {":by": {"N": str(by)}}}}


def count(raw, table: str, pk: str) -> int:
    item = raw.get_item(TableName=table, Key={"pk": {"S": pk}}, ConsistentRead=True).get("Item")
    return int(item["n"]["N"]) if item else 0


@pytest.mark.parametrize("reason", ["TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"])
def test_a_transaction_is_cancelled_with_the_reason_on_the_chosen_table(raw, table, aws_endpoint, reason):
    other = table + "-other"
    raw.create_table(TableName=other, BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    try:
        inject(aws_endpoint, operation="TransactWriteItems", error=reason, table=table, count=1)
        with pytest.raises(raw.exceptions.TransactionCanceledException) as cancelled:
            raw.transact_write_items(TransactItems=[add(other, "a"), add(table, "b")])
        assert [r["Code"] for r in cancelled.value.response["CancellationReasons"]] == ["None", reason]
        raw.transact_write_items(TransactItems=[add(other, "a"), add(table, "b")])  # count=1: spent
        assert (count(raw, other, "a"), count(raw, table, "b")) == (1, 1)  # the cancelled one wrote nothing
    finally:
        raw.delete_table(TableName=other)


@pytest.mark.parametrize("error, expected", [
    ("ThrottlingException", "ThrottlingException"),
    ("ProvisionedThroughputExceededException", "ProvisionedThroughputExceededException"),
    ("RequestLimitExceeded", "RequestLimitExceeded"),
    ("TransactionConflict", "TransactionConflictException"),  # outside a transaction
    ("ThrottlingError", "ThrottlingException"),
])
def test_single_requests_fail_with_dynamodbs_error(raw, table, aws_endpoint, error, expected):
    inject(aws_endpoint, operation="UpdateItem", error=error)
    with pytest.raises(ClientError) as failed:
        raw.update_item(TableName=table, **{k: v for k, v in add(table, "x")["Update"].items()
                                            if k != "TableName"})
    assert failed.value.response["Error"]["Code"] == expected
    assert failed.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert count(raw, table, "x") == 0


def test_skip_count_and_table_choose_which_calls_fail(raw, table, aws_endpoint, dynamodb_faults):
    fault = inject(aws_endpoint, operation="PutItem", error="ThrottlingException", table=table,
                   skip=1, count=2)
    outcomes = []
    for index in range(5):
        try:
            raw.put_item(TableName=table, Item={"pk": {"S": str(index)}})
            outcomes.append("ok")
        except ClientError:
            outcomes.append("throttled")
    raw.get_item(TableName=table, Key={"pk": {"S": "0"}})  # another operation: not matched
    assert outcomes == ["ok", "throttled", "throttled", "ok", "ok"]
    assert {k: dynamodb_faults.get(fault)[k] for k in ("matched", "fired")} == {"matched": 5, "fired": 2}


def test_a_probability_with_a_seed_fails_the_same_calls_every_run(raw, table, aws_endpoint, dynamodb_faults):
    def run() -> list[bool]:
        dynamodb_faults.clear()
        inject(aws_endpoint, operation="PutItem", error="ThrottlingException", probability=0.5, seed=7)
        failed = []
        for index in range(20):
            try:
                raw.put_item(TableName=table, Item={"pk": {"S": str(index)}})
                failed.append(False)
            except ClientError:
                failed.append(True)
        return failed

    first, second = run(), run()
    assert first == second and 3 <= sum(first) <= 17


def test_a_late_answer_times_the_client_out_but_the_write_happened(raw, table, aws_endpoint):
    inject(aws_endpoint, operation="UpdateItem", error="timeout", delay=1.0, count=1)
    with pytest.raises(ReadTimeoutError):
        raw.update_item(TableName=table, Key={"pk": {"S": "late"}}, UpdateExpression="ADD n :one",
                        ExpressionAttributeValues={":one": {"N": "1"}})
    assert count(raw, table, "late") == 1


def test_client_request_token_makes_a_retried_transaction_apply_once(raw, table):
    token = uuid.uuid4().hex
    raw.transact_write_items(TransactItems=[add(table, "t")], ClientRequestToken=token)
    raw.transact_write_items(TransactItems=[add(table, "t")], ClientRequestToken=token)
    assert count(raw, table, "t") == 1
    with pytest.raises(ClientError) as mismatch:
        raw.transact_write_items(TransactItems=[add(table, "t", by=2)], ClientRequestToken=token)
    assert mismatch.value.response["Error"]["Code"] == "IdempotentParameterMismatchException"
    raw.transact_write_items(TransactItems=[add(table, "t")], ClientRequestToken=uuid.uuid4().hex)
    assert count(raw, table, "t") == 2


@pytest.mark.parametrize("spec", [
    {"operation": "PutItem", "error": "Boom"},
    {"operation": "", "error": "ThrottlingException"},
    {"operation": "PutItem", "error": "timeout"},  # no delay
    {"operation": "PutItem", "error": "ThrottlingException", "probability": 2},
    {"operation": "PutItem", "error": "ThrottlingException", "unknown": 1},
    ["not", "an", "object"],
])
def test_the_control_endpoint_refuses_a_bad_fault(aws_endpoint, spec):
    response = requests.post(aws_endpoint + PATH, json=spec, timeout=5)
    assert response.status_code == 400 and response.json()["error"]
