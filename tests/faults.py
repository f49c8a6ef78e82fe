"""Make the embedded AWS fail chosen DynamoDB calls (devstack.dynamodb_faults), over HTTP.

The app's boto3 clients are not touched: they receive DynamoDB's own error answers.

botocore retries some errors itself before the app sees them (`chalicelib.aws.clients`: standard
mode, `TOTAL_MAX_ATTEMPTS` attempts): a whole-request ThrottlingException,
ProvisionedThroughputExceededException, RequestLimitExceeded, InternalServerError or a
timeout reaches the app only if it fires on every attempt (`count=BOTOCORE_ATTEMPTS`).
A TransactionCanceledException (the `TransactionConflict`, `ThrottlingError`,
`ProvisionedThroughputExceeded` reasons) is never retried by botocore: each one reaches the
ledger. Standard mode also keeps a per-client retry quota that many failures drain, so
the fixture gives every test fresh clients: the same faults give the same behaviour.
"""
from __future__ import annotations

from typing import Any

import requests

from chalicelib.aws.clients import TOTAL_MAX_ATTEMPTS

BOTOCORE_ATTEMPTS = TOTAL_MAX_ATTEMPTS
PATH = "/_devstack/dynamodb/faults"


class DynamoDBFaults:
    def __init__(self, endpoint_url: str) -> None:
        self.url = endpoint_url + PATH

    def inject(self, operation: str, error: str, *, table: str | None = None,
               count: int | None = None, skip: int = 0, probability: float = 1.0,
               seed: int | None = None, delay: float = 0.0) -> str:
        """Fail matching calls from now on; returns the fault's id. `table` is a logical
        table name (`users`, `reservations`, ...), resolved as the app resolves it now."""
        if table is not None:
            from chalicelib.aws import store

            table = store.table_name(table)
        response = requests.post(self.url, timeout=5, json={
            "operation": operation, "error": error, "table": table, "count": count, "skip": skip,
            "probability": probability, "seed": seed, "delay": delay,
        })
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def faults(self) -> list[dict[str, Any]]:
        response = requests.get(self.url, timeout=5)
        response.raise_for_status()
        return response.json()["faults"]

    def get(self, fault_id: str) -> dict[str, Any]:
        """One fault with its counters: `matched` calls seen, `fired` calls failed."""
        return next(fault for fault in self.faults() if fault["id"] == fault_id)

    def clear(self) -> None:
        requests.delete(self.url, timeout=5).raise_for_status()
