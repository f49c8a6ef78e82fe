"""Routes the published extension knows that this backend will never serve again.

Each answers 410 in the envelope the extension displays (`error`/`message`), naming what to
do instead, so an installed extension shows an actionable message rather than an opaque 404.
Nothing here reads the request: no body, no identity, no secret.
"""
from __future__ import annotations

from chalicelib.core.errors import Gone

UPLOAD_FLOW = (
    "Catch-up now works in two steps: POST /transcription/catchup/upload gives a presigned URL "
    "for the recorded audio, then POST /transcription/catchup with its audio_key starts the "
    "job (poll GET /transcription/catchup/{job_id}). Please update the extension."
)
TWITCH_SECRET = (
    "The Twitch client secret is never sent to a browser. Stream details come from "
    "GET /twitch/stream?channel=..., and catch-up from uploaded audio. Please update the extension."
)

# (method, path) -> (code, message)
GONE_ROUTES: dict[tuple[str, str], tuple[str, str]] = {
    ("GET", "/twitch/credentials"): ("twitch_credentials_removed", TWITCH_SECRET),
    ("POST", "/transcription/get-presigned-upload-url"): ("legacy_upload_removed", UPLOAD_FLOW),
    ("POST", "/transcription/process-s3-audio"): ("legacy_upload_removed", UPLOAD_FLOW),
    ("POST", "/transcription/process-audio"): ("legacy_upload_removed", UPLOAD_FLOW),
    ("POST", "/transcription/init-chunked-upload"): ("legacy_upload_removed", UPLOAD_FLOW),
    ("POST", "/transcription/upload-chunk"): ("legacy_upload_removed", UPLOAD_FLOW),
    ("POST", "/transcription/finalize-chunked-upload"): ("legacy_upload_removed", UPLOAD_FLOW),
}


def gone(method: str, path: str) -> Gone:
    code, message = GONE_ROUTES[(method, path)]
    return Gone(message, code=code)
