"""The ledger under DynamoDB's own failures, injected in the embedded AWS (tests/faults.py).

Real DynamoDB cancels a transaction that races another (TransactionConflict), throttles,
and sometimes answers after the client gave up. Each test proves: the operation either
happens exactly once or not at all, the books still balance, and a caller that must give
up gets a 503 `Retry-After`, never a 500 or a silent half-write.
"""
from __future__ import annotations

import pytest

from chalicelib.credits import ledger
from chalicelib.credits.ledger import commit as ledger_commit
from chalicelib.core.errors import ServiceUnavailable, StorageBusy
from chalicelib.web.errors import answer, headers_of, status_of
from tests.conftest import usage_rows
from tests.faults import BOTOCORE_ATTEMPTS
from tests.ledger.conftest import new_id

pytestmark = pytest.mark.usefixtures("private_tables")

TRANSACT = "TransactWriteItems"


def assert_books(user_id: str) -> None:
    report = ledger.check_invariant(user_id)
    assert report.ok and report.quiescent, report


@pytest.mark.parametrize("reason", ["TransactionConflict", "ThrottlingError",
                                    "ProvisionedThroughputExceeded"])
def test_a_cancelled_transaction_is_retried_until_it_commits(make_user, dynamodb_faults, reason):
    user_id = make_user()
    ledger.get_balance(user_id)  # the process knows the balance: no attempt is spent reading it
    fault = dynamodb_faults.inject(TRANSACT, reason, table="users", count=ledger.TRANSIENT_ATTEMPTS - 1)
    result = ledger.charge(user_id, 7, service_type="ask", request_id=new_id())
    assert (result.balance_after, result.replayed) == (193, False)
    assert dynamodb_faults.get(fault)["matched"] == ledger.TRANSIENT_ATTEMPTS  # 3 refused, 1 committed
    assert len(usage_rows(user_id)) == 1
    assert_books(user_id)


def test_the_ledger_gives_up_after_its_attempts_with_a_503_and_nothing_written(
    make_user, dynamodb_faults, captured_logs
):
    user_id = make_user()
    ledger.get_balance(user_id)
    fault = dynamodb_faults.inject(TRANSACT, "TransactionConflict", table="reservations")
    with pytest.raises(ServiceUnavailable) as busy:
        ledger.charge(user_id, 7, service_type="ask", request_id=new_id())
    assert status_of(busy.value) == 503 and busy.value.code == "ledger_busy"
    assert headers_of(busy.value)["Retry-After"] == "1" and answer(busy.value).body["retry_after"] == 1
    assert dynamodb_faults.get(fault)["fired"] == ledger.TRANSIENT_ATTEMPTS
    assert captured_logs("ledger.contention")[-1]["attempts"] == ledger.TRANSIENT_ATTEMPTS
    assert captured_logs("ledger.contention")[-1]["reason"] == "TransactionCanceledException"
    dynamodb_faults.clear()
    assert ledger.get_balance(user_id)["balance"] == 200 and usage_rows(user_id) == []
    assert_books(user_id)


def test_transient_refusals_do_not_consume_a_lost_balance_guess(make_user, dynamodb_faults, env_override):
    """A stale balance guess (another writer) and a conflict in one call: both are handled."""
    env_override(LEDGER_GUESS_SECONDS="inf")  # the one-process design: no read first
    user_id = make_user()
    ledger.clear_caches()  # cold process: the first attempt doubles as the read
    fault = dynamodb_faults.inject(TRANSACT, "TransactionConflict", count=2, skip=1)
    result = ledger.grant(user_id, 5, source="admin", record_id=new_id())
    assert (result.balance_after, result.replayed) == (205, False)
    # the read (refused: balance unknown), two conflicts, the commit
    assert {k: dynamodb_faults.get(fault)[k] for k in ("matched", "fired")} == {"matched": 4, "fired": 2}
    assert_books(user_id)


def test_transient_refusals_after_the_read_are_retried_with_the_read_balance(make_user, dynamodb_faults):
    """The fleet design: the balance is read first, two conflicts, then the commit."""
    user_id = make_user()
    fault = dynamodb_faults.inject(TRANSACT, "TransactionConflict", count=2)
    result = ledger.grant(user_id, 5, source="admin", record_id=new_id())
    assert (result.balance_after, result.replayed) == (205, False)
    assert {k: dynamodb_faults.get(fault)[k] for k in ("matched", "fired")} == {"matched": 3, "fired": 2}
    assert_books(user_id)


def test_whole_request_throttling_is_absorbed_by_botocore_then_surfaces_as_busy(
    make_user, dynamodb_faults, monkeypatch
):
    user_id = make_user()
    ledger.get_balance(user_id)
    absorbed = dynamodb_faults.inject(TRANSACT, "ProvisionedThroughputExceededException",
                                      count=1)
    assert ledger.grant(user_id, 5, source="admin", record_id=new_id()).balance_after == 205
    assert dynamodb_faults.get(absorbed)["matched"] == 2  # botocore retried it once
    dynamodb_faults.clear()
    monkeypatch.setattr(ledger_commit, "TRANSIENT_ATTEMPTS", 1)  # one botocore round is enough here
    throttled = dynamodb_faults.inject(TRANSACT, "ThrottlingException")
    with pytest.raises(ServiceUnavailable) as busy:
        ledger.grant(user_id, 5, source="admin", record_id=new_id())
    assert status_of(busy.value) == 503 and headers_of(busy.value)["Retry-After"] == "1"
    assert dynamodb_faults.get(throttled)["fired"] == BOTOCORE_ATTEMPTS  # botocore tried them all
    dynamodb_faults.clear()
    assert ledger.get_balance(user_id)["balance"] == 205
    assert_books(user_id)


def test_a_write_whose_answer_timed_out_happens_once(make_user, dynamodb_faults, env_override):
    """The transaction commits, the answer comes after the read timeout, botocore retries
    with the same ClientRequestToken: DynamoDB (and the embedded AWS) do not apply it again."""
    env_override(AWS_READ_TIMEOUT_SECONDS="0.5")
    user_id = make_user()
    request_id = new_id()
    dynamodb_faults.inject(TRANSACT, "timeout", table="reservations", count=1, delay=1.0)
    result = ledger.charge(user_id, 9, service_type="ask", request_id=request_id)
    assert (result.balance_after, result.replayed) == (191, False)
    again = ledger.charge(user_id, 9, service_type="ask", request_id=request_id)
    assert (again.balance_after, again.replayed) == (191, True)
    assert len(usage_rows(user_id)) == 1
    assert_books(user_id)


def test_no_answer_at_all_is_busy_not_an_internal_error(make_user, dynamodb_faults, env_override):
    env_override(AWS_READ_TIMEOUT_SECONDS="0.5")
    user_id = make_user()
    ledger.get_balance(user_id)
    dynamodb_faults.inject("GetItem", "timeout", table="users", delay=0.8)
    with pytest.raises(StorageBusy) as busy:
        ledger.get_balance(user_id)
    assert status_of(busy.value) == 503 and answer(busy.value).body["code"] == "storage_busy"


def test_a_client_gets_a_clear_503_and_keeps_its_credits(client, new_user, provider_env, fake_openai,
                                                        dynamodb_faults):
    """POST /transcription/ask while every reservation is cancelled by a conflict: 503 with
    Retry-After in the envelope, OpenAI never called, nothing charged; then it works."""
    import json

    from tests.conftest import ORIGIN, json_headers

    session = new_user()
    headers = json_headers(session["token"], origin=ORIGIN)
    body = json.dumps({"question": "What happened?", "transcript": "A speedrun of Celeste."})
    chats = len(fake_openai.requests_to("/v1/chat/completions"))
    dynamodb_faults.inject(TRANSACT, "TransactionConflict", table="reservations")
    response = client.http.post("/transcription/ask", headers=headers, body=body)
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    envelope = json.loads(response.body)
    assert envelope == {"error": "The balance is busy; please retry", "message": "The balance is busy; please retry",
                        "code": "ledger_busy", "retry_after": 1}
    assert len(fake_openai.requests_to("/v1/chat/completions")) == chats
    dynamodb_faults.clear()
    assert ledger.get_balance(session["user"]["user_id"])["balance"] == 200
    response = client.http.post("/transcription/ask", headers=headers, body=body)
    assert response.status_code == 200, response.body
    assert_books(session["user"]["user_id"])


def test_a_read_that_is_throttled_past_botocores_retries_is_503_not_500(client, new_user, dynamodb_faults):
    import json

    from tests.conftest import ORIGIN, json_headers

    session = new_user()
    # skip=1: the authorizer's account read comes first (a failure there is the gateway's 5xx)
    dynamodb_faults.inject("GetItem", "ProvisionedThroughputExceededException", table="users", skip=1)
    response = client.http.get("/credits/balance", headers=json_headers(session["token"], origin=ORIGIN))
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert json.loads(response.body)["code"] == "storage_busy"


def test_clear_caches_forgets_the_balance_guess_so_the_next_write_reads_it(make_user, dynamodb_faults,
                                                                          env_override):
    """With the one-process guess design (LEDGER_GUESS_SECONDS=inf), a warm process writes on
    its guess (one transaction); after clear_caches it is cold again, as a new Lambda instance:
    the first attempt is refused and doubles as the read."""
    env_override(LEDGER_GUESS_SECONDS="inf")
    user_id = make_user()
    ledger.get_balance(user_id)  # this process now knows the balance
    watch = dynamodb_faults.inject(TRANSACT, "TransactionConflict", count=0)  # counts, never fires
    assert ledger.grant(user_id, 5, source="admin", record_id=new_id()).balance_after == 205
    assert dynamodb_faults.get(watch)["matched"] == 1
    ledger.clear_caches()
    assert ledger.grant(user_id, 5, source="admin", record_id=new_id()).balance_after == 210
    assert dynamodb_faults.get(watch)["matched"] == 1 + 2
    assert_books(user_id)
