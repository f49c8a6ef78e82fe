"""Password hashing with bcrypt, and the rules a password must meet."""
from __future__ import annotations

import functools

from chalicelib.core.errors import ValidationFailed

MIN_LENGTH = 8
MAX_BYTES = 72  # bcrypt ignores everything past 72 bytes; refuse instead of truncating


def check_password_rules(password: str) -> None:
    if len(password) < MIN_LENGTH:
        raise ValidationFailed(
            f"Password must be at least {MIN_LENGTH} characters", field="password"
        )
    if len(password.encode("utf-8")) > MAX_BYTES:
        raise ValidationFailed(
            f"Password must be at most {MAX_BYTES} bytes", field="password"
        )


def hash_password(password: str, rounds: int) -> str:
    import bcrypt

    return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(rounds)).decode("ascii")


def verify_password(password: str, password_hash: str) -> bool:
    """Constant-time bcrypt check; a malformed stored hash or password is just `False`."""
    import bcrypt

    encoded = password.encode("utf-8")
    if len(encoded) > MAX_BYTES:
        return False
    try:
        return bcrypt.checkpw(encoded, password_hash.encode("ascii"))
    except ValueError:
        return False


@functools.lru_cache(maxsize=4)
def dummy_hash(rounds: int) -> str:
    """A hash to verify against when the email is unknown, so both paths cost one bcrypt."""
    return hash_password("dummy-password-for-timing", rounds)
