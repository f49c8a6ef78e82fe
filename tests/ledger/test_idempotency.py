"""The Idempotency-Key mechanism, driven directly and from parallel threads."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from chalicelib.aws import store
from chalicelib.credits import ledger
from chalicelib.web import idempotency
from chalicelib.core.errors import BadRequest, Conflict, InsufficientCredits, UpstreamError, ValidationFailed
from chalicelib.web.errors import headers_of, status_of
from tests.conftest import at_once
from tests.ledger.conftest import new_id

pytestmark = pytest.mark.usefixtures("private_tables")


class Counter:
    def __init__(self, result=None, error: Exception | None = None) -> None:
        self.calls = 0
        self.result = result if result is not None else {"ok": True}
        self.error = error
        self.lock = threading.Lock()

    def __call__(self):
        with self.lock:
            self.calls += 1
        if self.error is not None:
            raise self.error
        return self.result


def headers(key: str) -> dict[str, str]:
    return {"idempotency-key": key, "content-type": "application/json"}


def usage_count(user_id: str) -> int:
    return len(list(store.query_all({
        "TableName": store.table_name("usage"),
        "KeyConditionExpression": "user_id = :u",
        "ExpressionAttributeValues": store.values(u=user_id),
    })))


def test_without_the_header_every_call_runs():
    op = Counter()
    assert idempotency.run({}, "u1", "ask", {"a": 1}, op) == (200, {"ok": True})
    assert idempotency.run(None, "u1", "ask", {"a": 1}, op, status=202) == (202, {"ok": True})
    assert op.calls == 2


def test_same_key_and_body_replays_the_first_response():
    key, op = new_id(), Counter({"n": 1, "nested": {"x": [1, 2]}})
    first = idempotency.run(headers(key), "u1", "ask", {"q": "a", "n": 1}, op, status=202)
    again = idempotency.run({"Idempotency-Key": key}, "u1", "ask", {"n": 1, "q": "a"}, op, status=202)
    assert first == again == (202, {"n": 1, "nested": {"x": [1, 2]}})
    assert op.calls == 1
    record = store.get("idempotency", idempotency_key=f"u1#{idempotency._digest(key)}")
    assert record["state"] == "completed"
    assert 24 * 3600 - 60 <= record["expires_at_epoch"] - store.epoch() <= 24 * 3600


def test_same_key_different_body_or_route_is_422():
    key, op = new_id(), Counter()
    idempotency.run(headers(key), "u1", "ask", {"q": "a"}, op)
    for route, body in (("ask", {"q": "b"}), ("catchup", {"q": "a"})):
        with pytest.raises(ValidationFailed) as refused:
            idempotency.run(headers(key), "u1", route, body, op)
        assert status_of(refused.value) == 422 and refused.value.code == "idempotency_key_mismatch"
    assert op.calls == 1


def test_keys_are_per_user():
    key, op = new_id(), Counter()
    idempotency.run(headers(key), "u1", "ask", {"q": "a"}, op)
    idempotency.run(headers(key), "u2", "ask", {"q": "b"}, op)
    assert op.calls == 2
    assert idempotency.request_id(headers(key), "u1", "x") != idempotency.request_id(headers(key), "u2", "x")
    assert idempotency.request_id(headers(key), "u1", "x") == idempotency.request_id(headers(key), "u1", "y")
    assert idempotency.request_id({}, "u1", "fallback") == "fallback"


def test_a_decided_error_is_stored_and_replayed():
    key = new_id()
    op = Counter(error=InsufficientCredits(balance=3, required=5))
    status, body = idempotency.run(headers(key), "u1", "ask", {}, op)
    assert status == 402 and body["code"] == "insufficient_credits" and body["balance"] == 3
    assert idempotency.run(headers(key), "u1", "ask", {}, op) == (status, body)
    assert op.calls == 1


def test_a_server_error_frees_the_key_for_a_retry():
    key = new_id()
    failing = Counter(error=UpstreamError())
    with pytest.raises(UpstreamError):
        idempotency.run(headers(key), "u1", "ask", {}, failing)
    working = Counter()
    assert idempotency.run(headers(key), "u1", "ask", {}, working) == (200, {"ok": True})
    assert working.calls == 1


def test_an_expired_key_runs_again():
    key, op = new_id(), Counter()
    idempotency.run(headers(key), "u1", "ask", {}, op)
    store.ddb().update_item(
        TableName=store.table_name("idempotency"),
        Key=store.key(idempotency_key=f"u1#{idempotency._digest(key)}"),
        UpdateExpression="SET expires_at_epoch = :past",
        ExpressionAttributeValues=store.values(past=store.epoch() - 1),
    )
    idempotency.run(headers(key), "u1", "ask", {"other": "body"}, op)
    assert op.calls == 2


def test_an_abandoned_claim_is_taken_over():
    key = new_id()
    record_key = f"u1#{idempotency._digest(key)}"
    store.ddb().put_item(TableName=store.table_name("idempotency"), Item=store.to_item({
        "idempotency_key": record_key, "user_id": "u1", "route": "ask",
        "fingerprint": idempotency.fingerprint("ask", {}), "state": "in_progress", "owner": "dead",
        "lock_expires_at_epoch": store.epoch() - 1, "expires_at_epoch": store.epoch() + 3600,
    }))
    op = Counter()
    assert idempotency.run(headers(key), "u1", "ask", {}, op) == (200, {"ok": True})
    assert op.calls == 1


def test_a_duplicate_gets_409_when_the_first_outlasts_the_wait(monkeypatch):
    from chalicelib.core.settings import reset_settings

    monkeypatch.setenv("IDEMPOTENCY_WAIT_SECONDS", "0")
    reset_settings()
    key, started, finish = new_id(), threading.Event(), threading.Event()

    def slow():
        started.set()
        finish.wait(10)
        return {"slow": True}

    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(idempotency.run, headers(key), "u1", "ask", {}, slow)
        assert started.wait(10)
        with pytest.raises(Conflict) as busy:
            idempotency.run(headers(key), "u1", "ask", {}, Counter())
        assert busy.value.code == "idempotency_in_progress" and headers_of(busy.value) == {"Retry-After": "1"}
        finish.set()
        assert first.result(10) == (200, {"slow": True})
    monkeypatch.delenv("IDEMPOTENCY_WAIT_SECONDS")
    reset_settings()


@pytest.mark.parametrize("bad", ["", "has space", "é", "x" * 256])
def test_invalid_keys_are_400(bad):
    with pytest.raises(BadRequest) as refused:
        idempotency.run({"Idempotency-Key": bad}, "u1", "ask", {}, Counter())
    assert refused.value.code == "invalid_idempotency_key"


def test_twenty_parallel_requests_one_effect_twenty_identical_responses(make_user):
    """Each attempt would charge under a fresh request id: only the key prevents a second effect."""
    user_id = make_user()
    key = new_id()

    def spend():
        result = ledger.charge(user_id, 5, service_type="ask", request_id=new_id())
        return {"credits_used": 5, "remaining_balance": result.balance_after, "record": result.record_id}

    responses = at_once(20, lambda: idempotency.run(headers(key), user_id, "ask", {"question": "q"}, spend))
    assert len(set(map(repr, responses))) == 1
    assert responses[0][0] == 200 and responses[0][1]["remaining_balance"] == 195
    assert usage_count(user_id) == 1
    assert ledger.get_balance(user_id)["balance"] == 195
    assert ledger.check_invariant(user_id).ok
