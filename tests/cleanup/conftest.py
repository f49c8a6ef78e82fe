"""Cleanup fixtures: private tables per test (the cleanup sees everything in its tables, so
a test's counts are exactly its own), plus the callers of the other features."""
from __future__ import annotations

from tests.analytics.conftest import private_tables  # noqa: F401 - fixtures reused here
from tests.billing.conftest import buyer, tap  # noqa: F401
from tests.catchup.conftest import stack  # noqa: F401
from tests.streaming.conftest import caller, live  # noqa: F401
