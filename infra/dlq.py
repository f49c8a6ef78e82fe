"""`python -m infra dlq --stage S`: what is in the catch-up dead-letter queue, and redrive.

A message reaches the dead-letter queue after `maxReceiveCount` deliveries that did not
finish (docs/operations.md, "Retries, timeouts and the stuck-job threshold"). Its job is
then usually already failed and refunded by the worker's last attempt or by the hourly
cleanup; a job still queued/processing (its deliveries never ran, e.g. the Lambda was
down) can be sent back to the queue and will run, because the worker's attempt counter
only counts attempts that started.

Listing leaves the messages where they are (each is received, then made visible again at
once). `--redrive` moves the messages of unfinished jobs back to the catch-up queue;
`--drop-finished` deletes those whose job is already completed or failed.
Uses the operator's AWS credentials (and AWS_ENDPOINT_URL, like every boto3 client).
"""
from __future__ import annotations

import json
from typing import Any

from chalicelib.ops.admin import table_name
from chalicelib.catchup.jobs import TERMINAL

BATCH = 10  # ReceiveMessage's maximum


def _job_id(body: str) -> str | None:
    try:
        job_id = json.loads(body).get("job_id")
    except (ValueError, AttributeError):
        return None
    return job_id if isinstance(job_id, str) else None


def _job_status(ddb: Any, stage: str, job_id: str | None) -> str:
    if not job_id:
        return "unreadable_message"
    item = ddb.get_item(TableName=table_name(stage, "jobs"), Key={"job_id": {"S": job_id}},
                        ConsistentRead=True).get("Item")
    return item["status"]["S"] if item else "unknown_job"


def run(stage: str, *, redrive: bool = False, drop_finished: bool = False, limit: int = 100,
        session: Any = None) -> list[dict[str, Any]]:
    """One line per message seen: {message_id, job_id, job_status, receive_count, sent_at, action}."""
    import boto3

    session = session or boto3.session.Session()
    sqs, ddb = session.client("sqs"), session.client("dynamodb")
    dlq_url = sqs.get_queue_url(QueueName=table_name(stage, "catchup-dlq"))["QueueUrl"]
    queue_url = sqs.get_queue_url(QueueName=table_name(stage, "catchup"))["QueueUrl"]
    report: list[dict[str, Any]] = []
    kept: list[str] = []
    while len(report) < limit:
        messages = sqs.receive_message(
            QueueUrl=dlq_url, MaxNumberOfMessages=min(BATCH, limit - len(report)), VisibilityTimeout=60,
            AttributeNames=["All"], WaitTimeSeconds=0,
        ).get("Messages", [])
        if not messages:
            break
        for message in messages:
            job_id = _job_id(message.get("Body", ""))
            status = _job_status(ddb, stage, job_id)
            attributes = message.get("Attributes", {})
            if redrive and status not in TERMINAL and job_id:
                sqs.send_message(QueueUrl=queue_url, MessageBody=message["Body"])
                sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"])
                action = "redriven"
            elif drop_finished and status in TERMINAL:
                sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"])
                action = "deleted"
            else:
                kept.append(message["ReceiptHandle"])
                action = "kept"
            report.append({
                "message_id": message["MessageId"], "job_id": job_id, "job_status": status,
                "receive_count": int(attributes.get("ApproximateReceiveCount", 0)),
                "sent_at_epoch_ms": int(attributes.get("SentTimestamp", 0)), "action": action,
            })
    for handle in kept:  # listed, not moved: visible again now rather than in 60 s
        sqs.change_message_visibility(QueueUrl=dlq_url, ReceiptHandle=handle, VisibilityTimeout=0)
    return report
