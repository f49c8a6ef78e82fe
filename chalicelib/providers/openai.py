"""OpenAI chat completions (Ask, and the catch-up summary).

Returns the answer with the token counts OpenAI reports, so the caller can record the
provider cost next to the credits it charged.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from chalicelib.providers.http import ProviderClient, require
from chalicelib.core.settings import get_settings

if TYPE_CHECKING:
    import requests


def _quota_exhausted(response: "requests.Response") -> bool:
    """OpenAI answers 429 `insufficient_quota` when our account is out of money: not transient."""
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        return False
    return isinstance(error, dict) and error.get("code") == "insufficient_quota"


client = ProviderClient("openai", "OpenAI", "OPENAI_API_KEY", quota_exhausted=_quota_exhausted)


@dataclass(frozen=True)
class ChatResult:
    content: str
    prompt_tokens: int
    completion_tokens: int
    model: str
    finish_reason: str = "stop"


def _count(usage: Any, name: str) -> int:
    value = usage.get(name) if isinstance(usage, dict) else None
    return value if isinstance(value, int) and value >= 0 else 0


def chat(
    messages: Sequence[Mapping[str, str]],
    *,
    max_completion_tokens: int,
    response_format: Mapping[str, Any] | None = None,
    model: str | None = None,
) -> ChatResult:
    """One chat completion; raises UpstreamError/ServiceUnavailable on any failure.

    An empty answer (a refusal, a content filter) is an upstream failure too: the caller
    must not charge for it.
    """
    settings = get_settings()
    payload: dict[str, Any] = {
        "model": model or settings.openai_model,
        "messages": [dict(m) for m in messages],
        "max_completion_tokens": max_completion_tokens,
    }
    if response_format is not None:
        payload["response_format"] = dict(response_format)
    body = client.request(
        "POST",
        settings.openai_api_base.rstrip("/") + "/chat/completions",
        headers={"Authorization": "Bearer " + require(settings.openai_api_key, "OPENAI_API_KEY")},
        json=payload,
        read_timeout=settings.openai_read_timeout_seconds,
    )
    choices = body.get("choices") if isinstance(body, dict) else None
    first = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = first.get("message") if isinstance(first.get("message"), dict) else {}
    content = message.get("content")
    if not isinstance(content, str) or not content.strip():
        raise client.bad_response("choices[0].message.content")
    usage = body.get("usage")
    return ChatResult(
        content=content,
        prompt_tokens=_count(usage, "prompt_tokens"),
        completion_tokens=_count(usage, "completion_tokens"),
        model=str(body.get("model") or payload["model"]),
        finish_reason=str(first.get("finish_reason") or "stop"),
    )
