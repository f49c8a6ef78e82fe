"""Per-process hints: balances and held reservations this process saw, and per-user locks.

Hints are never trusted: every write is conditional on the balance it expects and on the
reservation's facts, so a stale hint costs a refused round, never a wrong balance.

- A remembered balance is used as the expected balance only within LEDGER_GUESS_SECONDS
  (default 0: on a fleet of Lambda containers it is usually stale, and a refused
  transaction is billed like a write while a read costs a fifth of one; docs/performance.md).
  `inf` is the one-process design, right where one process writes.
- A held reservation's facts (amount, owner, slot, latest balance) spare settle/release a
  read; the write's condition on them refuses stale facts.
- Threads of one process (chalice local, the tests) take turns on a balance instead of
  spending round trips losing to each other; other processes are kept honest by the
  conditions alone. Striped, so there is nothing to clean up.
"""
from __future__ import annotations

import threading
import time
import zlib
from collections import OrderedDict
from typing import Any, Generic, Mapping, TypeVar

from chalicelib.core.settings import get_settings
from chalicelib.credits.ledger.records import Held

K = TypeVar("K")
V = TypeVar("V")


class Lru(Generic[K, V]):
    """A small thread-safe LRU map. Only ever holds guesses that a condition verifies."""

    def __init__(self, size: int = 10_000) -> None:
        self._items: OrderedDict[K, V] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


# user_id -> (balance, monotonic time this process learnt it)
_balances: Lru[str, tuple[int, float]] = Lru()
_reservations: Lru[str, Held] = Lru()
_USER_LOCKS = tuple(threading.Lock() for _ in range(256))


def user_lock(user_id: str) -> threading.Lock:
    return _USER_LOCKS[zlib.crc32(user_id.encode("utf-8")) % len(_USER_LOCKS)]


def guess_seconds() -> float:
    return get_settings().ledger_guess_seconds


def remember_balance(user_id: str, balance: int) -> None:
    _balances.put(user_id, (balance, time.monotonic()))


def known_balance(user_id: str) -> int | None:
    """The balance this process saw, if seen within LEDGER_GUESS_SECONDS (else None)."""
    known = _balances.get(user_id)
    if known is None or time.monotonic() - known[1] > guess_seconds():
        return None
    return known[0]


def remember_reservation(item: Mapping[str, Any]) -> Held:
    held = Held.of(item)
    _reservations.put(held.reservation_id, held)
    return held


def known_reservation(reservation_id: str) -> Held | None:
    return _reservations.get(reservation_id)


def clear_caches() -> None:
    """Forget every balance and reservation guess (the benchmark measures a cold process)."""
    _balances.clear()
    _reservations.clear()
