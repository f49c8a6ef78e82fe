"""DynamoDB requests and time per ledger operation.

    python scripts/bench_ledger.py [--rounds N]

Starts its own embedded AWS (moto's server, as `make run` does) unless AWS_ENDPOINT_URL is
set, creates the tables, and prints one row per operation. Requests are counted with
botocore's event hooks on the ledger's own client: `before-call` (API calls, what the
ledger asks for) and `before-send` (HTTP requests, including any SDK retry).

"warm" is the normal case: this process has seen the user's balance (and the
reservation) before, so the ledger's guess is right. "cold" is a fresh process (caches
cleared just before the operation): the first attempt of a write doubles as the read of
the balance (see chalicelib/credits/ledger/commit.py). tests/ledger/test_bench.py asserts these counts.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


@dataclass
class Measurement:
    operation: str
    warm_requests: int
    cold_requests: int
    warm_calls: dict[str, int]
    cold_calls: dict[str, int]
    warm_ms: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.warm_ms) if self.warm_ms else 0.0


class RequestCounter:
    """Counts the DynamoDB API calls and HTTP requests made through the ledger's client."""

    def __init__(self) -> None:
        from chalicelib.aws import store

        self.calls: Counter[str] = Counter()
        self.sends = 0
        self.events = store.ddb().meta.events
        self.events.register("before-call.dynamodb", self._on_call)
        self.events.register("before-send.dynamodb", self._on_send)

    def _on_call(self, model: Any = None, **_: Any) -> None:
        self.calls[model.name] += 1

    def _on_send(self, **_: Any) -> None:
        self.sends += 1

    def reset(self) -> None:
        self.calls.clear()
        self.sends = 0

    def close(self) -> None:
        self.events.unregister("before-call.dynamodb", self._on_call)
        self.events.unregister("before-send.dynamodb", self._on_send)


def open_account(credits: int = 200) -> str:
    """An account with its signup grant, written as registration writes its money part."""
    from chalicelib.aws import store
    from chalicelib.credits import ledger

    user_id = uuid.uuid4().hex
    now = store.iso()
    store.ddb().transact_write_items(TransactItems=[
        {"Put": {
            "TableName": store.table_name("users"),
            "Item": store.to_item({"user_id": user_id, "email": f"bench-{user_id}@example.com",
                                   "credits_balance": credits, "total_credits_purchased": 0,
                                   "total_usage": 0, "subscription_tier": "free",
                                   "is_active": True, "created_at": now}),
            "ConditionExpression": "attribute_not_exists(user_id)",
        }},
        ledger.signup_grant_put(user_id, credits, now),
    ])
    return user_id


def _pending_purchase(user_id: str) -> str:
    from chalicelib.aws import store

    transaction_id = uuid.uuid4().hex
    store.ddb().put_item(TableName=store.table_name("transactions"), Item=store.to_item({
        "transaction_id": transaction_id, "user_id": user_id, "kind": "purchase",
        "status": "pending", "credits": 500, "amount": 499, "currency": "usd",
        "created_at": store.iso(),
    }))
    return transaction_id


def _operations() -> Iterator[tuple[str, Callable[[str], Callable[[], Any]]]]:
    """(name, prepare): prepare(user_id) does the uncounted setup and returns the operation."""
    from chalicelib.credits import ledger
    from chalicelib.core.errors import InsufficientCredits

    def new() -> str:
        return uuid.uuid4().hex

    def refused(user_id: str) -> Callable[[], Any]:
        def run() -> Any:
            try:
                ledger.charge(user_id, 10**9, service_type="bench", request_id=new())
            except InsufficientCredits as error:
                return error
            raise AssertionError("the charge should have been refused")
        return run

    def reserved(user_id: str) -> str:
        rid = new()
        ledger.reserve(user_id, 10, reservation_id=rid, purpose="bench", ref_id=rid, ttl_seconds=60)
        return rid

    def charged(user_id: str) -> str:
        request_id = new()
        ledger.charge(user_id, 1, service_type="bench", request_id=request_id)
        return request_id

    def settled(user_id: str) -> str:
        rid = reserved(user_id)
        ledger.settle(rid, 5, service_type="bench")
        return rid

    yield "charge", lambda u: lambda: ledger.charge(u, 1, service_type="bench", request_id=new())
    yield "charge (refused)", refused
    yield "balance", lambda u: lambda: ledger.get_balance(u)
    yield "reserve", lambda u: lambda: ledger.reserve(u, 10, reservation_id=new(), purpose="bench",
                                                      ref_id="r", ttl_seconds=60)
    yield "reserve with slot", lambda u: lambda: ledger.reserve(
        u, 10, reservation_id=new(), purpose="bench", ref_id="r", ttl_seconds=60, slot=("bench_slots", 10**6))
    yield "settle", lambda u: (lambda rid: lambda: ledger.settle(rid, 5, service_type="bench"))(reserved(u))
    yield "release", lambda u: (lambda rid: lambda: ledger.release(rid, reason="bench"))(reserved(u))
    yield "grant", lambda u: lambda: ledger.grant(u, 20, source="admin", record_id=new())
    yield "complete_purchase", lambda u: (lambda tid: lambda: ledger.complete_purchase(
        tid, user_id=u, credits=500, amount=499, currency="usd", stripe_fields={"payment_intent": "pi_b"}))(
        _pending_purchase(u))
    yield "clawback", lambda u: lambda: ledger.clawback(u, 1, source="refund", record_id=new())
    yield "charge replay", lambda u: (lambda rid: lambda: ledger.charge(
        u, 1, service_type="bench", request_id=rid))(charged(u))
    yield "settle replay", lambda u: (lambda rid: lambda: ledger.settle(rid, 5, service_type="bench"))(settled(u))
    yield "check_invariant", lambda u: lambda: ledger.check_invariant(u)


def measure(rounds: int = 5) -> list[Measurement]:
    """Count and time every operation; needs a reachable DynamoDB with the tables."""
    from chalicelib.credits import ledger

    counter = RequestCounter()
    results = []
    try:
        for name, prepare in _operations():
            user_id = open_account(credits=10**6)
            ledger.get_balance(user_id)  # warm: the process knows the balance
            operation = prepare(user_id)
            counter.reset()
            operation()
            warm_calls, warm = dict(counter.calls), counter.sends
            timings = []
            for _ in range(rounds):
                operation = prepare(user_id)
                started = time.perf_counter()
                operation()
                timings.append((time.perf_counter() - started) * 1000)
            operation = prepare(user_id)
            ledger.clear_caches()  # cold: as if the request landed on a fresh Lambda instance
            counter.reset()
            operation()
            results.append(Measurement(name, warm, counter.sends, warm_calls, dict(counter.calls), timings))
    finally:
        counter.close()
    return results


def table(results: list[Measurement]) -> str:
    lines = [f"{'operation':<20} {'warm':>5} {'cold':>5} {'median ms':>10}  calls (warm)",
             "-" * 78]
    for row in results:
        calls = ", ".join(f"{name} {count}" for name, count in sorted(row.warm_calls.items()))
        lines.append(f"{row.operation:<20} {row.warm_requests:>5} {row.cold_requests:>5} "
                     f"{row.median_ms:>10.1f}  {calls}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="timed repetitions per operation")
    args = parser.parse_args(argv)
    for name, value in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                        "AWS_DEFAULT_REGION": "us-east-1", "STAGE": "local",
                        "JWT_SECRET": "bench-" + "x" * 40, "LOG_LEVEL": "WARNING"}.items():
        os.environ.setdefault(name, value)
    embedded = None
    if not os.environ.get("AWS_ENDPOINT_URL"):
        from devstack.embedded_aws import EmbeddedAws

        embedded = EmbeddedAws().start()
        os.environ["AWS_ENDPOINT_URL"] = embedded.url
    try:
        import logging

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        from chalicelib.core.settings import get_settings
        from infra.bootstrap import ensure_tables

        ensure_tables(get_settings())
        results = measure(args.rounds)
        sys.stdout.write("DynamoDB requests per ledger operation (HTTP requests, SDK retries included)\n\n")
        sys.stdout.write(table(results) + "\n")
    finally:
        if embedded is not None:
            embedded.stop()


if __name__ == "__main__":
    main()
