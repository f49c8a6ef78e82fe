"""The JWT custom authorizer: verifies the access token without touching DynamoDB."""
from __future__ import annotations

import logging
import sys

from chalice.app import AuthResponse

from chalicelib import logs
from chalicelib.errors import Unauthorized
from chalicelib.settings import get_settings
from chalicelib.tokens import bearer_token, verify_access_token

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
        identity = verify_access_token(get_settings(), bearer_token(authorization_header))
    except Unauthorized as refused:
        logs.log_event(logger, "authorizer.denied", reason=refused.code)
        raise _unauthorized() from None
    return AuthResponse(
        routes=["*"],
        principal_id=identity.user_id,
        context={"user_id": identity.user_id, "email": identity.email, "role": identity.role},
    )
