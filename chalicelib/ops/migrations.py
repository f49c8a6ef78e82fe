"""One-off data migrations an operator runs against a deployed stage (docs/operations.md,
"Migrations of deployed stages"), through `python -m chalicelib.ops.admin`.

Not imported by any Lambda: what is here (a Scan) is no function's permission.
"""
from __future__ import annotations

import logging
from typing import Any

from chalicelib.aws import store
from chalicelib.core.logs import log_event
from chalicelib.credits import ledger

logger = logging.getLogger(__name__)

CLOSED_STATES = {"settled": "settled_at", "released": "released_at", "charged": "created_at"}


def expire_closed_reservations() -> dict[str, int]:
    """Give every closed reservation (and charge guard) written before they expired its
    `expires_at_epoch`: CLOSED_RESERVATION_TTL_SECONDS after it closed (so the oldest go at
    once). Held reservations are left alone. Reads the whole table once (a Scan of the
    closed rows without the attribute); running it again finds nothing left to do.
    """
    reservations = store.table_name("reservations")
    counts = {"expiring": 0, "skipped": 0}
    for item in _closed_without_expiry(reservations):
        closed_at = item.get(CLOSED_STATES[item["state"]]) or item.get("created_at")
        if not closed_at:
            counts["skipped"] += 1
            continue
        _expire(reservations, item, ledger.closed_expiry(str(closed_at)))
        counts["expiring"] += 1
    log_event(logger, "migration.reservations_expiring", **counts)
    return counts


def _closed_without_expiry(table: str) -> Any:
    request: dict[str, Any] = {
        "TableName": table,
        "FilterExpression": "#state IN (:settled, :released, :charged) AND attribute_not_exists(expires_at_epoch)",
        "ExpressionAttributeNames": {"#state": "state"},
        "ExpressionAttributeValues": store.values(settled="settled", released="released", charged="charged"),
    }
    while True:
        page = store.ddb().scan(**request)
        for item in page.get("Items", []):
            yield store.from_item(item)
        if not page.get("LastEvaluatedKey"):
            return
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _expire(table: str, item: dict[str, Any], expires_at_epoch: int) -> None:
    try:
        store.ddb().update_item(
            TableName=table, Key=store.key(reservation_id=item["reservation_id"]),
            UpdateExpression="SET expires_at_epoch = :expires",
            ConditionExpression="#state = :state AND attribute_not_exists(expires_at_epoch)",
            ExpressionAttributeNames={"#state": "state"},
            ExpressionAttributeValues=store.values(expires=expires_at_epoch, state=item["state"]),
        )
    except store.ddb().exceptions.ConditionalCheckFailedException:
        pass  # closed by the app meanwhile (it sets the attribute itself)
