"""Every provider call records what it measured, once, when it completes (the stats hooks)."""
from __future__ import annotations

from chalicelib.aws import store
from chalicelib.credits import stats
from tests.analytics.conftest import get_json, top_users
from tests.conftest import usage_rows


def _today_usage() -> dict:
    return stats.day_totals([stats.day_of()])[stats.day_of()].usage


def _user_item(user_id: str) -> dict:
    return store.get("stats", stat_key=f"users#{stats.day_of()}#{stats.user_shard(user_id)}", shard=user_id)


def test_an_answered_question_records_its_tokens_and_a_failed_one_nothing(
        private_tables, caller, fake_openai, admin, client):
    user = caller()
    assert user.ask("What was said?", "Someone said hello to the chat.").status == 200
    [row] = usage_rows(user.user_id)
    measured = _today_usage()["ask"]
    assert measured["calls"] == 1
    assert measured["openai_prompt_tokens"] == row["metadata"]["prompt_tokens"] > 0
    assert measured["openai_completion_tokens"] == row["metadata"]["completion_tokens"] > 0
    assert _user_item(user.user_id)["calls"] == 1

    fake_openai.fail_next(3, 500, path_prefix="/v1/chat")
    assert user.ask("And then?", "Nothing else happened.").status in (502, 503)
    assert _today_usage()["ask"]["calls"] == 1  # no answer, no tokens, nothing recorded

    operator = admin()
    status, body = get_json(client, "/analytics/costs?days=1", operator["token"])
    assert status == 200, body
    assert body["by_service"]["ask"]["calls"] == 1 and body["active_users"] == 1
    assert top_users(client, operator["token"])[0]["user_id"] == user.user_id


def test_a_stopped_live_session_records_the_seconds_it_streamed(private_tables, caller):
    user = caller()
    started = user.stream("start", max_minutes=5)
    assert started.status == 200, started.body
    session_id = started.body["session_id"]
    item = store.get("sessions", session_id=session_id)
    store.ddb().update_item(  # as if it had started 90 seconds ago
        TableName=store.table_name("sessions"), Key=store.key(session_id=session_id),
        UpdateExpression="SET started_epoch = :s, last_heartbeat_epoch = :s",
        ExpressionAttributeValues=store.values(s=item["started_epoch"] - 90),
    )
    assert user.stream("stop", session_id=session_id).status == 200
    assert user.stream("stop", session_id=session_id).status == 200  # a replay records nothing
    [row] = usage_rows(user.user_id)
    seconds = row["metadata"]["provider_seconds"]
    assert 90 <= seconds <= 95
    assert _today_usage()["live"] == {"calls": 1, "assemblyai_streaming_seconds": seconds}


def test_a_completed_catchup_records_transcription_seconds_and_summary_tokens(private_tables, stack, new_user):
    session = new_user()
    status, body = stack.submit(session["token"], seconds=150, duration_minutes=5)
    assert status == 202, body
    stack.run_worker(stack.receive())
    job = stack.job(session["token"], body["job_id"])
    assert job["status"] == "completed", job
    [row] = usage_rows(session["user"]["user_id"])
    metadata = row["metadata"]
    measured = _today_usage()["catchup"]
    assert measured["assemblyai_transcribe_seconds"] == metadata["assemblyai_seconds"] > 0
    assert measured["openai_prompt_tokens"] == metadata["openai_prompt_tokens"] > 0
    assert measured["openai_completion_tokens"] == metadata["openai_completion_tokens"] > 0
    assert measured["calls"] == 1 + metadata["openai_calls"]
