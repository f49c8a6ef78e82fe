"""One boto3 client per service per process, even when the first calls race."""
from __future__ import annotations

from chalicelib.aws.clients import client, reset_clients
from tests.conftest import at_once


def test_concurrent_first_use_creates_one_client():
    """Two clients from two sessions have different exception classes, so an
    `except store.ddb().exceptions.TransactionCanceledException` would miss an error
    raised by the other one (a duplicate registration became a 500 under chalice local)."""
    reset_clients()
    try:
        clients = at_once(16, lambda: client("dynamodb"))
        assert len({id(c) for c in clients}) == 1
        assert client("dynamodb") is clients[0]
    finally:
        reset_clients()


def test_reset_gives_a_new_client():
    reset_clients()
    try:
        first = client("sqs")
        assert client("sqs") is first
        reset_clients()
        assert client("sqs") is not first
    finally:
        reset_clients()
