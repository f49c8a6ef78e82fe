"""Audio helpers shared by the speech fakes (AssemblyAI, OpenAI transcriptions).

The fakes cannot recognise speech, so they make up deterministic text whose
length follows the audio's real duration: long audio gives long transcripts,
which is what billing and summarisation code downstream must cope with.
"""

from __future__ import annotations

import io
import wave

_SCRIPT = (
    "Welcome back everyone, thanks for joining the stream today. "
    "We are going to pick up right where we left off last time. "
    "The plan is to finish the first boss and then look at the new patch notes. "
    "Chat has been asking about the settings, so let me go over them quickly. "
    "Okay, here we go, this next part is the tricky one. "
    "That went better than expected, let us keep going."
).split()


SCRIPT_WORDS: tuple[str, ...] = tuple(_SCRIPT)  # what the streaming fake "hears", word by word
CANNED_TRANSCRIPT = "[sandbox transcript]"  # how a fake with `label_canned` marks made-up text


def wav_duration_seconds(data: bytes) -> float | None:
    """Duration of a WAV file from its header, or None when `data` is not WAV."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    try:
        with wave.open(io.BytesIO(data)) as wav:
            rate = wav.getframerate()
            return wav.getnframes() / rate if rate else None
    except (wave.Error, EOFError):
        return None


def make_wav(seconds: float, sample_rate: int = 16000) -> bytes:
    """A silent 16-bit mono WAV of the given length, for tests and demos."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(b"\x00\x00" * int(seconds * sample_rate))
    return buffer.getvalue()


def speech_text(seconds: float, words_per_minute: float = 150) -> str:
    """Deterministic text of about `words_per_minute` words per minute of audio."""
    count = round(max(seconds, 0) * words_per_minute / 60)
    words = [_SCRIPT[i % len(_SCRIPT)] for i in range(count)]
    if words and not words[-1].endswith("."):
        words[-1] = words[-1].rstrip(",") + "."
    return " ".join(words)


def timed_words(text: str, duration_ms: int, speaker: str | None = None) -> list[dict[str, object]]:
    """AssemblyAI-style word objects spread evenly over `duration_ms`."""
    words = text.split()
    if not words:
        return []
    step = max(duration_ms // len(words), 1)
    return [
        {
            "text": word,
            "start": i * step,
            "end": i * step + max(step - 40, 1),
            "confidence": 0.98,
            "speaker": speaker,
        }
        for i, word in enumerate(words)
    ]
