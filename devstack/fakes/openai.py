"""Fake OpenAI: chat completions and audio transcriptions under `/v1`.

Our settings' OpenAI base includes `/v1` (as the real `https://api.openai.com/v1`
does), so set it to `<fake.url>/v1`. Auth is `Authorization: Bearer <key>`;
errors are `{"error": {"message", "type", "param", "code"}}`. Token counts are
estimated (~4 characters per token) so cost accounting has realistic inputs,
and the context window is enforced like the real API.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any, Callable

from werkzeug.wrappers import Request, Response

from .audio import CANNED_TRANSCRIPT, speech_text, wav_duration_seconds
from .base import FakeError, FakeServer, Rule, bearer_token, json_response, keys_match, random_id, read_json

Responder = Callable[[dict[str, Any]], str]
"""Given the chat request body, return the assistant message content."""

AUDIO_EXTENSIONS = ("flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm")
MAX_UPLOAD_BYTES = 25 * 1024 * 1024
_ERROR_TYPES = {429: "requests", 500: "server_error", 502: "server_error", 503: "server_error"}


CANNED_ANSWER, CANNED_SUMMARY = "[sandbox answer]", "[sandbox summary]"


def estimate_tokens(text: str) -> int:
    """About one token per four characters, never zero for non-empty text."""
    return (len(text) + 3) // 4


class OpenAIFake(FakeServer):
    """Fake of `POST /v1/chat/completions` and `POST /v1/audio/transcriptions`.

    `responder` decides the answer text (default: a JSON summary when
    `response_format` asks for JSON, else a reply quoting the user's message);
    `context_limit` is the model window in estimated tokens;
    `transcription_text` fixes the transcription (default: text sized to the
    WAV duration, or to `default_audio_duration` seconds for other formats).
    `label_canned` makes the made-up texts say so (`make run`'s sandbox): answers
    start with "[sandbox answer]", summaries with "[sandbox summary]" and
    transcriptions with "[sandbox transcript]".
    """

    provider = "openai"

    def __init__(
        self,
        api_key: str = "test-openai-key",
        *,
        port: int = 0,
        responder: Responder | None = None,
        context_limit: int = 128_000,
        transcription_text: str | None = None,
        default_audio_duration: float = 60.0,
        label_canned: bool = False,
    ) -> None:
        self.api_key = api_key
        self.label_canned = label_canned
        self.responder = responder
        self.context_limit = context_limit
        self.transcription_text = transcription_text
        self.default_audio_duration = default_audio_duration
        super().__init__(port=port)

    def routes(self) -> list[Rule]:
        return [
            Rule("/v1/chat/completions", methods=["POST"], endpoint="chat_completions"),
            Rule("/v1/audio/transcriptions", methods=["POST"], endpoint="transcriptions"),
        ]

    def authenticate(self, request: Request) -> None:
        token = bearer_token(request)
        if token is None:
            raise FakeError(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        if not keys_match(token, self.api_key):
            raise FakeError(
                401,
                f"Incorrect API key provided: {token[:3]}****{token[-4:]}. You can find your "
                "API key at https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )

    def error_response(self, status: int, message: str, **extra: Any) -> Response:
        error = {
            "message": message,
            "type": extra.get("type", _ERROR_TYPES.get(status, "invalid_request_error")),
            "param": extra.get("param"),
            "code": extra.get("code", "rate_limit_exceeded" if status == 429 else None),
        }
        return json_response({"error": error}, status)

    def decorate(self, request: Request, response: Response) -> None:
        response.headers.setdefault("x-request-id", random_id("req_", 32))
        response.headers.setdefault("openai-processing-ms", "12")
        response.headers.setdefault("x-ratelimit-limit-requests", "10000")
        response.headers.setdefault("x-ratelimit-remaining-requests", "9999")
        response.headers.setdefault("x-ratelimit-reset-requests", "6ms")

    # ----- chat ---------------------------------------------------------------------------

    def chat_completions(self, request: Request) -> dict[str, Any]:
        body = read_json(request)
        if not isinstance(body, dict):
            raise FakeError(400, "Request body must be a JSON object.")
        model = body.get("model")
        if not model:
            raise FakeError(400, "you must provide a model parameter", param="model")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise FakeError(400, "'messages' must be a non-empty array.", param="messages")
        texts = [_content_text(m) for m in messages]
        fmt = (body.get("response_format") or {}).get("type", "text")
        if fmt == "json_object" and not any("json" in t.lower() for t in texts):
            raise FakeError(
                400,
                "'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'.",
                param="messages",
            )
        prompt_tokens = sum(estimate_tokens(t) + 4 for t in texts) + 3
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if prompt_tokens + (limit or 0) > self.context_limit:
            raise FakeError(
                400,
                f"This model's maximum context length is {self.context_limit} tokens. However, you "
                f"requested {prompt_tokens + (limit or 0)} tokens ({prompt_tokens} in the messages, "
                f"{limit or 0} in the completion). Please reduce the length of the messages or completion.",
                param="messages",
                code="context_length_exceeded",
            )
        content = self.responder(body) if self.responder else default_responder(body, self.label_canned)
        finish_reason = "stop"
        if limit and estimate_tokens(content) > int(limit):
            content, finish_reason = content[: int(limit) * 4], "length"
        completion_tokens = estimate_tokens(content)
        return {
            "id": random_id("chatcmpl-", 29),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": None},
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
            "system_fingerprint": "fp_fake",
        }

    # ----- audio --------------------------------------------------------------------------

    def transcriptions(self, request: Request) -> Response | dict[str, Any]:
        if request.content_length and request.content_length > MAX_UPLOAD_BYTES:
            raise FakeError(413, f"Maximum content size limit ({MAX_UPLOAD_BYTES}) exceeded.")
        upload = request.files.get("file")
        if upload is None:
            raise FakeError(400, "Missing required parameter: 'file'.", param="file")
        model = request.form.get("model")
        if not model:
            raise FakeError(400, "Missing required parameter: 'model'.", param="model")
        extension = (upload.filename or "").rsplit(".", 1)[-1].lower()
        if extension not in AUDIO_EXTENSIONS:
            raise FakeError(400, f"Invalid file format. Supported formats: {list(AUDIO_EXTENSIONS)}", param="file")
        data = upload.read()
        duration = wav_duration_seconds(data)
        if duration is None:
            duration = self.default_audio_duration
        text = self.transcription_text if self.transcription_text is not None else speech_text(duration)
        if self.label_canned and text:
            text = f"{CANNED_TRANSCRIPT} {text}"
        response_format = request.form.get("response_format", "json")
        if response_format == "text":
            return Response(text + "\n", content_type="text/plain; charset=utf-8")
        if response_format == "verbose_json":
            return {"task": "transcribe", "language": request.form.get("language", "english"),
                    "duration": duration, "text": text, "segments": []}
        if response_format != "json":
            raise FakeError(400, f"The fake does not support response_format={response_format!r}.",
                            param="response_format")
        if model == "whisper-1":
            usage: dict[str, Any] = {"type": "duration", "seconds": round(duration)}
        else:
            out = estimate_tokens(text)
            audio_tokens = round(duration * 10)
            usage = {"type": "tokens", "input_tokens": audio_tokens, "output_tokens": out,
                     "total_tokens": audio_tokens + out,
                     "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens}}
        return {"text": text, "usage": usage}


def _content_text(message: Any) -> str:
    """The text of a message whose content is a string or a list of parts."""
    if not isinstance(message, dict):
        raise FakeError(400, "Each message must be an object.", param="messages")
    content = message.get("content")
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def default_responder(body: dict[str, Any], label_canned: bool = False) -> str:
    """Deterministic answer: JSON summary for JSON formats, else a quoting reply;
    `label_canned` starts the reply (or the summary) with a label that says it is made up."""
    users = [_content_text(m) for m in body["messages"] if isinstance(m, dict) and m.get("role") == "user"]
    text = users[-1] if users else _content_text(body["messages"][-1])
    if label_canned:  # one label per answer, not the transcript's labels quoted back
        text = text.replace(CANNED_TRANSCRIPT + " ", "")
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema") or {}
        if schema.get("properties") and not set(schema["properties"]) <= set(summary_json("")):
            return json.dumps(_sample(schema, text))
    if fmt.get("type") in ("json_object", "json_schema"):
        summary = summary_json(text)
        if label_canned:
            summary["summary"] = f"{CANNED_SUMMARY} {summary['summary']}"
        return json.dumps(summary)
    quote = " ".join(text.split()[:30])
    answer = f'Based on what was said ("{quote}"), here is the answer you asked for.'
    return f"{CANNED_ANSWER} {answer}" if label_canned else answer


def summary_json(text: str) -> dict[str, Any]:
    """The catch-up summary shape our prompts ask for, derived from the input."""
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", " ".join(text.split())) if s.strip()]
    return {
        "summary": " ".join(sentences[:2])[:400] or "Nothing much happened.",
        "key_points": [s[:160] for s in sentences[:3]] or ["No key points."],
        "notable_moments": [s[:160] for s in sentences[3:5]],
    }


def _sample(schema: dict[str, Any], text: str) -> Any:
    """A value that satisfies a simple JSON schema, filled from the input text."""
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        return {name: _sample(sub, text) for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return [_sample(schema.get("items", {"type": "string"}), text) for _ in range(2)]
    if "enum" in schema:
        return schema["enum"][0]
    if kind in ("integer", "number"):
        return 1
    if kind == "boolean":
        return True
    return " ".join(text.split()[:20]) or "n/a"
