"""devstack.aws_state: `make run`'s data saved and written back, whole and consistent."""
from __future__ import annotations

import os
import stat
import threading
import time
import uuid
import zipfile
from typing import Any, Iterator

import boto3
import pytest

from devstack.aws_state import AwsState, Resources
from devstack.embedded_aws import EmbeddedAws

REGION = "us-east-1"


@pytest.fixture
def aws() -> Iterator[EmbeddedAws]:
    with EmbeddedAws() as embedded:
        yield embedded


@pytest.fixture
def names() -> Resources:
    """Names of our own (moto's memory is shared by every embedded AWS of this process)."""
    prefix = f"snap-{uuid.uuid4().hex[:10]}"
    return Resources((f"{prefix}-balances", f"{prefix}-ledger"), (f"{prefix}-audio",), (f"{prefix}-jobs",))


def _clients(aws: EmbeddedAws) -> tuple[Any, Any, Any]:
    return tuple(boto3.client(s, endpoint_url=aws.url, region_name=REGION) for s in ("dynamodb", "s3", "sqs"))


def _create(aws: EmbeddedAws, names: Resources) -> None:
    ddb, s3, sqs = _clients(aws)
    for table in names.tables:
        ddb.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                         AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                         KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    for bucket in names.buckets:
        s3.create_bucket(Bucket=bucket)
    for queue in names.queues:
        sqs.create_queue(QueueName=queue)


def _drop(aws: EmbeddedAws, names: Resources) -> None:
    """What a restart is to moto: everything gone (then bootstrap creates it empty)."""
    ddb, s3, sqs = _clients(aws)
    for table in names.tables:
        ddb.delete_table(TableName=table)
    for bucket in names.buckets:
        for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=obj["Key"])
        s3.delete_bucket(Bucket=bucket)
    for queue in names.queues:
        sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=queue)["QueueUrl"])


def _scan(ddb: Any, table: str) -> list[dict[str, Any]]:
    return sorted(ddb.scan(TableName=table, ConsistentRead=True)["Items"], key=lambda item: item["pk"]["S"])


def test_tables_objects_and_queued_messages_come_back_after_a_restart(aws, names, tmp_path):
    _create(aws, names)
    ddb, s3, sqs = _clients(aws)
    balances, ledger = names.tables
    items = [
        {"pk": {"S": "user-1"}, "credits": {"N": "120"}, "blob": {"B": b"\x00\xffbytes"},
         "tags": {"SS": ["a", "b"]}, "bins": {"BS": [b"\x01", b"\x02"]},
         "profile": {"M": {"name": {"S": "Ada"}, "flags": {"L": [{"BOOL": True}, {"NULL": True}]}}}},
        {"pk": {"S": "user-2"}, "credits": {"N": "0"}},
    ]
    for item in items:
        ddb.put_item(TableName=balances, Item=item)
    bucket, queue = names.buckets[0], names.queues[0]
    s3.put_object(Bucket=bucket, Key="uploads/u1/clip.wav", Body=b"RIFF\x00\x01binary", ContentType="audio/wav",
                  Metadata={"user": "u1"})
    s3.put_object(Bucket=bucket, Key="uploads/u2/a b.webm", Body=b"webm")
    url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    for body in ('{"job_id": "1"}', '{"job_id": "2"}', '{"job_id": "3"}'):
        sqs.send_message(QueueUrl=url, MessageBody=body)
    in_flight = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, VisibilityTimeout=300)["Messages"]
    assert len(in_flight) == 1  # a worker holds it: it must come back too

    state = AwsState(aws, str(tmp_path), REGION, names)
    saved = state.save()
    assert saved.counts() == "2 items, 2 objects, 3 queued messages"
    assert stat.S_IMODE(os.stat(state.path).st_mode) == 0o600
    assert set(zipfile.ZipFile(state.path).namelist()) >= {"manifest.json", f"dynamodb/{balances}.json", "sqs.json"}

    _drop(aws, names)
    _create(aws, names)
    restored, problems = AwsState(aws, str(tmp_path), REGION, names).restore()
    assert problems == [] and restored is not None and restored.counts() == saved.counts()
    assert _scan(ddb, balances) == sorted(items, key=lambda item: item["pk"]["S"])
    assert _scan(ddb, ledger) == []
    clip = s3.get_object(Bucket=bucket, Key="uploads/u1/clip.wav")
    assert clip["Body"].read() == b"RIFF\x00\x01binary" and clip["ContentType"] == "audio/wav"
    assert clip["Metadata"] == {"user": "u1"}
    assert s3.get_object(Bucket=bucket, Key="uploads/u2/a b.webm")["Body"].read() == b"webm"
    url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    bodies = [m["Body"] for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]]
    assert sorted(bodies) == ['{"job_id": "1"}', '{"job_id": "2"}', '{"job_id": "3"}']
    _drop(aws, names)


def test_no_snapshot_restores_nothing(aws, names, tmp_path):
    assert AwsState(aws, str(tmp_path), REGION, names).restore() == (None, [])


def test_a_snapshot_that_cannot_be_written_back_whole_is_kept_aside(aws, names, tmp_path):
    _create(aws, names)
    ddb = _clients(aws)[0]
    ddb.put_item(TableName=names.tables[0], Item={"pk": {"S": "kept"}})
    state = AwsState(aws, str(tmp_path), REGION, names)
    state.save()
    _drop(aws, names)  # the next start has no such table (e.g. it was renamed)
    restored, problems = AwsState(aws, str(tmp_path), REGION, names).restore()
    assert restored is not None and any(names.tables[0] in problem for problem in problems)
    aside = [name for name in os.listdir(tmp_path) if name.startswith("aws-state-unrestored-")]
    assert len(aside) == 1 and problems[-1].endswith(aside[0])
    assert zipfile.ZipFile(tmp_path / aside[0]).read("manifest.json")

    (tmp_path / "aws-state.zip").write_bytes(b"not a zip")
    restored, problems = AwsState(aws, str(tmp_path), REGION, names).restore()
    assert restored is None and "BadZipFile" in problems[0]


def test_every_snapshot_is_one_moment_even_while_transactions_run(aws, names, tmp_path):
    """Each transaction adds a ledger row and raises the balance by one: in every snapshot
    the balance equals the number of rows, however the scans and the writes interleave."""
    _create(aws, names)
    ddb = _clients(aws)[0]
    balances, ledger = names.tables
    ddb.put_item(TableName=balances, Item={"pk": {"S": "user"}, "credits": {"N": "0"}})
    stop = threading.Event()
    written = []

    def spend() -> None:
        client = boto3.client("dynamodb", endpoint_url=aws.url, region_name=REGION)
        while not stop.is_set():
            row = uuid.uuid4().hex
            client.transact_write_items(TransactItems=[
                {"Put": {"TableName": ledger, "Item": {"pk": {"S": row}}}},
                {"Update": {"TableName": balances, "Key": {"pk": {"S": "user"}},
                            "UpdateExpression": "ADD credits :one", "ExpressionAttributeValues": {":one": {"N": "1"}}}},
            ])
            written.append(row)

    writers = [threading.Thread(target=spend) for _ in range(3)]
    for writer in writers:
        writer.start()
    state = AwsState(aws, str(tmp_path), REGION, names)
    try:
        snapshots = []
        for _ in range(8):
            time.sleep(0.05)
            snapshots.append(state.read())
    finally:
        stop.set()
        for writer in writers:
            writer.join()
    assert written and aws.writes >= len(written)
    for snapshot in snapshots:
        (user,) = snapshot.tables[balances]
        assert int(user["credits"]["N"]) == len(snapshot.tables[ledger])
    assert len({len(snapshot.tables[ledger]) for snapshot in snapshots}) > 1  # it ran while writes went on
    _drop(aws, names)


def test_saves_while_something_changes_and_once_more_at_stop(aws, names, tmp_path):
    _create(aws, names)
    ddb = _clients(aws)[0]
    state = AwsState(aws, str(tmp_path), REGION, names)
    state.restore()
    state.start(every_seconds=0.1)
    try:
        time.sleep(0.4)
        assert not os.path.exists(state.path)  # nothing changed since the restore: nothing written
        ddb.put_item(TableName=names.tables[0], Item={"pk": {"S": "new"}})
        deadline = time.monotonic() + 10
        while not os.path.exists(state.path) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert os.path.exists(state.path)
        first = os.stat(state.path).st_mtime_ns
        time.sleep(0.4)
        assert os.stat(state.path).st_mtime_ns == first  # idle: not rewritten
        ddb.put_item(TableName=names.tables[1], Item={"pk": {"S": "last"}})
    finally:
        final = state.stop()
    assert final.tables[names.tables[1]] == [{"pk": {"S": "last"}}]
    assert AwsState(aws, str(tmp_path), REGION, names).load().tables == final.tables
    _drop(aws, names)
