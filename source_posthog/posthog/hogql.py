"""HogQL text for the events export, with every literal checked and quoted.

Nothing from config or state reaches a query as raw text: timestamps are parsed and
re-formatted, UUIDs are parsed by `uuid.UUID`, and the string quoting below escapes what
HogQL's lexer treats specially anyway (backslash and single quote).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Optional, Sequence

EVENT_COLUMNS: Sequence[str] = (
    "uuid",
    "event",
    "timestamp",
    "distinct_id",
    "properties",
    "elements_chain",
    "person_id",
    "created_at",
)


def quote_string(value: str) -> str:
    """A HogQL single-quoted string literal (backslash escapes, as ClickHouse's lexer reads them)."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\r", "\\r").replace("\0", "\\0")
    return f"'{escaped}'"


def datetime_literal(value: datetime) -> str:
    """`toDateTime64('YYYY-MM-DD HH:MM:SS.ffffff', 6, 'UTC')` from an aware datetime."""
    if value.tzinfo is None:
        raise ValueError("naive datetime in a HogQL query")
    text = value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
    return f"toDateTime64({quote_string(text)}, 6, 'UTC')"


def uuid_literal(value: str) -> str:
    return f"toUUID({quote_string(str(uuid.UUID(str(value))))})"


def checked_limit(limit: int) -> int:
    """An explicit LIMIT within PostHog's silent cap of 50,000 rows (§ 4.2)."""
    if not 1 <= limit <= 50_000:
        raise ValueError(f"LIMIT {limit} outside 1..50000")
    return int(limit)


@dataclass(frozen=True)
class KeysetPosition:
    """A point in the (timestamp, uuid) order.

    As a lower bound: the last pair delivered, the next page starts strictly after it; with
    `uuid=None`, nothing at `timestamp` has been delivered yet (the window starts there).
    As an upper bound: inclusive; with `uuid=None`, `timestamp` itself is excluded.
    """

    timestamp: datetime
    uuid: Optional[str] = None


def events_page_query(
    start: datetime,
    end: datetime,
    after: Optional[KeysetPosition],
    limit: int,
    until: Optional[KeysetPosition] = None,
    ingested_after: Optional[datetime] = None,
    ingested_through: Optional[datetime] = None,
) -> str:
    """One keyset page of events in [start, end), ordered by (timestamp, uuid).

    Rows sharing a timestamp are never skipped: the predicate is on the pair, and `uuid` is
    unique. `until` bounds the pair from above (inclusive). `ingested_after` and
    `ingested_through` bound `created_at` (PostHog's ingestion time), which splits the events
    between the main pass and the late-event sweep. Never OFFSET: PostHog refuses it for
    personal API keys.
    """
    conditions = [f"timestamp >= {datetime_literal(start)}", f"timestamp < {datetime_literal(end)}"]
    if after is not None and after.uuid is not None:
        at = datetime_literal(after.timestamp)
        conditions.append(f"(timestamp > {at} OR (timestamp = {at} AND uuid > {uuid_literal(after.uuid)}))")
    if until is not None and until.uuid is not None:
        at = datetime_literal(until.timestamp)
        conditions.append(f"(timestamp < {at} OR (timestamp = {at} AND uuid <= {uuid_literal(until.uuid)}))")
    if ingested_after is not None:
        conditions.append(f"created_at > {datetime_literal(ingested_after)}")
    if ingested_through is not None:
        conditions.append(f"created_at <= {datetime_literal(ingested_through)}")
    return (
        f"SELECT {', '.join(EVENT_COLUMNS)} FROM events WHERE {' AND '.join(conditions)} "
        f"ORDER BY timestamp ASC, uuid ASC LIMIT {checked_limit(limit)}"
    )


def events_count_query(
    start: datetime, end: datetime, ingested_through: Optional[datetime] = None, limit: int = 50_000, unit: str = "hour"
) -> str:
    """Events per hour (or minute) in [start, end) (only the buckets that hold any), to plan
    windows from the data instead of probing empty ranges: a cheap aggregate (it reads `timestamp`)."""
    function = {"hour": "toStartOfHour", "minute": "toStartOfMinute"}[unit]
    conditions = [f"timestamp >= {datetime_literal(start)}", f"timestamp < {datetime_literal(end)}"]
    conditions += [f"created_at <= {datetime_literal(ingested_through)}"] if ingested_through is not None else []
    return (
        f"SELECT {function}(timestamp) AS {unit}, count() AS events FROM events WHERE {' AND '.join(conditions)} "
        f"GROUP BY {unit} ORDER BY {unit} ASC LIMIT {checked_limit(limit)}"
    )


def created_minutes_count_query(floor: datetime, after: datetime, through: datetime, limit: int = 50_000) -> str:
    """Events per `created_at` minute in (after, through], among those with `timestamp >= floor`."""
    return (
        f"SELECT toStartOfMinute(created_at) AS minute, count() AS events FROM events "
        f"WHERE timestamp >= {datetime_literal(floor)} AND created_at > {datetime_literal(after)} AND created_at <= {datetime_literal(through)} "
        f"GROUP BY minute ORDER BY minute ASC LIMIT {checked_limit(limit)}"
    )
