"""POST /transcription/catchup/upload: a presigned PUT under the caller's prefix, type and size bound."""
from __future__ import annotations

import os
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from chalicelib.aws.clients import client as aws_client
from devstack.fakes.audio import make_wav
from tests.catchup.sigv4 import signature_matches


def upload_url(stack, token, content_type="audio/wav", file_size=1000):
    return stack.post("/transcription/catchup/upload", token,
                      {"content_type": content_type, "file_size": file_size})


def test_upload_url_is_under_the_callers_prefix_and_really_works(stack, new_user, settings):
    user = new_user()
    audio = make_wav(2, sample_rate=8000)
    status, body = upload_url(stack, user["token"], "audio/wav", len(audio))
    assert status == 200, body
    assert body["audio_key"].startswith(f"uploads/{user['user']['user_id']}/")
    assert body["audio_key"].endswith(".wav")
    assert body["expires_in"] == settings.catchup_upload_url_ttl_seconds
    assert body["headers"] == {"Content-Type": "audio/wav"} and body["method"] == "PUT"
    query = parse_qs(urlsplit(body["upload_url"]).query)
    assert query["X-Amz-SignedHeaders"] == ["content-length;content-type;host"]
    assert int(query["X-Amz-Expires"][0]) == settings.catchup_upload_url_ttl_seconds

    put = requests.put(body["upload_url"], data=audio, headers=body["headers"], timeout=10)
    assert put.status_code == 200, put.text
    head = aws_client("s3").head_object(Bucket=settings.resource("audio"), Key=body["audio_key"])
    assert head["ContentLength"] == len(audio) and head["ContentType"] == "audio/wav"


def test_the_signature_binds_content_type_and_length(stack, new_user):
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    status, body = upload_url(stack, new_user()["token"], "audio/webm", 5000)
    assert status == 200, body
    url = body["upload_url"]
    assert signature_matches(url, "PUT", {"Content-Type": "audio/webm", "Content-Length": "5000"}, secret)
    assert not signature_matches(url, "PUT", {"Content-Type": "text/html", "Content-Length": "5000"}, secret)
    assert not signature_matches(url, "PUT", {"Content-Type": "audio/webm", "Content-Length": "5001"}, secret)
    assert not signature_matches(url.replace("/uploads/", "/uploads/x"), "PUT",
                                 {"Content-Type": "audio/webm", "Content-Length": "5000"}, secret)


def test_an_object_stored_with_another_type_is_refused_at_submit(stack, new_user):
    """Defence in depth: even if a PUT with another type got through, the job refuses it."""
    user = new_user()
    audio = make_wav(2, sample_rate=8000)
    _, body = upload_url(stack, user["token"], "audio/wav", len(audio))
    put = requests.put(body["upload_url"], data=audio, headers={"Content-Type": "text/html"}, timeout=10)
    assert put.status_code == 200  # the embedded S3 does not check signatures; real S3 answers 403
    status, refused = stack.submit(user["token"], audio_key=body["audio_key"], audio=None)
    assert status == 422 and refused["code"] == "unsupported_audio_type"
    assert stack.balance(user["token"]) == 200


@pytest.mark.parametrize(
    "content_type, file_size, status, code",
    [
        ("text/plain", 1000, 422, "unsupported_audio_type"),
        ("video/mp4", 1000, 422, "unsupported_audio_type"),
        ("audio/wav", 10, 422, "validation_error"),
        ("audio/wav", 300 * 1024 * 1024, 413, "audio_too_large"),
        ("audio/wav", "1000", 422, "validation_error"),
        ("audio/wav", True, 422, "validation_error"),
    ],
)
def test_bad_type_or_size_is_refused(stack, new_user, content_type, file_size, status, code):
    got, body = upload_url(stack, new_user()["token"], content_type, file_size)
    assert (got, body["code"]) == (status, code)
    assert "upload_url" not in body


def test_codec_parameters_are_dropped_from_the_bound_type(stack, new_user):
    status, body = upload_url(stack, new_user()["token"], "Audio/WebM; codecs=opus", 4096)
    assert status == 200 and body["headers"]["Content-Type"] == "audio/webm"
    assert body["audio_key"].endswith(".webm")


def test_upload_needs_a_token(stack):
    response = stack.client.http.post("/transcription/catchup/upload", body="{}",
                                      headers={"Content-Type": "application/json"})
    assert response.status_code == 401
