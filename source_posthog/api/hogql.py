"""HogQL text for the events export, with every literal checked and quoted.

Nothing from config or state reaches a query as raw text: timestamps are parsed and
re-formatted, UUIDs are parsed by `uuid.UUID`, and the string quoting below escapes what
HogQL's lexer treats specially anyway (backslash and single quote).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Optional, Sequence, Tuple

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


def query_body(hogql: str, name: str) -> dict:
    """The `POST /query/` body of one HogQL query (docs/posthog-api.md § 4.1, § 15).

    `convertToProjectTimezone: false`: DateTimes come back in UTC and `toStartOfHour` buckets start
    on UTC hours whatever the project's zone (by default PostHog shows them in the project's zone,
    and a +05:30 project's hours start at :30 UTC). Where a server ignores the modifier, the
    records are still normalised to UTC (`envelopes.hogql_records`). `name` labels the query in
    PostHog's query log; `refresh: blocking` asks for the result in the response."""
    return {
        "query": {"kind": "HogQLQuery", "query": hogql, "modifiers": {"convertToProjectTimezone": False}},
        "name": name,
        "refresh": "blocking",
    }


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


# -- sessions (docs/posthog-api.md § 11.3, § 20.2) ------------------------------------------------
# Columns of PostHog's HogQL `sessions` table that the `sessions` stream reads: each is in both
# versions a project may serve (v2 by default, v3 where the project opted in;
# `posthog/hogql/database/schema/sessions_v2.py`, `sessions_v3.py`, LAZY_SESSIONS_FIELDS).
# `$` names are quoted with backticks.
SESSION_COLUMNS: Sequence[str] = (
    "session_id",
    "distinct_id",
    "$start_timestamp",
    "$end_timestamp",
    "$entry_current_url",
    "$entry_pathname",
    "$end_current_url",
    "$end_pathname",
    "$entry_referring_domain",
    "$entry_utm_source",
    "$entry_utm_campaign",
    "$entry_utm_medium",
    "$entry_utm_term",
    "$entry_utm_content",
    "$num_uniq_urls",
    "$pageview_count",
    "$autocapture_count",
    "$screen_count",
    "$session_duration",
    "$is_bounce",
    "$channel_type",
    "max_inserted_at",  # the latest ingestion time of the session's events: the cursor (docs/posthog-api.md § 20.2)
)


def quote_identifier(name: str) -> str:
    """A HogQL backtick-quoted identifier (`$start_timestamp`)."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


@dataclass(frozen=True)
class SessionPosition:
    """A point in the (`$start_timestamp`, `session_id`) order. As a lower bound: with a
    `session_id`, the next page starts strictly after the pair; without, at `start` inclusive."""

    start: datetime
    session_id: Optional[str] = None


def session_id_literal(value: str) -> str:
    """`session_id` is `toString(reinterpretAsUUID(session_id_v7))` in sessions v3: UUID text."""
    return quote_string(str(uuid.UUID(str(value))))


def _inserted_band(inserted_after: Optional[datetime], inserted_through: Optional[datetime]) -> list:
    """`max_inserted_at` in (after, through]: not pushed into PostHog's scan (§ 20.2), so always
    beside a `$start_timestamp` range."""
    band = [f"max_inserted_at > {datetime_literal(inserted_after)}"] if inserted_after is not None else []
    return band + ([f"max_inserted_at <= {datetime_literal(inserted_through)}"] if inserted_through is not None else [])


def sessions_page_query(
    after: SessionPosition, before: Optional[datetime], limit: int, inserted_after: Optional[datetime] = None, inserted_through: Optional[datetime] = None
) -> str:
    """One keyset page of sessions with `$start_timestamp` in [after.start, before) (no upper
    bound when `before` is None) and `max_inserted_at` in (inserted_after, inserted_through],
    ordered by (`$start_timestamp`, `session_id`). The plain `>=` / `<` bounds on `$start_timestamp`
    are what PostHog's SessionMinTimestampWhereClauseExtractor pushes into the raw sessions scan;
    the pair predicate skips what the previous page delivered. Never OFFSET (§ 11.2)."""
    start, session_id = quote_identifier("$start_timestamp"), quote_identifier("session_id")
    at = datetime_literal(after.start)
    conditions = [f"{start} >= {at}"] + ([f"{start} < {datetime_literal(before)}"] if before is not None else [])
    conditions += _inserted_band(inserted_after, inserted_through)
    if after.session_id is not None:
        conditions.append(f"({start} > {at} OR ({start} = {at} AND {session_id} > {session_id_literal(after.session_id)}))")
    columns = ", ".join(quote_identifier(name) for name in SESSION_COLUMNS)
    return (
        f"SELECT {columns} FROM sessions WHERE {' AND '.join(conditions)} "
        f"ORDER BY {start} ASC, {session_id} ASC LIMIT {checked_limit(limit)}"
    )


def sessions_count_query(
    start: datetime, end: datetime, inserted_after: Optional[datetime], inserted_through: Optional[datetime], limit: int = 50_000
) -> str:
    """Sessions per hour of `$start_timestamp` in [start, end), in the `max_inserted_at` band:
    what the sessions plan packs its windows from (only the hours that hold any)."""
    column = quote_identifier("$start_timestamp")
    conditions = [f"{column} >= {datetime_literal(start)}", f"{column} < {datetime_literal(end)}"] + _inserted_band(inserted_after, inserted_through)
    return (
        f"SELECT toStartOfHour({column}) AS hour, count() AS sessions FROM sessions WHERE {' AND '.join(conditions)} "
        f"GROUP BY hour ORDER BY hour ASC LIMIT {checked_limit(limit)}"
    )


# -- persons (docs/posthog-api.md § 11.3, § 14.6) ------------------------------------------------
# `persons` is PostHog's argMax view over `raw_persons` (ClickHouse `person`, ORDER BY (team_id, id)):
# a WHERE on `id` is pushed into the raw table, so `id > X ORDER BY id LIMIT n` is a keyset page.
# `person_distinct_ids` maps each distinct_id to its person (argMax over `person_distinct_id2`).
PERSON_COLUMNS: Sequence[str] = ("id", "created_at", "properties", "is_identified")
PERSON_LAST_SEEN_COLUMN = "last_seen_at"  # newer PostHog only (PR #47594): asked for, dropped if unknown


def persons_page_query(after: Optional[str], limit: int, last_seen_at: bool = True) -> str:
    """One keyset page of persons, ordered by `id`: the persons strictly after `after` (None: the first page).

    The server's order of `id` is the only order used: the next page starts after the last id
    this one returned, whatever that order is (ClickHouse compares UUIDs as UUIDs)."""
    columns = (*PERSON_COLUMNS, PERSON_LAST_SEEN_COLUMN) if last_seen_at else PERSON_COLUMNS
    where = f" WHERE id > {uuid_literal(after)}" if after is not None else ""
    return f"SELECT {', '.join(columns)} FROM persons{where} ORDER BY id ASC LIMIT {checked_limit(limit)}"


def persons_count_query(after: Optional[str] = None) -> str:
    """How many persons a read from `after` (None: the first page) will deliver: the estimate
    the Airbyte UI shows (one cheap aggregate; the WHERE on `id` is pushed into raw_persons)."""
    where = f" WHERE id > {uuid_literal(after)}" if after is not None else ""
    return f"SELECT count() AS persons FROM persons{where}"


def person_distinct_ids_query(
    after: Optional[str], through: str, limit: int, resume: Optional[Tuple[str, str]] = None
) -> str:
    """The distinct ids of the persons in (after, through] (one persons page), ordered by
    (person_id, distinct_id); `resume` = the last (person_id, distinct_id) delivered, when the
    page's distinct ids need more than one request (a person can have thousands)."""
    conditions = [f"person_id <= {uuid_literal(through)}"]
    if after is not None:
        conditions.insert(0, f"person_id > {uuid_literal(after)}")
    if resume is not None:
        person, distinct_id = uuid_literal(resume[0]), quote_string(resume[1])
        conditions.append(f"(person_id > {person} OR (person_id = {person} AND distinct_id > {distinct_id}))")
    return (
        f"SELECT person_id, distinct_id FROM person_distinct_ids WHERE {' AND '.join(conditions)} "
        f"ORDER BY person_id ASC, distinct_id ASC LIMIT {checked_limit(limit)}"
    )


# -- cohort membership (docs/posthog-api.md § 20.5) ---------------------------------------------------
# `cohort_people`: the members of dynamic cohorts at their current version (a DISTINCT select over
# ClickHouse `cohortpeople`, posthog/hogql/database/schema/cohort_people.py); `static_cohort_people`:
# static cohorts (`person_static_cohort`, static_cohort_people.py). Both: cohort_id, person_id.
COHORT_MEMBER_TABLES: Sequence[str] = ("cohort_people", "static_cohort_people")


def cohort_members_query(table: str, after: Optional[Tuple[int, str]], limit: int) -> str:
    """One keyset page of (cohort_id, person_id) pairs, ordered by both, strictly after `after`.
    `person_id` is a UUID in ClickHouse: only the server compares it."""
    if table not in COHORT_MEMBER_TABLES:
        raise ValueError(f"unknown cohort membership table {table!r}")
    where = ""
    if after is not None:
        cohort, person = int(after[0]), uuid_literal(after[1])
        where = f" WHERE (cohort_id > {cohort} OR (cohort_id = {cohort} AND person_id > {person}))"
    return f"SELECT cohort_id, person_id FROM {table}{where} ORDER BY cohort_id ASC, person_id ASC LIMIT {checked_limit(limit)}"
