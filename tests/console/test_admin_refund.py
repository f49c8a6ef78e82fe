"""An admin refund goes through Stripe; the webhook then claws back exactly once, as today."""
from __future__ import annotations

from chalicelib.aws import store
from chalicelib.credits import ledger
from tests.billing.conftest import deliver, paid_checkout
from tests.console.conftest import audit_entries, get_json
from tests.conftest import at_once, post_json

POPULAR_CENTS, POPULAR_CREDITS, SIGNUP = 999, 2000, 200


def _purchase(client, stripe_fake, tap, user) -> str:
    purchase = paid_checkout(client, stripe_fake, user.token)
    assert deliver(client, tap.one("checkout.session.completed", purchase["session_id"]))[0] == 200
    return purchase["transaction_id"]


def test_a_partial_then_full_refund_through_stripe_claws_back_once_each(client, admin, buyer, stripe_fake, tap):
    operator, user = admin(), buyer()
    transaction_id = _purchase(client, stripe_fake, tap, user)
    path = f"/admin/api/purchases/{transaction_id}/refund"

    first = post_json(client, path, operator["token"], {"amount": 333, "reason": "partial goodwill"},
                      **{"Idempotency-Key": "refund-a"})
    assert first[0] == 200, first
    assert first[1]["amount"] == 333 and first[1]["refund_id"].startswith("re_")
    # The same click again (same key) is the same refund, not a second one.
    assert post_json(client, path, operator["token"], {"amount": 333, "reason": "partial goodwill"},
                     **{"Idempotency-Key": "refund-a"}) == first
    refunded = tap.take("charge.refunded")
    assert len(refunded) == 1
    assert at_once(3, lambda: deliver(client, refunded[0])[0]) == [200] * 3
    taken = POPULAR_CREDITS * 333 // POPULAR_CENTS
    assert store.get("users", user_id=user.user_id)["credits_balance"] == SIGNUP + POPULAR_CREDITS - taken

    status, rest = post_json(client, path, operator["token"], {"reason": "the rest"})
    assert (status, rest["amount"]) == (200, POPULAR_CENTS - 333)
    deliver(client, tap.take("charge.refunded")[-1])
    assert store.get("users", user_id=user.user_id)["credits_balance"] == SIGNUP
    assert ledger.check_invariant(user.user_id).ok

    status, body = post_json(client, path, operator["token"], {"reason": "nothing left"})
    assert (status, body["code"], body["field"]) == (422, "validation_error", "amount")
    actions = [(e["action"], e["reason"]) for e in audit_entries(user.user_id) if e["action"] == "purchase.refund"]
    assert actions == [("purchase.refund", "the rest"), ("purchase.refund", "partial goodwill")]
    status, transactions = get_json(client, "/credits/transactions", user.token)
    assert [row["kind"] for row in transactions["items"]].count("clawback") == 2


def test_refunds_that_cannot_be_made_are_refused_and_nothing_is_sent(client, admin, buyer, stripe_fake, tap):
    operator, user = admin(), buyer()
    status, pending = post_json(client, "/credits/purchase", user.token, {"package_id": "starter"})
    assert status == 200
    cases = [
        (pending["transaction_id"], {"reason": "not paid yet"}, 409, "purchase_not_refundable"),
        ("no-such-purchase", {"reason": "unknown"}, 404, "purchase_not_found"),
        (f"grant%23signup%23{user.user_id}", {"reason": "a grant"}, 404, "purchase_not_found"),
        (pending["transaction_id"], {"amount": 10}, 422, "missing_field"),
        (pending["transaction_id"], {"reason": "x", "amount": -1}, 422, "validation_error"),
    ]
    for transaction_id, body, expected_status, code in cases:
        status, answer = post_json(client, f"/admin/api/purchases/{transaction_id}/refund", operator["token"], body)
        assert (status, answer["code"]) == (expected_status, code), answer
    assert tap.take("charge.refunded") == []
    assert [e for e in audit_entries(user.user_id) if e["action"] == "purchase.refund"] == []
