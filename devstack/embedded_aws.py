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
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Iterable

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


class EmbeddedAws:
    """Start with `EmbeddedAws().start()`; `url` is what AWS_ENDPOINT_URL should be."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

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
        app = DynamoDBFaults(SerializeDynamoDB(DomainDispatcherApplication(create_backend_app)))
        self._server = make_server(
            self.host, self.port, app, threaded=True, request_handler=MotoRequestHandler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="embedded-aws", daemon=True
        )
        self._thread.start()
        return self

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
