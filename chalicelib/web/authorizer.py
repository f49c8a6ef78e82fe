"""The JWT custom authorizer: verifies the access token, then the account's standing.

A token whose signature or claims are wrong is refused here (the gateway's 401). A correctly
signed token is checked against the user item (one read, `standing.token_refusal`): a
deleted or suspended account, or a token older than the user's token generation, is allowed
through with a `refusal` code in the context, and the HTTP middleware (`web.handle`) answers
401 with that code before any route runs. So every authenticated route refuses such a token
the same way, in our envelope, with CORS for every allowed origin; API Gateway caches either
answer per token for AUTHORIZER_TTL_SECONDS, which bounds how long a revoked token lasts.
An expired token of ours takes the same path (`token_expired`), without the read.
"""
from __future__ import annotations

import logging
import sys

from chalice.app import AuthResponse

from chalicelib.core import logs
from chalicelib.accounts.standing import token_refusal
from chalicelib.core.errors import Unauthorized
from chalicelib.accounts.tokens import TokenExpired, bearer_token, verify_access_token

logger = logging.getLogger(__name__)

UNAUTHORIZED_BODY = (
    b'{"error":"Authentication required","message":"Authentication required",'
    b'"code":"unauthorized"}'
)


def _unauthorized() -> Exception:
    """The exception that makes the gateway answer 401.

    API Gateway turns an authorizer failure whose message is exactly "Unauthorized" into
    a 401. Chalice's local gateway (chalice local, chalice.test.Client) only knows its own
    NotAuthorizedError; it is already loaded there, and never on Lambda.
    """
    local = sys.modules.get("chalice.local")
    if local is not None:
        return local.NotAuthorizedError(
            {"x-amzn-ErrorType": "UnauthorizedException", "Content-Type": "application/json"},
            UNAUTHORIZED_BODY,
        )
    return Exception("Unauthorized")


def authorize(authorization_header: str | None) -> AuthResponse:
    logs.start_invocation("jwt_auth")
    try:
        token = bearer_token(authorization_header)
        identity = verify_access_token(token)
        refusal, role = token_refusal(identity)
    except TokenExpired as expired:
        # Ours but too old: answered by the app, so a client on any allowed origin can read
        # the 401 and refresh (the gateway's own 401 carries only one origin). No read needed.
        identity = expired.identity
        refusal, role = expired.code, identity.role
    except Unauthorized as error:
        logs.log_event(logger, "authorizer.denied", reason=error.code)
        raise _unauthorized() from None
    context = {"user_id": identity.user_id, "email": identity.email, "role": role}
    if refusal:
        logs.log_event(logger, "authorizer.refused", reason=refusal)
        context["refusal"] = refusal
    return AuthResponse(routes=["*"], principal_id=identity.user_id, context=context)
