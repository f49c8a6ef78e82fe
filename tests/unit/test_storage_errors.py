"""Which DynamoDB errors mean "a condition failed" and which mean "try again" (chalicelib.aws.store)."""
from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from chalicelib.aws import store


def cancelled(*codes: str) -> ClientError:
    """A TransactionCanceledException as botocore parses DynamoDB's answer."""
    return ClientError({
        "Error": {"Code": "TransactionCanceledException", "Message": "Transaction cancelled"},
        "CancellationReasons": [{"Code": code} for code in codes],
    }, "TransactWriteItems")


def failed(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "..."}}, "UpdateItem")


@pytest.mark.parametrize("error, conditional", [
    (failed("ConditionalCheckFailedException"), True),
    (cancelled("None", "ConditionalCheckFailed"), True),
    (cancelled("ConditionalCheckFailed", "TransactionConflict"), True),  # it failed anyway
    (cancelled("None", "TransactionConflict"), False),  # nothing was refused: retry
    (cancelled("ThrottlingError", "None"), False),
    (cancelled("ProvisionedThroughputExceeded"), False),
    (failed("ThrottlingException"), False),
    (ValueError("not an AWS error"), False),
])
def test_only_a_failed_condition_is_a_conditional_failure(error, conditional):
    assert store.is_conditional_failure(error) is conditional


@pytest.mark.parametrize("code, reasons, transient", [
    ("TransactionCanceledException", ["None", "TransactionConflict"], True),
    ("TransactionCanceledException", ["ThrottlingError"], True),
    ("TransactionCanceledException", ["ProvisionedThroughputExceeded", "None"], True),
    ("TransactionCanceledException", ["RequestLimitExceeded"], True),
    ("TransactionCanceledException", ["ConditionalCheckFailed", "TransactionConflict"], False),
    ("TransactionCanceledException", ["ValidationError"], False),
    ("TransactionCanceledException", ["None"], False),
    ("ThrottlingException", [], True),
    ("ProvisionedThroughputExceededException", [], True),
    ("RequestLimitExceeded", [], True),
    ("TransactionConflictException", [], True),
    ("InternalServerError", [], True),
    ("ConditionalCheckFailedException", [], False),
    ("ValidationException", [], False),
])
def test_transient_errors(code, reasons, transient):
    assert store.is_transient(code, [{"Code": reason} for reason in reasons]) is transient
