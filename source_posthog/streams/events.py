"""`events`: a lossless HogQL keyset export, planned by `source_posthog/api/events_plan.py`.

Why not `GET /events/`: it is deprecated, caps pages at 1000 rows, and its strict `after` /
`before` bounds skip events that share a timestamp at a page edge (docs/posthog-api.md § 3.3).
Instead, `POST /query/` runs one `HogQLQuery` per page; which page comes next, and what the
state is after it, is decided by the pure `EventsPlan`. This class only adapts it to the CDK:

- one slice per page: the CDK checkpoints after every slice, so a killed sync resumes after the
  last page it checkpointed (at most that page is re-emitted);
- the next page depends on the last row of this one (keyset), so a slice can only be drawn once
  the previous one has been read. The CDK reads slices in order; drawing one early is refused
  with an error instead of looping on the same page.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any, Callable, Dict, Iterable, List, Mapping, MutableMapping, Optional, Tuple, Union

import pendulum
import requests
from airbyte_cdk.models import AirbyteMessage, AirbyteRecordMessage, FailureType, SyncMode, Type
from airbyte_cdk.utils.traced_exception import AirbyteTracedException
from airbyte_cdk.sources.streams import CheckpointMixin

from source_posthog import settings
from source_posthog.api.envelopes import MalformedBody, decode_body, hogql_records
from source_posthog.http import BODY_MEMORY, PostHogClient, error_detail, is_query_timeout
from source_posthog.api.hogql import query_body
from source_posthog.api.events_plan import CountQuery, EventsPlan, MinuteCountQuery, EventsState, InvalidEventsState, Page, PageQuery, QueryTooSlow, parse_position
from source_posthog.api.timestamps import parse_timestamp
from source_posthog.state import StateError, not_in_future
from source_posthog.streams.base import PostHogStream, malformed_response, where


class Lanes:
    """At most `in_flight` queries at once (PostHog runs three per project; we use two). Every
    query goes through a pool of that many lanes, each with its own HTTP client (the budget and
    the retry policy are the same): the query being read, and the first page of the next window,
    which does not depend on it, sent ahead. Answers are read in order, so records and
    checkpoints stay in order."""

    def __init__(self, client: Callable[[], PostHogClient], send: Callable[[PostHogClient, Any], Tuple[requests.Response, bytes]], in_flight: int):
        self._client, self._send = client, send
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="posthog-events")
        self._ahead: Dict[Any, Future] = {}
        self._sends_ahead = in_flight > 1

    def _run(self, query: Any) -> Tuple[requests.Response, bytes]:
        if not hasattr(self._local, "client"):
            self._local.client = self._client()
        return self._send(self._local.client, query)

    def read(self, query: Any, following: Optional[Any]) -> Tuple[requests.Response, bytes]:
        """The answer to `query`, with `following` sent ahead meanwhile. A query sent ahead that
        the plan no longer asks for (a window split after a timeout) is dropped; its lane
        finishes it before taking another."""
        following = following if self._sends_ahead else None
        current = self._ahead.pop(query, None) or self._pool.submit(self._run, query)
        self._ahead = {key: future for key, future in self._ahead.items() if key == following}
        if following is not None and following not in self._ahead:
            self._ahead[following] = self._pool.submit(self._run, following)
        return current.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class Events(PostHogStream, CheckpointMixin):
    resource = "query"
    scope = "query:read"
    primary_key = "uuid"
    cursor_field = "timestamp"
    http_method = "POST"

    def __init__(self, *args: Any, **kwargs: Any):
        self._incoming: Optional[EventsState] = None
        self._plan: Optional[EventsPlan] = None
        self._unread: Optional[PageQuery] = None  # the page slice drawn and not yet read
        self._state_dict: Dict[str, Any] = {}
        super().__init__(*args, **kwargs)
        self.page_size = self.config.events_page_size

    # -- state -------------------------------------------------------------------------------
    @property
    def state(self) -> MutableMapping[str, Any]:
        return self._state_dict  # the CDK reads it after every record: built once per page

    @state.setter
    def state(self, value: MutableMapping[str, Any]) -> None:
        self._incoming = self._parse(value) if value and self.owns(value) else None
        self._state_dict = self._as_dict(self._incoming) if self._incoming else {}

    def incoming_state(self, value: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
        if not value or not self.owns(value):
            return None
        self._parse(value)
        return value

    def _parse(self, value: Mapping[str, Any]) -> Optional[EventsState]:
        try:
            parsed = EventsState.from_dict(value, self.config.project_id)
        except InvalidEventsState as error:
            raise StateError(self.name, str(error))
        if parsed is not None:
            not_in_future(self.name, "timestamp", pendulum.instance(parsed.position.timestamp))
        return parsed

    def _as_dict(self, state: EventsState) -> Dict[str, Any]:
        return {**state.to_dict(), "project_id": self.config.project_id}

    def _set_plan(self, plan: EventsPlan) -> None:
        self._plan = plan
        self._state_dict = self._as_dict(plan.state)

    # -- slices: one per page, each decided by the plan once the previous page is read --------
    def stream_slices(self, sync_mode: SyncMode = SyncMode.full_refresh, **kwargs: Any) -> Iterable[Optional[Mapping[str, Any]]]:
        incremental = sync_mode == SyncMode.incremental
        self._set_plan(
            EventsPlan.begin(
                state=self._incoming if incremental else None,
                anchor=self.config.anchor_date,
                upper=pendulum.now("UTC") - settings.EVENTS_INGESTION_LAG,
                page_size=self.page_size,
                lookback=timedelta(days=self.config.events_lookback_window_days),
                incremental=incremental,
                tolerance=timedelta(minutes=self.config.events_visibility_tolerance_minutes),
            )
        )
        self._lanes = Lanes(self._client, self._send, self.config.events_queries_in_flight)
        try:
            while (query := self._plan.next_query()) is not None:
                self._unread = query
                yield {"query": query}
                if self._unread is not None:
                    raise RuntimeError("events: a page slice was drawn before the previous page was read; the next page depends on it")
        finally:
            self._lanes.close()

    # -- request -----------------------------------------------------------------------------
    def path(self, **kwargs: Any) -> str:
        return "query/"

    def request_params(self, **kwargs: Any) -> MutableMapping[str, Any]:
        return {}

    def request_body_json(self, stream_slice: Optional[Mapping[str, Any]] = None, **kwargs: Any) -> Optional[Mapping[str, Any]]:
        query: Union[PageQuery, CountQuery, MinuteCountQuery] = stream_slice["query"]
        name = "airbyte_source_posthog_events_counts" if isinstance(query, (CountQuery, MinuteCountQuery)) else "airbyte_source_posthog_events"
        return query_body(query.hogql(), name)

    def next_page_token(self, response: requests.Response) -> Optional[Mapping[str, Any]]:
        return None  # one page per slice: the plan decides the next one

    def probe_params(self) -> Mapping[str, Any]:
        return {}

    def probe_body(self) -> Optional[Mapping[str, Any]]:
        """A one-row query over the last minute: cheap, and refused exactly like a page without query:read."""
        now = pendulum.now("UTC").start_of("minute")
        query = PageQuery("main", now - timedelta(minutes=1), now, None, None, None, None, 1)
        return query_body(query.hogql(), "airbyte_source_posthog_scope_check")

    # -- response ----------------------------------------------------------------------------
    # -- reading: up to two queries in flight ---------------------------------------------------
    def read_records(
        self,
        sync_mode: SyncMode,
        cursor_field: Optional[List[str]] = None,
        stream_slice: Optional[Mapping[str, Any]] = None,
        stream_state: Optional[Mapping[str, Any]] = None,
    ) -> Iterable[Mapping[str, Any]]:
        """One query per slice, answered in order. While it is read, the first page of the next
        window (which does not depend on it) may already be on its way: two queries in flight at
        most, one per lane, and records and checkpoints stay in order."""
        query = stream_slice["query"]
        # The answer's bytes go straight to `_handle`, which frees them once parsed: no frame here
        # may hold a page's bytes while its rows are read (a page is ~40 MB).
        yield from self._handle(query, *self._lanes.read(query, self._plan.prefetchable() if isinstance(query, PageQuery) else None))

    def _send(self, client: PostHogClient, query: Any) -> Tuple[requests.Response, bytes]:
        return client.send("POST", f"{self.url_base}query/", json=self.request_body_json(stream_slice={"query": query}))

    def _client(self) -> PostHogClient:
        config = self.config
        # A query over PostHog's execution limit is answered by a smaller one, not retried as is.
        return PostHogClient(
            self.name, self.scope, config.api_key, config.project_id, config.base_url, self.api_budget, config.request_timeout_seconds,
            adapts_to_query_timeouts=True,
        )

    def parse_response(
        self, response: requests.Response, stream_slice: Optional[Mapping[str, Any]] = None, **kwargs: Any
    ) -> Iterable[Mapping[str, Any]]:
        yield from self._handle(stream_slice["query"], response, self.bodies.take(response))

    def _handle(self, query: Any, response: requests.Response, content: bytes) -> Iterable[Mapping[str, Any]]:
        if is_query_timeout(response):
            try:
                self._advance(self._plan.after_timeout(query))
            except QueryTooSlow as error:
                message = f"Stream events: {where(response)}: {error}. Lower 'events_page_size', or report it: the project may need PostHog's batch exports."
                raise AirbyteTracedException(message=message, internal_message=message, failure_type=FailureType.system_error)
            self.logger.info(f"Stream events: {where(response)} hit PostHog's query time limit; asking for a smaller range ({error_detail(response)[:120]}).")
            return
        try:
            with BODY_MEMORY:  # not while the other lane reads the next page's bytes
                body = decode_body(content, item_type=list)
                del content  # a page is ~40 MB: hold no bytes while its rows are read
        except MalformedBody as error:
            raise malformed_response(where(response), str(error))
        if isinstance(query, CountQuery):
            self._advance(self._plan.after_counts(query, self._hours(body, response)))
            return
        if isinstance(query, MinuteCountQuery):
            self._advance(self._plan.after_minutes(query, self._hours(body, response)))
            return
        rows = len(body["results"])
        last: Optional[Mapping[str, Any]] = None
        emitted_at = int(time.time() * 1000)
        try:
            for last in hogql_records(body, ("uuid", "timestamp")):
                # Emitted as messages: the CDK passes them through without wrapping each one
                # (a measurable share of the CPU at a million events; no transform applies).
                yield AirbyteMessage(type=Type.RECORD, record=AirbyteRecordMessage(stream=self.name, data=last, emitted_at=emitted_at))
        except MalformedBody as error:
            raise malformed_response(where(response), str(error))
        try:
            position = parse_position(last["timestamp"], last["uuid"]) if last else None
        except ValueError:
            raise malformed_response(where(response), f"an event's uuid is {str(last.get('uuid'))[:40]!r}, not a UUID")
        full = rows >= query.limit or bool(body.get("hasMore"))
        self._advance(self._plan.after_page(query, Page(rows, position, full)))

    def _advance(self, plan: EventsPlan) -> None:
        self._set_plan(plan)
        self._unread = None

    @staticmethod
    def _hours(body: Mapping[str, Any], response: requests.Response) -> List[Tuple[datetime, int]]:
        try:
            return [(parse_timestamp(hour), int(count)) for hour, count in body["results"]]
        except (TypeError, ValueError) as error:
            raise malformed_response(where(response), f"the counts cannot be read ({type(error).__name__}: {error})")
