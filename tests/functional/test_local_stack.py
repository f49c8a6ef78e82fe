"""The local stack: resources created from the one definition, only what is missing."""
from __future__ import annotations

import os
import uuid

from chalicelib.aws.clients import client
from chalicelib.aws.resources import BUCKETS, QUEUES, TABLES
from chalicelib.core.settings import load_settings
from infra.bootstrap import bootstrap


def _delete_everything(settings) -> None:
    for table in TABLES:
        try:
            client("dynamodb").delete_table(TableName=settings.resource(table.suffix))
        except client("dynamodb").exceptions.ResourceNotFoundException:
            pass
    for bucket in BUCKETS:
        client("s3").delete_bucket(Bucket=settings.resource(bucket.suffix))
    for queue in QUEUES:
        url = client("sqs").get_queue_url(QueueName=settings.resource(queue.suffix))["QueueUrl"]
        client("sqs").delete_queue(QueueUrl=url)


def test_bootstrap_creates_only_what_is_missing(aws_endpoint):
    stage = "boot" + uuid.uuid4().hex[:8]
    settings = load_settings({**os.environ, "STAGE": stage})
    first = bootstrap(settings)
    try:
        assert sorted(first["tables"]) == sorted(settings.resource(t.suffix) for t in TABLES)
        assert first["buckets"] == [settings.resource(b.suffix) for b in BUCKETS]
        assert first["queues"] == [settings.resource(q.suffix) for q in QUEUES]
        assert bootstrap(settings) == {"tables": [], "buckets": [], "queues": []}

        users = settings.resource("users")
        described = client("dynamodb").describe_table(TableName=users)["Table"]
        assert [k["AttributeName"] for k in described["KeySchema"]] == ["user_id"]
        assert described.get("GlobalSecondaryIndexes", []) == []  # a balance change writes one item
        ttl = client("dynamodb").describe_time_to_live(TableName=settings.resource("refresh-tokens"))
        assert ttl["TimeToLiveDescription"]["AttributeName"] == "expires_at_epoch"

        client("dynamodb").delete_table(TableName=users)
        assert bootstrap(settings) == {"tables": [users], "buckets": [], "queues": []}
    finally:
        _delete_everything(settings)
