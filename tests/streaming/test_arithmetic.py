"""Pure billing and trimming arithmetic (no AWS, no providers)."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from chalicelib.ask import ELLIPSIS, recent_part
from chalicelib.streaming import affordable_minutes, billed_minutes


def test_affordable_minutes_examples():
    assert affordable_minutes(200, 10, None, 180) == 20
    assert affordable_minutes(200, 10, 3, 180) == 3
    assert affordable_minutes(5000, 10, None, 180) == 180
    assert affordable_minutes(200, 10, 500, 15) == 15
    assert affordable_minutes(9, 10, None, 180) == 0
    assert affordable_minutes(-30, 10, None, 180) == 0


@given(
    balance=st.integers(-1000, 100_000),
    price=st.integers(1, 100),
    requested=st.none() | st.integers(1, 180),
    ceiling=st.integers(1, 180),
)
def test_affordable_minutes_never_exceeds_balance_request_or_ceiling(balance, price, requested, ceiling):
    minutes = affordable_minutes(balance, price, requested, ceiling)
    assert 0 <= minutes <= ceiling
    assert minutes * price <= max(balance, 0)
    if requested:
        assert minutes <= requested
    if minutes < ceiling and (not requested or minutes < requested):
        assert (minutes + 1) * price > balance  # no affordable minute was left out


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
