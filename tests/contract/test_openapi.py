"""openapi.yaml, the API's machine-readable description, kept in step with the code.

(a) It is a valid OpenAPI 3.1 document. (b) It describes exactly the routes of `app.app`
(the generated OPTIONS preflights aside), with the authentication, rate limiting and
error statuses the code gives them. (c) Each request body is the Schema its route
validates with (types, required fields, lengths, bounds, patterns, unknown fields), and
the query, path and header parameters carry the limits the code enforces; the (ext)
marks are exactly API.md's (ext) rows. (d) Real answers, driven through every operation
and through the common failures, validate against it.

The expected values are read from the code (the Schema objects, the modules' limits,
`idempotency.run` call sites), so changing either side without the other fails here.
"""
from __future__ import annotations

import base64
import copy
import dataclasses
import inspect
import re
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from chalicelib.catchup import history
from chalicelib.catchup import jobs
from chalicelib.credits import statement
from chalicelib.live import twitch_lookup
from chalicelib.ops import analytics
from chalicelib.ops import audit
from chalicelib.ops import support
from chalicelib.web import idempotency
from chalicelib.web import legacy
from chalicelib.web import ratelimit
from chalicelib.core.validation import Field, Schema
from devstack.fakes.audio import make_wav
from devstack.fakes.stripe_signing import build_event, encode_event, sign
from tests.conftest import PASSWORD, STRIPE_WEBHOOK_SECRET, unique_email
from tests.contract.conftest import operations, resolve

ROOT = Path(__file__).resolve().parents[2]
BEARER = [{"bearerAuth": []}]
ENVELOPE = "#/components/schemas/Error"

# ----- the code's side ------------------------------------------------------------------------


def app_operations() -> dict[tuple[str, str], Any]:
    """(method, path) -> Chalice RouteEntry for every route except the generated preflights."""
    import app

    return {
        (method.lower(), path): entry
        for path, methods in app.app.routes.items()
        for method, entry in methods.items()
        if method != "OPTIONS"
    }


JSON_BODY = re.compile(r"json_body\(request\(\),\s*([\w.]+)(\(\))?\)")


def declared_schema(entry: Any) -> Schema | None:
    """The Schema a view validates its body with (`json_body(request(), <schema>)` in app.py)."""
    import app

    match = JSON_BODY.search(inspect.getsource(entry.view_function))
    if match is None:
        return None
    target: Any = app
    for name in match.group(1).split("."):
        target = getattr(target, name)
    return target() if match.group(2) else target


def reads_query(entry: Any) -> bool:
    source = inspect.getsource(entry.view_function)
    return "query_param(" in source or "query_params" in source


IDEMPOTENT_ROUTE = re.compile(r'idempotency\.run\(\s*headers,\s*[\w.]+,\s*"([A-Z]+) (/[^" ]*)')


def idempotent_operations_in_code() -> set[tuple[str, str]]:
    """The routes that pass their request through `idempotency.run` (honour Idempotency-Key)."""
    found: set[tuple[str, str]] = set()
    for module in sorted((ROOT / "chalicelib").rglob("*.py")):
        found |= {(method.lower(), path) for method, path in IDEMPOTENT_ROUTE.findall(module.read_text())}
    return found


def anchored(pattern: str) -> str:
    """The code matches with `re.fullmatch`; the document's ECMA patterns are anchored."""
    return f"^(?:{pattern})$"


JSON_TYPES = {str: "string", int: "integer", bool: "boolean", float: "number", list: "array", dict: "object"}
CHECKED = ("type", "maxLength", "minLength", "maxItems", "minItems", "minimum", "maximum", "pattern",
           "enum", "default")


def expected_property(spec_field: Field, *, nullable: bool) -> dict[str, Any]:
    """What the document must say about one Schema field (`null` counts as absent)."""
    kind = JSON_TYPES[spec_field.kind]
    out: dict[str, Any] = {"type": [kind, "null"] if nullable else kind}
    if spec_field.kind in (str, list):
        prefix = "Length" if spec_field.kind is str else "Items"
        out["max" + prefix] = spec_field.max_length
        if spec_field.min_length:
            out["min" + prefix] = spec_field.min_length
    if spec_field.minimum is not None:
        out["minimum"] = spec_field.minimum
    if spec_field.maximum is not None:
        out["maximum"] = spec_field.maximum
    if spec_field.pattern:
        out["pattern"] = anchored(spec_field.pattern)
    if spec_field.choices is not None:
        out["enum"] = list(spec_field.choices) + ([None] if nullable else [])
    if spec_field.default is not None:
        out["default"] = spec_field.default
    return out


def project(described: dict[str, Any]) -> dict[str, Any]:
    return {key: described[key] for key in CHECKED if key in described}


def body_mismatches(spec: dict[str, Any], operation: dict[str, Any], schema: Schema) -> list[str]:
    """How the operation's requestBody differs from the Schema its route validates with."""
    body = operation.get("requestBody")
    if body is None:
        return ["no requestBody"]
    problems = []
    if body.get("required") is not True:
        problems.append("requestBody is not required")
    if body.get("x-max-body-bytes") != schema.max_body_bytes:
        problems.append(f"x-max-body-bytes {body.get('x-max-body-bytes')} != {schema.max_body_bytes}")
    described = resolve(spec, body["content"]["application/json"]["schema"])
    closed = described.get("additionalProperties") is False
    if closed == schema.allow_unknown:
        problems.append(f"additionalProperties false is {closed}, allow_unknown is {schema.allow_unknown}")
    required = sorted(name for name, spec_field in schema.fields.items() if spec_field.required)
    if sorted(described.get("required", [])) != required:
        problems.append(f"required {sorted(described.get('required', []))} != {required}")
    properties = described.get("properties", {})
    if set(properties) != set(schema.fields) | schema.ignored:
        problems.append(f"properties {sorted(properties)} != fields {sorted(schema.fields | schema.ignored)}")
    for name in schema.ignored & set(properties):
        if resolve(spec, properties[name]).get("x-ignored") is not True or project(properties[name]):
            problems.append(f"{name}: an ignored field is marked x-ignored, without type constraints")
    for name, spec_field in schema.fields.items():
        if name in properties:
            got = project(resolve(spec, properties[name]))
            want = expected_property(spec_field, nullable=not spec_field.required)
            if got != want:
                problems.append(f"{name}: {got} != {want}")
    return problems


# ----- (a) a valid OpenAPI 3.1 document -------------------------------------------------------


def test_the_document_is_valid_openapi_3_1(spec):
    from openapi_spec_validator import OpenAPIV31SpecValidator, validate

    assert spec["openapi"].startswith("3.1.")
    validate(spec, cls=OpenAPIV31SpecValidator)


def test_a_broken_document_is_refused(spec):
    """The validity check is real: a bad type or a dangling $ref is reported."""
    from openapi_spec_validator import OpenAPIV31SpecValidator, validate
    from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

    mistyped = copy.deepcopy(spec)
    mistyped["components"]["schemas"]["Balance"]["properties"]["balance"]["type"] = "int"
    with pytest.raises(OpenAPIValidationError):
        validate(mistyped, cls=OpenAPIV31SpecValidator)
    dangling = copy.deepcopy(spec)
    dangling["paths"]["/health"]["get"]["responses"]["200"]["content"]["application/json"]["schema"] = {
        "$ref": "#/components/schemas/NoSuchSchema"}
    with pytest.raises(Exception, match="NoSuchSchema"):
        validate(dangling, cls=OpenAPIV31SpecValidator)


# ----- (b) every route, nothing else ----------------------------------------------------------


def test_every_route_is_in_the_document_and_nothing_else(spec):
    in_app = set(app_operations())
    in_spec = {(method, path) for method, path, _ in operations(spec)}
    assert sorted(in_app - in_spec) == [], "routes of app.py missing from openapi.yaml"
    assert sorted(in_spec - in_app) == [], "operations in openapi.yaml that app.py does not have"


def test_preflights_exist_for_every_path_and_are_described_once(spec):
    import app

    assert all("OPTIONS" in methods for methods in app.app.routes.values())
    assert not [path for method, path, _ in operations(spec) if method == "options"]
    assert "OPTIONS" in spec["info"]["description"] and "origin_not_allowed" in spec["info"]["description"]


def test_authentication_follows_the_authorizer(spec):
    for (method, path), entry in app_operations().items():
        operation = spec["paths"][path][method]
        security = operation.get("security", spec["security"])
        if entry.authorizer is not None:
            assert security == BEARER, f"{method} {path} needs the bearer token"
            assert "401" in operation["responses"], f"{method} {path} must document 401"
        else:
            assert security == [], f"{method} {path} is public"


def test_rate_limited_operations_document_429(spec):
    for (method, path), entry in app_operations().items():
        limited = ratelimit.route_class(method.upper(), path, entry.authorizer is not None) != ratelimit.EXEMPT
        assert ("429" in spec["paths"][path][method]["responses"]) == limited, f"{method} {path}"


def test_every_error_response_is_the_envelope(spec):
    for method, path, operation in operations(spec):
        assert {"500"} <= set(operation["responses"]), f"{method} {path} must document 500"
        for status, response in operation["responses"].items():
            if int(status) < 400 or (path == "/health" and status == "503"):
                continue
            schema = resolve(spec, response)["content"]["application/json"]["schema"]
            assert schema == {"$ref": ENVELOPE}, f"{method} {path} {status} is not the error envelope"


def test_success_statuses_match_the_code(spec):
    """201 register, 202 catch-up, 204 logout and delete, 200 elsewhere: one success each."""
    special = {("post", "/auth/register"): "201", ("post", "/transcription/catchup"): "202",
               ("post", "/auth/logout"): "204", ("delete", "/auth/user"): "204"}
    for method, path, operation in operations(spec):
        successes = [status for status in operation["responses"] if status.startswith("2")]
        if (method.upper(), path) in legacy.GONE_ROUTES:
            assert successes == [] and "410" in operation["responses"], f"{method} {path}"
            continue
        assert successes == [special.get((method, path), "200")], f"{method} {path}: {successes}"
        if successes == ["204"]:
            assert "content" not in operation["responses"]["204"]


# ----- (c) requests: bodies, parameters, headers ----------------------------------------------


def test_request_bodies_equal_the_route_schemas(spec):
    problems = {}
    checked = 0
    for (method, path), entry in app_operations().items():
        operation = spec["paths"][path][method]
        schema = declared_schema(entry)
        if schema is None:
            # Only the Stripe webhook reads a body without a Schema (its raw bytes are signed).
            reads_raw = "raw_body" in inspect.getsource(entry.view_function)
            assert ("requestBody" in operation) == reads_raw, f"{method} {path}"
            continue
        checked += 1
        mismatches = body_mismatches(spec, operation, schema)
        if mismatches:
            problems[f"{method.upper()} {path}"] = mismatches
        for status in ("400", "413", "415", "422"):
            assert status in operation["responses"], f"{method} {path} takes a body: document {status}"
    assert checked >= 11, "json_body(...) was not found in app.py's views"
    assert problems == {}


def test_a_change_on_either_side_is_noticed(spec):
    from chalicelib.accounts import auth as accounts

    operation = spec["paths"]["/auth/register"]["post"]
    assert body_mismatches(spec, operation, accounts.REGISTER_SCHEMA) == []

    longer = dataclasses.replace(accounts.REGISTER_SCHEMA.fields["name"], max_length=101)
    code_changed = Schema({**accounts.REGISTER_SCHEMA.fields, "name": longer}, name="register")
    assert any(problem.startswith("name:") for problem in body_mismatches(spec, operation, code_changed))

    doc_changed = copy.deepcopy(spec)
    body = doc_changed["paths"]["/auth/register"]["post"]["requestBody"]["content"]["application/json"]
    body["schema"]["required"] = ["email"]
    body["schema"]["additionalProperties"] = True
    problems = body_mismatches(doc_changed, doc_changed["paths"]["/auth/register"]["post"],
                               accounts.REGISTER_SCHEMA)
    assert any("required" in p for p in problems) and any("additionalProperties" in p for p in problems)


def parameters(spec: dict[str, Any], operation: dict[str, Any], where: str) -> dict[str, dict[str, Any]]:
    found = (resolve(spec, parameter) for parameter in operation.get("parameters", []))
    return {parameter["name"]: parameter for parameter in found if parameter["in"] == where}


def test_query_parameters_carry_the_limits_the_code_enforces(spec):
    def paging(module: Any) -> dict[str, Any]:
        return {
            "limit": {"type": "integer", "minimum": 1, "maximum": module.MAX_LIMIT, "default": module.DEFAULT_LIMIT},
            "cursor": {"type": "string", "maxLength": module.MAX_CURSOR_CHARS},
        }

    days = {"days": {"type": "integer", "minimum": 1, "maximum": analytics.MAX_DAYS,
                     "default": analytics.DEFAULT_DAYS}}
    channel = twitch_lookup.QUERY_SCHEMA.fields["channel"]
    search = support.SEARCH_SCHEMA.fields["q"]
    expected = {
        ("get", "/admin/api/users"): {"q": expected_property(search, nullable=False)},
        ("get", "/admin/api/users/{user_id}/ledger"): paging(statement),
        ("get", "/admin/api/audit"): {
            **paging(statement), "cursor": {"type": "string", "maxLength": audit.MAX_CURSOR_CHARS},
            "target": {"type": "string", "pattern": anchored(support.USER_ID.pattern)}},
        ("get", "/admin/api/business"): days,
        ("get", "/credits/transactions"): paging(statement),
        ("get", "/transcription/history"): paging(history),
        ("get", "/analytics/usage"): days,
        ("get", "/analytics/costs"): days,
        ("get", "/analytics/costs/top-users"): days,
        ("get", "/twitch/stream"): {"channel": expected_property(channel, nullable=False)},
    }
    readers = {key for key, entry in app_operations().items() if reads_query(entry)}
    assert readers == set(expected), "a route reads query parameters the test does not know"
    for method, path, operation in operations(spec):
        described = parameters(spec, operation, "query")
        assert {name: project(p["schema"]) for name, p in described.items()} == expected.get((method, path), {}), \
            f"{method} {path}"
        for name, parameter in described.items():
            assert parameter.get("required", False) == (name in ("channel", "q")), f"{method} {path} {name}"


def test_path_parameters_match_the_templates_and_the_job_id_format(spec):
    for method, path, operation in operations(spec):
        names = set(re.findall(r"{(\w+)}", path))
        described = parameters(spec, operation, "path")
        assert set(described) == names, f"{method} {path}"
        assert all(parameter["required"] is True for parameter in described.values())
    job_id = parameters(spec, spec["paths"]["/transcription/catchup/{job_id}"]["get"], "path")["job_id"]
    assert job_id["schema"]["pattern"] == anchored(jobs.JOB_ID.pattern)


def test_idempotency_key_is_declared_exactly_where_the_code_honours_it(spec):
    in_code = idempotent_operations_in_code()
    assert len(in_code) >= 5, in_code
    declared = {(method, path) for method, path, operation in operations(spec)
                if idempotency.HEADER in parameters(spec, operation, "header")}
    assert declared == in_code
    header = resolve(spec, {"$ref": "#/components/parameters/IdempotencyKey"})
    assert header["required"] is False
    assert header["schema"]["pattern"] == anchored(idempotency.KEY_PATTERN.pattern)


# ----- (ext): what the published extension sends and reads ------------------------------------

# API.md's (ext) rows: these operations, request fields and response fields never change.
EXT_OPERATIONS = {
    ("post", "/auth/register"), ("post", "/auth/login"), ("get", "/auth/user"), ("get", "/credits/balance"),
    ("post", "/credits/purchase"), ("post", "/transcription/stream"), ("post", "/transcription/ask"),
    ("post", "/transcription/catchup"),
    *((method.lower(), path) for method, path in legacy.GONE_ROUTES),
}
EXT_REQUEST_FIELDS = {
    ("post", "/auth/register"): {"email", "password", "name"},
    ("post", "/auth/login"): {"email", "password"},
    ("post", "/credits/purchase"): {"package_id"},
    ("post", "/transcription/stream"): {"action", "session_id", "max_minutes", "sample_rate"},
    ("post", "/transcription/ask"): {"question", "transcript"},
    ("post", "/transcription/catchup"): {"stream_url", "channel", "duration_minutes", "audio_key", "audio",
                                         "user_id", "fallback_reason"},
}
EXT_RESPONSE_FIELDS = {
    "Session": {"user", "token", "refresh_token", "expires_in"},
    "SessionUser": {"user_id", "email", "name", "credits_balance", "subscription_tier", "is_admin", "token"},
    "User": {"user_id", "email", "name", "credits_balance", "subscription_tier", "is_admin", "created_at",
             "last_login", "total_credits_purchased", "total_usage"},
    "Balance": {"balance", "subscription_tier", "total_credits_purchased", "total_usage"},
    "CheckoutStarted": {"checkout_url", "session_id", "transaction_id"},
    "StreamStarted": {"success", "session_id", "token", "websocket_url", "expires_in_seconds",
                      "max_session_seconds", "credits_reserved", "credits_balance", "assemblyai_api_key"},
    "StreamHeartbeat": {"success", "session_id", "seconds_elapsed", "seconds_remaining"},
    "StreamStopped": {"success", "session_id", "duration_minutes", "credits_used", "credits_refunded",
                      "remaining_balance"},
    "AskAnswer": {"success", "answer", "credits_used", "remaining_balance"},
    "CatchupAccepted": {"job_id", "status", "credits_reserved"},
    "Error": {"error", "message"},
}
EXT_SUCCESS = {
    ("post", "/auth/register"): ("201", ["Session"]),
    ("post", "/auth/login"): ("200", ["Session"]),
    ("get", "/credits/balance"): ("200", ["Balance"]),
    ("post", "/credits/purchase"): ("200", ["CheckoutStarted"]),
    ("post", "/transcription/stream"): ("200", ["StreamStarted", "StreamHeartbeat", "StreamStopped"]),
    ("post", "/transcription/ask"): ("200", ["AskAnswer"]),
    ("post", "/transcription/catchup"): ("202", ["CatchupAccepted"]),
}


def marked(spec: dict[str, Any], properties: dict[str, Any]) -> set[str]:
    return {name for name, prop in properties.items() if prop.get("x-ext") or resolve(spec, prop).get("x-ext")}


def test_ext_operations_and_request_fields_are_marked(spec):
    assert {(m, p) for m, p, operation in operations(spec) if operation.get("x-ext")} == EXT_OPERATIONS
    for method, path, operation in operations(spec):
        if "requestBody" not in operation:
            continue
        schema = resolve(spec, operation["requestBody"]["content"]["application/json"]["schema"])
        assert marked(spec, schema.get("properties", {})) == EXT_REQUEST_FIELDS.get((method, path), set()), \
            f"{method} {path}"


def test_ext_response_fields_are_marked_required_and_where_the_extension_reads_them(spec):
    schemas = spec["components"]["schemas"]
    for name, schema in schemas.items():
        fields = marked(spec, schema.get("properties", {}))
        assert fields == EXT_RESPONSE_FIELDS.get(name, set()), name
        assert fields <= set(schema.get("required", [])), f"{name}: (ext) fields must be required"
    for (method, path), (status, names) in EXT_SUCCESS.items():
        schema = spec["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
        refs = [option["$ref"] for option in schema.get("oneOf", [schema])]
        assert refs == [f"#/components/schemas/{name}" for name in names], f"{method} {path}"
    user = spec["paths"]["/auth/user"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert user["required"] == ["user"] and user["properties"]["user"]["x-ext"] is True
    assert user["properties"]["user"]["$ref"] == "#/components/schemas/User"


# ----- (d) real answers validate against the document ---------------------------------------


def test_every_operation_answers_as_described(api, spec, fake_twitch, stripe_fake, catchup_queue):
    """One user's tour of the whole API; each answer is validated (conftest.SpecCheckedApi)."""
    from chalicelib.ops import admin
    from chalicelib.aws.clients import client as aws_client

    assert api.get("/health").status == 200
    assert api.get("/credits/packages").status == 200

    email = unique_email("contract")
    registered = api.post("/auth/register", {"email": email, "password": PASSWORD, "name": "Contract"})
    assert registered.status == 201 and registered.body["user"]["credits_balance"] == 200
    login = api.post("/auth/login", {"email": email, "password": PASSWORD})
    assert login.status == 200
    rotated = api.post("/auth/refresh", {"refresh_token": login.body["refresh_token"]})
    assert rotated.status == 200
    token = rotated.body["token"]
    assert api.get("/auth/user", token=token).status == 200
    assert api.get("/credits/balance", token=token).status == 200

    # Billing (the fake Stripe): a pending purchase gives the transactions list a second row.
    assert api.post("/credits/purchase", {"package_id": "starter"}, token=token).status == 200
    assert api.post("/credits/subscribe", {"plan_id": "basic_monthly"}, token=token).status == 200
    assert api.post("/credits/portal", token=token).status == 200
    first = api.get("/credits/transactions?limit=1", token=token)
    assert first.status == 200 and isinstance(first.body["next_cursor"], str), first.body
    cursor = urllib.parse.quote(first.body["next_cursor"])
    assert api.get(f"/credits/transactions?limit=1&cursor={cursor}", token=token).status == 200
    payload = encode_event(build_event("contract.unhandled_type", {"id": "obj_contract", "object": "thing"}))
    webhook = api.post("/webhooks/stripe", raw=payload, headers={
        "Content-Type": "application/json; charset=utf-8",
        "Stripe-Signature": sign(payload, STRIPE_WEBHOOK_SECRET)})
    assert webhook.status == 200 and webhook.body == {"received": True, "status": "ignored"}

    # Live captions (the fake AssemblyAI), Ask (the fake OpenAI), the Twitch lookup.
    start = {"action": "start", "max_minutes": 2, "sample_rate": 16000, "channel": "contract_chan"}
    started = api.post("/transcription/stream", start, token=token)
    assert started.status == 200 and started.body["credits_reserved"] == 20
    session = {"session_id": started.body["session_id"]}
    renewed = api.post("/transcription/stream", {"action": "renew", "token_number": 1, **session}, token=token)
    assert renewed.status in (200, 409), renewed.body  # 200 once the token is in its last minutes
    assert api.post("/transcription/stream", {"action": "heartbeat", **session}, token=token).status == 200
    stopped = api.post("/transcription/stream", {"action": "stop", **session}, token=token)
    assert stopped.status == 200 and stopped.body["already_stopped"] is False
    again = api.post("/transcription/stream", {"action": "stop", **session}, token=token)
    assert again.status == 200 and again.body["already_stopped"] is True
    asked = api.post("/transcription/ask", {"question": "What was said?", "transcript": "Hello, welcome."},
                     token=token)
    assert asked.status == 200
    fake_twitch.add_channel("contract_chan", title="Contract testing", game_name="Science",
                            vods=[{"title": "Yesterday"}])
    channel = api.get("/twitch/stream?channel=contract_chan", token=token)
    assert channel.status == 200 and channel.body["live"] is True and channel.body["vods"]

    # Catch-up: an upload URL, an inline job through the worker to its result.
    upload = {"content_type": "audio/wav", "file_size": 1000}
    assert api.post("/transcription/catchup/upload", upload, token=token).status == 200
    audio = base64.b64encode(make_wav(90, sample_rate=1000)).decode()
    accepted = api.post("/transcription/catchup",
                        {"channel": "contract_chan", "duration_minutes": 2, "audio": audio}, token=token)
    assert accepted.status == 202 and accepted.body["status"] == "queued"
    job_path = f"/transcription/catchup/{accepted.body['job_id']}"
    assert api.get(job_path, token=token).body["status"] == "queued"
    catchup_queue.run_worker()
    done = api.get(job_path, token=token)
    assert done.status == 200 and done.body["status"] == "completed", done.body
    assert done.body["result"]["stream"]["title"] == "Contract testing"

    # History (stream, ask and catch-up: two pages of two), usage, the export.
    page = api.get("/transcription/history?limit=2", token=token)
    assert page.status == 200 and len(page.body["items"]) == 2 and page.body["next_cursor"]
    rest = api.get(f"/transcription/history?limit=2&cursor={urllib.parse.quote(page.body['next_cursor'])}",
                   token=token)
    assert rest.status == 200 and [item["kind"] for item in rest.body["items"]] == ["stream"]
    usage = api.get("/analytics/usage?days=7", token=token)
    assert usage.status == 200 and usage.body["total_credits_used"] > 0
    assert api.get("/auth/user/export", token=token).status == 200
    changed = api.post("/auth/password", {"current_password": PASSWORD, "new_password": PASSWORD + "!"},
                       token=token)
    assert changed.status == 200
    token, rotated = changed.body["token"], changed  # every earlier token has ended

    # The published extension's removed routes: a documented 410 each.
    for method, path in legacy.GONE_ROUTES:
        gone = api.call(method, path, {"metadata": {}} if method == "POST" else None, token=token)
        assert gone.status == 410 and "update the extension" in gone.body["message"], gone.body

    # The admin-only costs report and the operator console, then logout.
    admin.set_role(aws_client("dynamodb"), "local", email, "admin")
    as_admin = api.post("/auth/refresh", {"refresh_token": rotated.body["refresh_token"]})
    assert api.get("/analytics/costs?days=2", token=as_admin.body["token"]).status == 200
    assert api.get("/analytics/costs/top-users?days=2", token=as_admin.body["token"]).status == 200
    console_tour(api, as_admin.body["token"], stripe_fake)
    assert api.post("/auth/logout", {"refresh_token": as_admin.body["refresh_token"]}).status == 204

    # Deleting an account (a second one, with nothing in flight).
    leaving = api.post("/auth/register", {"email": unique_email("contract"), "password": PASSWORD})
    assert api.delete("/auth/user", {"password": PASSWORD}, token=leaving.body["token"]).status == 204

    succeeded = {(method, path) for method, path, status in api.seen if 200 <= status < 300 or status == 410}
    assert {(method, path) for method, path, _ in operations(spec)} - succeeded == set()


def console_tour(api: Any, token: str, stripe_fake: Any) -> None:
    """Every operator-console operation once, on a customer who bought a pack."""
    from tests.billing.conftest import EventTap, deliver

    assert api.get("/admin").status == 200
    assert api.get("/admin/assets/console.js").status == 200
    customer = api.post("/auth/register", {"email": unique_email("contract"), "password": PASSWORD})
    user_id = customer.body["user"]["user_id"]
    purchase = api.post("/credits/purchase", {"package_id": "starter"}, token=customer.body["token"])
    tap = EventTap(stripe_fake)
    stripe_fake.pay(purchase.body["session_id"])
    completed = tap.one("checkout.session.completed", purchase.body["session_id"])
    assert deliver(api.client, completed)[0] == 200
    found = api.get(f"/admin/api/users?q={customer.body['user']['email']}", token=token)
    assert found.status == 200 and found.body["items"][0]["user_id"] == user_id
    assert api.get(f"/admin/api/users/{user_id}", token=token).status == 200
    ledger_page = api.get(f"/admin/api/users/{user_id}/ledger?limit=1", token=token)
    assert ledger_page.status == 200 and ledger_page.body["next_cursor"]
    reason = {"reason": "contract tour"}
    assert api.post(f"/admin/api/users/{user_id}/grant", {"credits": 5, **reason}, token=token,
                    headers={idempotency.HEADER: "tour-grant"}).status == 200
    assert api.post(f"/admin/api/users/{user_id}/deduct", {"credits": 5, **reason}, token=token).status == 200
    assert api.post(f"/admin/api/users/{user_id}/suspend", reason, token=token).status == 200
    assert api.post(f"/admin/api/users/{user_id}/reactivate", reason, token=token).status == 200
    refunded = api.post(f"/admin/api/purchases/{purchase.body['transaction_id']}/refund",
                        {"amount": 100, **reason}, token=token)
    assert refunded.status == 200 and refunded.body["amount"] == 100
    assert api.get("/admin/api/attention", token=token).status == 200
    page = api.get(f"/admin/api/audit?limit=2&target={user_id}", token=token)
    assert page.status == 200 and len(page.body["items"]) == 2
    assert api.get("/admin/api/audit/export", token=token).status == 200
    business = api.get("/admin/api/business?days=2", token=token)
    assert business.status == 200 and business.body["credits"]["sold"] >= 500


def test_errors_are_the_envelope_with_documented_statuses(api, provider_env, fake_openai):
    """A failure of each kind, each validated against its operation's documented status."""

    def refused(answer: Any, status: int, code: str) -> None:
        assert (answer.status, answer.body["code"]) == (status, code), answer.body
        assert answer.body["error"] == answer.body["message"]

    email = unique_email("contract")
    registered = api.post("/auth/register", {"email": email, "password": PASSWORD}).body
    token = registered["token"]
    refused(api.post("/auth/register", raw=b"{not json"), 400, "invalid_json")
    refused(api.post("/auth/register", {"email": email, "password": PASSWORD}), 409, "email_taken")
    refused(api.post("/auth/register", {"email": unique_email(), "password": PASSWORD, "role": "admin"}),
            422, "unknown_field")
    refused(api.post("/auth/register", raw=b'{"name":"' + b"x" * 20_000 + b'"}'), 413, "payload_too_large")
    refused(api.post("/auth/login", raw="{}", headers={"Content-Type": "text/plain"}), 415,
            "unsupported_media_type")
    refused(api.post("/auth/login", {"email": unique_email(), "password": PASSWORD}), 401, "invalid_credentials")
    refused(api.get("/auth/user", token="not-a-token"), 401, "unauthorized")
    refused(api.get("/analytics/costs", token=token), 403, "forbidden")
    refused(api.get("/analytics/costs/top-users", token=token), 403, "forbidden")
    refused(api.post(f"/admin/api/users/{'0' * 32}/grant", {"credits": 1, "reason": "nope"}, token=token), 403,
            "forbidden")
    refused(api.get("/admin/assets/missing.js"), 404, "not_found")
    refused(api.delete("/auth/user", {"password": "not the password"}, token=token), 403, "invalid_password")
    refused(api.get("/transcription/catchup/" + "0" * 32, token=token), 404, "job_not_found")
    refused(api.get("/transcription/history?limit=0", token=token), 422, "validation_error")
    refused(api.get("/credits/transactions?cursor=not-ours", token=token), 400, "invalid_cursor")
    refused(api.post("/credits/purchase", {"package_id": "platinum"}, token=token), 422, "unknown_package")
    refused(api.post("/webhooks/stripe", raw=b"{}", headers={"Stripe-Signature": "t=1,v1=00"}), 400,
            "invalid_signature")
    refused(api.post("/transcription/stream", {"action": "heartbeat", "session_id": "nope"}, token=token),
            404, "session_not_found")

    # 402: a live session holds what is left (one minute); then 409 for a session that has ended.
    from chalicelib.credits import ledger

    ledger.charge(registered["user"]["user_id"], 190, service_type="test", request_id="contract-402")
    held = api.post("/transcription/stream", {"action": "start"}, token=token)
    assert held.status == 200 and (held.body["credits_balance"], held.body["credits_available"]) == (10, 0)
    refused(api.post("/transcription/stream", {"action": "renew", "token_number": 1,
                                               "session_id": held.body["session_id"]}, token=token),
            409, "not_renewable")
    refused(api.post("/transcription/ask", {"question": "Why?", "transcript": "Because."}, token=token),
            402, "insufficient_credits")
    refused(api.post("/transcription/stream", {"action": "start"}, token=token), 402, "insufficient_credits")
    session = {"session_id": held.body["session_id"]}
    assert api.post("/transcription/stream", {"action": "stop", **session}, token=token).status == 200
    refused(api.post("/transcription/stream", {"action": "heartbeat", **session}, token=token), 409,
            "session_not_active")
    ledger.grant(registered["user"]["user_id"], 10, source="admin", record_id="contract-502")

    # 502: the provider refuses the request (nothing is charged).
    fake_openai.fail_next(1, 400)
    try:
        refused(api.post("/transcription/ask", {"question": "Why?", "transcript": "Because."}, token=token),
                502, "upstream_rejected")
    finally:
        fake_openai.clear_faults()


def test_operations_with_idempotency_key_refuse_a_malformed_one(api, spec, new_user):
    """Declared means honoured: each such operation checks the header (400 before any effect)."""
    valid_bodies = {
        ("post", "/transcription/stream"): {"action": "start"},
        ("post", "/transcription/ask"): {"question": "Why?", "transcript": "Because."},
        ("post", "/transcription/catchup"): {"channel": "somechannel", "duration_minutes": 1,
                                             "audio_key": f"uploads/someone/{'0' * 32}.wav"},
        ("post", "/credits/purchase"): {"package_id": "starter"},
        ("post", "/credits/subscribe"): {"plan_id": "basic_monthly"},
        ("post", "/admin/api/users/{user_id}/grant"): {"credits": 1, "reason": "a reason"},
        ("post", "/admin/api/users/{user_id}/deduct"): {"credits": 1, "reason": "a reason"},
        ("post", "/admin/api/purchases/{transaction_id}/refund"): {"reason": "a reason"},
    }
    declared = {(method, path) for method, path, operation in operations(spec)
                if idempotency.HEADER in parameters(spec, operation, "header")}
    assert set(valid_bodies) == declared
    from chalicelib.ops import admin
    from chalicelib.aws.clients import client as aws_client

    session = new_user()
    token = session["token"]
    admin.set_role(aws_client("dynamodb"), "local", session["user"]["email"], "admin")
    admin_token = api.post("/auth/refresh", {"refresh_token": session["refresh_token"]}).body["token"]
    for (method, path), body in valid_bodies.items():
        as_admin = path.startswith("/admin/")
        path = path.replace("{user_id}", session["user"]["user_id"]).replace("{transaction_id}", "t1")
        answer = api.call(method, path, body, token=admin_token if as_admin else token,
                          headers={idempotency.HEADER: "has spaces"})
        assert (answer.status, answer.body["code"]) == (400, "invalid_idempotency_key"), (path, answer.body)
