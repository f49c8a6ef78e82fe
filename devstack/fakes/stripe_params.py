"""Stripe-style parameter validation: the same messages, `param` and `code`.

Stripe rejects unknown parameters and reports every problem as a 400
`invalid_request_error` naming the offending parameter in bracket notation
(`line_items[0][price_data][currency]`). The fake does the same so that a
malformed call fails in tests exactly as it would against Stripe.
"""

from __future__ import annotations

from typing import Any, Iterable

from .base import FakeError

CHECKOUT_SESSION_PARAMS = frozenset(
    """adaptive_pricing after_expiration allow_promotion_codes allowed_payment_method_types
    automatic_tax billing_address_collection branding_settings cancel_url client_reference_id
    consent_collection currency custom_fields custom_text customer customer_account
    customer_creation customer_email customer_update discounts excluded_payment_method_types
    expand expires_at integration_identifier invoice_creation line_items locale managed_payments
    metadata mode name_collection optional_items origin_context payment_intent_data
    payment_method_collection payment_method_configuration payment_method_data
    payment_method_options payment_method_types permissions phone_number_collection
    redirect_on_completion return_url saved_payment_method_options setup_intent_data
    shipping_address_collection shipping_options submit_type subscription_data success_url
    tax_id_collection ui_mode wallet_options""".split()
)
LINE_ITEM_PARAMS = frozenset({"adjustable_quantity", "metadata", "price", "price_data", "quantity", "tax_rates"})
PRICE_DATA_PARAMS = frozenset(
    {"currency", "product", "product_data", "recurring", "tax_behavior", "unit_amount", "unit_amount_decimal"}
)
PRODUCT_DATA_PARAMS = frozenset({"description", "images", "metadata", "name", "tax_code", "tax_details", "unit_label"})
RECURRING_PARAMS = frozenset({"interval", "interval_count"})
SUBSCRIPTION_DATA_PARAMS = frozenset(
    """application_fee_percent billing_cycle_anchor billing_cycle_anchor_config billing_mode
    default_tax_rates description invoice_settings metadata on_behalf_of pending_invoice_item_interval
    proration_behavior transfer_data trial_end trial_period_days trial_settings""".split()
)
PAYMENT_INTENT_DATA_PARAMS = frozenset(
    """application_fee_amount capture_method description metadata on_behalf_of receipt_email
    setup_future_usage shipping statement_descriptor statement_descriptor_suffix transfer_data
    transfer_group""".split()
)
CUSTOMER_PARAMS = frozenset(
    """address balance business_name cash_balance default_source description email expand
    individual_name invoice_prefix invoice_settings metadata name next_invoice_sequence
    payment_method phone preferred_locales shipping source tax tax_exempt tax_id_data
    test_clock validate""".split()
)
PORTAL_PARAMS = frozenset(
    {"configuration", "customer", "customer_account", "expand", "flow_data", "locale", "on_behalf_of", "return_url"}
)
REFUND_PARAMS = frozenset(
    """amount charge currency customer expand instructions_email metadata origin payment_intent
    reason refund_application_fee reverse_transfer""".split()
)
SUBSCRIPTION_UPDATE_PARAMS = frozenset(
    """add_invoice_items application_fee_percent automatic_tax billing_cycle_anchor billing_schedules
    billing_thresholds cancel_at cancel_at_period_end cancellation_details collection_method
    days_until_due default_payment_method default_source default_tax_rates description discounts
    expand invoice_settings items metadata off_session on_behalf_of pause_collection payment_behavior
    payment_settings pending_invoice_item_interval proration_behavior proration_date transfer_data
    trial_end trial_from_plan trial_settings""".split()
)
SUBSCRIPTION_CANCEL_PARAMS = frozenset({"cancellation_details", "expand", "invoice_now", "prorate"})
PRICE_PARAMS = frozenset(
    """active billing_scheme currency currency_options custom_unit_amount expand lookup_key metadata
    nickname product product_data recurring tax_behavior tiers tiers_mode transfer_lookup_key
    transform_quantity unit_amount unit_amount_decimal""".split()
)


def name(prefix: str, key: str) -> str:
    """The bracket-notation name Stripe reports: name("line_items[0]", "price")."""
    return f"{prefix}[{key}]" if prefix else key


def invalid(message: str, param: str | None = None, code: str | None = None) -> FakeError:
    return FakeError(400, message, param=param, code=code)


def reject_unknown(params: Any, allowed: Iterable[str], prefix: str = "") -> dict[str, Any]:
    """The params as a dict, after rejecting keys Stripe does not know."""
    if not isinstance(params, dict):
        raise invalid("Invalid object", prefix or None)
    for key in params:
        if key not in allowed:
            full = name(prefix, key)
            raise invalid(f"Received unknown parameter: {full}", full, "parameter_unknown")
    return params


def required(params: dict[str, Any], key: str, prefix: str = "") -> Any:
    value = params.get(key)
    if value is None or value == "":
        full = name(prefix, key)
        raise invalid(f"Missing required param: {full}.", full, "parameter_missing")
    return value


def only_one(params: dict[str, Any], *keys: str, prefix: str = "") -> None:
    given = [name(prefix, k) for k in keys if params.get(k) not in (None, "")]
    if len(given) > 1:
        raise invalid(f"You may only specify one of these parameters: {', '.join(given)}.", given[-1])


def integer(value: Any, param: str, minimum: int | None = None) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise invalid(f"Invalid integer: {value}", param) from None
    if minimum is not None and number < minimum:
        raise invalid(f"This value must be greater than or equal to {minimum}.", param)
    return number


def boolean(value: Any, param: str) -> bool:
    if value in (True, "true"):
        return True
    if value in (False, "false"):
        return False
    raise invalid(f"Invalid boolean: {value}", param)


def one_of(value: Any, param: str, choices: Iterable[str]) -> str:
    options = list(choices)
    if value not in options:
        listed = ", ".join(options[:-1]) + f", or {options[-1]}" if len(options) > 1 else options[0]
        raise invalid(f"Invalid {param}: must be one of {listed}", param)
    return str(value)


def metadata(value: Any, param: str = "metadata") -> dict[str, str]:
    """Stripe's metadata rules: at most 50 keys, keys <= 40 chars, values <= 500 chars."""
    if value in (None, ""):
        return {}
    if not isinstance(value, dict):
        raise invalid("Invalid hash", param)
    if len(value) > 50:
        raise invalid("You can have at most 50 metadata keys.", param)
    for key, item in value.items():
        if len(key) > 40:
            raise invalid(f"Metadata keys can have up to 40 characters, but {key!r} is longer.", name(param, key))
        if not isinstance(item, str) or len(item) > 500:
            raise invalid("Metadata values can have up to 500 characters.", name(param, key))
    return dict(value)


def money(amount: int, currency: str) -> str:
    """Stripe's way of quoting an amount in messages: $1.50 / 150 jpy."""
    return f"${amount / 100:.2f}" if currency == "usd" else f"{amount} {currency}"
