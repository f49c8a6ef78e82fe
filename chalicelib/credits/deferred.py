"""Settle later what a provider already delivered: the answer exists, so its price is owed.

Why: an Ask reserves its price, then OpenAI answers (we pay OpenAI), then the ledger settles.
If that settle fails (DynamoDB throttled, or a transaction conflict outlasted the ledger's own
retries), releasing the hold would give away an answer we paid for, and leaving it held lets
the janitor release it when it expires. Instead the settle is queued on the worker's SQS queue
(a different service from the one that just failed) and the worker repeats it until it lands:
`ledger.settle` is idempotent per reservation, so a repeat never charges twice.

Bound (docs/credits.md): an answer goes unbilled only if the settle, the queueing and every
redelivery all fail before the hold expires (15 minutes for an Ask), at most one Ask's price
each time, and every such case is logged at ERROR (`credits.settle_lost`) for an operator.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Mapping, Sequence

from chalicelib.core.logs import log_event
from chalicelib.credits import ledger

logger = logging.getLogger(__name__)

MESSAGE_KIND = "settle"


def queue_settle(
    reservation_id: str,
    amount: int,
    *,
    service_type: str,
    metadata: Mapping[str, Any],
    extra_items: Sequence[dict[str, Any]] = (),
) -> bool:
    """Put the settle on the worker's queue; False (and an operator event) when even that fails."""
    from chalicelib.aws.clients import client
    from chalicelib.catchup.jobs import queue_url

    body = {"kind": MESSAGE_KIND, "reservation_id": reservation_id, "amount": amount,
            "service_type": service_type, "metadata": dict(metadata), "extra_items": list(extra_items)}
    try:
        client("sqs").send_message(QueueUrl=queue_url(), MessageBody=json.dumps(body))
    except Exception as error:
        log_event(logger, "credits.settle_lost", logging.ERROR, reservation_id=reservation_id,
                  amount=amount, service_type=service_type, error=type(error).__name__)
        return False
    log_event(logger, "credits.settle_queued", logging.WARNING, reservation_id=reservation_id,
              amount=amount, service_type=service_type)
    return True


def is_settle_message(message: Mapping[str, Any]) -> bool:
    return message.get("kind") == MESSAGE_KIND


def settle_from_message(message: Mapping[str, Any]) -> None:
    """The worker's side: settle now. A failure propagates, so SQS redelivers the message."""
    reservation_id = str(message["reservation_id"])
    result = ledger.settle(
        reservation_id,
        int(message["amount"]),
        service_type=str(message["service_type"]),
        metadata=message.get("metadata") or {},
        extra_items=message.get("extra_items") or [],
    )
    if result.state != ledger.SETTLED:  # the janitor released the expired hold first
        log_event(logger, "credits.settle_lost", logging.ERROR, reservation_id=reservation_id,
                  amount=int(message["amount"]), service_type=str(message["service_type"]),
                  error="released_before_settle")
        return
    log_event(logger, "credits.settle_deferred_done", reservation_id=reservation_id,
              credits_used=result.credits_used, replayed=result.replayed)
