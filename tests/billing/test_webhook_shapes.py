"""Signed events of an unexpected shape are acknowledged, recorded and logged; never a 5xx.

A signature proves Stripe sent the body, not that the body has the shape our code expects
(another API version, a field Stripe made nullable, an expanded object where an id was).
The fuzzer takes the fake's real events of one purchase and one subscription, replaces or
deletes fields anywhere inside `data.object` with values of other types, signs the result
and delivers it through the real webhook handler.
"""
from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, given, settings, strategies as st

from chalicelib.aws import store
from chalicelib.billing import fulfilment
from devstack.fakes.stripe_signing import build_event
from tests.billing.conftest import deliver, paid_checkout
from tests.conftest import post_json

EXAMPLES = 150

ODD_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=False),
    st.text(max_size=8), st.just([]), st.just({}), st.just([{"id": 1}]), st.just({"id": None}),
    st.just("pi_" + "x" * 20), st.just({"object": "list", "data": "nope"}),
)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path inside a JSON object (lists by index)."""
    found = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        found.append(prefix + (key,))
        found.extend(_paths(child, prefix + (key,)))
    return found


def _mangle(obj: dict, path: tuple, replacement: Any, delete: bool) -> None:
    parent = obj
    for key in path[:-1]:
        parent = parent[key]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = replacement


def _real_events(client, stripe_fake, buyer, tap) -> list[dict]:
    """One purchase (paid, refunded in part, disputed) and one paid subscription: the
    fake's own events, undelivered, plus the dispute's closing event."""
    user = buyer()
    purchase = paid_checkout(client, stripe_fake, user.token)
    payment_intent = stripe_fake.get(purchase["session_id"])["payment_intent"]
    stripe_fake.refund(payment_intent, 100)
    stripe_fake.dispute(payment_intent)
    status, body = post_json(client, "/credits/subscribe", user.token, {"plan_id": "basic_monthly"})
    assert status == 200, body
    stripe_fake.pay(body["session_id"])
    found = [e for e in tap.take() if e["type"] in fulfilment.HANDLERS]
    dispute = next(e for e in found if e["type"] == "charge.dispute.created")["data"]["object"]
    found.append(build_event("charge.dispute.closed", dict(dispute, status="lost")))
    return found


def test_mangled_signed_events_are_acknowledged_and_recorded(client, stripe_fake, buyer, tap, logged):
    originals = _real_events(client, stripe_fake, buyer, tap)
    failures: list[str] = []

    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def run(data) -> None:
        original = data.draw(st.sampled_from(originals))
        obj = copy.deepcopy(original["data"]["object"])
        for _ in range(data.draw(st.integers(1, 3))):
            paths = _paths(obj)
            if not paths:
                break
            path = data.draw(st.sampled_from(paths))
            _mangle(obj, path, data.draw(ODD_VALUES), data.draw(st.booleans()))
        event = build_event(original["type"], obj)
        status, body = deliver(client, event)
        if status >= 500 or status != 200:
            failures.append(f"{status} {body} for {original['type']} {obj!r:.300}")
        elif store.get("stripe-events", event_id=event["id"]) is None:
            failures.append(f"not recorded: {original['type']} {obj!r:.300}")

    run()
    assert not failures, failures[:20]
    assert len(logged("stripe.webhook")) >= EXAMPLES


def test_the_three_shapes_that_answered_500(client, stripe_fake, buyer, tap):
    """A refund without a charge id (it used to poison the purchase row: every later refund
    or dispute of it answered 500), amounts that are not integers, invoice lines that are
    not objects: each is acknowledged, and the real events still work afterwards."""
    from tests.conftest import balance

    user = buyer()
    purchase = paid_checkout(client, stripe_fake, user.token)
    assert deliver(client, tap.one("checkout.session.completed"))[0] == 200
    stripe_fake.refund(stripe_fake.get(purchase["session_id"])["payment_intent"], 333)
    refund = tap.one("charge.refunded")["data"]["object"]
    no_charge_id = build_event("charge.refunded", {**refund, "id": None})
    text_amount = build_event("charge.refunded", {**refund, "amount_refunded": "333"})
    for event in (no_charge_id, text_amount):
        assert deliver(client, event) == (200, {"received": True, "status": "orphaned"})
        assert store.get("stripe-events", event_id=event["id"])["reason"] == "malformed_charge"
    assert deliver(client, tap.one("charge.refunded"))[1]["status"] == "processed"
    assert balance(user.user_id) == 200 + 2000 - 2000 * 333 // 999

    status, body = post_json(client, "/credits/subscribe", user.token, {"plan_id": "basic_monthly"})
    stripe_fake.pay(body["session_id"])
    invoice = tap.one("invoice.paid")["data"]["object"]
    odd_lines = build_event("invoice.paid", {**invoice, "lines": {"object": "list", "data": [None, "x"]}})
    assert deliver(client, odd_lines)[0] == 200
