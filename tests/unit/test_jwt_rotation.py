"""JWT_SECRET rotation: sign with JWT_SECRET, accept JWT_SECRET_PREVIOUS too, nothing else."""
from __future__ import annotations

import pytest

from chalicelib.core.errors import ConfigurationError, Unauthorized
from chalicelib.core.settings import load_settings
from chalicelib.accounts.tokens import Identity, issue_access_token, verify_access_token

OLD, NEW, OTHER = "old-signing-key-" + "o" * 32, "new-signing-key-" + "n" * 32, "unrelated-key-" + "x" * 32
ALICE = Identity(user_id="user-1", email="a@example.com")


@pytest.fixture
def keys(env_override):
    """keys(current, previous=""): the process now signs with `current` and also accepts `previous`."""

    def use(current: str, previous: str = "") -> None:
        env_override(STAGE="local", JWT_SECRET=current, JWT_SECRET_PREVIOUS=previous)

    return use


def test_during_a_rotation_tokens_of_both_keys_are_accepted_and_new_ones_use_the_new_key(keys):
    keys(OLD)
    from_before = issue_access_token(ALICE)
    keys(NEW, previous=OLD)
    from_now = issue_access_token(ALICE)
    assert verify_access_token(from_before).user_id == "user-1"
    assert verify_access_token(from_now).user_id == "user-1"
    # the new token is signed with the new key alone: a process that knows only NEW accepts it
    keys(NEW)
    assert verify_access_token(from_now).user_id == "user-1"
    keys(OLD)
    with pytest.raises(Unauthorized):
        verify_access_token(from_now)


def test_after_the_window_the_previous_key_is_refused(keys):
    keys(OLD)
    token = issue_access_token(ALICE)
    keys(NEW)
    with pytest.raises(Unauthorized):
        verify_access_token(token)


def test_a_third_key_or_an_expired_token_of_the_previous_key_is_refused(keys):
    keys(OTHER)
    unrelated = issue_access_token(ALICE)
    keys(OLD)
    expired = issue_access_token(ALICE, now=1_000_000)
    keys(NEW, previous=OLD)
    for token in (unrelated, expired):
        with pytest.raises(Unauthorized):
            verify_access_token(token)


def test_the_previous_key_must_be_as_strong_and_stays_out_of_repr():
    with pytest.raises(ConfigurationError, match="JWT_SECRET_PREVIOUS"):
        load_settings({"STAGE": "dev", "JWT_SECRET": NEW, "JWT_SECRET_PREVIOUS": "short"})
    assert OLD not in repr(load_settings({"JWT_SECRET": NEW, "JWT_SECRET_PREVIOUS": OLD}))
