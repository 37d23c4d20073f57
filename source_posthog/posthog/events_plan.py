"""The events export plan: a pure state machine over plain data (no HTTP, no Airbyte).

Given the state and the page just read, it says which HogQL page to ask for next, or that the
sync is done (docs/posthog-api.md § 4.2, § 6):

- The range from the position (first sync: anchor_date) to `upper` (now minus the ingestion
  lag) is cut into time windows. A window is read in keyset pages on `(timestamp, uuid)`: a
  full page continues the window after its last row, a short page ends it. The next window is
  sized from the density just seen, so most windows take one page.
- Late events: `created_at` is PostHog's ingestion time. The state keeps an ingestion watermark
  `ingested_through`: every event at or before `position` and ingested at or before it has been
  delivered. An incremental sync first sweeps `lookback` before the position for events
  ingested after the old watermark, then reads forward; the main pass leaves events ingested
  after the new watermark to the next sync's sweep, so each late event is delivered once.
- Every state the plan passes through is a valid place to resume: everything it claims was
  delivered, was.

`EventsPlan.begin(...)` starts a sync, `plan.next_query()` is the page to read (None: done),
`plan.after_page(query, page)` is the plan once that page has been delivered.
"""

from __future__ import annotations

import uuid as uuid_module
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Dict, Mapping, Optional

from source_posthog import settings
from source_posthog.posthog.hogql import KeysetPosition, events_page_query
from source_posthog.posthog.timestamps import parse_timestamp, utc_iso

MICROSECOND = timedelta(microseconds=1)
MAIN, SWEEP = "main", "sweep"


class InvalidEventsState(ValueError):
    """An incoming events state that cannot be trusted; the message says what is wrong."""


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
    def from_dict(cls, value: Any, project_id: int) -> Optional["EventsState"]:
        """Our own state, or the official Airbyte connector's (`{"<project_id>": {"timestamp"}}`
        or `{"timestamp"}`). Raises InvalidEventsState."""
        value = _mapping(value)
        if not value:
            return None
        if "timestamp" not in value:
            nested = value.get(str(project_id))
            if nested is None:
                raise InvalidEventsState(f"has neither 'timestamp' nor an entry for project {project_id} (keys: {', '.join(sorted(value))})")
            return cls.from_dict(_mapping(nested), project_id)
        position = KeysetPosition(_timestamp(value, "timestamp"), _uuid_or_none(value.get("uuid")))
        ingested_through = _timestamp(value, "ingested_through") if value.get("ingested_through") is not None else None
        sweep = None
        if value.get("sweep"):
            raw = _mapping(value["sweep"])
            sweep = Sweep(KeysetPosition(_timestamp(raw, "timestamp"), _uuid_or_none(raw.get("uuid"))), _timestamp(raw, "ingested_after"))
        return cls(position, ingested_through, sweep)


@dataclass(frozen=True)
class PageQuery:
    """One keyset page: events in [start, end) after `after` (and up to `until`), with
    `created_at` in (ingested_after, ingested_through]."""

    phase: str
    start: datetime
    end: datetime
    after: Optional[KeysetPosition]
    until: Optional[KeysetPosition]
    ingested_after: Optional[datetime]
    ingested_through: Optional[datetime]
    limit: int

    def hogql(self) -> str:
        return events_page_query(
            start=self.start,
            end=self.end,
            after=self.after,
            until=self.until,
            limit=self.limit,
            ingested_after=self.ingested_after,
            ingested_through=self.ingested_through,
        )


@dataclass(frozen=True)
class Page:
    """What a page read told the plan: how many rows, the last `(timestamp, uuid)`, and whether
    PostHog may hold more in the same window (a full page, or `hasMore`)."""

    rows: int
    last: Optional[KeysetPosition]
    full: bool


@dataclass(frozen=True)
class EventsPlan:
    state: EventsState
    upper: datetime
    page_size: int
    window: timedelta = settings.EVENTS_FIRST_WINDOW
    # The main pass's upper bound on created_at (None: unbounded, when no sweep will follow).
    main_ingested_through: Optional[datetime] = None

    @classmethod
    def begin(
        cls,
        state: Optional[EventsState],
        anchor: datetime,
        upper: datetime,
        page_size: int,
        lookback: timedelta,
        incremental: bool,
    ) -> "EventsPlan":
        sweeping = incremental and lookback > timedelta(0)
        if not incremental or state is None:
            state = EventsState(KeysetPosition(anchor), ingested_through=upper)
        elif state.sweep is None and state.ingested_through is not None and sweeping and state.ingested_through < upper:
            start = KeysetPosition(state.position.timestamp - lookback)
            state = replace(state, sweep=Sweep(start, state.ingested_through), ingested_through=upper)
        elif state.sweep is None:
            state = replace(state, ingested_through=max(upper, state.ingested_through or upper))
        # With sweeps on, the main pass leaves events ingested after the watermark to the next
        # sync's sweep; otherwise an event ingested during the lag would be read twice.
        return cls(state, upper, page_size, main_ingested_through=state.ingested_through if sweeping else None)

    def next_query(self) -> Optional[PageQuery]:
        state = self.state
        if state.sweep is not None:
            # Up to and including the position: the main pass reads what comes after it.
            position = state.position
            end = position.timestamp + MICROSECOND if position.uuid else position.timestamp
            return PageQuery(SWEEP, state.sweep.position.timestamp, end, state.sweep.position, position, state.sweep.ingested_after, state.ingested_through, self.page_size)
        if state.position.timestamp >= self.upper:
            return None
        start = state.position.timestamp
        end = min(start + self.window, self.upper)
        return PageQuery(MAIN, start, end, state.position, None, None, self.main_ingested_through, self.page_size)

    def after_page(self, query: PageQuery, page: Page) -> "EventsPlan":
        """The plan once `page`, the answer to `query`, has been delivered."""
        state = self.state
        more = page.full and page.last is not None
        if query.phase == SWEEP:
            sweep = replace(state.sweep, position=page.last) if more else None
            return replace(self, state=replace(state, sweep=sweep))
        if more:
            return replace(self, state=replace(state, position=page.last), window=self._next_window(page.last.timestamp - query.start, page.rows))
        return replace(self, state=replace(state, position=KeysetPosition(query.end)), window=self._next_window(query.end - query.start, page.rows))

    def _next_window(self, span: timedelta, rows: int) -> timedelta:
        """A window expected to hold ~80% of a page, changing at most 4x at a time."""
        current = self.window.total_seconds()
        if rows == 0:
            proposed = current * 4
        else:
            proposed = max(span.total_seconds(), settings.EVENTS_MIN_WINDOW.total_seconds()) * 0.8 * self.page_size / rows
        proposed = min(max(proposed, current / 4), current * 4)
        low, high = settings.EVENTS_MIN_WINDOW.total_seconds(), settings.EVENTS_MAX_WINDOW.total_seconds()
        return timedelta(seconds=min(max(proposed, low), high))


def parse_position(timestamp: str, uuid: Any) -> KeysetPosition:
    """The last row of a page as a keyset position; ValueError if PostHog sent a non-UUID."""
    return KeysetPosition(parse_timestamp(timestamp), str(uuid_module.UUID(str(uuid))))


def _mapping(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidEventsState(f"expected an object, got {type(value).__name__}")
    return value


def _timestamp(state: Mapping[str, Any], key: str) -> datetime:
    value = state.get(key)
    if value is None:
        raise InvalidEventsState(f"has no '{key}' (keys: {', '.join(sorted(state)) or 'none'})")
    if not isinstance(value, str):
        raise InvalidEventsState(f"'{key}' must be an ISO-8601 timestamp string, got {type(value).__name__}")
    try:
        return parse_timestamp(value)
    except ValueError:
        raise InvalidEventsState(f"'{key}' = {value[:40]!r} is not an ISO-8601 timestamp")


def _uuid_or_none(value: Any) -> Optional[str]:
    if value is None:
        return None
    try:
        return str(uuid_module.UUID(str(value)))
    except ValueError:
        raise InvalidEventsState(f"'uuid' = {str(value)[:40]!r} is not a UUID")
