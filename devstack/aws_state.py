"""The embedded AWS's data kept between `make run`s: one snapshot file, written back at start.

moto keeps everything in memory. `make run` saves what our tables, bucket and queues hold
(the ones chalicelib.aws.resources defines, under this stage's names) to `<LOCAL_DATA_DIR>/aws-state.zip` at a clean stop and, while something changes, every
`LOCAL_SAVE_SECONDS` (10), so a crash or `kill -9` loses at most that much. At the next start,
after infra.bootstrap created the resources, the snapshot is written back.

A snapshot is one consistent moment: while it is read the embedded AWS finishes the requests
in progress and holds new ones (EmbeddedAws.paused), so a credit transaction, or a job and
its queue message, is all in it or not at all. DynamoDB items and S3 objects are read and
written back through the public APIs in their wire format, so a moto upgrade does not lose
them. SQS messages (a queued catch-up job) are read from moto's memory, since receiving them
would count as deliveries, and sent again at restore.

The file is a zip written to a temporary name and renamed, so a crash while saving leaves the
previous snapshot. One that cannot be written back whole (a table whose key changed, a
resource that no longer exists) is copied aside first (`aws-state-unrestored-<time>.zip`),
since the next save replaces it.
"""
from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import threading
import time
import zipfile
from dataclasses import dataclass, field
from typing import Any

from devstack.embedded_aws import EmbeddedAws

logger = logging.getLogger("devstack.state")

FORMAT = 1
FILE_NAME = "aws-state.zip"
BATCH = 25  # BatchWriteItem's limit


@dataclass(frozen=True)
class Resources:
    """The physical names a snapshot covers."""

    tables: tuple[str, ...]
    buckets: tuple[str, ...]
    queues: tuple[str, ...]

    @classmethod
    def of(cls, settings: Any) -> "Resources":
        """Ours, as the app names them (settings.resource: stage names and their overrides)."""
        from chalicelib.aws import resources

        return cls(tuple(settings.resource(t.suffix) for t in resources.TABLES),
                   tuple(settings.resource(b.suffix) for b in resources.BUCKETS),
                   tuple(settings.resource(q.suffix) for q in resources.QUEUES))


@dataclass
class Snapshot:
    """What one snapshot holds: items by table, objects by bucket, message bodies by queue."""

    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    objects: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # {key, content_type, metadata, body}
    messages: dict[str, list[str]] = field(default_factory=dict)
    saved_at: str = ""

    def counts(self) -> str:
        return (f"{sum(map(len, self.tables.values()))} items, {sum(map(len, self.objects.values()))} "
                f"objects, {sum(map(len, self.messages.values()))} queued messages")


def _plain(value: Any) -> Any:
    """JSON-ready: bytes (DynamoDB B/BS values) become {"$b64": ...}."""
    if isinstance(value, bytes):
        return {"$b64": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _typed(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$b64"}:
            return base64.b64decode(value["$b64"])
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    return value


class AwsState:
    """Save and restore the embedded AWS's data at `directory/aws-state.zip`."""

    def __init__(self, aws: EmbeddedAws, directory: str, region: str, resources: Resources) -> None:
        self.aws = aws
        self.path = os.path.join(directory, FILE_NAME)
        self.region = region
        self.resources = resources
        self._saved_writes = -1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._save_lock = threading.Lock()

    def _client(self, service: str) -> Any:
        """A client whose calls pass a paused embedded AWS (they are the snapshot's own)."""
        import boto3

        client = boto3.client(service, endpoint_url=self.aws.url, region_name=self.region)
        headers = self.aws.snapshot_headers

        def add_headers(request: Any, **_: Any) -> None:
            for name, value in headers.items():
                request.headers[name] = value

        client.meta.events.register("before-sign.*.*", add_headers)
        return client

    # ----- reading and writing the live stack ---------------------------------------------

    def read(self) -> Snapshot:
        """Everything the embedded AWS holds now, read while every other request waits."""
        with self.aws.paused():
            return Snapshot(self._read_tables(), self._read_objects(), self._read_messages(),
                            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    def _read_tables(self) -> dict[str, list[dict[str, Any]]]:
        ddb = self._client("dynamodb")
        existing = {name for page in ddb.get_paginator("list_tables").paginate() for name in page["TableNames"]}
        return {name: [item for scan in ddb.get_paginator("scan").paginate(TableName=name, ConsistentRead=True)
                               for item in scan["Items"]]
                for name in self.resources.tables if name in existing}

    def _read_objects(self) -> dict[str, list[dict[str, Any]]]:
        s3 = self._client("s3")
        buckets: dict[str, list[dict[str, Any]]] = {}
        existing = {bucket["Name"] for bucket in s3.list_buckets()["Buckets"]}
        for name in self.resources.buckets:
            if name not in existing:
                continue
            buckets[name] = []
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
                for listed in page.get("Contents", []):
                    got = s3.get_object(Bucket=name, Key=listed["Key"])
                    buckets[name].append({"key": listed["Key"], "content_type": got.get("ContentType"),
                                          "metadata": got.get("Metadata") or {}, "body": got["Body"].read()})
        return buckets

    def _read_messages(self) -> dict[str, list[str]]:
        """Bodies of every message not yet deleted, in flight or not, from moto's memory."""
        try:
            from moto.sqs.models import sqs_backends

            return {name: [message.body for message in queue._messages]
                    for _, regions in sqs_backends.items() for region, backend in regions.items()
                    if region == self.region for name, queue in backend.queues.items()
                    if name in self.resources.queues}
        except (ImportError, AttributeError):  # moto changed: keep the rest
            logger.warning("queued SQS messages cannot be read from this moto; they are not saved")
            return {}

    def write(self, snapshot: Snapshot) -> list[str]:
        """Write a snapshot back into existing resources; returns what could not be written."""
        problems: list[str] = []
        ddb, s3, sqs = self._client("dynamodb"), self._client("s3"), self._client("sqs")
        for table, items in snapshot.tables.items():
            try:
                for start in range(0, len(items), BATCH):
                    pending = {table: [{"PutRequest": {"Item": item}} for item in items[start:start + BATCH]]}
                    while pending:
                        pending = ddb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
            except Exception as error:  # a table gone or changed: restore the rest
                problems.append(f"table {table}: {type(error).__name__}: {error}")
        for bucket, objects in snapshot.objects.items():
            try:
                for obj in objects:
                    extra = {"ContentType": obj["content_type"]} if obj.get("content_type") else {}
                    s3.put_object(Bucket=bucket, Key=obj["key"], Body=obj["body"], Metadata=obj["metadata"], **extra)
            except Exception as error:
                problems.append(f"bucket {bucket}: {type(error).__name__}: {error}")
        for queue, bodies in snapshot.messages.items():
            if not bodies:
                continue
            try:
                url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
                for body in bodies:
                    sqs.send_message(QueueUrl=url, MessageBody=body)
            except Exception as error:
                problems.append(f"queue {queue}: {type(error).__name__}: {error}")
        return problems

    # ----- the file ---------------------------------------------------------------------------

    def save(self) -> Snapshot:
        """Read the stack and replace the file with it (atomically)."""
        with self._save_lock:
            writes = self.aws.writes
            snapshot = self.read()
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            temporary = self.path + ".tmp"
            with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as archive:
                manifest = {"format": FORMAT, "saved_at": snapshot.saved_at,
                            "tables": {name: len(items) for name, items in snapshot.tables.items()}}
                archive.writestr("manifest.json", json.dumps(manifest, indent=2))
                for name, items in snapshot.tables.items():
                    archive.writestr(f"dynamodb/{name}.json", json.dumps(_plain(items)))
                for bucket, objects in snapshot.objects.items():
                    listing = []
                    for number, obj in enumerate(objects):
                        archive.writestr(f"s3/{bucket}/{number}", obj["body"])
                        listing.append({k: v for k, v in obj.items() if k != "body"} | {"file": f"s3/{bucket}/{number}"})
                    archive.writestr(f"s3/{bucket}.json", json.dumps(listing))
                archive.writestr("sqs.json", json.dumps(snapshot.messages))
            os.chmod(temporary, 0o600)
            os.replace(temporary, self.path)
            self._saved_writes = writes
            return snapshot

    def load(self) -> Snapshot | None:
        """The saved snapshot, or None when there is none."""
        if not os.path.exists(self.path):
            return None
        with zipfile.ZipFile(self.path) as archive:
            manifest = json.loads(archive.read("manifest.json"))
            if manifest.get("format") != FORMAT:
                raise ValueError(f"{self.path} has format {manifest.get('format')}, not {FORMAT}")
            snapshot = Snapshot(saved_at=manifest.get("saved_at", ""))
            for name in archive.namelist():
                if name.startswith("dynamodb/"):
                    snapshot.tables[name[len("dynamodb/"):-len(".json")]] = _typed(json.loads(archive.read(name)))
                elif name.startswith("s3/") and name.endswith(".json"):
                    objects = json.loads(archive.read(name))
                    for obj in objects:
                        obj["body"] = archive.read(obj.pop("file"))
                    snapshot.objects[name[len("s3/"):-len(".json")]] = objects
            snapshot.messages = json.loads(archive.read("sqs.json"))
        return snapshot

    def restore(self) -> tuple[Snapshot | None, list[str]]:
        """Write the saved snapshot back; (what it held, problems). A snapshot that could not
        be written back whole (or read) is first copied aside, since the next save replaces it."""
        try:
            snapshot = self.load()
            problems = self.write(snapshot) if snapshot is not None else []
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
            snapshot, problems = None, [f"{self.path}: {type(error).__name__}: {error}"]
        if problems:
            aside = self.path.replace(".zip", time.strftime("-unrestored-%Y%m%dT%H%M%S.zip"))
            shutil.copyfile(self.path, aside)
            problems.append(f"the snapshot is kept as {aside}")
            for problem in problems:
                logger.warning("restoring local data: %s", problem)
        self._saved_writes = self.aws.writes  # what was just restored is what the file holds
        return snapshot, problems

    # ----- saving while running -----------------------------------------------------------

    def start(self, every_seconds: float) -> "AwsState":
        """Save every `every_seconds` while something changed, until stop()."""
        def loop() -> None:
            while not self._stop.wait(every_seconds):
                if self.aws.writes != self._saved_writes:
                    try:
                        self.save()
                    except Exception:
                        logger.exception("saving local data failed; the previous snapshot is kept")

        self._thread = threading.Thread(target=loop, name="aws-state-saver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> Snapshot:
        """Stop saving periodically and save one last time."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        return self.save()
