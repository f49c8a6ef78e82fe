"""The HTTP API, the JWT authorizer, the scheduled cleanup and the catch-up queue worker.

A table of routes: each parses its input, calls one chalicelib function and returns.
Nothing here talks to AWS or reads a required setting at import time.
"""
from __future__ import annotations

from chalice import Rate
from chalice.app import AuthRequest, Request, Response

from chalicelib.accounts import auth
from chalicelib.accounts import privacy
from chalicelib.catchup import history
from chalicelib.catchup import jobs
from chalicelib.catchup import uploads
from chalicelib.credits import statement
from chalicelib.live import ask
from chalicelib.live import captions
from chalicelib.live import twitch_lookup
from chalicelib.ops import analytics
from chalicelib.ops import console
from chalicelib.ops import health
from chalicelib.ops import support
from chalicelib.web import legacy
from chalicelib.catchup import worker
from chalicelib.ops import janitor
from chalicelib.web.authorizer import authorize
from chalicelib.billing import catalogue as billing_catalogue
from chalicelib.billing import checkout as billing_checkout
from chalicelib.billing import webhooks as billing_webhooks
from chalicelib.core.settings import APP_NAME, read_setting, resource_name
from chalicelib.web.middleware import (
    Api,
    client_ip,
    handle,
    identity,
    json_body,
    preflight,
    query_param,
    respond,
    respond_text,
)

# Api: Chalice whose routes answer domain errors (web.errors). configure_logs=False: Chalice
# would otherwise add its own plain-text stdout handler to app.log, printing every record
# (tracebacks included) a second time, unredacted.
app = Api(app_name=APP_NAME, configure_logs=False)
app.log.propagate = True  # our JSON handler on the root logger formats (and redacts) it


@app.middleware("http")
def http_middleware(event: Request, get_response) -> Response:  # type: ignore[no-untyped-def]
    return handle(event, get_response)


@app.authorizer(ttl_seconds=read_setting("AUTHORIZER_TTL_SECONDS"))
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
    body = json_body(request(), auth.REGISTER_SCHEMA)
    session = auth.register(body["email"], body["password"], body["name"])
    return respond(session, status=201)


@app.route("/auth/login", methods=["POST"])
def login() -> Response:
    body = json_body(request(), auth.LOGIN_SCHEMA)
    session = auth.login(body["email"], body["password"], client_ip(request()))
    return respond(session)


@app.route("/auth/refresh", methods=["POST"])
def refresh() -> Response:
    body = json_body(request(), auth.REFRESH_SCHEMA)
    return respond(auth.refresh(body["refresh_token"]))


@app.route("/auth/logout", methods=["POST"])
def logout() -> Response:
    body = json_body(request(), auth.REFRESH_SCHEMA)
    auth.logout(body["refresh_token"])
    return respond(None, status=204)


@app.route("/auth/password", methods=["POST"], authorizer=jwt_auth)
def change_password() -> Response:
    body = json_body(request(), auth.CHANGE_PASSWORD_SCHEMA)
    session = auth.change_password(
        identity(request()).user_id, body["current_password"], body["new_password"]
    )
    return respond(session)


@app.route("/auth/user", methods=["GET"], authorizer=jwt_auth)
def get_user() -> Response:
    user = auth.get_user(identity(request()).user_id)
    return respond({"user": auth.public_user(user)})


# --- credits --------------------------------------------------------------------------


@app.route("/credits/balance", methods=["GET"], authorizer=jwt_auth)
def credits_balance() -> Response:
    return respond(statement.balance(identity(request()).user_id))


@app.route("/credits/transactions", methods=["GET"], authorizer=jwt_auth)
def credits_transactions() -> Response:
    return respond(
        statement.transactions(
            identity(request()).user_id,
            limit=query_param(request(), "limit"),
            cursor=query_param(request(), "cursor"),
        )
    )


# --- live captions, ask, twitch -------------------------------------------------------


@app.route("/transcription/stream", methods=["POST"], authorizer=jwt_auth)
def transcription_stream() -> Response:
    body = json_body(request(), captions.STREAM_SCHEMA)
    status, payload = captions.handle(identity(request()).user_id, body, request().headers)
    return respond(payload, status=status)


@app.route("/transcription/ask", methods=["POST"], authorizer=jwt_auth)
def transcription_ask() -> Response:
    body = json_body(request(), ask.schema())
    status, payload = ask.handle(identity(request()).user_id, body, request().headers)
    return respond(payload, status=status)


@app.route("/twitch/stream", methods=["GET"], authorizer=jwt_auth)
def twitch_stream() -> Response:
    return respond(twitch_lookup.lookup(request().query_params))


# --- catch-up and history -------------------------------------------------------------


@app.route("/transcription/catchup/upload", methods=["POST"], authorizer=jwt_auth)
def catchup_upload() -> Response:
    body = json_body(request(), uploads.UPLOAD_SCHEMA)
    return respond(
        uploads.create_upload(identity(request()).user_id, body["content_type"], body["file_size"])
    )


@app.route("/transcription/catchup", methods=["POST"], authorizer=jwt_auth)
def catchup_submit() -> Response:
    body = json_body(request(), jobs.SUBMIT_SCHEMA)
    status, payload = jobs.handle_submit(identity(request()).user_id, body, request().headers)
    return respond(payload, status=status)


@app.route("/transcription/catchup/{job_id}", methods=["GET"], authorizer=jwt_auth)
def catchup_status(job_id: str) -> Response:
    return respond(jobs.get_job(identity(request()).user_id, job_id))


@app.route("/transcription/history", methods=["GET"], authorizer=jwt_auth)
def transcription_history() -> Response:
    return respond(history.list_page(identity(request()).user_id, request().query_params))


# The queue's name and the poller's concurrency are fixed when Chalice packages the app:
# STAGE and CATCHUP_MAX_CONCURRENCY come from the stage's environment_variables in
# .chalice/config.json. The poller never runs more batches than the worker's reserved
# concurrency, so a job is never throttled into the dead-letter queue. 300 s (config.json).
@app.on_sqs_message(
    queue=resource_name(read_setting("STAGE"), "catchup"),
    batch_size=1,
    maximum_concurrency=read_setting("CATCHUP_MAX_CONCURRENCY"),
)
def catchup_worker(event) -> None:  # type: ignore[no-untyped-def]
    worker.handle_event(event.to_dict(), event.context)


# --- billing --------------------------------------------------------------------------


@app.route("/credits/packages", methods=["GET"])
def credit_packages() -> Response:
    return respond(billing_catalogue.listing())


@app.route("/credits/purchase", methods=["POST"], authorizer=jwt_auth)
def credits_purchase() -> Response:
    body = json_body(request(), billing_checkout.PURCHASE_SCHEMA)
    status, payload = billing_checkout.handle_purchase(
        identity(request()).user_id, body, request().headers
    )
    return respond(payload, status=status)


@app.route("/credits/subscribe", methods=["POST"], authorizer=jwt_auth)
def credits_subscribe() -> Response:
    body = json_body(request(), billing_checkout.SUBSCRIBE_SCHEMA)
    status, payload = billing_checkout.handle_subscribe(
        identity(request()).user_id, body, request().headers
    )
    return respond(payload, status=status)


@app.route("/credits/portal", methods=["POST"], authorizer=jwt_auth)
def credits_portal() -> Response:
    return respond(billing_checkout.portal(identity(request()).user_id))


# Stripe calls this: no authorizer (the signature on the raw body is the authentication).
@app.route("/webhooks/stripe", methods=["POST"])
def stripe_webhook() -> Response:
    raw = request().raw_body
    signature = request().headers.get("stripe-signature")
    return respond(billing_webhooks.receive(raw, signature))


# --- privacy --------------------------------------------------------------------------


@app.route("/auth/user/export", methods=["GET"], authorizer=jwt_auth)
def export_user() -> Response:
    return respond(privacy.export(identity(request()).user_id))


@app.route("/auth/user", methods=["DELETE"], authorizer=jwt_auth)
def delete_user() -> Response:
    body = json_body(request(), privacy.DELETE_SCHEMA)
    privacy.delete_account(identity(request()).user_id, body["password"])
    return respond(None, status=204)


# --- analytics ------------------------------------------------------------------------


@app.route("/analytics/usage", methods=["GET"], authorizer=jwt_auth)
def analytics_usage() -> Response:
    return respond(analytics.usage(identity(request()).user_id, request().query_params))


@app.route("/analytics/costs", methods=["GET"], authorizer=jwt_auth)
def analytics_costs() -> Response:
    return respond(analytics.costs(identity(request()), request().query_params))


@app.route("/analytics/costs/top-users", methods=["GET"], authorizer=jwt_auth)
def analytics_top_users() -> Response:
    return respond(analytics.top_users(identity(request()), request().query_params))


# --- operator console -----------------------------------------------------------------
# The page and its assets are public (they hold no data); every /admin/api route needs an
# admin's token (support.actor_of) and appends to the audit log.


@app.route("/admin", methods=["GET"])
def admin_console() -> Response:
    return respond_text(console.page(), console.PAGE_HEADERS)


@app.route("/admin/assets/{name}", methods=["GET"])
def admin_console_asset(name: str) -> Response:
    body, headers = console.asset(name)
    return respond_text(body, headers)


def admin() -> support.Actor:
    return support.actor_of(identity(request()))


@app.route("/admin/api/users", methods=["GET"], authorizer=jwt_auth)
def admin_find_users() -> Response:
    return respond(support.find_users(admin(), request().query_params))


@app.route("/admin/api/users/{user_id}", methods=["GET"], authorizer=jwt_auth)
def admin_user(user_id: str) -> Response:
    return respond(support.user_detail(admin(), user_id))


@app.route("/admin/api/users/{user_id}/ledger", methods=["GET"], authorizer=jwt_auth)
def admin_user_ledger(user_id: str) -> Response:
    return respond(support.user_ledger(admin(), user_id, request().query_params))


@app.route("/admin/api/users/{user_id}/grant", methods=["POST"], authorizer=jwt_auth)
def admin_grant(user_id: str) -> Response:
    actor = admin()
    body = json_body(request(), support.ADJUST_SCHEMA)
    status, payload = support.grant_once(request().headers, actor, user_id, body)
    return respond(payload, status=status)


@app.route("/admin/api/users/{user_id}/deduct", methods=["POST"], authorizer=jwt_auth)
def admin_deduct(user_id: str) -> Response:
    actor = admin()
    body = json_body(request(), support.ADJUST_SCHEMA)
    status, payload = support.deduct_once(request().headers, actor, user_id, body)
    return respond(payload, status=status)


@app.route("/admin/api/users/{user_id}/suspend", methods=["POST"], authorizer=jwt_auth)
def admin_suspend(user_id: str) -> Response:
    actor = admin()
    body = json_body(request(), support.STATUS_SCHEMA)
    return respond(support.set_status(actor, user_id, auth.SUSPENDED, body["reason"]))


@app.route("/admin/api/users/{user_id}/reactivate", methods=["POST"], authorizer=jwt_auth)
def admin_reactivate(user_id: str) -> Response:
    actor = admin()
    body = json_body(request(), support.STATUS_SCHEMA)
    return respond(support.set_status(actor, user_id, auth.ACTIVE, body["reason"]))


@app.route("/admin/api/purchases/{transaction_id}/refund", methods=["POST"], authorizer=jwt_auth)
def admin_refund(transaction_id: str) -> Response:
    actor = admin()
    body = json_body(request(), support.REFUND_SCHEMA)
    status, payload = support.refund_once(request().headers, actor, transaction_id, body)
    return respond(payload, status=status)


@app.route("/admin/api/attention", methods=["GET"], authorizer=jwt_auth)
def admin_attention() -> Response:
    return respond(support.attention(admin()))


@app.route("/admin/api/audit", methods=["GET"], authorizer=jwt_auth)
def admin_audit() -> Response:
    return respond(support.audit_log(admin(), request().query_params))


@app.route("/admin/api/audit/export", methods=["GET"], authorizer=jwt_auth)
def admin_audit_export() -> Response:
    return respond_text(support.audit_export(admin()), console.CSV_HEADERS)


@app.route("/admin/api/business", methods=["GET"], authorizer=jwt_auth)
def admin_business() -> Response:
    return respond(support.business(admin(), request().query_params))


# --- scheduled cleanup ----------------------------------------------------------------
# Its own Lambda (`cleanup` in config.json: 300 s, reserved concurrency 1); hourly.


@app.schedule(Rate(1, unit=Rate.HOURS))
def cleanup(event) -> dict:  # type: ignore[no-untyped-def]
    return janitor.scheduled(event.context)


# --- routes the published extension knows, answered 410 with what to do instead ----------


def _gone(method: str, path: str):  # type: ignore[no-untyped-def]
    def view() -> Response:
        raise legacy.gone(method, path)

    return view


for _method, _path in legacy.GONE_ROUTES:
    app.route(_path, methods=[_method], name="gone" + _path.replace("/", "_").replace("-", "_"))(
        _gone(_method, _path)
    )


# --- preflight ------------------------------------------------------------------------
# Every path answers OPTIONS itself (no authorizer), so CORS follows the ALLOWED_ORIGINS
# allow-list exactly instead of API Gateway's single static origin. Keep this last.

for _path in list(app.routes):
    if "OPTIONS" not in app.routes[_path]:
        app.route(_path, methods=["OPTIONS"], name=f"preflight{_path}")(
            lambda **_path_params: preflight(request())  # /jobs/{job_id} passes job_id=
        )
