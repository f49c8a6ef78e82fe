"""Check a presigned S3 URL the way S3 does (SigV4 query auth), for the request really sent.

The embedded S3 (moto) does not verify signatures, so on its own it would accept a PUT
whose Content-Type or length differ from what we signed. This recomputes the signature
S3 would expect for the headers actually sent and compares it with the URL's.
"""
from __future__ import annotations

import hashlib
import hmac
from urllib.parse import parse_qsl, quote, urlsplit


def _sign(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def signature_matches(url: str, method: str, headers: dict[str, str], secret_key: str) -> bool:
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    signature = params.pop("X-Amz-Signature")
    signed = params["X-Amz-SignedHeaders"].split(";")
    _, date, region, service, terminal = params["X-Amz-Credential"].split("/")
    sent = {name.lower(): " ".join(str(value).split()) for name, value in headers.items()}
    sent["host"] = parts.netloc
    canonical_query = "&".join(
        f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(params.items())
    )
    canonical_request = "\n".join([
        method.upper(),
        parts.path,
        canonical_query,
        "".join(f"{name}:{sent.get(name, '')}\n" for name in signed),
        ";".join(signed),
        "UNSIGNED-PAYLOAD",
    ])
    scope = f"{date}/{region}/{service}/{terminal}"
    string_to_sign = "\n".join([
        "AWS4-HMAC-SHA256", params["X-Amz-Date"], scope,
        hashlib.sha256(canonical_request.encode()).hexdigest(),
    ])
    key = ("AWS4" + secret_key).encode()
    for part in (date, region, service, terminal):
        key = _sign(key, part)
    expected = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)
