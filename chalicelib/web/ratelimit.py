"""Fixed-window rate limits: shared in DynamoDB where money or guessing is at stake, in
the process for reads.

Why DynamoDB and a fixed window: Lambda instances share nothing, so a counter that must
hold across the fleet has to live in the database; a fixed window needs exactly one write
per check (`ADD hits :one` on the window's own item, conditional on `hits < limit`), and
the item expires by TTL. A refused condition is the 429; nothing else is read or written
for the request. That write costs more than the read it guards, so the classes of routes
that only read (IN_PROCESS_CLASSES) count in the container's memory instead: exact per
container, at most `limit x containers` across the fleet, and no DynamoDB request. The
fleet-wide bound for reads is API Gateway's stage throttling (a per-stage setting of the
deployment, issue 18); docs/performance.md weighs the two.

Every route belongs to a class (ROUTE_CLASSES, keyed by Chalice's `resourcePath` and the
method). Per-IP classes (register, auth, public) protect the unauthenticated routes;
the other classes count per user, so one user's flood cannot starve another's. The
limits per class come from settings (`RATE_LIMITS`).
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from chalicelib.aws import store
from chalicelib.core.errors import RateLimited, ServiceUnavailable
from chalicelib.web.legacy import GONE_ROUTES
from chalicelib.core.logs import log_event
from chalicelib.core.settings import get_settings

logger = logging.getLogger(__name__)

EXEMPT = "exempt"
PER_IP_CLASSES = frozenset({"register", "auth", "public"})
# Classes whose routes write nothing to DynamoDB: counted in memory, never in the table.
IN_PROCESS_CLASSES = frozenset({"read", "public"})

# (method, resourcePath) -> class. A route missing here falls back to DEFAULT_CLASS by
# method and authentication; tests/security checks that every route is listed on purpose.
ROUTE_CLASSES: dict[tuple[str, str], str] = {
    ("GET", "/health"): EXEMPT,  # load balancers and monitors poll it
    ("POST", "/webhooks/stripe"): EXEMPT,  # Stripe must never be throttled by us
    ("POST", "/auth/register"): "register",  # signup credits: farming defence
    ("POST", "/auth/login"): "auth",
    ("POST", "/auth/refresh"): "auth",
    ("POST", "/auth/logout"): "auth",
    ("GET", "/auth/user"): "read",
    ("GET", "/auth/user/export"): "account",  # heavy: reads every table
    ("DELETE", "/auth/user"): "account",  # takes a password: guesses are bounded too
    ("GET", "/credits/balance"): "read",
    ("GET", "/credits/packages"): "public",
    ("GET", "/credits/transactions"): "read",
    ("POST", "/credits/purchase"): "write",
    ("POST", "/credits/subscribe"): "write",
    ("POST", "/credits/portal"): "write",
    ("POST", "/transcription/stream"): "spend",
    ("POST", "/transcription/ask"): "spend",
    ("POST", "/transcription/catchup"): "spend",
    ("POST", "/transcription/catchup/upload"): "write",
    ("GET", "/transcription/catchup/{job_id}"): "read",
    ("GET", "/transcription/history"): "read",
    ("GET", "/twitch/stream"): "write",  # a provider call, though not a paid one
    ("GET", "/analytics/usage"): "read",
    ("GET", "/analytics/costs"): "read",
    ("GET", "/analytics/costs/top-users"): "read",  # admins only, like the console's business view
    ("GET", "/admin"): "public",  # the console's page and assets: static, no data
    ("GET", "/admin/assets/{name}"): "public",
    ("GET", "/admin/api/users"): "read",
    ("GET", "/admin/api/users/{user_id}"): "read",
    ("GET", "/admin/api/users/{user_id}/ledger"): "read",
    ("POST", "/admin/api/users/{user_id}/grant"): "write",
    ("POST", "/admin/api/users/{user_id}/deduct"): "write",
    ("POST", "/admin/api/users/{user_id}/suspend"): "write",
    ("POST", "/admin/api/users/{user_id}/reactivate"): "write",
    ("POST", "/admin/api/purchases/{transaction_id}/refund"): "write",
    ("GET", "/admin/api/attention"): "read",
    ("GET", "/admin/api/audit"): "read",
    ("GET", "/admin/api/audit/export"): "account",  # reads the whole log
    ("GET", "/admin/api/business"): "read",
    ("POST", "/auth/password"): "account",  # takes a password: guesses are bounded too
    # 410 answers that do no work, counted per IP like any public route
    **dict.fromkeys(GONE_ROUTES, "public"),
}


class LimiterUnavailable(ServiceUnavailable):
    """The counters could not be read on a fail-closed route class: refuse, retry shortly."""

    default_message = "Service temporarily unavailable"
    retry_after = 5


@dataclass(frozen=True)
class Decision:
    """The outcome of one allowed check, for the X-RateLimit-* headers."""

    route_class: str
    limit: int
    remaining: int

    def headers(self) -> dict[str, str]:
        return {"X-RateLimit-Limit": str(self.limit), "X-RateLimit-Remaining": str(self.remaining)}


def route_class(method: str, resource_path: str, authenticated: bool) -> str:
    """The class of a route; OPTIONS (CORS preflight) is never limited."""
    method = method.upper()
    if method == "OPTIONS":
        return EXEMPT
    known = ROUTE_CLASSES.get((method, resource_path))
    if known is not None:
        return known
    if not authenticated:
        return "public"
    return "read" if method in ("GET", "HEAD") else "write"


def subject_hash(value: str) -> str:
    """Counter keys hold a hash, not the raw IP or email: the table is not a log of clients."""
    return hashlib.sha256(value.strip().lower().encode("utf-8")).hexdigest()[:32]


def window(now: float, seconds: int) -> tuple[int, int]:
    """(start, end) of the fixed window that contains `now`."""
    start = int(now) // seconds * seconds
    return start, start + seconds


def counter_key(route_class_name: str, subject: str, seconds: int, start: int) -> str:
    return f"rl#{route_class_name}#{subject_hash(subject)}#{seconds}#{start}"


def hit(key: str, limit: int, expires_at: int, attribute: str = "hits") -> int | None:
    """Count one hit on `key` unless it already holds `limit`; the new count, or None if full.

    The single conditional write is what makes the limit hold under parallel requests:
    DynamoDB serialises the conditions, so exactly `limit` callers see a count.
    """
    client = store.ddb()
    try:
        response = client.update_item(
            TableName=store.table_name("rate-limits"),
            Key=store.key(limit_key=key),
            UpdateExpression=f"ADD {attribute} :one SET expires_at_epoch = :expires",
            ConditionExpression=f"attribute_not_exists({attribute}) OR {attribute} < :limit",
            ExpressionAttributeValues=store.values(one=1, limit=limit, expires=expires_at),
            ReturnValues="UPDATED_NEW",
        )
    except client.exceptions.ConditionalCheckFailedException:
        return None
    return int(response["Attributes"][attribute]["N"])


class InProcessCounters:
    """Fixed-window counters in this process's memory, with hit()'s contract.

    A lock makes the count exact under threads (chalice local serves on several); windows
    that have ended are dropped when a new one opens, so memory stays bounded by the
    subjects active in the current windows.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, tuple[int, int]] = {}  # key -> (hits, window end)
        self._prune_at = 1024  # size that triggers dropping ended windows

    def hit(self, key: str, limit: int, window_end: int, now: float) -> int | None:
        with self._lock:
            hits, _ = self._counts.get(key, (0, window_end))
            if hits == 0 and len(self._counts) >= self._prune_at:
                self._counts = {k: v for k, v in self._counts.items() if v[1] > now}
                self._prune_at = max(1024, 2 * len(self._counts))
            if hits >= limit:
                return None
            self._counts[key] = (hits + 1, window_end)
            return hits + 1


_in_process = InProcessCounters()


def check(
    method: str,
    resource_path: str,
    *,
    user_id: str | None,
    source_ip: str | None,
    now: float | None = None,
) -> Decision | None:
    """Count this request; raise RateLimited (429) past the limit. None when not limited.

    A limiter failure (DynamoDB unreachable, throttled) is logged and then, per class,
    either lets the request through (fail open) or refuses it with 503 (fail closed;
    the default for `spend`, where an unlimited flood costs real money).
    """
    settings = get_settings()
    if not settings.rate_limits_enabled:
        return None
    name = route_class(method, resource_path, authenticated=bool(user_id))
    if name == EXEMPT:
        return None
    spec = settings.rate_limits.get(name)
    if spec is None:
        return None
    limit, seconds = spec
    subject = f"ip:{source_ip or 'unknown'}" if name in PER_IP_CLASSES or not user_id else f"user:{user_id}"
    moment = time.time() if now is None else now
    start, end = window(moment, seconds)
    key = counter_key(name, subject, seconds, start)
    try:
        if name in IN_PROCESS_CLASSES:
            count = _in_process.hit(key, limit, end, moment)
        else:
            count = hit(key, limit, expires_at=end + 60)
    except Exception as error:  # any storage failure: the fail-open/closed policy decides
        closed = name in settings.rate_limit_fail_closed
        log_event(
            logger, "ratelimit.error", logging.ERROR,
            route_class=name, error=type(error).__name__, fail_closed=closed,
        )
        if closed:
            raise LimiterUnavailable() from None
        return None
    if count is None:
        retry_after = max(1, end - int(moment))
        log_event(logger, "ratelimit.refused", logging.WARNING, route_class=name, retry_after=retry_after)
        raise RateLimited("Too many requests; try again later", retry_after=retry_after, window_limit=limit)
    return Decision(route_class=name, limit=limit, remaining=max(0, limit - count))

