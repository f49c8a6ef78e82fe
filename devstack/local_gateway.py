"""Make `chalice local` answer like our deployed API Gateway for the errors it makes itself.

On AWS, API Gateway answers an authorizer's denial, a missing token and an unknown path
before our code runs; the deployment gives those answers our error envelope and CORS
headers (Gateway Responses, `infra.template.GATEWAY_RESPONSES`). chalice local answers
them in its own shapes (`{"message": "Unauthorized"}`, 403 "Missing Authentication Token"
echoing the Authorization header). This applies the same Gateway Responses locally, so a
developer's extension sees on a laptop exactly what it will see in production.
"""
from __future__ import annotations

from typing import Any



def gateway_response_type(code: int, headers: dict[str, str]) -> str | None:
    """Which of our Gateway Responses API Gateway would use for chalice local's error.

    chalice local raises 401 for a missing or refused token, 403 AccessDeniedException for
    a policy that does not allow the route, and any other 403 for an unknown path (whose
    message echoes the Authorization header when one was sent).
    """
    if code == 401:
        return "UNAUTHORIZED"
    if code == 403:
        denied = headers.get("x-amzn-ErrorType") == "AccessDeniedException"
        return "ACCESS_DENIED" if denied else "MISSING_AUTHENTICATION_TOKEN"
    return None


def render(response_type: str, request_id: str, allowed_origins: tuple[str, ...]) -> tuple[int, dict[str, str], str]:
    """Status, headers and body exactly as the deployed Gateway Response renders them."""
    from chalicelib.web.middleware import CORS_EXPOSE_HEADERS
    from infra.template import GATEWAY_RESPONSES, gateway_response_body

    spec = GATEWAY_RESPONSES[response_type]
    headers = {"Content-Type": "application/json", "Vary": "Origin"}
    if allowed_origins:  # deployed: the first allowed origin, statically
        headers["Access-Control-Allow-Origin"] = allowed_origins[0]
        headers["Access-Control-Expose-Headers"] = CORS_EXPOSE_HEADERS
    body = gateway_response_body(spec["code"], spec["message"]).replace("$context.requestId", request_id)
    return int(spec["status"]), headers, body


def install() -> None:
    """Route chalice local's own error responses through `render` (idempotent)."""
    import chalice.local

    from chalicelib.core.settings import get_settings

    handler = chalice.local.ChaliceRequestHandler
    if getattr(handler, "_gateway_responses_installed", False):
        return
    original = handler._send_error_response

    def send_error_response(self: Any, error: Any) -> None:
        kind = gateway_response_type(error.CODE, error.headers or {})
        if kind is None:
            return original(self, error)
        status, headers, body = render(
            kind, (error.headers or {}).get("x-amzn-RequestId", ""), get_settings().allowed_origins
        )
        self._send_http_response(status, headers, body)

    handler._send_error_response = send_error_response
    handler._gateway_responses_installed = True
