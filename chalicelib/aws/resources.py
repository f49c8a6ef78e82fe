"""The single definition of every table, bucket and queue the service uses.

Both the embedded local stack (`python -m infra bootstrap`) and the deployment
(the CloudFormation template rendered by `infra.template`) are generated from these
objects, so a key, index or TTL attribute can never differ between a laptop and prod.
The app itself only needs the names, which derive from the app name and stage.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Index:
    name: str
    hash_key: str
    range_key: str | None = None
    projection: str = "ALL"  # ALL | KEYS_ONLY


@dataclass(frozen=True)
class Table:
    suffix: str
    hash_key: str
    range_key: str | None = None
    indexes: tuple[Index, ...] = ()
    ttl_attribute: str | None = None
    purpose: str = ""

    def key_names(self) -> tuple[str, ...]:
        names = [self.hash_key] + ([self.range_key] if self.range_key else [])
        for index in self.indexes:
            names += [index.hash_key] + ([index.range_key] if index.range_key else [])
        return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class Queue:
    suffix: str
    visibility_timeout: int
    dead_letter: str | None = None
    max_receive_count: int = 3
    retention_seconds: int = 4 * 24 * 3600


@dataclass(frozen=True)
class Bucket:
    suffix: str
    expire_after_days: int
    cors_methods: tuple[str, ...] = field(default=("PUT",))


# All string keys: DynamoDB key attributes here are always of type S.
TABLES: tuple[Table, ...] = (
    # No index on users: emails are looked up in the `emails` table (its key), and an
    # index here would cost a write unit on every balance change (docs/performance.md).
    Table(
        "users",
        "user_id",
        purpose="one item per account: profile, credits_balance, counters, role",
    ),
    Table("emails", "email", purpose="uniqueness claims: one item per registered email"),
    Table(
        "refresh-tokens",
        "token_id",
        indexes=(Index("user_id-index", "user_id", projection="KEYS_ONLY"),),
        ttl_attribute="expires_at_epoch",
        purpose="hashed refresh tokens and their rotation families",
    ),
    Table(
        "usage",
        "user_id",
        "timestamp",
        purpose="one row per charge or settled reservation (seed schema)",
    ),
    Table(
        "transactions",
        "transaction_id",
        indexes=(
            Index("user_id-created_at-index", "user_id", "created_at"),
            Index("payment_intent-index", "payment_intent"),
            # sparse: only rows still carrying `pending_shard` (recent pending purchases)
            Index("pending-index", "pending_shard", "created_at"),
        ),
        purpose="purchases, grants and clawbacks (seed schema)",
    ),
    Table(
        "reservations",
        "reservation_id",
        indexes=(
            Index("user_id-index", "user_id"),
            Index("held-index", "held_shard", "expires_at"),
        ),
        # closed reservations and charge guards expire (chalicelib.credits.ledger.records)
        ttl_attribute="expires_at_epoch",
        purpose="credits held for a paid provider call until settled or released",
    ),
    Table(
        "sessions",
        "session_id",
        # Read only by privacy (export, deletion), which needs the keys; KEYS_ONLY, so that
        # the updates of a live session (heartbeats, renewals) cost no index write.
        indexes=(Index("user_id-started_at-index", "user_id", "started_at", projection="KEYS_ONLY"),),
        purpose="live caption sessions",
    ),
    Table(
        "jobs",
        "job_id",
        indexes=(
            Index("user_id-index", "user_id", "created_at"),
            # the operator console's "failed or stuck" list: few jobs a day, keys only
            Index("status-index", "status", "created_at", projection="KEYS_ONLY"),
        ),
        ttl_attribute="expires_at_epoch",
        purpose="catch-up jobs and their results",
    ),
    Table(
        "history",
        "user_id",
        "sort_key",
        ttl_attribute="expires_at_epoch",
        purpose="per-user history of live sessions, catch-ups and asks",
    ),
    Table(
        "idempotency",
        "idempotency_key",
        indexes=(Index("user_id-index", "user_id"),),
        ttl_attribute="expires_at_epoch",
        purpose="Idempotency-Key replays (24 h)",
    ),
    Table(
        "rate-limits",
        "limit_key",
        ttl_attribute="expires_at_epoch",
        purpose="fixed-window counters for rate limits and login lockout",
    ),
    Table(
        "stripe-events",
        "event_id",
        # the operator console's orphaned (and any other non-final) events, newest first
        indexes=(Index("status-index", "status", "handled_at"),),
        ttl_attribute="expires_at_epoch",
        purpose="processed Stripe event ids and events kept for an operator",
    ),
    Table(
        "stats",
        "stat_key",
        "shard",
        ttl_attribute="expires_at_epoch",
        purpose="sharded daily aggregates for operator analytics",
    ),
    Table(
        "audit",
        "log",
        "entry_id",
        indexes=(Index("target-index", "target", "entry_id"),),
        purpose="append-only log of operator actions (chalicelib.ops.audit is its only writer)",
    ),
)

BUCKETS: tuple[Bucket, ...] = (Bucket("audio", expire_after_days=1),)

QUEUES: tuple[Queue, ...] = (
    Queue("catchup-dlq", visibility_timeout=60, retention_seconds=14 * 24 * 3600),
    # Lambda's guidance for an SQS event source: visibility >= 6 x the worker's timeout
    # (300 s), so a batch retried after throttling is not redelivered while still running.
    Queue("catchup", visibility_timeout=1800, dead_letter="catchup-dlq", max_receive_count=3),
)

# Environment variables that override a derived physical name.
RESOURCE_ENV_VARS: dict[str, str] = {
    **{f"{t.suffix.replace('-', '_').upper()}_TABLE": t.suffix for t in TABLES},
    **{f"{b.suffix.upper()}_BUCKET": b.suffix for b in BUCKETS},
    **{f"{q.suffix.replace('-', '_').upper()}_QUEUE": q.suffix for q in QUEUES},
}


def table(suffix: str) -> Table:
    for candidate in TABLES:
        if candidate.suffix == suffix:
            return candidate
    raise KeyError(suffix)
