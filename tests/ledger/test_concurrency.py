"""50 parallel spends against a balance that covers exactly k of them.

Threads in this process share the ledger's balance guesses; a second process (the
HTTP variant) does not, so both the in-process and the cross-process races are covered.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from chalicelib.credits import ledger
from chalicelib.core.errors import InsufficientCredits
from tests.conftest import at_once, usage_rows
from tests.ledger.conftest import new_id

PARALLEL = 50


def test_fifty_parallel_charges_exactly_k_succeed(private_tables, make_user):
    user_id = make_user()  # 200 credits: 4 charges of 50
    cost, k = 50, 4

    def spend() -> object:
        try:
            return ledger.charge(user_id, cost, service_type="test", request_id=new_id())
        except InsufficientCredits as refused:
            return refused

    ledger.clear_caches()  # every thread starts cold, as separate Lambda instances would
    outcomes = at_once(PARALLEL, spend)
    successes = [o for o in outcomes if isinstance(o, ledger.LedgerResult)]
    refusals = [o for o in outcomes if isinstance(o, InsufficientCredits)]
    assert len(successes) == k and len(refusals) == PARALLEL - k
    assert sorted(s.balance_after for s in successes) == [0, 50, 100, 150]
    assert all(r.details["required"] == cost and r.details["balance"] < cost for r in refusals)
    assert ledger.get_balance(user_id) == {"balance": 0, "held": 0, "owned": 0, "subscription_tier": "free",
                                           "total_credits_purchased": 0, "total_usage": 200}
    rows = usage_rows(user_id)
    assert len(rows) == k and len({r["timestamp"] for r in rows}) == k
    assert sorted(r["balance_after"] for r in rows) == [0, 50, 100, 150]
    assert ledger.check_invariant(user_id).ok


def test_parallel_mixed_operations_keep_the_invariant(private_tables, make_user):
    user_id = make_user()
    reservations = [new_id() for _ in range(10)]

    def work(index: int) -> None:
        try:
            if index % 5 == 0:
                ledger.grant(user_id, 7, source="admin", record_id=f"g{index}-{user_id}")
            elif index % 5 == 1:
                ledger.charge(user_id, 9, service_type="test", request_id=f"c{index}")
            elif index % 5 == 2:
                rid = reservations[index // 5]
                ledger.reserve(user_id, 20, reservation_id=rid, purpose="t", ref_id=rid, ttl_seconds=60)
                ledger.settle(rid, 11, service_type="test")
            elif index % 5 == 3:
                ledger.clawback(user_id, 3, source="refund", record_id=f"r{index}-{user_id}")
            else:
                ledger.charge(user_id, 9, service_type="test", request_id=f"c{index - 3}")  # replay
        except InsufficientCredits:
            pass

    with ThreadPoolExecutor(25) as pool:
        list(pool.map(work, range(50)))
    report = ledger.check_invariant(user_id)
    assert report.ok and report.quiescent and report.held == 0, report
    assert report.actual >= 0


def charge_from_another_process(
    env: dict[str, str], user_id: str, cost: int, count: int, start_at: float
) -> tuple[int, int]:
    """Runs in a spawned process: its own clients, no shared balance guesses, no shared lock."""
    import os
    import time

    os.environ.update(env)  # importing tests.conftest (to unpickle us) reset the endpoint
    from chalicelib.credits import ledger as own_ledger

    time.sleep(max(0.0, start_at - time.time()))
    charged = refused = 0
    for _ in range(count):
        try:
            own_ledger.charge(user_id, cost, service_type="test", request_id=new_id())
            charged += 1
        except InsufficientCredits:
            refused += 1
    return charged, refused


def test_processes_racing_on_one_balance_never_double_spend(private_tables, make_user):
    import multiprocessing
    import time

    user_id = make_user()  # 200 credits: 20 charges of 10, attempted 36 times by 3 processes
    env = {name: value for name, value in os.environ.items()
           if name == "AWS_ENDPOINT_URL" or name.endswith("_TABLE")}
    context = multiprocessing.get_context("spawn")
    with context.Pool(3) as pool:
        start_at = time.time() + 3
        results = pool.starmap(charge_from_another_process, [(env, user_id, 10, 12, start_at)] * 3)
    assert sum(c for c, _ in results) == 20 and sum(r for _, r in results) == 16
    rows = usage_rows(user_id)
    assert sorted(r["balance_after"] for r in rows) == list(range(0, 200, 10))  # each exactly once
    assert ledger.get_balance(user_id)["balance"] == 0
    assert ledger.check_invariant(user_id).ok


@pytest.fixture(scope="module")
def spend_server(aws_endpoint, provider_env, tmp_path_factory):
    """The real service (as `make run` starts it) with the per-user spend rate limit off:
    50 requests in a second from one user would otherwise be 429s, not 402s."""
    from tests.conftest import start_live_server, stop_live_server

    server = start_live_server(
        {"AWS_ENDPOINT_URL": aws_endpoint, **provider_env, "RATE_LIMITS": "spend:off"},
        str(tmp_path_factory.mktemp("ledger-live") / "server.log"),
    )
    yield server
    stop_live_server(server)


def test_fifty_parallel_paid_requests_over_http(spend_server, fake_openai):
    """POST /transcription/ask (5 credits each) x 50 against a balance that pays for 4."""
    import requests

    from chalicelib.core.settings import get_settings
    from tests.conftest import ORIGIN, json_headers, register_over_http

    base = spend_server.url
    registered = register_over_http(base, "ledger-http")
    token, user_id = registered["token"], registered["user"]["user_id"]
    price, k = get_settings().ask_credits, 4
    ledger.charge(user_id, 200 - k * price, service_type="test", request_id=new_id())

    def ask() -> requests.Response:
        with requests.Session() as session:
            return session.post(base + "/transcription/ask", timeout=60,
                                headers=json_headers(token, origin=ORIGIN),
                                json={"question": "What happened?", "transcript": "A goal was scored."})

    responses = at_once(PARALLEL, ask)
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * k + [402] * (PARALLEL - k), [r.text for r in responses if r.status_code not in (200, 402)]
    assert all(r.json()["code"] == "insufficient_credits" for r in responses if r.status_code == 402)
    assert ledger.get_balance(user_id)["balance"] == 0
    asks = [r for r in usage_rows(user_id) if r["service_type"] != "test"]
    assert len(asks) == k and all(r["credits_used"] == price for r in asks)
    # Each row's balance_after is the balance at its settle: it depends on how the reserves
    # and settles interleaved, but it is always a balance the user really had.
    assert all(r["balance_after"] in range(0, k * price, price) for r in asks)
    assert ledger.check_invariant(user_id).ok


def test_same_idempotency_key_twenty_times_in_parallel_over_http(spend_server, fake_openai):
    """POST /transcription/ask with one Idempotency-Key x 20: one charge, 20 identical answers."""
    import requests

    from chalicelib.core.settings import get_settings
    from tests.conftest import ORIGIN, json_headers, register_over_http

    base = spend_server.url
    registered = register_over_http(base, "ledger-idem")
    token, user_id = registered["token"], registered["user"]["user_id"]
    headers = json_headers(token, origin=ORIGIN, **{"Idempotency-Key": new_id()})

    def ask() -> requests.Response:
        with requests.Session() as session:
            return session.post(base + "/transcription/ask", timeout=60, headers=headers,
                                json={"question": "Who scored?", "transcript": "Alex scored twice."})

    responses = at_once(20, ask)
    assert {r.status_code for r in responses} == {200}, [r.text for r in responses]
    assert len({r.content for r in responses}) == 1
    price = get_settings().ask_credits
    assert responses[0].json()["remaining_balance"] == 200 - price
    assert len(usage_rows(user_id)) == 1
    assert ledger.get_balance(user_id)["balance"] == 200 - price
    assert ledger.check_invariant(user_id).ok
