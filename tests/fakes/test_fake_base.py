"""The shared fake-server machinery: lifecycle, recording, fault injection, forms."""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from stripe._encode import _api_encode

from devstack.fakes import FAKES, StripeFake, start_all, stop_all
from devstack.fakes.base import FakeError, FakeServer, FormError, Rule, parse_bracket_form


class EchoFake(FakeServer):
    """The smallest possible fake: one authenticated route, one public, one that crashes."""

    provider = "echo"
    public_endpoints = frozenset({"public"})

    def routes(self) -> list[Rule]:
        return [
            Rule("/echo", methods=["POST"], endpoint="echo"),
            Rule("/public", methods=["GET"], endpoint="public"),
            Rule("/crash", methods=["GET"], endpoint="crash"),
        ]

    def authenticate(self, request: Any) -> None:
        if request.headers.get("X-Key") != "k":
            raise FakeError(401, "bad key")

    def echo(self, request: Any) -> dict[str, Any]:
        return {"got": request.get_data(as_text=True)}

    def public(self, request: Any) -> dict[str, bool]:
        return {"ok": True}

    def crash(self, request: Any) -> None:
        raise RuntimeError("boom")


@pytest.fixture
def echo() -> Any:
    with EchoFake() as fake:
        yield fake


def test_serves_on_loopback_and_releases_the_port() -> None:
    fake = EchoFake().start()
    assert fake.url == f"http://127.0.0.1:{fake.port}"
    assert requests.get(f"{fake.url}/public", timeout=5).json() == {"ok": True}
    port = fake.port
    fake.stop()
    fake.stop()  # idempotent
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # free again


def test_records_every_request(echo: EchoFake) -> None:
    requests.post(f"{echo.url}/echo?a=1&a=2", data=b"hello", headers={"X-Key": "k"}, timeout=5)
    (recorded,) = echo.requests
    method, path, query, headers, body = recorded
    assert (method, path, body) == ("POST", "/echo", b"hello")
    assert query.getlist("a") == ["1", "2"]
    assert headers["x-key"] == "k"  # case-insensitive
    assert echo.requests_to("/echo", "post") == [recorded]
    echo.clear_requests()
    assert echo.requests == []


def test_auth_and_errors_use_the_provider_format(echo: EchoFake) -> None:
    assert requests.post(f"{echo.url}/echo", timeout=5).json() == {"error": "bad key"}
    missing = requests.get(f"{echo.url}/nope", timeout=5)
    assert missing.status_code == 404 and "error" in missing.json()
    assert requests.get(f"{echo.url}/echo", timeout=5).status_code == 405
    crash = requests.get(f"{echo.url}/crash", headers={"X-Key": "k"}, timeout=5)
    assert crash.status_code == 500 and crash.json() == {"error": "Internal server error"}


def test_fail_next_counts_matches_and_formats(echo: EchoFake) -> None:
    echo.fail_next(2, 429, headers={"Retry-After": "1"}, path_prefix="/echo")
    echo.fail_next(1, 503, body={"custom": True})
    assert requests.get(f"{echo.url}/public", timeout=5).json() == {"custom": True}  # prefix did not match the 429s
    for _ in range(2):
        response = requests.post(f"{echo.url}/echo", headers={"X-Key": "k"}, timeout=5)
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "1"
        assert response.json() == {"error": "Too Many Requests"}
    assert requests.post(f"{echo.url}/echo", headers={"X-Key": "k"}, timeout=5).status_code == 200
    echo.fail_next(1, 500, body="plain")
    assert requests.get(f"{echo.url}/public", timeout=5).text == "plain"
    assert len(echo.requests) == 5  # faulted requests are recorded too
    with pytest.raises(ValueError):
        echo.fail_next(0, 500)


def test_bracket_form_parsing() -> None:
    pairs = parse_qsl(
        "mode=payment&line_items[0][price_data][unit_amount]=500&line_items[0][quantity]=1"
        "&line_items[1][price]=price_1&metadata[user_id]=u1&expand[]=a&expand[]=b&empty=",
        keep_blank_values=True,
    )
    assert parse_bracket_form(pairs) == {
        "mode": "payment",
        "line_items": [{"price_data": {"unit_amount": "500"}, "quantity": "1"}, {"price": "price_1"}],
        "metadata": {"user_id": "u1"},
        "expand": ["a", "b"],
        "empty": "",
    }
    with pytest.raises(FormError):
        parse_bracket_form([("a", "1"), ("a[b]", "2")])


_keys = st.from_regex(r"[a-z_]{1,8}", fullmatch=True)
# (booleans are left out: stripe-python sends them as "true" in hashes but "True" in arrays)
_scalars = st.one_of(st.text(max_size=12), st.integers(-10**6, 10**6))
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, min_size=1, max_size=3), st.dictionaries(_keys, inner, min_size=1, max_size=3)),
    max_leaves=12,
)


def _as_sent(value: Any) -> Any:
    """What a value looks like after form encoding: every scalar is a string."""
    if isinstance(value, dict):
        return {k: _as_sent(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_sent(v) for v in value]
    return str(value)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(_keys, _values, max_size=5))
def test_bracket_form_round_trips_stripe_pythons_encoder(params: dict[str, Any]) -> None:
    body = urlencode(list(_api_encode(params)))
    assert parse_bracket_form(parse_qsl(body, keep_blank_values=True)) == _as_sent(params)


def test_start_all_and_stop_all() -> None:
    fakes = start_all({"stripe": {"webhook_secret": "whsec_x"}, "openai": True, "twitch": False})
    try:
        assert set(fakes) == {"stripe", "openai"}
        assert isinstance(fakes["stripe"], StripeFake) and fakes["stripe"].webhook_secret == "whsec_x"
        assert requests.get(f"{fakes['stripe'].url}/_fake", timeout=5).status_code == 200
    finally:
        stop_all(fakes)
    everything = start_all()
    stop_all(everything)
    assert set(everything) == set(FAKES)
    with pytest.raises(ValueError):
        start_all({"paypal": True})
