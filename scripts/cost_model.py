"""Monthly AWS cost per 1,000 and 100,000 active users, from measured figures and a profile.

    python scripts/cost_model.py [--profile today|heartbeats|live] [--measured FILE] [--save FILE]

Two steps:

1. **Measure** (unless --measured names a saved measurement): the real app runs in process
   (chalice.test.Client, the custom authorizer included) against its own embedded AWS and the
   sandbox providers. For every route of the profile it records, per request: the DynamoDB
   requests (botocore `before-call` hooks), the read and write request units they consume, and
   the request's CPU time in this thread. DynamoDB units are computed from the items as AWS
   bills them, since moto does not: a write is ceil(KB) units per item (twice that inside a
   transaction, condition checks included), plus ceil(projected KB) per global secondary index
   the item is in or leaves; a read is ceil(KB / 4) units (half when eventually consistent),
   over the items a Query returns.
2. **Price** the profile (requests per active user per month, stated below) with list prices
   (us-east-1, on-demand, December 2026), line by line.

Lambda duration per invocation is modelled, not timed (this machine is shared): the measured
CPU time scaled to the function's share of a vCPU (memory / 1,769 MB), plus 6 ms per DynamoDB
request and the provider's answer time the route waits for (PROVIDER_WAIT_MS).
docs/performance.md quotes the output.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

ROOT = os.environ.get("COST_MODEL_APP_DIR") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# --- list prices (USD) --------------------------------------------------------------------------
PRICES = {
    "apigw_rest_per_million": 3.50,  # REST API, first 333 M requests a month
    "apigw_http_per_million": 1.00,  # HTTP API, first 300 M (what-if only: docs/performance.md)
    "lambda_per_million": 0.20,
    "lambda_per_gb_second": 0.0000166667,  # x86_64
    "ddb_per_million_wru": 0.625,  # on-demand since November 2024
    "ddb_per_million_rru": 0.125,
    "ddb_storage_gb_month": 0.25,
    "logs_ingest_per_gb": 0.50,
    "logs_storage_gb_month": 0.03,
    "sqs_per_million": 0.40,
    "s3_put_per_thousand": 0.005,
}
MEMORY_MB = {"api": 512, "authorizer": 512, "worker": 512}
DDB_MS_PER_REQUEST = 6
LOG_BYTES_PER_INVOCATION = 700  # the access log line + the platform's START/END/REPORT lines
ITEM_BYTES_PER_USER = 40_000  # users, usage rows, history, transactions of an active user: stated
PROVIDER_WAIT_MS = {"stream start": 250, "stream start renewing": 250, "stream renew": 250, "ask": 2500}
# bcrypt at cost 12 is CPU: measured with the rest (the sandbox uses the production cost here).


@dataclass
class RouteFigures:
    """Per request of one route, medians over the measured repetitions."""

    dynamodb_requests: float
    write_units: float
    read_units: float
    cpu_ms: float
    operations: dict[str, float] = field(default_factory=dict)


# --- usage profiles (per active user per month) -----------------------------------------------
# "today": the published extension as it behaves now (shared/reference/published-extension):
# 15 live hours. Its background script sends only `start` and `stop` (no heartbeat, no renew),
# so each start gets one legacy token of LIVE_LEGACY_TOKEN_MINUTES (30) and a live hour is two
# sessions. Its popup polls the balance every 30 s while captions run, but only while the popup
# is open (the interval lives in the popup page, which Chrome closes when it loses focus);
# stated here as the worst case, open the whole time.
# "heartbeats": the same with a client that also heartbeats every 30 s (the contract's
# heartbeat, which the profile of issue 17 assumed the published extension sends).
# "live": the live-captions issue's renewing sessions (10-minute paid tokens, renewed by the
# client, every answer carrying the balance): 7 requests per live hour, no heartbeat, no poll.
LIVE_HOURS = 15
SESSIONS = 15
LEGACY_TOKEN_MINUTES = 30
COMMON = {
    "login": 8,
    "auth user": 30,
    "balance": 30,
    "ask": 20,
    "history": 4,
    "transactions": 2,
    "packages": 2,
    "analytics usage": 2,
}
TODAY = {
    **COMMON,
    "stream start": LIVE_HOURS * 60 / LEGACY_TOKEN_MINUTES,
    "balance": COMMON["balance"] + LIVE_HOURS * 120,
    "stream stop": LIVE_HOURS * 60 / LEGACY_TOKEN_MINUTES,
}
PROFILES: dict[str, dict[str, float]] = {
    "today": TODAY,
    "heartbeats": {**TODAY, "stream heartbeat": LIVE_HOURS * 120},
    "live": {
        **COMMON,
        "stream start renewing": SESSIONS,
        # one renew per 9 min 15 s of captions after the first token
        "stream renew": max(0, LIVE_HOURS * 60 / 9.25 - SESSIONS),
        "stream stop renewing": SESSIONS,
    },
}
# API Gateway caches the authorizer's answer per token for 300 s: one invocation per five
# minutes of activity. Stated: a live hour is 12 periods with a poll or heartbeat every 30 s
# (7 with renewals 9 min 15 s apart: each finds the cache expired), the rest of a month about 20.
AUTHORIZER_INVOCATIONS = {"today": LIVE_HOURS * 12 + 20, "heartbeats": LIVE_HOURS * 12 + 20,
                          "live": LIVE_HOURS * 7 + 20}
# A month's new sign-ups, spread over the active users; each also buys credits now and then.
REGISTRATIONS_PER_ACTIVE_USER = 0.1


# --- measurement ---------------------------------------------------------------------------------


def _item_bytes(item: dict[str, Any]) -> int:
    """DynamoDB's item size: attribute names plus values (a close estimate from the JSON)."""
    total = 0
    for name, value in item.items():
        total += len(name.encode()) + len(json.dumps(value, separators=(",", ":")).encode()) - 6
    return max(total, 1)


class UnitCounter:
    """Counts DynamoDB requests and the request units AWS would bill for them."""

    def __init__(self) -> None:
        from chalicelib.aws import resources
        from chalicelib.aws import store

        self.store = store
        self.tables = {store.table_name(t.suffix): t for t in resources.TABLES}
        self.operations: Counter[str] = Counter()
        self.read_units = 0.0
        self.writes: list[tuple[str, dict[str, Any], bool, dict[str, Any] | None]] = []
        self.pending_deletes: list[tuple[str, dict[str, Any]]] = []
        self.before: dict[tuple[str, str], dict[str, Any] | None] = {}
        self.paused = False
        self.last_params: dict[str, Any] = {}
        self.events = store.ddb().meta.events
        self.events.register("before-parameter-build.dynamodb", self._before, unique_id="cost-model-before")
        self.events.register("after-call.dynamodb", self._after, unique_id="cost-model-after")
        from chalicelib.aws import json_client  # the authorizer's reads (no boto3)

        self.json_client, self.json_call = json_client, json_client.call
        json_client.call = self._json_call

    def _json_call(self, service: str, operation: str, payload: dict[str, Any], **kwargs: Any) -> Any:
        answer = self.json_call(service, operation, payload, **kwargs)
        if service == "dynamodb" and not self.paused:
            if operation not in ("GetItem", "Query"):
                raise NotImplementedError(f"cost model: count {operation} made through json_client")
            self._before(model=type("Model", (), {"name": operation}), params=payload)
            self._after(model=type("Model", (), {"name": operation}), parsed=answer)
        return answer

    def close(self) -> None:
        self.events.unregister("before-parameter-build.dynamodb", unique_id="cost-model-before")
        self.events.unregister("after-call.dynamodb", unique_id="cost-model-after")
        self.json_client.call = self.json_call

    def reset(self) -> None:
        self.operations.clear()
        self.read_units = 0.0
        self.writes = []
        self.before = {}

    def _snapshot(self, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
        self.paused = True
        try:
            found = self.store.ddb().get_item(TableName=table, Key=key, ConsistentRead=True).get("Item")
        finally:
            self.paused = False
        return found

    def _record_write(self, table: str, key: dict[str, Any], transactional: bool) -> None:
        marker = (table, json.dumps(key, sort_keys=True))
        if marker not in self.before:
            self.before[marker] = self._snapshot(table, key)
        self.writes.append((table, key, transactional, self.before[marker]))

    def _key_of(self, table: str, item: dict[str, Any]) -> dict[str, Any]:
        spec = self.tables[table]
        names = [spec.hash_key] + ([spec.range_key] if spec.range_key else [])
        return {name: item[name] for name in names}

    def _before(self, model: Any = None, params: Any = None, **_: Any) -> None:
        if self.paused:
            return
        name = model.name
        self.operations[name] += 1
        self.last_params = params
        if name in ("PutItem",):
            self._record_write(params["TableName"], self._key_of(params["TableName"], params["Item"]), False)
        elif name in ("UpdateItem", "DeleteItem"):
            self._record_write(params["TableName"], params["Key"], False)
        elif name == "TransactWriteItems":
            for entry in params["TransactItems"]:
                (kind, body), = entry.items()
                key = body["Key"] if "Key" in body else self._key_of(body["TableName"], body["Item"])
                if kind == "ConditionCheck":
                    self.writes.append((body["TableName"], key, True, "condition"))  # type: ignore[arg-type]
                else:
                    self._record_write(body["TableName"], key, True)

    def _after(self, model: Any = None, parsed: Any = None, **_: Any) -> None:
        if self.paused or not isinstance(parsed, dict):
            return
        name = model.name
        consistent = bool(self.last_params.get("ConsistentRead"))
        factor = 1.0 if consistent else 0.5
        if name == "GetItem":
            size = _item_bytes(parsed.get("Item") or {}) if parsed.get("Item") else 1
            self.read_units += math.ceil(size / 4096) * factor
        elif name in ("Query", "Scan"):
            size = sum(_item_bytes(item) for item in parsed.get("Items", []))
            self.read_units += max(1, math.ceil(size / 4096)) * factor
        elif name == "BatchGetItem":
            for items in parsed.get("Responses", {}).values():
                self.read_units += sum(math.ceil(_item_bytes(i) / 4096) for i in items) * factor

    def write_units(self) -> float:
        """The units of the writes recorded since reset(), items read back as they are now."""
        units = 0.0
        seen_after: dict[str, dict[str, Any] | None] = {}
        for table, key, transactional, before in self.writes:
            multiplier = 2 if transactional else 1
            if before == "condition":
                units += multiplier
                continue
            marker = table + json.dumps(key, sort_keys=True)
            if marker not in seen_after:
                seen_after[marker] = self._snapshot(table, key)
            after = seen_after[marker]
            size = max(_item_bytes(after or {}), _item_bytes(before or {}))
            units += multiplier * math.ceil(size / 1024)
            for index in self.tables[table].indexes:
                units += _index_units(index, before, after)
        return units


def _index_units(index: Any, before: dict[str, Any] | None, after: dict[str, Any] | None) -> float:
    """Write units a global secondary index costs for one base-table write."""

    def member(item: dict[str, Any] | None) -> bool:
        if not item:
            return False
        return index.hash_key in item and (index.range_key is None or index.range_key in item)

    def projected(item: dict[str, Any]) -> dict[str, Any]:
        if index.projection == "ALL":
            return item
        keep = {index.hash_key, index.range_key, *getattr(index, "non_key_attributes", ())}
        return {k: v for k, v in item.items() if k in keep}

    was, now = member(before), member(after)
    if not was and not now:
        return 0
    if was and now:
        assert before is not None and after is not None
        if projected(before) == projected(after):
            return 0  # nothing the index holds changed: no index write
        keys_changed = any(before.get(k) != after.get(k) for k in (index.hash_key, index.range_key) if k)
        size = math.ceil(_item_bytes(projected(after)) / 1024)
        return size * (2 if keys_changed else 1)  # a key change is a delete and a put
    item = after if now else before
    assert item is not None
    return math.ceil(_item_bytes(projected(item)) / 1024)


def measure(repetitions: int = 5) -> dict[str, RouteFigures]:
    """Run every route of every profile `repetitions` times; per-request medians."""
    from chalice.test import Client

    import app

    figures: dict[str, list[tuple[int, float, float, float, Counter[str]]]] = defaultdict(list)
    counter = UnitCounter()
    authorize = app.authorize

    def uncounted_authorizer(*args: Any, **kwargs: Any) -> Any:
        """The gateway caches the authorizer per token: its work is measured on its own."""
        counter.paused = True
        try:
            return authorize(*args, **kwargs)
        finally:
            counter.paused = False

    app.authorize = uncounted_authorizer
    email = f"cost-{uuid.uuid4().hex[:8]}@example.com"
    password = "correct horse battery staple"
    try:
        with Client(app.app, stage_name="local") as client:
            state: dict[str, Any] = {}

            def call(method: str, path: str, body: Any = None, token: str | None = None) -> Any:
                headers = {"Content-Type": "application/json"}
                if token:
                    headers["Authorization"] = f"Bearer {token}"
                raw = json.dumps(body).encode() if body is not None else b""
                response = client.http.request(method, path, headers=headers, body=raw)
                if response.status_code >= 400:
                    raise RuntimeError(f"{method} {path}: {response.status_code} {response.body[:300]!r}")
                return json.loads(response.body) if response.body else None

            def timed(route: str, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
                counter.reset()
                started = time.thread_time()
                result = call(method, path, body, state.get("token") if auth else None)
                cpu_ms = (time.thread_time() - started) * 1000
                ops = Counter(counter.operations)
                figures[route].append((sum(ops.values()), counter.write_units(), counter.read_units, cpu_ms, ops))
                return result

            for n in range(repetitions):
                address = email if n == 0 else f"cost-{uuid.uuid4().hex[:8]}@example.com"
                created = timed("register", "POST", "/auth/register", {"email": address, "password": password},
                                auth=False)
                state["token"] = created["token"]
                logged = timed("login", "POST", "/auth/login", {"email": address, "password": password}, auth=False)
                state["token"] = logged["token"]
                _grant(created["user"]["user_id"] if "user" in created else logged["user"]["user_id"])
                counter.reset()
                started_cpu = time.thread_time()
                authorize(f"Bearer {state['token']}")
                figures["authorizer"].append((sum(counter.operations.values()), counter.write_units(),
                                              counter.read_units, (time.thread_time() - started_cpu) * 1000,
                                              Counter(counter.operations)))
                timed("auth user", "GET", "/auth/user")
                timed("balance", "GET", "/credits/balance")
                timed("packages", "GET", "/credits/packages", auth=False)
                timed("transactions", "GET", "/credits/transactions")
                timed("history", "GET", "/transcription/history")
                timed("analytics usage", "GET", "/analytics/usage")
                # the published extension's session: a legacy start, then stop (heartbeats
                # measured for the clients that send them)
                started = timed("stream start", "POST", "/transcription/stream", {"action": "start"})
                for _ in range(3):
                    timed("stream heartbeat", "POST", "/transcription/stream",
                          {"action": "heartbeat", "session_id": started["session_id"]})
                timed("stream stop", "POST", "/transcription/stream",
                      {"action": "stop", "session_id": started["session_id"]})
                # a renewing session (the client kit)
                started = timed("stream start renewing", "POST", "/transcription/stream",
                                {"action": "start", "renewable": True})
                _renew(timed, started)
                timed("stream stop renewing", "POST", "/transcription/stream",
                      {"action": "stop", "session_id": started["session_id"]})
                timed("ask", "POST", "/transcription/ask",
                      {"question": "What was said about the budget?",
                       "transcript": "The budget was approved on Tuesday. " * 40})
    finally:
        app.authorize = authorize
        counter.close()
    return {
        route: RouteFigures(
            dynamodb_requests=statistics.median(r[0] for r in rows),
            write_units=statistics.median(r[1] for r in rows),
            read_units=statistics.median(r[2] for r in rows),
            cpu_ms=statistics.median(r[3] for r in rows[1:] or rows),  # the first request warms imports
            operations={k: statistics.median(r[4].get(k, 0) for r in rows)
                        for k in sorted({k for r in rows for k in r[4]})},
        )
        for route, rows in figures.items()
    }


def _renew(timed: Any, started: dict[str, Any]) -> None:
    """A renewing session (the live-captions design): the clock is moved to the renew window."""
    from chalicelib.aws import store

    real = store.epoch
    shift = max(0, int(started.get("renew_in_seconds", 0)) + 1)
    store.epoch = lambda: real() + shift  # type: ignore[assignment]
    try:
        timed("stream renew", "POST", "/transcription/stream",
              {"action": "renew", "session_id": started["session_id"], "token_number": 1})
    finally:
        store.epoch = real  # type: ignore[assignment]


def _grant(user_id: str) -> None:
    from chalicelib.credits import ledger

    ledger.grant(user_id, 10_000, source="admin", record_id=uuid.uuid4().hex)


def run_measurement(repetitions: int) -> dict[str, RouteFigures]:
    env = {"AWS_ACCESS_KEY_ID": "cost", "AWS_SECRET_ACCESS_KEY": "cost", "AWS_DEFAULT_REGION": "us-east-1",
           "STAGE": "local", "JWT_SECRET": "cost-model-" + "x" * 40, "LOG_LEVEL": "ERROR",
           "BCRYPT_ROUNDS": "12", "STRIPE_PRICE_CHECK": "false"}
    for name, value in env.items():
        os.environ.setdefault(name, value)
    import logging

    logging.disable(logging.WARNING)
    from devstack.embedded_aws import EmbeddedAws
    from devstack.sandbox import start_sandboxes

    embedded = EmbeddedAws().start()
    os.environ["AWS_ENDPOINT_URL"] = embedded.url
    provider_env = dict(os.environ)
    fakes, _ = start_sandboxes(provider_env)  # fills provider_env with the fakes' settings
    os.environ.update(provider_env)
    try:
        from chalicelib.core.settings import get_settings
        from infra.bootstrap import bootstrap

        bootstrap(get_settings())
        return measure(repetitions)
    finally:
        for fake in fakes:
            fake.stop()
        embedded.stop()


# --- pricing -------------------------------------------------------------------------------------


def authorizer_figures(measured: dict[str, RouteFigures]) -> RouteFigures:
    """The authorizer's own figures: measured when it reads DynamoDB, else a pure JWT check."""
    return measured.get("authorizer", RouteFigures(0, 0, 0, 3.0))


def monthly_cost(measured: dict[str, RouteFigures], profile: str, users: int) -> list[tuple[str, float, str]]:
    """[(line, USD, how)] for `users` active users a month."""
    requests = dict(PROFILES[profile])
    requests["register"] = REGISTRATIONS_PER_ACTIVE_USER
    api_requests = sum(requests.values()) * users
    authorizer_calls = AUTHORIZER_INVOCATIONS[profile] * users
    wru = rru = 0.0
    gb_seconds = 0.0
    for route, per_user in requests.items():
        figures = measured[route]
        count = per_user * users
        wru += figures.write_units * count
        rru += figures.read_units * count
        gb_seconds += count * _duration_s(figures, route, MEMORY_MB["api"]) * MEMORY_MB["api"] / 1024
    auth = authorizer_figures(measured)
    wru += auth.write_units * authorizer_calls
    rru += auth.read_units * authorizer_calls
    gb_seconds += authorizer_calls * _duration_s(auth, "authorizer", MEMORY_MB["authorizer"]) * \
        MEMORY_MB["authorizer"] / 1024
    invocations = api_requests + authorizer_calls
    log_gb = invocations * LOG_BYTES_PER_INVOCATION / 1e9
    lines = [
        ("API Gateway (REST)", api_requests / 1e6 * PRICES["apigw_rest_per_million"],
         f"{api_requests:,.0f} requests"),
        ("Lambda requests", invocations / 1e6 * PRICES["lambda_per_million"],
         f"{invocations:,.0f} invocations ({authorizer_calls:,.0f} authorizer)"),
        ("Lambda duration", gb_seconds * PRICES["lambda_per_gb_second"], f"{gb_seconds:,.0f} GB-s"),
        ("DynamoDB writes", wru / 1e6 * PRICES["ddb_per_million_wru"], f"{wru:,.0f} write units"),
        ("DynamoDB reads", rru / 1e6 * PRICES["ddb_per_million_rru"], f"{rru:,.0f} read units"),
        ("DynamoDB storage", users * ITEM_BYTES_PER_USER / 1e9 * PRICES["ddb_storage_gb_month"],
         f"{users * ITEM_BYTES_PER_USER / 1e9:,.2f} GB"),
        ("CloudWatch Logs", log_gb * (PRICES["logs_ingest_per_gb"] + PRICES["logs_storage_gb_month"]),
         f"{log_gb:,.2f} GB"),
    ]
    return lines


def _duration_s(figures: RouteFigures, route: str, memory_mb: int) -> float:
    cpu_share = min(1.0, memory_mb / 1769)
    ms = figures.cpu_ms / cpu_share + figures.dynamodb_requests * DDB_MS_PER_REQUEST + PROVIDER_WAIT_MS.get(route, 0)
    return max(1, math.ceil(ms)) / 1000  # billed per millisecond


def report(measured: dict[str, RouteFigures], profile: str) -> str:
    out = [f"Measured per request (medians; units as AWS bills them)", "",
           f"{'route':<22} {'DDB req':>8} {'WRU':>6} {'RRU':>6} {'CPU ms':>7}  operations"]
    for route, f in sorted(measured.items()):
        ops = ", ".join(f"{k} {v:g}" for k, v in f.operations.items())
        out.append(f"{route:<22} {f.dynamodb_requests:>8g} {f.write_units:>6g} {f.read_units:>6g} "
                   f"{f.cpu_ms:>7.1f}  {ops}")
    out += ["", f"Profile '{profile}' (per active user per month): " +
            ", ".join(f"{k} {v:g}" for k, v in sorted(PROFILES[profile].items())) +
            f"; register {REGISTRATIONS_PER_ACTIVE_USER:g}; authorizer {AUTHORIZER_INVOCATIONS[profile]}", ""]
    for users in (1_000, 100_000):
        lines = monthly_cost(measured, profile, users)
        total = sum(cost for _, cost, _ in lines)
        out.append(f"{users:,} active users: ${total:,.2f} a month (${total / users * 1000:,.2f} per 1,000)")
        for name, cost, how in lines:
            out.append(f"  {name:<20} ${cost:>10,.2f}  {how}")
        rest = lines[0][1]
        http = rest * PRICES["apigw_http_per_million"] / PRICES["apigw_rest_per_million"]
        out.append(f"  (what-if, an HTTP API: API Gateway ${http:,.2f}, total ${total - rest + http:,.2f})")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default=None,
                        help="default: both")
    parser.add_argument("--measured", help="a JSON file written by --save, instead of measuring")
    parser.add_argument("--save", help="write the measurement to this JSON file")
    parser.add_argument("--repetitions", type=int, default=4)
    args = parser.parse_args(argv)
    if args.measured:
        with open(args.measured, encoding="utf-8") as handle:
            measured = {k: RouteFigures(**v) for k, v in json.load(handle).items()}
    else:
        measured = run_measurement(args.repetitions)
    if args.save:
        with open(args.save, "w", encoding="utf-8") as handle:
            json.dump({k: asdict(v) for k, v in measured.items()}, handle, indent=1, sort_keys=True)
    for profile in [args.profile] if args.profile else sorted(PROFILES, reverse=True):
        sys.stdout.write(report(measured, profile) + "\n")


if __name__ == "__main__":
    main()
