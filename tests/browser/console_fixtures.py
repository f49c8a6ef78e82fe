"""Fixtures for the operator console in Debian's Chromium (Playwright with executable_path:
no browser is downloaded). Kept apart from tests/browser/conftest.py (the published
extension's harness) so the two can be folded together later.

The console is opened through a small reverse proxy that adds a stage prefix (`/api`), as
API Gateway's URL does, so the test proves the page works from such a URL.
"""
from __future__ import annotations

import http.client
import http.server
import os
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
STAGE_PREFIX = "/api"
ARTEFACTS = ROOT / "build" / "browser-artefacts" / "console"  # git-ignored (build/)
DOCS_SCREENSHOTS = ROOT / "docs" / "console"  # refreshed with UPDATE_SCREENSHOTS=1
VIEWPORT = {"width": 1100, "height": 760}


@pytest.fixture(scope="session")
def chromium_path() -> str:
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        message = f"Chromium not found at {CHROMIUM}: `apt-get install -y chromium` or set CHROMIUM_PATH"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return CHROMIUM


class _PrefixProxy(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        super().__init__(("127.0.0.1", 0), _ProxyHandler)


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    """`/api/<path>` -> the local stack's `/<path>`; anything else is API Gateway's 403."""

    def _forward(self) -> None:
        if not self.path.startswith(STAGE_PREFIX + "/"):
            self.send_response(403)
            self.end_headers()
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        upstream = http.client.HTTPConnection("127.0.0.1", self.server.upstream_port, timeout=30)  # type: ignore[attr-defined]
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        upstream.request(self.command, self.path[len(STAGE_PREFIX):], body=body, headers=headers)
        response = upstream.getresponse()
        data = response.read()
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except BrokenPipeError:
            pass  # the browser went away (navigation): nothing to deliver
        upstream.close()

    do_GET = do_POST = do_PUT = do_DELETE = do_OPTIONS = _forward

    def log_message(self, *args: Any) -> None:  # quiet
        pass


@pytest.fixture(scope="module")
def stage_url(live_server) -> Iterator[str]:
    """The local stack behind a stage prefix: `http://127.0.0.1:<port>/api`."""
    port = int(live_server.url.rsplit(":", 1)[1])
    proxy = _PrefixProxy(port)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{proxy.server_address[1]}{STAGE_PREFIX}"
    proxy.shutdown()
    proxy.server_close()


@pytest.fixture(scope="module")
def console_page(chromium_path) -> Iterator[Any]:
    """A fresh Chromium page; console errors and CSP violations are collected on it."""
    from playwright.sync_api import sync_playwright

    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"],
        )
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.problems = []  # type: ignore[attr-defined]
            page.on("console", lambda message: message.type in ("error", "warning")
                    and page.problems.append(message.text))  # type: ignore[attr-defined]
            page.on("pageerror", lambda error: page.problems.append(str(error)))  # type: ignore[attr-defined]
            yield page
        finally:
            browser.close()


def screenshot(page: Any, name: str) -> None:
    """Into build/ always; into docs/console/ when UPDATE_SCREENSHOTS=1 (the docs' pictures)."""
    page.screenshot(path=str(ARTEFACTS / f"{name}.png"))
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(DOCS_SCREENSHOTS / f"{name}.png"))
