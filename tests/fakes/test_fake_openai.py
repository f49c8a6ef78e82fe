"""OpenAI fake: chat completions (shape, usage, JSON modes, context limit) and transcriptions."""

from __future__ import annotations

import json
from typing import Any, Iterator

import pytest
import requests

from devstack.fakes import OpenAIFake
from devstack.fakes.audio import make_wav

KEY = "test-openai-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def oai() -> Iterator[OpenAIFake]:
    with OpenAIFake() as fake:
        yield fake


def _chat(fake: OpenAIFake, **body: Any) -> requests.Response:
    payload = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "What did the streamer say about the boss?"}]}
    return requests.post(f"{fake.url}/v1/chat/completions", json={**payload, **body}, headers=AUTH, timeout=5)


def test_chat_completion_shape_and_usage(oai: OpenAIFake) -> None:
    body = _chat(oai).json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-") and body["model"] == "gpt-4o-mini"
    (choice,) = body["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant" and "streamer say about the boss" in choice["message"]["content"]
    usage = body["usage"]
    assert usage["prompt_tokens"] > 10 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert oai.requests[0].headers["Authorization"] == f"Bearer {KEY}"


def test_json_modes_return_valid_json(oai: OpenAIFake) -> None:
    transcript = "The boss fight took three tries. Chat spammed emotes. The streamer found a secret room. Then raid."
    messages = [{"role": "system", "content": "Answer in JSON."}, {"role": "user", "content": transcript}]
    content = _chat(oai, messages=messages, response_format={"type": "json_object"}).json()["choices"][0]["message"]["content"]
    summary = json.loads(content)
    assert set(summary) == {"summary", "key_points", "notable_moments"}
    assert summary["key_points"][0].startswith("The boss fight")
    schema = {"type": "object", "properties": {"answer": {"type": "string"}, "score": {"type": "integer"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}
    shaped = json.loads(_chat(oai, response_format=fmt).json()["choices"][0]["message"]["content"])
    assert set(shaped) == {"answer", "score"} and isinstance(shaped["score"], int)


def test_json_object_requires_the_word_json(oai: OpenAIFake) -> None:
    response = _chat(oai, response_format={"type": "json_object"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "messages"


def test_responder_and_truncation(oai: OpenAIFake) -> None:
    oai.responder = lambda body: "x" * 400
    body = _chat(oai, max_completion_tokens=10).json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 10


def test_context_limit(oai: OpenAIFake) -> None:
    oai.context_limit = 50
    response = _chat(oai, messages=[{"role": "user", "content": "word " * 100}])
    error = response.json()["error"]
    assert response.status_code == 400
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", "messages", "context_length_exceeded")
    assert "maximum context length" in error["message"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer sk-wrong-key-1234"}, {"Authorization": KEY}])
def test_auth_errors(oai: OpenAIFake, headers: dict[str, str]) -> None:
    response = requests.post(f"{oai.url}/v1/chat/completions", json={}, headers=headers, timeout=5)
    assert response.status_code == 401
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_bad_chat_requests(oai: OpenAIFake) -> None:
    assert _chat(oai, model="").json()["error"]["param"] == "model"
    assert _chat(oai, messages=[]).status_code == 400


def test_rate_limit_fault(oai: OpenAIFake) -> None:
    oai.fail_next(1, 429, headers={"Retry-After": "2"})
    response = _chat(oai)
    assert response.status_code == 429 and response.headers["Retry-After"] == "2"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert _chat(oai).status_code == 200


def _transcribe(fake: OpenAIFake, data: bytes, filename: str = "clip.wav", **form: str) -> requests.Response:
    return requests.post(
        f"{fake.url}/v1/audio/transcriptions", headers=AUTH, timeout=5,
        files={"file": (filename, data, "audio/wav")}, data={"model": "whisper-1", **form},
    )


def test_transcription_follows_audio_duration(oai: OpenAIFake) -> None:
    body = _transcribe(oai, make_wav(60)).json()
    assert 140 <= len(body["text"].split()) <= 160
    assert body["usage"] == {"type": "duration", "seconds": 60}
    assert oai.requests[0].headers["Content-Type"].startswith("multipart/form-data")
    tokens = _transcribe(oai, make_wav(4), model="gpt-4o-mini-transcribe").json()["usage"]
    assert tokens["type"] == "tokens" and tokens["total_tokens"] > 0
    assert _transcribe(oai, make_wav(4), response_format="text").headers["Content-Type"].startswith("text/plain")
    oai.transcription_text = "fixed"
    assert _transcribe(oai, b"webm", filename="clip.webm").json()["text"] == "fixed"


def test_transcription_errors(oai: OpenAIFake) -> None:
    assert _transcribe(oai, b"x", filename="notes.txt").json()["error"]["param"] == "file"
    missing_model = requests.post(f"{oai.url}/v1/audio/transcriptions", headers=AUTH, timeout=5,
                                  files={"file": ("a.wav", make_wav(1))})
    assert missing_model.status_code == 400 and missing_model.json()["error"]["param"] == "model"


def test_label_canned_marks_answers_summaries_and_transcriptions() -> None:
    with OpenAIFake(label_canned=True) as fake:
        answer = _chat(fake).json()["choices"][0]["message"]["content"]
        messages = [{"role": "system", "content": "Answer in JSON."},
                    {"role": "user", "content": "[sandbox transcript] The boss fell. Chat cheered."}]
        summary = json.loads(_chat(fake, messages=messages, response_format={"type": "json_object"})
                             .json()["choices"][0]["message"]["content"])
        files = {"file": ("clip.wav", make_wav(4), "audio/wav")}
        heard = requests.post(f"{fake.url}/v1/audio/transcriptions", files=files, data={"model": "whisper-1"},
                              headers=AUTH, timeout=5).json()
    assert answer.startswith("[sandbox answer] ") and "streamer say about the boss" in answer
    assert summary["summary"] == "[sandbox summary] The boss fell. Chat cheered."
    assert heard["text"].startswith("[sandbox transcript] ")
    with OpenAIFake() as plain:  # tests' default: no label
        assert not _chat(plain).json()["choices"][0]["message"]["content"].startswith("[")
