"""The glue between Chalice and the logic: request parsing, responses, errors, CORS, access logs.

With the authorizer, the only chalicelib module that imports chalice. Domain errors are
plain exceptions (core.errors); `Api` lets them leave a view so that they are answered
from the one table in web.errors, like those raised here.
"""
from __future__ import annotations

import functools
import logging
import time
import uuid
from typing import Any, Callable

from chalice.app import Chalice, Request, Response

from chalicelib.core import jsonutil
from chalicelib.core import logs
from chalicelib.web import ratelimit
from chalicelib.accounts.standing import DELETING, FINISH_DELETION, TOKEN_REFUSALS
from chalicelib.core.errors import ConfigurationError, DomainError, PayloadTooLarge, Unauthorized
from chalicelib.core.settings import get_settings
from chalicelib.accounts.tokens import Identity
from chalicelib.core.validation import Schema, parse_body
from chalicelib.web import errors

logger = logging.getLogger("api")

# API Gateway accepts 10 MB and Lambda 6 MB; nothing we serve needs more than this.
GLOBAL_MAX_BODY_BYTES = 5 * 1024 * 1024
CORS_ALLOW_HEADERS = "Authorization,Content-Type,Idempotency-Key"
CORS_EXPOSE_HEADERS = "Retry-After,X-RateLimit-Limit,X-RateLimit-Remaining,X-Request-Id"
CORS_MAX_AGE = "600"


def json_body(request: Request, schema: Schema) -> dict[str, Any]:
    """The request's JSON body, validated against the route's declared schema."""
    return parse_body(request.raw_body, schema)


def identity(request: Request) -> Identity:
    """Who is calling, as the authorizer established it (never re-read from the token)."""
    context = (request.context or {}).get("authorizer") or {}
    user_id = context.get("user_id")
    if not user_id:
        raise Unauthorized()
    return Identity(user_id=user_id, email=context.get("email", ""), role=context.get("role", "user"))


def refuse_ended_session(authorizer_context: dict[str, Any], route: tuple[str, str]) -> None:
    """401 for a correctly signed token the authorizer found unusable (deleted or suspended
    account, ended session): every authenticated route, before any work."""
    refusal = authorizer_context.get("refusal")
    if not refusal:
        return
    if refusal == DELETING:
        if route == FINISH_DELETION:
            return  # an interrupted deletion is sent again (privacy.delete_account)
        refusal = "account_not_found"
    raise Unauthorized(TOKEN_REFUSALS.get(refusal, "Authentication required"), code=refusal)


def client_ip(request: Request) -> str | None:
    """The caller's address as API Gateway saw it (never a client-supplied header)."""
    return ((request.context or {}).get("identity") or {}).get("sourceIp")


def query_param(request: Request, name: str) -> str | None:
    return (request.query_params or {}).get(name)


def respond(body: Any = None, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    merged = {"Content-Type": "application/json", **(headers or {})}
    if body is None:
        return Response(body="", status_code=status, headers=merged)
    return Response(body=jsonutil.dumps(body), status_code=status, headers=merged)


def respond_text(text: str, headers: dict[str, str], status: int = 200) -> Response:
    """A non-JSON answer (the console's page and assets, a CSV export); headers name its type.

    The headers are copied: the middleware adds per-request ones (CORS, request id) to them."""
    return Response(body=text, status_code=status, headers=dict(headers))


def error_response(answer: errors.Answer) -> Response:
    return respond(answer.body, status=answer.status, headers=answer.headers)


def answering_errors(view: Callable[..., Any]) -> Callable[..., Any]:
    """A view whose domain and configuration errors become their answers.

    Chalice turns any exception leaving a view into its own 500 before the middleware
    sees it (only its ChaliceUnhandledError passes), so the answer is given here.
    """

    @functools.wraps(view)
    def answering(*args: Any, **kwargs: Any) -> Any:
        try:
            return view(*args, **kwargs)
        except (DomainError, ConfigurationError) as error:
            return error_response(errors.answer(error))

    return answering


class Api(Chalice):
    """Chalice whose routes answer domain errors (`answering_errors`)."""

    def route(self, path: str, **kwargs: Any) -> Callable[..., Any]:
        register = super().route(path, **kwargs)

        def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
            register(answering_errors(view))
            return view

        return decorator


def _origin(request: Request) -> str | None:
    headers = request.headers or {}
    return headers.get("origin")


def cors_headers(origin: str | None, preflight: bool = False) -> dict[str, str]:
    """CORS headers for an allowed origin, echoed; nothing at all for any other origin."""
    if not origin:
        return {}
    try:
        allowed = get_settings().allowed_origins
    except ConfigurationError:  # already answered with a 503; never crash the middleware
        return {}
    if origin not in allowed:
        return {}
    headers = {
        "Access-Control-Allow-Origin": origin,
        "Vary": "Origin",
        "Access-Control-Expose-Headers": CORS_EXPOSE_HEADERS,
    }
    if preflight:
        headers.update(
            {
                "Access-Control-Allow-Methods": "GET,POST,PUT,DELETE,OPTIONS",
                "Access-Control-Allow-Headers": CORS_ALLOW_HEADERS,
                "Access-Control-Max-Age": CORS_MAX_AGE,
            }
        )
    return headers


def preflight(request: Request) -> Response:
    """OPTIONS for every path: allowed origins get the CORS grant, others nothing."""
    headers = cors_headers(_origin(request), preflight=True)
    if not headers:
        return respond(
            {"error": "Origin not allowed", "message": "Origin not allowed", "code": "origin_not_allowed"},
            status=403,
        )
    return respond(None, status=204, headers=headers)


# Chalice answers some requests itself ({"Code": ..., "Message": ...}); same envelope as ours.
CHALICE_ERRORS = {
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    415: ("unsupported_media_type", "Content-Type must be application/json"),
}


def _is_chalice_error(response: Response) -> bool:
    """Chalice's own error bodies, or (with app.debug on) a plain-text traceback."""
    body = response.body
    if isinstance(body, dict) and "Code" in body:
        return True
    content_type = {k.lower(): v for k, v in response.headers.items()}.get("content-type", "")
    return response.status_code >= 500 and content_type.startswith("text/plain")


def _from_chalice_error(response: Response) -> Response:
    if response.status_code >= 500:
        return _internal_error()
    code, message = CHALICE_ERRORS.get(response.status_code, ("bad_request", "Bad request"))
    headers = {k: v for k, v in response.headers.items() if k.lower() == "allow"}
    return respond(errors.envelope(code, message), status=response.status_code, headers=headers)


def _internal_error() -> Response:
    return error_response(errors.internal_error())


def handle(request: Request, get_response: Callable[[Request], Response]) -> Response:
    """The HTTP middleware: context, rate limit, body limit, error envelope, CORS, access log."""
    started = time.monotonic()
    context = request.context or {}
    request_id = context.get("requestId") or uuid.uuid4().hex
    authorizer = context.get("authorizer") or {}
    limited: ratelimit.Decision | None = None
    logs.start_invocation(
        "api_handler",
        request_id=request_id,
        route=f"{request.method} {context.get('resourcePath', request.path)}",
        user_id=authorizer.get("user_id"),
    )
    try:
        get_settings()  # built first: its secrets are registered with the log redaction
        refuse_ended_session(authorizer, (request.method, context.get("resourcePath", request.path)))
        # Before the view and before reading the body: over the limit, no work is done.
        limited = ratelimit.check(
            request.method,
            context.get("resourcePath", request.path),
            user_id=authorizer.get("user_id"),
            source_ip=client_ip(request),
        )
        raw = request.raw_body or b""
        if len(raw) > GLOBAL_MAX_BODY_BYTES:
            raise PayloadTooLarge(limit=GLOBAL_MAX_BODY_BYTES)
        response = get_response(request)
        if _is_chalice_error(response):  # Chalice already logged any exception (redacted)
            response = _from_chalice_error(response)
    except (DomainError, ConfigurationError) as error:
        response = error_response(errors.answer(error))
    except Exception:
        logger.exception("unhandled error")
        response = _internal_error()
    if limited is not None:
        response.headers.update(limited.headers())
    response.headers.update(cors_headers(_origin(request)))
    response.headers.setdefault("Vary", "Origin")  # caches must key on Origin, allowed or not
    response.headers["X-Request-Id"] = request_id
    logs.log_event(
        logger,
        "request",
        method=request.method,
        path=request.path,
        status=response.status_code,
        latency_ms=round((time.monotonic() - started) * 1000, 1),
    )
    return response
