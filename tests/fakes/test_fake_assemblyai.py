"""AssemblyAI fake: token minting, upload, transcript lifecycle, errors."""

from __future__ import annotations

from typing import Any, Iterator

import pytest
import requests
from werkzeug.wrappers import Response

from devstack.fakes import AssemblyAIFake
from devstack.fakes.audio import make_wav
from devstack.fakes.base import FakeServer, Rule

KEY = "test-assemblyai-key"
AUTH = {"Authorization": KEY}


class AudioHost(FakeServer):
    """Stands in for a presigned S3 URL: serves bytes, or 403 for /expired."""

    provider = "s3"
    public_endpoints = frozenset({"audio"})

    def __init__(self, data: bytes) -> None:
        self.data = data
        super().__init__()

    def routes(self) -> list[Rule]:
        return [Rule("/bucket/<name>", methods=["GET"], endpoint="audio")]

    def audio(self, request: Any, name: str) -> Response:
        return Response(self.data if name != "expired" else b"AccessDenied", 200 if name != "expired" else 403)


@pytest.fixture
def aai() -> Iterator[AssemblyAIFake]:
    with AssemblyAIFake() as fake:
        yield fake


def _create(fake: AssemblyAIFake, audio_url: str, **params: Any) -> dict[str, Any]:
    response = requests.post(f"{fake.url}/v2/transcript", json={"audio_url": audio_url, **params}, headers=AUTH, timeout=5)
    assert response.status_code == 200, response.text
    return response.json()


def _poll(fake: AssemblyAIFake, transcript_id: str) -> dict[str, Any]:
    return requests.get(f"{fake.url}/v2/transcript/{transcript_id}", headers=AUTH, timeout=15).json()


def test_token_is_minted_and_recorded(aai: AssemblyAIFake) -> None:
    response = requests.get(
        f"{aai.url}/v3/token", params={"expires_in_seconds": 60, "max_session_duration_seconds": 900}, headers=AUTH, timeout=5
    )
    body = response.json()
    assert response.status_code == 200 and body["expires_in_seconds"] == 60 and body["token"]
    info = aai.token_info(body["token"])
    assert info is not None and info.max_session_duration_seconds == 900 and info.expires_in_seconds == 60
    default = requests.get(f"{aai.url}/v3/token", params={"expires_in_seconds": 1}, headers=AUTH, timeout=5).json()
    assert aai.tokens[default["token"]].max_session_duration_seconds == 10800
    assert aai.requests[0].headers["Authorization"] == KEY


@pytest.mark.parametrize(
    "params",
    [{}, {"expires_in_seconds": 0}, {"expires_in_seconds": 601}, {"expires_in_seconds": "x"},
     {"expires_in_seconds": 60, "max_session_duration_seconds": 59},
     {"expires_in_seconds": 60, "max_session_duration_seconds": 10801}],
)
def test_token_parameters_are_range_checked(aai: AssemblyAIFake, params: dict[str, Any]) -> None:
    response = requests.get(f"{aai.url}/v3/token", params=params, headers=AUTH, timeout=5)
    assert response.status_code == 400 and isinstance(response.json()["error"], str)
    assert aai.tokens == {}


@pytest.mark.parametrize("header", [None, f"Bearer {KEY}", "wrong-key"])
def test_auth_is_the_raw_key(aai: AssemblyAIFake, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    response = requests.get(f"{aai.url}/v3/token", params={"expires_in_seconds": 60}, headers=headers, timeout=5)
    assert response.status_code == 401
    assert response.json() == {"error": "Authentication error, API token missing/invalid"}


def test_uploaded_wav_is_transcribed_over_successive_polls(aai: AssemblyAIFake) -> None:
    upload = requests.post(f"{aai.url}/v2/upload", data=make_wav(120), headers=AUTH, timeout=5).json()
    created = _create(aai, upload["upload_url"], speech_models=["universal-2"], language_code="en_us")
    assert created["status"] == "queued" and created["audio_url"] == upload["upload_url"]
    assert _poll(aai, created["id"])["status"] == "processing"
    done = _poll(aai, created["id"])
    assert done["status"] == "completed" and "error" not in done
    assert done["audio_duration"] == 120 and isinstance(done["audio_duration"], int)
    assert 280 <= len(done["text"].split()) <= 320  # ~150 words per minute
    assert {"text", "start", "end", "confidence", "speaker"} <= set(done["words"][0])
    assert done["words"][-1]["end"] <= 120_000
    assert aai.requests_to("/v2/transcript", "POST")[0].json()["speech_models"] == ["universal-2"]
    assert _poll(aai, created["id"]) == done  # stays completed


def test_only_the_part_between_audio_start_from_and_audio_end_at_is_transcribed(aai: AssemblyAIFake) -> None:
    aai.polls_before_completion = 0
    upload = requests.post(f"{aai.url}/v2/upload", data=make_wav(600, sample_rate=1000), headers=AUTH,
                           timeout=5).json()["upload_url"]
    head = _poll(aai, _create(aai, upload, audio_end_at=60_000)["id"])
    assert head["audio_duration"] == 60 and head["audio_end_at"] == 60_000
    assert 140 <= len(head["text"].split()) <= 160 and head["words"][-1]["end"] <= 60_000
    middle = _poll(aai, _create(aai, upload, audio_start_from=120_000, audio_end_at=150_000)["id"])
    assert middle["audio_duration"] == 30
    assert 120_000 <= middle["words"][0]["start"] and middle["words"][-1]["end"] <= 150_000
    past_the_end = _poll(aai, _create(aai, upload, audio_end_at=3_600_000)["id"])
    assert past_the_end["audio_duration"] == 600


@pytest.mark.parametrize("params", [{"audio_end_at": -1}, {"audio_end_at": 1.5}, {"audio_end_at": True},
                                    {"audio_start_from": 5000, "audio_end_at": 5000}])
def test_bad_audio_bounds_are_refused(aai: AssemblyAIFake, params: dict[str, Any]) -> None:
    response = requests.post(f"{aai.url}/v2/transcript", json={"audio_url": "https://x/a.wav", **params},
                             headers=AUTH, timeout=5)
    assert response.status_code == 400 and isinstance(response.json()["error"], str)


def test_presigned_url_is_fetched_and_non_wav_uses_the_default_duration() -> None:
    with AssemblyAIFake(polls_before_completion=0, default_audio_duration=30) as aai, \
            AudioHost(make_wav(5)) as wav_host, AudioHost(b"\x1aE\xdf\xa3webm-bytes") as webm_host:
        wav = _poll(aai, _create(aai, f"{wav_host.url}/bucket/a.wav")["id"])
        webm = _poll(aai, _create(aai, f"{webm_host.url}/bucket/a.webm")["id"])
        assert (wav["status"], wav["audio_duration"]) == ("completed", 5)
        assert (webm["status"], webm["audio_duration"]) == ("completed", 30)
        assert wav_host.requests_to("/bucket/a.wav", "GET")


def test_failed_download_ends_in_error() -> None:
    with AssemblyAIFake() as aai, AudioHost(b"") as host:
        for url in (f"{host.url}/bucket/expired", "http://127.0.0.1:9/nothing-listens-here"):
            failed = _poll(aai, _create(aai, url)["id"])
            assert failed["status"] == "error" and failed["error"].startswith("Download error")
            assert failed["text"] is None


def test_configurable_outcomes_and_text() -> None:
    with AssemblyAIFake(polls_before_completion=0) as aai:
        upload_url = requests.post(f"{aai.url}/v2/upload", data=make_wav(2), headers=AUTH, timeout=5).json()["upload_url"]
        aai.text = "Exactly this."
        assert _poll(aai, _create(aai, upload_url)["id"])["text"] == "Exactly this."
        aai.outcome, aai.error_message = "error", "Transcoding failed."
        assert _poll(aai, _create(aai, upload_url)["id"])["error"] == "Transcoding failed."
        aai.outcome = "never"
        stuck = _create(aai, upload_url)["id"]
        assert {_poll(aai, stuck)["status"] for _ in range(5)} == {"processing"}


@pytest.mark.parametrize(
    "body",
    [{}, {"audio_url": 3}, {"audio_url": "http://x", "surprise": True},
     {"audio_url": "http://x", "speech_models": "universal-2"}, {"audio_url": "http://x", "speech_models": ["gpt-9"]}],
)
def test_bad_transcript_requests_are_rejected(aai: AssemblyAIFake, body: dict[str, Any]) -> None:
    response = requests.post(f"{aai.url}/v2/transcript", json=body, headers=AUTH, timeout=5)
    assert response.status_code == 400 and isinstance(response.json()["error"], str)


def test_unknown_transcript_and_injected_faults(aai: AssemblyAIFake) -> None:
    missing = requests.get(f"{aai.url}/v2/transcript/nope", headers=AUTH, timeout=5)
    assert missing.status_code == 404 and "error" in missing.json()
    aai.fail_next(1, 429, headers={"Retry-After": "1"}, path_prefix="/v3/token")
    limited = requests.get(f"{aai.url}/v3/token", params={"expires_in_seconds": 60}, headers=AUTH, timeout=5)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "1" and "error" in limited.json()
    assert requests.get(f"{aai.url}/v3/token", params={"expires_in_seconds": 60}, headers=AUTH, timeout=5).ok


def test_label_canned_marks_the_made_up_transcript() -> None:
    """`make run`'s sandbox: the transcript says it is made up; its length still follows the audio."""
    with AssemblyAIFake(label_canned=True, polls_before_completion=0) as fake:
        upload = requests.post(f"{fake.url}/v2/upload", data=make_wav(60), headers=AUTH, timeout=5).json()
        done = _poll(fake, _create(fake, upload["upload_url"])["id"])
    assert done["status"] == "completed" and done["audio_duration"] == 60
    assert done["text"].startswith("[sandbox transcript] Welcome back everyone")
    assert 145 <= len(done["text"].split()) <= 160
