"""GET /auth/user/export and DELETE /auth/user: everything out, everything gone but accounting."""
from __future__ import annotations

import json
import uuid


from chalicelib.accounts import privacy
from chalicelib.aws import store
from chalicelib.credits import stats
from chalicelib.web import idempotency
from chalicelib.aws.clients import client as aws_client
from chalicelib.core.settings import get_settings
from tests.conftest import ORIGIN, PASSWORD, json_headers
from chalicelib.credits.ledger import records
from tests.security.data import owned_counts


def put(table: str, item: dict) -> dict:
    store.ddb().put_item(TableName=store.table_name(table), Item=store.to_item(item))
    return item


def seed(user_id: str) -> dict:
    """One item of every kind a user owns, shaped as the features write them."""
    now, job_id, session_id = store.iso(), uuid.uuid4().hex, uuid.uuid4().hex
    bucket = get_settings().resource("audio")
    upload_key = f"uploads/{user_id}/{uuid.uuid4().hex}.webm"
    aws_client("s3").put_object(Bucket=bucket, Key=upload_key, Body=b"\x1a\x45\xdf\xa3" + b"0" * 100)
    assert stats.record_usage(user_id, "ask", openai_prompt_tokens=120, openai_completion_tokens=30)
    idempotency.run({"Idempotency-Key": uuid.uuid4().hex}, user_id, "POST /transcription/ask",
                    {"question": "q"}, lambda: {"answer": "a remembered answer"})
    return {
        "usage": put("usage", {"user_id": user_id, "timestamp": now, "service_type": "ask",
                               "credits_used": 5, "request_id": uuid.uuid4().hex}),
        "history": put("history", {"user_id": user_id, "sort_key": f"{now}#ask#{job_id}", "id": job_id,
                                   "kind": "ask", "created_at": now, "credits_used": 5}),
        "session": put("sessions", {"session_id": session_id, "user_id": user_id, "state": "stopped",
                                    "started_at": now}),
        "job": put("jobs", {"job_id": job_id, "user_id": user_id, "status": "completed",
                            "created_at": now, "duration_minutes": 5,
                            "result": {"summary": "They talked about cats."}}),
        "transcript": put("jobs", {"job_id": job_id + "#transcript", "text": "the secret transcript words",
                                   "created_at": now, "expires_at_epoch": store.epoch() + 3600}),
        "reservation": put("reservations", {"reservation_id": f"live#{session_id}", "user_id": user_id,
                                            "state": "settled", "amount": 30, "created_at": now}),
        "purchase": put("transactions", {
            "transaction_id": uuid.uuid4().hex, "user_id": user_id, "kind": "purchase",
            "package_id": "starter", "credits": 500, "amount": 499, "currency": "usd",
            "status": "completed", "created_at": now, "stripe_customer_id": "cus_test123",
            "stripe_session_id": "cs_test_123", "payment_intent": "pi_test_123",
            "customer_email": "someone@example.com",
        }),
        "upload_key": upload_key,
    }


def delete(client, token: str, password: str | None = PASSWORD):
    body = {} if password is None else {"password": password}
    return client.http.delete("/auth/user", headers=json_headers(token, origin=ORIGIN), body=json.dumps(body))


def test_export_holds_everything_and_no_secrets(client, new_user):
    alice, bob = new_user(), new_user()
    data = seed(alice["user"]["user_id"])
    seed(bob["user"]["user_id"])
    r = client.http.get("/auth/user/export", headers=json_headers(alice["token"], origin=ORIGIN))
    assert r.status_code == 200, r.body
    export = json.loads(r.body)
    assert export["profile"]["email"] == alice["user"]["email"]
    assert export["profile"]["credits_balance"] == 200
    assert export["usage"] == [data["usage"]]
    assert export["history"] == [data["history"]]
    assert export["sessions"] == [data["session"]]
    assert export["reservations"] == [data["reservation"]]
    assert data["purchase"] in export["transactions"]
    assert any(t["transaction_id"].startswith("grant#signup#") for t in export["transactions"])
    assert export["jobs"][0]["result"] == data["job"]["result"]
    assert export["jobs"][0]["transcript"]["text"] == "the secret transcript words"
    assert [u["key"] for u in export["uploads"]] == [data["upload_key"]]
    assert {t["kind"] for t in export["refresh_tokens"]} == {"token", "family"}
    assert export["daily_usage"][0]["openai_prompt_tokens"] == 120
    assert export["idempotency_keys"][0]["route"] == "POST /transcription/ask"
    assert "a remembered answer" not in r.body.decode()  # stored bodies stay out
    # Credentials are not "data about the user": no password hash, no token or its hash.
    text = r.body.decode()
    assert "password_hash" not in text and "$2b$" not in text
    assert alice["refresh_token"] not in text and "rt#" not in text
    assert alice["token"] not in text
    assert bob["user"]["user_id"] not in text  # nothing of anyone else


def test_delete_needs_the_password(client, new_user):
    session = new_user()
    user_id = session["user"]["user_id"]
    seed(user_id)
    before = owned_counts(user_id)
    assert delete(client, session["token"], password=None).status_code == 422
    wrong = delete(client, session["token"], password="not the password")
    assert wrong.status_code == 403 and json.loads(wrong.body)["code"] == "invalid_password"
    r = client.http.delete("/auth/user", headers=json_headers(origin=ORIGIN), body=json.dumps({"password": PASSWORD}))
    assert r.status_code == 401
    assert owned_counts(user_id) == before
    assert client.http.get("/auth/user", headers=json_headers(session["token"])).status_code == 200


def test_delete_removes_everything_but_anonymised_purchases(client, new_user):
    alice, bob = new_user(), new_user()
    user_id, email = alice["user"]["user_id"], alice["user"]["email"]
    data = seed(user_id)
    bob_before = (seed(bob["user"]["user_id"]), owned_counts(bob["user"]["user_id"]))[1]
    records.put_checkpoint({  # the invariant's sums of her old records (ledger.invariant)
        "transaction_id": records.checkpoint_id(user_id), "kind": "checkpoint", "owner": user_id,
        "through": store.iso(), "granted": 200, "purchased": 0, "clawed_back": 0, "used": 0, "open": [],
        "updated_at": store.iso()})
    assert owned_counts(user_id)["ledger_checkpoint"] == 1

    r = delete(client, alice["token"])
    assert r.status_code == 204, r.body
    assert r.headers["Access-Control-Allow-Origin"] == ORIGIN

    assert store.get("users", user_id=user_id) is None
    assert store.get("emails", email=email) is None
    assert store.get("jobs", job_id=data["job"]["job_id"] + "#transcript") is None
    assert owned_counts(user_id) == dict.fromkeys(owned_counts(user_id), 0)
    # The purchase stays for accounting, under a one-way id and without personal data.
    kept = store.get("transactions", transaction_id=data["purchase"]["transaction_id"])
    assert kept["user_id"] == privacy.anonymous_id(user_id) != user_id
    assert (kept["amount"], kept["currency"], kept["credits"], kept["payment_intent"]) == (
        499, "usd", 500, "pi_test_123")
    assert "stripe_customer_id" not in kept and "customer_email" not in kept
    assert store.get("transactions", transaction_id=f"grant#signup#{user_id}") is None
    # Tokens stop working at once; the email is free again; Bob is untouched.
    headers = json_headers(alice["token"])
    assert client.http.get("/auth/user", headers=headers).status_code == 401
    assert client.http.get("/auth/user/export", headers=headers).status_code == 401
    assert delete(client, alice["token"]).status_code == 401
    refresh = client.http.post("/auth/refresh", headers=json_headers(),
                               body=json.dumps({"refresh_token": alice["refresh_token"]}))
    assert refresh.status_code == 401
    login = client.http.post("/auth/login", headers=json_headers(),
                             body=json.dumps({"email": email, "password": PASSWORD}))
    assert login.status_code == 401
    assert owned_counts(bob["user"]["user_id"]) == bob_before
    again = client.http.post("/auth/register", headers=json_headers(),
                             body=json.dumps({"email": email, "password": PASSWORD}))
    assert again.status_code == 201


def test_delete_is_refused_while_money_is_in_flight(client, new_user):
    session = new_user()
    user_id = session["user"]["user_id"]
    held = put("reservations", {"reservation_id": f"live#{uuid.uuid4().hex}", "user_id": user_id,
                                "state": "held", "amount": 30, "created_at": store.iso()})
    r = delete(client, session["token"])
    assert r.status_code == 409 and json.loads(r.body)["code"] == "active_session"
    assert store.get("users", user_id=user_id)["is_active"] is True
    put("reservations", {**held, "state": "released"})
    store.ddb().update_item(
        TableName=store.table_name("users"), Key=store.key(user_id=user_id),
        UpdateExpression="SET subscription_status = :s", ExpressionAttributeValues=store.values(s="active"),
    )
    r = delete(client, session["token"])
    assert r.status_code == 409 and json.loads(r.body)["code"] == "active_subscription"
    assert client.http.get("/auth/user", headers=json_headers(session["token"])).status_code == 200


def test_an_interrupted_deletion_can_be_sent_again(client, new_user, monkeypatch):
    session = new_user()
    user_id = session["user"]["user_id"]
    seed(user_id)
    real = privacy._delete_uploads

    def crash(_user_id: str) -> int:
        raise ConnectionError("S3 went away")

    monkeypatch.setattr(privacy, "_delete_uploads", crash)
    assert delete(client, session["token"]).status_code == 500
    # Already inactive: the account cannot be used while half deleted.
    assert client.http.get("/auth/user", headers=json_headers(session["token"])).status_code == 401
    monkeypatch.setattr(privacy, "_delete_uploads", real)
    assert delete(client, session["token"]).status_code == 204
    assert store.get("users", user_id=user_id) is None
    assert owned_counts(user_id) == dict.fromkeys(owned_counts(user_id), 0)


def test_personal_attribute_names():
    personal = [k for k in ("stripe_customer_id", "customer_email", "name", "ip", "client_ip",
                            "metadata", "billing_address") if privacy.PERSONAL_ATTRIBUTE.search(k)]
    assert len(personal) == 7
    kept = [k for k in ("stripe_session_id", "payment_intent", "description", "amount", "currency",
                        "transaction_id", "shipping") if privacy.PERSONAL_ATTRIBUTE.search(k)]
    assert kept == []


def test_a_running_live_session_blocks_deletion_until_stopped(client, new_user, provider_env):
    session = new_user()
    user_id, headers = session["user"]["user_id"], json_headers(session["token"])
    started = client.http.post("/transcription/stream", headers=headers, body=json.dumps({"action": "start"}))
    assert started.status_code == 200, started.body
    session_id = json.loads(started.body)["session_id"]
    r = delete(client, session["token"])
    assert r.status_code == 409 and json.loads(r.body)["code"] == "active_session"
    stopped = client.http.post("/transcription/stream", headers=headers,
                               body=json.dumps({"action": "stop", "session_id": session_id}))
    assert stopped.status_code == 200, stopped.body
    assert owned_counts(user_id)["usage"] == 1
    assert delete(client, session["token"]).status_code == 204
    assert owned_counts(user_id) == dict.fromkeys(owned_counts(user_id), 0)
    assert store.get("sessions", session_id=session_id) is None
