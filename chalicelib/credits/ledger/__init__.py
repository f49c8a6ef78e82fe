"""The credit ledger: the only code that changes a balance (`from chalicelib.credits import ledger`).

    operations.py   the public operations and the model: grant, complete_purchase, clawback,
                    charge, reserve, extend, settle, release, get_balance (start here)
    commit.py       the one write path: a balance change and its records in one conditional
                    transaction, the expected-balance retry loop, transient retries
    records.py      the rows (typed) and every expression for the ledger's tables
    hints.py        per-process hints: remembered balances and reservations, per-user locks
    invariant.py    the invariant the records keep, and its check
"""
from chalicelib.credits.ledger.commit import TRANSIENT_ATTEMPTS, TransactionConflict
from chalicelib.credits.ledger.hints import clear_caches
from chalicelib.credits.ledger.invariant import InvariantReport, check_invariant
from chalicelib.credits.ledger.operations import (
    MAX_METADATA_BYTES,
    LedgerResult,
    Reservation,
    SettleResult,
    charge,
    clawback,
    complete_purchase,
    extend,
    get_balance,
    grant,
    release,
    reserve,
    settle,
)
from chalicelib.credits.ledger.records import (
    CLAWBACK,
    CLOSED_RESERVATION_TTL_SECONDS,
    COMPLETED,
    HELD,
    RELEASED,
    SETTLED,
    closed_expiry,
    delete_checkpoint,
    held_shard,
    held_shards,
    iter_expired_held,
    iter_user_held,
    signup_grant_put,
)

__all__ = [
    "RELEASED",
    "SETTLED",
    "CLAWBACK", "CLOSED_RESERVATION_TTL_SECONDS", "COMPLETED", "HELD", "MAX_METADATA_BYTES", "TRANSIENT_ATTEMPTS",
    "InvariantReport", "LedgerResult", "Reservation", "SettleResult", "TransactionConflict",
    "charge", "check_invariant", "clawback", "clear_caches", "closed_expiry", "complete_purchase",
    "delete_checkpoint", "extend",
    "get_balance", "grant", "held_shard", "held_shards", "iter_expired_held", "iter_user_held",
    "release", "reserve", "settle", "signup_grant_put",
]
