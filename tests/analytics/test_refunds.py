"""GET /analytics/costs: refunds and disputes are subtracted from revenue, exactly once.

Driven through the real webhook path (the Stripe fake emits the events, the test delivers
them signed, again and at the same time), so what is checked is the counter written in the
clawback's own transaction, not a number the test wrote itself.
"""
from __future__ import annotations

from chalicelib.credits import stats
from tests.analytics.conftest import get_json, top_users
from tests.billing.conftest import deliver
from tests.conftest import at_once
from tests.billing.conftest import paid_checkout

POPULAR_CENTS = 999  # the "popular" pack: 2000 credits
POPULAR_CREDITS = 2000
SIGNUP = 200


def _costs(client, token: str) -> dict:
    status, body = get_json(client, "/analytics/costs?days=1", token)
    assert status == 200, body
    return body


def _completed_purchase(client, stripe_fake, tap, user) -> str:
    """A paid "popular" pack, its completion delivered; returns the PaymentIntent id."""
    purchase = paid_checkout(client, stripe_fake, user.token)
    completed = tap.one("checkout.session.completed", purchase["session_id"])
    assert deliver(client, completed)[0] == 200
    return completed["data"]["object"]["payment_intent"]


def _deliver_repeatedly(client, event) -> None:
    """Twice in a row, then three copies at the same moment: Stripe's retries at their worst."""
    assert [deliver(client, event)[0] for _ in range(2)] == [200, 200]
    assert at_once(3, lambda: deliver(client, event)[0]) == [200] * 3


def _balance(client, user) -> int:
    status, body = get_json(client, "/credits/balance", user.token)
    assert status == 200, body
    return body["balance"]


def test_a_refund_in_two_parts_is_subtracted_once_each(client, admin, buyer, stripe_fake, tap, prices):
    operator = admin()
    user = buyer()
    payment_intent = _completed_purchase(client, stripe_fake, tap, user)
    stats.record_usage(user.user_id, "ask", openai_prompt_tokens=1_000)  # 1,000 micro-USD
    cost = 1_000

    stripe_fake.refund(payment_intent, 333)
    first = tap.take("charge.refunded")[-1]
    _deliver_repeatedly(client, first)
    body = _costs(client, operator["token"])
    assert body["revenue"] == {
        "purchases": POPULAR_CENTS, "subscriptions": 0, "refunds": 333, "total": POPULAR_CENTS - 333,
        "currency": "usd", "purchases_count": 1, "subscriptions_count": 0, "refunds_count": 1,
    }
    net_micro = (POPULAR_CENTS - 333) * 10_000
    assert body["margin"]["amount"] == net_micro - cost
    assert body["margin"]["percent"] == round((net_micro - cost) * 100 / net_micro, 2)
    assert body["daily"][-1]["revenue"] == POPULAR_CENTS - 333
    assert body["daily"][-1]["margin"] == net_micro - cost
    [top] = top_users(client, operator["token"])
    assert top["user_id"] == user.user_id and top["revenue"] == POPULAR_CENTS - 333

    stripe_fake.refund(payment_intent)  # the rest
    second = tap.take("charge.refunded")[-1]
    assert second["data"]["object"]["amount_refunded"] == POPULAR_CENTS
    _deliver_repeatedly(client, second)
    _deliver_repeatedly(client, first)  # the older event, late, changes nothing
    body = _costs(client, operator["token"])
    assert body["revenue"]["purchases"] == POPULAR_CENTS
    assert body["revenue"]["refunds"] == POPULAR_CENTS
    assert body["revenue"]["total"] == 0
    assert body["revenue"]["refunds_count"] == 2
    assert body["margin"] == {"amount": -cost, "amount_cents": 0, "percent": None,
                              "currency": "usd", "unit": "micro_usd"}
    assert body["daily"][-1]["revenue"] == 0
    assert top_users(client, operator["token"])[0]["revenue"] == 0
    assert _balance(client, user) == SIGNUP


def test_a_dispute_subtracts_the_disputed_amount_once(client, admin, buyer, stripe_fake, tap, prices):
    operator = admin()
    user = buyer()
    payment_intent = _completed_purchase(client, stripe_fake, tap, user)
    stripe_fake.dispute(payment_intent, 600)
    _deliver_repeatedly(client, tap.one("charge.dispute.created"))
    revenue = _costs(client, operator["token"])["revenue"]
    assert (revenue["purchases"], revenue["refunds"], revenue["total"], revenue["refunds_count"]) == (
        POPULAR_CENTS, 600, POPULAR_CENTS - 600, 1)
    assert _balance(client, user) == SIGNUP  # a dispute takes every credit of the pack


def test_a_refund_applied_after_a_dispute_took_every_credit_still_counts_its_money(
        client, admin, buyer, stripe_fake, tap, prices):
    """Refunded 300, then disputed 500, the dispute delivered first: the refund has no credit
    left to take (the row update goes out on its own) and its 300 are still counted, once."""
    operator = admin()
    user = buyer()
    payment_intent = _completed_purchase(client, stripe_fake, tap, user)
    stripe_fake.refund(payment_intent, 300)
    stripe_fake.dispute(payment_intent, 500)
    _deliver_repeatedly(client, tap.one("charge.dispute.created"))
    assert _balance(client, user) == SIGNUP
    _deliver_repeatedly(client, tap.one("charge.refunded"))
    assert _balance(client, user) == SIGNUP
    revenue = _costs(client, operator["token"])["revenue"]
    assert (revenue["refunds"], revenue["total"], revenue["refunds_count"]) == (800, POPULAR_CENTS - 800, 2)


def test_money_given_back_never_exceeds_the_charge(client, admin, buyer, stripe_fake, tap, prices):
    """A dispute of the whole charge after a partial refund gives back only what is left."""
    operator = admin()
    user = buyer()
    payment_intent = _completed_purchase(client, stripe_fake, tap, user)
    stripe_fake.refund(payment_intent, 333)
    stripe_fake.dispute(payment_intent)  # the whole 999
    for event in tap.take("charge.refunded") + tap.take("charge.dispute.created"):
        _deliver_repeatedly(client, event)
    revenue = _costs(client, operator["token"])["revenue"]
    assert (revenue["purchases"], revenue["refunds"], revenue["total"]) == (POPULAR_CENTS, POPULAR_CENTS, 0)


def test_a_refund_reported_before_completion_is_counted_when_the_purchase_completes(
        client, admin, buyer, stripe_fake, tap, prices):
    operator = admin()
    user = buyer()
    purchase = paid_checkout(client, stripe_fake, user.token)
    stripe_fake.refund(stripe_fake.get(purchase["session_id"])["payment_intent"], 500)
    _deliver_repeatedly(client, tap.one("charge.refunded"))
    revenue = _costs(client, operator["token"])["revenue"]
    assert (revenue["purchases"], revenue["refunds"]) == (0, 0)  # nothing paid yet, nothing given back

    _deliver_repeatedly(client, tap.one("checkout.session.completed"))
    revenue = _costs(client, operator["token"])["revenue"]
    assert (revenue["purchases"], revenue["refunds"], revenue["total"]) == (POPULAR_CENTS, 500, POPULAR_CENTS - 500)
    assert _balance(client, user) == SIGNUP + POPULAR_CREDITS - POPULAR_CREDITS * 500 // POPULAR_CENTS


def test_a_refund_and_dispute_of_a_deleted_accounts_purchase_are_acknowledged_and_counted(
        client, admin, buyer, stripe_fake, tap, prices):
    """Nothing to claw back from an erased account, but Stripe gets a 2xx (no retries for
    days), the anonymised purchase records the money given back, and revenue counts it."""
    import json

    from chalicelib.accounts import privacy
    from chalicelib.aws import store
    from tests.conftest import PASSWORD, json_headers

    operator = admin()
    user = buyer()
    purchase = paid_checkout(client, stripe_fake, user.token)
    assert deliver(client, tap.one("checkout.session.completed", purchase["session_id"]))[0] == 200
    payment_intent = stripe_fake.get(purchase["session_id"])["payment_intent"]
    response = client.http.delete("/auth/user", headers=json_headers(user.token),
                                  body=json.dumps({"password": PASSWORD}))
    assert response.status_code == 204, response.body

    stripe_fake.refund(payment_intent, 333)
    stripe_fake.dispute(payment_intent)
    for event in tap.take("charge.refunded") + tap.take("charge.dispute.created"):
        for _ in range(2):
            status, body = deliver(client, event)
            assert (status, body["status"]) == (200, "processed"), body
    row = store.get("transactions", transaction_id=purchase["transaction_id"])
    assert row["user_id"] == privacy.anonymous_id(user.user_id)
    assert (row["refunded_amount"], row["dispute_applied"], row["dispute_id"]) == (
        333, True, tap.one("charge.dispute.created")["data"]["object"]["id"])
    assert int(row.get("credits_clawed_back") or 0) == 0  # there was no balance to take from
    assert store.get("users", user_id=user.user_id) is None  # nothing recreated
    revenue = _costs(client, operator["token"])["revenue"]
    assert (revenue["purchases"], revenue["refunds"], revenue["total"]) == (POPULAR_CENTS, POPULAR_CENTS, 0)
