"""`events`: a lossless HogQL keyset export.

Why not `GET /events/`: it is deprecated, caps pages at 1000 rows, and its strict `after` /
`before` bounds skip events that share a timestamp at a page edge (posthog-api.md § 3.3).
Instead, `POST /query/` runs a `HogQLQuery` per page:

- The time from the cursor (or anchor_date) up to now minus a small ingestion lag is cut
  into windows. A window is read in keyset pages on `(timestamp, uuid)` ascending with an
  explicit LIMIT (PostHog silently caps LIMIT at 50,000 and refuses OFFSET for personal API
  keys). A page shorter than LIMIT ends the window; the next window is sized from the density
  just seen, so each window is about one page of rows.
- STATE after every page: the keyset position, so a killed sync resumes after the last page it
  checkpointed (at most that page is re-emitted).
- Late events: `created_at` is PostHog's ingestion time. The state keeps an ingestion
  watermark: every event at or before the position and ingested at or before the watermark has
  been delivered. Each incremental sync first sweeps `events_lookback_window_days` before the
  position for events ingested after the watermark, then moves the watermark to this sync's
  upper bound. Each late event is delivered once.
- State of the official Airbyte connector (`{"<project_id>": {"timestamp": ...}}` and the
  flat `{"timestamp": ...}`) is accepted: events at that timestamp are read again, because
  its strict bounds may have skipped some of them.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Dict, Iterable, Iterator, List, Mapping, MutableMapping, Optional

import orjson
import pendulum
import requests
from airbyte_cdk.models import AirbyteMessage, AirbyteRecordMessage, SyncMode, Type
from airbyte_cdk.sources.streams import CheckpointMixin

from source_posthog import settings
from source_posthog.hogql import KeysetPosition, events_page_query
from source_posthog.state import StateError, require_mapping, state_timestamp
from source_posthog.streams.base import PostHogStream, decode_body, malformed_response, where
from source_posthog.timestamps import parse_timestamp, to_utc_iso, utc_iso

MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class Sweep:
    """A late-event sweep in progress: keyset position and the watermark it sweeps after."""

    position: KeysetPosition
    ingested_after: datetime


@dataclass(frozen=True)
class EventsState:
    position: KeysetPosition
    ingested_through: Optional[datetime] = None
    sweep: Optional[Sweep] = None

    def to_dict(self) -> Dict[str, Any]:
        state: Dict[str, Any] = {"timestamp": utc_iso(self.position.timestamp), "uuid": self.position.uuid}
        if self.ingested_through is not None:
            state["ingested_through"] = utc_iso(self.ingested_through)
        if self.sweep is not None:
            state["sweep"] = {
                "timestamp": utc_iso(self.sweep.position.timestamp),
                "uuid": self.sweep.position.uuid,
                "ingested_after": utc_iso(self.sweep.ingested_after),
            }
        return state

    @classmethod
    def from_dict(cls, value: Mapping[str, Any], project_id: int) -> Optional["EventsState"]:
        value = require_mapping(value, "events")
        if not value:
            return None
        if "timestamp" not in value:
            # The official connector's per-project state: {"<project_id>": {"timestamp": ...}}.
            nested = value.get(str(project_id))
            if nested is None:
                raise StateError("events", f"has neither 'timestamp' nor an entry for project {project_id} (keys: {', '.join(sorted(value))})")
            return cls.from_dict(require_mapping(nested, "events"), project_id)
        timestamp = state_timestamp(value, "timestamp", "events")
        position = KeysetPosition(timestamp, _uuid_or_none(value.get("uuid")))
        ingested_through = state_timestamp(value, "ingested_through", "events", required=False)
        sweep = None
        if value.get("sweep"):
            raw = require_mapping(value["sweep"], "events")
            sweep = Sweep(
                KeysetPosition(state_timestamp(raw, "timestamp", "events"), _uuid_or_none(raw.get("uuid"))),
                state_timestamp(raw, "ingested_after", "events"),
            )
        return cls(position, ingested_through, sweep)


def _uuid_or_none(value: Any) -> Optional[str]:
    if value is None:
        return None
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise StateError("events", f"'uuid' = {str(value)[:40]!r} is not a UUID")


def _response_uuid(value: Any, place: str) -> str:
    """The keyset position goes into STATE and the next query: it must be a real UUID."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise malformed_response(place, f"an event's uuid is {str(value)[:40]!r}, not a UUID")


class Events(PostHogStream, CheckpointMixin):
    resource = "query"
    scope = "query:read"
    primary_key = "uuid"
    cursor_field = "timestamp"
    http_method = "POST"

    def __init__(self, *args: Any, **kwargs: Any):
        self._events_state: Optional[EventsState] = None
        self._state_dict: Dict[str, Any] = {}
        super().__init__(*args, **kwargs)
        self.page_size = self.config.events_page_size
        self._window = settings.EVENTS_FIRST_WINDOW

    # -- state -------------------------------------------------------------------------------
    @property
    def state(self) -> MutableMapping[str, Any]:
        return self._state_dict  # the CDK reads it after every record: built once per page

    @state.setter
    def state(self, value: MutableMapping[str, Any]) -> None:
        self._state = EventsState.from_dict(value or {}, self.config.project_id)

    @property
    def _state(self) -> Optional[EventsState]:
        return self._events_state

    @_state.setter
    def _state(self, value: Optional[EventsState]) -> None:
        self._events_state = value
        self._state_dict = value.to_dict() if value else {}

    # -- slices: one per page, decided from the state the previous page left ----------------
    def stream_slices(self, sync_mode: SyncMode = SyncMode.full_refresh, **kwargs: Any) -> Iterable[Optional[Mapping[str, Any]]]:
        upper = pendulum.now("UTC") - settings.EVENTS_INGESTION_LAG
        sweeping = sync_mode == SyncMode.incremental and self.config.events_lookback_window_days > 0
        if sync_mode != SyncMode.incremental or self._state is None:
            self._state = EventsState(KeysetPosition(self.config.anchor_date), ingested_through=upper)
        else:
            yield from self._sweep_slices(upper)
        # With sweeps on, the main pass leaves events ingested after the watermark to the next
        # sync's sweep; otherwise an event ingested during the lag would be read twice.
        yield from self._main_slices(upper, ingested_through=self._state.ingested_through if sweeping else None)

    def _sweep_slices(self, upper: datetime) -> Iterator[Mapping[str, Any]]:
        """Late events: before the position, ingested after the last sync's watermark."""
        state = self._state
        lookback = timedelta(days=self.config.events_lookback_window_days)
        if state.sweep is None and state.ingested_through is not None and lookback and state.ingested_through < upper:
            start = KeysetPosition(state.position.timestamp - lookback)
            self._state = replace(state, sweep=Sweep(start, state.ingested_through), ingested_through=upper)
        elif state.sweep is None:
            self._state = replace(state, ingested_through=max(upper, state.ingested_through or upper))
        while self._state.sweep is not None:
            sweep, position = self._state.sweep, self._state.position
            # Up to and including the position: the main pass reads what comes after it.
            end = position.timestamp + MICROSECOND if position.uuid else position.timestamp
            yield {
                "phase": "sweep",
                "start": sweep.position.timestamp,
                "end": end,
                "after": sweep.position,
                "until": position,
                "ingested_after": sweep.ingested_after,
                "ingested_through": self._state.ingested_through,
            }

    def _main_slices(self, upper: datetime, ingested_through: Optional[datetime]) -> Iterator[Mapping[str, Any]]:
        while self._state.position.timestamp < upper:
            position = self._state.position
            window_end = min(position.timestamp + self._window, upper)
            yield {
                "phase": "main",
                "start": position.timestamp,
                "end": window_end,
                "after": position,
                "until": None,
                "ingested_after": None,
                "ingested_through": ingested_through,
            }

    # -- request -----------------------------------------------------------------------------
    def path(self, **kwargs: Any) -> str:
        return "query/"

    def request_params(self, **kwargs: Any) -> MutableMapping[str, Any]:
        return {}

    def request_body_json(self, stream_slice: Optional[Mapping[str, Any]] = None, **kwargs: Any) -> Optional[Mapping[str, Any]]:
        query = events_page_query(
            start=stream_slice["start"],
            end=stream_slice["end"],
            after=stream_slice["after"],
            until=stream_slice["until"],
            limit=self.page_size,
            ingested_after=stream_slice["ingested_after"],
            ingested_through=stream_slice["ingested_through"],
        )
        return {"query": {"kind": "HogQLQuery", "query": query}, "name": "airbyte_source_posthog_events", "refresh": "blocking"}

    def next_page_token(self, response: requests.Response) -> Optional[Mapping[str, Any]]:
        return None  # one page per slice: the next slice is decided from the state

    # -- response ----------------------------------------------------------------------------
    def parse_response(
        self, response: requests.Response, stream_slice: Optional[Mapping[str, Any]] = None, **kwargs: Any
    ) -> Iterable[Mapping[str, Any]]:
        body = decode_body(response, item_type=list)
        rows: List[List[Any]] = body["results"]
        columns = body.get("columns") or []
        index = {name: position for position, name in enumerate(columns)}
        missing = [name for name in ("uuid", "timestamp") if name not in index]
        if missing:
            raise malformed_response(where(response), f"the HogQL result has no {', '.join(missing)} column")
        last: Optional[Mapping[str, Any]] = None
        emitted_at = int(time.time() * 1000)
        try:
            for last in self._records(rows, columns):
                # Emitted as messages: the CDK passes them through without wrapping each one
                # (a measurable share of the CPU at a million events; no transform applies).
                yield AirbyteMessage(type=Type.RECORD, record=AirbyteRecordMessage(stream=self.name, data=last, emitted_at=emitted_at))
        except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError) as error:
            raise malformed_response(where(response), f"a row after uuid {last and last.get('uuid')} cannot be read ({type(error).__name__}: {error})")
        full = len(rows) >= self.page_size or bool(body.get("hasMore"))
        self._advance(stream_slice, last, full, len(rows))

    @staticmethod
    def _records(rows: List[List[Any]], columns: List[str]) -> Iterator[Dict[str, Any]]:
        """HogQL rows → records: `properties` parsed (the API sends a JSON string), timestamps
        in UTC. This loop runs once per event: keep it lean."""
        loads, normalise = orjson.loads, to_utc_iso
        for index, row in enumerate(rows):
            rows[index] = None  # type: ignore[call-overload]  # free each row once read: a page is ~50 MB
            record = dict(zip(columns, row))
            properties = record.get("properties")
            if properties.__class__ is str:
                record["properties"] = loads(properties) if properties else {}
            timestamp = record["timestamp"]
            if len(timestamp) != 27 or timestamp[-1] != "Z":  # already canonical UTC: the common case
                record["timestamp"] = normalise(timestamp)
            created_at = record.get("created_at")
            if created_at and (len(created_at) != 27 or created_at[-1] != "Z"):
                record["created_at"] = normalise(created_at)
            yield record

    def _advance(self, stream_slice: Mapping[str, Any], last: Optional[Mapping[str, Any]], full: bool, rows: int) -> None:
        """Move the keyset position after a page; size the next window from the density seen."""
        state = self._state
        at_last = KeysetPosition(parse_timestamp(last["timestamp"]), _response_uuid(last["uuid"], f"POST /api/projects/{self.config.project_id}/query/")) if last else None
        if stream_slice["phase"] == "sweep":
            if full and at_last:
                self._state = replace(state, sweep=replace(state.sweep, position=at_last))
            else:
                self._state = replace(state, sweep=None)
            return
        if full and at_last:
            self._state = replace(state, position=at_last)
            self._window = self._next_window(at_last.timestamp - stream_slice["start"], rows)
        else:
            self._state = replace(state, position=KeysetPosition(stream_slice["end"]))
            self._window = self._next_window(stream_slice["end"] - stream_slice["start"], rows)

    def _next_window(self, span: timedelta, rows: int) -> timedelta:
        """A window expected to hold ~80% of a page, changing at most 4x at a time."""
        current = self._window.total_seconds()
        if rows == 0:
            proposed = current * 4
        else:
            proposed = max(span.total_seconds(), settings.EVENTS_MIN_WINDOW.total_seconds()) * 0.8 * self.page_size / rows
        proposed = min(max(proposed, current / 4), current * 4)
        low, high = settings.EVENTS_MIN_WINDOW.total_seconds(), settings.EVENTS_MAX_WINDOW.total_seconds()
        return timedelta(seconds=min(max(proposed, low), high))
