"""At most one open subscription Checkout Session per user, however many requests race."""
from __future__ import annotations

from tests.billing.conftest import EventTap, deliver, user_item
from tests.conftest import at_once, post_json


def _open_subscription_checkouts(stripe_fake, user_id: str) -> list[dict]:
    customer = user_item(user_id)["stripe_customer_id"]
    return [s for s in stripe_fake.objects("checkout.session")
            if s["customer"] == customer and s["mode"] == "subscription" and s["status"] == "open"]


def _subscribe(client, user, plan_id: str = "basic_monthly", **headers: str):
    return post_json(client, "/credits/subscribe", user.token, {"plan_id": plan_id}, **headers)


def test_parallel_subscribes_open_one_checkout_and_all_get_it(client, stripe_fake, buyer):
    user = buyer()
    _subscribe(client, user, "pro_monthly")  # the Stripe customer exists; its session is replaced below
    answers = at_once(8, lambda: _subscribe(client, user))
    assert [status for status, _ in answers] == [200] * 8, answers
    assert len({body["session_id"] for _, body in answers}) == 1
    [session] = _open_subscription_checkouts(stripe_fake, user.user_id)
    assert session["id"] == answers[0][1]["session_id"]
    assert session["metadata"]["plan_id"] == "basic_monthly"


def test_a_first_ever_subscribe_in_parallel_also_opens_one(client, stripe_fake, buyer):
    user = buyer()
    answers = at_once(6, lambda: _subscribe(client, user))
    assert [status for status, _ in answers] == [200] * 6, answers
    assert len(_open_subscription_checkouts(stripe_fake, user.user_id)) == 1


def test_another_plan_replaces_the_open_checkout(client, stripe_fake, buyer):
    user = buyer()
    status, basic = _subscribe(client, user)
    assert status == 200
    assert _subscribe(client, user)[1]["session_id"] == basic["session_id"]  # reused
    status, pro = _subscribe(client, user, "pro_monthly")
    assert status == 200 and pro["session_id"] != basic["session_id"]
    assert stripe_fake.get(basic["session_id"])["status"] == "expired"
    [open_one] = _open_subscription_checkouts(stripe_fake, user.user_id)
    assert open_one["id"] == pro["session_id"]


def test_a_checkout_that_expired_at_stripe_frees_the_user_to_open_another(client, stripe_fake, buyer):
    user = buyer()
    tap = EventTap(stripe_fake)
    first = _subscribe(client, user)[1]
    stripe_fake.expire(first["session_id"])
    expired = tap.one("checkout.session.expired")
    assert deliver(client, expired) == (200, {"received": True, "status": "processed"})
    status, second = _subscribe(client, user)
    assert status == 200 and second["session_id"] != first["session_id"]
    assert len(_open_subscription_checkouts(stripe_fake, user.user_id)) == 1


def test_a_paid_checkout_is_not_replaced_by_another_plan(client, stripe_fake, buyer):
    user = buyer()
    first = _subscribe(client, user)[1]
    stripe_fake.pay(first["session_id"])  # paid, but its webhooks have not arrived yet
    status, body = _subscribe(client, user, "pro_monthly")
    assert (status, body["code"]) == (409, "already_subscribed")
