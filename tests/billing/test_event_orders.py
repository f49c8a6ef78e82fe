"""Any order of one purchase's events, each possibly redelivered, ends in the same state.

Stripe promises neither order nor single delivery. For each example hypothesis picks how the
purchase was paid (at once, later, or not at all), which refunds and which dispute followed
(with the charge's metadata or without it), a permutation of all those events and how many
times each is delivered. The events are the Stripe fake's own, signed and delivered through
the real webhook handler; the balance, the purchase row and the account's flag must be what
the purchase's history says, whatever the order.
"""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings, strategies as st

from chalicelib.aws import store
from chalicelib.billing.chargebacks import refunded_credits
from devstack.fakes.stripe_signing import build_event
from tests.billing.conftest import deliver
from tests.conftest import assert_books_balance, balance, post_json

EXAMPLES = 40
SIGNUP = 200
CREDITS, PRICE = 2000, 999  # the "popular" pack

HISTORIES = st.fixed_dictionaries({
    "payment": st.sampled_from(["paid", "async_succeeded", "async_failed"]),
    "refunds": st.sampled_from([(), (333,), (333, 666), (999,)]),
    "dispute": st.sampled_from([None, "open", "lost", "won"]),
    "strip_charge_metadata": st.booleans(),
})


def _history_events(client, stripe_fake, buyer, history) -> tuple[object, dict, list[dict]]:
    """Run one purchase's history on the fake; (user, purchase, the events it produced)."""
    user = buyer()
    status, purchase = post_json(client, "/credits/purchase", user.token, {"package_id": "popular"})
    assert status == 200, purchase
    start = len(stripe_fake.events)
    session_id = purchase["session_id"]
    if history["payment"] == "paid":
        stripe_fake.pay(session_id)
    else:
        stripe_fake.pay(session_id, async_payment=True)
        stripe_fake.complete_async_payment(session_id, succeeded=history["payment"] == "async_succeeded")
    paid = history["payment"] != "async_failed"
    payment_intent = stripe_fake.get(session_id)["payment_intent"]
    if paid:
        for amount in history["refunds"]:
            stripe_fake.refund(payment_intent, amount)
        if history["dispute"] and sum(history["refunds"]) < PRICE:
            stripe_fake.dispute(payment_intent)
    wanted = ("checkout.session.completed", "checkout.session.async_payment_succeeded",
              "checkout.session.async_payment_failed", "charge.refunded", "charge.dispute.created")
    found = [event for event in stripe_fake.events[start:] if event["type"] in wanted]
    for event in found:
        if event["type"] == "charge.refunded" and history["strip_charge_metadata"]:
            event["data"]["object"]["metadata"] = {}
    disputes = [event for event in found if event["type"] == "charge.dispute.created"]
    if disputes and history["dispute"] in ("lost", "won"):
        found.append(build_event("charge.dispute.closed",
                                 dict(disputes[0]["data"]["object"], status=history["dispute"])))
    return user, purchase, found


def _expected(history) -> dict:
    """What the purchase's history says, whatever order its events arrive in."""
    if history["payment"] == "async_failed":
        return {"balance": SIGNUP, "status": "failed", "credits_clawed_back": 0, "flagged": False}
    refunded = sum(history["refunds"])
    disputed = history["dispute"] is not None and refunded < PRICE
    clawed = CREDITS if disputed else refunded_credits(CREDITS, PRICE, refunded)
    return {"balance": SIGNUP + CREDITS - clawed, "status": "completed", "credits_clawed_back": clawed,
            "flagged": disputed, "refunded_amount": refunded, "dispute_applied": disputed or None,
            "dispute_status": history["dispute"] if disputed and history["dispute"] != "open" else None}


def test_every_order_of_a_purchases_events_ends_in_the_same_state(client, stripe_fake, buyer):
    failures: list[str] = []

    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(history=HISTORIES, data=st.data())
    def run(history, data) -> None:
        user, purchase, produced = _history_events(client, stripe_fake, buyer, history)
        copies = data.draw(st.lists(st.integers(1, 3), min_size=len(produced), max_size=len(produced)))
        deliveries = [event for event, count in zip(produced, copies) for _ in range(count)]
        order = data.draw(st.permutations(deliveries))
        for event in order:
            status, body = deliver(client, event)
            assert status == 200, (event["type"], body)

        expected = _expected(history)
        row = store.get("transactions", transaction_id=purchase["transaction_id"])
        user_item = store.get("users", user_id=user.user_id)
        seen = {"balance": balance(user.user_id), "status": row["status"],
                "credits_clawed_back": int(row.get("credits_clawed_back") or 0),
                "flagged": bool(user_item.get("flagged"))}
        if expected["status"] == "completed":
            seen.update(refunded_amount=int(row.get("refunded_amount") or 0),
                        dispute_applied=row.get("dispute_applied") or None,
                        dispute_status=row.get("dispute_status"))
        if seen != expected:
            failures.append(f"{history} in order {[e['type'] for e in order]}: {seen} != {expected}")
        assert_books_balance(user.user_id)

    run()
    assert not failures, failures[:5]
