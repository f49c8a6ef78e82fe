"""TransactWriteItems for the embedded AWS that costs O(items), not O(table size).

moto 5.2 makes a transaction atomic by deep-copying every table it touches before each
TransactWriteItems and swapping the copies back on failure. That is correct but grows
with the table: on a table of a few thousand rows every credit operation took hundreds
of milliseconds, which made the local stack (and the test suite) slower the longer it
ran. DynamoDB forbids two operations on one item in a transaction, so snapshotting just
the touched items is enough to roll back; this module replaces moto's method with one
that does exactly that and is otherwise moto's own algorithm (same checks, same
cancellation reasons, same ALL_OLD on a failed condition).

It also honours `ClientRequestToken` as DynamoDB does (moto ignores it): a second call with
the token of a transaction that succeeded in the last 10 minutes succeeds without writing
again (IdempotentParameterMismatchException if its items differ). botocore retries a
TransactWriteItems whose answer timed out with the same token, so without this the embedded
AWS would apply a retried write twice, or refuse it, where AWS does neither.

It is applied by `EmbeddedAws.start()` and only there: deployed code talks to DynamoDB.
"""
from __future__ import annotations

import copy
import hashlib
import json
import threading
import time
from typing import Any

from moto.core.responses import ActionResult
from moto.dynamodb.comparisons import get_filter_expression
from moto.dynamodb.exceptions import (
    ConditionalCheckFailed,
    DynamodbException,
    MockValidationException,
    MultipleTransactionsException,
    TooManyTransactionsException,
    TransactionCanceledException,
    TransactWriteSingleOpException,
)
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.responses import DynamoHandler

TOKEN_SECONDS = 600  # how long DynamoDB remembers a ClientRequestToken


class IdempotentParameterMismatch(DynamodbException):
    def __init__(self) -> None:
        super().__init__("com.amazonaws.dynamodb.v20120810#IdempotentParameterMismatchException",
                         message="The ClientRequestToken was already used with different parameters")

_OPERATIONS = {"ConditionCheck", "Put", "Delete", "Update"}


def _key(backend: DynamoDBBackend, op_type: str, op: dict[str, Any]) -> dict[str, Any]:
    if op_type != "Put":
        return op["Key"]
    table = backend.get_table(op["TableName"])
    attrs = op["Item"]
    key = {table.hash_key_attr: attrs[table.hash_key_attr]}
    if table.range_key_attr is not None:
        key[table.range_key_attr] = attrs[table.range_key_attr]
    return key


def _snapshot(backend: DynamoDBBackend, table_name: str, key: dict[str, Any]) -> Any:
    item = backend.get_item(table_name, key)
    return None if item is None else copy.deepcopy(item.to_json()["Attributes"])


def _restore(backend: DynamoDBBackend, snapshots: list[tuple[str, dict[str, Any], Any]]) -> None:
    for table_name, key, attributes in reversed(snapshots):
        if attributes is None:
            if backend.get_item(table_name, key) is not None:
                backend.delete_item(table_name, key)
        else:
            backend.put_item(table_name, attributes)


def _apply(backend: DynamoDBBackend, op_type: str, op: dict[str, Any], key: dict[str, Any]) -> None:
    common = {
        "condition_expression": op.get("ConditionExpression"),
        "expression_attribute_names": op.get("ExpressionAttributeNames"),
        "expression_attribute_values": op.get("ExpressionAttributeValues"),
    }
    if op_type == "Put":
        backend.put_item(op["TableName"], op["Item"], **common)
    elif op_type == "Delete":
        backend.delete_item(op["TableName"], key, **common)
    elif op_type == "Update":
        backend.update_item(op["TableName"], key, update_expression=op["UpdateExpression"], **common)


def transact_write_items(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    snapshots: list[tuple[str, dict[str, Any], Any]] = []
    seen: set[tuple[str, str]] = set()
    errors: list[tuple[Any, Any, Any]] = []
    for entry in transact_items:
        original_item = None
        if len(entry) > 1:
            raise TransactWriteSingleOpException
        try:
            op_type, op = next(iter(entry.items()))
            if op_type not in _OPERATIONS:
                raise ValueError("Unsupported transaction operation")
            table_name = op["TableName"]
            key = _key(self, op_type, op)
            identity = (str(table_name), str(dict(sorted(key.items()))))
            if identity in seen:
                raise MultipleTransactionsException()
            seen.add(identity)
            current = self.get_item(table_name, key)
            condition = op.get("ConditionExpression")
            if condition is not None:
                check = get_filter_expression(
                    condition, op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
                )
                if not check.expr(current):
                    if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                        original_item = current.to_json()["Attributes"]
                    raise ConditionalCheckFailed(item=original_item)
            if op_type != "ConditionCheck":
                snapshots.append((table_name, key, _snapshot(self, table_name, key)))
                _apply(self, op_type, op, key)
            errors.append((None, None, None))
        except (MultipleTransactionsException, MockValidationException):
            _restore(self, snapshots)
            raise
        except ConditionalCheckFailed as error:
            errors.append(("ConditionalCheckFailed", str(error.message), original_item))
        except Exception as error:  # moto's behaviour: report it as this item's reason
            errors.append((type(error).__name__, str(error), original_item))
    if any(code is not None for code, _, _ in errors):
        _restore(self, snapshots)
        raise TransactionCanceledException(errors)


_tokens: dict[str, tuple[str, float]] = {}
_tokens_lock = threading.Lock()


def _with_client_request_token(handler: Any) -> Any:
    def transact_write_items_response(self: DynamoHandler) -> Any:
        token = self.body.get("ClientRequestToken")
        if not token:
            return handler(self)
        digest = hashlib.sha256(
            json.dumps(self.body["TransactItems"], sort_keys=True).encode("utf-8")
        ).hexdigest()
        now = time.monotonic()
        with _tokens_lock:
            for stale in [t for t, (_, expires) in _tokens.items() if expires < now]:
                del _tokens[stale]
            seen = _tokens.get(token)
        if seen is not None:
            if seen[0] != digest:
                raise IdempotentParameterMismatch()
            return ActionResult({"ConsumedCapacity": [], "ItemCollectionMetrics": {}})
        result = handler(self)  # raises if the transaction is cancelled: nothing remembered
        with _tokens_lock:
            _tokens[token] = (digest, now + TOKEN_SECONDS)
        return result

    transact_write_items_response.__wrapped__ = handler  # type: ignore[attr-defined]
    return transact_write_items_response


def install() -> None:
    """Replace moto's TransactWriteItems (idempotent)."""
    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
    if not hasattr(DynamoHandler.transact_write_items, "__wrapped__"):
        DynamoHandler.transact_write_items = _with_client_request_token(  # type: ignore[method-assign]
            DynamoHandler.transact_write_items)
