"""Helpers for the end-to-end tests: plain HTTP (requests) against the real local server."""
from __future__ import annotations

from typing import Any

import pytest
import requests

from tests.conftest import json_headers


class Api:
    """A thin client for the live server: every call is a real HTTP request."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.session = requests.Session()

    def call(self, method: str, path: str, body: Any = None, token: str | None = None,
             origin: str | None = None, headers: dict[str, str] | None = None,
             raw: bytes | None = None) -> requests.Response:
        all_headers = {**json_headers(token, origin=origin), **(headers or {})}
        kwargs: dict[str, Any] = {"headers": all_headers, "timeout": 30}
        if raw is not None:
            kwargs["data"] = raw
        elif body is not None:
            kwargs["json"] = body
        return self.session.request(method, self.base_url + path, **kwargs)


@pytest.fixture(scope="session")
def api(live_server) -> Api:
    return Api(live_server.url)
