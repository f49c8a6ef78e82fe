"""The thin layer every module uses to talk to DynamoDB (low-level client, typed items).

The low-level client is used throughout because money moves in TransactWriteItems, whose
cancellation reasons (with `ReturnValuesOnConditionCheckFailure=ALL_OLD`) tell us the
current balance in the same round trip that refused the spend.
"""
from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Iterable, Mapping

from chalicelib.aws.clients import client
from chalicelib.core.errors import StorageBusy
from chalicelib.core.settings import get_settings

_serializer = None
_deserializer = None


def ddb() -> Any:
    return client("dynamodb")


def table_name(suffix: str) -> str:
    return get_settings().resource(suffix)


def _codec() -> tuple[Any, Any]:
    global _serializer, _deserializer
    if _serializer is None:
        from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

        _serializer, _deserializer = TypeSerializer(), TypeDeserializer()
    return _serializer, _deserializer


def _to_dynamo_value(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {k: _to_dynamo_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_dynamo_value(v) for v in value]
    return value


def to_attr(value: Any) -> dict[str, Any]:
    """One Python value as a DynamoDB attribute value (floats become Decimals)."""
    return _codec()[0].serialize(_to_dynamo_value(value))


def to_item(values: Mapping[str, Any]) -> dict[str, Any]:
    """A Python dict as a DynamoDB item; None values are left out."""
    return {k: to_attr(v) for k, v in values.items() if v is not None}


def from_item(item: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A DynamoDB item as plain Python: integral numbers become int, others float."""
    if item is None:
        return None
    deserializer = _codec()[1]
    return {k: _plain_number(deserializer.deserialize(v)) for k, v in item.items()}


def _plain_number(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain_number(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_number(v) for v in value]
    return value


def values(**kwargs: Any) -> dict[str, Any]:
    """ExpressionAttributeValues from keyword arguments: values(cost=5) -> {':cost': {'N': '5'}}."""
    return {f":{k}": to_attr(v) for k, v in kwargs.items()}


def key(**kwargs: str) -> dict[str, Any]:
    return {k: {"S": v} for k, v in kwargs.items()}


def get(suffix: str, consistent: bool = True, **key_values: str) -> dict[str, Any] | None:
    response = ddb().get_item(
        TableName=table_name(suffix), Key=key(**key_values), ConsistentRead=consistent
    )
    return from_item(response.get("Item"))


def put_new(suffix: str, key_name: str, item: Mapping[str, Any]) -> dict[str, Any]:
    """A TransactWriteItems Put that never replaces an item with the same key."""
    return {
        "Put": {
            "TableName": table_name(suffix),
            "Item": to_item(item),
            "ConditionExpression": f"attribute_not_exists({key_name})",
        }
    }


def query_all(request: dict[str, Any]) -> Iterable[dict[str, Any]]:
    """Every item a Query returns, following LastEvaluatedKey."""
    while True:
        response = ddb().query(**request)
        for item in response.get("Items", []):
            yield from_item(item)  # type: ignore[misc]
        last = response.get("LastEvaluatedKey")
        if not last:
            return
        request = {**request, "ExclusiveStartKey": last}


def cancellation_reasons(error: Exception) -> list[dict[str, Any]]:
    """The per-item reasons of a TransactionCanceledException (empty for other errors)."""
    response = getattr(error, "response", {}) or {}
    return list(response.get("CancellationReasons") or [])


# Cancellation reasons of a transaction that may succeed if simply tried again.
TRANSIENT_REASONS = frozenset({"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded",
                               "RequestLimitExceeded"})
# Whole-request errors of the same kind (botocore has already retried them: chalicelib.aws.clients).
TRANSIENT_CODES = frozenset({"ThrottlingException", "ProvisionedThroughputExceededException",
                             "RequestLimitExceeded", "TransactionConflictException",
                             "TransactionInProgressException", "InternalServerError",
                             "ServiceUnavailable"})


def _error_code(error: Exception) -> str | None:
    response = getattr(error, "response", {}) or {}
    return response.get("Error", {}).get("Code")


def is_transient(code: str | None, reasons: Iterable[Mapping[str, Any]] = ()) -> bool:
    """An error (code, and a cancelled transaction's reasons) that trying again may cure:
    throttling, a conflict with another transaction, an internal error. A cancellation
    counts only if no item failed its condition."""
    if code in TRANSIENT_CODES:
        return True
    codes = {reason.get("Code") or "None" for reason in reasons}
    return (code == "TransactionCanceledException"
            and bool(codes & TRANSIENT_REASONS) and codes <= TRANSIENT_REASONS | {"None"})


def raise_busy_after_call(http_response: Any = None, parsed: Any = None, **_: Any) -> None:
    """botocore `after-call` hook of the DynamoDB client: transient failures become StorageBusy.

    Runs after botocore's own retries, so whatever still fails is surfaced as a 503 with
    Retry-After wherever it happens, instead of an unhandled error (a 500).
    """
    if http_response is None or http_response.status_code < 300 or not isinstance(parsed, dict):
        return
    code = parsed.get("Error", {}).get("Code")
    if is_transient(code, parsed.get("CancellationReasons") or ()):
        _log_busy(code)
        raise StorageBusy(str(code))


def raise_busy_after_error(exception: Exception | None = None, **_: Any) -> None:
    """botocore `after-call-error` hook: no answer at all (timeouts, refused connections),
    after botocore's retries, is StorageBusy too."""
    from botocore.exceptions import ConnectionError, HTTPClientError

    if isinstance(exception, (ConnectionError, HTTPClientError)):
        _log_busy(type(exception).__name__)
        raise StorageBusy(type(exception).__name__) from exception


def _log_busy(reason: str | None) -> None:
    from chalicelib.core.logs import log_event

    log_event(logging.getLogger(__name__), "storage.busy", logging.WARNING, reason=reason)


def is_conditional_failure(error: Exception) -> bool:
    """A write refused because one of its conditions failed (and only that).

    A cancelled transaction counts only if a reason is ConditionalCheckFailed: one cancelled
    by a conflict or throttling wrote nothing and must be retried, never taken for "the
    condition says it is already done".
    """
    code = _error_code(error)
    if code == "ConditionalCheckFailedException":
        return True
    return code == "TransactionCanceledException" and any(
        reason.get("Code") == "ConditionalCheckFailed" for reason in cancellation_reasons(error)
    )


def now() -> datetime:
    return datetime.now(timezone.utc)


def iso(moment: datetime | None = None) -> str:
    """ISO 8601 UTC with milliseconds and a Z: sorts lexicographically in time order."""
    moment = moment or now()
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{moment.microsecond // 1000:03d}Z"
    )


def iso_epoch(seconds: int) -> str:
    """`iso()` of an epoch second."""
    return iso(datetime.fromtimestamp(seconds, timezone.utc))


def epoch() -> int:
    return int(time.time())
