"""Request bodies: parsed strictly, checked against a declared schema, 4xx on every failure."""
from __future__ import annotations

import json

import pytest

from chalicelib.core.errors import DomainError, BadRequest, PayloadTooLarge, ValidationFailed
from chalicelib.core.validation import MAX_DEPTH, Field, Schema, parse_body, parse_json_object, validate
from chalicelib.web.errors import answer, status_of

SCHEMA = Schema(
    {
        "name": Field(str, required=True, max_length=10, min_length=2, normalize=str.strip),
        "count": Field(int, minimum=1, maximum=100, default=1),
        "ratio": Field(float, minimum=0, maximum=1),
        "flag": Field(bool),
        "kind": Field(str, choices=("a", "b")),
        "code": Field(str, pattern=r"[A-Z]{3}"),
        "tags": Field(list, max_length=3),
    }
)


def error_of(call, *args) -> DomainError:
    with pytest.raises(DomainError) as raised:
        call(*args)
    body = answer(raised.value).body
    assert isinstance(body["error"], str) and body["error"] == body["message"] and body["code"]
    return raised.value


def test_valid_body_with_defaults_and_normalisation():
    data = parse_body(b'{"name": "  ab  ", "ratio": 1, "tags": ["x"]}', SCHEMA)
    assert data == {"name": "ab", "count": 1, "ratio": 1, "flag": None, "kind": None,
                    "code": None, "tags": ["x"]}


@pytest.mark.parametrize("raw", [b"{", b'{"name": }', b"{'name': 'ab'}", b'{"name": "ab",}', b"nul"])
def test_invalid_json_is_400(raw):
    error = error_of(parse_json_object, raw)
    assert isinstance(error, BadRequest) and status_of(error) == 400 and error.code == "invalid_json"


def test_invalid_utf8_is_400():
    error = error_of(parse_json_object, b'{"name": "\xff\xfe"}')
    assert status_of(error) == 400 and error.code == "invalid_json"


@pytest.mark.parametrize("raw", [b"[]", b'["name"]', b'"name"', b"42", b"true", b"null"])
def test_non_object_is_422(raw):
    error = error_of(parse_json_object, raw)
    assert isinstance(error, ValidationFailed) and status_of(error) == 422 and error.code == "invalid_body"


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(constant):
    error = error_of(parse_json_object, f'{{"ratio": {constant}}}'.encode())
    assert status_of(error) == 400


def test_empty_body_is_an_empty_object():
    assert parse_json_object(b"") == {} and parse_json_object(None) == {}
    assert error_of(parse_body, b"", SCHEMA).details["field"] == "name"


def test_nesting_depth_is_bounded():
    def nested(levels: int) -> bytes:
        value: object = 1
        for _ in range(levels):
            value = {"a": value}
        return json.dumps(value).encode()

    parse_json_object(nested(MAX_DEPTH))
    assert status_of(error_of(parse_json_object, nested(MAX_DEPTH + 1))) == 422
    bomb = b"[" * 100_000 + b"]" * 100_000  # would blow the recursion limit
    assert status_of(error_of(parse_json_object, b'{"a":' + bomb + b"}", 1_000_000)) in (400, 422)


def test_body_size_is_413():
    parse_json_object(b'{"a": "' + b"x" * 90 + b'"}', 100)
    error = error_of(parse_json_object, b'{"a": "' + b"x" * 100 + b'"}', 100)
    assert isinstance(error, PayloadTooLarge) and status_of(error) == 413
    assert error.details["limit"] == 100


def field_error(data: dict) -> ValidationFailed:
    error = error_of(validate, SCHEMA, data)
    assert isinstance(error, ValidationFailed) and status_of(error) == 422
    return error


def test_missing_required_field_is_named():
    error = field_error({})
    assert error.code == "missing_field" and error.details["field"] == "name"
    assert field_error({"name": None}).details["field"] == "name"


def test_unknown_field_is_refused_and_named():
    error = field_error({"name": "ab", "is_admin": True})
    assert error.code == "unknown_field" and error.details["field"] == "is_admin"
    long_name = "z" * 500
    assert len(field_error({"name": "ab", long_name: 1}).details["field"]) <= 64


def test_unknown_fields_allowed_when_declared():
    lenient = Schema({"name": Field(str)}, allow_unknown=True)
    assert validate(lenient, {"name": "ab", "other": 1}) == {"name": "ab"}


@pytest.mark.parametrize(
    "field,value",
    [
        ("name", 12), ("name", ["ab"]), ("name", True),
        ("count", True), ("count", False), ("count", 1.0), ("count", "5"),
        ("ratio", True), ("ratio", "0.5"),
        ("flag", 1), ("flag", "true"),
        ("tags", "x"), ("tags", {"a": 1}),
    ],
)
def test_wrong_types_are_named(field, value):
    data = {"name": "ab", field: value}
    error = field_error(data)
    assert error.details["field"] == field
    assert field in error.message


def test_bools_are_not_ints_but_ints_are_numbers():
    assert validate(SCHEMA, {"name": "ab", "count": 5})["count"] == 5
    assert validate(SCHEMA, {"name": "ab", "ratio": 0})["ratio"] == 0
    field_error({"name": "ab", "count": True})


def test_strings_are_bounded():
    field_error({"name": "x" * 11})
    field_error({"name": "x"})
    field_error({"name": "   x   "})  # checked after normalisation
    assert validate(SCHEMA, {"name": "x" * 10})["name"] == "x" * 10


def test_default_string_bound_applies_when_none_is_declared():
    schema = Schema({"free": Field(str)})
    validate(schema, {"free": "x" * 256})
    assert error_of(validate, schema, {"free": "x" * 257}).details["field"] == "free"


def test_numbers_lists_choices_and_patterns():
    field_error({"name": "ab", "count": 0})
    field_error({"name": "ab", "count": 101})
    field_error({"name": "ab", "ratio": 1.5})
    field_error({"name": "ab", "tags": [1, 2, 3, 4]})
    field_error({"name": "ab", "kind": "c"})
    field_error({"name": "ab", "code": "ABCD"})
    field_error({"name": "ab", "code": "abc"})
    assert validate(SCHEMA, {"name": "ab", "kind": "b", "code": "XYZ"})["code"] == "XYZ"


def test_huge_integers_are_bounded():
    field_error({"name": "ab", "count": 10**30})


def test_ignored_fields_are_accepted_and_dropped_others_still_refused():
    schema = Schema({"name": Field(str)}, ignored=frozenset({"user_id"}))
    assert validate(schema, {"name": "a", "user_id": "someone-else"}) == {"name": "a"}
    with pytest.raises(ValidationFailed) as refused:
        validate(schema, {"name": "a", "user_id": "x", "role": "admin"})
    assert refused.value.code == "unknown_field" and refused.value.details["field"] == "role"
