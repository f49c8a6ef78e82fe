"""The shared provider HTTP layer: retries, Retry-After, budgets and error mapping."""
from __future__ import annotations

import json

import pytest

from chalicelib.core.errors import ServiceUnavailable, UpstreamError
from chalicelib.core.logs import JsonFormatter
from chalicelib.providers import assemblyai, openai
from chalicelib.providers.http import OutcomeUnknown, ProviderRejected
from chalicelib.web.errors import answer, headers_of, status_of
from tests.conftest import OPENAI_KEY, free_port

MESSAGES = [{"role": "user", "content": "hello there"}]


def mint():
    return assemblyai.mint_streaming_token(60, 600)


def test_retries_5xx_then_succeeds(providers, fake_assemblyai):
    before = len(fake_assemblyai.requests_to("/v3/token"))
    fake_assemblyai.fail_next(2, 502, path_prefix="/v3/token")
    assert mint()["token"]
    assert len(fake_assemblyai.requests_to("/v3/token")) - before == 3
    assert len(providers) == 2 and providers[0] < providers[1]  # exponential backoff


def test_retry_after_is_honoured(providers, fake_openai):
    fake_openai.fail_next(1, 429, headers={"Retry-After": "2"}, path_prefix="/v1/chat")
    result = openai.chat(MESSAGES, max_completion_tokens=50)
    assert result.content
    assert providers == [2.0]


def test_429_after_all_attempts_is_provider_busy(providers, fake_openai):
    fake_openai.fail_next(3, 429, headers={"Retry-After": "1"}, path_prefix="/v1/chat")
    with pytest.raises(ServiceUnavailable) as caught:
        openai.chat(MESSAGES, max_completion_tokens=50)
    assert status_of(caught.value) == 503 and caught.value.code == "provider_busy"
    assert headers_of(caught.value)["Retry-After"] == "1"
    assert providers == [1.0, 1.0]


def test_retry_after_beyond_budget_gives_up_without_waiting(providers, fake_openai):
    fake_openai.fail_next(1, 429, headers={"Retry-After": "120"}, path_prefix="/v1/chat")
    with pytest.raises(ServiceUnavailable) as caught:
        openai.chat(MESSAGES, max_completion_tokens=50)
    assert caught.value.code == "provider_busy"
    assert headers_of(caught.value)["Retry-After"] == "120"
    assert providers == []


def test_persistent_5xx_is_a_502_without_the_provider_body(providers, fake_openai):
    secret_body = {"error": {"message": "internal detail: shard 7 exploded", "code": None}}
    fake_openai.fail_next(3, 500, body=secret_body, path_prefix="/v1/chat")
    with pytest.raises(UpstreamError) as caught:
        openai.chat(MESSAGES, max_completion_tokens=50)
    error = caught.value
    assert status_of(error) == 502 and error.code == "upstream_error"
    assert "shard" not in json.dumps(answer(error).body)


def test_provider_503_with_retry_after_is_passed_on(providers, fake_assemblyai):
    fake_assemblyai.fail_next(3, 503, headers={"Retry-After": "3"}, path_prefix="/v3/token")
    with pytest.raises(ServiceUnavailable) as caught:
        mint()
    assert caught.value.code == "upstream_unavailable"
    assert headers_of(caught.value)["Retry-After"] == "3"


def test_rejected_key_is_503_with_an_operator_log_that_never_names_the_key(
    providers, captured_logs, monkeypatch, caplog
):
    from chalicelib.core.settings import reset_settings

    wrong_key = "wrong-openai-key-abcdef123456"
    monkeypatch.setenv("OPENAI_API_KEY", wrong_key)
    reset_settings()
    with pytest.raises(ServiceUnavailable) as caught:
        openai.chat(MESSAGES, max_completion_tokens=50)
    assert caught.value.code == "provider_unavailable"
    assert "Incorrect API key" not in json.dumps(answer(caught.value).body)
    [event] = captured_logs("provider.credentials_rejected")
    assert event["provider"] == "openai" and "OPENAI_API_KEY" in event["operator_action"]
    formatter = JsonFormatter()
    lines = "\n".join(formatter.format(record) for record in caplog.records)
    assert wrong_key not in lines and OPENAI_KEY not in lines
    assert providers == []  # never retried


def test_quota_exhausted_is_not_retried(providers, fake_openai, captured_logs):
    body = {"error": {"message": "You exceeded your current quota", "type": "insufficient_quota",
                      "param": None, "code": "insufficient_quota"}}
    fake_openai.fail_next(1, 429, body=body, path_prefix="/v1/chat")
    with pytest.raises(ServiceUnavailable) as caught:
        openai.chat(MESSAGES, max_completion_tokens=50)
    assert caught.value.code == "provider_busy"
    assert captured_logs("provider.quota_exhausted")
    assert providers == []


def test_other_4xx_is_rejected_without_retry(providers, fake_openai):
    before = len(fake_openai.requests_to("/v1/chat"))
    fake_openai.fail_next(1, 400, path_prefix="/v1/chat")
    with pytest.raises(ProviderRejected) as caught:
        openai.chat(MESSAGES, max_completion_tokens=50)
    assert status_of(caught.value) == 502 and caught.value.provider_status == 400
    assert len(fake_openai.requests_to("/v1/chat")) - before == 1


def test_unreachable_provider_is_a_502_after_bounded_retries(providers, monkeypatch):
    from chalicelib.core.settings import reset_settings

    monkeypatch.setenv("ASSEMBLYAI_STREAMING_API_BASE", f"http://127.0.0.1:{free_port()}")
    reset_settings()
    with pytest.raises(UpstreamError) as caught:
        mint()
    assert caught.value.code == "upstream_unreachable"
    assert len(providers) == 2


def test_read_timeout_on_post_is_not_retried(providers, monkeypatch):
    """A POST that timed out may have been processed (and billed) by the provider."""
    import socket
    import threading

    from chalicelib.core.settings import reset_settings

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(conn)  # never answers

    threading.Thread(target=accept, daemon=True).start()
    monkeypatch.setenv("OPENAI_API_BASE", f"http://127.0.0.1:{listener.getsockname()[1]}/v1")
    monkeypatch.setenv("OPENAI_READ_TIMEOUT_SECONDS", "0.5")
    monkeypatch.setenv("PROVIDER_BUDGET_SECONDS", "3")
    reset_settings()
    try:
        with pytest.raises(UpstreamError) as caught:
            openai.chat(MESSAGES, max_completion_tokens=50)
        assert caught.value.code == "upstream_timeout"
        assert len(accepted) == 1 and providers == []
    finally:
        listener.close()
        for conn in accepted:
            conn.close()


def test_missing_key_is_a_configuration_error(providers, monkeypatch):
    from chalicelib.core.errors import ConfigurationError
    from chalicelib.core.settings import reset_settings

    monkeypatch.setenv("ASSEMBLYAI_API_KEY", "")
    reset_settings()
    with pytest.raises(ConfigurationError, match="ASSEMBLYAI_API_KEY"):
        mint()


def test_session_is_shared(providers):
    mint()
    first = assemblyai.client.session
    mint()
    assert assemblyai.client.session is first


# ----- a POST that may have reached the provider is never sent again ----------------------


@pytest.fixture
def dropping(providers, monkeypatch):
    """Every provider base URL points at a server that reads each request, then hangs up."""
    from chalicelib.core.settings import reset_settings
    from tests.dropping_server import DroppingServer

    with DroppingServer() as server:
        monkeypatch.setenv("OPENAI_API_BASE", server.url + "/v1")
        monkeypatch.setenv("ASSEMBLYAI_API_BASE", server.url)
        reset_settings()
        yield server
    reset_settings()


def test_chat_post_dropped_after_sending_is_sent_once(dropping, providers):
    with pytest.raises(OutcomeUnknown) as caught:
        openai.chat(MESSAGES, max_completion_tokens=50)
    assert status_of(caught.value) == 502 and caught.value.code == "upstream_unreachable"
    [received] = dropping.requests_to("POST", "/v1/chat/completions")
    assert json.loads(received.body)["messages"] == MESSAGES  # the whole body went out
    assert len(dropping.received) == 1 and providers == []


def test_transcript_post_dropped_after_sending_is_sent_once(dropping, providers):
    with pytest.raises(OutcomeUnknown) as caught:
        assemblyai.submit_transcript("https://audio.example/clip.wav", audio_end_at=60_000)
    assert status_of(caught.value) == 502 and caught.value.code == "upstream_unreachable"
    [received] = dropping.requests_to("POST", "/v2/transcript")
    assert json.loads(received.body)["audio_end_at"] == 60_000
    assert len(dropping.received) == 1 and providers == []


def test_get_dropped_after_sending_is_retried(dropping, providers):
    with pytest.raises(UpstreamError) as caught:
        assemblyai.get_transcript("abc")
    assert caught.value.code == "upstream_unreachable"
    assert not isinstance(caught.value, OutcomeUnknown)
    assert len(dropping.requests_to("GET", "/v2/transcript/abc")) == 3 and len(providers) == 2


def test_post_that_never_connected_is_retried(providers, monkeypatch):
    """Connection refused: not a byte left us, so sending it again cannot repeat it."""
    from chalicelib.core.settings import reset_settings

    monkeypatch.setenv("OPENAI_API_BASE", f"http://127.0.0.1:{free_port()}/v1")
    reset_settings()
    with pytest.raises(UpstreamError) as caught:
        openai.chat(MESSAGES, max_completion_tokens=50)
    assert caught.value.code == "upstream_unreachable"
    assert not isinstance(caught.value, OutcomeUnknown)
    assert len(providers) == 2


def test_never_sent_tells_connect_failures_from_drops():
    import requests
    from urllib3.exceptions import MaxRetryError, NameResolutionError, NewConnectionError, ProtocolError

    from chalicelib.providers.http import never_sent

    refused = MaxRetryError(None, "/", NewConnectionError(None, "refused"))
    unresolved = MaxRetryError(None, "/", NameResolutionError("host", None, OSError()))
    dropped = ProtocolError("Connection aborted.", ConnectionResetError())
    assert never_sent(requests.ConnectionError(refused))
    assert never_sent(requests.ConnectionError(unresolved))
    assert never_sent(requests.ConnectTimeout(MaxRetryError(None, "/", None)))
    assert not never_sent(requests.ConnectionError(dropped))
    assert not never_sent(requests.ConnectionError(OSError("broken pipe")))
