"""`python -m infra dlq`: list the catch-up dead letters with their jobs, redrive, drop."""
from __future__ import annotations

import json

import boto3
import pytest

from chalicelib.core.settings import load_settings
from infra import dlq
from infra.bootstrap import bootstrap
from tests.conftest import JWT_SECRET

STAGE = "dlqtest"


@pytest.fixture(scope="module")
def stage(aws_endpoint):
    bootstrap(load_settings({"STAGE": STAGE, "JWT_SECRET": JWT_SECRET}))
    session = boto3.session.Session(region_name="us-east-1")
    sqs = session.client("sqs")
    urls = {name: sqs.get_queue_url(QueueName=f"transcription-backend-{STAGE}-{name}")["QueueUrl"]
            for name in ("catchup", "catchup-dlq")}
    return session, urls


def _job(session, job_id: str, status: str) -> None:
    session.client("dynamodb").put_item(TableName=f"transcription-backend-{STAGE}-jobs", Item={
        "job_id": {"S": job_id}, "status": {"S": status}, "user_id": {"S": "u"}, "created_at": {"S": "2026"}})


def test_listing_redrive_and_drop(stage):
    session, urls = stage
    sqs = session.client("sqs")
    _job(session, "job-stuck", "queued")
    _job(session, "job-failed", "failed")
    for body in ({"job_id": "job-stuck"}, {"job_id": "job-failed"}, "garbage"):
        sqs.send_message(QueueUrl=urls["catchup-dlq"], MessageBody=json.dumps(body) if isinstance(body, dict) else body)

    listed = dlq.run(STAGE, session=session)
    assert sorted((r["job_id"] or "", r["job_status"], r["action"]) for r in listed) == [
        ("", "unreadable_message", "kept"), ("job-failed", "failed", "kept"), ("job-stuck", "queued", "kept")]
    assert all(r["receive_count"] >= 1 and r["sent_at_epoch_ms"] > 0 for r in listed)

    # listing left them there, visible at once
    moved = dlq.run(STAGE, session=session, redrive=True, drop_finished=True)
    assert sorted((r["job_id"] or "", r["action"]) for r in moved) == [
        ("", "kept"), ("job-failed", "deleted"), ("job-stuck", "redriven")]
    received = sqs.receive_message(QueueUrl=urls["catchup"], MaxNumberOfMessages=10)["Messages"]
    assert [json.loads(m["Body"]) for m in received] == [{"job_id": "job-stuck"}]
    left = dlq.run(STAGE, session=session)
    assert [r["job_status"] for r in left] == ["unreadable_message"]
