"""Operating conditions of PostHog's query API (posthog-api.md § 11.2): what a query costs in time,
the per-query execution limit, the per-team concurrency queue and the hourly read-bytes budget.

Every condition is off by default; ``EmulatorConfig(realistic=True)`` switches them all on.

- **Cost model**: modeled seconds = overhead + rows_scanned × seconds_per_row × w + bytes_returned ×
  seconds_per_byte, where ``w`` = (bytes per row of the columns the query reads) / (bytes of a full row),
  since ClickHouse is columnar. Rows scanned = the events in the query's ``timestamp`` range (the
  primary-key prune) before LIMIT: ``ORDER BY timestamp, uuid LIMIT n`` has to read and sort the whole
  range. The modeled time × ``time_scale`` is slept while the query holds its concurrency slot.
- **Execution limit** (``max_execution_time`` 10 s): a query whose modeled time (before scaling) is
  over the limit runs for the limit (× scale) and then fails like ClickHouse error 159
  TIMEOUT_EXCEEDED does in PostHog: ``posthog/errors.py`` wraps it as ``ClickHouseQueryTimeOut``
  (``posthog/exceptions.py``: an APIException, status 504), which drf-exceptions-hog renders as
  ``{"type": "server_error", "code": "error", "detail": <default_detail>, "attr": null}``.
- **Concurrency**: at most ``concurrency`` queries run per team (``posthog/clickhouse/client/limit.py``);
  the next ones wait up to ``queue_timeout`` seconds, then 429 ``throttled`` without Retry-After.
- **Read budget** (``posthog/api_queries_budget.py``): a per-team token bucket of bytes read; a missing
  bucket starts full (capacity), refills lazily at ``bytes_per_hour``, the debit after a query may take
  it below zero down to minus one hour of refill; a query is refused while the balance is ≤ 0, with
  ``Retry-After = max(1, ceil(-balance / (bytes_per_hour / 3600)))`` (``seconds_until_positive``).
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Iterator

from .ratelimit import Throttled

# Bytes a ClickHouse row of each column weighs, roughly (compressed columns read from disk are
# smaller, but PostHog's budget counts read_bytes of the uncompressed blocks). A full events row of
# this emulator's data (~1 KB of properties) is FULL_ROW_BYTES["events"].
COLUMN_BYTES = {
    "events": {"uuid": 16, "event": 12, "timestamp": 8, "distinct_id": 24, "properties": 1100,
               "elements_chain": 120, "person_id": 16, "created_at": 8},
    "persons": {"id": 16, "created_at": 8, "properties": 400, "is_identified": 1, "last_seen_at": 8},
    "person_distinct_ids": {"distinct_id": 24, "person_id": 16},
}
FULL_ROW_BYTES = {table: sum(cols.values()) for table, cols in COLUMN_BYTES.items()}
# A distinct-id row is a few dozen bytes, not a wide row: it costs its bytes at the events rate
# (seconds_per_row is per full events row), so a scan of 1.6 M of them models ~0.3 s, not 6 s.
FULL_ROW_BYTES["person_distinct_ids"] = FULL_ROW_BYTES["events"]

# Defaults, calibrated so that a 25,000-row page of ~1 KB events (about 38 MB of JSON) takes ~1.35 s
# (see README "Operating conditions").
DEFAULT_OVERHEAD_SECONDS = 0.1
DEFAULT_SECONDS_PER_ROW = 4e-6  # a full-width row: 250,000 rows/s
DEFAULT_SECONDS_PER_BYTE = 3e-8  # ~33 MB/s of result JSON
DEFAULT_MAX_EXECUTION_SECONDS = 10.0
DEFAULT_CONCURRENCY = 3
REALISTIC_QUEUE_TIMEOUT = 30.0
REALISTIC_VISIBILITY_DELAY = 30.0  # PostHog's ingestion runbook target: 30 s p95 (posthog.com PR #4727)
REALISTIC_BUDGET_BYTES_PER_HOUR = 20e9  # secondary note: ~20 GB/h on a free plan
DEFAULT_BUDGET_CAPACITY_HOURS = 24  # API_QUERIES_BUDGET_CAPACITY_HOURS in PostHog's tests

TIMEOUT_DETAIL = ("Query has hit the max execution time before completing. See our docs for how to improve your "
                  "query performance. You may need to materialize.")
BUDGET_CODE = "api_queries_budget_exceeded"


def budget_detail(wait: int) -> str:
    """Not in the stored PostHog source: the class is a DRF ``Throttled`` (status 429, ``wait``), whose
    message ends with DRF's "Expected available in N seconds."; the first sentence is the emulator's."""
    return (f"API queries read budget exhausted for this project. "
            f"Expected available in {wait} second{'' if wait == 1 else 's'}.")


class QueryTimeout(Exception):
    """The modeled execution time exceeded the limit (→ 504)."""


class BudgetExceeded(Exception):
    """The team's read budget is ≤ 0 (→ 429 with Retry-After)."""

    def __init__(self, wait: int, remaining: float):
        super().__init__(budget_detail(wait))
        self.wait = wait
        self.remaining = remaining


@dataclass
class QueryConditions:
    """The knobs (all off by default). ``time_scale`` multiplies every modeled sleep."""

    cost_model: bool = False
    time_scale: float = 1.0
    overhead_seconds: float = DEFAULT_OVERHEAD_SECONDS
    seconds_per_row: float = DEFAULT_SECONDS_PER_ROW
    seconds_per_byte: float = DEFAULT_SECONDS_PER_BYTE
    max_execution_seconds: float | None = DEFAULT_MAX_EXECUTION_SECONDS  # of modeled time; None = no limit
    concurrency_limit: bool = False  # also on whenever the request rate limits are on
    concurrency: int = DEFAULT_CONCURRENCY
    queue_timeout: float = 1.0
    budget_bytes_per_hour: float = 0.0  # 0 = no budget (PostHog: budget_enabled() ⇔ rate > 0)
    budget_capacity_bytes: float | None = None  # None = 24 h of refill

    def validate(self) -> None:
        if self.time_scale < 0:
            raise ValueError("query_time_scale must be >= 0")
        if self.concurrency < 1:
            raise ValueError("query_concurrency must be >= 1")
        if self.budget_bytes_per_hour < 0:
            raise ValueError("query_budget_bytes_per_hour must be >= 0")
        for name in ("overhead_seconds", "seconds_per_row", "seconds_per_byte", "queue_timeout"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")

    @property
    def capacity(self) -> float:
        if self.budget_capacity_bytes is not None:
            return float(self.budget_capacity_bytes)
        return self.budget_bytes_per_hour * DEFAULT_BUDGET_CAPACITY_HOURS

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Cost:
    rows_scanned: int
    bytes_read: int
    bytes_returned: int
    modeled_seconds: float
    timed_out: bool


class QueryGovernor:
    """Cost model, concurrency queue, read budget and query statistics, shared by every request."""

    def __init__(self, conditions: QueryConditions, limits_enabled=lambda: False):
        conditions.validate()
        self.conditions = conditions
        self._limits_enabled = limits_enabled  # the request rate limits also switch the concurrency limit on
        self._lock = threading.Lock()
        self._slots: dict[int, threading.BoundedSemaphore] = {}
        self._buckets: dict[int, list[float]] = {}  # team → [tokens, refilled_at]
        self._running: dict[int, int] = {}
        self._in_flight: dict[int, int] = {}
        self.reset_stats()

    # -- configuration ------------------------------------------------------------------------

    def configure(self, **changes) -> QueryConditions:
        """Change knobs at run time (unknown names raise TypeError). Budget changes refill the buckets."""
        with self._lock:
            values = self.conditions.to_dict()
            unknown = set(changes) - set(values)
            if unknown:
                raise TypeError(f"unknown query condition(s): {', '.join(sorted(unknown))}")
            values.update(changes)
            new = QueryConditions(**values)
            new.validate()
            if new.concurrency != self.conditions.concurrency:
                self._slots.clear()
            if (new.budget_bytes_per_hour, new.capacity) != (self.conditions.budget_bytes_per_hour,
                                                             self.conditions.capacity):
                self._buckets.clear()
            self.conditions = new
            return new

    def concurrency_enabled(self) -> bool:
        return self.conditions.concurrency_limit or bool(self._limits_enabled())

    # -- statistics ---------------------------------------------------------------------------

    def reset_stats(self) -> None:
        with self._lock:
            self._stats = {"queries": 0, "succeeded": 0, "throttled_concurrency": 0, "throttled_budget": 0,
                           "timeouts": 0, "peak_concurrency": sum(self._running.values()),
                           "peak_in_flight": sum(self._in_flight.values()),
                           "total_queue_seconds": 0.0, "total_run_seconds": 0.0, "max_queue_seconds": 0.0,
                           "bytes_read": 0, "bytes_returned": 0, "rows_scanned": 0}

    def stats(self) -> dict:
        with self._lock:
            out = dict(self._stats)
            out["running"] = sum(self._running.values())
            out["in_flight"] = sum(self._in_flight.values())
            out["conditions"] = self.conditions.to_dict()
            out["concurrency_limit_enabled"] = self.concurrency_enabled()
            out["budget"] = self._budget_view()
        for k in ("total_queue_seconds", "total_run_seconds", "max_queue_seconds"):
            out[k] = round(out[k], 6)
        return out

    def record(self, **counts) -> None:
        with self._lock:
            for k, v in counts.items():
                self._stats[k] += v

    # -- concurrency ----------------------------------------------------------------------------

    @contextmanager
    def slot(self, team_id: int, log: dict) -> Iterator[None]:
        """Queue for and hold one of the team's query slots; logs queue_seconds and run_seconds."""
        t0 = time.monotonic()
        with self._lock:
            self._in_flight[team_id] = self._in_flight.get(team_id, 0) + 1
            self._stats["peak_in_flight"] = max(self._stats["peak_in_flight"], sum(self._in_flight.values()))
            self._stats["queries"] += 1
            sem = None
            if self.concurrency_enabled():
                sem = self._slots.setdefault(team_id, threading.BoundedSemaphore(self.conditions.concurrency))
            limit, timeout = self.conditions.concurrency, self.conditions.queue_timeout
        try:
            if sem is not None and not sem.acquire(timeout=timeout):
                queued = time.monotonic() - t0
                log.update(queue_seconds=round(queued, 6), run_seconds=0.0)
                self.record(throttled_concurrency=1, total_queue_seconds=queued)
                raise Throttled(f"Exceeded maximum concurrency limit: {limit} for key: api:query:per-team:{team_id} "
                                f"and task: {uuid.uuid4()}", None)
            t1 = time.monotonic()
            with self._lock:
                self._running[team_id] = self._running.get(team_id, 0) + 1
                self._stats["peak_concurrency"] = max(self._stats["peak_concurrency"], sum(self._running.values()))
                self._stats["total_queue_seconds"] += t1 - t0
                self._stats["max_queue_seconds"] = max(self._stats["max_queue_seconds"], t1 - t0)
            try:
                yield
            finally:
                t2 = time.monotonic()
                with self._lock:
                    self._running[team_id] -= 1
                    self._stats["total_run_seconds"] += t2 - t1
                log.update(queue_seconds=round(t1 - t0, 6), run_seconds=round(t2 - t1, 6))
                if sem is not None:
                    sem.release()
        finally:
            with self._lock:
                self._in_flight[team_id] -= 1

    # -- cost -----------------------------------------------------------------------------------

    def needs_scan_count(self) -> bool:
        c = self.conditions
        return c.cost_model or c.budget_bytes_per_hour > 0

    def cost(self, table: str, read_columns: list[str], rows_scanned: int, bytes_returned: int) -> Cost:
        c = self.conditions
        sizes = COLUMN_BYTES.get(table, {})
        per_row = sum(sizes.get(col, 0) for col in read_columns) or 8  # count() alone still reads a column
        weight = per_row / FULL_ROW_BYTES.get(table, per_row)
        modeled = c.overhead_seconds + rows_scanned * c.seconds_per_row * weight + bytes_returned * c.seconds_per_byte
        timed_out = bool(c.cost_model and c.max_execution_seconds is not None and modeled > c.max_execution_seconds)
        return Cost(rows_scanned, rows_scanned * per_row, bytes_returned, modeled, timed_out)

    def spend(self, cost: Cost, started: float) -> None:
        """Sleep the (scaled) modeled time, minus what the query already took; raise on a timeout."""
        c = self.conditions
        if not c.cost_model:
            return
        target = (c.max_execution_seconds if cost.timed_out else cost.modeled_seconds) * c.time_scale
        remaining = target - (time.monotonic() - started)
        if remaining > 0:
            time.sleep(remaining)
        if cost.timed_out:
            self.record(timeouts=1)
            raise QueryTimeout(TIMEOUT_DETAIL)

    # -- read budget ----------------------------------------------------------------------------

    def _refill(self, team_id: int, now: float) -> float:
        c = self.conditions
        bucket = self._buckets.setdefault(team_id, [c.capacity, now])
        tokens, at = bucket
        tokens = min(c.capacity, tokens + max(0.0, now - at) / 3600 * c.budget_bytes_per_hour)
        tokens = max(tokens, -c.budget_bytes_per_hour)
        bucket[0], bucket[1] = tokens, now
        return tokens

    def budget_enabled(self) -> bool:
        return self.conditions.budget_bytes_per_hour > 0

    def check_budget(self, team_id: int) -> float | None:
        """The team's balance (None when the budget is off); raise BudgetExceeded when it is ≤ 0."""
        if not self.budget_enabled():
            return None
        with self._lock:
            remaining = self._refill(team_id, time.time())
            rate = self.conditions.budget_bytes_per_hour
        if remaining <= 0:
            wait = max(1, math.ceil(-remaining / (rate / 3600.0)))
            self.record(throttled_budget=1)
            raise BudgetExceeded(wait, remaining)
        return remaining

    def debit(self, team_id: int, bytes_read: int) -> float | None:
        if not self.budget_enabled():
            return None
        with self._lock:
            self._refill(team_id, time.time())
            bucket = self._buckets[team_id]
            bucket[0] = max(bucket[0] - bytes_read, -self.conditions.budget_bytes_per_hour)
            return bucket[0]

    def reset_budget(self) -> None:
        with self._lock:
            self._buckets.clear()

    def _budget_view(self) -> dict:
        c = self.conditions
        if c.budget_bytes_per_hour <= 0:
            return {"enabled": False}
        now = time.time()
        teams = {str(t): round(self._refill(t, now), 1) for t in list(self._buckets)}
        return {"enabled": True, "bytes_per_hour": c.budget_bytes_per_hour, "capacity_bytes": c.capacity,
                "remaining_bytes": teams}
