"""Fuzzing every route with hypothesis: garbage in, a 4xx out, never a 5xx, nothing written.

Each route (enumerated from `app.app.routes`) gets garbage bodies (invalid UTF-8, JSON that
is not an object, NaN and Infinity, enormous and negative numbers, huge strings, deep
nesting, lone surrogates), its own schema's fields filled with a mix of plausible and wrong
values (always at least one wrong, so no request is valid), garbage query parameters and
garbage path parameters. Derandomised and bounded (FUZZ_EXAMPLES per route), so it is
stable in CI; the totals are printed by the last test of the module.
"""
from __future__ import annotations

import json
import os
import string
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.aws import store
from chalicelib.core.validation import Field, Schema
from tests.conftest import PASSWORD, json_headers, unique_email
from tests.security.routes import Route, all_routes

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))
ROUTES = all_routes()
STATS: dict[str, Any] = {"routes": set(), "cases": 0, "5xx": 0, "by_status": {}, "seconds": 0.0}

NAN, INF, NEG_INF, BIG_FLOAT = "__NaN__", "__Infinity__", "__-Infinity__", "__1e400__"
LITERALS = {NAN: "NaN", INF: "Infinity", NEG_INF: "-Infinity", BIG_FLOAT: "1e400"}

huge_ints = st.sampled_from([-1, 0, -(2**63), 2**63, 2**64 + 1, 10**30, -(10**30), 10**400])
huge_strings = st.builds(lambda ch, n: ch * n, st.sampled_from(["a", "é", "\x00", "💥", "\\"]),
                         st.sampled_from([257, 1025, 70_000, 1_200_000]))
odd_strings = st.sampled_from([
    "", " ", "\x00", "\ud800", "\udfff", "a\ud83dz", "\u202e", "null", "NaN", "-1", "1e400",
    "../../etc/passwd", "<script>", "' OR 1=1 --", "%00", "{}", "[]", "true", "0x10", "１２", "٣",
])
leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), huge_ints, st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40), odd_strings, st.sampled_from(list(LITERALS)),
)
json_values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
garbage = st.one_of(json_values, huge_strings, st.builds(
    lambda depth, leaf: _nest(depth, leaf), st.sampled_from([9, 40, 3000]), leaves))


def _nest(depth: int, leaf: Any) -> Any:
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"n": value}
    return value


def dump(value: Any) -> bytes:
    """JSON text, with the placeholder strings turned into the non-standard literals.

    Raw UTF-8 where possible; a lone surrogate can only travel as a `\\ud800` escape.
    """
    try:
        text = json.dumps(value, ensure_ascii=False)
    except RecursionError:
        text = "[" * 5000 + "]" * 5000
    for placeholder, literal in LITERALS.items():
        text = text.replace(json.dumps(placeholder), literal)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return dump_ascii(value)


def dump_ascii(value: Any) -> bytes:
    text = json.dumps(value)
    for placeholder, literal in LITERALS.items():
        text = text.replace(json.dumps(placeholder), literal)
    return text.encode("ascii")


def wrong_value(spec: Field) -> st.SearchStrategy[Any]:
    """A value `spec` must refuse: the wrong type, too long, too small or too big."""
    wrong_types = {str: st.one_of(st.integers(), st.booleans(), st.lists(st.text(max_size=3), max_size=2),
                                  st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                                  st.sampled_from([NAN, INF])),
                   int: st.one_of(st.text(max_size=8), st.floats(allow_nan=False).filter(
                       lambda f: f != int(f) if f == f and abs(f) < 1e300 else True),
                       st.booleans(), st.sampled_from([NAN, INF, NEG_INF, BIG_FLOAT]), st.lists(st.integers(), max_size=2)),
                   }
    options = [wrong_types.get(spec.kind, st.sampled_from([{"x": 1}, [1], "x"]))]
    if spec.kind is str:
        options.append(st.builds(lambda n: "a" * n, st.integers(spec.max_length + 1, spec.max_length + 5000)))
        options.append(st.sampled_from(["\ud800", "ok\udfffok", "\udc00" * 3]))  # not UTF-8 text
    if spec.kind is int and spec.maximum is not None:
        options.append(st.integers(int(spec.maximum) + 1, int(spec.maximum) + 10**12))
    if spec.kind is int and spec.minimum is not None:
        options.append(st.integers(-(10**12), int(spec.minimum) - 1))
    return st.one_of(*options)


def plausible_value(spec: Field) -> st.SearchStrategy[Any]:
    """A value of the right shape (often valid), so the fuzzer reaches past the type checks."""
    if spec.choices:
        return st.sampled_from(list(spec.choices))
    if spec.kind is int:
        low = int(spec.minimum) if spec.minimum is not None else -1000
        high = int(spec.maximum) if spec.maximum is not None else 10**6
        return st.integers(low, high)
    if spec.kind is str and spec.pattern:
        return st.from_regex(spec.pattern, fullmatch=True).filter(lambda s: len(s) <= spec.max_length)
    if spec.kind is str:  # at least 8 characters, so a password passes its rules too
        low = min(max(spec.min_length, 8), spec.max_length)
        return st.text(string.printable, min_size=low, max_size=max(low, min(spec.max_length, 64)))
    return garbage


@st.composite
def schema_mutant(draw: st.DrawFn, schema: Schema) -> dict[str, Any]:
    """The schema's own fields, mixing plausible and garbage values, with at least one wrong."""
    names = list(schema.fields)
    body: dict[str, Any] = {}
    for name in names:
        choice = draw(st.sampled_from(["omit", "plausible", "plausible", "garbage"]))
        if choice == "plausible":
            body[name] = draw(plausible_value(schema.fields[name]))
        elif choice == "garbage":
            body[name] = draw(garbage)
    # Make sure this request is invalid: a wrong value, or a field the schema does not know.
    if names and (schema.allow_unknown or draw(st.booleans())):
        target = draw(st.sampled_from(names))
        body[target] = draw(wrong_value(schema.fields[target]))
    else:
        body[draw(st.text(min_size=1, max_size=20).filter(lambda k: k not in schema.fields))] = draw(garbage)
    return body


@st.composite
def near_valid(draw: st.DrawFn, schema: Schema) -> dict[str, Any]:
    """Every field plausible except exactly one wrong value: the check that must catch it is
    the last one standing (this is how a lone surrogate in a free-text field was found)."""
    body = {name: draw(plausible_value(spec)) for name, spec in schema.fields.items()}
    target = draw(st.sampled_from(list(schema.fields)))
    body[target] = draw(wrong_value(schema.fields[target]))
    return body


def body_strategy(route: Route) -> st.SearchStrategy[bytes]:
    common = [
        st.binary(max_size=300),  # mostly invalid UTF-8
        st.builds(lambda raw: b"\xff\xfe" + raw, st.binary(max_size=50)),
        json_values.filter(lambda v: not isinstance(v, dict)).map(dump),
        st.dictionaries(st.text(max_size=20), garbage, max_size=6).map(dump),
        garbage.map(dump),
        st.sampled_from([b"", b"{", b"null", b"NaN", b"[]", b'{"a":NaN}', b'{"a":1e999}',
                         b'{"a":"\\ud800"}', b"\x00" * 64, b'{"__proto__":{}}']),
    ]
    schema = route.inputs.body if route.inputs else None
    if isinstance(schema, Schema):
        common.append(schema_mutant(schema).map(dump))
        common += [near_valid(schema).map(dump) for _ in range(3)]  # weighted: reaches deepest
    return st.one_of(*common)


def query_strategy(route: Route) -> st.SearchStrategy[dict[str, str]]:
    names = list(route.inputs.query) if route.inputs else []
    keys = st.sampled_from(names + ["limit", "cursor", "days", "x"]) if names else st.text(max_size=10)
    values = st.one_of(st.text(max_size=30), odd_strings.filter(lambda s: "\ud800" > s or s > "\udfff"),
                       st.builds(lambda n: "9" * n, st.integers(1, 400)),
                       st.sampled_from(["-1", "0", "1e9", "NaN", "0x1f", " 5", "5 ", "+5", "٣"]))
    return st.dictionaries(keys, values.map(lambda s: s.encode("utf-8", "replace").decode("utf-8")),
                           max_size=3)


def param_strategy(route: Route) -> st.SearchStrategy[dict[str, str]]:
    values = st.one_of(st.text(min_size=1, max_size=80), st.builds(lambda n: "z" * n, st.integers(65, 3000)),
                       st.sampled_from(["..", "%2e%2e", "x#transcript", "a/b", "null", "-1"]))
    return st.fixed_dictionaries({name: values.map(lambda s: s.encode("utf-8", "replace").decode("utf-8"))
                                  for name in route.params})


# Tables an unauthenticated request could add to (a sign-up, a webhook, a replay key);
# the fuzzing user's own data is counted separately. Tables a background job of a live
# server may legitimately change meanwhile (sessions swept, counters expiring) are not.
GLOBAL_TABLES = ("users", "emails", "stripe-events", "idempotency")


def snapshot(user_id: str) -> dict[str, Any]:
    """What garbage must not change: those tables' sizes, the user's item and their data."""
    from tests.security.data import owned_counts

    counts = {table: store.ddb().scan(TableName=store.table_name(table), Select="COUNT")["Count"]
              for table in GLOBAL_TABLES}
    return {"tables": counts, "user": store.get("users", user_id=user_id), "owned": owned_counts(user_id)}


@pytest.fixture(scope="module")
def fuzz_user(aws_endpoint, provider_env):
    """One user to fuzz as, with rate limits off (the fuzzer must reach the views), and a
    snapshot of every table taken before the first route is fuzzed."""
    from chalicelib.accounts import auth
    from chalicelib.core.settings import reset_settings

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RATE_LIMITS_ENABLED", "false")
        reset_settings()
        session = auth.register(unique_email("fuzz"), PASSWORD, "Fuzz")
        STATS["before"] = snapshot(session["user"]["user_id"])
        yield session
    reset_settings()


@pytest.mark.parametrize("route", ROUTES, ids=[route.id for route in ROUTES])
def test_fuzz_route(route: Route, client, fuzz_user) -> None:
    token = fuzz_user["token"] if route.authenticated else None
    user_before = store.get("users", user_id=fuzz_user["user"]["user_id"])
    failures: list[str] = []
    started = time.monotonic()

    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(body=body_strategy(route), query=query_strategy(route), params=param_strategy(route),
           content_type=st.sampled_from(["application/json", "application/json",
                                         "application/json; charset=utf-8", "text/plain", None]))
    def run(body: bytes, query: dict[str, str], params: dict[str, str], content_type: str | None) -> None:
        headers = json_headers(token)
        if content_type is None:
            headers.pop("Content-Type")
        else:
            headers["Content-Type"] = content_type
        sent = body if route.method in ("POST", "PUT", "DELETE") else b""
        r = client.http.request(route.method, route.url(params, query), headers=headers, body=sent)
        STATS["cases"] += 1
        STATS["by_status"][r.status_code] = STATS["by_status"].get(r.status_code, 0) + 1
        if r.status_code >= 500:
            STATS["5xx"] += 1
            failures.append(f"{r.status_code} for body={sent[:120]!r} query={query} params={params}: "
                            f"{r.body[:200]!r}")
        elif r.status_code >= 400:
            envelope = json.loads(r.body)
            if not (isinstance(envelope.get("error"), str) or isinstance(envelope.get("message"), str)):
                failures.append(f"no readable error for {sent[:80]!r}: {r.body[:200]!r}")
        elif route.inputs is not None and isinstance(route.inputs.body, Schema) and sent:
            failures.append(f"{r.status_code} (accepted) for an invalid body {sent[:120]!r}")

    run()
    STATS["routes"].add(route.id)
    STATS["seconds"] += time.monotonic() - started
    assert not failures, failures[:5]
    assert store.get("users", user_id=fuzz_user["user"]["user_id"]) == user_before, route.id


def test_fuzz_totals(fuzz_user):
    """The figures the issue asks for, and nothing written; runs after the route tests."""
    print(f"\nfuzz: {len(STATS['routes'])} routes fuzzed, {STATS['cases']} cases tried, "
          f"{STATS['5xx']} 5xx seen, {STATS['seconds']:.1f} s; statuses {dict(sorted(STATS['by_status'].items()))}")
    assert STATS["5xx"] == 0
    assert snapshot(fuzz_user["user"]["user_id"]) == STATS["before"], "garbage changed stored data"
    assert STATS["cases"] >= len(STATS["routes"]) * min(EXAMPLES, 20)
