"""Pure billing and trimming arithmetic (no AWS, no providers)."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from chalicelib.live.ask import ELLIPSIS, recent_part
from chalicelib.live.captions import billed_minutes, billed_seconds, token_minutes


def test_token_minutes_examples():
    # 200 credits, 10 a minute, 20 kept for Ask: 18 minutes, capped by the token length.
    assert token_minutes(200, 10, longest=30, cap_remaining=180, ask_room=20) == 18
    assert token_minutes(200, 10, longest=10, cap_remaining=180, ask_room=20) == 10
    assert token_minutes(700, 10, longest=30, cap_remaining=180, ask_room=20) == 30
    assert token_minutes(200, 10, longest=10, cap_remaining=3, ask_room=20) == 3
    # Not enough to keep the room: captions first, whole minutes only.
    assert token_minutes(25, 10, longest=10, cap_remaining=180, ask_room=20) == 2
    assert token_minutes(9, 10, longest=10, cap_remaining=180, ask_room=20) == 0
    assert token_minutes(-30, 10, longest=10, cap_remaining=180, ask_room=20) == 0
    assert token_minutes(500, 10, longest=10, cap_remaining=0, ask_room=20) == 0


@given(
    balance=st.integers(-1000, 100_000),
    price=st.integers(1, 100),
    longest=st.integers(1, 180),
    cap=st.integers(-5, 180),
    room=st.integers(0, 100),
)
def test_token_minutes_never_exceeds_balance_cap_or_length(balance, price, longest, cap, room):
    minutes = token_minutes(balance, price, longest=longest, cap_remaining=cap, ask_room=room)
    assert 0 <= minutes <= max(min(longest, cap), 0)
    assert minutes * price <= max(balance, 0)
    if minutes and minutes * price > balance - room:
        # The room for Ask was given up only when keeping it leaves no whole minute.
        assert (balance - room) // price < 1
    if minutes == 0 and min(longest, cap) >= 1:
        assert balance < price


def test_billed_seconds_examples():
    assert billed_seconds(elapsed=2700, committed=2400, allowed=3000) == 2700  # honest renewing client
    assert billed_seconds(elapsed=30, committed=0, allowed=600) == 30  # stop at once
    assert billed_seconds(elapsed=700, committed=600, allowed=1200) == 700
    assert billed_seconds(elapsed=10, committed=600, allowed=1200) == 600  # renewed, then stopped
    assert billed_seconds(elapsed=99_999, committed=600, allowed=1200) == 1200  # late stop


@given(elapsed=st.integers(-100, 50_000), tokens=st.lists(st.integers(60, 1800), min_size=1, max_size=30))
def test_unpaid_provider_time_is_at_most_the_last_token(elapsed, tokens):
    allowed, committed = sum(tokens), sum(tokens[:-1])
    seconds = billed_seconds(elapsed, committed, allowed)
    assert committed <= seconds <= allowed
    assert allowed - seconds <= tokens[-1]


def test_billed_minutes_examples():
    assert billed_minutes(0, 20) == 1
    assert billed_minutes(1, 20) == 1
    assert billed_minutes(60, 20) == 1
    assert billed_minutes(61, 20) == 2
    assert billed_minutes(125, 20) == 3
    assert billed_minutes(10_000, 20) == 20
    assert billed_minutes(-5, 20) == 1


@given(elapsed=st.integers(-100, 20_000), reserved=st.integers(1, 180))
def test_billed_minutes_bounds(elapsed, reserved):
    minutes = billed_minutes(elapsed, reserved)
    assert 1 <= minutes <= reserved
    if 60 <= elapsed and minutes < reserved:
        assert (minutes - 1) * 60 < elapsed <= minutes * 60


def test_recent_part_keeps_short_transcripts():
    assert recent_part("  hello world  ", 100) == ("hello world", False)


def test_recent_part_keeps_the_tail_within_budget():
    words = [f"w{i}" for i in range(10_000)]
    text = " ".join(words)
    sent, trimmed = recent_part(text, 500)
    assert trimmed and sent.startswith(ELLIPSIS)
    assert len(sent) <= 500 * 4
    assert sent.endswith("w9999")
    first = sent[len(ELLIPSIS):].split(" ")[0]
    assert first in words  # cut at a word boundary, not inside a word


def test_recent_part_without_spaces_still_fits():
    sent, trimmed = recent_part("x" * 50_000, 100)
    assert trimmed and len(sent) == 400
