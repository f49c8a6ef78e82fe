"""The HTML the Stripe fake shows to people: hosted Checkout, the billing
portal and a small dashboard of test actions, so `make run` users can buy
credits and trigger refunds or renewals from a browser without Stripe.
"""

from __future__ import annotations

from html import escape
from typing import Any, Iterable

from .stripe_params import money

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:720px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.4em;text-align:left}"
    "button{background:#635bff;color:#fff;border:0;border-radius:4px;padding:.5em 1em;cursor:pointer}"
    "form{display:inline}.muted{color:#777}"
)


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body><p class='muted'>Stripe fake (test mode)</p>{body}</body></html>")


def _button(action: str, label: str, **fields: str) -> str:
    hidden = "".join(f"<input type='hidden' name='{escape(k)}' value='{escape(v)}'>" for k, v in fields.items())
    return f"<form method='post' action='{escape(action)}'>{hidden}<button>{escape(label)}</button></form> "


def checkout(session: dict[str, Any], items: Iterable[dict[str, Any]]) -> str:
    """The hosted Checkout page for an open session."""
    rows = "".join(
        f"<tr><td>{escape(i['description'])}</td><td>{i['quantity']}</td>"
        f"<td>{money(i['amount_total'], i['currency'])}</td></tr>"
        for i in items
    )
    recurring = " per period" if session["mode"] == "subscription" else ""
    pay = f"/checkout/{session['id']}/pay"
    buttons = _button(pay, f"Pay {money(session['amount_total'], session['currency'])}{recurring}")
    if session["mode"] == "payment":
        buttons += _button(pay, "Pay by bank debit (settles later)", async_payment="true")
    cancel = f"<a href='{escape(session['cancel_url'])}'>Cancel</a>" if session.get("cancel_url") else ""
    return _page("Checkout", f"<h1>Checkout</h1><table><tr><th>Item</th><th>Qty</th><th>Amount</th></tr>{rows}</table>"
                             f"<p>{buttons}</p><p>{cancel}</p>")


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


def dashboard(sessions: list[dict[str, Any]], charges: list[dict[str, Any]],
              subscriptions: list[dict[str, Any]], events: list[dict[str, Any]]) -> str:
    """Buttons for every `/_fake/...` action on every object, newest first."""
    def rows(objs: list[dict[str, Any]], render: Any) -> str:
        return "".join(render(o) for o in reversed(objs)) or "<tr><td class='muted'>none</td></tr>"

    def session_row(s: dict[str, Any]) -> str:
        base = f"/_fake/checkout/sessions/{s['id']}"
        actions = ""
        if s["status"] == "open":
            actions = _button(f"{base}/pay", "Pay", _redirect="1") + _button(f"{base}/expire", "Expire", _redirect="1")
        elif s["payment_status"] == "unpaid" and s["status"] == "complete":
            actions = (_button(f"{base}/async_result", "Settle", succeeded="true", _redirect="1")
                       + _button(f"{base}/async_result", "Fail", succeeded="false", _redirect="1"))
        return (f"<tr><td>{escape(s['id'][:24])}…</td><td>{s['mode']}</td><td>{s['status']}/{s['payment_status']}</td>"
                f"<td>{escape(str(s['client_reference_id']))}</td><td>{actions}</td></tr>")

    def charge_row(c: dict[str, Any]) -> str:
        base = f"/_fake/charges/{c['id']}"
        actions = ""
        if c["status"] == "succeeded" and not c["refunded"] and not c["disputed"]:
            actions = _button(f"{base}/refund", "Refund", _redirect="1") + _button(f"{base}/dispute", "Dispute", _redirect="1")
        return (f"<tr><td>{escape(c['id'])}</td><td>{money(c['amount'], c['currency'])}</td>"
                f"<td>{c['status']}, refunded {money(c['amount_refunded'], c['currency'])}</td><td>{actions}</td></tr>")

    def sub_row(s: dict[str, Any]) -> str:
        base = f"/_fake/subscriptions/{s['id']}"
        actions = ""
        if s["status"] != "canceled":
            actions = (_button(f"{base}/renew", "Renew", _redirect="1")
                       + _button(f"{base}/fail_invoice", "Fail renewal", _redirect="1")
                       + _button(f"{base}/cancel", "Cancel", _redirect="1"))
        return f"<tr><td>{escape(s['id'])}</td><td>{s['status']}</td><td>{actions}</td></tr>"

    def event_row(e: dict[str, Any]) -> str:
        resend = _button(f"/_fake/events/{e['id']}/resend", "Resend", _redirect="1")
        return f"<tr><td>{escape(e['id'])}</td><td>{escape(e['type'])}</td><td>{resend}</td></tr>"

    return _page("Stripe fake", "<h1>Stripe fake</h1>"
                 f"<h2>Checkout Sessions</h2><table>{rows(sessions, session_row)}</table>"
                 f"<h2>Charges</h2><table>{rows(charges, charge_row)}</table>"
                 f"<h2>Subscriptions</h2><table>{rows(subscriptions, sub_row)}</table>"
                 f"<h2>Events</h2><table>{rows(events[-30:], event_row)}</table>"
                 "<p class='muted'>JSON: GET /_fake/events</p>")
