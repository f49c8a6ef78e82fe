"""A session-wide copy of every log line the service emits in-process, exactly as emitted.

The handler formats with the service's own JsonFormatter (the redacting one), so what it
collects is what production would write. tests/security/test_zz_logs_clean.py checks it.
"""
from __future__ import annotations

import logging
import threading


class CollectingHandler(logging.Handler):
    def __init__(self) -> None:
        from chalicelib.logs import JsonFormatter

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

    chalicelib.logs.configure() replaces the root handlers the first time it runs, so it
    runs here first; later calls are no-ops and the collector stays attached.
    """
    global HANDLER
    if HANDLER is None:
        from chalicelib import logs

        logs.configure("INFO")
        HANDLER = CollectingHandler()
        logging.getLogger().addHandler(HANDLER)
    return HANDLER


def lines() -> list[str]:
    return list(HANDLER.lines) if HANDLER is not None else []
