"""Catch-up jobs: accept (reserve, store, enqueue) and report; the work is in catchup_worker.

A job is accepted within a request and processed in the background, because transcribing
minutes of audio and summarising it takes far longer than API Gateway's 29 s. At submit
the job's minutes are fixed: the longest the audio can play (measured from its bytes,
chalicelib.catchup.audio_length), but no more than the client's `duration_minutes`; they are
reserved at the catch-up price in the same transaction that writes the job, so a job exists
exactly when its credits are held. The worker asks AssemblyAI to stop at those minutes
(`audio_end_at`), so the provider never processes audio that is not paid for, and later
settles to what was transcribed or releases everything on failure.

Job states: queued -> processing -> completed | failed (the last two are terminal). A
retryable failure puts a job back to queued for SQS to redeliver it.

Storage: one item per job in the jobs table (expires after CATCHUP_JOB_RETENTION_DAYS),
and the transcript in its own item `<job_id>#transcript` that expires sooner
(CATCHUP_TRANSCRIPT_RETENTION_DAYS): the text is the most personal part, it is big, and
it doubles as the worker's checkpoint so a retry never pays for transcription twice.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import threading
import uuid
from typing import Any, Mapping

from chalicelib.aws import store
from chalicelib.catchup import uploads
from chalicelib.credits import ledger
from chalicelib.core.errors import Conflict, NotFound, ServiceUnavailable, ValidationFailed
from chalicelib.core.logs import log_event
from chalicelib.aws.resources import QUEUES
from chalicelib.core.settings import get_settings
from chalicelib.core.validation import Field, Schema

logger = logging.getLogger(__name__)

TABLE = "jobs"
QUEUE = "catchup"
SERVICE_TYPE = "catchup"
QUEUED, PROCESSING, COMPLETED, FAILED = "queued", "processing", "completed", "failed"
TERMINAL = (COMPLETED, FAILED)
ABSOLUTE_MAX_MINUTES = 180
TRANSCRIPT_SUFFIX = "#transcript"
JOB_ID = re.compile(r"[0-9a-f]{32}")

# Inline audio: the largest decoded size any setting may allow, and its base64 length;
# the body limit leaves room for the other fields and stays under the global 5 MB.
INLINE_HARD_MAX_BYTES = 3 * 1024 * 1024
INLINE_MAX_BASE64_CHARS = 4 * ((INLINE_HARD_MAX_BYTES + 2) // 3) + 128

ERROR_MESSAGES = {
    "audio_missing": "The audio for this catch-up could not be found; please upload it again.",
    "transcription_failed": "The audio could not be transcribed.",
    "transcription_timeout": "Transcribing the audio took too long.",
    "summary_failed": "The summary could not be written.",
    "processing_failed": "The catch-up could not be processed.",
    "service_unavailable": "The catch-up service was unavailable; nothing was charged.",
}

_CATCHUP_QUEUE = next(q for q in QUEUES if q.suffix == QUEUE)
# Held credits outlive every delivery SQS may make of the job, plus time in the queue.
RESERVATION_TTL_SECONDS = _CATCHUP_QUEUE.visibility_timeout * _CATCHUP_QUEUE.max_receive_count + 3600
MAX_ATTEMPTS = _CATCHUP_QUEUE.max_receive_count

SUBMIT_SCHEMA = Schema(
    {
        "stream_url": Field(str, max_length=2048, pattern=r"https?://[^\s]{1,2040}",
                            normalize=str.strip),
        "channel": Field(str, max_length=26, pattern=r"[a-z0-9_]{1,25}",
                         normalize=lambda v: v.strip().lstrip("#").lower()),
        "duration_minutes": Field(int, required=True, minimum=1, maximum=ABSOLUTE_MAX_MINUTES),
        "audio_key": Field(str, max_length=200, pattern=uploads.KEY_PATTERN),
        "audio": Field(str, max_length=INLINE_MAX_BASE64_CHARS, min_length=1),
    },
    max_body_bytes=INLINE_MAX_BASE64_CHARS + 16 * 1024,
    name="catchup",
    # The published extension's server fallback also sends these; never read.
    ignored=frozenset({"user_id", "fallback_reason"}),
)
AUDIO_REQUIRED = (
    "Catch-up needs the audio: the server does not record streams. Record it in the browser, "
    "upload it (POST /transcription/catchup/upload), then submit its audio_key here."
)

_queue_urls: dict[str, str] = {}
_queue_lock = threading.Lock()


def queue_url(name: str | None = None) -> str:
    """The catch-up queue's URL, looked up once per process (it never changes)."""
    name = name or get_settings().resource(QUEUE)
    with _queue_lock:
        if name not in _queue_urls:
            from chalicelib.aws.clients import client

            _queue_urls[name] = client("sqs").get_queue_url(QueueName=name)["QueueUrl"]
        return _queue_urls[name]


def reservation_id(job_id: str) -> str:
    return f"{SERVICE_TYPE}#{job_id}"


def _key(job_id: str) -> dict[str, Any]:
    return store.key(job_id=job_id)


def load_job(job_id: str) -> dict[str, Any] | None:
    return store.get(TABLE, job_id=job_id)


def load_transcript(job_id: str) -> dict[str, Any] | None:
    """The stored transcript item, or None once its retention has passed.

    DynamoDB deletes expired items lazily (within days), so expiry is checked here too.
    """
    item = store.get(TABLE, job_id=job_id + TRANSCRIPT_SUFFIX)
    if item is None or int(item.get("expires_at_epoch") or 0) <= store.epoch():
        return None
    return item


def _validate(body: Mapping[str, Any]) -> None:
    settings = get_settings()
    if not body.get("stream_url") and not body.get("channel"):
        raise ValidationFailed("Give the stream: 'stream_url' or 'channel'", code="missing_field",
                               field="stream_url")
    if not body.get("audio_key") and not body.get("audio"):
        raise ValidationFailed(AUDIO_REQUIRED, code="audio_required", field="audio_key")
    if body.get("audio_key") and body.get("audio"):
        raise ValidationFailed("Give the audio once: either 'audio_key' (uploaded) or 'audio' (base64)",
                               code="invalid_body", field="audio_key")
    if body["duration_minutes"] > settings.catchup_max_minutes:
        raise ValidationFailed(f"'duration_minutes' must be at most {settings.catchup_max_minutes}",
                               field="duration_minutes")


def reserved_minutes(requested_minutes: int, audio_max_seconds: float) -> int:
    """The minutes a job pays for and transcribes at most: the audio's longest possible
    length rounded up, but never more than the client asked for (nor less than one)."""
    return max(1, min(int(requested_minutes), math.ceil(audio_max_seconds / 60)))


def paid_minutes(job: Mapping[str, Any]) -> int:
    """The minutes a job reserved (jobs written before `reserved_minutes` reserved the request)."""
    return int(job.get("reserved_minutes") or job["duration_minutes"])


def _new_job(user_id: str, job_id: str, body: Mapping[str, Any], audio: uploads.AudioObject,
             price: int) -> dict[str, Any]:
    settings = get_settings()
    now = store.now()
    minutes = reserved_minutes(body["duration_minutes"], audio.max_seconds)
    return {
        "job_id": job_id,
        "user_id": user_id,
        "status": QUEUED,
        "created_at": store.iso(now),
        "updated_at": store.iso(now),
        "duration_minutes": body["duration_minutes"],
        "channel": body.get("channel"),
        "stream_url": body.get("stream_url"),
        "audio_key": audio.key,
        "audio_bytes": audio.size,
        "audio_content_type": audio.content_type,
        "audio_max_seconds": math.ceil(audio.max_seconds),
        "reserved_minutes": minutes,
        "price_per_minute": price,
        "reservation_id": reservation_id(job_id),
        "credits_reserved": minutes * price,
        "attempts": 0,
        "expires_at_epoch": int(now.timestamp()) + settings.catchup_job_retention_days * 86400,
    }


def handle_submit(user_id: str, body: Mapping[str, Any],
                  headers: Mapping[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """`POST /transcription/catchup` with the shared Idempotency-Key semantics: (status, body).

    A repeated key gets the first response (chalicelib.web.idempotency). Underneath, the job id
    (and so the reservation id) derives from the key too, so even a retry whose stored
    response was lost finds its job instead of holding the credits a second time.
    """
    from chalicelib.web import idempotency

    request_key = idempotency.request_id(headers, user_id, "")
    return idempotency.run(headers, user_id, "POST /transcription/catchup", dict(body),
                           lambda: submit(user_id, body, request_key=request_key or None), status=202)


def _job_id(request_key: str | None) -> str:
    if request_key is None:
        return uuid.uuid4().hex
    return hashlib.sha256(f"{SERVICE_TYPE}\n{request_key}".encode()).hexdigest()[:32]


def submit(user_id: str, body: Mapping[str, Any], request_key: str | None = None) -> dict[str, Any]:
    """Accept a catch-up: measure the audio, reserve its minutes with the job, enqueue it."""
    _validate(body)
    settings = get_settings()
    price = settings.catchup_credits_per_minute
    job_id = _job_id(request_key)
    if request_key is not None:
        existing = load_job(job_id)
        if existing is not None and existing.get("user_id") == user_id:
            if existing["status"] != FAILED or existing.get("error") != "service_unavailable":
                return _resumed(existing)
            job_id = uuid.uuid4().hex  # that attempt charged nothing and never ran: start afresh
    if body.get("audio_key"):
        audio = uploads.uploaded(user_id, body["audio_key"])
    else:
        audio = uploads.store_inline(user_id, body["audio"])
    job = _new_job(user_id, job_id, body, audio, price)
    try:
        reservation = ledger.reserve(
            user_id,
            job["credits_reserved"],
            reservation_id=job["reservation_id"],
            purpose=SERVICE_TYPE,
            ref_id=job_id,
            ttl_seconds=RESERVATION_TTL_SECONDS,
            extra_items=[store.put_new(TABLE, "job_id", job)],
        )
    except Exception:
        if not body.get("audio_key"):  # the clip we just stored belongs to no job
            uploads.delete_quietly(audio.key)
        raise
    if reservation.replayed:  # a concurrent request with the same key got there first
        if not body.get("audio_key"):
            uploads.delete_quietly(audio.key)
        existing = load_job(job_id)
        if existing is None or existing.get("user_id") != user_id:
            raise Conflict("Idempotency-Key conflict; retry with a new key", code="idempotency_conflict")
        return _resumed(existing)
    _enqueue(job)
    log_event(logger, "catchup.queued", job_id=job_id, duration_minutes=job["duration_minutes"],
              reserved_minutes=job["reserved_minutes"], audio_max_seconds=job["audio_max_seconds"],
              credits_reserved=job["credits_reserved"], audio_bytes=audio.size,
              inline=not body.get("audio_key"))
    return {**_accepted(job), "remaining_balance": reservation.balance_after}


def _accepted(job: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "job_id": job["job_id"],
        "status": job["status"],
        "credits_reserved": job["credits_reserved"],
        "duration_minutes": job["duration_minutes"],
        "reserved_minutes": paid_minutes(job),
        "price_per_minute": job["price_per_minute"],
    }


def _resumed(job: Mapping[str, Any]) -> dict[str, Any]:
    """A retried submit that found its job: answer with it, in its current state."""
    if job["status"] == QUEUED:
        # The first request may have died between reserving and enqueuing; a second
        # message is harmless (a delivery of a job that is not queued does nothing).
        _enqueue(dict(job))
    log_event(logger, "catchup.resumed", job_id=job["job_id"], status=job["status"])
    return _accepted(job)


def _enqueue(job: dict[str, Any]) -> None:
    """Send the job to the worker; if that fails, give the credits back and fail the job."""
    from chalicelib.aws.clients import client

    try:
        client("sqs").send_message(QueueUrl=queue_url(), MessageBody=json.dumps({"job_id": job["job_id"]}))
        return
    except Exception:
        logger.exception("catchup.enqueue_failed")
    ledger.release(job["reservation_id"], reason="enqueue_failed",
                   extra_items=[failed_update(job["job_id"], "service_unavailable", expect_status=QUEUED)])
    raise ServiceUnavailable("Catch-up is temporarily unavailable; nothing was charged",
                             code="catchup_unavailable")


def failed_update(job_id: str, code: str, *, lease_id: str | None = None,
                  expect_status: str = PROCESSING) -> dict[str, Any]:
    """The job's move to failed as a transaction Update, conditional on who may make it."""
    condition = "#s = :expect" + (" AND lease_id = :lease" if lease_id else "")
    values = {"expect": expect_status, "failed": FAILED, "code": code, "now": store.iso(), "zero": 0}
    if lease_id:
        values["lease"] = lease_id
    return {
        "Update": {
            "TableName": store.table_name(TABLE),
            "Key": _key(job_id),
            "UpdateExpression": "SET #s = :failed, #e = :code, updated_at = :now, failed_at = :now, "
                                "credits_used = :zero REMOVE lease_id, lease_expires_at_epoch",
            "ConditionExpression": condition,
            "ExpressionAttributeNames": {"#s": "status", "#e": "error"},
            "ExpressionAttributeValues": store.values(**values),
        }
    }


def _owned(user_id: str, job_id: str) -> dict[str, Any]:
    """The caller's job; someone else's (or a malformed id) looks exactly like an unknown one."""
    job = load_job(job_id) if JOB_ID.fullmatch(job_id) else None
    if job is None or job.get("user_id") != user_id:
        raise NotFound("Catch-up job not found", code="job_not_found")
    return job


def get_job(user_id: str, job_id: str) -> dict[str, Any]:
    """The caller's job as the API shows it; anyone else's is indistinguishable from unknown."""
    return job_view(_owned(user_id, job_id))


def job_view(job: Mapping[str, Any]) -> dict[str, Any]:
    status = job["status"]
    view: dict[str, Any] = {
        "job_id": job["job_id"],
        "status": status,
        "created_at": job["created_at"],
        "updated_at": job.get("updated_at"),
        "duration_minutes": job["duration_minutes"],
        "reserved_minutes": paid_minutes(job),
        "channel": job.get("channel"),
        "stream_url": job.get("stream_url"),
        "credits_reserved": job["credits_reserved"],
        "credits_used": job.get("credits_used"),
        "error": None,
        "result": None,
    }
    if status == COMPLETED:
        transcript = load_transcript(job["job_id"])
        result = dict(job.get("result") or {})
        result["transcript"] = transcript.get("text") if transcript else None
        view.update(
            result=result,
            credits_refunded=job.get("credits_refunded"),
            billed_minutes=job.get("billed_minutes"),
            audio_duration_seconds=job.get("audio_duration_seconds"),
            completed_at=job.get("completed_at"),
        )
    elif status == FAILED:
        code = job.get("error") or "processing_failed"
        view.update(error=code, error_message=ERROR_MESSAGES.get(code, ERROR_MESSAGES["processing_failed"]),
                    credits_used=0, failed_at=job.get("failed_at"))
    return view
