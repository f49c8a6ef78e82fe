"""Fixtures for the ledger tests: users, private tables, and purging a user's ledger rows.

Why private tables: moto's TransactWriteItems deep-copies every table it touches (to roll
back), so its cost grows with the rows the whole session has written. The property test
and the concurrency tests run thousands of transactions; on tables of their own, purged
as they go, they stay fast whatever else the suite has stored.
"""
from __future__ import annotations

import uuid
from typing import Callable, Iterator

import pytest

from tests.conftest import PASSWORD, restore_tables, unique_email, use_private_tables

PRIVATE_PREFIX = "ledgertest"


@pytest.fixture(scope="module")
def private_tables(aws_endpoint) -> Iterator[None]:
    """Point every table name at a private copy for this module (settings env overrides)."""
    saved = use_private_tables(PRIVATE_PREFIX)
    yield
    restore_tables(saved)


@pytest.fixture
def make_user(aws_endpoint) -> Callable[[], str]:
    """Register an account the real way (signup grant of 200); returns its user_id."""
    from chalicelib.accounts import auth

    def make() -> str:
        return auth.register(unique_email("ledger"), PASSWORD, "Ledger")["user"]["user_id"]

    return make


def delete_keys(keys: list[tuple[str, dict]]) -> None:
    """Batch-delete (table suffix, key) pairs."""
    from chalicelib.aws import store

    for start in range(0, len(keys), 25):
        batch: dict[str, list] = {}
        for table, key in keys[start:start + 25]:
            batch.setdefault(store.table_name(table), []).append({"DeleteRequest": {"Key": key}})
        store.ddb().batch_write_item(RequestItems=batch)


def purge_user(user_id: str) -> None:
    """Delete a user's ledger rows (users, usage, transactions, reservations)."""
    from chalicelib.aws import store

    keys: list[tuple[str, dict]] = [("users", store.key(user_id=user_id))]
    for row in store.query_all({
        "TableName": store.table_name("usage"),
        "KeyConditionExpression": "user_id = :u",
        "ExpressionAttributeValues": store.values(u=user_id),
        "ProjectionExpression": "user_id, #ts",
        "ExpressionAttributeNames": {"#ts": "timestamp"},
    }):
        keys.append(("usage", store.key(user_id=row["user_id"], timestamp=row["timestamp"])))
    for table, index, key_name in (
        ("transactions", "user_id-created_at-index", "transaction_id"),
        ("reservations", "user_id-index", "reservation_id"),
    ):
        for row in store.query_all({
            "TableName": store.table_name(table),
            "IndexName": index,
            "KeyConditionExpression": "user_id = :u",
            "ExpressionAttributeValues": store.values(u=user_id),
        }):
            keys.append((table, store.key(**{key_name: row[key_name]})))
    delete_keys(keys)


def new_id() -> str:
    return uuid.uuid4().hex
