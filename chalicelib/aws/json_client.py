"""A minimal AWS JSON-protocol client: one SigV4-signed POST over the standard library.

Why it exists: importing boto3 and building a client is most of the work of a cold JWT
authorizer, which needs AWS for two small calls: its secret from SSM (once per container)
and the account's standing from DynamoDB (one GetItem per token per cache period). This
module makes them with `http.client`, `hmac` and `hashlib`: the AWS JSON protocol (1.1 for
SSM, 1.0 for DynamoDB) is a POST of a JSON body with an `X-Amz-Target` header, signed with
Signature Version 4 (tests/unit/test_aws_json.py checks the signature against botocore's).

IAM: infra/policy.py reads `json_client.call("<service>", "<Operation>", {...})` in the source
like a boto3 client call, so the service and operation must be literal strings there (and a
DynamoDB request's `"TableName": get_settings().resource("<table>")` names its table).

What it does not do, and who still uses boto3: it has no paginator or waiter, and retries
only throttling and 5xx answers, three attempts with a short backoff. Credentials come from
the environment (what Lambda sets: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_SESSION_TOKEN); without them (a laptop using an AWS profile) botocore's credential chain
is asked, which loads botocore. `available()` says whether the environment alone suffices.
Endpoints follow boto3's own variables (AWS_ENDPOINT_URL_<SERVICE>, then AWS_ENDPOINT_URL),
so moto serves it as it serves boto3.
"""
from __future__ import annotations

import datetime
import hashlib
import hmac
import http.client
import json
import os
import time
import urllib.parse
from typing import Any, Mapping

# Per service: the JSON protocol version and the X-Amz-Target prefix (from its botocore model).
CONTENT_TYPES = {"ssm": "application/x-amz-json-1.1", "dynamodb": "application/x-amz-json-1.0"}
TARGET_PREFIXES = {"ssm": "AmazonSSM", "dynamodb": "DynamoDB_20120810"}
RETRYABLE_CODES = {"ThrottlingException", "ProvisionedThroughputExceededException",
                   "RequestLimitExceeded", "InternalServerError", "ServiceUnavailable"}
ATTEMPTS = 3


class AwsError(Exception):
    """An AWS error answer: `code` is its type (for example `ThrottlingException`)."""

    def __init__(self, code: str, status: int) -> None:
        super().__init__(f"{code} (HTTP {status})")
        self.code = code
        self.status = status


def available(env: Mapping[str, str] = os.environ) -> bool:
    """True when the environment holds credentials (always so on Lambda)."""
    return bool(env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"))


def credentials(env: Mapping[str, str] = os.environ) -> tuple[str, str, str | None]:
    """(access key, secret key, session token): the environment's, else botocore's chain."""
    if available(env):
        return env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], env.get("AWS_SESSION_TOKEN") or None
    import botocore.session

    found = botocore.session.get_session().get_credentials()
    if found is None:
        raise AwsError("NoCredentials", 0)
    frozen = found.get_frozen_credentials()
    return str(frozen.access_key), str(frozen.secret_key), frozen.token


def endpoint(service: str, region: str, env: Mapping[str, str] = os.environ) -> str:
    specific = env.get(f"AWS_ENDPOINT_URL_{service.upper()}", "").strip()
    general = env.get("AWS_ENDPOINT_URL", "").strip()
    return specific or general or f"https://{service}.{region}.amazonaws.com"


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def sign(method: str, url: str, headers: dict[str, str], body: bytes, *, service: str, region: str,
         access_key: str, secret_key: str, session_token: str | None, now: datetime.datetime) -> dict[str, str]:
    """`headers` plus the SigV4 headers (X-Amz-Date, X-Amz-Security-Token, Authorization)."""
    parsed = urllib.parse.urlsplit(url)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    day = stamp[:8]
    signed = {k.lower(): " ".join(v.strip().split()) for k, v in headers.items()}
    signed["host"] = parsed.netloc
    signed["x-amz-date"] = stamp
    if session_token:
        signed["x-amz-security-token"] = session_token
    names = sorted(signed)
    canonical = "\n".join([
        method,
        urllib.parse.quote(parsed.path or "/", safe="/~"),
        parsed.query,
        "".join(f"{name}:{signed[name]}\n" for name in names),
        ";".join(names),
        hashlib.sha256(body).hexdigest(),
    ])
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(("AWS4" + secret_key).encode(), day), region), service), "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    result = dict(headers)
    result["X-Amz-Date"] = stamp
    if session_token:
        result["X-Amz-Security-Token"] = session_token
    result["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
                               f"SignedHeaders={';'.join(names)}, Signature={signature}")
    return result


def call(service: str, operation: str, payload: dict[str, Any], *, region: str,
         env: Mapping[str, str] = os.environ, timeout: float = 5.0) -> dict[str, Any]:
    """One API call (`call("ssm", "GetParameters", {...})`): the decoded answer, or AwsError."""
    url = endpoint(service, region, env)
    parsed = urllib.parse.urlsplit(url)
    body = json.dumps(payload).encode("utf-8")
    headers = {"Content-Type": CONTENT_TYPES[service], "X-Amz-Target": f"{TARGET_PREFIXES[service]}.{operation}"}
    access_key, secret_key, session_token = credentials(env)
    for attempt in range(ATTEMPTS):
        signed = sign("POST", url, headers, body, service=service, region=region,
                      access_key=access_key, secret_key=secret_key, session_token=session_token,
                      now=datetime.datetime.now(datetime.timezone.utc))
        connection_class = http.client.HTTPSConnection if parsed.scheme == "https" else http.client.HTTPConnection
        connection = connection_class(parsed.netloc, timeout=timeout)
        try:
            connection.request("POST", parsed.path or "/", body=body, headers=signed)
            response = connection.getresponse()
            status, raw = response.status, response.read()
        finally:
            connection.close()
        answer = json.loads(raw) if raw else {}
        if status == 200:
            return answer
        code = str(answer.get("__type", "") or answer.get("code", "") or f"HTTP{status}").rpartition("#")[2]
        if attempt + 1 < ATTEMPTS and (status >= 500 or code in RETRYABLE_CODES):
            time.sleep(0.05 * 2 ** attempt)
            continue
        raise AwsError(code, status)
    raise AssertionError("unreachable")
