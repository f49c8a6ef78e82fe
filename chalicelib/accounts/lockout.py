"""Brute-force defence for login: per-account and per-IP attempt counters, slowdown, lock.

Why attempts are counted *before* the password is checked: counting failures afterwards
lets a burst of parallel guesses all pass the "not locked yet" read before any of them
is counted. Here each attempt first takes a slot in its window (one conditional write,
the same primitive as the rate limiter), so at most `LOGIN_MAX_FAILURES` passwords per
account are ever checked per window however many requests arrive at once. A successful
login gives the slot back (and clears the account's counter).

Reaching the threshold writes a lock item that refuses the account (or IP) for
`LOGIN_LOCKOUT_SECONDS` from that moment: with the defaults (10 attempts, 15 min lock)
an account sees at most about 40 guesses an hour, under OWASP ASVS's 100.

A locked login is answered exactly like a wrong password: same status, message and
bcrypt cost, no Retry-After. Unknown emails are counted and locked the same way, so a
lock says nothing about whether an account exists, and a correct password guessed
during a lock is indistinguishable from a wrong one.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from chalicelib.aws import store
from chalicelib.core.logs import log_event
from chalicelib.web.ratelimit import hit, subject_hash, window
from chalicelib.core.settings import get_settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scope:
    """One counted dimension of a login attempt: the account (email) or the client IP."""

    kind: str  # "account" | "ip"
    subject: str
    max_attempts: int

    def counter_key(self, start: int) -> str:
        seconds = get_settings().login_failure_window_seconds
        return f"login#{self.kind}#{subject_hash(self.subject)}#{seconds}#{start}"

    def lock_key(self) -> str:
        return f"lock#{self.kind}#{subject_hash(self.subject)}"


@dataclass
class Attempt:
    """A login attempt that holds a slot in each scope's window (or was refused)."""

    scopes: list[Scope]
    start: int
    counts: dict[str, int]
    refused: bool = False

    def delay_seconds(self) -> float:
        """The slowdown once an account is past LOGIN_SLOWDOWN_AFTER attempts in a window."""
        settings = get_settings()
        over = self.counts.get("account", 0) - settings.login_slowdown_after
        if over <= 0:
            return 0.0
        return min(over * settings.login_slowdown_ms, 3000) / 1000.0


def _scopes(email: str, source_ip: str | None) -> list[Scope]:
    settings = get_settings()
    scopes = [Scope("account", email, settings.login_max_failures)]
    if source_ip:
        scopes.append(Scope("ip", source_ip, settings.login_ip_max_failures))
    return scopes


def _locked(scopes: list[Scope], now: float) -> bool:
    """One BatchGetItem over the scopes' lock items; TTL deletion is lazy, so compare times."""
    table = store.table_name("rate-limits")
    response = store.ddb().batch_get_item(
        RequestItems={
            table: {
                "Keys": [store.key(limit_key=scope.lock_key()) for scope in scopes],
                "ConsistentRead": True,
            }
        }
    )
    for item in response.get("Responses", {}).get(table, []):
        lock = store.from_item(item) or {}
        if int(lock.get("locked_until", 0)) > now:
            return True
    return False


def _lock(scope: Scope, now: float) -> None:
    until = int(now) + get_settings().login_lockout_seconds
    store.ddb().put_item(
        TableName=store.table_name("rate-limits"),
        Item=store.to_item(
            {"limit_key": scope.lock_key(), "locked_until": until, "expires_at_epoch": until + 60}
        ),
    )
    log_event(logger, "login.locked", logging.WARNING, scope=scope.kind, locked_seconds=until - int(now))


def begin(email: str, source_ip: str | None, now: float | None = None) -> Attempt:
    """Take a slot for this attempt in every scope, or mark the attempt refused."""
    settings = get_settings()
    moment = time.time() if now is None else now
    scopes = _scopes(email, source_ip)
    start, end = window(moment, settings.login_failure_window_seconds)
    attempt = Attempt(scopes=scopes, start=start, counts={})
    if _locked(scopes, moment):
        attempt.refused = True
        return attempt
    for scope in scopes:
        count = hit(scope.counter_key(start), scope.max_attempts, end + 60, "attempts")
        if count is None:
            # Full window: refused until it ends. Only the failure that filled it locks
            # (failed()), so a burst of the owner's own correct logins never locks them.
            attempt.refused = True
            return attempt
        attempt.counts[scope.kind] = count
    return attempt


def failed(attempt: Attempt, now: float | None = None) -> None:
    """A wrong password (or unknown email): the slot stays taken; the last one locks."""
    if attempt.refused:
        return
    moment = time.time() if now is None else now
    for scope in attempt.scopes:
        if attempt.counts.get(scope.kind, 0) >= scope.max_attempts:
            _lock(scope, moment)


def succeeded(attempt: Attempt) -> None:
    """The password was right: clear the account's counter and give the IP its slot back."""
    client = store.ddb()
    table = store.table_name("rate-limits")
    for scope in attempt.scopes:
        key = store.key(limit_key=scope.counter_key(attempt.start))
        if scope.kind == "account":
            client.delete_item(TableName=table, Key=key)
            continue
        try:
            client.update_item(
                TableName=table,
                Key=key,
                UpdateExpression="ADD attempts :minus",
                ConditionExpression="attempts > :zero",
                ExpressionAttributeValues=store.values(minus=-1, zero=0),
            )
        except client.exceptions.ConditionalCheckFailedException:
            pass  # the window rolled over meanwhile: nothing to give back
