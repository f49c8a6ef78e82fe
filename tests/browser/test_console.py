"""The operator console in headless Chromium, through a stage-prefixed URL: sign in, find a
user, grant credits with a reason, see the new balance and the audit entry, see the charts."""
from __future__ import annotations

import pytest

pytest.importorskip("playwright")

from playwright.sync_api import expect

from chalicelib.ops import admin as admin_command
from chalicelib.credits import ledger
from chalicelib.credits import stats
from chalicelib.aws.clients import client as aws_client
from tests.browser.console_fixtures import chromium_path, console_page, screenshot, stage_url  # noqa: F401
from tests.conftest import PASSWORD, register_over_http

TIMEOUT_MS = 15_000


def test_an_admin_finds_a_user_grants_credits_and_sees_the_business(live_server, stage_url, console_page):
    page = console_page
    operator = register_over_http(live_server.url, "console-admin")["user"]
    admin_command.set_role(aws_client("dynamodb"), "local", operator["email"], "admin")
    customer = register_over_http(live_server.url, "console-customer")["user"]
    # Some business to draw: a pack paid (as the webhook completes it), a question and its cost.
    ledger.complete_purchase(f"console-{customer['user_id']}", user_id=customer["user_id"], credits=2000,
                             amount=999, currency="usd", stripe_fields={},
                             extra_items=stats.revenue_items(customer["user_id"], stats.PURCHASES, 999, "usd"))
    stats.record_usage(customer["user_id"], "ask", openai_prompt_tokens=1200, openai_completion_tokens=300)
    ledger.charge(customer["user_id"], 5, service_type="ask", request_id="console-browser")

    response = page.goto(stage_url + "/admin")
    assert response.status == 200
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page.wait_for_selector("#login-form", timeout=TIMEOUT_MS)
    screenshot(page, "sign-in")

    # A non-admin is turned away by the page, and by the API behind it.
    page.fill("#login-email", customer["email"])
    page.fill("#login-password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_selector("#message.error", timeout=TIMEOUT_MS)
    assert "not an administrator" in page.text_content("#message")

    page.fill("#login-email", operator["email"])
    page.fill("#login-password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_selector("#view-users:not([hidden])", timeout=TIMEOUT_MS)

    page.fill("#search-q", customer["email"])
    page.click("#search-submit")
    page.wait_for_selector("#user-detail:not([hidden])", timeout=TIMEOUT_MS)
    expect(page.locator("#detail-balance")).to_have_text("2195", timeout=TIMEOUT_MS)
    assert page.text_content("#detail-invariant") == "holds"
    page.wait_for_selector("#detail-ledger tbody tr", timeout=TIMEOUT_MS)

    page.fill("#adjust-credits", "75")
    page.fill("#adjust-reason", "Goodwill for ticket 1234")
    page.click("#grant-submit")
    expect(page.locator("#detail-balance")).to_have_text("2270", timeout=TIMEOUT_MS)
    assert "Granted 75 credits" in page.text_content("#message")
    expect(page.locator("#detail-audit tbody tr", has_text="credits.grant")
           .filter(has_text="Goodwill for ticket 1234")).to_have_count(1, timeout=TIMEOUT_MS)
    first_ledger_row = page.text_content("#detail-ledger tbody tr")
    assert "admin" in first_ledger_row and "75" in first_ledger_row and "Goodwill for ticket 1234" in first_ledger_row
    screenshot(page, "user")

    page.click("nav [data-view=business]")
    page.wait_for_selector("svg.chart[data-chart=credits]", timeout=TIMEOUT_MS)
    charts = page.eval_on_selector_all("svg.chart", "nodes => nodes.map(n => n.getAttribute('data-chart'))")
    assert charts == ["revenue", "costs", "users", "credits"]
    assert page.eval_on_selector_all("svg.chart[data-chart=credits] rect.bar", "nodes => nodes.length") == 60
    tallest = page.eval_on_selector_all(
        "svg.chart[data-chart=credits] rect.bar", "nodes => Math.max(...nodes.map(n => +n.getAttribute('height')))")
    assert tallest > 50  # today's 2000 credits sold are drawn, not an empty frame
    page.wait_for_selector("#top-users tbody tr", timeout=TIMEOUT_MS)
    screenshot(page, "business")

    page.click("nav [data-view=attention]")
    page.wait_for_selector("#attention h3", timeout=TIMEOUT_MS)
    screenshot(page, "attention")

    page.click("nav [data-view=audit]")
    expect(page.locator("#audit-table tbody tr", has_text="credits.grant")
           .filter(has_text="Goodwill for ticket 1234")).to_have_count(1, timeout=TIMEOUT_MS)
    screenshot(page, "audit")
    with page.expect_download(timeout=TIMEOUT_MS) as download:
        page.click("#audit-export")
    exported = open(download.value.path(), encoding="utf-8").read()
    assert "Goodwill for ticket 1234" in exported and exported.startswith("entry_id,at,actor")

    assert page.problems == []  # no CSP violation, no script error  # type: ignore[attr-defined]
