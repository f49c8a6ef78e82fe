"""Every step a user takes, against a running `make run`, printed as it goes.

    make run                     # in one terminal
    make walkthrough             # in another (or: .venv/bin/python scripts/walkthrough.py [--api URL])

1. health        GET  /health
2. register      POST /auth/register                 -> an access token and the signup credits
3. buy           POST /credits/purchase              -> a Checkout page; "pay" it as a browser does
                 (the sandbox Stripe's page: any card pays), then wait for the webhook's credits
4. live captions POST /transcription/stream start   -> a temporary token; stream audio to its
                 socket and print the captions; renew; stop -> the minutes billed
5. ask           POST /transcription/ask             -> an answer about the captions
6. catch-up      POST /transcription/catchup/upload, PUT the audio, POST /transcription/catchup,
                 then GET the job until it is done   -> its summary
7. history       GET  /transcription/history         -> the live session, the ask and the catch-up

The API is `--api`, else the one `make run` wrote to its state file (`.local/devstack.json`,
or LOCAL_DATA_DIR's), else http://127.0.0.1:$PORT (8000). Every request is real HTTP; the
script needs `requests` and `websockets` (both in .venv). Exit status 0 when every step
worked, 1 otherwise (the failing step says why).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import uuid
from typing import Any
from urllib.parse import urljoin

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a file: scripts/ is on the path, the project is not
    sys.path.insert(0, ROOT)

from devstack.fakes.audio import make_wav as silent_wav  # noqa: E402  (silence: the sandbox hears no words anyway)

PASSWORD = "walkthrough password 123"


class StepFailed(Exception):
    pass


def default_api() -> str:
    folder = os.environ.get("LOCAL_DATA_DIR") or os.path.join(ROOT, ".local")
    try:
        with open(os.path.join(folder, "devstack.json"), encoding="utf-8") as handle:
            return str(json.load(handle)["api_url"])
    except (OSError, ValueError, KeyError):
        return f"http://127.0.0.1:{os.environ.get('PORT', '8000')}"


class Walkthrough:
    def __init__(self, api: str, email: str, out: Any = sys.stdout) -> None:
        self.api = api.rstrip("/")
        self.email = email
        self.out = out
        self.http = requests.Session()
        self.token = ""
        self.number = 0

    # ----- plumbing ---------------------------------------------------------------------------

    def step(self, title: str) -> None:
        self.number += 1
        self.say(f"\n[{self.number}/7] {title}")

    def say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def call(self, method: str, path: str, body: Any = None, expect: tuple[int, ...] = (200,), **extra: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        response = self.http.request(method, self.api + path, json=body, headers={**headers, **extra.pop("headers", {})},
                                     timeout=60, **extra)
        shown = f"{method} {path} -> {response.status_code}"
        if response.status_code not in expect:
            raise StepFailed(f"{shown}: {response.text[:500]}")
        self.say(f"    {shown}")
        return response.json() if response.content else None

    # ----- the steps ----------------------------------------------------------------------------

    def health(self) -> None:
        self.step(f"Health of {self.api}")
        body = self.call("GET", "/health")
        self.say(f"    status {body['status']}, stage {body.get('stage')}")

    def register(self) -> None:
        self.step(f"Register {self.email}")
        body = self.call("POST", "/auth/register", {"email": self.email, "password": PASSWORD}, expect=(201,))
        self.token = body["token"]
        self.say(f"    user {body['user']['user_id']}, {body['user']['credits_balance']} credits to start with")
        self.say("    (every later request sends 'Authorization: Bearer <token>')")

    def balance(self) -> int:
        return int(self.call("GET", "/credits/balance")["balance"])

    def buy(self) -> None:
        self.step("Buy credits and pay in the sandbox")
        packs = self.call("GET", "/credits/packages")
        pack = min(packs["packages"], key=lambda p: p["amount"])
        self.say(f"    cheapest pack: {pack['name']} ({pack['credits']} credits for {pack['amount'] / 100:.2f} "
                 f"{pack['currency'].upper()})")
        before = self.balance()
        started = self.call("POST", "/credits/purchase", {"package_id": pack["id"]},
                            headers={"Idempotency-Key": uuid.uuid4().hex})
        checkout = started["checkout_url"]
        self.say(f"    checkout page: {checkout}")
        page = self.http.get(checkout, timeout=30)
        form = re.search(r"<form method='post' action='([^']+)'>(.*?)</form>", page.text, re.S)
        if page.status_code != 200 or not form:
            raise StepFailed(f"{checkout} is not the sandbox's checkout page: pay it in a browser, then rerun")
        fields = dict(re.findall(r"name='(\w+)' value='([^']*)'", form.group(2)))
        self.say(f"    pressing Pay with card {fields.get('card', '(none)')}, as a browser would")
        paid = self.http.post(urljoin(checkout, form.group(1)), data=fields, allow_redirects=False, timeout=60)
        if paid.status_code != 303:
            raise StepFailed(f"paying answered {paid.status_code}: {paid.text[:300]}")
        self.say(f"    paid; the browser would now go to {paid.headers['Location']}")
        deadline = time.monotonic() + 30
        while (now := self.balance()) < before + pack["credits"]:
            if time.monotonic() > deadline:
                raise StepFailed(f"the webhook's credits did not arrive: balance {now}")
            time.sleep(0.5)
        self.say(f"    the signed webhook reached the API: balance {before} -> {now}")

    def live(self, seconds: float) -> str:
        self.step("Live captions: start, stream audio, renew, stop")
        from websockets.sync.client import connect

        start = self.call("POST", "/transcription/stream", {"action": "start", "renewable": True, "max_minutes": 2,
                                                            "channel": "sandbox", "title": "Walkthrough"})
        self.say(f"    session {start['session_id']}: token {start['token_number']} for "
                 f"{start['max_session_seconds']} s, {start['credits_reserved']} credits held, "
                 f"renew in {start['renew_in_seconds']} s")
        captions: list[str] = []
        with connect(start["websocket_url"], open_timeout=30) as socket:
            begin = json.loads(socket.recv(timeout=30))
            self.say(f"    socket open: {begin['type']} {begin.get('id', '')}")
            chunk = silent_wav(0.1)[44:]  # 100 ms of PCM after the WAV header
            for _ in range(int(seconds * 10)):
                socket.send(chunk)
                time.sleep(0.1)
                captions += self._formatted_turns(socket, 0)
            renew = self.http.post(self.api + "/transcription/stream", timeout=60, headers=self._auth(),
                                   json={"action": "renew", "session_id": start["session_id"], "token_number": 1})
            answer = renew.json()
            if renew.status_code != 200:  # e.g. 409 renew_too_early: the client retries later
                self.say(f"    POST /transcription/stream renew -> {renew.status_code} {answer.get('code')}: "
                         f"{answer.get('message', '')}")
                socket.send(json.dumps({"type": "Terminate"}))
                captions += self._formatted_turns(socket, 5)
            else:
                self.say(f"    POST /transcription/stream renew -> 200: token {answer['token_number']} for "
                         f"{answer['max_session_seconds']} s, {answer['credits_reserved']} credits held in all")
                with connect(answer["websocket_url"], open_timeout=30) as second:
                    self.say(f"    second socket open: {json.loads(second.recv(timeout=30))['type']}; "
                             "closing the first one (no gap in captions)")
                    socket.send(json.dumps({"type": "Terminate"}))
                    captions += self._formatted_turns(socket, 5)
                    for _ in range(10):
                        second.send(chunk)
                        time.sleep(0.1)
                    second.send(json.dumps({"type": "Terminate"}))
                    captions += self._formatted_turns(second, 5)
        for line in captions:
            self.say(f"    caption: {line}")
        if not captions:
            raise StepFailed("no captions came back")
        stop = self.call("POST", "/transcription/stream", {"action": "stop", "session_id": start["session_id"]})
        self.say(f"    stopped: {stop['duration_minutes']} min billed, {stop['credits_used']} credits used, "
                 f"{stop['credits_refunded']} returned, balance {stop['remaining_balance']}")
        return " ".join(captions)

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @staticmethod
    def _formatted_turns(socket: Any, wait: float) -> list[str]:
        """The formatted turns waiting on the socket (until it closes, with `wait` > 0)."""
        from websockets.exceptions import ConnectionClosed

        turns = []
        try:
            while True:
                message = json.loads(socket.recv(timeout=wait))
                if message.get("type") == "Turn" and message.get("turn_is_formatted"):
                    turns.append(message["transcript"])
        except (TimeoutError, ConnectionClosed):
            return turns

    def ask(self, transcript: str) -> None:
        self.step("Ask a question about what was said")
        body = self.call("POST", "/transcription/ask", {"question": "What is the stream about?",
                                                        "transcript": transcript})
        self.say(f"    answer: {body['answer']}")
        self.say(f"    {body['credits_used']} credits, balance {body['remaining_balance']}")

    def catch_up(self, seconds: float) -> None:
        self.step("Catch up: upload audio, submit a job, wait for its summary")
        audio = silent_wav(seconds)
        upload = self.call("POST", "/transcription/catchup/upload",
                           {"content_type": "audio/wav", "file_size": len(audio)})
        put = self.http.put(upload["upload_url"], data=audio, headers=upload["headers"], timeout=60)
        if put.status_code != 200:
            raise StepFailed(f"the upload to S3 answered {put.status_code}: {put.text[:300]}")
        self.say(f"    PUT {len(audio)} bytes of audio to the presigned S3 URL -> 200")
        job = self.call("POST", "/transcription/catchup", {"channel": "sandbox", "duration_minutes": 1,
                                                          "audio_key": upload["audio_key"]}, expect=(202,))
        self.say(f"    job {job['job_id']} {job['status']}: {job['credits_reserved']} credits held")
        deadline = time.monotonic() + 120
        while job["status"] in ("queued", "processing"):
            if time.monotonic() > deadline:
                raise StepFailed(f"job {job['job_id']} still {job['status']} after 120 s")
            time.sleep(1)
            job = self.http.get(f"{self.api}/transcription/catchup/{job['job_id']}", headers=self._auth(),
                                timeout=30).json()
            self.say(f"    GET /transcription/catchup/{job['job_id']} -> {job['status']}")
        if job["status"] != "completed":
            raise StepFailed(f"job {job['status']}: {job.get('error')} {job.get('error_message')}")
        result = job["result"]
        self.say(f"    summary: {result['summary']}")
        for point in result["key_points"]:
            self.say(f"    key point: {point}")
        self.say(f"    {job['credits_used']} credits used")

    def history(self) -> None:
        self.step("History")
        body = self.call("GET", "/transcription/history")
        for item in body["items"]:
            self.say(f"    {item['created_at']}  {item['kind']:<8} {item.get('credits_used', 0)} credits"
                     + (f"  {item['channel']}" if item.get("channel") else ""))
        kinds = {item["kind"] for item in body["items"]}
        if not {"stream", "ask", "catchup"} <= kinds:
            raise StepFailed(f"history lacks some steps: {sorted(kinds)}")

    def run(self, live_seconds: float, catchup_seconds: float) -> None:
        self.health()
        self.register()
        self.buy()
        transcript = self.live(live_seconds)
        self.ask(transcript)
        self.catch_up(catchup_seconds)
        self.history()
        self.say(f"\nDone: every step worked against {self.api}. Log in as {self.email} / {PASSWORD!r}.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--api", default=None, help="the API's base URL (default: the running make run's)")
    parser.add_argument("--email", default=None, help="the account to register (default: a new one)")
    parser.add_argument("--live-seconds", type=float, default=6, help="audio streamed for live captions")
    parser.add_argument("--catchup-seconds", type=float, default=60, help="length of the catch-up audio")
    args = parser.parse_args(argv)
    email = args.email or f"walkthrough-{uuid.uuid4().hex[:8]}@example.com"
    walkthrough = Walkthrough(args.api or default_api(), email)
    try:
        walkthrough.run(args.live_seconds, args.catchup_seconds)
    except (StepFailed, requests.RequestException) as error:
        walkthrough.say(f"\nFAILED at step {walkthrough.number}: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
