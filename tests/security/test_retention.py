"""Transcript text is kept only CATCHUP_TRANSCRIPT_RETENTION_DAYS, enforced by TTL (and by
reads, since DynamoDB sweeps expired items lazily); it never goes into history or logs."""
from __future__ import annotations

import json
import time

from chalicelib.aws import store
from tests.security import logcapture
from tests.catchup.conftest import stack  # noqa: F401  (the catch-up fixture: queue, worker, fakes)


def test_transcripts_expire_after_the_configured_retention(stack, new_user):  # noqa: F811
    stack.configure(CATCHUP_TRANSCRIPT_RETENTION_DAYS="2")
    user = new_user()
    logged_before = len(logcapture.lines())
    status, body = stack.submit(user["token"], seconds=60, duration_minutes=2)
    assert status == 202, body
    stack.run_worker(stack.receive())
    job = stack.job(user["token"], body["job_id"])
    assert job["status"] == "completed" and job["result"]["transcript"]
    text = job["result"]["transcript"]
    for line in logcapture.lines()[logged_before:]:  # not in any log line either
        assert text[:60] not in line and text[-60:] not in line

    item = store.get("jobs", job_id=body["job_id"] + "#transcript")
    assert abs(item["expires_at_epoch"] - (time.time() + 2 * 86400)) < 120  # the TTL attribute
    # History keeps the summary line, never the transcript.
    history = json.loads(stack.client.http.get("/transcription/history", headers={
        "Authorization": f"Bearer {user['token']}"}).body)
    assert text not in json.dumps(history)

    # Two days later (TTL not swept yet): the API and the export no longer show it.
    store.ddb().update_item(
        TableName=store.table_name("jobs"), Key=store.key(job_id=body["job_id"] + "#transcript"),
        UpdateExpression="SET expires_at_epoch = :past",
        ExpressionAttributeValues=store.values(past=int(time.time()) - 1),
    )
    assert stack.job(user["token"], body["job_id"])["result"]["transcript"] is None
    _, export = stack.get("/auth/user/export", user["token"])
    assert export["jobs"][0]["transcript"] is None
    assert text not in json.dumps(export)
