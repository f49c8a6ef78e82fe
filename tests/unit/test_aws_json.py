"""chalicelib.aws.json_client: its SigV4 signature is botocore's, byte for byte; errors and retries."""
from __future__ import annotations

import datetime
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from chalicelib.aws import json_client

NOW = datetime.datetime(2026, 12, 1, 3, 4, 5, tzinfo=datetime.timezone.utc)


@pytest.mark.parametrize("token", [None, "session-token-value"])
@pytest.mark.parametrize("url", ["https://ssm.eu-west-1.amazonaws.com", "http://127.0.0.1:5123/"])
def test_signature_matches_botocore(url, token, monkeypatch):
    body = json.dumps({"Names": ["/app/prod/JWT_SECRET"], "WithDecryption": True}).encode()
    headers = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "AmazonSSM.GetParameters"}
    ours = json_client.sign("POST", url, headers, body, service="ssm", region="eu-west-1", access_key="AKIDEXAMPLE",
                         secret_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", session_token=token, now=NOW)
    request = AWSRequest(method="POST", url=url, data=body, headers=dict(headers))
    monkeypatch.setattr("botocore.auth.datetime.datetime",
                        type("Frozen", (datetime.datetime,), {"utcnow": classmethod(lambda cls: NOW.replace(tzinfo=None)),
                                                                "now": classmethod(lambda cls, tz=None: NOW)}))
    SigV4Auth(Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token), "ssm",
              "eu-west-1").add_auth(request)
    assert ours["Authorization"] == request.headers["Authorization"]
    assert ours["X-Amz-Date"] == request.headers["X-Amz-Date"]


class _Answers(BaseHTTPRequestHandler):
    script: list[tuple[int, dict]] = []
    seen: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers["Content-Length"])
        self.seen.append({"target": self.headers["X-Amz-Target"], "body": json.loads(self.rfile.read(length)),
                          "auth": self.headers["Authorization"]})
        status, answer = self.script.pop(0)
        raw = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args) -> None:  # noqa: D401
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _Answers.seen = []
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Answers
    httpd.shutdown()


def _env(url: str) -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_ENDPOINT_URL_SSM": url}


def test_throttling_is_retried_then_answered(server):
    url, handler = server
    handler.script = [(400, {"__type": "com.amazonaws#ThrottlingException"}), (200, {"Parameters": []})]
    assert json_client.call("ssm", "GetParameters", {"Names": ["a"]}, region="us-east-1", env=_env(url)) == \
        {"Parameters": []}
    assert [s["target"] for s in handler.seen] == ["AmazonSSM.GetParameters"] * 2
    assert handler.seen[0]["body"] == {"Names": ["a"]}


def test_a_refusal_is_an_error_with_its_code_and_not_retried(server):
    url, handler = server
    handler.script = [(400, {"__type": "AccessDeniedException", "message": "no"})]
    with pytest.raises(json_client.AwsError) as error:
        json_client.call("ssm", "GetParameters", {"Names": ["a"]}, region="us-east-1", env=_env(url))
    assert error.value.code == "AccessDeniedException" and len(handler.seen) == 1


def test_endpoints_and_availability():
    assert json_client.endpoint("ssm", "eu-west-1", {}) == "https://ssm.eu-west-1.amazonaws.com"
    assert json_client.endpoint("ssm", "x", {"AWS_ENDPOINT_URL": "http://h:1"}) == "http://h:1"
    assert json_client.endpoint("ssm", "x", {"AWS_ENDPOINT_URL": "http://h:1", "AWS_ENDPOINT_URL_SSM": "http://s:2"}) \
        == "http://s:2"
    assert json_client.available({"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"})
    assert not json_client.available({"AWS_ACCESS_KEY_ID": "a"})
