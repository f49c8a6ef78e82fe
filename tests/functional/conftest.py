"""Helpers for the functional tests: one call() over chalice.test.Client, envelope checks."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import json_headers

# Text that would mean an exception or a stack trace leaked into a response.
LEAK_MARKERS = ("Traceback", 'File "', "botocore", "Exception", ".py")


@dataclass
class Result:
    status: int
    headers: dict[str, str]
    raw: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.raw) if self.raw else None

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None

    def cors_headers(self) -> dict[str, str]:
        return {k: v for k, v in self.headers.items() if k.lower().startswith("access-control-")}


def assert_envelope(result: Result, status: int | None = None, code: str | None = None) -> dict:
    """The one error shape: readable `error` and `message` strings, a machine `code`."""
    if status is not None:
        assert result.status == status, (result.status, result.raw)
    body = result.json
    assert isinstance(body, dict), result.raw
    assert isinstance(body.get("error"), str) and body["error"].strip(), body
    assert isinstance(body.get("message"), str) and body["message"].strip(), body
    assert isinstance(body.get("code"), str) and body["code"], body
    if code is not None:
        assert body["code"] == code, body
    text = result.raw.decode("utf-8", "replace")
    for marker in LEAK_MARKERS:
        assert marker not in text, f"{marker!r} in {text}"
    return body


@pytest.fixture
def call(client):
    """call(method, path, body=..., token=..., origin=..., headers=...) -> Result."""

    def send(method: str, path: str, body: Any = None, token: str | None = None,
             origin: str | None = None, headers: dict[str, str] | None = None,
             raw: bytes | str | None = None) -> Result:
        all_headers = {**json_headers(token, origin=origin), **(headers or {})}
        payload = raw if raw is not None else (json.dumps(body) if body is not None else None)
        kwargs = {"headers": all_headers}
        if payload is not None:
            kwargs["body"] = payload
        response = getattr(client.http, method.lower())(path, **kwargs)
        return Result(response.status_code, dict(response.headers), response.body or b"")

    return send
