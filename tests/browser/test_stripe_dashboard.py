"""The sandbox Stripe in headless Chromium, as a newcomer uses it: pay on the Checkout page (a
declined card first), then refund one purchase with the button on its own dashboard row; only
that buyer's credits go back."""
from __future__ import annotations

import pytest

pytest.importorskip("playwright")

from playwright.sync_api import expect

from tests.browser.console_fixtures import ARTEFACTS, chromium_path, console_page  # noqa: F401
from tests.conftest import PASSWORD, register_over_http

import requests

TIMEOUT_MS = 15_000


def _buy(api: str, token: str, pack: str) -> str:
    response = requests.post(api + "/credits/purchase", json={"package_id": pack}, timeout=30,
                             headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    return response.json()["checkout_url"]


def _balance(api: str, token: str) -> int:
    return requests.get(api + "/credits/balance", headers={"Authorization": f"Bearer {token}"},
                        timeout=10).json()["balance"]


def test_pay_in_the_browser_then_refund_one_purchase_from_its_row(live_server, stripe_to_server, console_page):
    page, api = console_page, live_server.url
    ada, bob = register_over_http(api, "ada"), register_over_http(api, "bob")
    ada_email, bob_email = ada["user"]["email"], bob["user"]["email"]

    page.goto(_buy(api, ada["token"], "starter"))
    page.fill("input[name=card]", "4000 0000 0000 0002")
    page.click("button:has-text('Pay $2.99')")
    expect(page.locator(".error")).to_have_text("Your card was declined.", timeout=TIMEOUT_MS)
    page.fill("input[name=card]", "4242 4242 4242 4242")
    with page.expect_request(lambda request: request.method == "GET" and request.redirected_from is not None):
        page.click("button:has-text('Pay $2.99')")  # paid: off to the success URL (none is served here)
    _goto(page, _buy(api, bob["token"], "popular"))
    with page.expect_request(lambda request: request.method == "GET" and request.redirected_from is not None):
        page.click("button:has-text('Pay $9.99')")
    assert (_balance(api, ada["token"]), _balance(api, bob["token"])) == (700, 2200)
    _goto(page, stripe_to_server.url + "/_fake")  # `make run`'s success URL: the dashboard

    headers = page.locator("table.purchases thead th").all_text_contents()
    assert headers == ["Created", "Customer", "Pack or plan", "Amount", "Status", "Webhook deliveries", "Actions"]
    ada_row = page.locator(f"tr[data-email='{ada_email}']")
    expect(ada_row).to_have_count(1)
    expect(ada_row).to_contain_text("Starter pack")
    expect(ada_row).to_contain_text("checkout.session.completed: 200")
    page.screenshot(path=str(ARTEFACTS.parent / "stripe-dashboard.png"), full_page=True)
    ada_row.locator("button", has_text="Refund").click()
    page.wait_for_url("**/_fake", timeout=TIMEOUT_MS)

    expect(page.locator(f"tr[data-email='{ada_email}']")).to_contain_text("refunded $2.99", timeout=TIMEOUT_MS)
    expect(page.locator(f"tr[data-email='{ada_email}']")).to_contain_text("charge.refunded: 200")
    expect(page.locator(f"tr[data-email='{bob_email}'] button", has_text="Refund")).to_have_count(1)
    assert (_balance(api, ada["token"]), _balance(api, bob["token"])) == (200, 2200)
    login = requests.post(api + "/auth/login", json={"email": ada_email, "password": PASSWORD}, timeout=30)
    assert login.json()["user"]["credits_balance"] == 200


def _goto(page, url: str) -> None:
    """Go to `url` once the redirect to the (unserved) success URL has landed on Chromium's
    error page: that late navigation would otherwise interrupt this one."""
    for attempt in range(5):
        try:
            page.goto(url)
            return
        except Exception as error:  # playwright's Error: "interrupted by another navigation"
            if "interrupted by another navigation" not in str(error) or attempt == 4:
                raise
            page.wait_for_timeout(500)

