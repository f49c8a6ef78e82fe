"""A catch-up never transcribes more audio than it reserved, and bills what was transcribed.

The reservation follows the audio's real length (measured from its bytes at submit), capped
by the client's `duration_minutes`; the worker tells AssemblyAI to stop there (`audio_end_at`).
Lying clients (a tiny `duration_minutes`, headers that lie about the length, bytes that are
not audio) get a clear 4xx or are billed for exactly what was transcribed.
"""
from __future__ import annotations

import base64
import struct

import pytest
import requests

from devstack.fakes.audio import make_wav
from tests.conftest import assert_books_balance

PRICE = 10


def upload(stack, token, data: bytes, content_type: str = "audio/wav") -> str:
    """Upload through the presigned PUT, as the extension does; returns the audio key."""
    status, up = stack.post("/transcription/catchup/upload", token,
                            {"content_type": content_type, "file_size": len(data)})
    assert status == 200, up
    assert requests.put(up["upload_url"], data=data, headers=up["headers"], timeout=10).ok
    return up["audio_key"]


def submit_key(stack, token, key: str, minutes: int):
    return stack.submit(token, audio_key=key, audio=None, duration_minutes=minutes)


def run(stack, token, job_id: str) -> dict:
    stack.run_worker(stack.receive())
    job = stack.job(token, job_id)
    assert job["status"] == "completed", job
    return job


def sent_end_at(stack) -> int:
    return stack.assemblyai.requests_to("/v2/transcript", "POST")[-1].json().get("audio_end_at")


def test_a_600_second_wav_submitted_as_one_minute_is_transcribed_and_billed_as_one(stack, new_user):
    """The issue's reproduction: it used to complete with 600 s transcribed and 1 minute billed."""
    user = new_user()
    key = upload(stack, user["token"], make_wav(600, sample_rate=1000))
    status, body = submit_key(stack, user["token"], key, 1)
    assert status == 202 and body["credits_reserved"] == PRICE
    job = run(stack, user["token"], body["job_id"])
    assert job["audio_duration_seconds"] <= 60 * job["billed_minutes"]  # was 600 s for 1 minute
    assert (job["billed_minutes"], job["credits_used"], job["reserved_minutes"]) == (1, PRICE, 1)
    assert sent_end_at(stack) == 60_000  # AssemblyAI stops at the paid minute
    assert len(job["result"]["transcript"].split()) <= 160  # one minute of speech, not ten
    assert stack.balance(user["token"]) == 200 - PRICE
    assert_books_balance(user["user"]["user_id"])


def test_the_reservation_follows_the_audio_not_a_larger_claim(stack, new_user):
    user = new_user()
    key = upload(stack, user["token"], make_wav(600, sample_rate=1000))
    status, body = submit_key(stack, user["token"], key, 30)
    assert status == 202 and (body["reserved_minutes"], body["credits_reserved"]) == (10, 10 * PRICE)
    job = run(stack, user["token"], body["job_id"])
    assert sent_end_at(stack) == 600_000
    assert (job["audio_duration_seconds"], job["billed_minutes"], job["credits_used"]) == (600, 10, 10 * PRICE)


def test_audio_longer_than_the_balance_pays_for_is_402_before_anything_runs(stack, new_user):
    user = new_user()
    key = upload(stack, user["token"], make_wav(25 * 60, sample_rate=1000))
    transcripts = len(stack.assemblyai.transcript_ids)
    status, body = submit_key(stack, user["token"], key, 25)  # 250 credits > 200
    assert status == 402 and body["code"] == "insufficient_credits" and body["required"] == 250
    assert stack.balance(user["token"]) == 200
    assert len(stack.assemblyai.transcript_ids) == transcripts


def _wav_claiming(data_bytes: int, real_seconds: float, rate: int = 1000) -> bytes:
    """A 16-bit mono WAV whose data chunk claims `data_bytes` but holds `real_seconds`."""
    wav = make_wav(real_seconds, sample_rate=rate)
    return wav[:40] + struct.pack("<I", data_bytes) + wav[44:]


def test_a_data_chunk_claiming_more_than_the_file_holds_reserves_what_it_holds(stack, new_user):
    user = new_user()
    key = upload(stack, user["token"], _wav_claiming(0xFFFFFFF0, 90))
    status, body = submit_key(stack, user["token"], key, 60)
    assert status == 202 and body["reserved_minutes"] == 2


def test_a_data_chunk_claiming_less_than_the_file_holds_cannot_hide_audio(stack, new_user):
    user = new_user()
    key = upload(stack, user["token"], _wav_claiming(2000, 600))  # "1 second", 10 minutes of bytes
    status, body = submit_key(stack, user["token"], key, 30)
    assert status == 202 and body["reserved_minutes"] == 10
    run(stack, user["token"], body["job_id"])
    assert sent_end_at(stack) == 600_000


def test_a_wav_header_with_an_inconsistent_byte_rate_is_422(stack, new_user):
    user = new_user()
    wav = bytearray(make_wav(60, sample_rate=1000))
    wav[28:32] = struct.pack("<I", 4_000_000_000)  # "4 GB per second": 60 s would look like nothing
    key = upload(stack, user["token"], bytes(wav))
    status, body = submit_key(stack, user["token"], key, 5)
    assert status == 422 and body["code"] == "invalid_audio"
    assert stack.balance(user["token"]) == 200


@pytest.mark.parametrize("content_type", ["audio/wav", "audio/webm", "audio/mpeg"])
def test_non_audio_bytes_with_an_audio_type_are_422(stack, new_user, content_type):
    user = new_user()
    key = upload(stack, user["token"], b"<html>" + b"not audio at all " * 100, content_type)
    status, body = submit_key(stack, user["token"], key, 5)
    assert status == 422 and body["code"] == "invalid_audio" and body["field"] == "audio_key"
    assert stack.balance(user["token"]) == 200


def test_compressed_audio_is_bounded_by_its_size(stack, new_user):
    """WebM from MediaRecorder carries no duration: 30 000 bytes play at most 60 s at 4 kbit/s."""
    user = new_user()
    webm = b"\x1a\x45\xdf\xa3" + b"\x00" * (30_000 - 4)
    status, body = stack.submit(user["token"], audio=base64.b64encode(webm).decode(), duration_minutes=10)
    assert status == 202 and body["reserved_minutes"] == 1
    stack.assemblyai.default_audio_duration = 600.0  # whatever it really is, it stops at the minute
    try:
        job = run(stack, user["token"], body["job_id"])
    finally:
        stack.assemblyai.default_audio_duration = 60.0
    assert sent_end_at(stack) == 60_000
    assert (job["billed_minutes"], job["credits_used"], job["audio_duration_seconds"]) == (1, PRICE, 60)

