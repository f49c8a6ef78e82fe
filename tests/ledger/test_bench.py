"""The benchmark script's request counts, asserted: the issue's performance contract."""
from __future__ import annotations

import pytest

from scripts import bench_ledger

# operation: (requests when this process has seen the balance, requests in a fresh process)
EXPECTED = {
    "charge": (1, 2),
    "charge (refused)": (1, 1),
    "balance": (1, 1),
    "reserve": (1, 2),
    "reserve with slot": (1, 2),
    "settle": (1, 2),
    "release": (1, 2),
    "grant": (1, 2),
    "complete_purchase": (1, 2),
    "clawback": (1, 2),
    "charge replay": (1, 1),
    "settle replay": (1, 1),
    "check_invariant": (5, 5),
}


@pytest.fixture(scope="module")
def measured(private_tables):
    return {row.operation: row for row in bench_ledger.measure(rounds=1)}


def test_every_operation_is_measured(measured):
    assert set(measured) == set(EXPECTED)


@pytest.mark.parametrize("operation", sorted(EXPECTED))
def test_request_counts(measured, operation):
    row = measured[operation]
    assert (row.warm_requests, row.cold_requests) == EXPECTED[operation], bench_ledger.table([row])


def test_writes_are_one_transaction_and_balance_one_getitem(measured):
    for name in ("charge", "charge (refused)", "reserve", "settle", "release", "grant",
                 "complete_purchase", "clawback"):
        assert measured[name].warm_calls == {"TransactWriteItems": 1}, name
    assert measured["balance"].warm_calls == measured["balance"].cold_calls == {"GetItem": 1}
    assert measured["charge (refused)"].cold_calls == {"TransactWriteItems": 1}


def test_table_renders(measured):
    text = bench_ledger.table(list(measured.values()))
    assert text.splitlines()[0].startswith("operation") and "charge (refused)" in text
