"""What the suite counts as "a user's data": one number per place where it can live."""
from __future__ import annotations

from chalicelib.accounts import privacy
from chalicelib.credits.ledger import records


def owned_counts(user_id: str) -> dict[str, int]:
    return {
        "usage": len(privacy._by_partition("usage", user_id)),
        "history": len(privacy._by_partition("history", user_id)),
        "sessions": len(privacy._session_keys(user_id)),
        "jobs": len(privacy._jobs(user_id)),
        "reservations": len(privacy._by_index("reservations", "user_id-index", user_id)),
        "transactions": len(privacy._by_index("transactions", "user_id-created_at-index", user_id)),
        "refresh_tokens": len(privacy._refresh_tokens(user_id)),
        "uploads": len(privacy._uploads(user_id)),
        "daily_usage": len(privacy._user_stats(user_id)),
        "idempotency_keys": len(privacy._idempotency_records(user_id)),
        "ledger_checkpoint": int(records.get_checkpoint(user_id) is not None),
    }
