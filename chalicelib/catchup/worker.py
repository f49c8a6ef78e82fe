"""The catch-up worker: transcribe the audio, summarise it, settle the credits.

SQS delivers at least once, and a Lambda can die mid-job, so every step is guarded:

- **Claim.** A delivery first moves the job queued -> processing with a conditional write
  that also takes a lease (`lease_id`, `lease_expires_at_epoch`: longer than this
  invocation can live) and counts the attempt. A second delivery of the same message finds
  the job terminal (and does nothing) or leased by a live worker (and asks SQS to come back
  when the lease has run out). An expired lease is taken over.
- **Checkpoints.** The AssemblyAI transcript id is saved as soon as it exists and the
  finished transcript is stored, so a retry resumes instead of paying for audio twice.
- **Finish.** Settling the reservation, the job's move to completed (conditional on still
  holding the lease) and the history entry are one transaction; so are releasing the
  reservation and the move to failed. Settle and release are idempotent in the ledger too.
- **Retries.** Errors worth retrying (a provider 5xx, timeout or overload, running out of
  time) put the job back to queued and re-raise, after shortening the message's visibility
  so SQS redelivers it soon; the credits stay reserved. The last allowed attempt, and any
  error not worth retrying, releases the credits and fails the job with a readable code.
"""
from __future__ import annotations

import json
import logging
import math
import re
import time
import uuid
from typing import Any, Mapping

from chalicelib.aws import store
from chalicelib.catchup import history
from chalicelib.catchup import jobs as catchup
from chalicelib.catchup import uploads
from chalicelib.credits import deferred, ledger
from chalicelib.credits import stats
from chalicelib.catchup.jobs import COMPLETED, MAX_ATTEMPTS, PROCESSING, QUEUED, TERMINAL
from chalicelib.core.errors import ConfigurationError, DomainError, ServiceUnavailable, UpstreamError
from chalicelib.core.logs import log_event, start_invocation
from chalicelib.core.settings import get_settings

logger = logging.getLogger(__name__)

DEFAULT_REMAINING_SECONDS = 300.0  # when no Lambda context says otherwise
FINISH_MARGIN_SECONDS = 10.0  # kept for settling and bookkeeping at the end
SUMMARY_RESERVE_SECONDS = 60.0  # transcription polling stops this long before the deadline
LEASE_MARGIN_SECONDS = 15
POLL_FIRST_SECONDS, POLL_FACTOR, POLL_MAX_SECONDS = 1.0, 1.5, 10.0
RETRY_DELAY_SECONDS = 30  # redelivery after a retryable failure (times the attempt number)
MAX_VISIBILITY_SECONDS = 900
MAX_STORED_TRANSCRIPT_BYTES = 350_000  # under DynamoDB's 400 KB item limit
TWITCH_HOSTS = re.compile(r"https?://(?:www\.|m\.|go\.)?twitch\.tv/([A-Za-z0-9_]{1,25})(?:[/?#]|$)", re.I)
TWITCH_NON_CHANNELS = frozenset(
    "videos directory settings search downloads jobs turbo subscriptions inventory wallet "
    "friends messages payments p popout moderator u drops prime store login signup".split()
)

sleep = time.sleep  # tests may replace it


class JobFailed(Exception):
    """A failure not worth retrying; `code` is what the user sees."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class Retryable(Exception):
    """A failure worth another attempt; `code` is what the user sees if none is left."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


SETTLE_RETRY_SECONDS = 60


class RetryLater(Exception):
    """Raised out of the handler so SQS redelivers the message after `delay` seconds."""

    def __init__(self, job_id: str, delay: int) -> None:
        super().__init__(f"{job_id} will be retried in {delay}s")
        self.delay = delay


# ----- the SQS entry point -----------------------------------------------------------------


def handle_event(event: Mapping[str, Any], context: Any) -> None:
    """Process every record of an SQS event (the queue's batch size is 1)."""
    start_invocation("catchup_worker", context)
    for record in event.get("Records", []):
        try:
            process_message(record.get("body") or "", context)
        except RetryLater as retry:
            _delay_redelivery(record, retry.delay)
            raise


def _delay_redelivery(record: Mapping[str, Any], delay: int) -> None:
    """Make the failed message visible again after `delay` instead of the queue's 30 minutes."""
    from chalicelib.aws.clients import client

    try:
        queue_name = str(record.get("eventSourceARN", "")).rsplit(":", 1)[-1] or None
        client("sqs").change_message_visibility(
            QueueUrl=catchup.queue_url(queue_name), ReceiptHandle=record["receiptHandle"],
            VisibilityTimeout=max(0, min(delay, MAX_VISIBILITY_SECONDS)),
        )
    except Exception:  # the queue's own visibility timeout still brings it back
        logger.exception("catchup.visibility_change_failed")


def process_message(body: str, context: Any) -> None:
    try:
        message = json.loads(body)
        if isinstance(message, dict) and deferred.is_settle_message(message):
            _settle_deferred(message)
            return
        job_id = message["job_id"]
        if not isinstance(job_id, str) or not 0 < len(job_id) <= 64:
            raise ValueError
    except (ValueError, KeyError, TypeError):
        log_event(logger, "catchup.bad_message", logging.ERROR)
        return  # a message we cannot read will not become readable by retrying
    process_job(job_id, context)


def _settle_deferred(message: dict[str, Any]) -> None:
    """An answer already delivered (credits.deferred): settle it, or try again in a minute,
    well within the hold's life (the queue's own redelivery would come after it expired)."""
    try:
        deferred.settle_from_message(message)
    except (KeyError, TypeError, ValueError):
        log_event(logger, "catchup.bad_message", logging.ERROR)
    except Exception:
        logger.exception("credits.settle_deferred_failed")
        raise RetryLater(str(message.get("reservation_id")), SETTLE_RETRY_SECONDS) from None


def _remaining_seconds(context: Any) -> float:
    getter = getattr(context, "get_remaining_time_in_millis", None)
    return getter() / 1000.0 if callable(getter) else DEFAULT_REMAINING_SECONDS


# ----- the job ----------------------------------------------------------------------------


def process_job(job_id: str, context: Any) -> None:
    remaining = _remaining_seconds(context)
    deadline = time.monotonic() + remaining - FINISH_MARGIN_SECONDS
    job = catchup.load_job(job_id)
    if job is None:
        log_event(logger, "catchup.unknown_job", logging.WARNING, job_id=job_id)
        return
    if job["status"] in TERMINAL:
        log_event(logger, "catchup.duplicate_delivery", job_id=job_id, status=job["status"])
        return
    job = _claim(job, remaining)
    if job is None:
        return
    lease = job["lease_id"]
    attempt = job["attempts"]
    log_event(logger, "catchup.processing", job_id=job_id, attempt=attempt)
    if attempt > MAX_ATTEMPTS:  # every earlier attempt died without recording an outcome
        _fail(job, lease, job.get("last_error") or "transcription_timeout")
        return
    try:
        outcome = _run(job, lease, deadline)
    except JobFailed as failure:
        _fail(job, lease, failure.code)
        return
    except Retryable as failure:
        _retry_or_fail(job, lease, attempt, failure.code)
    except Exception:
        logger.exception("catchup.unexpected_error")
        _retry_or_fail(job, lease, attempt, "processing_failed")
    else:
        try:
            _complete(job, lease, outcome)
        except Exception:  # e.g. the ledger was busy: nothing was written, try again soon
            logger.exception("catchup.finish_failed")
            _retry_or_fail(job, lease, attempt, "processing_failed")


def _claim(job: dict[str, Any], remaining: float) -> dict[str, Any] | None:
    """Take the job (queued, or processing under an expired lease); None if it is finished.

    Raises RetryLater while another live worker holds it.
    """
    now = store.epoch()
    if job["status"] == PROCESSING and int(job.get("lease_expires_at_epoch") or 0) >= now:
        raise _busy(job, now)
    lease = uuid.uuid4().hex
    attempts = int(job.get("attempts") or 0)
    lease_expires = now + int(remaining) + LEASE_MARGIN_SECONDS
    try:
        response = store.ddb().update_item(
            TableName=store.table_name(catchup.TABLE),
            Key=store.key(job_id=job["job_id"]),
            UpdateExpression="SET #s = :processing, attempts = :next, lease_id = :lease, "
                             "lease_expires_at_epoch = :expires, updated_at = :iso, "
                             "started_at = if_not_exists(started_at, :iso)",
            ConditionExpression="attempts = :seen AND (#s = :queued OR "
                                "(#s = :processing AND lease_expires_at_epoch < :now))",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues=store.values(
                processing=PROCESSING, queued=QUEUED, next=attempts + 1, seen=attempts,
                lease=lease, expires=lease_expires, iso=store.iso(), now=now,
            ),
            ReturnValues="ALL_NEW",
        )
    except Exception as error:
        if not store.is_conditional_failure(error):
            raise
        current = catchup.load_job(job["job_id"])
        if current is None or current["status"] in TERMINAL:
            return None
        raise _busy(current, now) from None
    return store.from_item(response["Attributes"])


def _busy(job: Mapping[str, Any], now: int) -> RetryLater:
    wait = max(int(job.get("lease_expires_at_epoch") or 0) - now, 0) + 5
    log_event(logger, "catchup.lease_busy", job_id=job["job_id"], retry_in_seconds=wait)
    return RetryLater(job["job_id"], wait)


def _run(job: dict[str, Any], lease: str, deadline: float) -> dict[str, Any]:
    transcript = catchup.load_transcript(job["job_id"]) or _transcribe(job, lease, deadline)
    stream = stream_context(job)
    summary = _summarise(transcript.get("text") or "", stream, deadline)
    stats.record_usage(job["user_id"], catchup.SERVICE_TYPE, calls=summary.usage.calls,
                       openai_prompt_tokens=summary.usage.prompt_tokens,
                       openai_completion_tokens=summary.usage.completion_tokens)
    return {"transcript": transcript, "stream": stream, "summary": summary}


# ----- step 1: transcription ---------------------------------------------------------------


def _transcribe(job: dict[str, Any], lease: str, deadline: float) -> dict[str, Any]:
    from chalicelib.providers import assemblyai
    from chalicelib.providers.http import OutcomeUnknown, ProviderRejected

    settings = get_settings()
    transcript_id = job.get("transcript_id")
    if not transcript_id:
        if uploads.head_object(job["audio_key"]) is None:
            raise JobFailed("audio_missing")
        try:
            submitted = assemblyai.submit_transcript(
                uploads.fetch_url(job["audio_key"]),
                speech_models=list(settings.catchup_speech_models),
                audio_end_at=catchup.paid_minutes(job) * 60_000,  # never past what is paid for
            )
        except (ProviderRejected, OutcomeUnknown):
            # OutcomeUnknown: AssemblyAI may have queued (and will bill) a transcript whose id
            # we never learnt; submitting again could pay for the audio twice.
            raise JobFailed("transcription_failed") from None
        except (UpstreamError, ServiceUnavailable, ConfigurationError):
            raise Retryable("transcription_failed") from None
        transcript_id = submitted["id"]
        _save_transcript_id(job["job_id"], lease, transcript_id)
    poll_deadline = min(time.monotonic() + settings.catchup_transcribe_budget_seconds,
                        deadline - SUMMARY_RESERVE_SECONDS)
    done = _poll(transcript_id, poll_deadline)
    return _store_transcript(job, done)


def _poll(transcript_id: str, poll_deadline: float) -> dict[str, Any]:
    """Poll with growing waits until the transcript is done or the budget is spent."""
    from chalicelib.providers import assemblyai
    from chalicelib.providers.http import ProviderRejected

    wait = POLL_FIRST_SECONDS
    polls = 0
    while True:
        left = poll_deadline - time.monotonic()
        if left <= 0:
            log_event(logger, "catchup.transcription_timeout", logging.WARNING, polls=polls)
            raise JobFailed("transcription_timeout")
        sleep(min(wait, left))
        wait = min(wait * POLL_FACTOR, POLL_MAX_SECONDS)
        polls += 1
        try:
            transcript = assemblyai.get_transcript(transcript_id)
        except ProviderRejected:
            raise JobFailed("transcription_failed") from None
        except (UpstreamError, ServiceUnavailable) as error:  # transient: keep polling
            log_event(logger, "catchup.poll_failed", logging.WARNING, code=error.code)
            continue
        status = transcript.get("status")
        if status == "completed":
            return transcript
        if status == "error":
            log_event(logger, "catchup.transcription_error", logging.WARNING, polls=polls)
            raise JobFailed("transcription_failed")


def _save_transcript_id(job_id: str, lease: str, transcript_id: str) -> None:
    store.ddb().update_item(
        TableName=store.table_name(catchup.TABLE),
        Key=store.key(job_id=job_id),
        UpdateExpression="SET transcript_id = :t, updated_at = :now",
        ConditionExpression="lease_id = :lease",
        ExpressionAttributeValues=store.values(t=transcript_id, now=store.iso(), lease=lease),
    )


def _bounded_text(text: str) -> tuple[str, bool]:
    data = text.encode("utf-8")
    if len(data) <= MAX_STORED_TRANSCRIPT_BYTES:
        return text, False
    return data[:MAX_STORED_TRANSCRIPT_BYTES].decode("utf-8", "ignore"), True


def _store_transcript(job: Mapping[str, Any], done: Mapping[str, Any]) -> dict[str, Any]:
    """Keep the finished transcript (the checkpoint a retry resumes from), with its expiry."""
    settings = get_settings()
    text, truncated = _bounded_text(str(done.get("text") or ""))
    duration = done.get("audio_duration")
    if isinstance(duration, (int, float)):  # what was processed: it stopped at `audio_end_at`
        duration = min(duration, catchup.paid_minutes(job) * 60)
    item = {
        "job_id": job["job_id"] + catchup.TRANSCRIPT_SUFFIX,
        "text": text,
        "truncated": truncated,
        "transcript_id": done.get("id"),
        "audio_duration": duration if isinstance(duration, (int, float)) else None,
        "created_at": store.iso(),
        "expires_at_epoch": store.epoch() + settings.catchup_transcript_retention_days * 86400,
    }
    store.ddb().put_item(TableName=store.table_name(catchup.TABLE), Item=store.to_item(item))
    stats.record_usage(job["user_id"], catchup.SERVICE_TYPE,
                       assemblyai_transcribe_seconds=item["audio_duration"] or 0)
    log_event(logger, "catchup.transcribed", job_id=job["job_id"], audio_seconds=item["audio_duration"],
              characters=len(text))
    return item


# ----- step 2: the stream's context ---------------------------------------------------------


def twitch_login(stream_url: str | None) -> str | None:
    """The channel login of a twitch.tv channel URL (None for VODs, other sites, ...)."""
    match = TWITCH_HOSTS.match(stream_url or "")
    if not match or match.group(1).lower() in TWITCH_NON_CHANNELS:
        return None
    return match.group(1).lower()


def stream_context(job: Mapping[str, Any]) -> dict[str, Any]:
    """`{channel, title, game, started_at}` from Twitch; a lookup failure only loses detail."""
    login = job.get("channel") or twitch_login(job.get("stream_url"))
    context: dict[str, Any] = {"channel": login, "title": None, "game": None, "started_at": None}
    if not login:
        return context
    from chalicelib.providers import twitch

    try:
        info = twitch.channel_info(login)
    except (DomainError, ConfigurationError) as error:
        log_event(logger, "catchup.twitch_unavailable", logging.WARNING,
                  code=getattr(error, "code", type(error).__name__))
        return context
    for name in ("title", "game", "started_at"):
        value = info.get(name)
        context[name] = value if isinstance(value, str) and value else None
    return context


# ----- step 3: the summary --------------------------------------------------------------------


def _summarise(text: str, stream: Mapping[str, Any], deadline: float) -> Any:
    from chalicelib.catchup import summaries
    from chalicelib.providers.http import ProviderRejected

    about = "; ".join(f"{k}: {v}" for k, v in stream.items() if v and k != "started_at")
    try:
        return summaries.summarise(text, deadline=deadline, stream_context=about)
    except (summaries.SummaryError, ProviderRejected):
        raise JobFailed("summary_failed") from None
    except (summaries.OutOfTime, UpstreamError, ServiceUnavailable, ConfigurationError):
        raise Retryable("summary_failed") from None


# ----- outcomes ---------------------------------------------------------------------------


def billed_minutes(job: Mapping[str, Any], audio_seconds: Any) -> int:
    """Whole minutes of audio actually transcribed (rounded up), never above what was reserved.

    AssemblyAI was told to stop at the reserved minutes (`audio_end_at`), so whatever length
    it reports, it processed no more than that.
    """
    seconds = audio_seconds if isinstance(audio_seconds, (int, float)) and audio_seconds > 0 else 60
    return max(1, min(math.ceil(seconds / 60), catchup.paid_minutes(job)))


def _completed_update(job: Mapping[str, Any], lease: str, result: Mapping[str, Any], used: int,
                      refunded: int, minutes: int, seconds: Any) -> dict[str, Any]:
    """The job's move to completed as a transaction Update, only while we hold the lease."""
    now = store.iso()
    return {
        "Update": {
            "TableName": store.table_name(catchup.TABLE),
            "Key": store.key(job_id=job["job_id"]),
            "UpdateExpression": "SET #s = :completed, #r = :result, credits_used = :used, "
                                "credits_refunded = :refunded, billed_minutes = :minutes, "
                                "audio_duration_seconds = :seconds, completed_at = :now, "
                                "updated_at = :now REMOVE lease_id, lease_expires_at_epoch, last_error",
            "ConditionExpression": "#s = :processing AND lease_id = :lease",
            "ExpressionAttributeNames": {"#s": "status", "#r": "result"},
            "ExpressionAttributeValues": store.values(
                completed=COMPLETED, result=dict(result), used=used, refunded=refunded,
                minutes=minutes, seconds=seconds, now=now, processing=PROCESSING, lease=lease,
            ),
        }
    }


def _complete(job: dict[str, Any], lease: str, outcome: dict[str, Any]) -> None:
    transcript, stream, summary = outcome["transcript"], outcome["stream"], outcome["summary"]
    minutes = billed_minutes(job, transcript.get("audio_duration"))
    cost = minutes * int(job["price_per_minute"])
    seconds = transcript.get("audio_duration")
    usage = summary.usage
    metadata = {
        "job_id": job["job_id"],
        "duration_minutes": minutes,
        "duration_minutes_requested": job["duration_minutes"],
        "assemblyai_seconds": seconds,
        "assemblyai_transcript_id": transcript.get("transcript_id"),
        "openai_model": usage.model or None,
        "openai_calls": usage.calls,
        "openai_prompt_tokens": usage.prompt_tokens,
        "openai_completion_tokens": usage.completion_tokens,
        "summary_chunks": usage.chunks,
    }
    result = {**summary.as_dict(), "stream": stream}
    completed = _completed_update(job, lease, result, cost, int(job["credits_reserved"]) - cost,
                                  minutes, seconds)

    def entry(used: int) -> dict[str, Any]:
        return history.put_item(
            job["user_id"], "catchup", job["job_id"], job["created_at"],
            credits_used=used, duration_minutes=minutes, channel=stream.get("channel"),
            title=stream.get("title"), summary=summary.summary, status=COMPLETED,
        )

    try:
        settled = ledger.settle(job["reservation_id"], cost, service_type=catchup.SERVICE_TYPE,
                                metadata=metadata, extra_items=[completed, entry(cost)])
    except Exception:
        if _finished_elsewhere(job["job_id"]):
            return
        raise
    if settled.replayed:
        # The reservation was closed without this job update (released after it expired):
        # record what the ledger really did, so the job never claims a charge that was not made.
        log_event(logger, "catchup.settle_replayed", logging.WARNING, job_id=job["job_id"],
                  state=getattr(settled, "state", None), credits_used=settled.credits_used)
        _finish_without_ledger(
            _completed_update(job, lease, result, settled.credits_used, settled.credits_refunded,
                              minutes, seconds),
            entry(settled.credits_used),
        )
    log_event(logger, "catchup.completed", job_id=job["job_id"], credits_used=settled.credits_used,
              credits_refunded=settled.credits_refunded, billed_minutes=minutes,
              assemblyai_seconds=seconds, openai_calls=usage.calls,
              openai_prompt_tokens=usage.prompt_tokens,
              openai_completion_tokens=usage.completion_tokens)


def _finish_without_ledger(*items: dict[str, Any]) -> None:
    try:
        store.ddb().transact_write_items(TransactItems=list(items))
    except Exception as error:
        if not store.is_conditional_failure(error):
            raise


def _finished_elsewhere(job_id: str) -> bool:
    """After a refused finish: did another worker (holding a newer lease) finish the job?"""
    current = catchup.load_job(job_id)
    if current is not None and current["status"] in TERMINAL:
        log_event(logger, "catchup.finished_elsewhere", job_id=job_id, status=current["status"])
        return True
    return False


def _fail(job: dict[str, Any], lease: str, code: str) -> None:
    """Give every reserved credit back and make the failure visible, in one transaction."""
    failed = catchup.failed_update(job["job_id"], code, lease_id=lease)
    try:
        released = ledger.release(job["reservation_id"], reason=code, extra_items=[failed])
    except Exception:
        if _finished_elsewhere(job["job_id"]):
            return
        raise
    if released.replayed:
        _finish_without_ledger(failed)
    log_event(logger, "catchup.failed", logging.WARNING, job_id=job["job_id"], error=code,
              attempt=job.get("attempts"))


def _retry_or_fail(job: dict[str, Any], lease: str, attempt: int, code: str) -> None:
    if attempt >= MAX_ATTEMPTS:
        _fail(job, lease, code)
        return
    try:
        store.ddb().update_item(
            TableName=store.table_name(catchup.TABLE),
            Key=store.key(job_id=job["job_id"]),
            UpdateExpression="SET #s = :queued, last_error = :code, updated_at = :now "
                             "REMOVE lease_id, lease_expires_at_epoch",
            ConditionExpression="#s = :processing AND lease_id = :lease",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues=store.values(queued=QUEUED, code=code, now=store.iso(),
                                                   processing=PROCESSING, lease=lease),
        )
    except Exception as error:
        if not store.is_conditional_failure(error):
            raise
        return  # another worker took the job over; it decides
    delay = RETRY_DELAY_SECONDS * attempt
    log_event(logger, "catchup.retry", logging.WARNING, job_id=job["job_id"], error=code,
              attempt=attempt, retry_in_seconds=delay)
    raise RetryLater(job["job_id"], delay)
