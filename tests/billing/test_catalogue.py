"""The catalogue and the refund arithmetic: pure logic, plus the public listing route."""
from __future__ import annotations

import json

import pytest

from chalicelib.billing import catalogue
from chalicelib.billing.chargebacks import refunded_credits
from chalicelib.core.errors import ConfigurationError, ValidationFailed
from chalicelib.core.settings import load_settings


def test_packages_route_lists_the_extensions_packs_and_the_plans(client):
    response = client.http.get("/credits/packages")
    assert response.status_code == 200
    body = json.loads(response.body)
    packs = {p["id"]: p for p in body["packages"]}
    assert packs["starter"] == {"id": "starter", "name": "Starter pack", "credits": 500, "amount": 299, "currency": "usd"}
    assert (packs["popular"]["credits"], packs["popular"]["amount"]) == (2000, 999)
    assert (packs["power"]["credits"], packs["power"]["amount"]) == (5000, 1999)
    plans = {p["id"]: p for p in body["plans"]}
    assert plans["basic_monthly"]["credits_per_period"] == 1500
    assert plans["basic_monthly"]["interval"] == "month"
    assert all(p["amount"] > 0 and p["tier"] != catalogue.FREE_TIER for p in plans.values())


def test_unknown_ids_are_validation_errors():
    with pytest.raises(ValidationFailed) as error:
        catalogue.pack("mega")
    assert error.value.code == "unknown_package"
    with pytest.raises(ValidationFailed):
        catalogue.plan("starter")  # a pack is not a plan


def test_price_ids_bind_items_and_reject_typos(env_override):
    env_override(STRIPE_PRICE_IDS="starter=price_abc, pro_monthly=price_def")
    assert catalogue.price_ids() == {"starter": "price_abc", "pro_monthly": "price_def"}
    assert catalogue.plan_for_price("price_def").id == "pro_monthly"
    assert catalogue.plan_for_price("price_abc") is None  # a pack, not a plan
    env_override(STRIPE_PRICE_IDS="startr=price_abc")
    with pytest.raises(ConfigurationError, match="unknown pack or plan 'startr'"):
        catalogue.price_ids()
    for bad in ("starter:price_abc", "starter=prod_abc"):  # refused with the settings themselves
        with pytest.raises(ConfigurationError, match="STRIPE_PRICE_IDS="):
            load_settings({"STRIPE_PRICE_IDS": bad})


@pytest.mark.parametrize(
    "credits, amount, refunded, expected",
    [
        (500, 299, 0, 0),
        (500, 299, 299, 500),      # full refund: every credit
        (500, 299, 1000, 500),     # never more than the pack
        (2000, 1000, 500, 1000),   # half
        (500, 299, 1, 1),          # rounded down
        (500, 299, 298, 498),
    ],
)
def test_refunded_credits(credits, amount, refunded, expected):
    assert refunded_credits(credits, amount, refunded) == expected


def test_partial_refunds_add_up_to_the_full_refund():
    """Cumulative amounts: successive increments sum to exactly what one full refund takes."""
    steps = [0, 1, 100, 150, 299]
    taken = [refunded_credits(500, 299, b) - refunded_credits(500, 299, a) for a, b in zip(steps, steps[1:])]
    assert all(t >= 0 for t in taken)
    assert sum(taken) == 500
