"""The events export plan: a pure state machine over plain data (no HTTP, no Airbyte).

Given the state and the page just read, it says which HogQL page to ask for next, or that the
sync is done (docs/posthog-api.md § 4.2, § 6):

- The range from the position (first sync: anchor_date) to `upper` (now minus the ingestion
  lag) is planned from the data: one aggregate counts the events per hour, and the hours are
  packed into windows of about eight pages (no query is spent on empty months). A window is
  read in keyset pages on `(timestamp, uuid)`: a full page continues the window after its last
  row, a short page ends it.
- PostHog's execution limit (10 s; a 504, docs/posthog-api.md § 13) splits the window in half,
  down to a single timestamp, then halves the page; a sweep narrows its range the same way.
- Late events: `created_at` is PostHog's ingestion time. The state keeps an ingestion watermark
  `ingested_through`: every event at or before `position` and ingested at or before it has been
  delivered. An incremental sync first sweeps `lookback` before the position for events
  ingested after the old watermark, then reads forward; the main pass leaves events ingested
  after the new watermark to the next sync's sweep, so each late event is delivered once.
- Every state the plan passes through is a valid place to resume: everything it claims was
  delivered, was.

`EventsPlan.begin(...)` starts a sync; `plan.next_query()` is the next query to send (a
`CountQuery` to plan windows, a `PageQuery`, or None: done); `after_counts`, `after_page` and
`after_timeout` are the plan once its answer came back.
"""

from __future__ import annotations

import uuid as uuid_module
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

from source_posthog import settings
from source_posthog.api.hogql import KeysetPosition, created_minutes_count_query, events_count_query, events_page_query
from source_posthog.api.timestamps import parse_timestamp, state_timestamp, utc_iso

MICROSECOND = timedelta(microseconds=1)
HOUR = timedelta(hours=1)
MAIN, SWEEP, RECHECK = "main", "sweep", "recheck"
MINUTE = timedelta(minutes=1)
# Windows of at most ~0.9 page, counted per hour and, inside busy hours, per minute: each window is
# one query (a short page), and windows do not depend on each other, so two can be in flight. An
# hour or minute of more than a window is a window of its own, read in keyset pages.
WINDOW_FILL = 0.9
COUNT_ROWS_MAX = 50_000  # PostHog's cap on returned rows (§ 4.2): ~5.7 years of busy hours


class InvalidEventsState(ValueError):
    """An incoming events state that cannot be trusted; the message says what is wrong."""


@dataclass(frozen=True)
class Sweep:
    """A late-event sweep in progress: keyset position and the watermark it sweeps after."""

    position: KeysetPosition
    ingested_after: datetime


@dataclass(frozen=True)
class Snapshot:
    """Events per `created_at` minute in (through - tolerance, through], among events with
    `timestamp >= floor`, counted before the reads that delivered them. An event PostHog had
    stamped but not yet made queryable is missing from its minute; when the next sync counts the
    same minutes again, a minute that changed is read again (Recheck)."""

    floor: datetime
    through: datetime
    counts: Tuple[Tuple[datetime, int], ...]

    def to_dict(self) -> Dict[str, Any]:
        return {"floor": utc_iso(self.floor), "through": utc_iso(self.through), "counts": {utc_iso(minute): n for minute, n in self.counts}}

    @classmethod
    def from_dict(cls, raw: Any) -> "Snapshot":
        raw = _mapping(raw)
        counts = _mapping(raw.get("counts") or {})
        parsed = []
        for minute, n in counts.items():
            if isinstance(n, bool) or not isinstance(n, int):
                raise InvalidEventsState(f"snapshot count for {str(minute)[:40]!r} is not a whole number")
            parsed.append((_timestamp({"minute": minute}, "minute"), n))
        return cls(_timestamp(raw, "floor"), _timestamp(raw, "through"), tuple(sorted(parsed)))


@dataclass(frozen=True)
class Recheck:
    """Minutes whose count changed since the last sync's snapshot, read again: `created_at` in
    each of `ranges`, `timestamp` from `floor` up to `until` (the last sync's position)."""

    floor: datetime
    until: KeysetPosition
    old: Optional[Snapshot] = None  # still to compare (the ranges are not known yet)
    ranges: Tuple[Tuple[datetime, datetime], ...] = ()
    position: Optional[KeysetPosition] = None  # keyset position inside ranges[0]

    def to_dict(self) -> Dict[str, Any]:
        return {
            "floor": utc_iso(self.floor),
            "until": {"timestamp": utc_iso(self.until.timestamp), "uuid": self.until.uuid},
            "old": self.old.to_dict() if self.old else None,
            "ranges": [[utc_iso(a), utc_iso(b)] for a, b in self.ranges],
            "position": {"timestamp": utc_iso(self.position.timestamp), "uuid": self.position.uuid} if self.position else None,
        }

    @classmethod
    def from_dict(cls, raw: Any) -> "Recheck":
        raw = _mapping(raw)
        until = _mapping(raw.get("until"))
        ranges = raw.get("ranges") or []
        if not isinstance(ranges, list) or not all(isinstance(r, list) and len(r) == 2 for r in ranges):
            raise InvalidEventsState("'recheck.ranges' must be a list of [from, to] pairs")
        position = _mapping(raw["position"]) if raw.get("position") else None
        return cls(
            _timestamp(raw, "floor"),
            KeysetPosition(_timestamp(until, "timestamp"), _uuid_or_none(until.get("uuid"))),
            Snapshot.from_dict(raw["old"]) if raw.get("old") else None,
            tuple((_timestamp({"t": a}, "t"), _timestamp({"t": b}, "t")) for a, b in ranges),
            KeysetPosition(_timestamp(position, "timestamp"), _uuid_or_none(position.get("uuid"))) if position else None,
        )


@dataclass(frozen=True)
class EventsState:
    position: KeysetPosition
    ingested_through: Optional[datetime] = None
    sweep: Optional[Sweep] = None
    snapshot: Optional[Snapshot] = None
    recheck: Optional[Recheck] = None

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
        if self.snapshot is not None:
            state["snapshot"] = self.snapshot.to_dict()
        if self.recheck is not None:
            state["recheck"] = self.recheck.to_dict()
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
        snapshot = Snapshot.from_dict(value["snapshot"]) if value.get("snapshot") else None
        recheck = Recheck.from_dict(value["recheck"]) if value.get("recheck") else None
        return cls(position, ingested_through, sweep, snapshot, recheck)


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
class CountQuery:
    """Events per hour (or per minute, inside hours of more than a window) over [start, end):
    the data the main pass plans its windows from."""

    start: datetime
    end: datetime
    ingested_through: Optional[datetime]
    limit: int = COUNT_ROWS_MAX
    unit: str = "hour"

    def hogql(self) -> str:
        return events_count_query(self.start, self.end, self.ingested_through, self.limit, self.unit)

    @property
    def bucket(self) -> timedelta:
        return HOUR if self.unit == "hour" else MINUTE


@dataclass(frozen=True)
class MinuteCountQuery:
    """Events per `created_at` minute in (after, through] with `timestamp >= floor`: a snapshot
    of this sync's watermark (`purpose` "snapshot"), or the last one counted again ("compare")."""

    purpose: str
    floor: datetime
    after: datetime
    through: datetime
    limit: int = COUNT_ROWS_MAX

    def hogql(self) -> str:
        return created_minutes_count_query(self.floor, self.after, self.through, self.limit)


@dataclass(frozen=True)
class Page:
    """What a page read told the plan: how many rows, the last `(timestamp, uuid)`, and whether
    PostHog may hold more in the same window (a full page, or `hasMore`)."""

    rows: int
    last: Optional[KeysetPosition]
    full: bool


@dataclass(frozen=True)
class Window:
    """A time range of the main pass, read in keyset pages until a short one; `rows` is what
    the hourly counts promised (None once a timeout has split it)."""

    start: datetime
    end: datetime
    rows: Optional[int]


class QueryTooSlow(Exception):
    """PostHog's execution limit is hit even for the smallest window and page."""


@dataclass(frozen=True)
class EventsPlan:
    state: EventsState
    upper: datetime
    page_size: int
    # The main pass's upper bound on created_at (None: unbounded, when no sweep will follow).
    main_ingested_through: Optional[datetime] = None
    # The main pass's windows still to read (the first is the current one); () = plan them next.
    windows: Tuple[Window, ...] = ()
    # Hourly counts waiting for the minute counts of their busy hours: (buckets, end).
    counted: Optional[Tuple[Tuple[Tuple[datetime, int], ...], datetime]] = None
    # A sweep (or recheck) narrowed after a timeout reads [its position, + sweep_span) at a time.
    sweep_span: Optional[timedelta] = None
    # How long after `created_at` an event may still become queryable (0: not checked).
    tolerance: timedelta = timedelta(0)
    lookback: timedelta = timedelta(0)

    @classmethod
    def begin(
        cls,
        state: Optional[EventsState],
        anchor: datetime,
        upper: datetime,
        page_size: int,
        lookback: timedelta,
        incremental: bool,
        tolerance: timedelta = timedelta(0),
    ) -> "EventsPlan":
        sweeping = incremental and lookback > timedelta(0)
        if not incremental or state is None:
            state = EventsState(KeysetPosition(anchor), ingested_through=upper)
        elif state.sweep is None and state.recheck is None and state.ingested_through is not None and state.ingested_through < upper:
            # A new sync: sweep for late arrivals, and recheck the minutes of the last watermark.
            old, through = state.snapshot, state.ingested_through
            sweep = Sweep(KeysetPosition(state.position.timestamp - lookback), through) if sweeping else None
            recheck = Recheck(old.floor, state.position, old) if old is not None and tolerance > timedelta(0) else None
            state = replace(state, sweep=sweep, recheck=recheck, snapshot=None, ingested_through=upper)
        elif state.sweep is None and state.recheck is None:
            state = replace(state, ingested_through=max(upper, state.ingested_through or upper))
        if not incremental or tolerance <= timedelta(0):
            state = replace(state, snapshot=None, recheck=None)
        # With sweeps on, the main pass leaves events ingested after the watermark to the next
        # sync's sweep; otherwise an event ingested during the lag would be read twice.
        main_through = state.ingested_through if sweeping else None
        return cls(state, upper, page_size, main_ingested_through=main_through, tolerance=tolerance if incremental else timedelta(0), lookback=lookback)

    def next_query(self) -> Optional[Union[PageQuery, CountQuery, MinuteCountQuery]]:
        state = self.state
        if self.tolerance and state.snapshot is None:
            # Before any read: this sync's watermark minutes as they are now.
            through = state.ingested_through
            return MinuteCountQuery("snapshot", through - self.tolerance - self.lookback, through - self.tolerance, through)
        if state.recheck is not None:
            recheck = state.recheck
            if recheck.old is not None:
                old = recheck.old
                return MinuteCountQuery("compare", old.floor, old.through - self.tolerance, old.through)
            if recheck.ranges:
                low, high = recheck.ranges[0]
                start = recheck.position.timestamp if recheck.position else recheck.floor
                end = recheck.until.timestamp + MICROSECOND if recheck.until.uuid else recheck.until.timestamp
                if self.sweep_span is not None:
                    end = min(end, start + self.sweep_span)
                return PageQuery(RECHECK, start, end, recheck.position, recheck.until, low - MICROSECOND, high - MICROSECOND, self.page_size)
        if state.sweep is not None:
            # Up to and including the position: the main pass reads what comes after it.
            position, start = state.position, state.sweep.position.timestamp
            end = position.timestamp + MICROSECOND if position.uuid else position.timestamp
            if self.sweep_span is not None:
                end = min(end, start + self.sweep_span)
            return PageQuery(SWEEP, start, end, state.sweep.position, position, state.sweep.ingested_after, state.ingested_through, self.page_size)
        if state.position.timestamp >= self.upper:
            return None
        if self.counted is not None:
            buckets, end = self.counted
            busy = [hour for hour, n in buckets if self._busy(n)]
            return CountQuery(max(busy[0], state.position.timestamp), min(busy[-1] + HOUR, end), self.main_ingested_through, unit="minute")
        if not self.windows:
            return CountQuery(state.position.timestamp, self.upper, self.main_ingested_through)
        return PageQuery(MAIN, state.position.timestamp, self.windows[0].end, state.position, None, None, self.main_ingested_through, self.page_size)

    def after_counts(self, query: CountQuery, buckets: Sequence[Tuple[datetime, int]]) -> "EventsPlan":
        """Windows of at most WINDOW_FILL of a page, cut at hour (or minute) boundaries. Busy
        hours are counted again per minute first. A result of `query.limit` buckets
        may be cut short: the windows then end after its last bucket, and the rest is counted
        again when the position gets there. No events at all: nothing to read."""
        buckets = tuple((bucket, n) for bucket, n in buckets if n > 0)
        end = query.end if len(buckets) < query.limit else min(query.end, buckets[-1][0] + query.bucket)
        if query.unit == "hour":
            if any(self._busy(n) for _, n in buckets):
                return replace(self, counted=(buckets, end))
            return self._planned(buckets, query.start, end)
        hours, hours_end = self.counted
        minutes_end = end  # the busy range, or the last minute counted when the result was cut
        merged = [(hour, n) for hour, n in hours if hour + HOUR <= query.start] + list(buckets)
        if minutes_end >= query.end:
            merged += [(hour, n) for hour, n in hours if hour >= query.end]
            minutes_end = hours_end
        return replace(self._planned(tuple(merged), self.state.position.timestamp, minutes_end), counted=None)

    def _window_rows(self) -> int:
        return max(int(WINDOW_FILL * self.page_size), 1)

    def _busy(self, hour_count: int) -> bool:
        """An hour too coarse to pack windows from: more than a quarter of a window (packing
        whole hours would then leave windows far from full)."""
        return hour_count > self._window_rows() / 4

    def _planned(self, buckets: Sequence[Tuple[datetime, int]], start: datetime, end: datetime) -> "EventsPlan":
        windows = pack_windows(buckets, start, end, self._window_rows())
        if not windows:
            return replace(self, state=replace(self.state, position=KeysetPosition(end)), counted=None)
        return replace(self, windows=windows, counted=None)

    def main_rows_planned(self) -> int:
        """The events the main pass's windows still to read hold, as counted (after a count)."""
        return sum(window.rows or 0 for window in self.windows)

    def prefetchable(self) -> Optional[PageQuery]:
        """The first page of the window after the current one: it does not depend on the page
        being read now, so it may be asked for while the current one is being read."""
        if self.state.sweep is not None or self.state.recheck is not None or len(self.windows) < 2:
            return None
        following = self.windows[1]
        return PageQuery(MAIN, following.start, following.end, KeysetPosition(following.start), None, None, self.main_ingested_through, self.page_size)

    def after_minutes(self, query: MinuteCountQuery, minutes: Sequence[Tuple[datetime, int]]) -> "EventsPlan":
        counts = tuple(sorted((minute, n) for minute, n in minutes if n))
        state = self.state
        if query.purpose == "snapshot":
            return replace(self, state=replace(state, snapshot=Snapshot(query.floor, query.through, counts)))
        old = dict(state.recheck.old.counts)
        now = dict(counts)
        changed = sorted(minute for minute in set(old) | set(now) if old.get(minute, 0) != now.get(minute, 0))
        ranges = []
        for minute in changed:  # contiguous minutes become one range
            if ranges and ranges[-1][1] == minute:
                ranges[-1] = (ranges[-1][0], minute + MINUTE)
            else:
                ranges.append((minute, minute + MINUTE))
        recheck = replace(state.recheck, old=None, ranges=tuple(ranges)) if ranges else None
        return replace(self, state=replace(state, recheck=recheck))

    def after_page(self, query: PageQuery, page: Page) -> "EventsPlan":
        """The plan once `page`, the answer to `query`, has been delivered."""
        state = self.state
        more = page.full and page.last is not None
        if query.phase == RECHECK:
            recheck = state.recheck
            if more:
                return replace(self, state=replace(state, recheck=replace(recheck, position=page.last)))
            final_end = recheck.until.timestamp + MICROSECOND if recheck.until.uuid else recheck.until.timestamp
            if self.sweep_span is not None and query.end < final_end:
                return replace(self, state=replace(state, recheck=replace(recheck, position=KeysetPosition(query.end))))
            rest = recheck.ranges[1:]
            return replace(self, state=replace(state, recheck=replace(recheck, ranges=rest, position=None) if rest else None), sweep_span=None)
        if query.phase == SWEEP:
            if more:
                return replace(self, state=replace(state, sweep=replace(state.sweep, position=page.last)))
            if self.sweep_span is not None and query.end < self._sweep_end():
                return replace(self, state=replace(state, sweep=replace(state.sweep, position=KeysetPosition(query.end))))
            return replace(self, state=replace(state, sweep=None), sweep_span=None)
        if more:
            return replace(self, state=replace(state, position=page.last))
        return replace(self, state=replace(state, position=KeysetPosition(query.end)), windows=self.windows[1:])

    def after_timeout(self, query: PageQuery) -> "EventsPlan":
        """PostHog's execution limit was hit: the same rows again, over half the time range; at
        the smallest range (one timestamp), with half the page. Raises QueryTooSlow at the end."""
        span = query.end - query.start
        if span > MICROSECOND:
            half = max(span / 2, MICROSECOND)
            if query.phase in (SWEEP, RECHECK):
                return replace(self, sweep_span=half)
            current = self.windows[0]
            middle = query.start + half
            return replace(self, windows=(Window(query.start, middle, None), Window(middle, current.end, None), *self.windows[1:]))
        if self.page_size > settings.EVENTS_PAGE_SIZE_MIN:
            return replace(self, page_size=max(self.page_size // 2, settings.EVENTS_PAGE_SIZE_MIN))
        raise QueryTooSlow(f"a page of {self.page_size} events at {utc_iso(query.start)} still exceeds PostHog's query time limit")

    def _sweep_end(self) -> datetime:
        position = self.state.position
        return position.timestamp + MICROSECOND if position.uuid else position.timestamp


def pack_windows(hours: Sequence[Tuple[datetime, int]], start: datetime, end: datetime, target_rows: int) -> Tuple[Window, ...]:
    """Contiguous windows over [start, end), cut at hour starts, each holding at most
    `target_rows` events unless one hour alone holds more (it is then a window of its own, read
    in several keyset pages). Consecutive windows together hold more than `target_rows`, so
    there are at most 2N/target_rows + 1 of them."""
    windows = []
    window_start, rows = start, 0
    for hour, count in hours:
        if count <= 0 or hour >= end:
            continue
        cut = max(hour, start)
        if rows and rows + count > target_rows and cut > window_start:
            windows.append(Window(window_start, cut, rows))
            window_start, rows = cut, 0
        rows += count
    if rows:
        windows.append(Window(window_start, end, rows))
    return tuple(windows)


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
    return state_timestamp(state, key, InvalidEventsState)


def _uuid_or_none(value: Any) -> Optional[str]:
    if value is None:
        return None
    try:
        return str(uuid_module.UUID(str(value)))
    except ValueError:
        raise InvalidEventsState(f"'uuid' = {str(value)[:40]!r} is not a UUID")
