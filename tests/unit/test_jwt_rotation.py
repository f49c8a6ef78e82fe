"""JWT_SECRET rotation: sign with JWT_SECRET, accept JWT_SECRET_PREVIOUS too, nothing else."""
from __future__ import annotations

import pytest

from chalicelib.core.errors import ConfigurationError, Unauthorized
from chalicelib.core.settings import load_settings
from chalicelib.accounts.tokens import Identity, issue_access_token, verify_access_token

OLD, NEW, OTHER = "old-signing-key-" + "o" * 32, "new-signing-key-" + "n" * 32, "unrelated-key-" + "x" * 32
ALICE = Identity(user_id="user-1", email="a@example.com")


def settings(current: str, previous: str = "", stage: str = "local"):
    return load_settings({"STAGE": stage, "JWT_SECRET": current, "JWT_SECRET_PREVIOUS": previous})


def test_during_a_rotation_tokens_of_both_keys_are_accepted_and_new_ones_use_the_new_key():
    rotating = settings(NEW, previous=OLD)
    from_before = issue_access_token(settings(OLD), ALICE)
    from_now = issue_access_token(rotating, ALICE)
    assert verify_access_token(rotating, from_before).user_id == "user-1"
    assert verify_access_token(rotating, from_now).user_id == "user-1"
    # the new token is signed with the new key alone: a process that knows only NEW accepts it
    assert verify_access_token(settings(NEW), from_now).user_id == "user-1"
    with pytest.raises(Unauthorized):
        verify_access_token(settings(OLD), from_now)


def test_after_the_window_the_previous_key_is_refused():
    with pytest.raises(Unauthorized):
        verify_access_token(settings(NEW), issue_access_token(settings(OLD), ALICE))


def test_a_third_key_or_an_expired_token_of_the_previous_key_is_refused():
    rotating = settings(NEW, previous=OLD)
    with pytest.raises(Unauthorized):
        verify_access_token(rotating, issue_access_token(settings(OTHER), ALICE))
    expired = issue_access_token(settings(OLD), ALICE, now=1_000_000)
    with pytest.raises(Unauthorized):
        verify_access_token(rotating, expired)


def test_the_previous_key_must_be_as_strong_and_stays_out_of_repr():
    with pytest.raises(ConfigurationError, match="JWT_SECRET_PREVIOUS"):
        settings(NEW, previous="short", stage="dev")
    assert OLD not in repr(settings(NEW, previous=OLD))
