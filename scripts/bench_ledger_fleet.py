"""Spends on a fleet: DynamoDB requests and write units per spend with random routing.

    python scripts/bench_ledger_fleet.py [--processes 6] [--users 20] [--spends 600]

On Lambda, each request of a user may land on any container, and each container keeps its
own ledger caches. This runs `ledger.charge` from several processes (each a "container"
with its own caches), every spend sent to a random one, against one embedded AWS, once per
LEDGER_GUESS_SECONDS value (how long a process trusts the balance it last saw before it
reads the balance first; 0 = always read first, `inf` = the old always-guess design).
Counted in every process with botocore's hooks: API calls by operation, refused
transactions (a stale guess), and billed units: 2 write units per item of a transaction
(a refused one is billed the same), 1 read unit per strongly consistent GetItem.

At the end every user's usage rows are checked: each `balance_after` is exact (the chain of
charges in commit order ends at the stored balance) and the ledger invariant holds.
docs/performance.md quotes the output.
"""
from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import random
import sys
import uuid
from collections import Counter
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

WRU_USD = 0.625 / 1e6
RRU_USD = 0.125 / 1e6


def _worker(endpoint: str, guess_seconds: str, inbox: Any, outbox: Any) -> None:
    """One "container": charges what it is sent, counts what it asks DynamoDB."""
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    os.environ["LEDGER_GUESS_SECONDS"] = guess_seconds
    from chalicelib.aws import store
    from chalicelib.credits import ledger

    counts: Counter[str] = Counter()
    units = {"wru": 0.0, "rru": 0.0}

    def before(model: Any = None, params: Any = None, **_: Any) -> None:
        counts[model.name] += 1
        if model.name == "TransactWriteItems":
            units["wru"] += 2 * len(params["TransactItems"])
        elif model.name == "GetItem":
            units["rru"] += 1 if params.get("ConsistentRead") else 0.5

    def after(model: Any = None, http_response: Any = None, **_: Any) -> None:
        if model.name == "TransactWriteItems" and getattr(http_response, "status_code", 200) != 200:
            counts["refused transactions"] += 1

    events = store.ddb().meta.events
    events.register("before-parameter-build.dynamodb", before)
    events.register("after-call.dynamodb", after)
    while True:
        job = inbox.get()
        if job is None:
            break
        user_id, cost = job
        ledger.charge(user_id, cost, service_type="bench", request_id=uuid.uuid4().hex)
    outbox.put((dict(counts), units))


def run(endpoint: str, guess_seconds: str, processes: int, users: list[str], spends: int,
        seed: int) -> dict[str, float]:
    context = multiprocessing.get_context("spawn")
    inboxes = [context.Queue() for _ in range(processes)]
    outbox = context.Queue()
    workers = [context.Process(target=_worker, args=(endpoint, guess_seconds, inbox, outbox))
               for inbox in inboxes]
    for worker in workers:
        worker.start()
    rng = random.Random(seed)
    for _ in range(spends):
        rng.choice(inboxes).put((rng.choice(users), rng.randint(1, 5)))
    for inbox in inboxes:
        inbox.put(None)
    totals: Counter[str] = Counter()
    units = {"wru": 0.0, "rru": 0.0}
    for _ in workers:
        counts, worker_units = outbox.get(timeout=1800)  # a worker that died: queue.Empty
        totals.update(counts)
        units["wru"] += worker_units["wru"]
        units["rru"] += worker_units["rru"]
    for worker in workers:
        worker.join()
    requests = sum(v for k, v in totals.items() if k != "refused transactions")
    return {
        "requests": requests / spends,
        "transactions": totals["TransactWriteItems"] / spends,
        "refused": totals["refused transactions"] / spends,
        "reads": totals["GetItem"] / spends,
        "wru": units["wru"] / spends,
        "rru": units["rru"] / spends,
        "usd_per_million": (units["wru"] * WRU_USD + units["rru"] * RRU_USD) / spends * 1e6,
    }


def check_exact(user_id: str) -> None:
    """Every balance_after follows from the previous one; the last is the stored balance."""
    from chalicelib.aws import store
    from chalicelib.credits import ledger

    rows = sorted(store.query_all({
        "TableName": store.table_name("usage"), "KeyConditionExpression": "user_id = :u",
        "ExpressionAttributeValues": store.values(u=user_id),
    }), key=lambda row: row["balance_after"], reverse=True)
    balance = ledger.get_balance(user_id)["balance"]
    previous = None
    for row in rows:
        if previous is not None and row["balance_after"] != previous - row["credits_used"]:
            raise AssertionError(f"balance_after chain broken for {user_id}: {row}")
        previous = row["balance_after"]
    if rows and rows[-1]["balance_after"] != balance:
        raise AssertionError(f"last balance_after is not the balance for {user_id}: "
                             f"{rows[-1]['balance_after']} != {balance}, {len(rows)} rows")
    report = ledger.check_invariant(user_id)
    if not report.ok:
        raise AssertionError(f"invariant broken for {user_id}: {report}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=6)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--spends", type=int, default=600)
    parser.add_argument("--guess-seconds", nargs="*", default=["inf", "0"])
    args = parser.parse_args(argv)
    for name, value in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                        "AWS_DEFAULT_REGION": "us-east-1", "STAGE": "local",
                        "JWT_SECRET": "bench-" + "x" * 40, "LOG_LEVEL": "ERROR"}.items():
        os.environ.setdefault(name, value)
    import logging

    logging.disable(logging.WARNING)
    from devstack.embedded_aws import EmbeddedAws

    with EmbeddedAws() as aws:
        os.environ["AWS_ENDPOINT_URL"] = aws.url
        from chalicelib.core.settings import get_settings
        from infra.bootstrap import bootstrap
        from scripts.bench_ledger import open_account

        bootstrap(get_settings())
        print(f"{args.processes} processes, {args.users} users, {args.spends} spends, random routing\n")
        print(f"{'LEDGER_GUESS_SECONDS':<21} {'requests':>9} {'transact':>9} {'refused':>8} {'reads':>6} "
              f"{'WRU':>6} {'RRU':>5} {'USD per million spends':>23}")
        for seconds in args.guess_seconds:
            users = [open_account(credits=10**6) for _ in range(args.users)]
            figures = run(aws.url, seconds, args.processes, users, args.spends, seed=7)
            for user_id in users:
                check_exact(user_id)
            label = "inf (always guess)" if math.isinf(float(seconds)) else seconds
            print(f"{label:<21} {figures['requests']:>9.2f} {figures['transactions']:>9.2f} "
                  f"{figures['refused']:>8.2f} {figures['reads']:>6.2f} {figures['wru']:>6.2f} "
                  f"{figures['rru']:>5.2f} {figures['usd_per_million']:>23.2f}")
        print("\nbalance_after exact and the invariant holding for every user, every design")


if __name__ == "__main__":
    main()
