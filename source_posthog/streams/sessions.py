"""`sessions`: PostHog's HogQL `sessions` table, read by the ingestion time of the sessions' events
(with `export_mode: file_download`, PostHog's sessions exports on the same time: `streams/exported.py`).

A session row is an aggregate of its events, so it changes whenever one of them arrives, and a late
event (an old `timestamp`, ingested now) can extend or create a session that started long before.
Every change moves the session's `max_inserted_at` (the latest ingestion time of its events,
selectable in PostHog's v2 and v3 tables, docs/posthog-api.md § 20.2), so the stream reads by it:
each sync reads the sessions whose `max_inserted_at` is in a band from the last sync's watermark
(minus `events_visibility_tolerance_minutes`) to now minus the ingestion lag, among the sessions
starting after the last watermark minus `events_lookback_window_days` and a day (the first sync:
from `anchor_date`). The plan (`source_posthog/api/sessions_plan.py`) counts the band's sessions
per hour first and reads windows of at most 90% of a page, keyset paged on (`$start_timestamp`,
`session_id`): no query on an empty range. Each delivered session carries its values as of the
read; a session that changes later is delivered again by the sync after, with its new values
(destinations deduplicate on `session_id`). A checkpoint after every page resumes a killed sync.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any, Iterator, List, Mapping, MutableMapping, Optional, Tuple

import orjson
import pendulum
import requests
from airbyte_cdk.models import AirbyteMessage

from source_posthog import seams, settings
from source_posthog.api import hogql
from source_posthog.api.envelopes import MalformedBody, decode_body
from source_posthog.api.hogql import SessionPosition
from source_posthog.api.sessions_plan import InvalidSessionsState, SessionsCount, SessionsPage, SessionsPlan, SessionsQueryTooSlow, SessionsState
from source_posthog.api.timestamps import parse_timestamp, to_utc_iso
from source_posthog.http import error_detail, is_query_timeout
from source_posthog.state import StateError, not_in_future
from source_posthog.api import exports
from source_posthog.streams.exported import ExportedStream
from source_posthog.streams.base import IncrementalStream, ProjectRead, malformed_response, time_counts, too_slow, where

CURSOR = "max_inserted_at"
REQUIRED_COLUMNS = ("session_id", "$start_timestamp", "$end_timestamp", "max_inserted_at")
QUERY_NAMES = {SessionsCount: "airbyte_source_posthog_sessions_counts", SessionsPage: "airbyte_source_posthog_sessions"}


class Sessions(ExportedStream, IncrementalStream):
    resource = "query"
    scope = "query:read"
    primary_key = "session_id"
    cursor_field = CURSOR
    export_model = "sessions"

    # -- export_mode file_download (streams/exported.py): windows on max_inserted_at ----------------
    def export_record(self, line: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
        return exports.session_record(line)

    def export_start_after_hogql(self, part: ProjectRead, value: Mapping[str, Any]) -> Any:
        """The band the HogQL read was in (or had finished), less the visibility tolerance."""
        state = self._parse(value)
        through = state.inserted_after if state.in_pass else state.inserted_through
        return through - timedelta(minutes=self.config.events_visibility_tolerance_minutes) if through else None

    # -- state ---------------------------------------------------------------------------------
    def parse_state(self, project_id: int, value: Mapping[str, Any]) -> MutableMapping[str, Any]:
        state = self._parse(value)
        return {**state.to_dict(), "project_id": project_id}

    def _parse(self, value: Mapping[str, Any]) -> SessionsState:
        try:
            state = SessionsState.from_dict(value)
        except InvalidSessionsState as error:
            raise StateError(self.name, str(error))
        moments = (
            ("inserted_through", state.inserted_through),
            ("inserted_after", state.inserted_after),
            # an earlier release's `$start_timestamp` (or a pass's floor or position): a future one reads nothing
            ("$start_timestamp" if "$start_timestamp" in value else "start_floor", state.start_floor),
            ("position", state.position.start if state.position else None),
        )
        for name, moment in moments:
            if moment is not None:
                not_in_future(self.name, name, pendulum.instance(moment))
        return state

    # -- the read of one project: ask the plan, send, read, tell the plan, checkpoint ----------
    def read_over_hogql(self, part: ProjectRead) -> Iterator[AirbyteMessage]:
        config = self.config
        plan = SessionsPlan.begin(
            self._parse(part.resume) if part.incremental and part.resume else None,
            anchor=config.anchor_date,
            now=pendulum.now("UTC"),
            lag=seams.events_ingestion_lag(),
            lookback=timedelta(days=config.events_lookback_window_days),
            tolerance=timedelta(minutes=config.events_visibility_tolerance_minutes),
            page_size=settings.SESSIONS_PAGE_SIZE,
            incremental=part.incremental,
        )
        client = part.new_client(adapts_to_query_timeouts=True)  # over PostHog's time limit: a smaller window
        while (query := plan.next_query()) is not None:
            response, content = client.send("POST", part.url("query/"), json=hogql.query_body(query.hogql(), QUERY_NAMES[type(query)]))
            if is_query_timeout(response):
                plan = self._smaller(plan, query, response)
                continue
            try:
                body = decode_body(content, item_type=list)
            except MalformedBody as error:
                raise malformed_response(where(response), str(error))
            if isinstance(query, SessionsCount):
                plan = plan.after_counts(query, time_counts(body, where(response), "sessions counts"))
                if plan.counted:
                    yield from part.estimate(part.progress.records + plan.estimated_rows())
            else:
                try:
                    records = _records(body)
                except MalformedBody as error:
                    raise malformed_response(where(response), str(error))
                for record, _ in records:
                    yield part.record(record)
                last = records[-1][1] if records else None
                plan = plan.after_page(query, len(records), last)
            yield part.checkpoint({**plan.state.to_dict(), "project_id": part.project_id})

    def _smaller(self, plan: SessionsPlan, query: Any, response: requests.Response) -> SessionsPlan:
        if not isinstance(query, SessionsPage):
            raise too_slow("sessions", where(response), Exception("the sessions count hit PostHog's query time limit"), "Narrow 'anchor_date', or report it.")
        try:
            smaller = plan.after_timeout(query)
        except SessionsQueryTooSlow as error:
            raise too_slow("sessions", where(response), error, "Report it: the project may need PostHog's exports (export_mode).")
        self.logger.info(f"Stream sessions: {where(response)} hit PostHog's query time limit; asking for a smaller range ({error_detail(response)[:120]}).")
        return smaller

    def probe_request(self, part: ProjectRead) -> Tuple[str, str, Mapping[str, Any], Optional[Mapping[str, Any]]]:
        """A one-row sessions query over the last hour: refused exactly like a page without query:read."""
        now = pendulum.now("UTC").start_of("minute")
        query = hogql.sessions_page_query(SessionPosition(now - timedelta(hours=1)), now, 1)
        return "POST", part.url("query/"), {}, hogql.query_body(query, "airbyte_source_posthog_scope_check")


def _records(body: Mapping[str, Any]) -> List[Tuple[dict, SessionPosition]]:
    """HogQL rows → (record, its keyset position); timestamps in UTC ISO-8601 (HogQL returns the project's zone)."""
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
            start = parse_timestamp(record["$start_timestamp"])
            for name in ("$start_timestamp", "$end_timestamp", "max_inserted_at"):
                record[name] = to_utc_iso(str(record[name]))
        except (TypeError, ValueError, pendulum.parsing.exceptions.ParserError) as error:
            raise MalformedBody(f"a session row cannot be read ({type(error).__name__}: {error}): {orjson.dumps(row)[:120].decode(errors='replace')}")
        out.append((record, SessionPosition(start, session_id)))
    return out
