"""The longest an audio file can play, from its first bytes and its size (no decoding).

A catch-up reserves credits for this length, and the worker tells AssemblyAI to stop there
(`audio_end_at`), so it bounds what we pay for; it must never be less than what a decoder
would play, whatever the file's header claims.

- WAV (PCM or float): the fmt chunk's byte rate, which must agree with its sample rate,
  channels and sample size, applied to every byte after the data chunk's header. The data
  chunk's own length is ignored: it can lie either way, and decoders read to the end of the
  file when it says 0 or 0xFFFFFFFF.
- Compressed formats cannot be timed without decoding them (MediaRecorder's WebM carries no
  duration at all), so their length is bounded from the size at COMPRESSED_MIN_BYTES_PER_SECOND,
  below the lowest bitrate their codecs produce (Opus 6 kbit/s, MP3 and AAC 8 kbit/s).
"""
from __future__ import annotations

import re
import struct

#: How much of a file is read to find the format and the WAV header.
PREFIX_BYTES = 64 * 1024
#: 4 kbit/s: under every supported codec's lowest bitrate (FLAC only gets there on silence).
COMPRESSED_MIN_BYTES_PER_SECOND = 500

WAV = "audio/wav"
_WAV_FORMATS = {1, 3, 0xFFFE}  # PCM, IEEE float, WAVE_FORMAT_EXTENSIBLE
_SIGNATURES: tuple[tuple[re.Pattern[bytes], str], ...] = (
    (re.compile(rb"RIFF....WAVE", re.S), WAV),
    (re.compile(rb"OggS"), "audio/ogg"),
    (re.compile(rb"\x1a\x45\xdf\xa3"), "audio/webm"),
    (re.compile(rb"fLaC"), "audio/flac"),
    (re.compile(rb"ID3|\xff[\xe0-\xff]", re.S), "audio/mpeg"),
    (re.compile(rb"....ftyp", re.S), "audio/mp4"),
)


class NotAudio(ValueError):
    """The bytes are not a recording we can bound (unknown format, inconsistent WAV header)."""


def sniff(head: bytes) -> str | None:
    """The audio format the first bytes announce (magic numbers), or None."""
    for signature, content_type in _SIGNATURES:
        if signature.match(head[:16]):
            return content_type
    return None


def max_seconds(head: bytes, size: int) -> float:
    """The longest the file of `size` bytes starting with `head` can play; NotAudio if not audio."""
    kind = sniff(head)
    if kind is None:
        raise NotAudio("not a recognised audio format")
    if kind == WAV:
        return wav_seconds(head, size)
    return size / COMPRESSED_MIN_BYTES_PER_SECOND


def wav_seconds(head: bytes, size: int) -> float:
    """A WAV file's length from its fmt chunk and its size (see the module docstring)."""
    pos, byte_rate = 12, None
    while pos + 8 <= len(head):
        chunk_id = head[pos:pos + 4]
        chunk_size = int.from_bytes(head[pos + 4:pos + 8], "little")
        body = pos + 8
        if chunk_id == b"fmt ":
            if chunk_size < 16 or body + 16 > len(head):
                raise NotAudio("truncated WAV fmt chunk")
            byte_rate = _wav_byte_rate(head[body:body + 16])
        elif chunk_id == b"data":
            if byte_rate is None:
                raise NotAudio("WAV data before its fmt chunk")
            if size <= body:
                raise NotAudio("WAV file without samples")
            return (size - body) / byte_rate
        pos = body + chunk_size + (chunk_size & 1)
    raise NotAudio(f"no WAV data chunk in the first {PREFIX_BYTES} bytes")


def _wav_byte_rate(fmt: bytes) -> int:
    tag, channels, rate, byte_rate, block_align, bits = struct.unpack("<HHIIHH", fmt)
    consistent = (
        tag in _WAV_FORMATS
        and 1 <= channels <= 32
        and 1 <= rate <= 768_000
        and bits in (8, 16, 24, 32, 64)
        and block_align == channels * bits // 8
        and byte_rate == rate * block_align
    )
    if not consistent:
        raise NotAudio("inconsistent or unsupported WAV fmt chunk")
    return byte_rate
