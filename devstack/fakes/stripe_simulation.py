"""What happens inside the Stripe fake after the API call: payments, renewals,
refunds, disputes, and the signed webhook events each of them sends.

`StripeSimulation` is the state half of `StripeFake` (which adds HTTP). Its
public methods are the test API (`pay`, `expire`, `refund`, ...): they change
the objects the way Stripe would and deliver the resulting events to every
configured webhook endpoint synchronously, so a test can assert on the
outcome right after the call. Events caused by API requests are delivered in
the background instead (Stripe answers the API call first); use
`wait_for_deliveries()`.
"""

from __future__ import annotations

import copy
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import requests

from . import stripe_objects as objects
from .base import FakeError
from .stripe_params import money
from .stripe_signing import build_event, deliver

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WebhookEndpoint:
    """Where events go, signed with `secret`; `enabled_events` like Stripe's ("*" = all)."""

    url: str
    secret: str
    enabled_events: tuple[str, ...] = ("*",)

    def wants(self, event_type: str) -> bool:
        return "*" in self.enabled_events or event_type in self.enabled_events


@dataclass(frozen=True)
class Delivery:
    """One attempt to deliver one event to one endpoint."""

    event_id: str
    event_type: str
    url: str
    status_code: int | None
    response_body: str
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass
class _Outbox:
    """Events produced by one operation, and the API request that caused them."""

    request_id: str | None = None
    idempotency_key: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class SessionExtras:
    """What a Checkout Session remembers but does not show."""

    items: list[tuple[dict[str, Any], int]]
    line_items: list[dict[str, Any]]
    customer_creation: str
    subscription_metadata: dict[str, str]
    payment_intent_metadata: dict[str, str]


class StripeSimulation:
    """Object store, event log, webhook delivery and lifecycle actions.

    Mixed into StripeFake, which provides `self._lock` and `self.url`.
    Lifecycle methods raise FakeError (status 400/404, Stripe's message) when
    the action is impossible, e.g. paying an expired session.
    """

    _lock: threading.RLock
    url: str

    def _init_simulation(
        self, api_version: str, webhook_url: str | None, webhook_secret: str, webhook_timeout: float
    ) -> None:
        self.api_version = api_version
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self.webhook_timeout = webhook_timeout
        self.deliver_webhooks = True
        self._endpoints: list[WebhookEndpoint] = []
        self._objects: dict[str, dict[str, Any]] = {}
        self._events: list[dict[str, Any]] = []
        self._deliveries: list[Delivery] = []
        self._extras: dict[str, SessionExtras] = {}
        self._delivery_threads: list[threading.Thread] = []
        self._purchase_of: dict[str, str] = {}  # object id -> the Checkout Session it came from

    # ----- configuration and inspection -------------------------------------------------

    def add_webhook_endpoint(self, url: str, secret: str, enabled_events: Iterable[str] = ("*",)) -> WebhookEndpoint:
        """Deliver events to one more endpoint (besides `webhook_url`)."""
        endpoint = WebhookEndpoint(url, secret, tuple(enabled_events))
        with self._lock:
            self._endpoints.append(endpoint)
        return endpoint

    def add_price(
        self,
        unit_amount: int,
        currency: str = "usd",
        *,
        recurring: str | None = None,
        interval_count: int = 1,
        product_name: str = "Credits",
        price_id: str | None = None,
        lookup_key: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Create a Price (and its Product) usable as `line_items[i][price]`."""
        with self._lock:
            prod = self._store(objects.product(product_name))
            recurring_spec = {"interval": recurring, "interval_count": interval_count} if recurring else None
            return copy.deepcopy(self._store(objects.price(
                unit_amount=unit_amount, currency=currency.lower(), product_id=prod["id"],
                recurring=recurring_spec, price_id=price_id, lookup_key=lookup_key, metadata=metadata,
            )))

    def get(self, object_id: str) -> dict[str, Any]:
        """A copy of any object the fake holds (session, charge, event, ...)."""
        with self._lock:
            return copy.deepcopy(self._objects[object_id])

    def objects(self, object_type: str) -> list[dict[str, Any]]:
        """Copies of every object of a type, e.g. objects("checkout.session"), oldest first."""
        with self._lock:
            return [copy.deepcopy(o) for o in self._objects.values() if o.get("object") == object_type]

    @property
    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._events)

    def events_of_type(self, event_type: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == event_type]

    @property
    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self._deliveries)

    def wait_for_deliveries(self, timeout: float = 10.0) -> None:
        """Block until background deliveries (events caused by API calls) are done."""
        with self._lock:
            threads, self._delivery_threads = self._delivery_threads, []
        for thread in threads:
            thread.join(timeout)

    def purchases(self) -> list[dict[str, Any]]:
        """Every Checkout Session with what came of it, newest first: for the dashboard.

        Each: `session`, `email` (the customer's), `items` (line item names), `charges`,
        `subscription` (or None) and `events` (each with its `deliveries` and their outcomes),
        so an action on a purchase can only touch that purchase's objects.
        """
        with self._lock:
            sessions = [o for o in self._objects.values() if o.get("object") == "checkout.session"]
            related: dict[str, list[dict[str, Any]]] = {s["id"]: [] for s in sessions}
            for object_id, session_id in self._purchase_of.items():
                related[session_id].append(self._objects[object_id])
            deliveries: dict[str, list[Delivery]] = {}
            for delivery in self._deliveries:
                deliveries.setdefault(delivery.event_id, []).append(delivery)
            views = []
            for session in sorted(sessions, key=lambda s: s["created"], reverse=True):
                ids = {session["id"], *(o["id"] for o in related[session["id"]])}
                email = ((session.get("customer_details") or {}).get("email") or session.get("customer_email")
                         or self._customer_email(session.get("customer")))
                views.append(copy.deepcopy({
                    "session": session,
                    "email": email,
                    "items": [item["description"] for item in self._extras[session["id"]].line_items],
                    "charges": [o for o in related[session["id"]] if o["object"] == "charge"],
                    "subscription": next((o for o in related[session["id"]] if o["object"] == "subscription"), None),
                    "events": [{"event": e, "deliveries": deliveries.get(e["id"], [])}
                               for e in self._events if e["data"]["object"].get("id") in ids],
                }))
            return views

    def resend(self, event_id: str, url: str | None = None) -> list[Delivery]:
        """Deliver a stored event again (Stripe retries and duplicates happen)."""
        with self._lock:
            event = self._find(event_id, "event")
        return self._deliver([event], url)

    def retry_failed_deliveries(self) -> list[Delivery]:
        """Redeliver every (event, endpoint) whose latest attempt failed, like Stripe's retries."""
        latest: dict[tuple[str, str], Delivery] = {}
        for delivery in self.deliveries:
            latest[(delivery.event_id, delivery.url)] = delivery
        results: list[Delivery] = []
        for (event_id, url), delivery in latest.items():
            if not delivery.ok:
                results += self.resend(event_id, url)
        return results

    # ----- the test API: things customers, banks and time do ----------------------------

    def pay(self, session_id: str, async_payment: bool = False, *, email: str | None = None) -> dict[str, Any]:
        """The customer pays on the hosted page; returns the completed session.

        `async_payment=True` (payment mode) completes the session with
        `payment_status: "unpaid"`; settle it later with `complete_async_payment`.
        """
        self._expire_if_due(session_id)
        return self._run(self._do_pay, session_id, async_payment, email)

    def complete_async_payment(self, session_id: str, succeeded: bool = True) -> dict[str, Any]:
        """The delayed payment method (bank debit) succeeds or fails."""
        return self._run(self._do_async_result, session_id, succeeded)

    def expire(self, session_id: str) -> dict[str, Any]:
        return self._run(self._do_expire, session_id)

    def refund(self, charge_or_payment_intent: str, amount: int | None = None, *, reason: str | None = None) -> dict[str, Any]:
        """Refund (part of) a charge, e.g. from the Dashboard; returns the Refund."""
        return self._run(self._do_refund, charge_or_payment_intent, amount, reason, {})

    def dispute(self, charge_or_payment_intent: str, amount: int | None = None, reason: str = "fraudulent") -> dict[str, Any]:
        """The cardholder disputes the charge; returns the Dispute."""
        return self._run(self._do_dispute, charge_or_payment_intent, amount, reason)

    def renew(self, subscription_id: str) -> dict[str, Any] | None:
        """The period ends and the next one is paid; returns the new invoice.

        A subscription set to cancel at period end is deleted instead (returns None).
        """
        return self._run(self._do_renew, subscription_id, True)

    def fail_invoice(self, subscription_id: str) -> dict[str, Any] | None:
        """The period ends and the renewal payment fails; returns the open invoice."""
        return self._run(self._do_renew, subscription_id, False)

    def cancel_subscription(self, subscription_id: str, at_period_end: bool = False) -> dict[str, Any]:
        return self._run(self._do_cancel, subscription_id, at_period_end)

    # ----- plumbing -----------------------------------------------------------------------

    def _run(
        self,
        action: Callable[..., dict[str, Any] | None],
        *args: Any,
        request_id: str | None = None,
        idempotency_key: str | None = None,
        background: bool = False,
    ) -> Any:
        """Run an action under the lock, then deliver its events outside it.

        Delivery happens outside the lock because the receiver (our backend)
        may call back into this fake while handling the event.
        """
        outbox = _Outbox(request_id, idempotency_key)
        with self._lock:
            result = copy.deepcopy(action(outbox, *args))
        if self.deliver_webhooks and outbox.events:
            if background:
                thread = threading.Thread(target=self._deliver, args=(outbox.events,), daemon=True)
                with self._lock:
                    self._delivery_threads.append(thread)
                thread.start()
            else:
                self._deliver(outbox.events)
        return result

    def _store(self, obj: dict[str, Any]) -> dict[str, Any]:
        self._objects[obj["id"]] = obj
        return obj

    def _find(self, object_id: str, object_type: str, param: str = "id", status: int | None = None) -> dict[str, Any]:
        """The stored object, or Stripe's resource_missing: 404 for an id in the URL, 400 for a parameter."""
        obj = self._objects.get(object_id)
        if obj is None or obj.get("object") != object_type:
            status = status or (404 if param == "id" else 400)
            raise FakeError(status, f"No such {object_type}: '{object_id}'", param=param, code="resource_missing")
        return obj

    def _emit(self, outbox: _Outbox, event_type: str, obj: dict[str, Any], previous: dict[str, Any] | None = None) -> None:
        event = build_event(
            event_type, obj, api_version=self.api_version, previous_attributes=previous,
            request_id=outbox.request_id, idempotency_key=outbox.idempotency_key,
            pending_webhooks=max(len(self._endpoints_now()), 1),
        )
        self._store(event)
        self._events.append(event)
        outbox.events.append(event)

    def _endpoints_now(self) -> list[WebhookEndpoint]:
        primary = [WebhookEndpoint(self.webhook_url, self.webhook_secret)] if self.webhook_url else []
        with self._lock:
            return primary + list(self._endpoints)

    def _deliver(self, events: list[dict[str, Any]], url: str | None = None) -> list[Delivery]:
        results = []
        for event in events:
            for endpoint in self._endpoints_now():
                if (url is None or endpoint.url == url) and endpoint.wants(event["type"]):
                    results.append(self._post(endpoint, event))
        return results

    def _post(self, endpoint: WebhookEndpoint, event: dict[str, Any]) -> Delivery:
        try:
            response = deliver(endpoint.url, event, endpoint.secret, timeout=self.webhook_timeout)
            result = Delivery(event["id"], event["type"], endpoint.url, response.status_code, response.text[:2000])
        except requests.RequestException as exc:
            result = Delivery(event["id"], event["type"], endpoint.url, None, "", type(exc).__name__)
        log.info("stripe fake delivered %s %s to %s: %s", event["type"], event["id"], endpoint.url,
                 result.status_code or result.error)
        with self._lock:
            self._deliveries.append(result)
        return result

    def _link(self, session_id: str | None, *objs: dict[str, Any]) -> None:
        """Remember that these objects came from that Checkout Session (see `purchases`)."""
        if session_id is not None:
            for obj in objs:
                self._purchase_of[obj["id"]] = session_id

    def _expire_if_due(self, session_id: str) -> None:
        with self._lock:
            session = self._find(session_id, "checkout.session")
            due = session["status"] == "open" and session["expires_at"] <= objects.now()
        if due:
            self.expire(session_id)

    def _customer_email(self, customer_id: str | None) -> str | None:
        customer = self._objects.get(customer_id or "")
        return customer.get("email") if customer else None

    def _charge_for(self, target: str, param: str = "charge") -> dict[str, Any]:
        if target.startswith("pi_"):
            pi = self._find(target, "payment_intent", "payment_intent")
            if not pi["latest_charge"]:
                raise FakeError(400, f"PaymentIntent {target} does not have a successful charge to refund.",
                                param="payment_intent", code="charge_not_refundable")
            target = pi["latest_charge"]
        return self._find(target, "charge", param)

    # ----- actions (called under the lock) -------------------------------------------------

    def _do_pay(self, out: _Outbox, session_id: str, async_payment: bool, email: str | None) -> dict[str, Any]:
        session = self._find(session_id, "checkout.session")
        if session["status"] != "open":
            raise FakeError(400, f"This Checkout Session is no longer active (status: {session['status']}).",
                            code="checkout_session_inactive")
        if async_payment and session["mode"] != "payment":
            raise FakeError(400, "The fake supports asynchronous payments in payment mode only.")
        extras = self._extras[session_id]
        email = email or session["customer_email"] or self._customer_email(session["customer"]) or "buyer@example.com"
        if session["customer"] is None and (session["mode"] == "subscription" or extras.customer_creation == "always"):
            customer = self._store(objects.customer({"email": email, "name": "Test Buyer"}))
            self._emit(out, "customer.created", customer)
            session["customer"] = customer["id"]
        session.update(status="complete", url=None, customer_details=objects.customer_details(email))
        if session["mode"] == "payment":
            self._pay_once(out, session, extras, async_payment, email)
        else:
            self._pay_subscription(out, session, extras, email)
        self._emit(out, "checkout.session.completed", session)
        return session

    def _pay_once(self, out: _Outbox, session: dict[str, Any], extras: SessionExtras, pending: bool, email: str) -> None:
        pi = self._store(objects.payment_intent(
            amount=session["amount_total"], currency=session["currency"], customer_id=session["customer"],
            metadata=extras.payment_intent_metadata, status="processing" if pending else "succeeded",
        ))
        ch = self._store(objects.charge(pi=pi, status="pending" if pending else "succeeded", billing_email=email))
        pi["latest_charge"] = ch["id"]
        self._link(session["id"], pi, ch)
        session.update(payment_intent=pi["id"], payment_status="unpaid" if pending else "paid")
        self._emit(out, "charge.pending" if pending else "charge.succeeded", ch)
        self._emit(out, "payment_intent.processing" if pending else "payment_intent.succeeded", pi)

    def _pay_subscription(self, out: _Outbox, session: dict[str, Any], extras: SessionExtras, email: str) -> None:
        items = [(p, q) for p, q in extras.items if p["recurring"]]
        recurring = items[0][0]["recurring"]
        start = objects.now()
        end = objects.add_interval(start, recurring["interval"], recurring["interval_count"])
        sub = self._store(objects.subscription(
            customer_id=session["customer"], items=items, metadata=extras.subscription_metadata,
            start=start, end=end, api_version=self.api_version,
        ))
        inv, pi, ch = self._bill(sub, "subscription_create", start, end, True, email)
        self._link(session["id"], sub, inv, pi, ch)
        session.update(subscription=sub["id"], invoice=inv["id"], payment_status="paid")
        self._emit(out, "customer.subscription.created", sub)
        self._emit_billing(out, inv, pi, ch, True)

    def _bill(
        self, sub: dict[str, Any], reason: str, start: int, end: int, paid: bool, email: str | None
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """Create the invoice, payment intent and charge for one subscription period."""
        amount = sum(item["price"]["unit_amount"] * item["quantity"] for item in sub["items"]["data"])
        pi = self._store(objects.payment_intent(
            amount=amount, currency=sub["currency"], customer_id=sub["customer"], metadata={},
            status="succeeded" if paid else "requires_payment_method",
        ))
        ch = self._store(objects.charge(pi=pi, status="succeeded" if paid else "failed", billing_email=email or ""))
        pi["latest_charge"] = ch["id"]
        if not paid:
            ch.update(failure_code="card_declined", failure_message="Your card was declined.")
            pi["last_payment_error"] = {"charge": ch["id"], "code": "card_declined", "decline_code": "generic_decline",
                                        "message": "Your card was declined.", "type": "card_error"}
        inv = self._store(objects.invoice(
            sub=sub, billing_reason=reason, start=start, end=end, paid=paid, customer_email=email,
            api_version=self.api_version, pi=pi, charge_id=ch["id"],
        ))
        if not objects.is_modern(self.api_version):
            ch["invoice"] = pi["invoice"] = inv["id"]
        sub["latest_invoice"] = inv["id"]
        return inv, pi, ch

    def _emit_billing(self, out: _Outbox, inv: dict[str, Any], pi: dict[str, Any], ch: dict[str, Any], paid: bool) -> None:
        if paid:
            for event_type, obj in (("charge.succeeded", ch), ("payment_intent.succeeded", pi),
                                    ("invoice.paid", inv), ("invoice.payment_succeeded", inv)):
                self._emit(out, event_type, obj)
        else:
            for event_type, obj in (("charge.failed", ch), ("payment_intent.payment_failed", pi),
                                    ("invoice.payment_failed", inv)):
                self._emit(out, event_type, obj)

    def _do_async_result(self, out: _Outbox, session_id: str, succeeded: bool) -> dict[str, Any]:
        session = self._find(session_id, "checkout.session")
        pi = self._objects.get(session["payment_intent"] or "")
        if session["status"] != "complete" or not pi or pi["status"] != "processing":
            raise FakeError(400, f"Checkout Session {session_id} has no pending asynchronous payment.")
        ch = self._objects[pi["latest_charge"]]
        if succeeded:
            ch.update(status="succeeded", paid=True, captured=True, amount_captured=ch["amount"])
            pi.update(status="succeeded", amount_received=pi["amount"])
            session["payment_status"] = "paid"
            self._emit(out, "charge.succeeded", ch)
            self._emit(out, "payment_intent.succeeded", pi)
            self._emit(out, "checkout.session.async_payment_succeeded", session)
        else:
            ch.update(status="failed", failure_code="insufficient_funds", failure_message="Insufficient funds.")
            pi.update(status="requires_payment_method")
            self._emit(out, "charge.failed", ch)
            self._emit(out, "payment_intent.payment_failed", pi)
            self._emit(out, "checkout.session.async_payment_failed", session)
        return session

    def _do_expire(self, out: _Outbox, session_id: str) -> dict[str, Any]:
        session = self._find(session_id, "checkout.session", "session", 404)
        if session["status"] != "open":
            raise FakeError(400, 'Only Checkout Sessions with a status in ["open"] can be expired.', param="session")
        session.update(status="expired", url=None)
        self._emit(out, "checkout.session.expired", session)
        return session

    def _do_refund(
        self, out: _Outbox, target: str, amount: int | None, reason: str | None, metadata: dict[str, str]
    ) -> dict[str, Any]:
        ch = self._charge_for(target, "payment_intent" if target.startswith("pi_") else "charge")
        if ch["disputed"]:
            raise FakeError(400, f"Charge {ch['id']} has been charged back; cannot issue a refund.", code="charge_disputed")
        if ch["status"] != "succeeded":
            raise FakeError(400, f"Charge {ch['id']} has not succeeded and cannot be refunded.", code="charge_not_refundable")
        remaining = ch["amount"] - ch["amount_refunded"]
        if remaining <= 0:
            raise FakeError(400, f"Charge {ch['id']} has already been refunded.", code="charge_already_refunded")
        amount = remaining if amount is None else int(amount)
        if amount < 1:
            raise FakeError(400, "Invalid positive integer", param="amount")
        if amount > remaining:
            raise FakeError(400, f"Refund amount ({money(amount, ch['currency'])}) is greater than unrefunded amount on "
                                 f"charge ({money(remaining, ch['currency'])})", param="amount", code="amount_too_large")
        previous = {"amount_refunded": ch["amount_refunded"], "refunded": ch["refunded"]}
        refund = self._store(objects.refund(ch=ch, amount=amount, reason=reason, metadata=metadata))
        self._link(self._purchase_of.get(ch["id"]), refund)
        ch.update(amount_refunded=ch["amount_refunded"] + amount)
        ch["refunded"] = ch["amount_refunded"] == ch["amount"]
        self._emit(out, "charge.refunded", ch, previous)
        self._emit(out, "refund.created", refund)
        return refund

    def _do_dispute(self, out: _Outbox, target: str, amount: int | None, reason: str) -> dict[str, Any]:
        ch = self._charge_for(target)
        if ch["disputed"] or ch["status"] != "succeeded":
            raise FakeError(400, f"Charge {ch['id']} cannot be disputed (already disputed or not paid).")
        dispute = self._store(objects.dispute(ch=ch, amount=ch["amount"] if amount is None else int(amount), reason=reason))
        self._link(self._purchase_of.get(ch["id"]), dispute)
        ch["disputed"] = True
        self._emit(out, "charge.dispute.created", dispute)
        return dispute

    def _live_subscription(self, subscription_id: str) -> dict[str, Any]:
        sub = self._find(subscription_id, "subscription")
        if sub["status"] == "canceled":
            raise FakeError(400, f"The subscription {subscription_id} has already been canceled.", code="resource_missing")
        return sub

    def _do_renew(self, out: _Outbox, subscription_id: str, paid: bool) -> dict[str, Any] | None:
        sub = self._live_subscription(subscription_id)
        if sub["cancel_at_period_end"]:
            self._do_cancel(out, subscription_id, False)
            return None
        before = copy.deepcopy(sub)
        _, start = objects.subscription_period(sub)
        recurring = sub["items"]["data"][0]["price"]["recurring"]
        end = objects.add_interval(start, recurring["interval"], recurring["interval_count"])
        objects.set_subscription_period(sub, start, end, self.api_version)
        email = self._customer_email(sub["customer"])
        inv, pi, ch = self._bill(sub, "subscription_cycle", start, end, paid, email)
        self._link(self._purchase_of.get(sub["id"]), inv, pi, ch)
        sub["status"] = "active" if paid else "past_due"
        previous = {k: before[k] for k in sub if k in before and before[k] != sub[k]}
        self._emit(out, "customer.subscription.updated", sub, previous)
        self._emit_billing(out, inv, pi, ch, paid)
        return inv

    def _do_cancel(self, out: _Outbox, subscription_id: str, at_period_end: bool) -> dict[str, Any]:
        sub = self._live_subscription(subscription_id)
        if at_period_end:
            previous = {"cancel_at": sub["cancel_at"], "cancel_at_period_end": sub["cancel_at_period_end"]}
            sub.update(cancel_at_period_end=True, cancel_at=objects.subscription_period(sub)[1], canceled_at=objects.now())
            sub["cancellation_details"]["reason"] = "cancellation_requested"
            self._emit(out, "customer.subscription.updated", sub, previous)
        else:
            sub.update(status="canceled", canceled_at=sub["canceled_at"] or objects.now(), ended_at=objects.now())
            sub["cancellation_details"]["reason"] = sub["cancellation_details"]["reason"] or "cancellation_requested"
            self._emit(out, "customer.subscription.deleted", sub)
        return sub
