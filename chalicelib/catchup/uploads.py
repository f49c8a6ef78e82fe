"""Catch-up audio in S3: presigned uploads under the user's own prefix, inline clips, fetch URLs.

The browser uploads straight to S3 with a presigned PUT, so audio never passes through
Lambda's 6 MB payload limit. The content type and the exact length are signed into the
URL (S3 refuses a PUT whose headers differ), the key is chosen by us under
`uploads/<user_id>/`, and the URL is short-lived; the bucket expires objects after a day.
A job may only name a key under its caller's prefix, and the object's stored type and
size are checked again at submit time, so nothing depends on the signature alone. Its
first bytes (a ranged GET) must be audio, and give the longest it can play
(chalicelib.catchup.audio_length): that, not a number the client sends, bounds what a job pays for.
"""
from __future__ import annotations

import base64
import binascii
import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any

from chalicelib.catchup import audio_length
from chalicelib.aws.clients import client
from chalicelib.core.errors import NotFound, PayloadTooLarge, ValidationFailed
from chalicelib.core.settings import get_settings
from chalicelib.core.validation import Field, Schema

logger = logging.getLogger(__name__)

BUCKET = "audio"
PREFIX = "uploads"
MIN_FILE_BYTES = 64  # below a WAV header: nothing a transcriber could use
S3_SINGLE_PUT_MAX = 5 * 1024**3

EXTENSIONS = {
    "audio/webm": "webm", "audio/ogg": "ogg", "audio/wav": "wav", "audio/x-wav": "wav",
    "audio/wave": "wav", "audio/mpeg": "mp3", "audio/mp4": "m4a", "audio/x-m4a": "m4a",
    "audio/aac": "aac", "audio/flac": "flac",
}
KEY_PATTERN = r"uploads/[A-Za-z0-9_-]{1,64}/[0-9a-f]{32}\.[a-z0-9]{1,5}"

UPLOAD_SCHEMA = Schema(
    {
        "content_type": Field(str, required=True, max_length=100, min_length=1,
                              normalize=lambda v: v.split(";", 1)[0].strip().lower()),
        "file_size": Field(int, required=True, minimum=MIN_FILE_BYTES, maximum=S3_SINGLE_PUT_MAX),
    },
    name="catchup_upload",
)

_DATA_URL = re.compile(r"data:[a-z0-9.+/-]{1,64}(?:;[a-z0-9=.+-]{1,64})*;base64,", re.I)


@dataclass(frozen=True)
class AudioObject:
    key: str
    size: int
    content_type: str
    max_seconds: float  # the longest it can play (chalicelib.catchup.audio_length)


def _bucket() -> str:
    return get_settings().resource(BUCKET)


def user_prefix(user_id: str) -> str:
    return f"{PREFIX}/{user_id}/"


def _check_type(content_type: str) -> str:
    allowed = get_settings().catchup_upload_content_types
    if content_type not in allowed:
        raise ValidationFailed(
            "Unsupported audio type; use one of: " + ", ".join(allowed),
            code="unsupported_audio_type", field="content_type",
        )
    return content_type


def _check_size(size: int, limit: int) -> None:
    if size > limit:
        raise PayloadTooLarge(f"Audio must be at most {limit} bytes", code="audio_too_large", limit=limit)


def create_upload(user_id: str, content_type: str, file_size: int) -> dict[str, Any]:
    """A presigned PUT for a new key under the user's prefix, bound to this type and size.

    The response names the headers the PUT must carry: anything else fails S3's
    signature check.
    """
    settings = get_settings()
    content_type = _check_type(content_type)
    _check_size(file_size, settings.catchup_upload_max_bytes)
    key = f"{user_prefix(user_id)}{uuid.uuid4().hex}.{EXTENSIONS.get(content_type, 'bin')}"
    expires = settings.catchup_upload_url_ttl_seconds
    url = client("s3").generate_presigned_url(
        "put_object",
        Params={"Bucket": _bucket(), "Key": key, "ContentType": content_type, "ContentLength": file_size},
        ExpiresIn=expires,
    )
    return {
        "upload_url": url,
        "audio_key": key,
        "expires_in": expires,
        "method": "PUT",
        "headers": {"Content-Type": content_type},
        "max_bytes": file_size,
    }


def uploaded(user_id: str, key: str) -> AudioObject:
    """The caller's uploaded object, checked again: 404 unless it is theirs and exists."""
    missing = NotFound("Audio not found; upload it first", code="audio_not_found")
    if not key.startswith(user_prefix(user_id)) or ".." in key:
        raise missing  # someone else's key looks exactly like a missing one
    head = head_object(key)
    if head is None:
        raise missing
    content_type = str(head.get("ContentType") or "").split(";", 1)[0].strip().lower()
    _check_type(content_type)
    size = int(head.get("ContentLength") or 0)
    _check_size(size, get_settings().catchup_upload_max_bytes)
    if size < MIN_FILE_BYTES:
        raise ValidationFailed("The audio is too short to be a recording", code="invalid_audio",
                               field="audio_key")
    prefix = _prefix(key)
    if prefix is None:
        raise missing
    return AudioObject(key, size, content_type, _max_seconds(prefix, size, "audio_key"))


def _prefix(key: str) -> bytes | None:
    """The object's first bytes (a ranged GET: the format and a WAV header are at the start)."""
    from botocore.exceptions import ClientError

    try:
        response = client("s3").get_object(Bucket=_bucket(), Key=key,
                                           Range=f"bytes=0-{audio_length.PREFIX_BYTES - 1}")
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
            return None  # deleted since the HEAD
        raise
    return response["Body"].read(audio_length.PREFIX_BYTES)


def _max_seconds(head: bytes, size: int, field: str) -> float:
    try:
        return audio_length.max_seconds(head, size)
    except audio_length.NotAudio as error:
        raise ValidationFailed(
            f"The audio is not a readable recording ({error}); use webm, ogg, wav, mp3, mp4 or flac",
            code="invalid_audio", field=field,
        ) from None


def head_object(key: str) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    try:
        return client("s3").head_object(Bucket=_bucket(), Key=key)
    except ClientError as error:
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status in (403, 404) or error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
            return None
        raise


def decode_inline(encoded: str) -> tuple[bytes, str]:
    """The bytes and sniffed type of inline base64 audio (a `data:` URL prefix is accepted)."""
    limit = get_settings().catchup_inline_audio_max_bytes
    prefix = _DATA_URL.match(encoded)
    payload = encoded[prefix.end():] if prefix else encoded
    if len(payload) > 4 * ((limit + 2) // 3) + 4:
        raise PayloadTooLarge(
            f"Inline audio must be at most {limit} bytes; upload larger clips",
            code="audio_too_large", limit=limit,
        )
    try:
        data = base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ValidationFailed("'audio' must be base64", code="invalid_audio", field="audio") from None
    _check_size(len(data), limit)
    if len(data) < MIN_FILE_BYTES:
        raise ValidationFailed("'audio' is too short to be a recording", code="invalid_audio", field="audio")
    content_type = audio_length.sniff(data)
    if content_type is not None:
        return data, content_type
    raise ValidationFailed(
        "'audio' is not a recognised audio format (webm, ogg, wav, mp3, mp4, flac)",
        code="unsupported_audio_type", field="audio",
    )


def store_inline(user_id: str, encoded: str) -> AudioObject:
    """Put inline audio under the user's prefix, so the worker reads every job the same way."""
    data, content_type = decode_inline(encoded)
    _check_type(content_type)
    seconds = _max_seconds(data[:audio_length.PREFIX_BYTES], len(data), "audio")
    key = f"{user_prefix(user_id)}{uuid.uuid4().hex}.{EXTENSIONS.get(content_type, 'bin')}"
    client("s3").put_object(Bucket=_bucket(), Key=key, Body=data, ContentType=content_type)
    return AudioObject(key, len(data), content_type, seconds)


def delete_quietly(key: str) -> None:
    """Remove an object nothing will use (the bucket's expiry would, a day later)."""
    try:
        client("s3").delete_object(Bucket=_bucket(), Key=key)
    except Exception:
        logger.exception("audio.delete_failed")


def fetch_url(key: str) -> str:
    """A presigned GET the transcription provider downloads the audio from."""
    return client("s3").generate_presigned_url(
        "get_object",
        Params={"Bucket": _bucket(), "Key": key},
        ExpiresIn=get_settings().catchup_audio_url_ttl_seconds,
    )
