"""The pure parts of catch-up: splitting, answer parsing, Twitch URLs, billing, inline audio."""
from __future__ import annotations

import base64
import json

import pytest

from chalicelib import audio_uploads, summarise
from chalicelib.catchup_worker import billed_minutes, twitch_login
from chalicelib.errors import PayloadTooLarge, ValidationFailed
from devstack.fakes.audio import make_wav


def test_split_text_keeps_every_word_in_order_and_fits_the_budget():
    text = " ".join(f"Sentence number {i} is here." for i in range(500))
    parts = summarise.split_text(text, max_tokens=50)
    assert len(parts) > 10
    assert all(len(p) <= 50 * summarise.CHARS_PER_TOKEN for p in parts)
    assert " ".join(parts) == text
    assert all(p.endswith(".") for p in parts)  # cut between sentences


def test_split_text_cuts_text_without_punctuation_or_spaces():
    no_stops = " ".join(["word"] * 1000)
    assert " ".join(summarise.split_text(no_stops, 20)) == no_stops
    blob = "x" * 1000
    parts = summarise.split_text(blob, 20)
    assert "".join(parts) == blob and max(map(len, parts)) == 80


def test_short_text_is_one_part():
    assert summarise.split_text("Hello there. Bye.", 1000) == ["Hello there. Bye."]


def test_parse_answer_accepts_the_shape_and_bounds_it():
    answer = json.dumps({
        "summary": "  They beat the boss. ",
        "key_points": ["a", "", 3, {"time": "10:00", "text": "b"}] + ["p"] * 20,
        "notable_moments": "not a list",
    })
    parsed = summarise.parse_answer(answer)
    assert parsed.summary == "They beat the boss."
    assert parsed.key_points[:2] == ["a", "10:00 - b"] and len(parsed.key_points) == summarise.MAX_KEY_POINTS
    assert parsed.notable_moments == []


@pytest.mark.parametrize("content", ["not json", "[1, 2]", '{"key_points": []}', '{"summary": "  "}'])
def test_parse_answer_refuses_other_shapes(content):
    with pytest.raises(summarise.SummaryError):
        summarise.parse_answer(content)


def test_empty_transcript_needs_no_model_call():
    result = summarise.summarise("   ", deadline=0)
    assert result.summary == summarise.NO_SPEECH and result.usage.calls == 0


@pytest.mark.parametrize(
    "url, login",
    [
        ("https://www.twitch.tv/Some_Streamer", "some_streamer"),
        ("https://twitch.tv/streamer?referrer=raid", "streamer"),
        ("https://m.twitch.tv/streamer/", "streamer"),
        ("https://www.twitch.tv/videos/123456", None),
        ("https://www.twitch.tv/directory/game/Chess", None),
        ("https://www.youtube.com/watch?v=abc", None),
        ("https://twitch.tv.evil.example/streamer", None),
        (None, None),
    ],
)
def test_twitch_login_from_url(url, login):
    assert twitch_login(url) == login


@pytest.mark.parametrize(
    "seconds, minutes",
    [(600, 10), (601, 10), (59.2, 1), (61, 2), (0, 1), (None, 1), (3 * 3600, 10)],
)
def test_billed_minutes_round_up_and_never_exceed_the_reservation(seconds, minutes):
    assert billed_minutes({"duration_minutes": 10}, seconds) == minutes


def test_inline_audio_is_sniffed_and_a_data_url_prefix_accepted(settings):
    wav = make_wav(1, sample_rate=8000)
    encoded = base64.b64encode(wav).decode()
    assert audio_uploads.decode_inline(encoded) == (wav, "audio/wav")
    assert audio_uploads.decode_inline("data:audio/wav;base64," + encoded) == (wav, "audio/wav")
    webm = b"\x1a\x45\xdf\xa3" + b"\x00" * 100
    assert audio_uploads.decode_inline(base64.b64encode(webm).decode())[1] == "audio/webm"


@pytest.mark.parametrize(
    "payload, error",
    [
        ("%%%not-base64%%%", ValidationFailed),
        (base64.b64encode(b"plain text, not audio at all" * 5).decode(), ValidationFailed),
        (base64.b64encode(b"RIFF").decode(), ValidationFailed),  # too short to be audio
        (base64.b64encode(b"\x00" * (4 * 1024 * 1024)).decode(), PayloadTooLarge),
    ],
)
def test_inline_audio_refusals(settings, payload, error):
    with pytest.raises(error):
        audio_uploads.decode_inline(payload)
