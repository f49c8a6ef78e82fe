"""The published extension, unchanged but for its backend URL, in Debian's Chromium.

Tests copy shared/reference/published-extension/ to a temporary folder, point the backend
URL constant of popup.js and background.js at a local stack started as `make run` starts it
(tests/e2e's `start_live_server`, with the session's fake providers), add that URL to
`host_permissions`, and load the copy into Chromium (new headless mode) driven by
Playwright with `executable_path`: no browser is downloaded. Every host but loopback
resolves to nothing (`--host-resolver-rules`), so nothing leaves the machine.

Chromium missing: the suite is skipped locally, and fails with a clear message under
CI=true (`.ci/run` installs it with apt).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.certificates import self_signed_certificate
from tests.conftest import start_live_server, stop_live_server

ROOT = Path(__file__).resolve().parents[2]
# shared/ sits beside the project (`../shared/`); a git worktree may be a level deeper.
PUBLISHED = next(
    (base / "shared" / "reference" / "published-extension" for base in ROOT.parents
     if (base / "shared" / "reference" / "published-extension").is_dir()),
    ROOT.parent / "shared" / "reference" / "published-extension",
)
PUBLISHED_BACKEND = "https://gak2qkt4df.execute-api.us-east-1.amazonaws.com/dev"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
ARTEFACTS = ROOT / "build" / "browser-artefacts"  # git-ignored (build/)
ACCESS_TOKEN_TTL_SECONDS = 5  # short, so the suite can outlive it; the session token lasts 7 days
POPUP_SIZE = {"width": 360, "height": 600}


def chromium_missing_message() -> str:
    return (f"Chromium not found at {CHROMIUM}: install it (`apt-get install -y chromium`) "
            "or set CHROMIUM_PATH; .ci/run installs it")


@pytest.fixture(scope="session")
def chromium() -> str:
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(chromium_missing_message(), pytrace=False)
        pytest.skip(chromium_missing_message())
    if not PUBLISHED.is_dir():
        pytest.fail(f"the published extension is missing: {PUBLISHED}", pytrace=False)
    return CHROMIUM


def unpacked_extension_id(path: Path) -> str:
    """Chromium's id for an unpacked extension without a `key`: the SHA-256 of its absolute
    path, first 32 hex digits written with the letters a-p."""
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:32]
    return "".join(chr(ord("a") + int(c, 16)) for c in digest)


def copy_published_extension(target: Path, backend_url: str) -> Path:
    """The published extension with only its backend URL changed (popup.js, background.js)
    and that URL added to host_permissions."""
    shutil.copytree(PUBLISHED, target)
    for path in target.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)  # the reference copy is read-only
    for name in ("popup.js", "background.js"):
        source = (target / name).read_text()
        constant = f"this.backendUrl = '{PUBLISHED_BACKEND}';"
        assert source.count(constant) == 1, f"{name}: the backend URL constant moved"
        (target / name).write_text(source.replace(constant, f"this.backendUrl = '{backend_url}';"))
    manifest_path = target / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["host_permissions"].append(backend_url + "/*")
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return target


@dataclass
class Stack:
    url: str
    extension_dir: Path
    extension_id: str
    stripe: Any
    assemblyai: Any
    streaming_tls_port: int
    stream_page: str  # a web page playing audio, under a twitch.tv-like path


@pytest.fixture(scope="module")
def stream_page(tmp_path_factory) -> Iterator[str]:
    """A page that plays audio for the extension to capture, at a path containing
    `twitch.tv` (content.js shows its catch-up button only on such pages)."""
    import functools
    import http.server
    import threading

    from devstack.fakes.audio import make_wav

    root = tmp_path_factory.mktemp("site")
    (root / "twitch.tv").mkdir()
    (root / "twitch.tv" / "stream.wav").write_bytes(make_wav(30))
    (root / "twitch.tv" / "sandbox.html").write_text(
        "<!doctype html><title>Sandbox stream</title><h1>Sandbox stream</h1>"
        "<audio src=stream.wav autoplay loop controls></audio>")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/twitch.tv/sandbox.html"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def stack(chromium, aws_endpoint, provider_env, fake_stripe, fake_assemblyai, stream_page) -> Iterator[Stack]:
    """A local stack (`python -m devstack.run`) the extension can use: its origin allowed,
    Stripe's webhooks delivered to it, Checkout landing on the sandbox's own page, and the
    AssemblyAI sandbox's streaming socket also served over TLS, standing in for
    wss://streaming.assemblyai.com."""
    from urllib.parse import urlsplit

    work = Path(tempfile.mkdtemp(prefix="browser-"))
    certfile, keyfile = self_signed_certificate(work)
    streaming_tls = fake_assemblyai.serve_streaming(certfile=certfile, keyfile=keyfile)
    extension_dir = work / "published-extension"
    extension_id = unpacked_extension_id(extension_dir)
    server = start_live_server(
        {
            "AWS_ENDPOINT_URL": aws_endpoint,
            **provider_env,
            "ALLOWED_ORIGINS": f"chrome-extension://{extension_id}",
            "ACCESS_TOKEN_TTL_SECONDS": str(ACCESS_TOKEN_TTL_SECONDS),
            "CHECKOUT_SUCCESS_URL": fake_stripe.url + "/_fake",
            "CHECKOUT_CANCEL_URL": fake_stripe.url + "/_fake",
        },
        str(work / "server.log"),
    )
    previous_webhook = fake_stripe.webhook_url
    fake_stripe.webhook_url = server.url + "/webhooks/stripe"
    try:
        copy_published_extension(extension_dir, server.url)
        yield Stack(server.url, extension_dir, extension_id, fake_stripe, fake_assemblyai,
                    urlsplit(streaming_tls).port, stream_page)
    finally:
        fake_stripe.webhook_url = previous_webhook
        stop_live_server(server)
        shutil.rmtree(work, ignore_errors=True)


def chromium_args(extension_dir: Path, extension_id: str, streaming_tls_port: int | None = None) -> list[str]:
    """Headless Chromium with only this extension, loopback only; with `streaming_tls_port`,
    streaming.assemblyai.com resolves to the sandbox's TLS streaming listener there."""
    if streaming_tls_port is None:
        network = ["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]
    else:
        network = [f"--host-resolver-rules=MAP streaming.assemblyai.com 127.0.0.1:{streaming_tls_port},"
                   " MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                   "--ignore-certificate-errors"]  # the sandbox streaming socket's throwaway certificate
    return [
        "--headless=new",
        f"--load-extension={extension_dir}",
        f"--disable-extensions-except={extension_dir}",
        # tabCapture.getMediaStreamId without the toolbar click a user would make first
        f"--allowlisted-extension-id={extension_id}",
        "--autoplay-policy=no-user-gesture-required",
        *network,
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--no-sandbox",
        "--disable-gpu",
    ]


class Browser:
    """One Chromium profile with the extension loaded, and the helpers the steps share."""

    def __init__(self, context: Any, stack: Stack, artefacts: Path) -> None:
        self.context = context
        self.stack = stack
        self.artefacts = artefacts
        self.popup_url = f"chrome-extension://{stack.extension_id}/popup.html"

    def open_popup(self) -> Any:
        """The action popup's page, opened as a tab (the same document and scripts)."""
        page = self.context.new_page()
        page.set_viewport_size(POPUP_SIZE)
        page.goto(self.popup_url)
        return page

    def screenshot(self, page: Any, name: str) -> Path:
        path = self.artefacts / f"{name}.png"
        page.screenshot(path=str(path))
        return path

    def stop_service_worker(self, page: Any) -> None:
        """What Chrome does to an idle extension worker after 30 s. The published
        background.js reads the login from storage only when it starts, so a login made
        in the popup reaches it at its next start."""
        session = self.context.new_cdp_session(page)
        try:
            session.send("ServiceWorker.enable")
            session.send("ServiceWorker.stopAllWorkers")
        finally:
            session.detach()

    def wake_service_worker_logged_in(self, page: Any, timeout: float = 10) -> None:
        """Restart the extension's worker and wait until it has read the stored login."""
        import time

        self.stop_service_worker(page)
        deadline = time.monotonic() + timeout
        while not (self.send_message(page, {"type": "GET_TRANSCRIPTION_STATUS"}) or {}).get("isLoggedIn"):
            assert time.monotonic() < deadline, "the extension's worker never read the login"
            time.sleep(0.2)

    @staticmethod
    def send_message(page: Any, message: dict[str, Any]) -> Any:
        """chrome.runtime.sendMessage from an extension page: the extension's own path."""
        return page.evaluate("(m) => new Promise(r => chrome.runtime.sendMessage(m, r))", message)


@pytest.fixture(scope="module")
def browser(chromium, stack, request) -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    artefacts = ARTEFACTS / Path(request.node.name).stem
    shutil.rmtree(artefacts, ignore_errors=True)
    artefacts.mkdir(parents=True)
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=chromium,
            headless=False,  # --headless=new below: the real browser, extensions included
            ignore_default_args=["--disable-extensions"],
            args=chromium_args(stack.extension_dir, stack.extension_id, stack.streaming_tls_port),
        )
        try:
            worker = context.service_workers[0] if context.service_workers else \
                context.wait_for_event("serviceworker", timeout=15_000)
            assert worker.url == f"chrome-extension://{stack.extension_id}/background.js", worker.url
            yield Browser(context, stack, artefacts)
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


def text_of(page: Any, selector: str) -> str:
    return re.sub(r"\s+", " ", page.locator(selector).inner_text()).strip()
