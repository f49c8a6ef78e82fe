"""A client of the sandbox's v3 streaming socket, as a browser would drive it (for tests)."""
from __future__ import annotations

import json
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

CHUNK_SECONDS = 1.0  # AssemblyAI accepts 50..1000 ms per binary frame


class SandboxSocket:
    """One open socket: send PCM, collect Begin / Turn / Termination / Error messages."""

    def __init__(self, url: str, sample_rate: int = 16000) -> None:
        self.sample_rate = sample_rate
        self.messages: list[dict[str, Any]] = []
        self.ws: ClientConnection = connect(url, open_timeout=30, close_timeout=5)
        self.begin = self._recv(timeout=30)

    def _recv(self, timeout: float) -> dict[str, Any]:
        message = json.loads(self.ws.recv(timeout=timeout))
        self.messages.append(message)
        return message

    def send_audio(self, seconds: float) -> None:
        """`seconds` of silence-shaped PCM16, in chunks of at most one second."""
        remaining = seconds
        while remaining > 1e-9:
            step = min(CHUNK_SECONDS, remaining)
            self.ws.send(b"\x00\x00" * int(round(self.sample_rate * step)))
            remaining -= step

    def drain(self) -> None:
        """Read whatever has arrived, without waiting."""
        try:
            while True:
                self._recv(timeout=0)
        except (TimeoutError, ConnectionClosed):
            return

    def wait_for_turns(self, count: int, timeout: float = 60) -> None:
        """Read until `count` turns have ended (the fake answers the audio as it gets to it)."""
        while sum(1 for m in self.messages if m.get("type") == "Turn" and m["end_of_turn"]) < count:
            self._recv(timeout=timeout)

    def wait_closed(self, timeout: float = 60) -> int | None:
        """Read until the server closes the socket; its close code."""
        try:
            while True:
                self._recv(timeout=timeout)
        except ConnectionClosed:
            pass
        return self.ws.close_code

    def terminate(self) -> int | None:
        """Send Terminate (what a client does when it is done) and read to the close."""
        try:
            self.ws.send(json.dumps({"type": "Terminate"}))
        except ConnectionClosed:
            pass
        return self.wait_closed()

    @property
    def final_turns(self) -> list[str]:
        return [m["transcript"] for m in self.messages
                if m.get("type") == "Turn" and m["end_of_turn"] and m["turn_is_formatted"]]

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == kind]
