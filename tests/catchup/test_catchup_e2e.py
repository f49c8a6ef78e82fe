"""Catch-up end to end over HTTP against the real local server (`make run`'s runner).

The extension's flow: ask for an upload URL, PUT the audio to S3, submit the job, poll it.
The worker runs inside the server, fed by the embedded SQS queue; AssemblyAI, OpenAI and
Twitch are the fakes, and the fake AssemblyAI really downloads the audio from the
presigned URL and reads the WAV's duration.
"""
from __future__ import annotations

import base64
import time

import pytest
import requests

from devstack.fakes.audio import make_wav
from tests.conftest import register_over_http

pytestmark = pytest.mark.e2e


def register(base: str) -> tuple[dict[str, str], str]:
    body = register_over_http(base, "catchup", name="E2E")
    return {"Authorization": f"Bearer {body['token']}"}, body["user"]["user_id"]


def wait_for(base: str, headers: dict[str, str], job_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = requests.get(f"{base}/transcription/catchup/{job_id}", headers=headers, timeout=10)
        assert response.status_code == 200, response.text
        job = response.json()
        if job["status"] in ("completed", "failed"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish in {timeout}s")


def test_ten_minute_clip_uploaded_submitted_and_polled(live_server, fake_twitch, fake_assemblyai):
    base = live_server.url
    fake_twitch.add_channel("e2ecatchup", live=True, title="Marathon day 3", game_name="Chess")
    headers, user_id = register(base)
    audio = make_wav(600, sample_rate=8000)  # 10 minutes, 9.6 MB

    upload = requests.post(base + "/transcription/catchup/upload", headers=headers, timeout=10,
                           json={"content_type": "audio/wav", "file_size": len(audio)})
    assert upload.status_code == 200, upload.text
    upload = upload.json()
    assert upload["audio_key"].startswith(f"uploads/{user_id}/")
    put = requests.put(upload["upload_url"], data=audio, headers=upload["headers"], timeout=30)
    assert put.status_code == 200, put.text

    started = time.monotonic()
    submitted = requests.post(base + "/transcription/catchup", headers=headers, timeout=10, json={
        "stream_url": "https://www.twitch.tv/e2ecatchup",
        "duration_minutes": 10,
        "audio_key": upload["audio_key"],
    })
    accepted_after = time.monotonic() - started
    assert submitted.status_code == 202, submitted.text
    body = submitted.json()
    assert body["status"] == "queued" and body["credits_reserved"] == 100
    job = wait_for(base, headers, body["job_id"])
    elapsed = time.monotonic() - started
    print(f"\ncatch-up of a 10-minute clip: accepted in {accepted_after:.2f}s, "
          f"completed {elapsed:.2f}s after submit")

    assert job["status"] == "completed", job
    assert job["credits_used"] == 100 and job["audio_duration_seconds"] == 600
    result = job["result"]
    assert result["summary"] and result["key_points"]
    assert len(result["transcript"].split()) > 1000  # ~150 words a minute
    assert result["stream"]["channel"] == "e2ecatchup"
    assert result["stream"]["title"] == "Marathon day 3" and result["stream"]["game"] == "Chess"
    assert elapsed < 30

    fetched = [r for r in fake_assemblyai.requests_to("/v2/transcript", "POST")
               if upload["audio_key"] in r.json()["audio_url"]]
    assert len(fetched) == 1  # handed the presigned GET of exactly this object

    balance = requests.get(base + "/auth/user", headers=headers, timeout=10).json()["user"]["credits_balance"]
    assert balance == 100
    history = requests.get(base + "/transcription/history", headers=headers, timeout=10).json()
    assert [(i["id"], i["kind"], i["credits_used"]) for i in history["items"]] == [
        (body["job_id"], "catchup", 100)
    ]

    other, _ = register(base)
    theirs = requests.get(f"{base}/transcription/catchup/{body['job_id']}", headers=other, timeout=10)
    assert theirs.status_code == 404


def test_inline_clip_charges_only_the_real_minutes(live_server):
    base = live_server.url
    headers, _ = register(base)
    audio = base64.b64encode(make_wav(90, sample_rate=2000)).decode()
    submitted = requests.post(base + "/transcription/catchup", headers=headers, timeout=10, json={
        "channel": "nobody_here_123", "duration_minutes": 5, "audio": audio,
    })
    assert submitted.status_code == 202, submitted.text
    job = wait_for(base, headers, submitted.json()["job_id"])
    assert job["status"] == "completed", job
    # 1.5 min of audio: 2 minutes reserved (not the 5 asked for), transcribed and billed
    assert (job["credits_reserved"], job["credits_used"], job["credits_refunded"]) == (20, 20, 0)
    assert job["result"]["stream"] == {"channel": "nobody_here_123", "title": None,
                                       "game": None, "started_at": None}


def test_a_600_second_upload_submitted_as_one_minute_is_transcribed_and_billed_as_one(
        live_server, fake_assemblyai):
    """The issue's black-box reproduction: it used to transcribe 600 s and bill 1 minute."""
    base = live_server.url
    headers, _ = register(base)
    audio = make_wav(600, sample_rate=1000)
    upload = requests.post(base + "/transcription/catchup/upload", headers=headers, timeout=10,
                           json={"content_type": "audio/wav", "file_size": len(audio)}).json()
    assert requests.put(upload["upload_url"], data=audio, headers=upload["headers"], timeout=30).ok
    submitted = requests.post(base + "/transcription/catchup", headers=headers, timeout=10, json={
        "channel": "nobody_here_123", "duration_minutes": 1, "audio_key": upload["audio_key"],
    })
    assert submitted.status_code == 202, submitted.text
    job = wait_for(base, headers, submitted.json()["job_id"])
    assert job["status"] == "completed", job
    assert job["audio_duration_seconds"] <= 60 * job["billed_minutes"]
    assert (job["billed_minutes"], job["credits_used"]) == (1, 10)
    [sent] = [r.json() for r in fake_assemblyai.requests_to("/v2/transcript", "POST")
              if upload["audio_key"] in r.json()["audio_url"]]
    assert sent["audio_end_at"] == 60_000
