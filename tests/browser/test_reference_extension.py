"""The reference extension (clients/reference-extension, built only on the client kit) in
Chromium against the local stack: create an account, buy a pack and pay on the sandbox
Checkout, caption a tab playing audio through the sandbox's AssemblyAI socket while the
one-minute test tokens renew at least twice, ask during the session, stop, and catch up.

It reuses tests/browser's harness (Debian's Chromium driven by Playwright, loopback only).
Tab capture needs the extension to be invoked on the tab (a click on its icon), which a
test cannot do; `--allowlisted-extension-id` gives the extension that permission instead.
Screenshots: build/browser-artefacts/test_reference_extension/; with DOCS_SCREENSHOTS=1 the
ones that document the reference extension are also written to docs/reference-extension/.
"""
from __future__ import annotations

import functools
import http.server
import math
import os
import shutil
import struct
import tempfile
import threading
import time
import wave
from pathlib import Path
from typing import Any, Iterator

import pytest

from playwright.sync_api import expect

from tests.browser.conftest import ARTEFACTS, ROOT, chromium_args, text_of, unpacked_extension_id
from tests.conftest import PASSWORD, start_live_server, stop_live_server, unique_email

REFERENCE = ROOT / "clients" / "reference-extension"
DOCS = ROOT / "docs" / "reference-extension"
SHORT_TOKENS = {"LIVE_TOKEN_MINUTES": "1", "LIVE_FREE_TOKEN_MINUTES": "1", "LIVE_RENEW_LEAD_SECONDS": "55"}
# Short enough that the kit rotates its session during the test, in the popup and the worker.
ACCESS_TOKEN_TTL_SECONDS = 75
POPUP = {"width": 360, "height": 760}


def tone_wav(path: Path, seconds: int, sample_rate: int = 16000) -> None:
    """A quiet 220 Hz tone: the sandbox's captions are paced by the audio received."""
    frames = b"".join(struct.pack("<h", int(3000 * math.sin(2 * math.pi * 220 * i / sample_rate)))
                      for i in range(sample_rate))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(frames * seconds)


@pytest.fixture(scope="module")
def audio_page() -> Iterator[str]:
    """A page on loopback that plays a tone: the tab to caption."""
    root = Path(tempfile.mkdtemp(prefix="audio-page-"))
    tone_wav(root / "tone.wav", 120)
    (root / "index.html").write_text(
        "<!doctype html><title>Stream with audio</title><h1>A stream</h1>"
        "<p>Someone is talking here.</p><audio src='tone.wav' autoplay loop controls></audio>"
    )
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.RequestHandlerClass.log_message = lambda *args: None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    server.shutdown()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def reference(chromium, aws_endpoint, provider_env, fake_stripe, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """The local stack with short live tokens, and a copy of the reference extension pointed at it."""
    work = tmp_path_factory.mktemp("reference")
    extension_dir = work / "reference-extension"
    extension_id = unpacked_extension_id(extension_dir)
    server = start_live_server(
        {
            "AWS_ENDPOINT_URL": aws_endpoint, **provider_env, **SHORT_TOKENS,
            "ALLOWED_ORIGINS": f"chrome-extension://{extension_id}",
            "ACCESS_TOKEN_TTL_SECONDS": str(ACCESS_TOKEN_TTL_SECONDS),
            "CHECKOUT_SUCCESS_URL": fake_stripe.url + "/_fake",
            "CHECKOUT_CANCEL_URL": fake_stripe.url + "/_fake",
        },
        str(work / "server.log"),
    )
    previous_webhook = fake_stripe.webhook_url
    fake_stripe.webhook_url = server.url + "/webhooks/stripe"
    shutil.copytree(REFERENCE, extension_dir)
    config = extension_dir / "config.js"
    source = config.read_text()
    assert source.count("'http://127.0.0.1:8000'") == 1, "config.js: the API_URL constant moved"
    config.write_text(source.replace("'http://127.0.0.1:8000'", f"'{server.url}'"))
    try:
        yield {"url": server.url, "dir": extension_dir, "id": extension_id, "server": server}
    finally:
        fake_stripe.webhook_url = previous_webhook
        stop_live_server(server)


@pytest.fixture(scope="module")
def context(chromium, reference) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    with sync_playwright() as playwright:
        browser_context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=chromium,
            headless=False,  # --headless=new in the arguments: the real browser, extensions included
            ignore_default_args=["--disable-extensions", "--mute-audio"],
            args=chromium_args(reference["dir"], reference["id"]),
        )
        try:
            worker = browser_context.service_workers[0] if browser_context.service_workers else \
                browser_context.wait_for_event("serviceworker", timeout=15_000)
            assert worker.url == f"chrome-extension://{reference['id']}/background.js", worker.url
            yield browser_context
        finally:
            browser_context.close()
            shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def shots() -> Any:
    artefacts = ARTEFACTS / "test_reference_extension"
    shutil.rmtree(artefacts, ignore_errors=True)
    artefacts.mkdir(parents=True)
    update_docs = os.environ.get("DOCS_SCREENSHOTS") == "1"

    def take(page: Any, name: str, *, docs: bool = False) -> None:
        page.screenshot(path=str(artefacts / f"{name}.png"))
        if docs and update_docs:
            DOCS.mkdir(parents=True, exist_ok=True)
            shutil.copy(artefacts / f"{name}.png", DOCS / f"{name}.png")

    return take


def open_popup(context: Any, reference: dict[str, Any]) -> Any:
    page = context.new_page()
    page.set_viewport_size(POPUP)
    page.goto(f"chrome-extension://{reference['id']}/popup.html")
    return page


def live_state(page: Any) -> dict[str, Any]:
    return page.evaluate("async () => (await chrome.storage.session.get('referenceExtension.live'))"
                         "['referenceExtension.live'] || {}")


def wait_until(read, done, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value):
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {value}"
        time.sleep(0.3)


def test_the_reference_extension_end_to_end(context, reference, audio_page, shots, fake_assemblyai):
    # 1. Create an account in the popup: the balance shows the signup credits.
    popup = open_popup(context, reference)
    popup.wait_for_selector("#signed-out:not([hidden])")
    popup.fill("#email", unique_email("reference"))
    popup.fill("#password", PASSWORD)
    shots(popup, "01-sign-in", docs=True)
    popup.click("#register")
    expect(popup.locator("#balance")).to_have_text("200", timeout=15_000)
    expect(popup.locator("#packages button")).to_have_count(3)

    # 2. Buy a pack: the worker opens Checkout in a tab; pay there; the popup's balance follows.
    with context.expect_page() as opened:
        popup.click("#packages button[data-package='starter']")
    checkout = opened.value
    checkout.wait_for_load_state()
    assert "/checkout/" in checkout.url, checkout.url
    checkout.get_by_role("button", name="Pay $2.99").click()
    checkout.wait_for_load_state()
    checkout.close()
    expect(popup.locator("#balance")).to_have_text("700", timeout=30_000)
    shots(popup, "02-paid", docs=True)

    # 3. Live captions of a tab playing audio, through the extension's own message path (the
    #    Start button sends the same message for the active tab; here the popup is a tab).
    page = context.new_page()
    page.goto(audio_page)
    page.wait_for_function("document.querySelector('audio').currentTime > 0.5", timeout=15_000)
    tab_id = popup.evaluate("async (url) => (await chrome.tabs.query({})).find((t) => t.url === url).id", audio_page)
    before = {id(s) for s in fake_assemblyai.streaming_sessions}
    answer = popup.evaluate("(tabId) => chrome.runtime.sendMessage({type: 'captions.start', tabId})", tab_id)
    assert answer["ok"], answer
    state = wait_until(lambda: live_state(popup), lambda s: len(s.get("finals", [])) >= 1, 30, "a final caption")
    expect(page.locator("#reference-caption-overlay")).to_be_visible()
    assert state["running"] and not state.get("error"), state

    # 4. Ask during the session.
    popup.fill("#question", "What did they just say?")
    popup.click("#ask")
    expect(popup.locator("#answer")).not_to_have_text("…", timeout=30_000)
    assert text_of(popup, "#answer"), "an answer is shown"
    assert live_state(popup)["running"]

    # 5. Two renewals (one-minute tokens), then stop.
    wait_until(lambda: live_state(popup), lambda s: s.get("renewals", 0) >= 2, 90, "two renewals")
    time.sleep(2)
    shots(page, "03-overlay", docs=True)
    shots(popup, "04-captions-and-ask", docs=True)
    popup.click("#stop")
    state = wait_until(lambda: live_state(popup), lambda s: not s.get("running") and s.get("bill"), 30, "the bill")
    expect(popup.locator("#bill")).to_contain_text("credits")
    assert state["bill"]["credits_used"] == 10 * state["bill"]["duration_minutes"]

    sockets = sorted((s for s in fake_assemblyai.streaming_sessions if id(s) not in before), key=lambda s: s.opened_at)
    assert len(sockets) >= 3
    for old, new in zip(sockets, sockets[1:]):
        assert new.opened_at < old.closed_at, "each socket opened before the one it replaced closed"
    assert all(s.close_code == 1000 for s in sockets), [s.close_code for s in sockets]
    span = sockets[-1].closed_at - sockets[0].opened_at
    heard = sum(s.audio_seconds for s in sockets)
    # Audio captured before the first socket opened is sent when it does: a little more may be heard than the span.
    assert span - 3 <= heard <= span + 3, f"audio covers the session without a gap: {heard:.1f} s in {span:.1f} s"

    # 6. Catch up on the captured audio.
    popup.click("#catchup")
    state = wait_until(lambda: live_state(popup), lambda s: (s.get("catchup") or {}).get("status") in ("completed", "failed"),
                       90, "the catch-up")
    assert state["catchup"]["status"] == "completed", state["catchup"]
    expect(popup.locator("#summary")).not_to_be_empty()
    shots(popup, "05-catch-up", docs=True)

    # The balance the popup shows is the server's.
    final = popup.evaluate("async () => (await chrome.storage.local.get('transcriptionKit.balance'))['transcriptionKit.balance'].balance")
    expect(popup.locator("#balance")).to_have_text(str(final))
