"""Deliver the app's non-HTTP events locally, the way Lambda would.

`chalice local` serves only HTTP. On AWS, SQS messages and schedules invoke their own
Lambda functions; here a thread per event source does the same: it long-polls each queue
the app subscribes to and invokes the very handler object Chalice registered, with a
Lambda-shaped event, deleting a message only when the handler returned (a raised error
leaves it for redelivery and, after maxReceiveCount, the dead-letter queue). Scheduled
functions are invoked on their rate.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from types import ModuleType
from typing import Any

from chalice.app import Rate, ScheduledEventConfig, SQSEventConfig

from chalicelib.aws.clients import client
from chalicelib.core.settings import get_settings

logger = logging.getLogger("devstack.events")


class LambdaContext:
    """The attributes our handlers (and Chalice) read from a Lambda context."""

    def __init__(self, name: str, timeout_seconds: int) -> None:
        self.function_name = name
        self.aws_request_id = uuid.uuid4().hex
        self._deadline = time.monotonic() + timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def _handler(app_module: ModuleType, handler_string: str) -> Any:
    return getattr(app_module, handler_string.rsplit(".", 1)[-1])


def sqs_event(queue_arn: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": m.get("MessageAttributes", {}),
                "md5OfBody": m.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": get_settings().region,
            }
            for m in messages
        ]
    }


def deliver_once(app_module: ModuleType, source: SQSEventConfig, wait_seconds: int = 1,
                 timeout_seconds: int = 300) -> int:
    """Receive one batch from the source's queue and invoke its handler; returns messages handled."""
    sqs = client("sqs")
    url = sqs.get_queue_url(QueueName=source.queue)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    received = sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=source.batch_size, WaitTimeSeconds=wait_seconds,
        AttributeNames=["All"],
    ).get("Messages", [])
    if not received:
        return 0
    handler = _handler(app_module, source.handler_string)
    try:
        handler(sqs_event(arn, received), LambdaContext(source.name, timeout_seconds))
    except Exception:
        logger.exception("sqs handler %s failed; messages will be redelivered", source.name)
        return 0
    sqs.delete_message_batch(
        QueueUrl=url,
        Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(received)],
    )
    return len(received)


def schedule_event(name: str) -> dict[str, Any]:
    return {
        "version": "0", "id": uuid.uuid4().hex, "detail-type": "Scheduled Event",
        "source": "aws.events", "account": "123456789012",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "region": get_settings().region, "resources": [f"local:rule/{name}"], "detail": {},
    }


def _rate_seconds(expression: Any, default: int) -> int:
    if isinstance(expression, Rate):
        unit = {Rate.MINUTES: 60, Rate.HOURS: 3600, Rate.DAYS: 86400}[expression.unit]
        return expression.value * unit
    return default


class EventLoops:
    """Background threads delivering SQS messages and schedules until stop()."""

    def __init__(self, app_module: ModuleType, schedule_every: int | None = None) -> None:
        self.app_module = app_module
        self.schedule_every = schedule_every
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> "EventLoops":
        for source in self.app_module.app.event_sources:
            if isinstance(source, SQSEventConfig):
                target, args = self._sqs_loop, (source,)
            elif isinstance(source, ScheduledEventConfig):
                target, args = self._schedule_loop, (source,)
            else:
                continue
            thread = threading.Thread(target=target, args=args, name=f"local-{source.name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _sqs_loop(self, source: SQSEventConfig) -> None:
        while not self._stop.is_set():
            try:
                deliver_once(self.app_module, source)
            except Exception:
                logger.exception("polling queue %s failed", source.queue)
                self._stop.wait(2)

    def _schedule_loop(self, source: ScheduledEventConfig) -> None:
        every = self.schedule_every or _rate_seconds(source.schedule_expression, 3600)
        handler = _handler(self.app_module, source.handler_string)
        while not self._stop.wait(every):
            try:
                handler(schedule_event(source.name), LambdaContext(source.name, 300))
            except Exception:
                logger.exception("scheduled function %s failed", source.name)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
