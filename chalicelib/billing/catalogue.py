"""What we sell: credit packs (one-off) and subscription plans (monthly allowance), in one place.

Prices and credits are defined here and only here; a client names a pack or plan by id and
never sends a price. An operator may bind any item to a Stripe Price (`STRIPE_PRICE_IDS`,
e.g. `starter=price_123,pro_monthly=price_456`) so Stripe's dashboard and reports show real
products; without one, Checkout gets the same amount inline as `price_data`. A bound Price
must charge the amount listed here (Stripe is told nothing else about it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chalicelib.core.errors import ConfigurationError, ValidationFailed
from chalicelib.core.settings import get_settings


@dataclass(frozen=True)
class Pack:
    """A one-off purchase of `credits` for `amount` (smallest currency unit)."""

    id: str
    name: str
    credits: int
    amount: int
    currency: str = "usd"


@dataclass(frozen=True)
class Plan:
    """A subscription: `credits_per_period` granted once per paid invoice of each period."""

    id: str
    name: str
    tier: str
    credits_per_period: int
    amount: int
    currency: str = "usd"
    interval: str = "month"


# The first three are what the published extension sends; their ids must not change.
PACKS: tuple[Pack, ...] = (
    Pack("starter", "Starter pack", credits=500, amount=299),
    Pack("popular", "Popular pack", credits=2000, amount=999),
    Pack("power", "Power pack", credits=5000, amount=1999),
)

PLANS: tuple[Plan, ...] = (
    Plan("basic_monthly", "Basic (monthly)", tier="basic", credits_per_period=1500, amount=499),
    Plan("pro_monthly", "Pro (monthly)", tier="pro", credits_per_period=6000, amount=1499),
)

FREE_TIER = "free"

_PACKS = {pack.id: pack for pack in PACKS}
_PLANS = {plan.id: plan for plan in PLANS}


def pack(package_id: str) -> Pack:
    found = _PACKS.get(package_id)
    if found is None:
        raise ValidationFailed(
            "Unknown package", code="unknown_package", field="package_id",
            valid=sorted(_PACKS),
        )
    return found


def plan(plan_id: str) -> Plan:
    found = _PLANS.get(plan_id)
    if found is None:
        raise ValidationFailed(
            "Unknown plan", code="unknown_plan", field="plan_id", valid=sorted(_PLANS)
        )
    return found


def find_plan(plan_id: str | None) -> Plan | None:
    return _PLANS.get(plan_id or "")


def price_ids() -> dict[str, str]:
    """`STRIPE_PRICE_IDS` as {item id: Stripe Price id}; a typo fails loudly, not silently.

    The settings refuse an entry that is not `<id>=price_...`; only the catalogue knows the ids.
    """
    bound: dict[str, str] = {}
    for entry in get_settings().stripe_price_ids:
        item_id, _, price_id = entry.partition("=")
        if item_id not in _PACKS and item_id not in _PLANS:
            raise ConfigurationError(f"STRIPE_PRICE_IDS names unknown pack or plan {item_id!r}")
        bound[item_id] = price_id
    return bound


def plan_for_price(price_id: str | None) -> Plan | None:
    """The plan a Stripe Price is bound to (how plan changes made in the portal are followed)."""
    if not price_id:
        return None
    for item_id, bound in price_ids().items():
        if bound == price_id and item_id in _PLANS:
            return _PLANS[item_id]
    return None


def listing() -> dict[str, Any]:
    """`GET /credits/packages`: everything a client may buy, with its price."""
    return {
        "packages": [
            {"id": p.id, "name": p.name, "credits": p.credits, "amount": p.amount, "currency": p.currency}
            for p in PACKS
        ],
        "plans": [
            {
                "id": p.id,
                "name": p.name,
                "tier": p.tier,
                "credits_per_period": p.credits_per_period,
                "amount": p.amount,
                "currency": p.currency,
                "interval": p.interval,
            }
            for p in PLANS
        ],
    }
