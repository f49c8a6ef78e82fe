"""The whole loop over real HTTP: `python -m devstack.run` (chalice local) + the Stripe fake,
which serves the hosted checkout page and delivers signed webhooks to the server."""
from __future__ import annotations

import re

import pytest
import requests

from devstack.fakes.stripe_signing import deliver
from tests.billing.conftest import EventTap, wait_for
from tests.conftest import STRIPE_WEBHOOK_SECRET, assert_books_balance, at_once, register_over_http

pytestmark = pytest.mark.e2e


class Customer:
    """A user of the live server, talking to it over HTTP."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        registered = register_over_http(base_url, "buyer")
        self.user_id = registered["user"]["user_id"]
        self.email = registered["user"]["email"]
        self.headers = {"Authorization": f"Bearer {registered['token']}"}

    def post(self, path: str, body: dict | None = None) -> requests.Response:
        return requests.post(self.base_url + path, json=body or {}, headers=self.headers, timeout=20)

    def user(self) -> dict:
        response = requests.get(self.base_url + "/auth/user", headers=self.headers, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()["user"]

    def balance(self) -> int:
        return int(self.user()["credits_balance"])


def _pay_on_hosted_page(checkout_url: str) -> None:
    """What the buyer's browser does: open the page, press Pay, get sent to success_url."""
    page = requests.get(checkout_url, timeout=10)
    assert page.status_code == 200 and "<form" in page.text
    paid = requests.post(checkout_url + "/pay", allow_redirects=False, timeout=30)
    assert paid.status_code == 303, paid.text


def test_purchase_pay_webhook_balance_up_by_exactly_the_pack(live_server, stripe_to_server):
    fake = stripe_to_server
    buyer = Customer(live_server.url)
    assert buyer.balance() == 200
    response = buyer.post("/credits/purchase", {"package_id": "popular"})
    assert response.status_code == 200, response.text
    purchase = response.json()
    tap = EventTap(fake)

    _pay_on_hosted_page(purchase["checkout_url"])

    completed = tap.one("checkout.session.completed")
    assert [d.status_code for d in fake.deliveries if d.event_id == completed["id"]] == [200]
    assert buyer.balance() == 200 + 2000
    assert all(d.ok for d in fake.deliveries if d.event_id in {e["id"] for e in tap.take()})
    # Stripe retrying the same event later changes nothing
    fake.resend(completed["id"])
    assert buyer.balance() == 200 + 2000
    assert_books_balance(buyer.user_id)


def test_the_same_event_ten_times_in_parallel_over_http(live_server, stripe_to_server):
    fake = stripe_to_server
    buyer = Customer(live_server.url)
    purchase = buyer.post("/credits/purchase", {"package_id": "power"}).json()
    tap = EventTap(fake)
    fake.webhook_url = None  # hold the events back, then deliver one of them 10 times at once
    fake.pay(purchase["session_id"])
    completed = tap.one("checkout.session.completed")
    url = live_server.url + "/webhooks/stripe"
    statuses = at_once(10, lambda: deliver(url, completed, STRIPE_WEBHOOK_SECRET, timeout=30).status_code)
    assert statuses == [200] * 10
    assert buyer.balance() == 200 + 5000
    assert_books_balance(buyer.user_id)


def test_subscription_with_renewals_over_http(live_server, stripe_to_server):
    fake = stripe_to_server
    buyer = Customer(live_server.url)
    response = buyer.post("/credits/subscribe", {"plan_id": "pro_monthly"})
    assert response.status_code == 200, response.text
    session_id = response.json()["session_id"]

    _pay_on_hosted_page(response.json()["checkout_url"])
    user = buyer.user()
    assert (user["subscription_tier"], user["subscription_status"]) == ("pro", "active")
    assert user["credits_balance"] == 200 + 6000

    subscription_id = fake.get(session_id)["subscription"]
    fake.renew(subscription_id)
    fake.renew(subscription_id)
    assert buyer.balance() == 200 + 3 * 6000

    portal = buyer.post("/credits/portal")
    assert portal.status_code == 200 and portal.json()["url"].startswith(fake.url)

    fake.cancel_subscription(subscription_id)
    user = wait_for(lambda: (u := buyer.user())["subscription_tier"] == "free" and u)
    assert user["subscription_status"] == "canceled"
    assert user["credits_balance"] == 200 + 3 * 6000
    assert_books_balance(buyer.user_id)


def test_refund_over_http_takes_back_the_pack(live_server, stripe_to_server):
    fake = stripe_to_server
    buyer = Customer(live_server.url)
    purchase = buyer.post("/credits/purchase", {"package_id": "starter"}).json()
    _pay_on_hosted_page(purchase["checkout_url"])
    assert buyer.balance() == 700
    fake.refund(fake.get(purchase["session_id"])["payment_intent"])
    assert buyer.balance() == 200
    assert_books_balance(buyer.user_id)


def _dashboard_row(fake, email: str) -> str:
    """The fake Stripe dashboard's row of the one purchase made by `email`, as a browser gets it."""
    page = requests.get(fake.url + "/_fake", timeout=10)
    assert page.status_code == 200
    rows = [row for row in re.findall(r"<tr id='cs_test_\w+'.*?</tr>", page.text, re.S)
            if f"data-email='{email}'" in row]
    assert len(rows) == 1, f"{len(rows)} rows for {email}"
    return rows[0]


def test_a_refund_from_the_dashboard_takes_back_that_users_pack_only(live_server, stripe_to_server):
    """The dashboard's Refund button sits on the purchase it refunds: the buyer whose row it
    is loses that pack's credits, the other buyer keeps theirs."""
    fake = stripe_to_server
    ada, bob = Customer(live_server.url), Customer(live_server.url)
    for buyer, pack in ((ada, "starter"), (bob, "popular")):
        purchase = buyer.post("/credits/purchase", {"package_id": pack}).json()
        _pay_on_hosted_page(purchase["checkout_url"])
    assert (ada.balance(), bob.balance()) == (700, 2200)

    row = _dashboard_row(fake, ada.email)
    assert "Starter pack" in row and "$2.99" in row and "<td>paid</td>" in row and f"user {ada.user_id}" in row
    assert "checkout.session.completed: <span class='ok'>200</span>" in row  # delivered to the live server
    refund = re.search(r"<form method='post' action='(/_fake/charges/ch_\w+/refund)'>(.*?)</form>", row, re.S)
    fields = dict(re.findall(r"name='(\w+)' value='([^']*)'", refund.group(2)))
    back = requests.post(fake.url + refund.group(1), data=fields, allow_redirects=False, timeout=30)  # the click
    assert back.status_code == 303 and back.headers["Location"].endswith("/_fake")

    assert (ada.balance(), bob.balance()) == (200, 2200)
    row = _dashboard_row(fake, ada.email)
    assert "refunded $2.99" in row and "charge.refunded: <span class='ok'>200</span>" in row
    assert "/refund'" in _dashboard_row(fake, bob.email)
    assert_books_balance(ada.user_id, bob.user_id)
