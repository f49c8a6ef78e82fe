"""DynamoDB requests and time of the operator's cost report, at several numbers of users.

    python scripts/bench_analytics.py [--users 20,200] [--active-days 6]

Starts its own embedded AWS (moto's server, as `make run` does) unless AWS_ENDPOINT_URL is
set, creates the tables, then for each user count: that many users, each with provider
calls and a purchase on `--active-days` random days of the last year (written through
chalicelib.credits.stats as the app writes them), and measures `analytics.costs` (the
`GET /analytics/costs` report) and `analytics.top_users` (`GET /analytics/costs/top-users`)
for 30 and 365 days: DynamoDB API calls (botocore `before-call`) and HTTP requests
(`before-send`, SDK retries included), and the wall time on this machine (shared: the
times are indicative, the counts repeat). docs/performance.md quotes the output.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

PERIODS = (30, 365)


class Requests:
    """The DynamoDB calls and HTTP requests made through the app's client while counting."""

    def __init__(self) -> None:
        from chalicelib.aws import store

        self.calls: Counter[str] = Counter()
        self.sends = 0
        self.events = store.ddb().meta.events
        self.events.register("before-call.dynamodb", self._call, unique_id="bench-analytics-call")
        self.events.register("before-send.dynamodb", self._send, unique_id="bench-analytics-send")

    def _call(self, model: Any = None, **_: Any) -> None:
        self.calls[model.name] += 1

    def _send(self, **_: Any) -> None:
        self.sends += 1

    def measure(self, action: Callable[[], Any]) -> tuple[dict[str, int], int, float]:
        self.calls.clear()
        self.sends = 0
        started = time.perf_counter()
        action()
        return dict(self.calls), self.sends, (time.perf_counter() - started) * 1000

    def close(self) -> None:
        self.events.unregister("before-call.dynamodb", unique_id="bench-analytics-call")
        self.events.unregister("before-send.dynamodb", unique_id="bench-analytics-send")


def add_users(first: int, last: int, active_days: int, rng: random.Random) -> None:
    """Users first..last-1, each active on `active_days` random days of the last year."""
    from chalicelib.aws import store
    from chalicelib.credits import stats

    now = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    for number in range(first, last):
        user_id = f"bench-{number:06d}".ljust(32, "0")
        for days_ago in rng.sample(range(365), active_days):
            at = now - timedelta(days=days_ago)
            stats.record_usage(user_id, "ask", openai_prompt_tokens=rng.randint(100, 2000),
                               openai_completion_tokens=rng.randint(10, 300), at=at)
            stats.record_usage(user_id, "live", assemblyai_streaming_seconds=rng.randint(60, 3600), at=at)
        store.ddb().transact_write_items(TransactItems=stats.revenue_items(
            user_id, stats.PURCHASES, 999, "usd", now - timedelta(days=rng.randrange(365))))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", default="20,200", help="comma-separated user counts, ascending")
    parser.add_argument("--active-days", type=int, default=6, help="days with provider calls per user")
    args = parser.parse_args(argv)
    counts = sorted(int(n) for n in args.users.split(","))
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
        from chalicelib.accounts.tokens import Identity
        from chalicelib.core.settings import get_settings
        from chalicelib.ops import analytics
        from infra.bootstrap import ensure_tables

        ensure_tables(get_settings())
        operator = Identity("bench-admin", "admin@example.com", "admin")
        rng = random.Random(17)
        counter = Requests()
        rows = []
        done = 0
        for users in counts:
            add_users(done, users, args.active_days, rng)
            done = users
            for days in PERIODS:
                for name, report in (("costs", analytics.costs), ("top-users", analytics.top_users)):
                    calls, sends, ms = counter.measure(
                        lambda report=report, days=days: report(operator, {"days": str(days)}))
                    rows.append((users, users * args.active_days, days, name, sum(calls.values()), sends, ms, calls))
        counter.close()
        sys.stdout.write(f"STATS_SHARDS={get_settings().stats_shards}; each user active on {args.active_days} "
                         "days of the year\n\n")
        sys.stdout.write(f"{'users':>6} {'user-days':>9} {'days':>5} {'report':<10} {'calls':>6} {'HTTP':>6} "
                         f"{'ms':>8}  operations\n")
        for users, user_days, days, name, total, sends, ms, calls in rows:
            operations = ", ".join(f"{k} {v}" for k, v in sorted(calls.items()))
            sys.stdout.write(f"{users:>6} {user_days:>9} {days:>5} {name:<10} {total:>6} {sends:>6} {ms:>8.0f}  "
                             f"{operations}\n")
    finally:
        if embedded is not None:
            embedded.stop()


if __name__ == "__main__":
    main()
