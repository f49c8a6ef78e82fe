"""Create whatever is missing of our tables, bucket and queues at the configured endpoint.

Used by `make run` and the tests against moto's server (or DynamoDB Local, or any endpoint
in `AWS_ENDPOINT_URL`). Idempotent: existing resources are left as they are. Deployment to
AWS renders the same definitions into CloudFormation instead (infra.template).
"""
from __future__ import annotations

import json
from typing import Any

from chalicelib.aws import resources
from chalicelib.aws.clients import client
from chalicelib.core.settings import Settings
from infra.template import UPLOAD_CORS_HEADERS, UPLOAD_CORS_MAX_AGE, table_keys


def _table_request(settings: Settings, table: resources.Table) -> dict[str, Any]:
    return {
        "TableName": settings.resource(table.suffix),
        "BillingMode": "PAY_PER_REQUEST",
        **table_keys(table),
    }


def ensure_tables(settings: Settings) -> list[str]:
    dynamodb = client("dynamodb")
    existing = set()
    for page in dynamodb.get_paginator("list_tables").paginate():
        existing.update(page["TableNames"])
    created = []
    for table in resources.TABLES:
        name = settings.resource(table.suffix)
        if name in existing:
            continue
        dynamodb.create_table(**_table_request(settings, table))
        dynamodb.get_waiter("table_exists").wait(
            TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
        )
        if table.ttl_attribute:
            dynamodb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": table.ttl_attribute},
            )
        created.append(name)
    return created


def ensure_buckets(settings: Settings) -> list[str]:
    s3 = client("s3")
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    created = []
    for bucket in resources.BUCKETS:
        name = settings.resource(bucket.suffix)
        if name in existing:
            continue
        create: dict[str, Any] = {"Bucket": name}
        if settings.region != "us-east-1":
            create["CreateBucketConfiguration"] = {"LocationConstraint": settings.region}
        s3.create_bucket(**create)
        s3.put_bucket_lifecycle_configuration(
            Bucket=name,
            LifecycleConfiguration={
                "Rules": [
                    {
                        "ID": "expire-uploads",
                        "Status": "Enabled",
                        "Filter": {"Prefix": ""},
                        "Expiration": {"Days": bucket.expire_after_days},
                    }
                ]
            },
        )
        s3.put_bucket_cors(
            Bucket=name,
            CORSConfiguration={
                "CORSRules": [
                    {
                        "AllowedMethods": list(bucket.cors_methods),
                        "AllowedOrigins": list(settings.allowed_origins) or ["*"],
                        "AllowedHeaders": list(UPLOAD_CORS_HEADERS),
                        "MaxAgeSeconds": UPLOAD_CORS_MAX_AGE,
                    }
                ]
            },
        )
        created.append(name)
    return created


def ensure_queues(settings: Settings) -> list[str]:
    sqs = client("sqs")
    created = []
    for queue in resources.QUEUES:  # dead-letter queues come first in the definition
        name = settings.resource(queue.suffix)
        attributes = {
            "VisibilityTimeout": str(queue.visibility_timeout),
            "MessageRetentionPeriod": str(queue.retention_seconds),
        }
        if queue.dead_letter:
            dlq_url = sqs.get_queue_url(QueueName=settings.resource(queue.dead_letter))["QueueUrl"]
            dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
                "Attributes"
            ]["QueueArn"]
            attributes["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(queue.max_receive_count)}
            )
        try:
            sqs.get_queue_url(QueueName=name)
        except sqs.exceptions.QueueDoesNotExist:
            sqs.create_queue(QueueName=name, Attributes=attributes)
            created.append(name)
    return created


def bootstrap(settings: Settings) -> dict[str, list[str]]:
    """Create every missing resource; returns what was created, by kind."""
    return {
        "tables": ensure_tables(settings),
        "buckets": ensure_buckets(settings),
        "queues": ensure_queues(settings),
    }
