"""The HTTP API, the JWT authorizer, the scheduled cleanup and the catch-up queue worker.

A table of routes: each parses its input, calls one chalicelib function and returns.
Nothing here talks to AWS or reads a required setting at import time.
"""
from __future__ import annotations

import os

from chalice import Chalice
from chalice.app import AuthRequest, Request, Response

from chalicelib import accounts, health
from chalicelib.authorizer import authorize
from chalicelib.settings import APP_NAME, get_settings
from chalicelib.web import handle, identity, json_body, preflight, respond

# configure_logs=False: Chalice would otherwise add its own plain-text stdout handler to
# app.log, printing every record (tracebacks included) a second time, unredacted.
app = Chalice(app_name=APP_NAME, configure_logs=False)
app.log.propagate = True  # our JSON handler on the root logger formats (and redacts) it


@app.middleware("http")
def http_middleware(event: Request, get_response) -> Response:  # type: ignore[no-untyped-def]
    return handle(event, get_response)


@app.authorizer(ttl_seconds=min(int(os.environ.get("AUTHORIZER_TTL_SECONDS", "300")), 300))
def jwt_auth(auth_request: AuthRequest):  # type: ignore[no-untyped-def]
    return authorize(auth_request.token)


def request() -> Request:
    return app.current_request  # type: ignore[return-value]


# --- health ---------------------------------------------------------------------------


@app.route("/health", methods=["GET"])
def get_health() -> Response:
    status, body = health.check()
    return respond(body, status=status)


# --- accounts -------------------------------------------------------------------------


@app.route("/auth/register", methods=["POST"])
def register() -> Response:
    body = json_body(request(), accounts.REGISTER_SCHEMA)
    session = accounts.register(get_settings(), body["email"], body["password"], body["name"])
    return respond(session, status=201)


@app.route("/auth/login", methods=["POST"])
def login() -> Response:
    body = json_body(request(), accounts.LOGIN_SCHEMA)
    return respond(accounts.login(get_settings(), body["email"], body["password"]))


@app.route("/auth/refresh", methods=["POST"])
def refresh() -> Response:
    body = json_body(request(), accounts.REFRESH_SCHEMA)
    return respond(accounts.refresh(get_settings(), body["refresh_token"]))


@app.route("/auth/logout", methods=["POST"])
def logout() -> Response:
    body = json_body(request(), accounts.REFRESH_SCHEMA)
    accounts.logout(body["refresh_token"])
    return respond(None, status=204)


@app.route("/auth/user", methods=["GET"], authorizer=jwt_auth)
def get_user() -> Response:
    user = accounts.get_user(identity(request()).user_id)
    return respond({"user": accounts.public_user(user)})


# --- preflight ------------------------------------------------------------------------
# Every path answers OPTIONS itself (no authorizer), so CORS follows the ALLOWED_ORIGINS
# allow-list exactly instead of API Gateway's single static origin. Keep this last.

for _path in list(app.routes):
    if "OPTIONS" not in app.routes[_path]:
        app.route(_path, methods=["OPTIONS"], name=f"preflight{_path}")(
            lambda: preflight(request())
        )
