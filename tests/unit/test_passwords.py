"""bcrypt hashing, the password rules (422, never 500) and a safe verify."""
from __future__ import annotations

import pytest

from chalicelib.core.errors import ValidationFailed
from chalicelib.accounts.passwords import (
    MAX_BYTES,
    check_password_rules,
    dummy_hash,
    hash_password,
    verify_password,
)
from chalicelib.web.errors import answer, status_of


def test_round_trip_at_cost_4():
    hashed = hash_password("correct horse", 4)
    assert hashed.startswith("$2b$04$")
    assert verify_password("correct horse", hashed)
    assert not verify_password("correct horsE", hashed)
    assert hash_password("correct horse", 4) != hashed  # salted


def test_cost_follows_the_setting():
    assert hash_password("correct horse", 5).startswith("$2b$05$")


def rule_error(password: str) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as raised:
        check_password_rules(password)
    error = raised.value
    assert status_of(error) == 422
    assert error.details["field"] == "password"
    assert answer(error).body["error"]  # readable text for `body.error || body.message`
    return error


def test_minimum_length():
    rule_error("")
    rule_error("1234567")
    check_password_rules("12345678")


def test_maximum_72_bytes():
    check_password_rules("a" * MAX_BYTES)
    assert "72" in rule_error("a" * (MAX_BYTES + 1)).message


def test_multibyte_characters_are_counted_in_bytes():
    check_password_rules("é" * 36)  # 36 characters, 72 bytes
    rule_error("é" * 37)  # 37 characters (well under 72), 74 bytes
    rule_error("🔑" * 19)  # 19 characters, 76 bytes
    rule_error("🔑🔑🔑")  # 12 bytes but only 3 characters: too short


def test_multibyte_password_round_trip():
    password = "pässwörd-日本語"
    assert verify_password(password, hash_password(password, 4))


def test_verify_never_raises_on_a_too_long_password():
    hashed = hash_password("a" * 72, 4)
    assert verify_password("a" * 72, hashed)
    assert verify_password("a" * 73, hashed) is False  # bcrypt would have truncated to a match
    assert verify_password("x" * 10_000, hashed) is False


@pytest.mark.parametrize(
    "stored", ["", "not-a-hash", "$2b$04$short", "$2b$04$" + "é" * 53, "$9z$04$" + "a" * 53]
)
def test_malformed_stored_hash_is_false(stored):
    assert verify_password("correct horse", stored) is False


def test_dummy_hash_costs_the_same_as_a_real_one():
    assert dummy_hash(4).startswith("$2b$04$")
    assert dummy_hash(6).startswith("$2b$06$")
    assert dummy_hash(4) is dummy_hash(4)  # computed once per cost
    assert verify_password("anything at all", dummy_hash(4)) is False
