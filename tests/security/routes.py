"""Every route of the app, as the security suite sees it: enumerated from `app.app.routes`.

INPUTS says what each route reads (its body schema, its query parameters). A route the
app has but INPUTS does not list fails `test_every_route_is_described`, so a new route is
fuzzed and access-checked on purpose rather than silently skipped.
"""
from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field

from chalicelib.accounts import auth as accounts
from chalicelib.accounts import privacy
from chalicelib.catchup import jobs
from chalicelib.catchup import uploads
from chalicelib.live import ask
from chalicelib.live import captions
from chalicelib.live import twitch_lookup
from chalicelib.ops import analytics
from chalicelib.ops import support
from chalicelib.web import legacy
from chalicelib.billing import checkout
from chalicelib.core.validation import Field, Schema

RAW = "raw"  # the route reads its raw body itself (the Stripe webhook)


@dataclass(frozen=True)
class Inputs:
    body: Schema | str | None = None  # a Schema, RAW, or None (the route reads no body)
    query: dict[str, Field] = field(default_factory=dict)


HISTORY_QUERY = {  # the paginated lists: history, transactions
    "limit": Field(str, max_length=4, pattern=r"[0-9]{1,4}"),
    "cursor": Field(str, max_length=1024),
}

INPUTS: dict[tuple[str, str], Inputs] = {
    ("GET", "/health"): Inputs(),
    ("POST", "/auth/register"): Inputs(accounts.REGISTER_SCHEMA),
    ("POST", "/auth/login"): Inputs(accounts.LOGIN_SCHEMA),
    ("POST", "/auth/refresh"): Inputs(accounts.REFRESH_SCHEMA),
    ("POST", "/auth/logout"): Inputs(accounts.REFRESH_SCHEMA),
    ("GET", "/auth/user"): Inputs(),
    ("GET", "/auth/user/export"): Inputs(),
    ("DELETE", "/auth/user"): Inputs(privacy.DELETE_SCHEMA),
    ("POST", "/transcription/stream"): Inputs(captions.STREAM_SCHEMA),
    ("POST", "/transcription/ask"): Inputs(ask.schema()),
    ("GET", "/twitch/stream"): Inputs(query=dict(twitch_lookup.QUERY_SCHEMA.fields)),
    ("POST", "/transcription/catchup/upload"): Inputs(uploads.UPLOAD_SCHEMA),
    ("POST", "/transcription/catchup"): Inputs(jobs.SUBMIT_SCHEMA),
    ("GET", "/transcription/catchup/{job_id}"): Inputs(),
    ("GET", "/transcription/history"): Inputs(query=HISTORY_QUERY),
    ("GET", "/credits/balance"): Inputs(),
    ("GET", "/credits/transactions"): Inputs(query=HISTORY_QUERY),
    ("GET", "/analytics/usage"): Inputs(query=dict(analytics.QUERY_SCHEMA.fields)),
    ("GET", "/analytics/costs"): Inputs(query=dict(analytics.QUERY_SCHEMA.fields)),
    ("GET", "/analytics/costs/top-users"): Inputs(query=dict(analytics.QUERY_SCHEMA.fields)),
    ("GET", "/credits/packages"): Inputs(),
    ("POST", "/credits/purchase"): Inputs(checkout.PURCHASE_SCHEMA),
    ("POST", "/credits/subscribe"): Inputs(checkout.SUBSCRIBE_SCHEMA),
    ("POST", "/credits/portal"): Inputs(),
    ("POST", "/webhooks/stripe"): Inputs(RAW),
    ("GET", "/admin"): Inputs(),
    ("GET", "/admin/assets/{name}"): Inputs(),
    ("GET", "/admin/api/users"): Inputs(query=dict(support.SEARCH_SCHEMA.fields)),
    ("GET", "/admin/api/users/{user_id}"): Inputs(),
    ("GET", "/admin/api/users/{user_id}/ledger"): Inputs(query=HISTORY_QUERY),
    ("POST", "/admin/api/users/{user_id}/grant"): Inputs(support.ADJUST_SCHEMA),
    ("POST", "/admin/api/users/{user_id}/deduct"): Inputs(support.ADJUST_SCHEMA),
    ("POST", "/admin/api/users/{user_id}/suspend"): Inputs(support.STATUS_SCHEMA),
    ("POST", "/admin/api/users/{user_id}/reactivate"): Inputs(support.STATUS_SCHEMA),
    ("POST", "/admin/api/purchases/{transaction_id}/refund"): Inputs(support.REFUND_SCHEMA),
    ("GET", "/admin/api/attention"): Inputs(),
    ("GET", "/admin/api/audit"): Inputs(query={**HISTORY_QUERY, "target": Field(str, max_length=64)}),
    ("GET", "/admin/api/audit/export"): Inputs(),
    ("GET", "/admin/api/business"): Inputs(query=dict(analytics.QUERY_SCHEMA.fields)),
    ("POST", "/auth/password"): Inputs(accounts.CHANGE_PASSWORD_SCHEMA),
    # chalicelib.web.legacy: answered 410 without reading anything
    **{route: Inputs() for route in legacy.GONE_ROUTES},
}


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    authenticated: bool
    inputs: Inputs | None

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def params(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.path)

    def url(self, params: dict[str, str] | None = None, query: dict[str, str] | None = None) -> str:
        path = self.path
        for name in self.params:
            value = (params or {}).get(name, "x")
            path = path.replace("{" + name + "}", urllib.parse.quote(value, safe="") or "x")
        if query:
            path += "?" + urllib.parse.urlencode(query)
        return path


def all_routes(include_options: bool = False) -> list[Route]:
    import app

    routes = []
    for path, methods in sorted(app.app.routes.items()):
        for method, entry in sorted(methods.items()):
            if method == "OPTIONS" and not include_options:
                continue
            routes.append(Route(method, path, entry.authorizer is not None,
                                INPUTS.get((method, path))))
    return routes


def authenticated_routes() -> list[Route]:
    return [route for route in all_routes() if route.authenticated]


