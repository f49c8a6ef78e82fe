"""DynamoDB hands back Decimals; clients must see plain JSON numbers."""
from __future__ import annotations

import json
from decimal import Decimal

import pytest

from chalicelib.core import jsonutil
from chalicelib.web.middleware import respond


def test_decimals_serialise_as_numbers():
    text = jsonutil.dumps({"balance": Decimal("200"), "rate": Decimal("1.5"), "neg": Decimal("-3")})
    assert json.loads(text) == {"balance": 200, "rate": 1.5, "neg": -3}
    assert '"balance":200' in text  # an integer, not 200.0 or "200"


def test_nested_and_sets():
    value = {"items": [{"n": Decimal("1")}, {"n": Decimal("2.25")}], "tags": {"b", "a"}}
    assert json.loads(jsonutil.dumps(value)) == {"items": [{"n": 1}, {"n": 2.25}], "tags": ["a", "b"]}


def test_plain_deep_converts():
    plain = jsonutil.plain({"a": [Decimal("3"), (Decimal("0.5"),)], "s": {Decimal("1")}})
    assert plain == {"a": [3, [0.5]], "s": [1]}
    assert type(plain["a"][0]) is int


def test_unknown_types_are_refused():
    with pytest.raises(TypeError):
        jsonutil.dumps({"x": object()})


def test_respond_uses_it():
    response = respond({"credits_balance": Decimal("200")}, status=201)
    assert response.status_code == 201
    assert response.body == '{"credits_balance":200}'
    assert response.headers["Content-Type"] == "application/json"


def test_store_items_come_back_as_plain_numbers():
    from chalicelib.aws import store

    item = store.to_item({"credits_balance": 200, "ratio": 0.25, "nested": {"n": 3}})
    assert item["credits_balance"] == {"N": "200"}
    back = store.from_item(item)
    assert back == {"credits_balance": 200, "ratio": 0.25, "nested": {"n": 3}}
    assert type(back["credits_balance"]) is int
