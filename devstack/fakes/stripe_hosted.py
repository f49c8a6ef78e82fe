"""The Stripe fake's browser-facing side: hosted Checkout (`/checkout/{id}`),
the billing portal (`/billing_portal/{id}`) and the `/_fake/...` test API.

These stand in for what a person does on stripe.com (pay, cancel a plan) and
for what the Stripe Dashboard or time does (refund, dispute, renew), so they
are reachable without an API key. Every `/_fake` action is also a method on
the fake (`pay`, `refund`, ...); actions take parameters from the query
string, a form or a JSON body and answer with the resulting object as JSON,
or redirect back to the dashboard when the form sends `_redirect=1`.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable

from werkzeug.utils import redirect
from werkzeug.wrappers import Request, Response

from . import stripe_pages as pages
from .base import FakeError, Rule, json_response
from .stripe_simulation import StripeSimulation


def _truthy(value: Any) -> bool:
    return str(value).lower() in ("1", "true", "yes", "on")


def _optional_int(value: Any) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise FakeError(400, f"Invalid integer: {value}", param="amount") from None


def _html(body: str, status: int = 200) -> Response:
    return Response(body, status, content_type="text/html; charset=utf-8")


_ACTIONS: dict[str, Callable[[StripeSimulation, str, dict[str, Any]], Any]] = {
    "pay": lambda fake, oid, a: fake.pay(oid, _truthy(a.get("async_payment", "false")), email=a.get("email")),
    "async_result": lambda fake, oid, a: fake.complete_async_payment(oid, _truthy(a.get("succeeded", "true"))),
    "expire": lambda fake, oid, a: fake.expire(oid),
    "refund": lambda fake, oid, a: fake.refund(oid, _optional_int(a.get("amount")), reason=a.get("reason")),
    "dispute": lambda fake, oid, a: fake.dispute(oid, _optional_int(a.get("amount")), a.get("reason", "fraudulent")),
    "renew": lambda fake, oid, a: fake.renew(oid),
    "fail_invoice": lambda fake, oid, a: fake.fail_invoice(oid),
    "cancel": lambda fake, oid, a: fake.cancel_subscription(oid, _truthy(a.get("at_period_end", "false"))),
    "resend": lambda fake, oid, a: [dataclasses.asdict(d) for d in fake.resend(oid)],
}
_ACTION_PATHS = {
    "checkout/sessions": ("pay", "async_result", "expire"),
    "charges": ("refund", "dispute"),
    "subscriptions": ("renew", "fail_invoice", "cancel"),
    "events": ("resend",),
}


class StripeHosted(StripeSimulation):
    """StripeFake's page and test-API handlers (served without authentication)."""

    hosted_endpoints = frozenset(
        {"checkout_page", "checkout_pay", "portal_page", "portal_cancel", "fake_dashboard", "fake_events", "fake_action"}
    )

    def hosted_routes(self) -> list[Rule]:
        rules = [
            Rule("/checkout/<session_id>", methods=["GET"], endpoint="checkout_page"),
            Rule("/checkout/<session_id>/pay", methods=["POST"], endpoint="checkout_pay"),
            Rule("/billing_portal/<portal_id>", methods=["GET"], endpoint="portal_page"),
            Rule("/billing_portal/<portal_id>/subscriptions/<sub_id>/cancel", methods=["POST"], endpoint="portal_cancel"),
            Rule("/_fake", methods=["GET"], endpoint="fake_dashboard"),
            Rule("/_fake/events", methods=["GET"], endpoint="fake_events"),
        ]
        for collection, actions in _ACTION_PATHS.items():
            for action in actions:
                rules.append(Rule(f"/_fake/{collection}/<obj_id>/{action}", methods=["POST"],
                                  endpoint="fake_action", defaults={"action": action}))
        return rules

    # ----- hosted Checkout ------------------------------------------------------------------

    def checkout_page(self, request: Request, session_id: str) -> Response:
        try:
            self._expire_if_due(session_id)
            session = self.get(session_id)
        except (KeyError, FakeError):
            return _html(pages.inactive({"status": "unknown"}), 404)
        if session.get("object") != "checkout.session":
            return _html(pages.inactive({"status": "unknown"}), 404)
        if session["status"] != "open":
            return _html(pages.inactive(session))
        with self._lock:
            items = list(self._extras[session_id].line_items)
        return _html(pages.checkout(session, items))

    def checkout_pay(self, request: Request, session_id: str) -> Response:
        card = "".join(ch for ch in request.form.get("card", "") if ch.isdigit())
        if card == pages.DECLINED_CARD:  # Stripe's page says so and the session stays open
            page = self.checkout_page(request, session_id)
            if page.status_code != 200:
                return page
            with self._lock:
                items = list(self._extras[session_id].line_items)
            return _html(pages.checkout(self.get(session_id), items, error="Your card was declined."), 402)
        try:
            session = self.pay(session_id, _truthy(request.form.get("async_payment")))
        except FakeError as err:
            return _html(pages.inactive({"status": err.message}), err.status)
        target = (session["success_url"] or "/").replace("{CHECKOUT_SESSION_ID}", session_id)
        return redirect(target, 303)

    # ----- billing portal -------------------------------------------------------------------

    def _portal(self, portal_id: str) -> dict[str, Any]:
        with self._lock:
            return self._find(portal_id, "billing_portal.session")

    def portal_page(self, request: Request, portal_id: str) -> Response:
        portal = self._portal(portal_id)
        subs = [s for s in self.objects("subscription") if s["customer"] == portal["customer"]]
        return _html(pages.portal(portal, subs))

    def portal_cancel(self, request: Request, portal_id: str, sub_id: str) -> Response:
        portal = self._portal(portal_id)
        if self.get(sub_id).get("customer") != portal["customer"]:
            raise FakeError(404, f"No such subscription: '{sub_id}'", code="resource_missing")
        self.cancel_subscription(sub_id, _truthy(request.form.get("at_period_end", "true")))
        return redirect(f"/billing_portal/{portal_id}", 303)

    # ----- /_fake test API ------------------------------------------------------------------

    def fake_dashboard(self, request: Request) -> Response:
        return _html(pages.dashboard(self.purchases(), self.events, self.deliveries,
                                     [endpoint.url for endpoint in self._endpoints_now()]))

    def fake_events(self, request: Request) -> Response:
        deliveries = [dataclasses.asdict(d) for d in self.deliveries]
        return json_response({"events": self.events, "deliveries": deliveries})

    def fake_action(self, request: Request, obj_id: str, action: str) -> Response:
        args: dict[str, Any] = {**request.args.to_dict(), **request.form.to_dict()}
        if request.mimetype == "application/json" and request.get_data():
            try:
                args.update(json.loads(request.get_data()))
            except ValueError:
                raise FakeError(400, "Request body is not valid JSON.") from None
        result = _ACTIONS[action](self, obj_id, args)
        if _truthy(args.get("_redirect")):
            return redirect("/_fake", 303)
        return json_response(result)
