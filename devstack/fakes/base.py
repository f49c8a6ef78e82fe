"""Shared machinery for the fake provider servers.

Every fake is a small WSGI app served on loopback by werkzeug in a daemon
thread, so production clients (requests, stripe-python) talk real HTTP to it.
This module holds what all of them need and nothing provider-specific:
lifecycle, request recording, fault injection, JSON / bracket-form / auth
helpers. Each fake only declares its routes, how it authenticates and what its
provider's error body looks like.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import secrets
import string
import threading
from dataclasses import dataclass
from http import HTTPStatus
from types import TracebackType
from typing import Any, Iterable, Mapping, NamedTuple, TypeVar
from urllib.parse import parse_qsl

from werkzeug.datastructures import Headers, MultiDict
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

log = logging.getLogger(__name__)

_ALPHANUMERIC = string.ascii_letters + string.digits
_Self = TypeVar("_Self", bound="FakeServer")

__all__ = [
    "FakeError",
    "FakeServer",
    "RecordedRequest",
    "Rule",
    "bearer_token",
    "json_response",
    "keys_match",
    "parse_bracket_form",
    "random_id",
    "read_json",
    "status_phrase",
]


class FakeError(Exception):
    """Raised by a handler to answer with the provider's own error format.

    `extra` is handed to the fake's `error_response` (e.g. Stripe's `param` and
    `code`); `headers` are added to the response (e.g. `Retry-After`).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
        self.extra = extra


class RecordedRequest(NamedTuple):
    """One request as the fake received it, so tests can assert what was sent.

    `query` is a MultiDict (`q["k"]` first value, `q.getlist("k")` all) and
    `headers` is case-insensitive (`headers["authorization"]`).
    """

    method: str
    path: str
    query: MultiDict[str, str]
    headers: Headers
    body: bytes

    def json(self) -> Any:
        """The body decoded as JSON."""
        return json.loads(self.body or b"null")

    def form(self) -> dict[str, Any]:
        """The body decoded as a (bracket-notation) form, nested."""
        return parse_bracket_form(parse_qsl(self.body.decode("utf-8"), keep_blank_values=True))


@dataclass
class _Fault:
    remaining: int
    status: int
    body: Any
    headers: dict[str, str]
    path_prefix: str | None

    def matches(self, path: str) -> bool:
        return self.remaining > 0 and (self.path_prefix is None or path.startswith(self.path_prefix))


class _QuietHandler(WSGIRequestHandler):
    """Send werkzeug's access log to `logging` at DEBUG instead of INFO noise."""

    def log(self, type: str, message: str, *args: Any) -> None:  # noqa: A002
        log.debug("%s %s", self.address_string(), message % args)


class FakeServer:
    """Serve a fake provider on 127.0.0.1 in a daemon thread.

    Subclasses implement `routes()`, `authenticate(request)` and
    `error_response(status, message, **extra)`; handlers are methods named by
    the Rule's endpoint, take `(request, **url_args)` and return a Response or
    a JSON-serialisable object. Endpoints listed in `public_endpoints` skip
    authentication. Shared state is guarded by `self._lock`.
    """

    provider = "fake"
    public_endpoints: frozenset[str] = frozenset()

    def __init__(self, *, port: int = 0, host: str = "127.0.0.1") -> None:
        self._host = host
        self._requested_port = port
        self._lock = threading.RLock()
        self._requests: list[RecordedRequest] = []
        self._faults: list[_Fault] = []
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._url_map = Map(self.routes(), strict_slashes=False, merge_slashes=False)

    # ----- what subclasses provide -------------------------------------------------

    def routes(self) -> list[Rule]:
        """The provider's URL rules (endpoint = handler method name)."""
        raise NotImplementedError

    def authenticate(self, request: Request) -> None:
        """Raise FakeError(401, ...) unless the request carries the right credentials."""
        raise NotImplementedError

    def error_response(self, status: int, message: str, **extra: Any) -> Response:
        """A response in the provider's own error format."""
        return json_response({"error": message}, status)

    def decorate(self, request: Request, response: Response) -> None:
        """Hook to add provider headers (request ids, rate limits) to every response."""

    # ----- lifecycle ---------------------------------------------------------------

    def start(self: _Self) -> _Self:
        """Bind the port and serve in a daemon thread; returns self for chaining."""
        if self._server is not None:
            return self
        server = make_server(
            self._host, self._requested_port, self, threaded=True, request_handler=_QuietHandler
        )
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},  # so stop() returns promptly in per-test fixtures
            name=f"fake-{self.provider}-{server.port}",
            daemon=True,
        )
        self._thread.start()
        log.info("fake %s listening on %s", self.provider, self.url)
        return self

    def stop(self) -> None:
        """Stop serving and release the port. Safe to call twice."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"fake {self.provider} is not started")
        return int(self._server.port)

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. http://127.0.0.1:54321."""
        return f"http://{self._host}:{self.port}"

    def __enter__(self: _Self) -> _Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ----- observation and fault injection -------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def requests_to(self, path_prefix: str, method: str | None = None) -> list[RecordedRequest]:
        """Recorded requests whose path starts with `path_prefix` (and method, if given)."""
        return [
            r
            for r in self.requests
            if r.path.startswith(path_prefix) and (method is None or r.method == method.upper())
        ]

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def fail_next(
        self,
        n: int,
        status: int,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        path_prefix: str | None = None,
    ) -> None:
        """Answer the next `n` matching requests with `status` instead of serving them.

        `body` None means the provider's own error format with a generic message;
        a dict/list is sent as JSON; str/bytes verbatim. Faults queue up in order.
        """
        if n < 1:
            raise ValueError("n must be >= 1")
        with self._lock:
            self._faults.append(_Fault(n, status, body, dict(headers or {}), path_prefix))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(path):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _fault_response(self, fault: _Fault) -> Response:
        if fault.body is None:
            response = self.error_response(fault.status, status_phrase(fault.status))
        elif isinstance(fault.body, (dict, list)):
            response = json_response(fault.body, fault.status)
        else:
            response = Response(fault.body, fault.status, content_type="text/plain; charset=utf-8")
        response.headers.update(fault.headers)
        return response

    # ----- WSGI ----------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        body = request.get_data(cache=True)
        with self._lock:
            self._requests.append(
                RecordedRequest(
                    request.method,
                    request.path,
                    MultiDict(request.args),
                    Headers(list(request.headers.items())),
                    body,
                )
            )
        fault = self._take_fault(request.path)
        response = self._fault_response(fault) if fault else self._dispatch(request)
        self.decorate(request, response)
        return response(environ, start_response)

    def _dispatch(self, request: Request) -> Response:
        try:
            endpoint, args = self._url_map.bind_to_environ(request.environ).match()
            if endpoint not in self.public_endpoints:
                self.authenticate(request)
            result = getattr(self, endpoint)(request, **args)
            return result if isinstance(result, Response) else json_response(result)
        except FakeError as err:
            response = self.error_response(err.status, err.message, **err.extra)
            response.headers.update(err.headers)
            return response
        except NotFound:
            return self.error_response(404, f"Unrecognized request URL ({request.method}: {request.path}).")
        except MethodNotAllowed:
            return self.error_response(405, f"Method {request.method} not allowed on {request.path}.")
        except Exception:  # a bug in the fake: still answer in the provider's format
            log.exception("fake %s crashed on %s %s", self.provider, request.method, request.path)
            return self.error_response(500, "Internal server error")


def status_phrase(status: int) -> str:
    """The standard reason phrase for a status ("Too Many Requests"), used in error bodies."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


# ----- helpers shared by the fakes ------------------------------------------------------


def json_response(obj: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """Serialise `obj` as a JSON response."""
    response = Response(json.dumps(obj), status, content_type="application/json")
    if headers:
        response.headers.update(headers)
    return response


def read_json(request: Request) -> Any:
    """The request body as JSON; FakeError(400) when it is not valid JSON."""
    try:
        return json.loads(request.get_data(cache=True) or b"")
    except ValueError:
        raise FakeError(400, "Request body is not valid JSON.") from None


def bearer_token(request: Request) -> str | None:
    """The token from `Authorization: Bearer <token>` (scheme case-insensitive), if any."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def keys_match(given: str | None, expected: str) -> bool:
    """Constant-time comparison, like the real services."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def random_id(prefix: str = "", length: int = 24) -> str:
    """A provider-style opaque id, e.g. random_id("cus_", 14)."""
    return prefix + "".join(secrets.choice(_ALPHANUMERIC) for _ in range(length))


class FormError(ValueError):
    """A bracket-notation key that contradicts an earlier one (`a=1&a[b]=2`)."""


def parse_bracket_form(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Decode Stripe/Rack-style bracket notation into nested dicts and lists.

    `line_items[0][price_data][unit_amount]=500&metadata[k]=v&expand[]=x`
    becomes `{"line_items": [{"price_data": {"unit_amount": "500"}}],
    "metadata": {"k": "v"}, "expand": ["x"]}`. Values stay strings, as on the
    wire; dicts whose keys are all indices become lists ordered by index.
    """
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = _key_parts(key)
        node = root
        for part in parts[:-1]:
            part = part or str(len(node))
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise FormError(key)
            node = child
        last = parts[-1] or str(len(node))
        if isinstance(node.get(last), dict):
            raise FormError(key)
        node[last] = value
    return _listify(root)


_BRACKET = re.compile(r"\[([^\[\]]*)\]")


def _key_parts(key: str) -> list[str]:
    head = key.split("[", 1)[0]
    return [head] + _BRACKET.findall(key, len(head))


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {k: _listify(v) for k, v in node.items()}
    if converted and all(k.isdigit() for k in converted):
        return [converted[k] for k in sorted(converted, key=int)]
    return converted
