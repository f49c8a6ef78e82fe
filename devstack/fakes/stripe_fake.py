"""Fake Stripe API (`/v1/...`) that stripe-python talks to unchanged.

Point the client at it with `stripe.StripeClient(key, base_addresses={"api":
fake.url})` or `stripe.api_base = fake.url`. Like Stripe it takes
form-encoded bracket-notation bodies, `Authorization: Bearer sk_...`, rejects
unknown or missing parameters with `invalid_request_error`s naming the
parameter, and replays `Idempotency-Key` requests (same key, other params:
`idempotency_error`). The hosted pages and the `/_fake` test API live in
`stripe_hosted`; payments, renewals and webhook delivery in `stripe_simulation`.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from typing import Any, Iterable, Mapping
from urllib.parse import parse_qsl

from werkzeug.wrappers import Request, Response

from . import stripe_objects as objects
from . import stripe_params as P
from .base import FakeError, FakeServer, FormError, Rule, bearer_token, json_response, keys_match, parse_bracket_form, random_id
from .stripe_hosted import StripeHosted
from .stripe_signing import DEFAULT_API_VERSION
from .stripe_simulation import SessionExtras

COLLECTIONS = {
    "customers": "customer", "payment_intents": "payment_intent", "charges": "charge", "invoices": "invoice",
    "subscriptions": "subscription", "refunds": "refund", "disputes": "dispute", "events": "event",
    "prices": "price", "products": "product",
}
INTERVALS = ("day", "week", "month", "year")
FORM_ONLY = (
    "Invalid request (check that your POST content type is application/x-www-form-urlencoded). "
    "If you have any questions, we can help at https://support.stripe.com/."
)


@dataclass(frozen=True)
class _Saved:
    """The first result for an idempotency key, replayed for identical retries."""

    path: str
    params: Any
    status: int
    body: bytes
    request_id: str


class StripeFake(StripeHosted, FakeServer):
    """Fake Stripe: customers, Checkout, billing portal, refunds, subscriptions.

    `webhook_url`/`webhook_secret` say where signed events go (more endpoints:
    `add_webhook_endpoint`); `api_version` decides event and object shapes
    (default: the version stripe-python pins); `prices` are `add_price` kwargs.
    """

    provider = "stripe"
    public_endpoints = StripeHosted.hosted_endpoints

    def __init__(
        self,
        api_key: str = "sk_test_fake_key",
        *,
        port: int = 0,
        webhook_url: str | None = None,
        webhook_secret: str = "whsec_test_secret",
        api_version: str = DEFAULT_API_VERSION,
        webhook_timeout: float = 10.0,
        prices: Iterable[Mapping[str, Any]] = (),
    ) -> None:
        FakeServer.__init__(self, port=port)
        self._init_simulation(api_version, webhook_url, webhook_secret, webhook_timeout)
        self.api_key = api_key
        self._idempotency: dict[str, _Saved] = {}
        self._key_locks: dict[str, threading.Lock] = {}
        for spec in prices:
            self.add_price(**spec)

    def routes(self) -> list[Rule]:
        collections = ",".join(COLLECTIONS)
        return [
            Rule("/v1/customers", methods=["POST"], endpoint="create_customer"),
            Rule("/v1/customers/<obj_id>", methods=["POST"], endpoint="update_customer"),
            Rule("/v1/checkout/sessions", methods=["POST"], endpoint="create_checkout_session"),
            Rule("/v1/checkout/sessions/<session_id>", methods=["GET"], endpoint="retrieve_checkout_session"),
            Rule("/v1/checkout/sessions/<session_id>/line_items", methods=["GET"], endpoint="list_line_items"),
            Rule("/v1/checkout/sessions/<session_id>/expire", methods=["POST"], endpoint="expire_checkout_session"),
            Rule("/v1/billing_portal/sessions", methods=["POST"], endpoint="create_portal_session"),
            Rule("/v1/refunds", methods=["POST"], endpoint="create_refund"),
            Rule("/v1/prices", methods=["POST"], endpoint="create_price"),
            Rule("/v1/subscriptions/<obj_id>", methods=["POST"], endpoint="update_subscription"),
            Rule("/v1/subscriptions/<obj_id>", methods=["DELETE"], endpoint="delete_subscription"),
            Rule(f"/v1/<any({collections}):collection>/<obj_id>", methods=["GET"], endpoint="retrieve"),
            *self.hosted_routes(),
        ]

    # ----- auth, errors, headers, idempotency ---------------------------------------------

    def authenticate(self, request: Request) -> None:
        key = bearer_token(request)
        if key is None and request.authorization and request.authorization.type == "basic":
            key = request.authorization.username
        if not key:
            raise FakeError(
                401,
                "You did not provide an API key. You need to provide your API key in the Authorization header, "
                "using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication "
                "for details, or we can help at https://support.stripe.com/.",
            )
        if not keys_match(key, self.api_key):
            raise FakeError(401, f"Invalid API Key provided: {key[:8]}{'*' * 12}{key[-4:]}")

    def error_response(self, status: int, message: str, **extra: Any) -> Response:
        kind = extra.get("type") or ("api_error" if status >= 500 else "card_error" if status == 402 else "invalid_request_error")
        error: dict[str, Any] = {"type": kind, "message": message}
        code = extra.get("code") or ("rate_limit" if status == 429 else None)
        if code:
            error["code"] = code
            error["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"
        if extra.get("param"):
            error["param"] = extra["param"]
        return json_response({"error": error}, status)

    def decorate(self, request: Request, response: Response) -> None:
        response.headers.setdefault("Request-Id", request.environ.setdefault("fake.request_id", random_id("req_", 14)))
        if request.path.startswith("/v1/"):
            response.headers.setdefault("Stripe-Version", request.headers.get("Stripe-Version", self.api_version))
            if request.headers.get("Idempotency-Key"):
                response.headers.setdefault("Idempotency-Key", request.headers["Idempotency-Key"])

    def _dispatch(self, request: Request) -> Response:
        request.environ["fake.request_id"] = random_id("req_", 14)
        key = request.headers.get("Idempotency-Key")
        if request.method != "POST" or not key or not request.path.startswith("/v1/"):
            return super()._dispatch(request)
        try:
            self.authenticate(request)
            params = self._params(request)
        except FakeError as err:
            return self.error_response(err.status, err.message, **err.extra)
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:  # concurrent retries with one key run one at a time, then replay
            saved = self._idempotency.get(key)
            if saved is not None:
                return self._replay(saved, key, request.path, params)
            response = super()._dispatch(request)
            if response.status_code < 400:
                self._idempotency[key] = _Saved(request.path, params, response.status_code,
                                                response.get_data(), request.environ["fake.request_id"])
            return response

    def _replay(self, saved: _Saved, key: str, path: str, params: Any) -> Response:
        if saved.path != path:
            return self.error_response(400, (
                f"Keys for idempotent requests can only be used for the same endpoint they were first used for "
                f"('{saved.path}' vs '{path}'). Try using a key other than '{key}' if you meant to execute a different request."
            ), type="idempotency_error")
        if saved.params != params:
            return self.error_response(400, (
                "Keys for idempotent requests can only be used with the same parameters they were first used with. "
                f"Try using a key other than '{key}' if you meant to execute a different request."
            ), type="idempotency_error")
        response = Response(saved.body, saved.status, content_type="application/json")
        response.headers["Idempotent-Replayed"] = "true"
        response.headers["Original-Request"] = saved.request_id
        return response

    def _params(self, request: Request) -> dict[str, Any]:
        """The request's parameters (form body, or query string for GET/DELETE), nested."""
        if request.mimetype == "application/json":
            raise P.invalid(FORM_ONLY)
        raw = request.get_data(cache=True).decode("utf-8") if request.method == "POST" else request.query_string.decode()
        if not raw and request.method == "DELETE":
            raw = request.get_data(cache=True).decode("utf-8")
        try:
            return parse_bracket_form(parse_qsl(raw, keep_blank_values=True))
        except FormError as err:
            raise P.invalid(f"Invalid hash or array: {err}", str(err)) from None

    def _api(self, request: Request, action: Any, *args: Any) -> Any:
        """Run a simulation action on behalf of an API request; its events go out in the background."""
        return self._run(action, *args, request_id=request.environ["fake.request_id"],
                         idempotency_key=request.headers.get("Idempotency-Key"), background=True)

    def _expand(self, obj: dict[str, Any], paths: Any) -> dict[str, Any]:
        """Stripe's `expand[]`: replace id fields (dotted paths allowed) with the objects."""
        obj = copy.deepcopy(obj)
        for path in paths if isinstance(paths, list) else []:
            self._expand_path(obj, path.split("."), path)
        return obj

    def _expand_path(self, obj: dict[str, Any], parts: list[str], full: str) -> None:
        field, rest = parts[0], parts[1:]
        with self._lock:
            if field == "line_items" and obj.get("object") == "checkout.session":
                obj[field] = self._line_items_list(obj["id"], 100)
                return
            value = obj.get(field, ...)
            if isinstance(value, str) and value in self._objects:
                obj[field] = copy.deepcopy(self._objects[value])
            elif value is ... or (value is not None and not isinstance(value, dict)):
                raise P.invalid(f"This property cannot be expanded ({full}).", "expand")
        if rest and isinstance(obj[field], dict):
            self._expand_path(obj[field], rest, full)

    # ----- customers ------------------------------------------------------------------------

    def create_customer(self, request: Request) -> dict[str, Any]:
        p = P.reject_unknown(self._params(request), P.CUSTOMER_PARAMS)
        _check_email(p.get("email"), "email")
        p["metadata"] = P.metadata(p.get("metadata"))
        return self._expand(self._api(request, self._do_create_customer, p), p.get("expand"))

    def _do_create_customer(self, out: Any, p: dict[str, Any]) -> dict[str, Any]:
        customer = self._store(objects.customer(p))
        self._emit(out, "customer.created", customer)
        return customer

    def update_customer(self, request: Request, obj_id: str) -> dict[str, Any]:
        p = P.reject_unknown(self._params(request), P.CUSTOMER_PARAMS)
        _check_email(p.get("email"), "email")
        return self._expand(self._api(request, self._do_update_customer, obj_id, p), p.get("expand"))

    def _do_update_customer(self, out: Any, obj_id: str, p: dict[str, Any]) -> dict[str, Any]:
        customer = self._find(obj_id, "customer")
        before = copy.deepcopy(customer)
        for field in ("email", "name", "description", "phone"):
            if field in p:
                customer[field] = p[field] or None
        if "metadata" in p:
            merged = {**customer["metadata"], **P.metadata(p["metadata"])}
            customer["metadata"] = {k: v for k, v in merged.items() if v != ""}
        previous = {k: v for k, v in before.items() if customer[k] != v}
        self._emit(out, "customer.updated", customer, previous)
        return customer

    # ----- checkout ---------------------------------------------------------------------------

    def create_checkout_session(self, request: Request) -> dict[str, Any]:
        p = P.reject_unknown(self._params(request), P.CHECKOUT_SESSION_PARAMS)
        mode = P.one_of(P.required(p, "mode"), "mode", ("payment", "setup", "subscription"))
        if mode == "setup":
            raise P.invalid("The Stripe fake does not implement setup mode.", "mode")
        if p.get("ui_mode", "hosted") != "hosted":
            raise P.invalid("The Stripe fake implements ui_mode=hosted only.", "ui_mode")
        P.required(p, "success_url")
        P.only_one(p, "customer", "customer_email")
        _check_email(p.get("customer_email"), "customer_email")
        if len(p.get("client_reference_id") or "") > 200:
            raise P.invalid("client_reference_id must be at most 200 characters.", "client_reference_id")
        metadata = P.metadata(p.get("metadata"))
        expires_at = self._expires_at(p.get("expires_at"))
        with self._lock:
            if p.get("customer"):
                self._find(p["customer"], "customer", "customer")
            items = self._line_items(p.get("line_items"), mode)
            extras = self._mode_extras(p, mode, items)
            amount = sum(price["unit_amount"] * qty for price, qty in items)
            currency = items[0][0]["currency"]
            if mode == "payment" and currency == "usd" and amount < 50:
                raise P.invalid("The Checkout Session's total amount due must add up to at least $0.50 usd", "line_items")
            session_id = "cs_test_" + random_id("", 58)
            session = self._store(objects.checkout_session(
                session_id=session_id, url=f"{self.url}/checkout/{session_id}", params={**p, "metadata": metadata},
                amount_total=amount, currency=currency, customer_id=p.get("customer") or None, expires_at=expires_at,
            ))
            self._extras[session_id] = extras
            return self._expand(session, p.get("expand"))

    def _expires_at(self, raw: Any) -> int:
        created = objects.now()
        if raw in (None, ""):
            return created + 24 * 3600
        value = P.integer(raw, "expires_at")
        if value < created + 30 * 60 - 2:
            raise P.invalid("The `expires_at` timestamp must be at least 30 minutes from Checkout Session creation.", "expires_at")
        if value > created + 24 * 3600 + 2:
            raise P.invalid("The `expires_at` timestamp must be less than 24 hours from Checkout Session creation.", "expires_at")
        return value

    def _line_items(self, raw: Any, mode: str) -> list[tuple[dict[str, Any], int]]:
        if raw in (None, ""):
            raise P.invalid("Missing required param: line_items.", "line_items", "parameter_missing")
        if not isinstance(raw, list):
            raise P.invalid("Invalid array", "line_items")
        items = [self._line_item(item, f"line_items[{i}]") for i, item in enumerate(raw)]
        if len({price["currency"] for price, _ in items}) > 1:
            raise P.invalid("All line items must have the same currency.", "line_items")
        recurring = [price for price, _ in items if price["recurring"]]
        if mode == "payment" and recurring:
            raise P.invalid("You specified `payment` mode but passed a recurring price. Either switch to `subscription` "
                            "mode or use only one-time prices.", "line_items")
        if mode == "subscription" and not recurring:
            raise P.invalid("You must provide at least one recurring price in `subscription` mode when using prices.", "line_items")
        return items

    def _line_item(self, item: Any, prefix: str) -> tuple[dict[str, Any], int]:
        P.reject_unknown(item, P.LINE_ITEM_PARAMS, prefix)
        P.only_one(item, "price", "price_data", prefix=prefix)
        quantity = P.integer(P.required(item, "quantity", prefix), P.name(prefix, "quantity"), minimum=1)
        if item.get("price"):
            price = self._find(item["price"], "price", P.name(prefix, "price"))
        elif item.get("price_data"):
            price = self._build_price(item["price_data"], P.name(prefix, "price_data"), P.PRICE_DATA_PARAMS)
        else:
            raise P.invalid("You must specify either `price` or `price_data` in each line_item.", P.name(prefix, "price"))
        return price, quantity

    def _build_price(self, spec: Any, prefix: str, allowed: frozenset[str]) -> dict[str, Any]:
        """Validate price(-data) params and store the Price (and Product) they describe."""
        P.reject_unknown(spec, allowed, prefix)
        currency = str(P.required(spec, "currency", prefix)).lower()
        if len(currency) != 3 or not currency.isalpha():
            raise P.invalid(f"Invalid currency: {currency}.", P.name(prefix, "currency"))
        if spec.get("unit_amount") is None and spec.get("unit_amount_decimal") is None:
            P.required(spec, "unit_amount", prefix)
        amount = P.integer(spec.get("unit_amount", spec.get("unit_amount_decimal")), P.name(prefix, "unit_amount"), minimum=0)
        P.only_one(spec, "product", "product_data", prefix=prefix)
        if spec.get("product"):
            product_id = self._find(spec["product"], "product", P.name(prefix, "product"))["id"]
        else:
            data_prefix = P.name(prefix, "product_data")
            data = P.reject_unknown(P.required(spec, "product_data", prefix), P.PRODUCT_DATA_PARAMS, data_prefix)
            product_name = P.required(data, "name", data_prefix)
            meta = P.metadata(data.get("metadata"), P.name(data_prefix, "metadata"))
            product_id = self._store(objects.product(product_name, metadata=meta))["id"]
        recurring = None
        if spec.get("recurring") not in (None, ""):
            r_prefix = P.name(prefix, "recurring")
            r = P.reject_unknown(spec["recurring"], P.RECURRING_PARAMS, r_prefix)
            recurring = {
                "interval": P.one_of(P.required(r, "interval", r_prefix), P.name(r_prefix, "interval"), INTERVALS),
                "interval_count": P.integer(r.get("interval_count", 1), P.name(r_prefix, "interval_count"), minimum=1),
            }
        return self._store(objects.price(
            unit_amount=amount, currency=currency, product_id=product_id, recurring=recurring,
            lookup_key=spec.get("lookup_key"), metadata=P.metadata(spec.get("metadata")) if "metadata" in spec else None,
        ))

    def _mode_extras(self, p: dict[str, Any], mode: str, items: list[tuple[dict[str, Any], int]]) -> SessionExtras:
        sub_data = p.get("subscription_data")
        pi_data = p.get("payment_intent_data")
        if mode == "payment" and sub_data is not None:
            raise P.invalid("You can not pass `subscription_data` in `payment` mode.", "subscription_data")
        if mode == "subscription" and pi_data is not None:
            raise P.invalid("You can not pass `payment_intent_data` in `subscription` mode.", "payment_intent_data")
        creation = p.get("customer_creation")
        if creation is not None:
            P.one_of(creation, "customer_creation", ("always", "if_required"))
            if mode != "payment":
                raise P.invalid("`customer_creation` can only be used in `payment` mode.", "customer_creation")
        sub_data = P.reject_unknown(sub_data or {}, P.SUBSCRIPTION_DATA_PARAMS, "subscription_data")
        pi_data = P.reject_unknown(pi_data or {}, P.PAYMENT_INTENT_DATA_PARAMS, "payment_intent_data")
        line_items = []
        for price, qty in items:
            product_name = self._objects[price["product"]]["name"]
            line_items.append(objects.checkout_line_item(price, qty, product_name))
        return SessionExtras(
            items=items,
            line_items=line_items,
            customer_creation=creation or "if_required",
            subscription_metadata=P.metadata(sub_data.get("metadata"), "subscription_data[metadata]"),
            payment_intent_metadata=P.metadata(pi_data.get("metadata"), "payment_intent_data[metadata]"),
        )

    def retrieve_checkout_session(self, request: Request, session_id: str) -> dict[str, Any]:
        with self._lock:
            session = self._find(session_id, "checkout.session", "session", 404)
        return self._expand(session, self._params(request).get("expand"))

    def _line_items_list(self, session_id: str, limit: int) -> dict[str, Any]:
        data = self._extras[session_id].line_items
        return {"object": "list", "data": copy.deepcopy(data[:limit]), "has_more": len(data) > limit,
                "url": f"/v1/checkout/sessions/{session_id}/line_items"}

    def list_line_items(self, request: Request, session_id: str) -> dict[str, Any]:
        limit = P.integer(self._params(request).get("limit", 10), "limit", minimum=1)
        with self._lock:
            self._find(session_id, "checkout.session", "session", 404)
            return self._line_items_list(session_id, min(limit, 100))

    def expire_checkout_session(self, request: Request, session_id: str) -> dict[str, Any]:
        P.reject_unknown(self._params(request), {"expand"})
        return self._api(request, self._do_expire, session_id)

    # ----- billing portal, refunds, prices, subscriptions -----------------------------------------

    def create_portal_session(self, request: Request) -> dict[str, Any]:
        p = P.reject_unknown(self._params(request), P.PORTAL_PARAMS)
        with self._lock:
            customer = self._find(P.required(p, "customer"), "customer", "customer")
            portal_id = random_id("bps_", 24)
            return copy.deepcopy(self._store(objects.billing_portal_session(
                customer_id=customer["id"], return_url=p.get("return_url"),
                url=f"{self.url}/billing_portal/{portal_id}", session_id=portal_id,
            )))

    def create_refund(self, request: Request) -> dict[str, Any]:
        p = P.reject_unknown(self._params(request), P.REFUND_PARAMS)
        P.only_one(p, "charge", "payment_intent")
        target = p.get("charge") or p.get("payment_intent")
        if not target:
            raise P.invalid("One of the following params should be provided for this request: payment_intent or charge.")
        amount = P.integer(p["amount"], "amount", minimum=1) if p.get("amount") not in (None, "") else None
        reason = P.one_of(p["reason"], "reason", ("duplicate", "fraudulent", "requested_by_customer")) if p.get("reason") else None
        refund = self._api(request, self._do_refund, target, amount, reason, P.metadata(p.get("metadata")))
        return self._expand(refund, p.get("expand"))

    def create_price(self, request: Request) -> dict[str, Any]:
        p = self._params(request)
        with self._lock:
            return self._expand(self._build_price(p, "", P.PRICE_PARAMS), p.get("expand"))

    def update_subscription(self, request: Request, obj_id: str) -> dict[str, Any]:
        p = P.reject_unknown(self._params(request), P.SUBSCRIPTION_UPDATE_PARAMS)
        for key in p:
            if key not in ("cancel_at_period_end", "metadata", "expand", "cancellation_details", "proration_behavior"):
                raise P.invalid(f"The Stripe fake does not implement updating `{key}`.", key)
        cancel = P.boolean(p["cancel_at_period_end"], "cancel_at_period_end") if "cancel_at_period_end" in p else None
        meta = P.metadata(p["metadata"]) if "metadata" in p else None
        return self._expand(self._api(request, self._do_update_subscription, obj_id, cancel, meta), p.get("expand"))

    def _do_update_subscription(self, out: Any, obj_id: str, cancel: bool | None, meta: dict[str, str] | None) -> dict[str, Any]:
        sub = self._live_subscription(obj_id)
        before = copy.deepcopy(sub)
        if cancel is True and not sub["cancel_at_period_end"]:
            return self._do_cancel(out, obj_id, True)
        if cancel is False:
            sub.update(cancel_at_period_end=False, cancel_at=None, canceled_at=None)
        if meta is not None:
            merged = {**sub["metadata"], **meta}
            sub["metadata"] = {k: v for k, v in merged.items() if v != ""}
        previous = {k: v for k, v in before.items() if sub[k] != v}
        if previous:
            self._emit(out, "customer.subscription.updated", sub, previous)
        return sub

    def delete_subscription(self, request: Request, obj_id: str) -> dict[str, Any]:
        p = P.reject_unknown(self._params(request), P.SUBSCRIPTION_CANCEL_PARAMS)
        return self._expand(self._api(request, self._do_cancel, obj_id, False), p.get("expand"))

    def retrieve(self, request: Request, collection: str, obj_id: str) -> dict[str, Any]:
        with self._lock:
            obj = self._find(obj_id, COLLECTIONS[collection])
        return self._expand(obj, self._params(request).get("expand"))


def _check_email(value: Any, param: str) -> None:
    if value not in (None, "") and (not isinstance(value, str) or "@" not in value or len(value) > 512):
        raise P.invalid(f"Invalid email address: {value}", param, "email_invalid")
