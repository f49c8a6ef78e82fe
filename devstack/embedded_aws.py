"""moto's server, in process, on loopback: the embedded AWS for `make run` and the tests.

One addition to moto: DynamoDB requests are served one at a time. Real DynamoDB makes a
conditional write or a TransactWriteItems atomic; moto evaluates a condition and then
writes without a lock, so two threads could both pass `credits_balance >= :cost`.
Serialising DynamoDB calls gives the embedded stack the guarantee production has, so our
concurrency tests test our code rather than moto's races. Other services (S3, SQS) stay
fully concurrent, so an SQS long poll never blocks a table write.

And one repair: moto's TransactWriteItems deep-copies whole tables for its rollback, which
made every credit operation slower as tables grew; devstack.moto_transactions snapshots
only the items a transaction touches.

And a switch for tests: devstack.dynamodb_faults makes chosen DynamoDB calls fail as real
DynamoDB can (TransactionConflict, throttling, an answer that comes too late), controlled
over HTTP at `/_devstack/dynamodb/faults`. With no fault set, every call passes through.

And a pause for snapshots (devstack.aws_state): `paused()` waits for the requests in
progress and holds new ones until it ends, except requests carrying `snapshot_headers`, so
what a snapshot reads is one consistent moment (a credit transaction is all in it or not
at all). `writes` counts the requests that may have changed something, so a periodic save
can skip an idle stack.
"""
from __future__ import annotations

import contextlib
import secrets
import threading
from typing import Any, Callable, Iterable, Iterator

from werkzeug.serving import BaseWSGIServer, make_server

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class SerializeDynamoDB:
    """WSGI middleware: one DynamoDB request at a time, everything else concurrent."""

    def __init__(self, app: WsgiApp) -> None:
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            return self.app(environ, start_response)
        with self.lock:
            # Drain the response inside the lock: moto does its work while it is produced.
            return list(self.app(environ, start_response))


READ_ACTIONS = ("Get", "BatchGet", "Query", "Scan", "Describe", "List", "Receive")
SNAPSHOT_HEADER = "X-Devstack-Snapshot"


def may_write(environ: dict[str, Any]) -> bool:
    """Whether a request may change state: any S3 method but GET/HEAD, any DynamoDB or SQS
    action but a read (a ReceiveMessage only changes what a snapshot does not keep)."""
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        return not target.rsplit(".", 1)[-1].startswith(READ_ACTIONS)
    return environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD", "OPTIONS")


class Pausable:
    """WSGI middleware: `paused()` lets the requests in progress finish and holds new ones
    until it ends; requests with the snapshot token pass (they are the snapshot's own)."""

    def __init__(self, app: WsgiApp) -> None:
        self.app = app
        self.token = secrets.token_hex(16)
        self.writes = 0
        self._changed = threading.Condition()
        self._active = 0
        self._paused = False

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("HTTP_" + SNAPSHOT_HEADER.upper().replace("-", "_")) == self.token:
            return self.app(environ, start_response)
        with self._changed:
            self._changed.wait_for(lambda: not self._paused)
            self._active += 1
            self.writes += may_write(environ)
        try:
            return list(self.app(environ, start_response))  # the work is done while it is produced
        finally:
            with self._changed:
                self._active -= 1
                self._changed.notify_all()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        with self._changed:
            self._changed.wait_for(lambda: not self._paused)
            self._paused = True
            self._changed.wait_for(lambda: self._active == 0)
        try:
            yield
        finally:
            with self._changed:
                self._paused = False
                self._changed.notify_all()


class EmbeddedAws:
    """Start with `EmbeddedAws().start()`; `url` is what AWS_ENDPOINT_URL should be."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._pausable: Pausable | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://{self.host}:{self._server.server_port}"

    def start(self) -> "EmbeddedAws":
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )

        from devstack import moto_transactions
        from devstack.dynamodb_faults import DynamoDBFaults

        moto_transactions.install()
        self._pausable = Pausable(
            DynamoDBFaults(SerializeDynamoDB(DomainDispatcherApplication(create_backend_app)))
        )
        self._server = make_server(
            self.host, self.port, self._pausable, threaded=True, request_handler=MotoRequestHandler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="embedded-aws", daemon=True
        )
        self._thread.start()
        return self

    @property
    def writes(self) -> int:
        """How many requests so far may have changed something."""
        assert self._pausable is not None, "start() first"
        return self._pausable.writes

    @property
    def snapshot_headers(self) -> dict[str, str]:
        """Headers that let a request through while `paused()`: for the snapshot's own calls."""
        assert self._pausable is not None, "start() first"
        return {SNAPSHOT_HEADER: self._pausable.token}

    def paused(self) -> contextlib.AbstractContextManager[None]:
        """Hold every other request (after those in progress finish) while the block runs."""
        assert self._pausable is not None, "start() first"
        return self._pausable.paused()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "EmbeddedAws":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    """`python -m devstack.embedded_aws [PORT]`: serve the embedded AWS in the foreground."""
    import sys
    import time

    aws = EmbeddedAws(port=int(sys.argv[1]) if len(sys.argv) > 1 else 0).start()
    sys.stdout.write(f"{aws.url}\n")
    sys.stdout.flush()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        aws.stop()


if __name__ == "__main__":
    main()
