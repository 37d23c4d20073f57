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
from datetime import timedelta
from typing import Any, Iterable, List, Mapping, MutableMapping, Optional

import orjson
import pendulum
import requests
from airbyte_cdk.models import SyncMode
from airbyte_cdk.sources.streams.checkpoint.checkpoint_reader import FULL_REFRESH_COMPLETE_STATE

from source_posthog import settings
from source_posthog.api import hogql
from source_posthog.api.envelopes import MalformedBody, decode_body
from source_posthog.api.hogql import SessionPosition
from source_posthog.api.timestamps import parse_timestamp, to_utc_iso, utc_iso
from source_posthog.state import StateError, not_in_future, state_timestamp
from source_posthog.streams.base import PostHogStream, ValidatedState, malformed_response, where

CURSOR = "$start_timestamp"
REQUIRED_COLUMNS = ("session_id", "$start_timestamp", "$end_timestamp")


class Sessions(ValidatedState, PostHogStream):
    resource = "query"
    scope = "query:read"
    primary_key = "session_id"
    cursor_field = CURSOR
    http_method = "POST"
    page_size = settings.SESSIONS_PAGE_SIZE

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.settle = settings.SESSIONS_INACTIVITY_TIMEOUT + timedelta(minutes=self.config.events_visibility_tolerance_minutes)
        self._page: Optional[Mapping[str, Any]] = None  # the page slice drawn and not yet read

    # -- state -------------------------------------------------------------------------------
    def incoming_state(self, value: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
        if value == FULL_REFRESH_COMPLETE_STATE:  # a client replaying a completed full refresh's state
            self.logger.info(f"Stream {self.name}: the previous full refresh completed; reading it again from anchor_date.")
            return None
        return super().incoming_state(value)

    def parse_state(self, value: Mapping[str, Any]) -> MutableMapping[str, Any]:
        start = not_in_future(self.name, CURSOR, state_timestamp(value, CURSOR, self.name))
        session_id = value.get("session_id")
        if session_id is not None:
            try:
                session_id = str(uuid.UUID(session_id)) if isinstance(session_id, str) else None
            except ValueError:
                session_id = None
            if session_id is None:
                raise StateError(self.name, f"'session_id' must be null or a session UUID, got {str(value.get('session_id'))[:40]!r}")
        return {CURSOR: utc_iso(start), "session_id": session_id, "project_id": self.config.project_id}

    def _state_for(self, position: SessionPosition) -> MutableMapping[str, Any]:
        return {CURSOR: utc_iso(position.start), "session_id": position.session_id, "project_id": self.config.project_id}

    # -- slices: one per page, each decided once the previous page is read --------------------
    def stream_slices(self, sync_mode: SyncMode = SyncMode.full_refresh, **kwargs: Any) -> Iterable[Optional[Mapping[str, Any]]]:
        now = pendulum.now("UTC")
        self._settled_before = now - self.settle
        if sync_mode == SyncMode.incremental and self._state:
            self._position = SessionPosition(parse_timestamp(self._state[CURSOR]), self._state.get("session_id"))
        else:
            self._position = SessionPosition(self.config.anchor_date)
        self._oldest_unsettled: Optional[pendulum.DateTime] = None
        self._now = now
        self._window = settings.SESSIONS_WINDOW
        self._window_rows = 0
        self._window_end: Optional[pendulum.DateTime] = self._next_window_end(self._position.start)
        self._done = False
        while not self._done:
            self._page = {
                "after": utc_iso(self._position.start),
                "session_id": self._position.session_id,
                "before": utc_iso(self._window_end) if self._window_end is not None else None,
            }
            yield dict(self._page)
            if self._page is not None:
                raise RuntimeError("sessions: a page slice was drawn before the previous page was read; the next page depends on it")

    def _next_window_end(self, start: pendulum.DateTime) -> Optional[pendulum.DateTime]:
        """The window of session starts after `start`; None (unbounded) once it reaches now."""
        end = start + self._window
        return end if end <= self._now else None

    # -- request -----------------------------------------------------------------------------
    def path(self, **kwargs: Any) -> str:
        return "query/"

    def request_params(self, **kwargs: Any) -> MutableMapping[str, Any]:
        return {}

    def request_body_json(self, stream_slice: Optional[Mapping[str, Any]] = None, **kwargs: Any) -> Optional[Mapping[str, Any]]:
        after = SessionPosition(parse_timestamp(stream_slice["after"]), stream_slice.get("session_id"))
        before = parse_timestamp(stream_slice["before"]) if stream_slice.get("before") else None
        query = hogql.sessions_page_query(after, before, self.page_size)
        return hogql.query_body(query, "airbyte_source_posthog_sessions")

    def next_page_token(self, response: requests.Response) -> Optional[Mapping[str, Any]]:
        return None  # one page per slice: stream_slices decides the next one

    def probe_params(self) -> Mapping[str, Any]:
        return {}

    def probe_body(self) -> Optional[Mapping[str, Any]]:
        """A one-row sessions query over the last hour: refused exactly like a page without query:read."""
        now = pendulum.now("UTC").start_of("minute")
        query = hogql.sessions_page_query(SessionPosition(now - timedelta(hours=1)), now, 1)
        return hogql.query_body(query, "airbyte_source_posthog_scope_check")

    # -- response ----------------------------------------------------------------------------
    def parse_response(self, response: requests.Response, stream_slice: Optional[Mapping[str, Any]] = None, **kwargs: Any) -> Iterable[Mapping[str, Any]]:
        try:
            body = decode_body(self.bodies.take(response), item_type=list)
            records = _records(body)
        except MalformedBody as error:
            raise malformed_response(where(response), str(error))
        last: Optional[SessionPosition] = None
        for record, start, end in records:
            if end >= self._settled_before and (self._oldest_unsettled is None or start < self._oldest_unsettled):
                self._oldest_unsettled = start
            last = SessionPosition(start, record["session_id"])
            yield record
        self._after_page(len(records), last)

    def _after_page(self, rows: int, last: Optional[SessionPosition]) -> None:
        """Move to the next page (or window), and checkpoint the position the next sync reads from."""
        self._window_rows += rows
        if rows >= self.page_size and last is not None:
            self._position = last  # a full page: more may follow in this window
            read_through = last
            # A dense stretch: the rest of a wide window is read one day at a time, so that each
            # page aggregates a day of sessions, not the whole window.
            narrower = last.start + settings.SESSIONS_WINDOW
            if narrower <= self._now and (self._window_end is None or narrower < self._window_end):
                self._window_end = narrower
        elif self._window_end is not None:
            self._position = read_through = SessionPosition(self._window_end)  # the window is exhausted
            # Sparse stretches (a first sync from anchor_date) take doubling windows; dense ones one day.
            sparse = self._window_rows < self.page_size // 4
            self._window = min(self._window * 2, settings.SESSIONS_WINDOW_MAX) if sparse else settings.SESSIONS_WINDOW
            self._window_rows = 0
            self._window_end = self._next_window_end(self._window_end)
        else:
            self._done = True  # the last (unbounded) window is exhausted
            read_through = last or self._position
        resume = min(
            [read_through]
            + ([SessionPosition(self._oldest_unsettled)] if self._oldest_unsettled is not None else [])
            + [SessionPosition(self._settled_before)],
            key=_order,
        )
        self._state = self._state_for(resume)
        self._page = None


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
