"""GET /twitch/stream: a channel's live status, title, game and latest VODs, looked up server-side.

The route's input is a query parameter; it is validated here like any body field, so the
provider client only ever sees a well-formed login. The lookup is free (no credits).
"""
from __future__ import annotations

from typing import Any

from chalicelib.core.validation import Field, Schema, validate

# Twitch logins are 4..25 characters of letters, digits and underscores; a few legacy
# accounts are shorter, so only the upper bound is enforced.
QUERY_SCHEMA = Schema(
    {
        "channel": Field(
            str, required=True, min_length=1, max_length=25, pattern=r"[a-z0-9_]{1,25}",
            normalize=lambda value: value.strip().lower(),
        )
    },
    allow_unknown=True,
    name="twitch_stream",
)


def lookup(query_params: dict[str, str] | None) -> dict[str, Any]:
    from chalicelib.providers import twitch

    params = validate(QUERY_SCHEMA, query_params or {})
    return twitch.channel_info(params["channel"])
