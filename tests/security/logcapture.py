"""A session-wide copy of every log line the service emits in-process, exactly as emitted,
and of every secret value the service registered for redaction during the session.

The handler formats with the service's own JsonFormatter (the redacting one), so what it
collects is what production would write. tests/security/test_zz_logs_clean.py checks it.
The redaction registry keeps only the most recent per-request secrets; the recording
containers below remember every one, so the final check looks for all of them.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict

SEEN_SECRETS: set[str] = set()


class _RecordingRecent(OrderedDict):
    def __setitem__(self, key, value) -> None:  # type: ignore[no-untyped-def]
        SEEN_SECRETS.add(key)
        super().__setitem__(key, value)


class _RecordingPinned(set):
    def add(self, value) -> None:  # type: ignore[no-untyped-def]
        SEEN_SECRETS.add(value)
        super().add(value)


class CollectingHandler(logging.Handler):
    def __init__(self) -> None:
        from chalicelib.core.logs import JsonFormatter

        super().__init__(level=logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []
        self._lines_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # a formatter failure is itself a finding: keep the raw text
            line = f"UNFORMATTABLE {record.getMessage()!r}"
        with self._lines_lock:
            self.lines.append(line)


HANDLER: CollectingHandler | None = None


def install() -> CollectingHandler:
    """Attach the collector to the root logger once, after the service's own setup.

    chalicelib.core.logs.configure() replaces the root handlers the first time it runs, so it
    runs here first; later calls are no-ops and the collector stays attached.
    """
    global HANDLER
    if HANDLER is None:
        from chalicelib.core import logs

        logs.configure("INFO")
        SEEN_SECRETS.update(logs._pinned_secrets, logs._recent_secrets)
        logs._recent_secrets = _RecordingRecent(logs._recent_secrets)
        logs._pinned_secrets = _RecordingPinned(logs._pinned_secrets)
        HANDLER = CollectingHandler()
        logging.getLogger().addHandler(HANDLER)
    return HANDLER


def lines() -> list[str]:
    return list(HANDLER.lines) if HANDLER is not None else []
