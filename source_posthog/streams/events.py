"""`events`: a lossless HogQL keyset export, planned by `source_posthog/api/events_plan.py`; with
`export_mode: file_download`, PostHog's file-download exports by insert time (`streams/exported.py`).

Why not `GET /events/`: it is deprecated, caps pages at 1000 rows, and its strict `after` /
`before` bounds skip events that share a timestamp at a page edge (docs/posthog-api.md § 3.3).
Instead, `POST /query/` runs one `HogQLQuery` per page; which query comes next, and what the state
is after it, is decided by the pure `EventsPlan`. `read_project` is the whole read of one project,
in one loop: ask the plan, send (two queries in flight, `QueryLanes`), read the answer, tell the
plan, checkpoint. A killed sync resumes after the last query it checkpointed (at most that page
is emitted again).
"""

from __future__ import annotations

import time
from datetime import timedelta
from functools import cached_property
from typing import Any, Iterator, Mapping, MutableMapping, Optional, Tuple

import pendulum
import requests
from airbyte_cdk.models import AirbyteMessage, AirbyteRecordMessage, Type

from source_posthog import seams
from source_posthog.api import exports
from source_posthog.api.envelopes import MalformedBody, decode_body, hogql_records
from source_posthog.api.events_plan import CountQuery, EventsPlan, EventsState, InvalidEventsState, MinuteCountQuery, Page, PageQuery, QueryTooSlow, parse_position
from source_posthog.api.hogql import query_body
from source_posthog.http import PostHogClient, error_detail, is_query_timeout
from source_posthog.state import StateError, not_in_future
from source_posthog.api.timestamps import utc_iso
from source_posthog.streams.exported import ExportedStream
from source_posthog.streams.base import IncrementalStream, ProjectRead, malformed_response, time_counts, too_slow, where
from source_posthog.streams.query_lanes import Answer, QueryLanes

QUERY_NAMES = {PageQuery: "airbyte_source_posthog_events", CountQuery: "airbyte_source_posthog_events_counts", MinuteCountQuery: "airbyte_source_posthog_events_counts"}


class Events(ExportedStream, IncrementalStream):
    resource = "query"
    scope = "query:read"
    primary_key = "uuid"
    cursor_field = "timestamp"
    export_model = "events"

    # -- export_mode file_download (streams/exported.py) -----------------------------------------
    def export_record(self, line: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
        """An export line as the HogQL path's record; an event older than anchor_date (ingested
        after it) is left out, as over HogQL."""
        record = exports.event_record(line)
        return record if record["timestamp"] >= self._anchor_iso else None

    @cached_property
    def _anchor_iso(self) -> str:
        """anchor_date in the records' text form (compared as strings)."""
        return utc_iso(self.config.anchor_date)

    def export_start_after_hogql(self, part: ProjectRead, value: Mapping[str, Any]) -> Any:
        """Every event not yet delivered over HogQL was ingested after the earlier of its cursor and
        its ingestion watermark, less the visibility tolerance."""
        state = self._parse(part.project_id, value)
        through = min(state.position.timestamp, state.ingested_through or state.position.timestamp)
        return through - timedelta(minutes=self.config.events_visibility_tolerance_minutes)

    # -- state -------------------------------------------------------------------------------
    def parse_state(self, project_id: int, value: Mapping[str, Any]) -> MutableMapping[str, Any]:
        return self._as_dict(self._parse(project_id, value), project_id)

    def _parse(self, project_id: int, value: Mapping[str, Any]) -> EventsState:
        try:
            parsed = EventsState.from_dict(value, project_id)
        except InvalidEventsState as error:
            raise StateError(self.name, str(error))
        if parsed is None:
            raise StateError(self.name, "is empty")
        not_in_future(self.name, "timestamp", pendulum.instance(parsed.position.timestamp))
        return parsed

    @staticmethod
    def _as_dict(state: EventsState, project_id: int) -> MutableMapping[str, Any]:
        return {**state.to_dict(), "project_id": project_id}

    # -- the read of one project: ask the plan, send, read, tell the plan, checkpoint ----------
    def read_over_hogql(self, part: ProjectRead) -> Iterator[AirbyteMessage]:
        incremental = part.incremental
        plan = EventsPlan.begin(
            state=self._parse(part.project_id, part.resume) if incremental and part.resume else None,
            anchor=self.config.anchor_date,
            upper=pendulum.now("UTC") - seams.events_ingestion_lag(),
            page_size=self.config.events_page_size,
            lookback=timedelta(days=self.config.events_lookback_window_days),
            incremental=incremental,
            tolerance=timedelta(minutes=self.config.events_visibility_tolerance_minutes),
        )

        def send(client: PostHogClient, query: Any) -> Answer:
            return client.send("POST", part.url("query/"), json=query_body(query.hogql(), QUERY_NAMES[type(query)]))

        # A query over PostHog's execution limit is answered by a smaller one, not retried as is.
        new_client = lambda **lane: part.new_client(adapts_to_query_timeouts=True, **lane)  # noqa: E731
        with QueryLanes(new_client, send, self.config.events_queries_in_flight, name=f"posthog-events-{part.project_id}") as lanes:
            while (query := plan.next_query()) is not None:
                response, content = lanes.read(query, plan.prefetchable() if isinstance(query, PageQuery) else None)
                if is_query_timeout(response):
                    plan = self._smaller(plan, query, response)
                    continue
                try:
                    with lanes.permit:  # not while a lane reads the next page's bytes
                        body = decode_body(content, item_type=list)
                        del content  # a page is ~40 MB: hold no bytes while its rows are read
                except MalformedBody as error:
                    raise malformed_response(where(response), str(error))
                if isinstance(query, CountQuery):
                    plan = plan.after_counts(query, time_counts(body, where(response), "counts"))
                    if plan.counted is None:  # the windows are planned: what they hold is the estimate
                        yield from part.estimate(part.progress.records + plan.main_rows_planned())
                elif isinstance(query, MinuteCountQuery):
                    plan = plan.after_minutes(query, time_counts(body, where(response), "counts"))
                else:
                    rows = len(body["results"])
                    last: Optional[Mapping[str, Any]] = None
                    emitted_at = int(time.time() * 1000)
                    project, name = part.project_id, self.name
                    try:
                        for last in hogql_records(body, ("uuid", "timestamp")):
                            last["project_id"] = project
                            yield AirbyteMessage(type=Type.RECORD, record=AirbyteRecordMessage(stream=name, data=last, emitted_at=emitted_at))
                    except MalformedBody as error:
                        raise malformed_response(where(response), str(error))
                    part.progress.records += rows
                    plan = plan.after_page(query, Page(rows, self._position(last, response), rows >= query.limit or bool(body.get("hasMore"))))
                yield part.checkpoint(self._as_dict(plan.state, part.project_id))

    def _smaller(self, plan: EventsPlan, query: PageQuery, response: requests.Response) -> EventsPlan:
        try:
            smaller = plan.after_timeout(query)
        except QueryTooSlow as error:
            raise too_slow("events", where(response), error, "Lower 'events_page_size', or report it: the project may need PostHog's batch exports.")
        self.logger.info(f"Stream events: {where(response)} hit PostHog's query time limit; asking for a smaller range ({error_detail(response)[:120]}).")
        return smaller

    @staticmethod
    def _position(last: Optional[Mapping[str, Any]], response: requests.Response) -> Any:
        try:
            return parse_position(last["timestamp"], last["uuid"]) if last else None
        except ValueError:
            raise malformed_response(where(response), f"an event's uuid is {str(last.get('uuid'))[:40]!r}, not a UUID")

    # -- scope probe -----------------------------------------------------------------------------
    def probe_request(self, part: ProjectRead) -> Tuple[str, str, Mapping[str, Any], Optional[Mapping[str, Any]]]:
        """A one-row query over the last minute: cheap, and refused exactly like a page without query:read."""
        now = pendulum.now("UTC").start_of("minute")
        query = PageQuery("main", now - timedelta(minutes=1), now, None, None, None, None, 1)
        return "POST", part.url("query/"), {}, query_body(query.hogql(), "airbyte_source_posthog_scope_check")
