"""Live captions: API requests per live hour, and the worst-case unpaid provider time.

    python scripts/bench_live.py [--hours N]

Runs the real app in process (chalice.test.Client) against its own embedded AWS (unless
AWS_ENDPOINT_URL is set) and the fake AssemblyAI, with a simulated clock (store.epoch and
the fake's clock), so hours of sessions take seconds. For each client behaviour it counts
the API requests the client makes and compares what the session's tokens allow AssemblyAI
to bill (the sum of their max_session_duration_seconds: a socket held open to the end)
with what the session was billed. README "The bound" quotes the output.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

ASSEMBLYAI_USD_PER_HOUR = 0.15


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Outcome:
    behaviour: str
    requests: int
    live_seconds: int
    allowed_seconds: int
    billed_seconds: int

    @property
    def unpaid_seconds(self) -> int:
        return max(self.allowed_seconds - self.billed_seconds, 0)


class Client:
    """One account driving POST /transcription/stream like a browser, requests counted."""

    def __init__(self, http: Any, clock: Clock, fake: Any, paying: bool) -> None:
        from chalicelib.credits import ledger

        self.http, self.clock, self.fake = http, clock, fake
        email = f"bench-{uuid.uuid4().hex[:12]}@example.com"
        body = self._call("/auth/register", {"email": email, "password": "bench password 1"}, count=False)
        self.token, self.user_id = body["token"], body["user"]["user_id"]
        if paying:
            ledger.grant(self.user_id, 10_000, source="bench", record_id=uuid.uuid4().hex, purchased=True)
        self.requests = 0
        self.tokens: list[str] = []

    def _call(self, path: str, body: dict[str, Any], count: bool = True) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if count:
            self.requests += 1
            headers["Authorization"] = f"Bearer {self.token}"
        response = self.http.post(path, headers=headers, body=json.dumps(body))
        return json.loads(response.body)

    def stream(self, **body: Any) -> dict[str, Any]:
        answer = self._call("/transcription/stream", body)
        if answer.get("token"):
            self.tokens.append(answer["token"])
        return answer

    def allowed_seconds(self) -> int:
        return sum(self.fake.token_info(t).max_session_duration_seconds for t in set(self.tokens))

    def billed_seconds(self) -> int:
        from chalicelib.aws import store

        rows = store.query_all({
            "TableName": store.table_name("usage"), "KeyConditionExpression": "user_id = :u",
            "ExpressionAttributeValues": store.values(u=self.user_id),
        })
        return sum(int(r["credits_used"]) for r in rows if r.get("service_type") == "live") // 10 * 60


def renewing_session(client: Client, seconds: int, *, stop: bool = True, vanish_after: int | None = None) -> int:
    """Start, renew whenever told, stop after `seconds` (or vanish); returns live seconds."""
    answer = client.stream(action="start", renewable=True)
    session_id, started = answer["session_id"], client.clock.now
    renew_at = started + answer["renew_in_seconds"]
    while client.clock.now - started < seconds:
        step = min(renew_at, started + seconds) - client.clock.now
        client.clock.advance(max(step, 0))
        if client.clock.now >= renew_at and client.clock.now - started < seconds:
            if vanish_after is not None and client.requests > vanish_after:
                break
            answer = client.stream(action="renew", session_id=session_id, token_number=answer["token_number"])
            if "renew_in_seconds" not in answer:
                raise SystemExit(f"renew refused at {client.clock.now - started:.0f} s: {answer}")
            renew_at = client.clock.now + answer["renew_in_seconds"]
    if stop:
        client.stream(action="stop", session_id=session_id)
    return int(client.clock.now - started)


def settle_by_cleanup(client: Client) -> None:
    from chalicelib.aws import store
    from chalicelib.ops import janitor

    client.clock.advance(4 * 3600)
    janitor.run(now_epoch=store.epoch())


def scenarios(new_client: Callable[[bool], Client], hours: int) -> list[Outcome]:
    results = []

    def record(name: str, client: Client, live: int) -> None:
        results.append(Outcome(name, client.requests, live, client.allowed_seconds(), client.billed_seconds()))

    c = new_client(True)
    record(f"renewing, honest, {hours} h", c, renewing_session(c, hours * 3600))
    c = new_client(True)
    record("renewing, honest, 45 min", c, renewing_session(c, 45 * 60))
    c = new_client(True)
    record("renewing, stop at once, keep streaming", c, renewing_session(c, 0))
    c = new_client(True)
    live = renewing_session(c, 45 * 60, stop=False, vanish_after=3)
    settle_by_cleanup(c)
    record("renewing, never stops (no heartbeat, token expired)", c, live)
    c = new_client(True)
    answer = c.stream(action="start")
    c.stream(action="stop", session_id=answer["session_id"])
    record("legacy (published extension), stop at once", c, 0)
    c = new_client(True)
    c.stream(action="start")
    settle_by_cleanup(c)
    record("legacy, never stopped", c, 30 * 60)
    c = new_client(False)
    c.stream(action="start")
    settle_by_cleanup(c)
    record("legacy, never stopped, never-paid account", c, 10 * 60)
    c = new_client(False)
    renewing_session(c, 0)
    record("renewing, stop at once, never-paid account", c, 0)
    return results


def report(results: list[Outcome], hours: int) -> str:
    from chalicelib.core.settings import get_settings

    settings = get_settings()
    lines = ["Live captions: requests and unpaid provider time per session", ""]
    lines.append(f"{'behaviour':<52} {'requests':>8} {'per live h':>10} {'allowed s':>9} "
                 f"{'billed s':>8} {'unpaid s':>8}")
    for r in results:
        per_hour = f"{r.requests / (r.live_seconds / 3600):.1f}" if r.live_seconds >= 3600 else "-"
        lines.append(f"{r.behaviour:<52} {r.requests:>8} {per_hour:>10} {r.allowed_seconds:>9} "
                     f"{r.billed_seconds:>8} {r.unpaid_seconds:>8}")
    paying = max(r.unpaid_seconds for r in results if "never-paid" not in r.behaviour)
    never_paid = max(r.unpaid_seconds for r in results if "never-paid" in r.behaviour)
    per_day = settings.live_max_sessions_per_day
    lines += [
        "",
        f"worst case unpaid per session: paying {paying} s, never-paid {never_paid} s",
        f"worst case unpaid per account per day ({per_day} sessions, ${ASSEMBLYAI_USD_PER_HOUR}/h): "
        f"paying {per_day * paying / 3600:.1f} h = ${per_day * paying / 3600 * ASSEMBLYAI_USD_PER_HOUR:.2f}, "
        f"never-paid {per_day * never_paid / 3600:.1f} h = "
        f"${per_day * never_paid / 3600 * ASSEMBLYAI_USD_PER_HOUR:.2f}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=int, default=2, help="length of the long honest session (< LIVE_MAX_MINUTES)")
    args = parser.parse_args(argv)
    for name, value in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                        "AWS_DEFAULT_REGION": "us-east-1", "STAGE": "local", "BCRYPT_ROUNDS": "4",
                        "JWT_SECRET": "bench-" + "x" * 40, "LOG_LEVEL": "WARNING",
                        "RATE_LIMITS": "spend:off,read:off,write:off"}.items():
        os.environ.setdefault(name, value)
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    from devstack.fakes import AssemblyAIFake

    embedded = None
    if not os.environ.get("AWS_ENDPOINT_URL"):
        from devstack.embedded_aws import EmbeddedAws

        embedded = EmbeddedAws().start()
        os.environ["AWS_ENDPOINT_URL"] = embedded.url
    clock = Clock()
    fake = AssemblyAIFake(api_key="bench-assemblyai-key", clock=clock.time).start()
    os.environ.update(ASSEMBLYAI_API_KEY=fake.api_key, ASSEMBLYAI_API_BASE=fake.url,
                      ASSEMBLYAI_STREAMING_API_BASE=fake.streaming_url)
    try:
        from chalice.test import Client as ChaliceClient

        from chalicelib.aws import store
        from chalicelib.core import logs
        from chalicelib.core.settings import get_settings
        from infra.bootstrap import bootstrap

        bootstrap(get_settings())
        logs.configure("WARNING")
        store.epoch = lambda: int(clock.now)  # type: ignore[assignment]
        store.now = lambda: datetime.fromtimestamp(clock.now, timezone.utc)  # type: ignore[assignment]
        import app

        with ChaliceClient(app.app) as http:
            results = scenarios(lambda paying: Client(http.http, clock, fake, paying), args.hours)
        sys.stdout.write(report(results, args.hours) + "\n")
    finally:
        fake.stop()
        if embedded is not None:
            embedded.stop()


if __name__ == "__main__":
    main()
