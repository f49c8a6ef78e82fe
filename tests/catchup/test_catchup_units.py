"""The pure parts of catch-up: splitting, answer parsing, Twitch URLs, billing, inline audio."""
from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings as hypothesis_settings, strategies as st

from chalicelib.catchup import audio_length
from chalicelib.catchup import summaries
from chalicelib.catchup import uploads
from chalicelib.catchup.jobs import reserved_minutes
from chalicelib.catchup.worker import billed_minutes, twitch_login
from chalicelib.core.errors import PayloadTooLarge, ValidationFailed
from devstack.fakes.audio import make_wav


def test_split_text_keeps_every_word_in_order_and_fits_the_budget():
    text = " ".join(f"Sentence number {i} is here." for i in range(500))
    parts = summaries.split_text(text, max_tokens=50)
    assert len(parts) > 10
    assert all(len(p) <= 50 * summaries.CHARS_PER_TOKEN for p in parts)
    assert " ".join(parts) == text
    assert all(p.endswith(".") for p in parts)  # cut between sentences


def test_split_text_cuts_text_without_punctuation_or_spaces():
    no_stops = " ".join(["word"] * 1000)
    assert " ".join(summaries.split_text(no_stops, 20)) == no_stops
    blob = "x" * 1000
    parts = summaries.split_text(blob, 20)
    assert "".join(parts) == blob and max(map(len, parts)) == 80


def test_short_text_is_one_part():
    assert summaries.split_text("Hello there. Bye.", 1000) == ["Hello there. Bye."]


def test_parse_answer_accepts_the_shape_and_bounds_it():
    answer = json.dumps({
        "summary": "  They beat the boss. ",
        "key_points": ["a", "", 3, {"time": "10:00", "text": "b"}] + ["p"] * 20,
        "notable_moments": "not a list",
    })
    parsed = summaries.parse_answer(answer)
    assert parsed.summary == "They beat the boss."
    assert parsed.key_points[:2] == ["a", "10:00 - b"] and len(parsed.key_points) == summaries.MAX_KEY_POINTS
    assert parsed.notable_moments == []


@pytest.mark.parametrize("content", ["not json", "[1, 2]", '{"key_points": []}', '{"summary": "  "}'])
def test_parse_answer_refuses_other_shapes(content):
    with pytest.raises(summaries.SummaryError):
        summaries.parse_answer(content)


def test_empty_transcript_needs_no_model_call():
    result = summaries.summarise("   ", deadline=0)
    assert result.summary == summaries.NO_SPEECH and result.usage.calls == 0


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
    assert uploads.decode_inline(encoded) == (wav, "audio/wav")
    assert uploads.decode_inline("data:audio/wav;base64," + encoded) == (wav, "audio/wav")
    webm = b"\x1a\x45\xdf\xa3" + b"\x00" * 100
    assert uploads.decode_inline(base64.b64encode(webm).decode())[1] == "audio/webm"


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
        uploads.decode_inline(payload)


# ----- how long audio can play (chalicelib.catchup.audio_length) -------------------------------------


def _wav(seconds: float, rate: int, channels: int, width: int) -> bytes:
    import io
    import wave

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes(b"\x00" * (int(seconds * rate) * channels * width))
    return buffer.getvalue()


@hypothesis_settings(max_examples=60, deadline=None)
@given(seconds=st.floats(0.01, 30), rate=st.sampled_from([1000, 8000, 16000, 44100, 48000]),
       channels=st.integers(1, 2), width=st.sampled_from([1, 2, 3, 4]))
def test_a_wav_is_measured_exactly_from_its_header_and_size(seconds, rate, channels, width):
    data = _wav(seconds, rate, channels, width)
    frames = int(seconds * rate)
    assert audio_length.max_seconds(data[:audio_length.PREFIX_BYTES], len(data)) == pytest.approx(frames / rate)


def test_a_wav_with_chunks_before_its_data_is_measured_after_them():
    wav = make_wav(10, sample_rate=1000)
    extra = b"LIST" + (5).to_bytes(4, "little") + b"abcde\x00"  # odd size: padded to even
    data = wav[:36] + extra + wav[36:]
    assert audio_length.wav_seconds(data, len(data)) == pytest.approx(10)


@pytest.mark.parametrize(
    "head",
    [
        b"RIFF\x00\x00\x00\x00WAVE",  # no chunks
        make_wav(1, sample_rate=1000)[:36] + b"junk",  # fmt, then no data chunk
        b"RIFF\x00\x00\x00\x00WAVEdata\x10\x00\x00\x00" + b"\x00" * 64,  # data before fmt
        b"\x00\x01\x02\x03" * 20,  # not audio
    ],
)
def test_unreadable_audio_is_refused(head):
    with pytest.raises(audio_length.NotAudio):
        audio_length.max_seconds(head, 10_000)


@pytest.mark.parametrize("offset, value", [(20, 2), (22, 0), (24, 0), (28, 1), (32, 3), (34, 12)])
def test_an_inconsistent_wav_fmt_chunk_is_refused(offset, value):
    """Format tag, channels, rate, byte rate, block align, bits: each must agree with the rest."""
    wav = bytearray(make_wav(1, sample_rate=8000))
    size = 4 if offset in (24, 28) else 2
    wav[offset:offset + size] = value.to_bytes(size, "little")
    with pytest.raises(audio_length.NotAudio):
        audio_length.wav_seconds(bytes(wav), len(wav))


def test_compressed_audio_is_bounded_by_size_at_the_lowest_bitrate():
    for head in (b"OggS", b"\x1a\x45\xdf\xa3", b"fLaC", b"ID3\x04", b"\xff\xfb\x90", b"\x00\x00\x00\x20ftypM4A "):
        assert audio_length.max_seconds(head + b"\x00" * 32, 600_000) == 1200  # 600 kB at 4 kbit/s


@pytest.mark.parametrize(
    "requested, seconds, reserved",
    [(1, 600, 1), (30, 600, 10), (30, 600.1, 11), (5, 1, 1), (5, 0.0, 1), (60, 1e9, 60)],
)
def test_reserved_minutes_are_the_audio_capped_by_the_request(requested, seconds, reserved):
    assert reserved_minutes(requested, seconds) == reserved


def test_billing_is_capped_by_the_reserved_minutes_of_the_job():
    assert billed_minutes({"duration_minutes": 30, "reserved_minutes": 2}, 600) == 2
