"""The credit ledger: the only module that changes a balance.

Every balance change is one DynamoDB TransactWriteItems holding the user's balance update
and the record that explains it, conditional so that it happens at most once.
"""
from __future__ import annotations

from typing import Any

from chalicelib import store

SIGNUP = "signup"


def signup_grant_record(user_id: str, credits: int, created_at: str) -> dict[str, Any]:
    """The transactions-table record that explains a new account's starting balance.

    Registration writes it in the same transaction as the user item (whose
    `credits_balance` starts at `credits`), so the invariant holds from the first moment.
    """
    return {
        "transaction_id": f"grant#{SIGNUP}#{user_id}",
        "user_id": user_id,
        "kind": "grant",
        "source": SIGNUP,
        "credits": credits,
        "amount": 0,
        "currency": "usd",
        "status": "completed",
        "created_at": created_at,
        "completed_at": created_at,
    }


def signup_grant_put(user_id: str, credits: int, created_at: str) -> dict[str, Any]:
    return {
        "Put": {
            "TableName": store.table_name("transactions"),
            "Item": store.to_item(signup_grant_record(user_id, credits, created_at)),
            "ConditionExpression": "attribute_not_exists(transaction_id)",
        }
    }
