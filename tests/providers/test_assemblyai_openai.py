"""AssemblyAI and OpenAI clients against their fakes: what goes on the wire, what comes back."""
from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from chalicelib.core.errors import UpstreamError
from chalicelib.providers import assemblyai, openai
from chalicelib.providers.http import ProviderRejected
from tests.conftest import ASSEMBLYAI_KEY, OPENAI_KEY


def test_mint_streaming_token_sends_the_limits_and_the_raw_key(providers, fake_assemblyai):
    minted = assemblyai.mint_streaming_token(45, 1200)
    info = fake_assemblyai.token_info(minted["token"])
    assert info is not None
    assert (info.expires_in_seconds, info.max_session_duration_seconds) == (45, 1200)
    assert minted["expires_in_seconds"] == 45
    request = fake_assemblyai.requests_to("/v3/token")[-1]
    assert request.headers["Authorization"] == ASSEMBLYAI_KEY  # no "Bearer"


def test_mint_clamps_to_assemblyai_limits(providers, fake_assemblyai):
    minted = assemblyai.mint_streaming_token(5000, 20)
    info = fake_assemblyai.token_info(minted["token"])
    assert (info.expires_in_seconds, info.max_session_duration_seconds) == (600, 60)


@pytest.mark.parametrize(
    "base, expected",
    [
        ("https://streaming.assemblyai.com", "wss://streaming.assemblyai.com/v3/ws"),
        ("http://127.0.0.1:5555", "ws://127.0.0.1:5555/v3/ws"),
        ("https://streaming.eu.assemblyai.com/", "wss://streaming.eu.assemblyai.com/v3/ws"),
    ],
)
def test_websocket_url_follows_the_streaming_base(monkeypatch, base, expected):
    from chalicelib.core.settings import reset_settings

    monkeypatch.setenv("ASSEMBLYAI_STREAMING_API_BASE", base)
    reset_settings()
    try:
        url = assemblyai.websocket_url("tok123", 44100)
    finally:
        monkeypatch.undo()
        reset_settings()
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == expected
    query = parse_qs(parts.query)
    assert query["sample_rate"] == ["44100"] and query["format_turns"] == ["true"]
    assert query["token"] == ["tok123"]
    assert query["speech_model"] == ["universal-streaming-english"]


def test_websocket_url_defaults_to_16khz(providers):
    assert parse_qs(urlsplit(assemblyai.websocket_url("t")).query)["sample_rate"] == ["16000"]


def test_submit_and_get_transcript(providers, fake_assemblyai):
    from devstack.fakes.audio import make_wav

    upload = fake_assemblyai.url + "/v2/upload"
    import requests

    audio_url = requests.post(
        upload, data=make_wav(3.0), headers={"Authorization": ASSEMBLYAI_KEY}, timeout=5
    ).json()["upload_url"]
    queued = assemblyai.submit_transcript(audio_url, speech_models=["universal-2"])
    assert queued["status"] == "queued"
    sent = fake_assemblyai.requests_to("/v2/transcript", "POST")[-1].json()
    assert sent == {"audio_url": audio_url, "speech_models": ["universal-2"]}
    statuses = [assemblyai.get_transcript(queued["id"])["status"] for _ in range(3)]
    assert statuses[-1] == "completed"
    assert assemblyai.get_transcript(queued["id"])["text"]


def test_unknown_transcript_is_a_rejection_with_status_404(providers):
    with pytest.raises(ProviderRejected) as caught:
        assemblyai.get_transcript("does-not-exist")
    assert caught.value.provider_status == 404


def test_chat_returns_content_and_usage(providers, fake_openai):
    result = openai.chat(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is up?"}],
        max_completion_tokens=64,
    )
    assert result.content and result.model == "gpt-4o-mini"
    assert result.prompt_tokens > 0 and result.completion_tokens > 0
    request = fake_openai.requests_to("/v1/chat/completions")[-1]
    assert request.headers["Authorization"] == f"Bearer {OPENAI_KEY}"
    assert request.json()["max_completion_tokens"] == 64


def test_chat_with_json_response_format(providers):
    result = openai.chat(
        [{"role": "user", "content": "Summarise as json: it rained. Then it stopped."}],
        max_completion_tokens=200,
        response_format={"type": "json_object"},
    )
    assert result.content.startswith("{")


def test_empty_answer_is_an_upstream_failure(providers, fake_openai):
    previous = fake_openai.responder
    fake_openai.responder = lambda body: ""
    try:
        with pytest.raises(UpstreamError) as caught:
            openai.chat([{"role": "user", "content": "hi"}], max_completion_tokens=10)
    finally:
        fake_openai.responder = previous
    assert caught.value.code == "upstream_bad_response"
