"""`sessions`: PostHog's HogQL `sessions` table, keyset paged, incremental on `$start_timestamp`.

A session row is an aggregate of its events (start, end, entry and exit URLs, counts, bounce,
channel), so it keeps changing while events arrive. PostHog ends a session after 30 minutes
without events and caps it at 24 hours; events become queryable up to
`events_visibility_tolerance_minutes` late (docs/posthog-api.md § 11.1, § 11.3). So a session has
**settled** (its values are final) once its `$end_timestamp` is older than

    settle = 30 min (inactivity timeout) + events_visibility_tolerance_minutes (default 30) = 60 min.

Reading: one `POST /query/` per page, `$start_timestamp >= floor` in windows of session starts (one
day, doubling up to 32 days while windows hold few sessions; the last window unbounded), keyset on (`$start_timestamp`, `session_id`), one slice per
page so the CDK checkpoints after every page.

State: `{"$start_timestamp", "session_id", "project_id"}`, the position the next sync reads from
(strictly after the pair; at `$start_timestamp` inclusive when `session_id` is null). After every
page it is the lowest of
- the start of the oldest session read that has not settled (it must be read again),
- the position read through,
- now − settle (a session that starts later cannot have settled, and one not yet visible starts
  later than now − tolerance).
So every session that can still change is read, and emitted, again by the next sync, until a sync
sees it settled: that sync emits its final values. The re-emitted sessions are the ones that
started after the oldest unsettled one: at most 24 h + settle of sessions, usually about an hour.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator, List, Mapping, MutableMapping, Optional, Tuple

import orjson
import pendulum
from airbyte_cdk.models import AirbyteMessage

from source_posthog import settings
from source_posthog.api import hogql
from source_posthog.api.envelopes import MalformedBody, decode_body
from source_posthog.api.hogql import SessionPosition
from source_posthog.api.timestamps import parse_timestamp, to_utc_iso, utc_iso
from source_posthog.state import StateError, not_in_future, state_timestamp
from source_posthog.streams.base import IncrementalStream, ProjectRead, malformed_response, where

CURSOR = "$start_timestamp"
REQUIRED_COLUMNS = ("session_id", "$start_timestamp", "$end_timestamp")


@dataclass
class Windows:
    """Windows of session starts: one day, doubling up to 32 days while they hold few sessions,
    the last one unbounded (None) once it reaches now."""

    now: pendulum.DateTime
    width: timedelta = settings.SESSIONS_WINDOW
    rows: int = 0

    def end_after(self, start: pendulum.DateTime) -> Optional[pendulum.DateTime]:
        end = start + self.width
        return end if end <= self.now else None


class Sessions(IncrementalStream):
    resource = "query"
    scope = "query:read"
    primary_key = "session_id"
    cursor_field = CURSOR
    page_size = settings.SESSIONS_PAGE_SIZE

    @property
    def settle(self) -> timedelta:
        return settings.SESSIONS_INACTIVITY_TIMEOUT + timedelta(minutes=self.config.events_visibility_tolerance_minutes)

    def parse_state(self, project_id: int, value: Mapping[str, Any]) -> MutableMapping[str, Any]:
        start = not_in_future(self.name, CURSOR, state_timestamp(value, CURSOR, self.name))
        session_id = value.get("session_id")
        if session_id is not None:
            try:
                session_id = str(uuid.UUID(session_id)) if isinstance(session_id, str) else None
            except ValueError:
                session_id = None
            if session_id is None:
                raise StateError(self.name, f"'session_id' must be null or a session UUID, got {str(value.get('session_id'))[:40]!r}")
        return {CURSOR: utc_iso(start), "session_id": session_id, "project_id": project_id}

    # -- the read of one project: one keyset page at a time, a checkpoint after each -------------
    def read_project(self, part: ProjectRead) -> Iterator[AirbyteMessage]:
        now = pendulum.now("UTC")
        settled_before = now - self.settle
        state = part.resume if part.incremental and part.resume else None
        position = SessionPosition(parse_timestamp(state[CURSOR]), state.get("session_id")) if state else SessionPosition(self.config.anchor_date)
        oldest_unsettled: Optional[pendulum.DateTime] = None
        windows = Windows(now)
        window_end = windows.end_after(position.start)
        while True:
            text = hogql.sessions_page_query(position, window_end, self.page_size)
            response, content = part.client.send("POST", part.url("query/"), json=hogql.query_body(text, "airbyte_source_posthog_sessions"))
            try:
                records = _records(decode_body(content, item_type=list))
            except MalformedBody as error:
                raise malformed_response(where(response), str(error))
            last: Optional[SessionPosition] = None
            for record, start, end in records:
                if end >= settled_before and (oldest_unsettled is None or start < oldest_unsettled):
                    oldest_unsettled = start
                last = SessionPosition(start, record["session_id"])
                yield part.record(record)
            # The next page (or window), and the position the next sync reads from.
            windows.rows += len(records)
            done = False
            if len(records) >= self.page_size and last is not None:
                position = read_through = last  # a full page: more may follow in this window
                # A dense stretch: the rest of a wide window is read one day at a time, so that each
                # page aggregates a day of sessions, not the whole window.
                narrower = last.start + settings.SESSIONS_WINDOW
                if narrower <= now and (window_end is None or narrower < window_end):
                    window_end = narrower
            elif window_end is not None:
                position = read_through = SessionPosition(window_end)  # the window is exhausted
                # Sparse stretches (a first sync from anchor_date) take doubling windows; dense ones one day.
                sparse = windows.rows < self.page_size // 4
                windows.width = min(windows.width * 2, settings.SESSIONS_WINDOW_MAX) if sparse else settings.SESSIONS_WINDOW
                windows.rows = 0
                window_end = windows.end_after(window_end)
            else:
                done = True  # the last (unbounded) window is exhausted
                read_through = last or position
            resume = min(
                [read_through]
                + ([SessionPosition(oldest_unsettled)] if oldest_unsettled is not None else [])
                + [SessionPosition(settled_before)],
                key=_order,
            )
            yield part.checkpoint({CURSOR: utc_iso(resume.start), "session_id": resume.session_id, "project_id": part.project_id})
            if done:
                return

    def probe_request(self, part: ProjectRead) -> Tuple[str, str, Mapping[str, Any], Optional[Mapping[str, Any]]]:
        """A one-row sessions query over the last hour: refused exactly like a page without query:read."""
        now = pendulum.now("UTC").start_of("minute")
        query = hogql.sessions_page_query(SessionPosition(now - timedelta(hours=1)), now, 1)
        return "POST", part.url("query/"), {}, hogql.query_body(query, "airbyte_source_posthog_scope_check")


def _order(position: SessionPosition) -> tuple:
    """(start, "") sorts before every (start, session_id): an inclusive bound is lower."""
    return (position.start, position.session_id or "")


def _records(body: Mapping[str, Any]) -> List[tuple]:
    """HogQL rows → (record, start, end); timestamps in UTC ISO-8601 (HogQL returns the project's zone)."""
    columns = body.get("columns") or []
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    if missing:
        raise MalformedBody(f"the HogQL result has no {', '.join(missing)} column")
    out = []
    for row in body["results"]:
        record = dict(zip(columns, row))
        try:
            session_id = record["session_id"]
            if not isinstance(session_id, str):
                raise ValueError(f"session_id {str(session_id)[:40]!r} is not a string")
            uuid.UUID(session_id)  # sessions v3: toString(reinterpretAsUUID(session_id_v7)); the keyset quotes it as a UUID
            start, end = parse_timestamp(record["$start_timestamp"]), parse_timestamp(record["$end_timestamp"])
            record["$start_timestamp"], record["$end_timestamp"] = to_utc_iso(str(record["$start_timestamp"])), to_utc_iso(str(record["$end_timestamp"]))
        except (TypeError, ValueError, pendulum.parsing.exceptions.ParserError) as error:
            raise MalformedBody(f"a session row cannot be read ({type(error).__name__}: {error}): {orjson.dumps(row)[:120].decode(errors='replace')}")
        out.append((record, start, end))
    return out
