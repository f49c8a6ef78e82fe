import json

from tests.conftest import ORIGIN, PASSWORD, json_headers, unique_email


def test_register_login_user(client, new_user):
    session = new_user()
    assert session["user"]["credits_balance"] == 200
    assert session["user"]["token"] == session["token"]
    r = client.http.get("/auth/user", headers=json_headers(session["token"], origin=ORIGIN))
    assert r.status_code == 200, r.body
    assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
    body = json.loads(r.body)
    assert body["user"]["email"] == session["user"]["email"]
    r = client.http.get("/health")
    assert r.status_code == 200, r.body
