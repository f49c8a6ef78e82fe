"""The admin API (`/admin/api/...`) through chalice.test.Client against the embedded AWS.

Every route: what an admin gets, what everyone else gets (401/403, nothing written), and
the refusals of bad input (the envelope and a 4xx, nothing written).
"""
from __future__ import annotations

import csv
import io
import json

import pytest

from chalicelib.accounts import auth as accounts
from chalicelib.aws import store
from chalicelib.credits import ledger
from chalicelib.ops import audit
from chalicelib.core.errors import DomainError
from chalicelib.web.errors import status_of
from tests.console.conftest import audit_entries, get_json
from tests.conftest import PASSWORD, post_json

ADMIN_GETS = (
    "/admin/api/users?q=someone@example.com",
    "/admin/api/users/{user}",
    "/admin/api/users/{user}/ledger",
    "/admin/api/attention",
    "/admin/api/audit",
    "/admin/api/audit/export",
    "/admin/api/business?days=7",
)
ADMIN_POSTS = {
    "/admin/api/users/{user}/grant": {"credits": 10, "reason": "goodwill"},
    "/admin/api/users/{user}/deduct": {"credits": 10, "reason": "mistake"},
    "/admin/api/users/{user}/suspend": {"reason": "abuse"},
    "/admin/api/users/{user}/reactivate": {"reason": "appeal"},
    "/admin/api/purchases/{user}/refund": {"reason": "asked"},
}


def _transactions(user_id: str) -> list[dict]:
    return list(store.query_all({
        "TableName": store.table_name("transactions"), "IndexName": "user_id-created_at-index",
        "KeyConditionExpression": "user_id = :u", "ExpressionAttributeValues": store.values(u=user_id),
    }))


def _snapshot(user_id: str) -> tuple:
    user = store.get("users", user_id=user_id)
    return (user["credits_balance"], user.get("status"), len(_transactions(user_id)),
            len(audit_entries()))


def test_every_admin_route_refuses_a_non_admin_and_writes_nothing(client, member):
    user = member()
    before = _snapshot(user["user_id"])
    for path in ADMIN_GETS:
        path = path.format(user=user["user_id"])
        assert get_json(client, path, None)[0] == 401, path
        status, body = get_json(client, path, user["token"])
        assert (status, body["code"]) == (403, "forbidden"), path
    for path, body in ADMIN_POSTS.items():
        path = path.format(user=user["user_id"])
        assert post_json(client, path, None, body)[0] == 401, path
        status, answer = post_json(client, path, user["token"], body)
        assert (status, answer["code"]) == (403, "forbidden"), path
    assert _snapshot(user["user_id"]) == before


def test_find_a_user_by_email_or_id_and_see_the_detail(client, admin, member):
    operator, user = admin(), member()
    for query in (user["email"].upper(), user["user_id"]):
        status, body = get_json(client, f"/admin/api/users?q={query}", operator["token"])
        assert status == 200, body
        assert [item["user_id"] for item in body["items"]] == [user["user_id"]]
    assert get_json(client, "/admin/api/users?q=nobody@example.com", operator["token"])[1] == {"items": []}
    status, body = get_json(client, "/admin/api/users", operator["token"])
    assert (status, body["code"], body["field"]) == (422, "missing_field", "q")

    status, detail = get_json(client, f"/admin/api/users/{user['user_id']}", operator["token"])
    assert status == 200, detail
    assert detail["user"]["email"] == user["email"]
    assert "password_hash" not in detail["user"]
    assert detail["balance"]["balance"] == 200
    assert detail["holds"] == []
    assert detail["subscription"]["tier"] == "free"
    assert detail["flags"] == {"suspended": False, "flagged": False, "flagged_reason": None, "is_admin": False}
    assert detail["invariant"]["ok"] is True
    for unknown in ("0" * 32, "not-an-id"):
        status, body = get_json(client, f"/admin/api/users/{unknown}", operator["token"])
        assert (status, body["code"]) == (404, "user_not_found")
    actions = [entry["action"] for entry in audit_entries(user["user_id"])]
    assert actions == ["user.view"]


def test_a_grant_is_one_ledger_record_the_user_sees_and_the_audit_log_keeps(client, admin, member):
    operator, user = admin(), member()
    path = f"/admin/api/users/{user['user_id']}/grant"
    status, body = post_json(client, path, operator["token"], {"credits": 150, "reason": " sorry for the outage "})
    assert status == 200, body
    assert body["balance_after"] == 350 and body["credits"] == 150 and body["replayed"] is False
    assert body["transaction_id"].startswith("grant#admin#")

    status, listing = get_json(client, "/credits/transactions", user["token"])
    assert listing["items"][0] == {
        "transaction_id": body["transaction_id"], "kind": "grant", "source": "admin",
        "status": "completed", "credits": 150, "amount": 0, "currency": "usd",
        "balance_after": 350, "created_at": listing["items"][0]["created_at"],
        "completed_at": listing["items"][0]["completed_at"],
    }
    status, export = get_json(client, "/auth/user/export", user["token"])
    exported = [row for row in export["transactions"] if row["transaction_id"] == body["transaction_id"]]
    assert exported and exported[0]["metadata"]["reason"] == "sorry for the outage"
    assert ledger.check_invariant(user["user_id"]).ok

    [entry] = [e for e in audit_entries(user["user_id"]) if e["action"] == "credits.grant"]
    assert entry["actor"] == operator["user_id"] and entry["actor_email"] == operator["user"]["email"]
    assert entry["reason"] == "sorry for the outage"
    assert entry["details"]["credits"] == 150 and entry["request_id"]


def test_a_grant_with_an_idempotency_key_happens_once(client, admin, member):
    operator, user = admin(), member()
    path = f"/admin/api/users/{user['user_id']}/grant"
    body = {"credits": 40, "reason": "goodwill"}
    first = post_json(client, path, operator["token"], body, **{"Idempotency-Key": "grant-1"})
    again = post_json(client, path, operator["token"], body, **{"Idempotency-Key": "grant-1"})
    assert first == again and first[0] == 200
    status, answer = post_json(client, path, operator["token"], {**body, "credits": 41},
                               **{"Idempotency-Key": "grant-1"})
    assert (status, answer["code"]) == (422, "idempotency_key_mismatch")
    assert store.get("users", user_id=user["user_id"])["credits_balance"] == 240
    grants = [row for row in _transactions(user["user_id"]) if row.get("source") == "admin"]
    assert len(grants) == 1
    actions = [e["action"] for e in audit_entries(user["user_id"])]
    assert actions.count("credits.grant") == 1 and actions.count("request.replayed") == 1


@pytest.mark.parametrize("body, status, code", [
    ({"credits": 10}, 422, "missing_field"),
    ({"credits": 10, "reason": "  "}, 422, "validation_error"),
    ({"credits": 10, "reason": "x" * 501}, 422, "validation_error"),
    ({"credits": -5, "reason": "negative"}, 422, "validation_error"),
    ({"credits": 0, "reason": "nothing"}, 422, "validation_error"),
    ({"credits": 100_001, "reason": "absurd"}, 422, "validation_error"),
    ({"credits": 1e9, "reason": "a float"}, 422, "validation_error"),
    ({"credits": "10", "reason": "a string"}, 422, "validation_error"),
    ({"credits": True, "reason": "a boolean"}, 422, "validation_error"),
    ({"credits": 10, "reason": "fine", "user_id": "x"}, 422, "unknown_field"),
])
def test_bad_grants_and_deductions_are_refused_and_write_nothing(client, admin, member, body, status, code):
    operator, user = admin(), member()
    before = _snapshot(user["user_id"])
    for direction in ("grant", "deduct"):
        answer_status, answer = post_json(client, f"/admin/api/users/{user['user_id']}/{direction}",
                                          operator["token"], body)
        assert (answer_status, answer["code"]) == (status, code), answer
        assert answer["error"] == answer["message"]
    assert _snapshot(user["user_id"]) == before


def test_a_grant_to_an_unknown_or_deleted_user_is_404_and_writes_nothing(client, admin, member):
    operator, user = admin(), member()
    response = client.http.delete("/auth/user", headers={"Authorization": f"Bearer {user['token']}",
                                                         "Content-Type": "application/json"},
                                  body=json.dumps({"password": PASSWORD}))
    assert response.status_code == 204
    entries = len(audit_entries())
    for target in ("f" * 32, user["user_id"]):
        status, body = post_json(client, f"/admin/api/users/{target}/grant", operator["token"],
                                 {"credits": 5, "reason": "goodwill"})
        assert (status, body["code"]) == (404, "user_not_found")
        assert _transactions(target) == [] or all(r.get("source") != "admin" for r in _transactions(target))
    assert len(audit_entries()) == entries


def test_a_deduction_never_takes_the_balance_below_zero(client, admin, member):
    operator, user = admin(), member()
    path = f"/admin/api/users/{user['user_id']}/deduct"
    status, body = post_json(client, path, operator["token"], {"credits": 150, "reason": "duplicate grant"})
    assert (status, body["balance_after"]) == (200, 50)
    assert body["transaction_id"].startswith("clawback#admin#")
    before = _snapshot(user["user_id"])
    status, body = post_json(client, path, operator["token"], {"credits": 51, "reason": "too much"})
    assert (status, body["code"], body["balance"], body["required"]) == (409, "insufficient_balance", 50, 51)
    assert _snapshot(user["user_id"]) == before
    assert ledger.check_invariant(user["user_id"]).ok


def test_suspension_refuses_every_spend_and_login_until_reactivated(client, admin, member):
    operator, user = admin(), member()
    path = f"/admin/api/users/{user['user_id']}"
    status, body = post_json(client, path + "/suspend", operator["token"], {"reason": "card testing"})
    assert (status, body) == (200, {"user_id": user["user_id"], "status": "suspended", "previous": "active"})
    stored = store.get("users", user_id=user["user_id"])
    assert stored["status"] == "suspended" and stored["token_generation"] == 1  # older tokens end

    with pytest.raises(DomainError) as refused:
        ledger.charge(user["user_id"], 5, service_type="ask", request_id="r1")
    assert (status_of(refused.value), refused.value.code) == (403, "account_suspended")
    with pytest.raises(DomainError) as refused:
        ledger.reserve(user["user_id"], 5, reservation_id="res-suspended", purpose="ask", ref_id="x",
                       ttl_seconds=60)
    assert refused.value.code == "account_suspended"
    assert store.get("users", user_id=user["user_id"])["credits_balance"] == 200
    assert post_json(client, "/auth/login", None, {"email": user["email"], "password": PASSWORD})[0] == 401
    assert post_json(client, "/auth/refresh", None, {"refresh_token": user["refresh_token"]})[0] == 401
    # Credits may still be given (or taken) while suspended: that is not a spend.
    assert post_json(client, path + "/grant", operator["token"], {"credits": 1, "reason": "fix"})[0] == 200
    status, detail = get_json(client, path, operator["token"])
    assert detail["flags"]["suspended"] is True and detail["user"]["status"] == "suspended"

    status, body = post_json(client, path + "/reactivate", operator["token"], {"reason": "appeal accepted"})
    assert (status, body["status"], body["previous"]) == (200, "active", "suspended")
    assert ledger.charge(user["user_id"], 5, service_type="ask", request_id="r2").balance_after == 196
    assert post_json(client, "/auth/login", None, {"email": user["email"], "password": PASSWORD})[0] == 200
    assert [(e["action"], e["reason"]) for e in audit_entries(user["user_id"]) if e["action"].startswith("account.")] \
        == [("account.reactivate", "appeal accepted"), ("account.suspend", "card testing")]
    assert ledger.check_invariant(user["user_id"]).ok


@pytest.mark.parametrize("action", ["suspend", "reactivate"])
def test_suspend_and_reactivate_need_a_reason_and_a_known_user(client, admin, member, action):
    operator, user = admin(), member()
    before = _snapshot(user["user_id"])
    for body in ({}, {"reason": ""}, {"reason": "ok", "extra": 1}):
        status, answer = post_json(client, f"/admin/api/users/{user['user_id']}/{action}", operator["token"], body)
        assert status == 422, answer
    status, answer = post_json(client, f"/admin/api/users/{'a' * 32}/{action}", operator["token"], {"reason": "abc"})
    assert (status, answer["code"]) == (404, "user_not_found")
    assert _snapshot(user["user_id"]) == before


def test_the_ledger_pages_newest_first_through_every_kind_of_record(client, admin, member):
    operator, user = admin(), member()
    uid = user["user_id"]
    for number in range(3):
        post_json(client, f"/admin/api/users/{uid}/grant", operator["token"], {"credits": 10 + number, "reason": "page test"})
        ledger.charge(uid, 1 + number, service_type="ask", request_id=f"page-{number}")
    held = ledger.reserve(uid, 7, reservation_id=f"res-{uid}", purpose="ask", ref_id="q", ttl_seconds=600)
    ledger.settle(held.reservation_id, 4, service_type="ask")
    ledger.reserve(uid, 9, reservation_id=f"res2-{uid}", purpose="ask", ref_id="q", ttl_seconds=600)  # still held
    seen, cursor, pages = [], None, 0
    while True:
        path = f"/admin/api/users/{uid}/ledger?limit=3" + (f"&cursor={cursor}" if cursor else "")
        status, page = get_json(client, path, operator["token"])
        assert status == 200, page
        assert page["invariant"]["ok"] is True and len(page["items"]) <= 3
        seen += page["items"]
        pages += 1
        cursor = page["next_cursor"]
        if not cursor:
            break
    kinds = sorted(entry["kind"] for entry in seen)
    assert kinds == sorted(["grant"] * 4 + ["usage"] * 4 + ["reservation"] * 2)  # signup + 3 admin grants
    assert len({entry["id"] for entry in seen}) == len(seen) and pages == 4
    assert [entry["at"] for entry in seen] == sorted((entry["at"] for entry in seen), reverse=True)
    assert sum(e["credits"] for e in seen) == store.get("users", user_id=uid)["credits_balance"]
    [grant] = [e for e in seen if e["kind"] == "grant" and e["credits"] == 12]
    assert grant["reason"] == "page test" and grant["by"] == operator["user_id"]
    status, body = get_json(client, f"/admin/api/users/{uid}/ledger?cursor=%%%", operator["token"])
    assert (status, body["code"]) == (400, "invalid_cursor")
    assert get_json(client, f"/admin/api/users/{uid}/ledger?limit=0", operator["token"])[0] == 422


def test_audit_log_pages_filters_and_exports_and_cannot_be_edited(client, admin, member):
    operator, user = admin(), member()
    post_json(client, f"/admin/api/users/{user['user_id']}/grant", operator["token"],
              {"credits": 3, "reason": "=HYPERLINK(\"x\")"})
    status, page = get_json(client, "/admin/api/audit?limit=2", operator["token"])
    assert status == 200 and len(page["items"]) == 2 and page["next_cursor"]
    status, mine = get_json(client, f"/admin/api/audit?target={user['user_id']}", operator["token"])
    assert [e["action"] for e in mine["items"]] == ["credits.grant"]
    assert get_json(client, "/admin/api/audit?target=../../x", operator["token"])[0] == 422
    assert get_json(client, "/admin/api/audit?cursor=bad!", operator["token"])[0] == 400

    response = client.http.get("/admin/api/audit/export", headers={"Authorization": f"Bearer {operator['token']}"})
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.body.decode("utf-8"))))
    assert rows[0]["action"] == "audit.export"  # the export is itself audited, newest first
    [grant] = [row for row in rows if row["action"] == "credits.grant" and row["target"] == user["user_id"]]
    assert grant["reason"].startswith("'=")  # never a formula in a spreadsheet
    for method in ("PUT", "DELETE", "PATCH"):
        answer = client.http.request(method, "/admin/api/audit", headers={"Authorization": f"Bearer {operator['token']}"})
        assert answer.status_code in (403, 404, 405), method
    assert not any(name in dir(audit) for name in ("update", "delete", "remove"))


def test_what_needs_attention(client, admin, member):
    from chalicelib.ops import janitor
    from chalicelib.billing import events

    operator, user = admin(), member()
    old = "2020-01-01T00:00:00.000Z"
    recent = store.iso()
    for job_id, status in (("a" * 32, "failed"), ("b" * 32, "processing"), ("c" * 32, "completed")):
        store.ddb().put_item(TableName=store.table_name("jobs"), Item=store.to_item({
            "job_id": job_id, "user_id": user["user_id"], "status": status,
            "created_at": recent if status == "failed" else old, "error": "transcription_failed"}))
    events.record({"id": "evt_orphan", "type": "checkout.session.completed", "data": {"object": {"id": "cs_x"}}},
                  events.orphaned("unknown_transaction"))
    events.record({"id": "evt_ok", "type": "invoice.paid", "data": {"object": {"id": "in_x"}}}, events.processed())
    events.record({"id": "evt_review", "type": "checkout.session.completed", "data": {"object": {"id": "cs_y"}}},
                  events.needs_review("amount_mismatch"))
    ledger.reserve(user["user_id"], 5, reservation_id="res-overdue", purpose="ask", ref_id="q", ttl_seconds=1)
    janitor._remember_run(store.epoch() + 10**6, [{"user_id": user["user_id"], "expected": 1, "actual": 2,
                                                  "checked_epoch": 1}])
    import time
    time.sleep(1.1)
    status, body = get_json(client, "/admin/api/attention", operator["token"])
    assert status == 200, body
    assert [job["job_id"] for job in body["failed_jobs"]] == ["a" * 32]
    assert body["failed_jobs"][0]["error"] == "transcription_failed"
    assert [job["job_id"] for job in body["stuck_jobs"]] == ["b" * 32]
    assert [event["event_id"] for event in body["orphaned_events"]] == ["evt_orphan"]
    assert [(event["event_id"], event["reason"]) for event in body["review_events"]] == [("evt_review", "amount_mismatch")]
    assert "res-overdue" in [row["reservation_id"] for row in body["overdue_reservations"]]
    assert body["invariant_breaches"]["items"][0]["user_id"] == user["user_id"]


def test_business_figures_include_credits_sold_and_used(client, admin, member):
    operator, user = admin(), member()
    before = get_json(client, "/admin/api/business?days=2", operator["token"])[1]["credits"]
    ledger.charge(user["user_id"], 7, service_type="ask", request_id="biz")
    ledger.grant(user["user_id"], 1500, source="subscription", record_id="in_biz", purchased=True)
    ledger.grant(user["user_id"], 1500, source="subscription", record_id="in_biz", purchased=True)  # replay
    status, body = get_json(client, "/admin/api/business?days=2", operator["token"])
    assert status == 200, body
    assert body["credits"] == {"sold": before["sold"] + 1500, "used": before["used"] + 7}
    assert sum(day["credits_sold"] for day in body["daily"]) == body["credits"]["sold"]
    assert get_json(client, "/admin/api/business?days=0", operator["token"])[0] == 422


def test_a_spend_during_suspension_is_refused_even_with_a_stale_balance_guess(member, console_tables):
    user = member()
    ledger.charge(user["user_id"], 1, service_type="ask", request_id="warm")  # the process knows the balance
    accounts.set_status(user["user_id"], accounts.SUSPENDED)
    with pytest.raises(DomainError) as refused:
        ledger.charge(user["user_id"], 1, service_type="ask", request_id="cold")
    assert refused.value.code == "account_suspended"
    # Settling and releasing what was held before are not spends: they still go through.
    accounts.set_status(user["user_id"], accounts.ACTIVE)
    held = ledger.reserve(user["user_id"], 10, reservation_id=f"r-{user['user_id']}", purpose="ask",
                          ref_id="q", ttl_seconds=60)
    accounts.set_status(user["user_id"], accounts.SUSPENDED)
    assert ledger.settle(held.reservation_id, 3, service_type="ask").credits_refunded == 7
    assert ledger.check_invariant(user["user_id"]).ok


def test_parallel_grants_with_one_idempotency_key_grant_once(client, admin, member):
    from tests.conftest import at_once

    operator, user = admin(), member()
    path = f"/admin/api/users/{user['user_id']}/grant"
    answers = at_once(8, lambda: post_json(client, path, operator["token"], {"credits": 30, "reason": "double click"},
                                           **{"Idempotency-Key": "same-click"}))
    assert {status for status, _ in answers} == {200}
    assert len({body["transaction_id"] for _, body in answers}) == 1
    assert store.get("users", user_id=user["user_id"])["credits_balance"] == 230
    assert [row for row in _transactions(user["user_id"]) if row.get("source") == "admin"][0]["credits"] == 30
    assert len([row for row in _transactions(user["user_id"]) if row.get("source") == "admin"]) == 1
    assert ledger.check_invariant(user["user_id"]).ok
