"""The rules fulfilment decides by: what was paid against what was asked, which plan an
invoice pays for, whose purchase a session is, what a refund's outcome says, and the
operator's log line for every event. Each test pins one rule a mutant once changed unnoticed.
"""
from __future__ import annotations

import copy
import logging


from chalicelib.aws import store
from devstack.fakes.stripe_signing import build_event
from tests.billing.conftest import EventTap, deliver, paid_checkout, user_item
from tests.conftest import balance, json_headers, post_json

SIGNUP = 200


def _session_event(client, stripe_fake, tap, user, package_id="popular") -> tuple[dict, dict]:
    purchase = paid_checkout(client, stripe_fake, user.token, package_id)
    return purchase, tap.one("checkout.session.completed", purchase["session_id"])


def _with_session(event: dict, **changes) -> dict:
    return build_event(event["type"], {**copy.deepcopy(event["data"]["object"]), **changes})


def _row(transaction_id: str) -> dict:
    return store.get("transactions", transaction_id=transaction_id)


# --- the amount paid against the price --------------------------------------------------------


def test_a_payment_in_another_currency_or_amount_grants_nothing_and_waits_for_review(
        client, stripe_fake, buyer, tap, logged):
    user = buyer()
    purchase, completed = _session_event(client, stripe_fake, tap, user, "power")
    one_yen = _with_session(completed, currency="jpy", amount_subtotal=1, amount_total=1)
    assert deliver(client, one_yen) == (200, {"received": True, "status": "needs_review"})
    assert balance(user.user_id) == SIGNUP
    row = _row(purchase["transaction_id"])
    assert (row["status"], row["review_reason"], row["paid_amount"], row["paid_currency"]) == (
        "needs_review", "currency_mismatch", 1, "jpy")
    assert store.get("stripe-events", event_id=one_yen["id"])["status"] == "needs_review"
    [(level, fields)] = logged("billing.payment_needs_review")
    assert (level, fields["expected_amount"], fields["paid_amount"], fields["transaction_id"]) == (
        logging.WARNING, 1999, 1, purchase["transaction_id"])

    other, completed = _session_event(client, stripe_fake, tap, user, "popular")
    # the catalogue price as subtotal, but a total that no discount or tax explains
    cheap = _with_session(completed, amount_total=1)
    assert deliver(client, cheap)[1]["status"] == "needs_review"
    assert _row(other["transaction_id"])["review_reason"] == "amount_mismatch"
    # nor a subtotal that is not the price, even if the total adds up
    wrong_price = _with_session(completed, amount_subtotal=1, amount_total=1)
    assert deliver(client, wrong_price)[1]["status"] == "needs_review"
    assert balance(user.user_id) == SIGNUP


def test_a_stripe_discount_on_the_catalogue_price_grants_the_pack_and_records_what_was_paid(
        client, stripe_fake, buyer, tap):
    user = buyer()
    purchase, completed = _session_event(client, stripe_fake, tap, user, "popular")
    discounted = _with_session(completed, amount_total=799 + 50,
                               total_details={"amount_discount": 200, "amount_shipping": 0, "amount_tax": 50})
    assert deliver(client, discounted)[1]["status"] == "processed"
    assert balance(user.user_id) == SIGNUP + 2000
    row = _row(purchase["transaction_id"])
    assert (row["status"], row["amount"]) == ("completed", 849)


def test_shipping_is_added_to_what_is_paid_never_subtracted(client, stripe_fake, buyer, tap):
    """amount_total = subtotal - discount + tax + shipping: shipping on top grants the pack,
    a total that treats it as a reduction does not add up and waits for review."""
    user = buyer()
    purchase, completed = _session_event(client, stripe_fake, tap, user, "popular")
    shipped = _with_session(completed, amount_total=999 + 300,
                            total_details={"amount_discount": 0, "amount_shipping": 300, "amount_tax": 0})
    assert deliver(client, shipped)[1]["status"] == "processed"
    assert balance(user.user_id) == SIGNUP + 2000
    assert _row(purchase["transaction_id"])["amount"] == 1299

    other, completed = _session_event(client, stripe_fake, tap, user, "popular")
    shipping_off = _with_session(completed, amount_total=999 - 300,
                                 total_details={"amount_discount": 0, "amount_shipping": 300, "amount_tax": 0})
    assert deliver(client, shipping_off)[1]["status"] == "needs_review"
    assert _row(other["transaction_id"])["review_reason"] == "amount_mismatch"
    assert balance(user.user_id) == SIGNUP + 2000


def _subscription_events(client, stripe_fake, user, plan_id="basic_monthly") -> tuple[EventTap, dict]:
    tap = EventTap(stripe_fake)
    status, body = post_json(client, "/credits/subscribe", user.token, {"plan_id": plan_id})
    assert status == 200, body
    stripe_fake.pay(body["session_id"])
    return tap, tap.one("invoice.paid")


def _deliver_subscription(client, tap) -> None:
    for event in tap.take():
        if event["type"] != "invoice.paid":
            assert deliver(client, event)[0] == 200


def test_an_invoice_that_is_not_the_plans_price_grants_nothing(client, stripe_fake, buyer, logged):
    user = buyer()
    tap, invoice_paid = _subscription_events(client, stripe_fake, user)
    invoice = copy.deepcopy(invoice_paid["data"]["object"])
    cheap = build_event("invoice.paid", dict(invoice, subtotal=1, total=1, amount_paid=1, amount_due=1))
    assert deliver(client, cheap)[1]["status"] == "needs_review"
    other_currency = build_event("invoice.paid", dict(invoice, currency="eur"))
    assert deliver(client, other_currency)[1]["status"] == "needs_review"
    assert balance(user.user_id) == SIGNUP
    assert [fields["reason"] for _, fields in logged("billing.invoice_needs_review")] == [
        "amount_mismatch", "currency_mismatch"]

    assert deliver(client, invoice_paid)[1]["status"] == "processed"  # the real one still grants
    assert balance(user.user_id) == SIGNUP + 1500
    grant = store.get("transactions", transaction_id=f"grant#subscription#{invoice['id']}")
    assert (grant["amount"], grant["currency"], grant["credits"]) == (invoice["amount_paid"], "usd", 1500)


def test_an_invoices_outcome_says_whether_it_granted_had_granted_or_grants_nothing(client, stripe_fake, buyer):
    user = buyer()
    tap, invoice_paid = _subscription_events(client, stripe_fake, user)
    _deliver_subscription(client, tap)
    invoice = copy.deepcopy(invoice_paid["data"]["object"])
    assert invoice["billing_reason"] == "subscription_create"

    def reason(event: dict) -> str | None:
        assert deliver(client, event)[1]["status"] == "processed"
        return store.get("stripe-events", event_id=event["id"]).get("reason")

    proration = build_event("invoice.paid", dict(invoice, id=invoice["id"] + "_upd",
                                                 billing_reason="subscription_update"))
    assert reason(proration) == "no_allowance_for_invoice"
    assert balance(user.user_id) == SIGNUP
    assert reason(invoice_paid) is None  # granted
    assert reason(build_event("invoice.paid", invoice)) == "already_granted"  # same invoice, new event
    assert balance(user.user_id) == SIGNUP + 1500


def _bind_plans(stripe_fake, env_override) -> dict[str, str]:
    basic = stripe_fake.add_price(499, recurring="month", product_name="Basic")["id"]
    pro = stripe_fake.add_price(1499, recurring="month", product_name="Pro")["id"]
    env_override(STRIPE_PRICE_IDS=f"basic_monthly={basic},pro_monthly={pro}")
    return {"basic": basic, "pro": pro}


def test_the_plan_follows_the_invoice_lines_price_in_both_invoice_shapes(client, stripe_fake, buyer, env_override):
    """A plan changed in the portal: the subscription's metadata still says basic, the
    invoice line's Price is pro's; the allowance is pro's (current and pre-2025-03 shapes)."""
    prices = _bind_plans(stripe_fake, env_override)
    user = buyer()
    tap, invoice_paid = _subscription_events(client, stripe_fake, user)
    _deliver_subscription(client, tap)
    modern = copy.deepcopy(invoice_paid["data"]["object"])
    assert modern["parent"]["subscription_details"]["metadata"]["plan_id"] == "basic_monthly"
    line = modern["lines"]["data"][0]
    assert line["pricing"]["price_details"]["price"] == prices["basic"]
    line["pricing"]["price_details"]["price"] = prices["pro"]
    line["amount"] = modern["subtotal"] = modern["total"] = modern["amount_paid"] = 1499
    assert deliver(client, build_event("invoice.paid", modern))[1]["status"] == "processed"
    assert balance(user.user_id) == SIGNUP + 6000
    assert (user_item(user.user_id)["subscription_tier"]) == "pro"

    legacy = copy.deepcopy(modern)
    legacy["id"] = modern["id"] + "_legacy"
    details = legacy.pop("parent")["subscription_details"]
    legacy.update(subscription=details["subscription"], subscription_details={"metadata": details["metadata"]})
    legacy_line = legacy["lines"]["data"][0]
    del legacy_line["pricing"]
    legacy_line["price"] = {"id": prices["pro"], "object": "price", "unit_amount": 1499}
    assert deliver(client, build_event("invoice.paid", legacy))[1]["status"] == "processed"
    assert balance(user.user_id) == SIGNUP + 12000


# --- whose purchase a session is --------------------------------------------------------------


def test_the_session_names_its_user_by_client_reference_id_else_metadata(client, stripe_fake, buyer, tap):
    user = buyer()
    purchase, completed = _session_event(client, stripe_fake, tap, user, "starter")
    session = completed["data"]["object"]
    assert session["client_reference_id"] == user.user_id
    someone_else = _with_session(completed, client_reference_id="someone-else")  # metadata still ours
    assert deliver(client, someone_else)[1]["status"] == "orphaned"
    no_metadata_user = _with_session(completed, metadata={**session["metadata"], "user_id": ""})
    assert deliver(client, no_metadata_user)[1]["status"] == "processed"
    assert balance(user.user_id) == SIGNUP + 500

    other, completed = _session_event(client, stripe_fake, tap, user, "starter")
    no_reference = _with_session(completed, client_reference_id=None)
    assert deliver(client, no_reference)[1]["status"] == "processed"
    assert balance(user.user_id) == SIGNUP + 1000


# --- what a refund's outcome says ---------------------------------------------------------------


def test_a_refunds_outcome_says_whether_it_waited_took_credits_or_had_nothing_new(client, stripe_fake, buyer, tap):
    user = buyer()
    purchase, completed = _session_event(client, stripe_fake, tap, user, "popular")
    payment_intent = completed["data"]["object"]["payment_intent"]
    stripe_fake.refund(payment_intent, 333)
    early = tap.one("charge.refunded")
    assert deliver(client, early)[1]["status"] == "processed"
    assert store.get("stripe-events", event_id=early["id"])["reason"] == "recorded_until_completed"

    deliver(client, completed)  # the completion applies the recorded refund
    stripe_fake.refund(payment_intent, 333)
    later = tap.take("charge.refunded")[-1]
    deliver(client, later)
    assert store.get("stripe-events", event_id=later["id"]).get("reason") is None  # took credits
    stale = build_event("charge.refunded", early["data"]["object"])  # a new id, old content
    deliver(client, stale)
    assert store.get("stripe-events", event_id=stale["id"])["reason"] == "nothing_new"
    assert balance(user.user_id) == SIGNUP + 2000 - 2000 * 666 // 999


# --- what the extension and operators see ------------------------------------------------------


def test_credits_balance_shows_the_subscription_tier(client, stripe_fake, buyer):
    user = buyer()
    response = client.http.get("/credits/balance", headers=json_headers(user.token))
    assert response.json_body["subscription_tier"] == "free"
    tap, _ = _subscription_events(client, stripe_fake, user, "pro_monthly")
    for event in tap.take():
        deliver(client, event)
    response = client.http.get("/credits/balance", headers=json_headers(user.token))
    assert (response.json_body["subscription_tier"], response.json_body["balance"]) == ("pro", SIGNUP + 6000)


def test_every_event_is_logged_for_operators_with_its_outcome(client, stripe_fake, buyer, tap, logged):
    user = buyer()
    _, completed = _session_event(client, stripe_fake, tap, user, "starter")
    foreign = _with_session(completed, id="cs_test_foreign", metadata={})
    deliver(client, completed)
    deliver(client, foreign)
    deliver(client, completed)
    assert [(level, fields["event_id"], fields["event_type"], fields["status"], fields["reason"])
            for level, fields in logged("stripe.webhook")] == [
        (logging.INFO, completed["id"], "checkout.session.completed", "processed", None),
        (logging.WARNING, foreign["id"], "checkout.session.completed", "orphaned", "unknown_transaction"),
        (logging.INFO, completed["id"], "checkout.session.completed", "processed", "duplicate_event"),
    ]


# --- whose subscription checkout expired --------------------------------------------------------


def _expired_subscription_checkout(client, stripe_fake, user) -> dict:
    tap = EventTap(stripe_fake)
    status, body = post_json(client, "/credits/subscribe", user.token, {"plan_id": "basic_monthly"})
    assert status == 200, body
    stripe_fake.expire(body["session_id"])
    expired = tap.one("checkout.session.expired")
    session = expired["data"]["object"]
    assert (session["client_reference_id"], session["metadata"]["user_id"]) == (user.user_id, user.user_id)
    return expired


def _opens_a_new_checkout(client, user, expired: dict) -> bool:
    status, body = post_json(client, "/credits/subscribe", user.token, {"plan_id": "basic_monthly"})
    assert status == 200, body
    return body["session_id"] != expired["data"]["object"]["id"]


def test_an_expired_subscription_checkout_names_its_user_by_client_reference_id_else_metadata(
        client, stripe_fake, buyer):
    user = buyer()
    expired = _expired_subscription_checkout(client, stripe_fake, user)
    by_reference = _with_session(expired, metadata={"plan_id": "basic_monthly"})  # no user_id
    assert deliver(client, by_reference) == (200, {"received": True, "status": "processed"})
    assert store.get("stripe-events", event_id=by_reference["id"]).get("reason") is None  # released
    assert _opens_a_new_checkout(client, user, expired)

    other = buyer()
    expired = _expired_subscription_checkout(client, stripe_fake, other)
    by_metadata = _with_session(expired, client_reference_id=None)
    assert deliver(client, by_metadata) == (200, {"received": True, "status": "processed"})
    assert store.get("stripe-events", event_id=by_metadata["id"]).get("reason") is None
    assert _opens_a_new_checkout(client, other, expired)


# --- what a dispute tells the operator ------------------------------------------------------------


def _disputed(client, stripe_fake, tap, user) -> tuple[dict, dict]:
    purchase, completed = _session_event(client, stripe_fake, tap, user, "popular")
    deliver(client, completed)
    dispute = stripe_fake.dispute(completed["data"]["object"]["payment_intent"])
    created = tap.one("charge.dispute.created", dispute["id"])
    assert deliver(client, created)[1]["status"] == "processed"
    return purchase, created["data"]["object"]


def test_only_a_dispute_closed_as_won_warns_the_operator_that_credits_stay_taken(
        client, stripe_fake, buyer, tap, logged):
    user = buyer()
    _, dispute = _disputed(client, stripe_fake, tap, user)
    lost = build_event("charge.dispute.closed", dict(dispute, status="lost"))
    assert deliver(client, lost)[1]["status"] == "processed"
    assert logged("billing.dispute_won") == []  # neither when opened nor when lost

    purchase, dispute = _disputed(client, stripe_fake, tap, user)
    won = build_event("charge.dispute.closed", dict(dispute, status="won"))
    assert deliver(client, won)[1]["status"] == "processed"
    # (logged once per fact recorded: the PaymentIntent's link row hands it over too)
    assert {(level, fields["transaction_id"], fields["user_id"], fields["dispute_id"])
            for level, fields in logged("billing.dispute_won")} == {
        (logging.WARNING, purchase["transaction_id"], user.user_id, dispute["id"])}
    assert balance(user.user_id) == SIGNUP  # the credits taken back are not re-granted
