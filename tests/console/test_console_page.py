"""GET /admin and its assets: served by the app, no third-party origin, a strict CSP."""
from __future__ import annotations

import os
import re

from chalicelib.ops import console

STATIC = console.STATIC


def test_the_page_and_its_assets_are_served_with_a_strict_policy(client):
    page = client.http.get("/admin")
    assert page.status_code == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert page.headers["X-Frame-Options"] == "DENY" and page.headers["X-Content-Type-Options"] == "nosniff"
    html = page.body.decode("utf-8")
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assets = [path for path in assets if not path.startswith("data:")]  # the empty favicon
    assert sorted(assets) == ["admin/assets/chart.js", "admin/assets/console.css", "admin/assets/console.js"]
    for path in assets:
        response = client.http.get("/" + path)
        assert response.status_code == 200, path
        assert response.headers["Content-Type"].split(";")[0] in ("text/javascript", "text/css")
        assert response.headers["Content-Security-Policy"] == policy


def test_no_inline_script_or_style_and_no_other_origin():
    for name in os.listdir(STATIC):
        text = open(os.path.join(STATIC, name), encoding="utf-8").read()
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), name  # the SVG namespace only
        assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(", text), name
        if name.endswith(".html"):
            assert not re.search(r"<script(?![^>]*\bsrc=)", text), "inline script"
            assert not re.search(r"<style|\sstyle=|\son[a-z]+=", text), "inline style or handler"


def test_an_unknown_asset_is_a_404_in_the_envelope(client):
    for name in ("nope.js", "..%2Fapp.py", "__init__.py", "index.html"):
        response = client.http.get(f"/admin/assets/{name}")
        assert response.status_code == 404, name
        assert b'"code":"not_found"' in response.body


def test_one_answer_s_headers_never_reach_the_next(client, env_override):
    """The page's headers are shared constants: CORS or a request id added to one answer
    must not appear on the next (which has another origin, or none)."""
    env_override(ALLOWED_ORIGINS="chrome-extension://abcdefghijklmnopabcdefghijklmnop")
    allowed = client.http.get("/admin", headers={"Origin": "chrome-extension://abcdefghijklmnopabcdefghijklmnop"})
    assert allowed.headers["Access-Control-Allow-Origin"].startswith("chrome-extension://")
    for path in ("/admin", "/admin/assets/console.js"):
        plain = client.http.get(path)
        assert "Access-Control-Allow-Origin" not in plain.headers, path
        assert plain.headers["X-Request-Id"] != allowed.headers["X-Request-Id"]
