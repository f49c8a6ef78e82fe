"""POST /transcription/ask: reserve, answer from the transcript, settle or release."""
from __future__ import annotations

import json

from chalicelib.catchup import history
from chalicelib.credits import ledger
from chalicelib.live.ask import SYSTEM_PROMPT
from tests.conftest import usage_rows

TRANSCRIPT = "Welcome back. The boss has 3 phases. In phase two, dodge the purple beams."


def _chat_requests(fake_openai) -> int:
    return len(fake_openai.requests_to("/v1/chat/completions"))


def test_ask_answers_charges_and_records(caller, fake_openai):
    user = caller()
    r = user.ask("How many phases does the boss have?", TRANSCRIPT)
    assert r.status == 200, r.body
    assert r.body["success"] is True and r.body["answer"]
    assert (r.body["credits_used"], r.body["remaining_balance"]) == (5, 195)
    assert user.balance() == 195
    sent = fake_openai.requests_to("/v1/chat/completions")[-1].json()
    assert sent["model"] == "gpt-4o-mini"
    assert sent["messages"][0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert TRANSCRIPT in sent["messages"][1]["content"]
    assert "How many phases" in sent["messages"][1]["content"]
    [entry] = history.list_history(user.user_id)["items"]
    assert entry["kind"] == "ask" and entry["credits_used"] == 5
    assert "question" not in entry and "answer" not in entry
    [usage] = usage_rows(user.user_id, "ask")
    assert usage["metadata"]["provider"] == "openai"
    assert usage["metadata"]["prompt_tokens"] > 0 and usage["metadata"]["completion_tokens"] > 0
    assert "How many phases" not in json.dumps(usage, default=str)
    assert ledger.check_invariant(user.user_id).ok


def test_provider_429_then_success(caller, fake_openai):
    user = caller()
    fake_openai.fail_next(1, 429, headers={"Retry-After": "0"}, path_prefix="/v1/chat")
    before = _chat_requests(fake_openai)
    r = user.ask("What should I dodge?", TRANSCRIPT)
    assert r.status == 200, r.body
    assert _chat_requests(fake_openai) - before == 2
    assert user.balance() == 195


def test_provider_down_releases_the_credits(caller, fake_openai):
    user = caller()
    fake_openai.fail_next(3, 500, path_prefix="/v1/chat")
    r = user.ask("What should I dodge?", TRANSCRIPT)
    assert r.status == 502 and r.body["code"] == "upstream_error"
    assert isinstance(r.body["error"], str)
    assert user.balance() == 200
    assert usage_rows(user.user_id, "ask") == []
    assert history.list_history(user.user_id)["items"] == []
    assert ledger.check_invariant(user.user_id).ok


def test_provider_busy_is_503_with_retry_after_and_releases(caller, fake_openai):
    user = caller()
    fake_openai.fail_next(3, 429, headers={"Retry-After": "0"}, path_prefix="/v1/chat")
    r = user.ask("What should I dodge?", TRANSCRIPT)
    assert r.status == 503 and r.body["code"] == "provider_busy"
    assert r.headers["Retry-After"] == "1"  # never tell a client to retry at once
    assert user.balance() == 200


def test_our_key_rejected_is_503_and_releases(caller, live):
    live(OPENAI_API_KEY="sk-wrong-wrong-wrong-0000")
    user = caller()
    r = user.ask("What should I dodge?", TRANSCRIPT)
    assert r.status == 503 and r.body["code"] == "provider_unavailable"
    assert "sk-wrong" not in json.dumps(r.body)
    assert user.balance() == 200


def test_insufficient_credits_is_402_without_calling_openai(caller, fake_openai):
    user = caller()
    user.set_balance(4)
    before = _chat_requests(fake_openai)
    r = user.ask("What should I dodge?", TRANSCRIPT)
    assert r.status == 402 and r.body["code"] == "insufficient_credits"
    assert r.body["balance"] == 4 and r.body["required"] == 5
    assert _chat_requests(fake_openai) == before
    assert user.balance() == 4


def test_long_transcripts_keep_the_most_recent_part(caller, fake_openai, live):
    live(ASK_MAX_TRANSCRIPT_TOKENS=1000)
    user = caller()
    transcript = " ".join(f"word{i}" for i in range(15_000))  # ~130k characters
    r = user.ask("What was the last word?", transcript)
    assert r.status == 200, r.body
    assert r.body["transcript_trimmed"] is True
    content = fake_openai.requests_to("/v1/chat/completions")[-1].json()["messages"][1]["content"]
    assert len(content) < 1000 * 4 + 200
    assert content.rstrip().endswith("Question: What was the last word?")
    assert "word14999" in content and "word10000" not in content


def test_oversized_question_is_422(caller, fake_openai):
    user = caller()
    before = _chat_requests(fake_openai)
    r = user.ask("q" * 1001, TRANSCRIPT)
    assert r.status == 422 and r.body["field"] == "question"
    assert _chat_requests(fake_openai) == before and user.balance() == 200


def test_oversized_transcript_is_422_and_oversized_body_413(caller, fake_openai, live):
    live(ASK_MAX_TRANSCRIPT_CHARS=5000, ASK_MAX_BODY_BYTES=20_000)
    user = caller()
    before = _chat_requests(fake_openai)
    r = user.ask("Anything?", "x" * 5001)
    assert r.status == 422 and r.body["field"] == "transcript"
    r = user.ask("Anything?", "x" * 30_000)
    assert r.status == 413 and r.body["code"] == "payload_too_large"
    assert _chat_requests(fake_openai) == before and user.balance() == 200


def test_default_limits_accept_a_200k_transcript_and_refuse_more(caller):
    user = caller()
    assert user.ask("Anything?", "y " * 100_000).status == 200
    r = user.ask("Anything?", "y" * 200_001)
    assert r.status == 422


def test_blank_or_missing_fields_are_422(caller):
    user = caller()
    assert user.ask("   ", TRANSCRIPT).status == 422
    assert user.ask("Why?", "").status == 422
    assert user.post("/transcription/ask", {"question": "Why?"}).status == 422
    assert user.post("/transcription/ask", {"question": "Why?", "transcript": "t", "x": 1}).status == 422
    assert user.balance() == 200


def test_a_retried_ask_with_an_idempotency_key_is_answered_and_charged_once(caller, fake_openai):
    user = caller()
    before = _chat_requests(fake_openai)
    body = {"question": "What should I dodge?", "transcript": TRANSCRIPT}
    first = user.post("/transcription/ask", body, **{"Idempotency-Key": "ask-1"})
    again = user.post("/transcription/ask", body, **{"Idempotency-Key": "ask-1"})
    assert first.status == again.status == 200 and again.body == first.body
    assert _chat_requests(fake_openai) - before == 1
    assert user.balance() == 195


def test_answer_lost_after_openai_read_the_question_is_sent_once_and_released(caller, live):
    """The connection drops after OpenAI read the request: never sent twice, nothing charged."""
    from tests.dropping_server import DroppingServer

    user = caller()
    with DroppingServer() as server:
        live(OPENAI_API_BASE=server.url + "/v1")
        r = user.ask("What should I dodge?", TRANSCRIPT)
    assert r.status == 502 and r.body["code"] == "upstream_unreachable"
    assert len(server.requests_to("POST", "/v1/chat/completions")) == 1
    assert len(server.received) == 1
    assert user.balance() == 200
    assert usage_rows(user.user_id, "ask") == []
    assert ledger.check_invariant(user.user_id).ok
