"""Catch-up fixtures: a private queue per test, the worker driven like Lambda, clean fakes.

In-process tests send jobs to a queue of their own (CATCHUP_QUEUE), so the live server's
worker, which polls the stage's real queue, never races them for a message; they then
receive that message and hand it to the app's registered SQS handler themselves.
"""
from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator

import pytest

from devstack.fakes.audio import make_wav
from tests.conftest import ORIGIN, json_headers, restore_env, set_env

FAST_ENV = {"PROVIDER_BACKOFF_SECONDS": "0", "PROVIDER_BUDGET_SECONDS": "5"}


@dataclass
class CatchupStack:
    """What a catch-up test drives: the app client, its private queue and the fakes."""

    client: Any
    queue_name: str
    queue_url: str
    queue_arn: str
    assemblyai: Any
    openai: Any
    twitch: Any
    _env_stack: list[dict[str, str | None]] = field(default_factory=list)

    # ----- settings ---------------------------------------------------------------------

    def configure(self, **values: str) -> None:
        """Change settings for the rest of this test (restored afterwards)."""
        self._env_stack.append(set_env(values))

    # ----- HTTP -------------------------------------------------------------------------

    def post(self, path: str, token: str, body: dict[str, Any],
             **headers: str) -> tuple[int, dict[str, Any]]:
        response = self.client.http.post(path, headers=json_headers(token, origin=ORIGIN, **headers),
                                         body=json.dumps(body))
        return response.status_code, json.loads(response.body or b"{}")

    def get(self, path: str, token: str) -> tuple[int, dict[str, Any]]:
        response = self.client.http.get(path, headers=json_headers(token, origin=ORIGIN))
        return response.status_code, json.loads(response.body or b"{}")

    def balance(self, token: str) -> int:
        """What the user can spend now (credits held for a job are not available)."""
        status, body = self.get("/auth/user", token)
        assert status == 200, body
        return body["user"]["credits_available"]

    def submit(self, token: str, seconds: float = 120, duration_minutes: int = 5,
               headers: dict[str, str] | None = None, **extra: Any) -> tuple[int, dict[str, Any]]:
        body: dict[str, Any] = {"channel": "catchupchan", "duration_minutes": duration_minutes}
        if "audio_key" not in extra:
            body["audio"] = base64.b64encode(make_wav(seconds, sample_rate=1000)).decode()
        body.update(extra)
        return self.post("/transcription/catchup", token,
                         {k: v for k, v in body.items() if v is not None}, **(headers or {}))

    def job(self, token: str, job_id: str) -> dict[str, Any]:
        status, body = self.get(f"/transcription/catchup/{job_id}", token)
        assert status == 200, body
        return body

    # ----- the worker -------------------------------------------------------------------

    def receive(self) -> dict[str, Any]:
        """The next message of the private queue (exactly one is expected)."""
        from chalicelib.aws.clients import client

        messages = client("sqs").receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=2, AttributeNames=["All"]
        ).get("Messages", [])
        assert len(messages) == 1, "expected one catch-up message"
        return messages[0]

    def run_worker(self, message: dict[str, Any], seconds: int = 300) -> None:
        """Invoke the app's SQS handler as Lambda would, with a context of `seconds` left."""
        import app
        from devstack.local_events import LambdaContext, sqs_event

        app.catchup_worker(sqs_event(self.queue_arn, [message]), LambdaContext("catchup_worker", seconds))


@pytest.fixture
def stack(client, provider_env, fake_assemblyai, fake_openai, fake_twitch, monkeypatch) -> Iterator[CatchupStack]:
    from chalicelib.catchup import worker as catchup_worker
    from chalicelib.aws.clients import client as aws_client

    name = f"transcription-backend-local-catchup-t{uuid.uuid4().hex[:12]}"
    sqs = aws_client("sqs")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    previous = set_env({"CATCHUP_QUEUE": name, **FAST_ENV})
    monkeypatch.setattr(catchup_worker, "sleep", _short_sleep)
    knobs = _fake_knobs(fake_assemblyai, fake_openai)
    fake_twitch.add_channel("catchupchan", live=True, title="Speedrun practice", game_name="Celeste")
    stack = CatchupStack(client, name, url, arn, fake_assemblyai, fake_openai, fake_twitch)
    try:
        yield stack
    finally:
        for saved in reversed(stack._env_stack):
            restore_env(saved)
        restore_env(previous)
        _restore_knobs(knobs, fake_assemblyai, fake_openai)
        aws_client("sqs").delete_queue(QueueUrl=url)


def _short_sleep(seconds: float) -> None:
    """Poll the fake every 50 ms: its "processing" answers do not depend on wall time."""
    time.sleep(min(max(seconds, 0.0), 0.05))


def _fake_knobs(assemblyai: Any, openai: Any) -> dict[str, Any]:
    return {
        "assemblyai": {k: getattr(assemblyai, k) for k in ("outcome", "polls_before_completion", "text")},
        "openai": {"responder": openai.responder},
    }


def _restore_knobs(knobs: dict[str, Any], assemblyai: Any, openai: Any) -> None:
    for name, value in knobs["assemblyai"].items():
        setattr(assemblyai, name, value)
    openai.responder = knobs["openai"]["responder"]
    assemblyai.clear_faults()
    openai.clear_faults()
