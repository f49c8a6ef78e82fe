"""The operator console's web page: one HTML page, its script, chart script and stylesheet.

Served by the app itself (`GET /admin`, `GET /admin/assets/<name>`) from files kept in this
package, so there is no build step and no third-party CDN. The page holds no data: it signs
an admin in through `POST /auth/login` and calls the `/admin/api` routes with that token.
The Content-Security-Policy allows only this origin's own script, style and API
(no inline script or style, no frames), and every value from the API is inserted as text.
Relative URLs (the script finds the API next to itself) make it work behind API Gateway's
stage prefix (`/api/admin`) as well as on `make run` (`/admin`).
"""
from __future__ import annotations

import functools
import os

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
PAGE_HEADERS = {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store", **SECURITY_HEADERS}
CSV_HEADERS = {
    "Content-Type": "text/csv; charset=utf-8",
    "Content-Disposition": 'attachment; filename="audit-log.csv"',
    "Cache-Control": "no-store",
    **SECURITY_HEADERS,
}
ASSET_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
ASSETS = ("console.js", "chart.js", "console.css")


@functools.lru_cache(maxsize=None)
def _read(name: str) -> str:
    with open(os.path.join(STATIC, name), encoding="utf-8") as handle:
        return handle.read()


def page() -> str:
    return _read("index.html")


def asset(name: str) -> tuple[str, dict[str, str]]:
    """(text, headers) of one asset; an unknown name is a 404 (never a path on disk)."""
    from chalicelib.core.errors import NotFound

    if name not in ASSETS:
        raise NotFound("Not found", code="not_found")
    content_type = ASSET_TYPES[os.path.splitext(name)[1]]
    return _read(name), {"Content-Type": content_type, "Cache-Control": "no-cache", **SECURITY_HEADERS}
