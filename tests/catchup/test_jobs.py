"""Catch-up jobs in process: submit over the app, the worker driven with real SQS messages.

Every failure path must give the reserved credits back and leave the job failed with a
readable code; every duplicate delivery must leave exactly one charge.
"""
from __future__ import annotations

import threading
import time

import pytest
import requests

from chalicelib.aws import store
from chalicelib.catchup import jobs as catchup
from chalicelib.credits import ledger
from devstack.fakes.audio import make_wav
from tests.conftest import assert_books_balance, usage_rows

PRICE = 10  # CATCHUP_CREDITS_PER_MINUTE default


def accepted(stack, token, **kwargs) -> dict:
    status, body = stack.submit(token, **kwargs)
    assert status == 202, body
    return body


# ----- submit ------------------------------------------------------------------------------


def test_submit_reserves_the_audios_minutes_and_queues(stack, new_user):
    user = new_user()
    timings, bodies = [], []
    for _ in range(3):  # the best of three: the first one also pays for cold clients
        started = time.monotonic()
        bodies.append(accepted(stack, user["token"], seconds=230, duration_minutes=5))
        timings.append(time.monotonic() - started)
    assert min(timings) < 1.0, timings
    body = bodies[0]
    assert body["status"] == "queued" and body["credits_reserved"] == 4 * PRICE  # 3 min 50 s of audio
    assert (body["reserved_minutes"], body["duration_minutes"]) == (4, 5)
    assert body["remaining_balance"] == 200 - 4 * PRICE
    assert stack.balance(user["token"]) == 200 - 3 * 4 * PRICE
    job = stack.job(user["token"], body["job_id"])
    assert job["status"] == "queued" and job["result"] is None and job["credits_used"] is None
    assert body["job_id"] in stack.receive()["Body"]


def test_inline_audio_is_stored_under_the_users_prefix(stack, new_user, settings):
    user = new_user()
    body = accepted(stack, user["token"])
    job = catchup.load_job(body["job_id"])
    assert job["audio_key"].startswith(f"uploads/{user['user']['user_id']}/")
    assert job["audio_content_type"] == "audio/wav"


def test_uploaded_audio_can_be_submitted(stack, new_user):
    user = new_user()
    audio = make_wav(30, sample_rate=4000)
    _, upload = stack.post("/transcription/catchup/upload", user["token"],
                           {"content_type": "audio/wav", "file_size": len(audio)})
    assert requests.put(upload["upload_url"], data=audio, headers=upload["headers"], timeout=10).ok
    body = accepted(stack, user["token"], audio_key=upload["audio_key"], audio=None, duration_minutes=1)
    assert catchup.load_job(body["job_id"])["audio_key"] == upload["audio_key"]


def test_someone_elses_audio_key_is_refused(stack, new_user):
    alice, mallory = new_user(), new_user()
    audio = make_wav(5, sample_rate=4000)
    _, upload = stack.post("/transcription/catchup/upload", alice["token"],
                           {"content_type": "audio/wav", "file_size": len(audio)})
    assert requests.put(upload["upload_url"], data=audio, headers=upload["headers"], timeout=10).ok
    status, body = stack.submit(mallory["token"], audio_key=upload["audio_key"], audio=None)
    assert status == 404 and body["code"] == "audio_not_found"
    unknown = f"uploads/{mallory['user']['user_id']}/{'0' * 32}.wav"
    status, missing = stack.submit(mallory["token"], audio_key=unknown, audio=None)
    assert status == 404 and missing["error"] == body["error"]  # indistinguishable
    assert stack.balance(mallory["token"]) == 200


@pytest.mark.parametrize(
    "changes, status",
    [
        ({"channel": None}, 422),  # neither channel nor stream_url
        ({"duration_minutes": 0}, 422),
        ({"duration_minutes": 61}, 422),
        ({"duration_minutes": "5"}, 422),
        ({"audio_key": "uploads/x/../y.wav"}, 422),
        ({"audio_key": "uploads/abc/" + "0" * 32 + ".wav", "audio": "UklGRg=="}, 422),  # both
        ({"stream_url": "javascript:alert(1)"}, 422),
        ({"channel": "not a channel!"}, 422),
        ({"surprise": 1}, 422),
    ],
)
def test_submit_validation(stack, new_user, changes, status):
    user = new_user()
    got, body = stack.submit(user["token"], **changes)
    assert got == status, body
    assert isinstance(body["error"], str)
    assert stack.balance(user["token"]) == 200


def test_submit_without_audio_is_refused(stack, new_user):
    user = new_user()
    status, body = stack.post("/transcription/catchup", user["token"],
                              {"channel": "catchupchan", "duration_minutes": 2})
    assert status == 422 and body["code"] == "audio_required"
    assert "POST /transcription/catchup/upload" in body["message"]  # what to do instead


def test_a_body_user_id_is_never_read(stack, new_user):
    """The published extension sends `user_id` (and `fallback_reason`): accepted, ignored."""
    user, victim = new_user(), new_user()
    status, body = stack.submit(user["token"], user_id=victim["user"]["user_id"], fallback_reason="x")
    assert status == 202, body
    assert stack.get(f"/transcription/catchup/{body['job_id']}", victim["token"])[0] == 404
    assert stack.get(f"/transcription/catchup/{body['job_id']}", user["token"])[0] == 200
    assert stack.balance(victim["token"]) == 200


def test_insufficient_credits_is_402_and_nothing_is_queued(stack, new_user, settings):
    from chalicelib.aws.clients import client

    user = new_user()
    status, body = stack.submit(user["token"], seconds=21 * 60, duration_minutes=21)  # 210 > 200
    assert status == 402 and body["code"] == "insufficient_credits"
    assert stack.balance(user["token"]) == 200
    listed = client("s3").list_objects_v2(Bucket=settings.resource("audio"),
                                          Prefix=f"uploads/{user['user']['user_id']}/")
    assert listed.get("KeyCount", 0) == 0  # the inline clip was not kept
    assert client("sqs").receive_message(QueueUrl=stack.queue_url, WaitTimeSeconds=0).get("Messages") is None


def test_a_failed_enqueue_gives_the_credits_back(stack, new_user):
    user = new_user()
    stack.configure(CATCHUP_QUEUE="transcription-backend-local-no-such-queue")
    status, body = stack.submit(user["token"])
    assert status == 503 and body["code"] == "catchup_unavailable"
    assert stack.balance(user["token"]) == 200
    assert_books_balance(user["user"]["user_id"])


def test_a_repeated_idempotency_key_returns_the_first_response_and_reserves_once(stack, new_user, settings):
    from chalicelib.aws.clients import client

    user = new_user()
    key = {"Idempotency-Key": "catchup-retry-1"}
    first = accepted(stack, user["token"], seconds=240, duration_minutes=4, headers=key)
    status, again = stack.submit(user["token"], seconds=240, duration_minutes=4, headers=key)
    assert status == 202 and again == first
    assert stack.balance(user["token"]) == 200 - 4 * PRICE
    listed = client("s3").list_objects_v2(Bucket=settings.resource("audio"),
                                          Prefix=f"uploads/{user['user']['user_id']}/")
    assert listed["KeyCount"] == 1

    status, other = stack.submit(user["token"], seconds=240, duration_minutes=5, headers=key)
    assert status == 422 and other["code"] == "idempotency_key_mismatch"
    status, bad = stack.submit(user["token"], headers={"Idempotency-Key": "x" * 300})
    assert status == 400 and bad["code"] == "invalid_idempotency_key"

    someone = new_user()  # keys are per user
    theirs = accepted(stack, someone["token"], seconds=240, duration_minutes=4, headers=key)
    assert theirs["job_id"] != first["job_id"]


def test_a_retry_whose_stored_response_was_lost_finds_its_job(stack, new_user):
    """Defence in depth: the job (and reservation) id derives from the Idempotency-Key."""
    import hashlib

    user = new_user()
    user_id = user["user"]["user_id"]
    key = "catchup-retry-2"
    first = accepted(stack, user["token"], seconds=240, duration_minutes=4, headers={"Idempotency-Key": key})
    store.ddb().delete_item(  # as if the stored first response had been lost
        TableName=store.table_name("idempotency"),
        Key=store.key(idempotency_key=f"{user_id}#{hashlib.sha256(key.encode()).hexdigest()}"),
    )
    again = accepted(stack, user["token"], seconds=240, duration_minutes=4, headers={"Idempotency-Key": key})
    assert again["job_id"] == first["job_id"]
    assert stack.balance(user["token"]) == 200 - 4 * PRICE
    for _ in range(2):  # the queued job was sent again: two messages, one job
        stack.run_worker(stack.receive())
    job = stack.job(user["token"], first["job_id"])
    assert job["status"] == "completed" and job["credits_used"] == 4 * PRICE
    assert stack.balance(user["token"]) == 200 - 4 * PRICE
    assert len(usage_rows(user_id)) == 1
    assert_books_balance(user_id)


def test_a_retry_after_a_failed_enqueue_runs_again(stack, new_user):
    user = new_user()
    key = {"Idempotency-Key": "catchup-retry-3"}
    stack.configure(CATCHUP_QUEUE="transcription-backend-local-no-such-queue")
    status, _ = stack.submit(user["token"], seconds=60, headers=key)
    assert status == 503
    stack.configure(CATCHUP_QUEUE=stack.queue_name)
    body = accepted(stack, user["token"], seconds=60, headers=key)
    assert stack.balance(user["token"]) == 200 - body["credits_reserved"]
    assert body["job_id"] in stack.receive()["Body"]
    assert_books_balance(user["user"]["user_id"])


# ----- the worker: success and duplicates ------------------------------------------------------


def test_job_completes_settles_to_the_real_duration_and_lands_in_history(stack, new_user):
    user = new_user()
    user_id = user["user"]["user_id"]
    before = len(stack.assemblyai.transcript_ids)
    body = accepted(stack, user["token"], seconds=150, duration_minutes=5)  # 2.5 min of audio
    stack.run_worker(stack.receive())
    job = stack.job(user["token"], body["job_id"])
    assert job["status"] == "completed", job
    assert job["credits_reserved"] == 3 * PRICE and job["reserved_minutes"] == 3  # not the 5 asked
    assert job["credits_used"] == 3 * PRICE and job["credits_refunded"] == 0
    assert stack.balance(user["token"]) == 200 - 3 * PRICE
    result = job["result"]
    assert result["summary"] and isinstance(result["key_points"], list) and result["key_points"]
    assert isinstance(result["notable_moments"], list)
    assert result["transcript"] and len(result["transcript"].split()) > 100
    assert result["stream"] == {"channel": "catchupchan", "title": "Speedrun practice", "game": "Celeste",
                                "started_at": result["stream"]["started_at"]}
    assert result["stream"]["started_at"]
    assert job["error"] is None

    submitted = stack.assemblyai.requests_to("/v2/transcript", "POST")[-1].json()
    assert submitted["speech_models"] == ["universal-2"]
    assert submitted["audio_end_at"] == 3 * 60_000  # it never transcribes past what is reserved
    assert len(stack.assemblyai.transcript_ids) == before + 1

    _, page = stack.get("/transcription/history", user["token"])
    entry = page["items"][0]
    assert entry["id"] == body["job_id"] and entry["kind"] == "catchup"
    assert entry["credits_used"] == 3 * PRICE and entry["duration_minutes"] == 3
    assert entry["summary"] == result["summary"] and entry["title"] == "Speedrun practice"

    rows = [r for r in usage_rows(user_id) if (r.get("metadata") or {}).get("job_id") == body["job_id"]]
    assert len(rows) == 1
    metadata = rows[0]["metadata"]
    assert metadata["assemblyai_seconds"] == 150
    assert metadata["openai_prompt_tokens"] > 0 and metadata["openai_completion_tokens"] > 0
    assert_books_balance(user_id)


def test_duplicate_delivery_bills_and_summarises_once(stack, new_user):
    user = new_user()
    body = accepted(stack, user["token"], seconds=60, duration_minutes=2)
    message = stack.receive()
    transcripts, chats = len(stack.assemblyai.transcript_ids), len(stack.openai.requests)
    stack.run_worker(message)
    stack.run_worker(message)  # SQS delivered it again
    assert len(stack.assemblyai.transcript_ids) == transcripts + 1
    assert len(stack.openai.requests) == chats + 1
    assert stack.job(user["token"], body["job_id"])["credits_used"] == PRICE
    assert stack.balance(user["token"]) == 200 - PRICE
    assert len(usage_rows(user["user"]["user_id"])) == 1
    assert_books_balance(user["user"]["user_id"])


def test_a_delivery_while_another_worker_holds_the_job_backs_off(stack, new_user):
    user = new_user()
    body = accepted(stack, user["token"], seconds=60, duration_minutes=2)
    message = stack.receive()
    stack.assemblyai.polls_before_completion = 40  # keep the first worker busy for ~2 s
    first = threading.Thread(target=stack.run_worker, args=(message,))
    first.start()
    try:
        deadline = time.monotonic() + 10
        while not catchup.load_job(body["job_id"]).get("transcript_id"):  # first worker is polling
            assert time.monotonic() < deadline
            time.sleep(0.02)
        transcripts = len(stack.assemblyai.transcript_ids)
        with pytest.raises(Exception) as raised:
            stack.run_worker(message)  # the duplicate: the lease is live
        assert "retried" in str(raised.value)
        assert len(stack.assemblyai.transcript_ids) == transcripts
    finally:
        first.join(30)
    assert stack.job(user["token"], body["job_id"])["status"] == "completed"
    assert stack.balance(user["token"]) == 200 - PRICE
    assert_books_balance(user["user"]["user_id"])


def test_a_job_whose_worker_died_is_taken_over_and_resumes_its_transcript(stack, new_user):
    from chalicelib.catchup import uploads as audio_uploads
    from chalicelib.providers import assemblyai

    user = new_user()
    body = accepted(stack, user["token"], seconds=60, duration_minutes=2)
    message = stack.receive()
    job = catchup.load_job(body["job_id"])
    transcript_id = assemblyai.submit_transcript(audio_uploads.fetch_url(job["audio_key"]))["id"]
    store.ddb().update_item(  # what a worker that died while polling leaves behind
        TableName=store.table_name("jobs"), Key=store.key(job_id=body["job_id"]),
        UpdateExpression="SET #s = :p, attempts = :one, lease_id = :dead, "
                         "lease_expires_at_epoch = :past, transcript_id = :t",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues=store.values(p="processing", one=1, dead="dead-worker",
                                               past=store.epoch() - 1, t=transcript_id),
    )
    transcripts = len(stack.assemblyai.transcript_ids)
    stack.run_worker(message)
    assert len(stack.assemblyai.transcript_ids) == transcripts  # resumed, not resubmitted
    done = catchup.load_job(body["job_id"])
    assert done["status"] == "completed" and done["attempts"] == 2
    assert stack.balance(user["token"]) == 200 - PRICE
    assert_books_balance(user["user"]["user_id"])


def test_another_users_job_is_404_like_an_unknown_one(stack, new_user):
    alice, bob = new_user(), new_user()
    body = accepted(stack, alice["token"])
    status, theirs = stack.get(f"/transcription/catchup/{body['job_id']}", bob["token"])
    status_unknown, unknown = stack.get("/transcription/catchup/" + "f" * 32, bob["token"])
    assert status == status_unknown == 404
    assert theirs == unknown
    status, transcript_item = stack.get(f"/transcription/catchup/{body['job_id']}%23transcript",
                                        alice["token"])
    assert status == 404 and transcript_item["code"] == "job_not_found"


# ----- the worker: failures -------------------------------------------------------------------


def assert_failed_and_refunded(stack, user, job_id, code):
    job = stack.job(user["token"], job_id)
    assert job["status"] == "failed" and job["error"] == code, job
    assert job["credits_used"] == 0 and isinstance(job["error_message"], str)
    assert job["result"] is None
    assert stack.balance(user["token"]) == 200
    assert usage_rows(user["user"]["user_id"]) == []
    assert_books_balance(user["user"]["user_id"])


def test_assemblyai_transcript_error_refunds_and_fails(stack, new_user):
    user = new_user()
    stack.assemblyai.outcome = "error"
    body = accepted(stack, user["token"])
    stack.run_worker(stack.receive())  # not worth retrying: the handler returns normally
    assert_failed_and_refunded(stack, user, body["job_id"], "transcription_failed")


def test_assemblyai_refusing_the_request_refunds_and_fails(stack, new_user):
    user = new_user()
    stack.assemblyai.fail_next(1, 400, path_prefix="/v2/transcript")
    body = accepted(stack, user["token"])
    stack.run_worker(stack.receive())
    assert_failed_and_refunded(stack, user, body["job_id"], "transcription_failed")


def test_transcript_request_lost_after_assemblyai_read_it_is_never_sent_again(stack, new_user):
    """The connection drops after AssemblyAI read POST /v2/transcript: it may have queued a
    transcript we will be billed for, so neither the client nor SQS redelivery resubmits."""
    from tests.dropping_server import DroppingServer

    user = new_user()
    body = accepted(stack, user["token"])
    message = stack.receive()
    with DroppingServer() as server:
        stack.configure(ASSEMBLYAI_API_BASE=server.url)
        stack.run_worker(message)  # not retried: the handler returns normally
        stack.run_worker(message)  # a duplicate delivery finds the job finished
    assert len(server.requests_to("POST", "/v2/transcript")) == 1
    assert len(server.received) == 1
    assert_failed_and_refunded(stack, user, body["job_id"], "transcription_failed")


def test_assemblyai_never_finishing_within_budget_refunds_and_fails(stack, new_user):
    user = new_user()
    stack.configure(CATCHUP_TRANSCRIBE_BUDGET_SECONDS="1")
    stack.assemblyai.outcome = "never"
    body = accepted(stack, user["token"])
    stack.run_worker(stack.receive())
    assert_failed_and_refunded(stack, user, body["job_id"], "transcription_timeout")


def test_polling_stops_in_time_for_a_short_lambda(stack, new_user):
    """The time left in the invocation bounds the polling, not only the budget setting."""
    user = new_user()
    stack.assemblyai.outcome = "never"
    body = accepted(stack, user["token"])
    started = time.monotonic()
    stack.run_worker(stack.receive(), seconds=72)  # 72 - 10 finish - 60 summary = 2 s of polling
    assert time.monotonic() - started < 10
    assert_failed_and_refunded(stack, user, body["job_id"], "transcription_timeout")


def test_missing_audio_refunds_and_fails(stack, new_user, settings):
    from chalicelib.aws.clients import client

    user = new_user()
    body = accepted(stack, user["token"])
    job = catchup.load_job(body["job_id"])
    client("s3").delete_object(Bucket=settings.resource("audio"), Key=job["audio_key"])
    stack.run_worker(stack.receive())
    assert_failed_and_refunded(stack, user, body["job_id"], "audio_missing")


def test_openai_down_is_retried_then_refunds_and_fails(stack, new_user):
    user = new_user()
    stack.openai.fail_next(1000, 500, path_prefix="/v1/chat")
    body = accepted(stack, user["token"], seconds=180, duration_minutes=3)
    message = stack.receive()
    transcripts = len(stack.assemblyai.transcript_ids)
    for attempt in (1, 2):
        with pytest.raises(Exception):
            stack.run_worker(message)  # retryable: SQS will deliver it again
        job = stack.job(user["token"], body["job_id"])
        assert job["status"] == "queued", job
        assert stack.balance(user["token"]) == 200 - 3 * PRICE  # still reserved, not charged
    stack.run_worker(message)  # the last attempt fails the job for good
    assert len(stack.assemblyai.transcript_ids) == transcripts + 1  # transcribed once, resumed after
    assert_failed_and_refunded(stack, user, body["job_id"], "summary_failed")
    assert catchup.load_job(body["job_id"])["attempts"] == catchup.MAX_ATTEMPTS


def test_openai_recovering_on_the_retry_completes_and_bills_once(stack, new_user):
    user = new_user()
    stack.openai.fail_next(3, 503, path_prefix="/v1/chat")  # the provider's 3 tries, one attempt
    body = accepted(stack, user["token"], seconds=60, duration_minutes=3)
    message = stack.receive()
    with pytest.raises(Exception):
        stack.run_worker(message)
    stack.run_worker(message)
    job = stack.job(user["token"], body["job_id"])
    assert job["status"] == "completed" and job["credits_used"] == PRICE
    assert stack.balance(user["token"]) == 200 - PRICE
    assert_books_balance(user["user"]["user_id"])


def test_a_busy_ledger_at_the_end_is_retried_from_the_saved_transcript(stack, new_user, monkeypatch):
    from chalicelib.core.errors import ServiceUnavailable

    user = new_user()
    real_settle = ledger.settle
    calls = []

    def busy_once(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise ServiceUnavailable("The balance is busy; please retry", code="ledger_busy")
        return real_settle(*args, **kwargs)

    monkeypatch.setattr(ledger, "settle", busy_once)
    body = accepted(stack, user["token"], seconds=60, duration_minutes=3)
    message = stack.receive()
    transcripts = len(stack.assemblyai.transcript_ids)
    with pytest.raises(Exception):
        stack.run_worker(message)
    assert stack.job(user["token"], body["job_id"])["status"] == "queued"
    stack.run_worker(message)
    assert len(stack.assemblyai.transcript_ids) == transcripts + 1  # not transcribed again
    job = stack.job(user["token"], body["job_id"])
    assert job["status"] == "completed" and job["credits_used"] == PRICE
    assert stack.balance(user["token"]) == 200 - PRICE
    assert_books_balance(user["user"]["user_id"])


def test_unusable_model_answers_refund_and_fail(stack, new_user):
    user = new_user()
    stack.openai.responder = lambda body: "this is not json"
    body = accepted(stack, user["token"])
    stack.run_worker(stack.receive())
    assert_failed_and_refunded(stack, user, body["job_id"], "summary_failed")


def test_a_very_long_transcript_is_split_summarised_and_merged(stack, new_user):
    user = new_user()
    stack.configure(OPENAI_SUMMARY_CHUNK_TOKENS="2000")
    sentences = [f"In minute {i // 10} the streamer said thing number {i}." for i in range(1500)]
    stack.assemblyai.text = " ".join(sentences)  # ~70,000 characters
    before = len(stack.openai.requests_to("/v1/chat/completions"))
    body = accepted(stack, user["token"], seconds=600, duration_minutes=10)
    stack.run_worker(stack.receive())
    job = stack.job(user["token"], body["job_id"])
    assert job["status"] == "completed", job
    calls = stack.openai.requests_to("/v1/chat/completions")[before:]
    prompts = [c.json()["messages"][-1]["content"] for c in calls]
    parts = [p for p in prompts if p.startswith("Transcript, part ")]
    merges = [p for p in prompts if p.startswith("Summaries of consecutive parts")]
    assert len(parts) >= 8 and merges
    assert all(c.json()["response_format"] == {"type": "json_object"} for c in calls)
    assert all(len(c.json()["messages"][-1]["content"]) <= 2000 * 4 for c in calls)
    assert job["result"]["summary"] and job["result"]["transcript"].startswith("In minute 0")
    assert job["credits_used"] == 10 * PRICE
