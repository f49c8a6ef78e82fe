"""Idempotency-Key for the POSTs that spend or buy: one effect, the same response every time.

A route wraps its one chalicelib call:

    status, payload = idempotency.run(request.headers, user_id, "ask", body,
                                      lambda: ask.ask(user_id, ...))
    return respond(payload, status=status)

and, where the operation takes a ledger request id, passes
`idempotency.request_id(request.headers, user_id, fallback)` so that the ledger's own
replay protection is keyed by the same client key (defence in depth: even if the stored
response were lost, a retried request could not charge twice).

Semantics (after Stripe's):
- Keys are scoped per user (two users may send the same key) and live 24 hours
  (`expires_at_epoch`, the table's TTL attribute; an expired key that DynamoDB has not
  deleted yet is treated as absent).
- The first request with a key claims it (a conditional PutItem) and runs. Its outcome is
  stored: a success, or an error the operation decided (a 4xx such as 402
  insufficient_credits or 409 too_many_sessions). A 5xx, a 429 or an unexpected exception
  stores nothing and frees the key: nothing was decided, so a retry runs again.
- The same key with the same route and body returns the stored status and body (the first
  response, byte for byte) without running anything.
- The same key with a different route or body is refused: 422 `idempotency_key_mismatch`
  (422, not 409: the request itself is wrong and retrying it cannot succeed).
- While the first request is still running, a duplicate waits (polling, up to
  IDEMPOTENCY_WAIT_SECONDS) for its stored response, so N parallel duplicates all get the
  first response; past the wait it gets 409 `idempotency_in_progress` with Retry-After.
  A claim whose holder died is taken over after IDEMPOTENCY_LOCK_SECONDS.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import uuid
from typing import Any, Callable, Mapping

from chalicelib.aws import store
from chalicelib.core import jsonutil
from chalicelib.core.errors import BadRequest, Conflict, DomainError, ValidationFailed
from chalicelib.core.logs import log_event
from chalicelib.core.settings import get_settings
from chalicelib.web import errors

logger = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
TABLE = "idempotency"
IN_PROGRESS, COMPLETED = "in_progress", "completed"
KEY_PATTERN = re.compile(r"[\x21-\x7e]{1,255}")  # printable ASCII, no spaces
MAX_STORED_BYTES = 300 * 1024  # a DynamoDB item holds 400 KB
_POLL_SECONDS = (0.05, 0.1, 0.2, 0.25)


class StillInProgress(Conflict):
    """The first request with this key is still running: retry shortly."""

    code, default_message = "idempotency_in_progress", "A request with this Idempotency-Key is still in progress"
    retry_after = 1


def key_from(headers: Mapping[str, str] | None) -> str | None:
    """The request's Idempotency-Key (header names are case-insensitive), validated."""
    value = None
    for name, raw in (headers or {}).items():
        if name.lower() == HEADER.lower():
            value = raw
            break
    if value is None:
        return None
    if not KEY_PATTERN.fullmatch(value):
        raise BadRequest(
            "Idempotency-Key must be 1 to 255 printable ASCII characters",
            code="invalid_idempotency_key",
        )
    return value


def _digest(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()


def request_id(headers: Mapping[str, str] | None, user_id: str, fallback: str) -> str:
    """A ledger request id: derived from the Idempotency-Key when one is sent, else `fallback`."""
    key = key_from(headers)
    return f"idem-{_digest(user_id, key)[:40]}" if key else fallback


def fingerprint(route: str, body: Any) -> str:
    """The route and the (validated) body, canonically: what makes two requests 'the same'."""
    return _digest(route, json.dumps(jsonutil.plain(body), sort_keys=True, separators=(",", ":")))


def run(
    headers: Mapping[str, str] | None,
    user_id: str,
    route: str,
    body: Any,
    operation: Callable[[], Any],
    *,
    status: int = 200,
) -> tuple[int, Any]:
    """Run `operation` (returning the response body) at most once per (user, key).

    Returns (status, body) to respond with. Without the header it simply runs the operation.
    """
    key = key_from(headers)
    if key is None:
        return status, operation()
    record_key = f"{user_id}#{_digest(key)}"
    request_print = fingerprint(route, body)
    settings = get_settings()
    deadline = time.monotonic() + settings.idempotency_wait_seconds
    polls = 0
    while True:
        owner = uuid.uuid4().hex
        existing = _claim(record_key, user_id, route, request_print, owner)
        if existing is None:
            return _execute(record_key, owner, operation, status)
        while existing:  # empty: it vanished between our claim and now, so claim again
            if existing.get("fingerprint") != request_print:
                raise ValidationFailed(
                    "This Idempotency-Key was already used with a different request",
                    code="idempotency_key_mismatch",
                )
            if existing.get("state") == COMPLETED:
                return int(existing["status"]), json.loads(existing["response"])
            if existing.get("lock_expires_at_epoch", 0) < store.epoch():
                break  # the first attempt was abandoned: claim it again
            if time.monotonic() >= deadline:
                raise StillInProgress()
            time.sleep(_POLL_SECONDS[min(polls, len(_POLL_SECONDS) - 1)])
            polls += 1
            current = store.get(TABLE, idempotency_key=record_key)
            if current is None or current.get("expires_at_epoch", 0) < store.epoch():
                break  # freed by a failed first attempt: claim it
            existing = current


def _claim(record_key: str, user_id: str, route: str, request_print: str, owner: str) -> dict[str, Any] | None:
    """Claim the key; None if we now own it, else the record that is there."""
    now = store.epoch()
    settings = get_settings()
    try:
        store.ddb().put_item(
            TableName=store.table_name(TABLE),
            Item=store.to_item({
                "idempotency_key": record_key, "user_id": user_id, "route": route,
                "fingerprint": request_print, "state": IN_PROGRESS, "owner": owner,
                "created_at": store.iso(), "lock_expires_at_epoch": now + settings.idempotency_lock_seconds,
                "expires_at_epoch": now + settings.idempotency_ttl_seconds,
            }),
            ConditionExpression=(
                "attribute_not_exists(idempotency_key) OR expires_at_epoch < :now OR "
                "(#state = :in_progress AND lock_expires_at_epoch < :now AND fingerprint = :fp)"
            ),
            ExpressionAttributeNames={"#state": "state"},
            ExpressionAttributeValues=store.values(now=now, in_progress=IN_PROGRESS, fp=request_print),
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
        return None
    except store.ddb().exceptions.ConditionalCheckFailedException as error:
        return store.from_item(error.response.get("Item")) or {}


def _decided(answer: errors.Answer) -> bool:
    """Errors that are the operation's answer (stored); 5xx and 429 are not (retry runs again)."""
    return answer.status < 500 and answer.status != 429


def _execute(record_key: str, owner: str, operation: Callable[[], Any], status: int) -> tuple[int, Any]:
    try:
        payload = operation()
    except DomainError as error:
        answer = errors.answer(error)
        if not _decided(answer):
            _free(record_key, owner)
            raise
        status, payload = answer.status, answer.body
    except BaseException:
        _free(record_key, owner)
        raise
    text = jsonutil.dumps(payload)
    if len(text.encode("utf-8")) > MAX_STORED_BYTES:
        log_event(logger, "idempotency.response_too_large", logging.WARNING, size=len(text))
        _free(record_key, owner)
    else:
        _complete(record_key, owner, status, text)
    return status, json.loads(text)


def _complete(record_key: str, owner: str, status: int, text: str) -> None:
    try:
        store.ddb().update_item(
            TableName=store.table_name(TABLE),
            Key=store.key(idempotency_key=record_key),
            UpdateExpression="SET #state = :completed, #status = :status, #response = :response, "
                             "#completed_at = :now",
            ConditionExpression="#owner = :owner",
            ExpressionAttributeNames={"#state": "state", "#status": "status", "#owner": "owner",
                                      "#response": "response", "#completed_at": "completed_at"},
            ExpressionAttributeValues=store.values(
                completed=COMPLETED, status=status, response=text, owner=owner, now=store.iso()
            ),
        )
    except Exception as error:  # the effect happened; a retry re-runs, the ledger's ids dedupe it
        if store.is_conditional_failure(error):
            log_event(logger, "idempotency.taken_over", logging.WARNING)
        else:
            logger.exception("idempotency.store_failed")


def _free(record_key: str, owner: str) -> None:
    try:
        store.ddb().delete_item(
            TableName=store.table_name(TABLE),
            Key=store.key(idempotency_key=record_key),
            ConditionExpression="#owner = :owner",
            ExpressionAttributeNames={"#owner": "owner"},
            ExpressionAttributeValues=store.values(owner=owner),
        )
    except Exception as error:  # taken over by a retry, or unreachable: it expires anyway
        if not store.is_conditional_failure(error):
            logger.exception("idempotency.free_failed")
