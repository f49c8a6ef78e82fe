"""Billing with Stripe: the catalogue, Checkout, the customer portal and webhook fulfilment.

Importing this package (or any of its modules) never imports stripe-python: only a
request that actually calls Stripe or verifies a webhook pays for loading it.
"""
