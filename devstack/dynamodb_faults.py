"""Fault injection for the embedded AWS: chosen DynamoDB calls fail the way DynamoDB fails.

Real DynamoDB cancels a transaction that races another one (`TransactionConflict`),
throttles (`ThrottlingException`, `ProvisionedThroughputExceededException`, or the same as
a transaction's cancellation reason) and sometimes answers after the client gave up. moto
never does, and serialising its DynamoDB calls (devstack.embedded_aws) makes sure of it, so
the code that handles those answers would go untested. This WSGI middleware lets a test
make the embedded AWS answer exactly that, in DynamoDB's wire format, to the unchanged
production boto3 clients.

Control, over HTTP on the embedded AWS itself (`tests/faults.py` wraps it):

    POST   /_devstack/dynamodb/faults   {"operation": "TransactWriteItems", "error": "TransactionConflict",
                                         "table": "<physical name>", "count": 2, "skip": 0,
                                         "probability": 0.5, "seed": 7, "delay": 1.5}  -> {"id": ...}
    GET    /_devstack/dynamodb/faults   -> {"faults": [{..., "id", "matched", "fired"}]}
    DELETE /_devstack/dynamodb/faults   -> every fault removed

A fault matches a call by operation (`X-Amz-Target`) and, if given, a table the call
names (any item of a transaction or batch). Of the matching calls it lets `skip` through,
then fires on at most `count` (unlimited if absent), each with `probability` drawn from
its own `random.Random(seed)`, so a run is reproducible. The first fault that fires wins.

Errors (`error`):
- `TransactionConflict`, `ThrottlingError`, `ProvisionedThroughputExceeded`: on
  TransactWriteItems / TransactGetItems a TransactionCanceledException whose
  CancellationReasons carry that code on the first item naming `table` (else the first
  item) and `None` on the others; on any other operation the single-request equivalent
  (TransactionConflictException, ThrottlingException, ProvisionedThroughputExceededException).
- `ThrottlingException`, `ProvisionedThroughputExceededException`, `RequestLimitExceeded`,
  `InternalServerError`: the whole request fails with that error (botocore retries these
  itself; see tests/faults.py).
- `timeout`: the call is carried out, then its answer is held for `delay` seconds (longer
  than the client's read timeout): the write happened but the client never hears of it.
"""
from __future__ import annotations

import io
import json
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

CONTROL_PATH = "/_devstack/dynamodb/faults"
TARGET_PREFIX = "DynamoDB_20120810."
TRANSACTIONS = {"TransactWriteItems", "TransactGetItems"}
CANCELLATION_CODES = {
    "TransactionConflict": ("TransactionConflictException",
                            "Transaction is ongoing for the item"),
    "ThrottlingError": ("ThrottlingException", "Throughput exceeds the current capacity for one "
                        "or more global secondary indexes. DynamoDB is automatically scaling "
                        "your index so please try again shortly."),
    "ProvisionedThroughputExceeded": ("ProvisionedThroughputExceededException",
                                      "The level of configured provisioned throughput for the "
                                      "table was exceeded. Consider increasing your provisioning "
                                      "level with the UpdateTable API."),
}
REQUEST_ERRORS = {
    "ThrottlingException": ("com.amazon.coral.availability", "Rate of requests exceeds the allowed throughput."),
    "ProvisionedThroughputExceededException": (
        "com.amazonaws.dynamodb.v20120810",
        "The level of configured provisioned throughput for the table was exceeded. "
        "Consider increasing your provisioning level with the UpdateTable API."),
    "RequestLimitExceeded": ("com.amazonaws.dynamodb.v20120810",
                             "Throughput exceeds the current throughput limit for your account."),
    "InternalServerError": ("com.amazonaws.dynamodb.v20120810", "Internal server error"),
    "TransactionConflictException": ("com.amazonaws.dynamodb.v20120810",
                                     "Transaction is ongoing for the item"),
}
TIMEOUT = "timeout"
ERRORS = set(CANCELLATION_CODES) | set(REQUEST_ERRORS) | {TIMEOUT}
SPEC_FIELDS = {"operation", "error", "table", "count", "skip", "probability", "seed", "delay"}


@dataclass
class Fault:
    operation: str
    error: str
    table: str | None = None
    count: int | None = None
    skip: int = 0
    probability: float = 1.0
    seed: int | None = None
    delay: float = 0.0
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    matched: int = 0
    fired: int = 0
    _random: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.error not in ERRORS:
            raise ValueError(f"error must be one of {sorted(ERRORS)}")
        if not self.operation:
            raise ValueError("operation is required")
        if (self.count is not None and self.count < 0) or self.skip < 0:
            raise ValueError("count and skip must not be negative")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability must be between 0 and 1")
        if self.error == TIMEOUT and self.delay <= 0:
            raise ValueError("a timeout needs a positive delay (longer than the client's read timeout)")
        self._random = random.Random(self.seed)

    def view(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in (
            "id", "operation", "error", "table", "count", "skip", "probability", "seed", "delay",
            "matched", "fired")}

    def fires(self, operation: str, tables: list[str]) -> bool:
        """Count a matching call; True if this fault fails it (call with the faults' lock held)."""
        if operation != self.operation or (self.table is not None and self.table not in tables):
            return False
        self.matched += 1
        if self.matched <= self.skip or (self.count is not None and self.fired >= self.count):
            return False
        if self.probability < 1.0 and self._random.random() >= self.probability:
            return False
        self.fired += 1
        return True


def _tables(request: dict[str, Any]) -> list[str]:
    """Every table a DynamoDB request names, in order (transaction items, batch keys)."""
    names: list[str] = []
    if isinstance(request.get("TableName"), str):
        names.append(request["TableName"])
    for item in request.get("TransactItems") or []:
        for operation in item.values():
            if isinstance(operation, dict) and isinstance(operation.get("TableName"), str):
                names.append(operation["TableName"])
    names.extend(request.get("RequestItems") or {})
    return names


def _json_response(start_response: Callable[..., Any], status: str, body: dict[str, Any],
                   content_type: str = "application/json") -> list[bytes]:
    data = json.dumps(body).encode("utf-8")
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(data))),
                            ("x-amzn-RequestId", uuid.uuid4().hex.upper())])
    return [data]


def _error(start_response: Callable[..., Any], type_name: str, message: str,
           **extra: Any) -> list[bytes]:
    """A DynamoDB error as the service sends it (JSON 1.0, HTTP 400, `__type`)."""
    body = {"__type": type_name, "message": message, **extra}
    return _json_response(start_response, "400 Bad Request", body, "application/x-amz-json-1.0")


class DynamoDBFaults:
    """WSGI middleware in front of the embedded AWS; see the module docstring."""

    def __init__(self, app: WsgiApp) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.faults: list[Fault] = []

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == CONTROL_PATH:
            return self._control(environ, start_response)
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if not target.startswith(TARGET_PREFIX) or not self.faults:
            return self.app(environ, start_response)
        operation = target[len(TARGET_PREFIX):]
        raw = _read_body(environ)
        try:
            request = json.loads(raw or b"{}")
        except ValueError:
            request = {}
        tables = _tables(request)
        with self.lock:
            fault = next((f for f in self.faults if f.fires(operation, tables)), None)
        if fault is None:
            return self.app(environ, start_response)
        if fault.error == TIMEOUT:
            body = list(self.app(environ, start_response))  # the write happens...
            time.sleep(fault.delay)  # ...and the answer comes too late
            return body
        return self._fail(fault, operation, request, tables, start_response)

    def _fail(self, fault: Fault, operation: str, request: dict[str, Any], tables: list[str],
              start_response: Callable[..., Any]) -> list[bytes]:
        if fault.error in CANCELLATION_CODES:
            if operation in TRANSACTIONS:
                items = request.get("TransactItems") or []
                target = tables.index(fault.table) if fault.table in tables else 0
                reasons = [{"Code": "None"} for _ in items]
                if reasons:
                    reasons[target] = {"Code": fault.error, "Message": CANCELLATION_CODES[fault.error][1]}
                codes = ", ".join(reason["Code"] for reason in reasons)
                return _error(start_response,
                              "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
                              f"Transaction cancelled, please refer cancellation reasons for "
                              f"specific reasons [{codes}]",
                              CancellationReasons=reasons)
            name = CANCELLATION_CODES[fault.error][0]
        else:
            name = fault.error
        namespace, message = REQUEST_ERRORS[name]
        return _error(start_response, f"{namespace}#{name}", message)

    def _control(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        method = environ.get("REQUEST_METHOD")
        if method == "GET":
            with self.lock:
                return _json_response(start_response, "200 OK",
                                      {"faults": [fault.view() for fault in self.faults]})
        if method == "DELETE":
            with self.lock:
                self.faults.clear()
            return _json_response(start_response, "200 OK", {"faults": []})
        if method == "POST":
            try:
                spec = json.loads(_read_body(environ) or b"{}")
                if not isinstance(spec, dict) or not set(spec) <= SPEC_FIELDS:
                    raise ValueError(f"a JSON object with fields among {sorted(SPEC_FIELDS)}")
                fault = Fault(**spec)
            except (ValueError, TypeError) as error:
                return _json_response(start_response, "400 Bad Request", {"error": str(error)})
            with self.lock:
                self.faults.append(fault)
            return _json_response(start_response, "201 Created", fault.view())
        return _json_response(start_response, "405 Method Not Allowed", {"error": "GET, POST or DELETE"})


def _read_body(environ: dict[str, Any]) -> bytes:
    """Read the request body and put it back, so the wrapped app reads it too."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    body = environ["wsgi.input"].read(length) if length > 0 else b""
    environ["wsgi.input"] = io.BytesIO(body)
    return body
