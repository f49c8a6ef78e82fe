"""The HTML the Stripe fake shows to people: hosted Checkout, the billing
portal and a small dashboard of test actions, so `make run` users can buy
credits and trigger refunds or renewals from a browser without Stripe.
"""

from __future__ import annotations

import time
from html import escape
from typing import Any, Iterable

from .stripe_params import money

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.4em;text-align:left}"
    "button{background:#635bff;color:#fff;border:0;border-radius:4px;padding:.5em 1em;cursor:pointer}"
    "form{display:inline}.muted{color:#777}.ok{color:#0a7d32}.error{color:#c0392b}"
    "ul{margin:0;padding-left:1.1em}td{vertical-align:top}"
)


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body><p class='muted'>Stripe fake (test mode)</p>{body}</body></html>")


def _button(action: str, label: str, **fields: str) -> str:
    hidden = "".join(f"<input type='hidden' name='{escape(k)}' value='{escape(v)}'>" for k, v in fields.items())
    return f"<form method='post' action='{escape(action)}'>{hidden}<button>{escape(label)}</button></form> "


DECLINED_CARD = "4000000000000002"  # Stripe's test card for a generic decline
TEST_CARD = "4242 4242 4242 4242"


def checkout(session: dict[str, Any], items: Iterable[dict[str, Any]], error: str | None = None) -> str:
    """The hosted Checkout page for an open session: any card number pays, except the
    decline test card (the session stays open, as on Stripe)."""
    rows = "".join(
        f"<tr><td>{escape(i['description'])}</td><td>{i['quantity']}</td>"
        f"<td>{money(i['amount_total'], i['currency'])}</td></tr>"
        for i in items
    )
    recurring = " per period" if session["mode"] == "subscription" else ""
    pay = f"/checkout/{session['id']}/pay"
    card = (f"<form method='post' action='{escape(pay)}'><label>Card number "
            f"<input name='card' value='{TEST_CARD}' size='22'></label> "
            f"<button>Pay {money(session['amount_total'], session['currency'])}{recurring}</button></form>")
    buttons = f"<p>{card}</p>"
    if session["mode"] == "payment":
        buttons += f"<p>{_button(pay, 'Pay by bank debit (settles later)', async_payment='true')}</p>"
    problem = f"<p class='error'>{escape(error)}</p>" if error else ""
    cancel = f"<a href='{escape(session['cancel_url'])}'>Cancel</a>" if session.get("cancel_url") else ""
    hint = ("<p class='muted'>Sandbox: no real card is charged. Any number pays; "
            "4000 0000 0000 0002 is declined.</p>")
    return _page("Checkout", f"<h1>Checkout</h1>{problem}<table><thead><tr><th>Item</th><th>Qty</th><th>Amount</th>"
                             f"</tr></thead><tbody>{rows}</tbody></table>{buttons}{hint}<p>{cancel}</p>")


def inactive(session: dict[str, Any]) -> str:
    return _page("Checkout", f"<h1>This Checkout Session is no longer active</h1>"
                             f"<p class='muted'>Status: {escape(session['status'])}</p>")


def portal(portal_session: dict[str, Any], subscriptions: Iterable[dict[str, Any]]) -> str:
    """The billing portal: the customer's subscriptions and cancel buttons."""
    base = f"/billing_portal/{portal_session['id']}/subscriptions"
    rows = ""
    for sub in subscriptions:
        actions = ""
        if sub["status"] != "canceled":
            actions = (_button(f"{base}/{sub['id']}/cancel", "Cancel at period end", at_period_end="true")
                       + _button(f"{base}/{sub['id']}/cancel", "Cancel now", at_period_end="false"))
        ending = " (ends at period end)" if sub["cancel_at_period_end"] and sub["status"] != "canceled" else ""
        rows += f"<tr><td>{escape(sub['id'])}</td><td>{escape(sub['status'])}{ending}</td><td>{actions}</td></tr>"
    back = portal_session.get("return_url")
    link = f"<p><a href='{escape(back)}'>Return</a></p>" if back else ""
    return _page("Billing portal", f"<h1>Your subscriptions</h1><table>{rows or '<tr><td>None</td></tr>'}</table>{link}")


def _when(epoch: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def _outcomes(deliveries: list[Any]) -> str:
    if not deliveries:
        return "<span class='muted'>not sent (no webhook endpoint)</span>"
    return ", ".join(
        f"<span class='{'ok' if d.ok else 'error'}'>{escape(str(d.status_code or d.error))}</span>" for d in deliveries
    )


def _purchase_status(p: dict[str, Any]) -> str:
    s = p["session"]
    states = {("open", "unpaid"): "open: not paid yet", ("complete", "paid"): "paid",
              ("complete", "unpaid"): "bank debit pending", ("expired", "unpaid"): "expired, not paid"}
    parts = [states.get((s["status"], s["payment_status"]), f"{s['status']}/{s['payment_status']}")]
    for c in p["charges"]:
        if c["disputed"]:
            parts.append(f"charge {money(c['amount'], c['currency'])} disputed")
        elif c["amount_refunded"]:
            parts.append(f"refunded {money(c['amount_refunded'], c['currency'])}")
        elif c["status"] == "failed":
            parts.append(f"charge {money(c['amount'], c['currency'])} failed")
    if p["subscription"]:
        sub = p["subscription"]
        ending = ", ends at period end" if sub["cancel_at_period_end"] and sub["status"] != "canceled" else ""
        parts.append(f"subscription {sub['status']}{ending}")
    return "<br>".join(escape(part) for part in parts)


def _purchase_actions(p: dict[str, Any]) -> str:
    s = p["session"]
    base = f"/_fake/checkout/sessions/{s['id']}"
    actions = ""
    if s["status"] == "open":
        actions += _button(f"{base}/pay", "Pay", _redirect="1") + _button(f"{base}/expire", "Expire", _redirect="1")
    elif s["status"] == "complete" and s["payment_status"] == "unpaid":
        actions += (_button(f"{base}/async_result", "Settle bank debit", succeeded="true", _redirect="1")
                    + _button(f"{base}/async_result", "Fail bank debit", succeeded="false", _redirect="1"))
    several = len([c for c in p["charges"] if c["status"] == "succeeded"]) > 1
    for c in p["charges"]:
        if c["status"] == "succeeded" and not c["disputed"] and c["amount_refunded"] < c["amount"]:
            which = f" {money(c['amount'], c['currency'])} of {_when(c['created'])[:10]}" if several else ""
            actions += (_button(f"/_fake/charges/{c['id']}/refund", f"Refund{which}", _redirect="1")
                        + _button(f"/_fake/charges/{c['id']}/dispute", f"Dispute{which}", _redirect="1"))
    sub = p["subscription"]
    if sub and sub["status"] != "canceled":
        base = f"/_fake/subscriptions/{sub['id']}"
        actions += (_button(f"{base}/renew", "Renew (next period paid)", _redirect="1")
                    + _button(f"{base}/fail_invoice", "Fail renewal", _redirect="1")
                    + _button(f"{base}/cancel", "Cancel now", _redirect="1"))
    return actions or "<span class='muted'>none</span>"


def _purchase_row(p: dict[str, Any]) -> str:
    s = p["session"]
    what = escape(", ".join(p["items"]))
    ours = s["metadata"].get("package_id") or s["metadata"].get("plan_id")
    if ours:
        what += f"<br><span class='muted'>{'plan' if s['mode'] == 'subscription' else 'pack'} {escape(ours)}</span>"
    amount = money(s["amount_total"], s["currency"])
    if p["subscription"]:
        recurring = p["subscription"]["items"]["data"][0]["price"]["recurring"]
        amount += f" per {escape(recurring['interval'])}"
    user = f"<br><span class='muted'>user {escape(str(s['client_reference_id']))}</span>" if s["client_reference_id"] else ""
    deliveries = "".join(f"<li>{escape(e['event']['type'])}: {_outcomes(e['deliveries'])}</li>" for e in p["events"])
    return (f"<tr id='{escape(s['id'])}' data-email='{escape(p['email'] or '')}'>"
            f"<td>{_when(s['created'])}</td><td>{escape(p['email'] or '(no e-mail yet)')}{user}</td>"
            f"<td>{what}</td><td>{amount}</td><td>{_purchase_status(p)}</td>"
            f"<td><ul>{deliveries or '<li class=muted>none yet</li>'}</ul></td><td>{_purchase_actions(p)}</td></tr>")


def dashboard(purchases: list[dict[str, Any]], events: list[dict[str, Any]], deliveries: list[Any],
              webhook_urls: list[str]) -> str:
    """Every purchase (Checkout Session) with its customer, what was bought, its status, the
    webhook deliveries it caused and their outcomes, and the actions on it; then the events."""
    head = ("<tr><th>Created</th><th>Customer</th><th>Pack or plan</th><th>Amount</th><th>Status</th>"
            "<th>Webhook deliveries</th><th>Actions</th></tr>")
    rows = "".join(_purchase_row(p) for p in purchases) or (
        "<tr><td colspan='7' class='muted'>No purchases yet: POST /credits/purchase (or /credits/subscribe) "
        "on the API, then open the checkout_url it returns.</td></tr>")
    by_event: dict[str, list[Any]] = {}
    for delivery in deliveries:
        by_event.setdefault(delivery.event_id, []).append(delivery)
    def event_row(e: dict[str, Any]) -> str:
        resend = _button(f"/_fake/events/{e['id']}/resend", "Resend", _redirect="1")
        return (f"<tr><td>{_when(e['created'])}</td><td>{escape(e['type'])}</td>"
                f"<td>{escape(e['data']['object'].get('id', ''))}</td>"
                f"<td>{_outcomes(by_event.get(e['id'], []))}</td><td>{resend}</td></tr>")

    event_rows = "".join(event_row(e) for e in reversed(events[-50:])) or (
        "<tr><td colspan='5' class='muted'>No events yet.</td></tr>")
    endpoints = ", ".join(escape(url) for url in webhook_urls) or "none"
    return _page("Stripe fake", "<h1>Stripe fake: dashboard</h1>"
                 f"<p>Webhooks go to {endpoints}, signed. Buttons act as the Stripe Dashboard (refund, dispute) or "
                 "as time (renewals) would, on that purchase only. To pay, open a purchase's checkout page: any "
                 "card number pays, 4000 0000 0000 0002 is declined.</p>"
                 f"<h2>Purchases</h2><table class='purchases'><thead>{head}</thead><tbody>{rows}</tbody></table>"
                 "<h2>Events, newest first</h2><table><thead><tr><th>Created</th><th>Type</th><th>Object</th>"
                 f"<th>Deliveries</th><th>Actions</th></tr></thead><tbody>{event_rows}</tbody></table>"
                 "<p class='muted'>JSON: GET /_fake/events</p>")
