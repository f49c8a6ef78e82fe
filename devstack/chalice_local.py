"""`chalice local` as `make run` serves it: `python -m devstack.chalice_local local --stage local ...`.

Four changes to chalice's development server, none to the app:

- a listen backlog that survives bursts: chalice keeps socketserver's default of 5, so twenty
  clients connecting at once got connection resets;
- API Gateway's own error responses rendered as deployed (devstack.local_gateway);
- one JSON log line per request: the app's middleware logs every request it serves, so the
  server's own access line (`127.0.0.1 - - [...] "GET /health" 200`) is dropped, and only a
  request answered before the app runs (a refused token, an unknown path) gets a line here,
  the `gateway` logger's, as API Gateway's access log would have it;
- the code reloader watches the project's source (`.py` files and `.chalice/`), not `.venv`,
  `.local` (where `make run` saves its data) or caches: chalice's stat watcher walked every
  file of the project each second and restarted the server whenever any of them changed.

The reloader re-executes `sys.argv` for its worker, so `sys.argv` is set to a command that
comes back here.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any, Iterator

LISTEN_BACKLOG = 128
IGNORED_DIRS = frozenset({"__pycache__", "node_modules", "build", "dist", "tests", "docs", "clients"})
WATCHED_SUFFIXES = (".py", ".json")

gateway_logger = logging.getLogger("gateway")
_request = threading.local()  # per request thread: whether the app logged its line


class _NoticeAppLines(logging.Filter):
    """Notes, on the request's thread, that the app's middleware logged the request."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != gateway_logger.name and record.getMessage() == "request":
            _request.logged = True
        return True


def install_access_log() -> None:
    """One line per request: the app's, or else the gateway's (idempotent)."""
    import chalice.local

    from chalicelib.core import logs

    handler = chalice.local.ChaliceRequestHandler
    if getattr(handler, "_access_log_installed", False):
        return
    logs.configure()
    for root_handler in logging.getLogger().handlers:
        root_handler.addFilter(_NoticeAppLines())
    original_handle = handler._generic_handle

    def generic_handle(self: Any) -> None:
        _request.logged, _request.started = False, time.monotonic()
        original_handle(self)

    def log_request(self: Any, code: Any = "-", size: Any = "-") -> None:
        if getattr(_request, "logged", True):
            return
        started = getattr(_request, "started", time.monotonic())
        logs.log_event(gateway_logger, "request", method=self.command, path=self.path.split("?", 1)[0],
                       status=int(code) if str(code).isdigit() else code,
                       latency_ms=round((time.monotonic() - started) * 1000, 1))

    def log_error(self: Any, format: str, *args: Any) -> None:
        logs.log_event(gateway_logger, "http_error", logging.WARNING, detail=format % args)

    handler._generic_handle = generic_handle
    handler.do_GET = handler.do_PUT = handler.do_POST = handler.do_HEAD = generic_handle
    handler.do_DELETE = handler.do_PATCH = handler.do_OPTIONS = generic_handle
    handler.log_request = log_request
    handler.log_error = log_error
    handler._access_log_installed = True


def source_files(root: str) -> Iterator[str]:
    """The files whose change restarts the server: `.py` and `.json` outside caches, the
    venv, local data and the folders the app never imports (tests, docs, clients)."""
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [name for name in subfolders if name not in IGNORED_DIRS
                         and (not name.startswith(".") or name == ".chalice")
                         and os.path.join(folder, name) != os.path.join(root, ".chalice", "deployments")]
        for name in names:
            if name.endswith(WATCHED_SUFFIXES):
                yield os.path.join(folder, name)


def install_source_watcher() -> None:
    """chalice's stat reloader, watching `source_files` only."""
    from chalice.cli import reloader
    from chalice.cli.filewatch import stat

    class SourceFileWatcher(stat.StatFileWatcher):
        def _seed_mtime_cache(self, root_dir: str) -> None:
            for path in source_files(root_dir):
                self._mtime_cache[path] = os.stat(path).st_mtime

        def _recursive_walk_files(self, root_dir: str) -> Iterator[str]:
            return source_files(root_dir)

    class SourceWorkerProcess(stat.StatWorkerProcess):
        def _start_file_watcher(self, project_dir: str) -> None:
            SourceFileWatcher().watch_for_file_changes(project_dir, self._on_file_change)

    reloader.get_best_worker_process = lambda: SourceWorkerProcess


def main(args: list[str]) -> None:
    import chalice.local
    from chalice.cli import cli

    from devstack import local_gateway

    chalice.local.ThreadedHTTPServer.request_queue_size = LISTEN_BACKLOG
    local_gateway.install()
    install_access_log()
    install_source_watcher()
    sys.argv = [sys.executable, "-m", "devstack.chalice_local", *args]
    cli.main(args=args, prog_name="chalice", obj={})


if __name__ == "__main__":
    main(sys.argv[1:])
