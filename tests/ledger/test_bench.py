"""The benchmark script's request counts, asserted: the issue's performance contract."""
from __future__ import annotations

import pytest

from scripts import bench_ledger

# operation: (requests when this process has seen the balance, requests in a fresh process).
# The fleet design (LEDGER_GUESS_SECONDS=0, docs/performance.md): every balance change reads
# the balance first, so a process's own cache no longer changes the count.
EXPECTED = {
    "charge": (2, 2),
    "charge (refused)": (2, 2),
    "balance": (1, 1),
    "reserve": (2, 2),
    "reserve with slot": (2, 2),
    "settle": (2, 3),
    "release": (2, 3),
    "grant": (2, 2),
    "complete_purchase": (2, 2),
    "clawback": (2, 2),
    "charge replay": (2, 2),
    "settle replay": (2, 1),
    "check_invariant": (6, 6),  # the checkpoint's GetItem, then the reads since it
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


def test_writes_are_one_read_and_one_transaction_and_balance_one_getitem(measured):
    for name in ("charge", "charge (refused)", "reserve", "settle", "release", "grant",
                 "complete_purchase", "clawback"):
        assert measured[name].warm_calls == {"GetItem": 1, "TransactWriteItems": 1}, name
    assert measured["balance"].warm_calls == measured["balance"].cold_calls == {"GetItem": 1}


def test_a_process_trusting_its_guess_spends_one_request(private_tables, env_override):
    """LEDGER_GUESS_SECONDS=inf: the one-process design (right only where one process writes)."""
    env_override(LEDGER_GUESS_SECONDS="inf")
    rows = {row.operation: row for row in bench_ledger.measure(rounds=0)}
    assert (rows["charge"].warm_requests, rows["charge"].cold_requests) == (1, 2)
    assert rows["charge"].warm_calls == {"TransactWriteItems": 1}


def test_table_renders(measured):
    text = bench_ledger.table(list(measured.values()))
    assert text.splitlines()[0].startswith("operation") and "charge (refused)" in text
