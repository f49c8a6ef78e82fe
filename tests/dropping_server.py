"""A loopback HTTP server that reads each request in full, then drops the connection.

It stands for a provider that received (and may have processed and billed) a request but
whose answer never arrived: requests raises `ConnectionError` exactly as when a connection
cannot be made at all, which is the case the provider clients must tell apart.
"""
from __future__ import annotations

import socket
import threading
from typing import NamedTuple


class Received(NamedTuple):
    method: str
    path: str
    body: bytes


class DroppingServer:
    """`with DroppingServer() as server:` then point a provider base URL at `server.url`."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.received: list[Received] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> "DroppingServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._listener.close()
        self._thread.join(timeout=5)

    def requests_to(self, method: str, path: str) -> list[Received]:
        return [r for r in self.received if r.method == method and r.path.split("?", 1)[0] == path]

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    self._read_request(conn)
                except OSError:
                    pass

    def _read_request(self, conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path = lines[0].split(" ")[:2]
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return
            body += chunk
        self.received.append(Received(method, path, body))
        # Leaving the `with` closes the socket without a byte of response.
