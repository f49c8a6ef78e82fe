"""The client kit end to end: clients/extension/e2e/against-api.mjs under node, against the
real service as `make run` starts it (chalice local, the embedded AWS, the sandbox's Stripe
Checkout and its real AssemblyAI streaming socket), with one-minute tokens renewed 5 s
after they arrive, so a short session renews twice.

Checked from the outside: the credits the payment brought, what the sandbox's streaming
socket received (every audio sample the source produced, exactly once, across sockets that
overlap in time: no gap), how each socket ended, the bill, the Ask and the catch-up.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import start_live_server, stop_live_server

pytestmark = pytest.mark.e2e

SCRIPT = Path(__file__).resolve().parents[2] / "clients" / "extension" / "e2e" / "against-api.mjs"
SHORT_TOKENS = {"LIVE_TOKEN_MINUTES": "1", "LIVE_FREE_TOKEN_MINUTES": "1", "LIVE_RENEW_LEAD_SECONDS": "55"}


@pytest.fixture(scope="module")
def kit_server(aws_endpoint, provider_env, fake_stripe, tmp_path_factory):
    server = start_live_server({"AWS_ENDPOINT_URL": aws_endpoint, **provider_env, **SHORT_TOKENS},
                               str(tmp_path_factory.mktemp("kit-e2e") / "server.log"))
    previous = fake_stripe.webhook_url
    fake_stripe.webhook_url = server.url + "/webhooks/stripe"
    yield server
    fake_stripe.webhook_url = previous
    stop_live_server(server)


def test_the_kit_against_the_running_service(kit_server, fake_assemblyai, fake_twitch):
    node = shutil.which("node")
    assert node, "node (20 or later) is needed for the client kit's tests: apt-get install nodejs"
    fake_twitch.add_channel("kit_e2e", live=True, title="Kit end to end", game_name="Chess")
    before = {id(session) for session in fake_assemblyai.streaming_sessions}

    run = subprocess.run([node, "--experimental-websocket", str(SCRIPT), kit_server.url],
                         capture_output=True, text=True, timeout=240, check=False)
    assert run.returncode == 0, run.stderr[-4000:] + kit_server.log()[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])

    # sign-up credits, then the pack paid on the sandbox Checkout
    assert report["user"]["credits_balance"] == 200
    assert report["payStatus"] == 303
    assert report["payment"]["kind"] == "purchase" and report["payment"]["credits"] == 500
    assert report["payment"]["balance"] == 700 and report["paid"] == report["payment"]

    # live captions: renewed twice, every sample delivered once, sockets overlapping
    assert len(report["renewals"]) >= 2
    assert report["errors"] == [], report["errors"]
    assert report["finals"] and report["partials"] > 0
    sockets = sorted((s for s in fake_assemblyai.streaming_sessions if id(s) not in before), key=lambda s: s.opened_at)
    assert len(sockets) == len(report["renewals"]) + 1
    assert sum(s.audio_bytes for s in sockets) >= report["samplesSent"] * 2
    assert sum(s.audio_bytes for s in sockets) - report["samplesSent"] * 2 < 1600, "only the padding of the last frame is extra"
    for old, new in zip(sockets, sockets[1:]):
        assert new.opened_at < old.closed_at, "the next socket opened before the previous one closed"
    assert all(s.close_code == 1000 for s in sockets), [s.close_code for s in sockets]

    # billed as the server's rule says: elapsed time, but at least every token a renewal
    # replaced (one minute each here, since these test tokens are renewed 5 s in), rounded
    # up once; Ask answered during the session
    elapsed_minutes = (report["captionsStoppedAt"] - report["captionsStartedAt"]) / 60000
    bill = report["bill"]
    expected = max(1, -(-elapsed_minutes // 1), len(report["renewals"]))
    assert (bill["duration_minutes"], bill["credits_used"]) == (expected, 10 * expected), bill
    assert report["answer"]["success"] is True and report["answer"]["credits_used"] == 5

    # catch-up of the captured audio to a result, and the history of all three
    job = report["job"]
    assert job["status"] == "completed" and job["result"]["summary"]
    assert job["result"]["stream"]["title"] == "Kit end to end"
    assert report["catchupStatuses"][0] == "uploading" and report["catchupStatuses"][-1] == "completed"
    assert {"stream", "ask", "catchup"} <= set(report["history"])
    assert report["finalBalance"] == 700 - bill["credits_used"] - 5 - job["credits_used"]
    assert report["balances"][-1] == report["finalBalance"]
