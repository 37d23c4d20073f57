"""The sessions read as a pure plan (no HTTP, no Airbyte): by ingestion time, planned like events.

A session is an aggregate of its events, so it changes whenever one of its events arrives, and a
late event (an old `timestamp`, ingested now) can extend or create a session that started days
ago. PostHog's `sessions` table (v2 and v3) carries `max_inserted_at`, the latest ingestion time of
the session's events (docs/posthog-api.md § 20.2): every change to a session moves it. So a sync
reads the sessions whose `max_inserted_at` lies in a band (after, through]:

- `through` is this sync's watermark, now minus the ingestion lag; a session that changes later
  has a later `max_inserted_at` and is the next sync's;
- `after` is the last sync's watermark minus `events_visibility_tolerance_minutes`: a row PostHog
  wrote before the watermark but showed later (replica lag) is still read. The sessions of that
  band are read again (emitted twice, with the same `session_id`); nothing else is;
- a filter on `max_inserted_at` is not pushed into PostHog's scan (only `$start_timestamp` is,
  with a 3-day buffer), so every query also bounds `$start_timestamp`: from the last watermark
  minus `events_lookback_window_days` and PostHog's 24-hour cap on a session (the oldest session a
  late event within the lookback can belong to), on the first sync from `anchor_date`.

Planned like events (`events_plan.pack_windows`): one aggregate counts the band's sessions per hour
of `$start_timestamp`, the hours are packed into windows of at most 90% of a page, and each window
is read in keyset pages on (`$start_timestamp`, `session_id`): no query on an empty range, however
early `anchor_date` is. PostHog's execution limit (504) halves the window, then the page.

State: in a pass `{"inserted_after", "inserted_through", "start_floor", "position"}`, where every
session of the band up to `position` has been delivered; after it `{"inserted_through"}`.
"""

from __future__ import annotations

import uuid as uuid_module
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

from source_posthog.api.events_plan import COUNT_ROWS_MAX, HOUR, MICROSECOND, WINDOW_FILL, Window, pack_windows
from source_posthog.api.hogql import SessionPosition, sessions_count_query, sessions_page_query
from source_posthog.api.timestamps import state_timestamp, utc_iso

SESSION_MAX_LENGTH = timedelta(hours=24)  # PostHog ends a session after 24 hours (docs/posthog-api.md § 11.3)
PAGE_SIZE_MIN = 500


class InvalidSessionsState(ValueError):
    """An incoming sessions state that cannot be trusted; the message says what is wrong."""


@dataclass(frozen=True)
class SessionsState:
    """A pass over the band (inserted_after, inserted_through] of `max_inserted_at`, for sessions
    starting at or after `start_floor`; `position` is the last (start, session_id) delivered."""

    inserted_through: Optional[datetime]  # None: this sync's watermark, set when it begins
    inserted_after: Optional[datetime] = None  # None: every session (a first sync, a full refresh)
    start_floor: Optional[datetime] = None
    position: Optional[SessionPosition] = None
    in_pass: bool = True

    def to_dict(self) -> Dict[str, Any]:
        through = utc_iso(self.inserted_through) if self.inserted_through else None
        if not self.in_pass:
            return {"inserted_through": through}
        return {
            "inserted_after": utc_iso(self.inserted_after) if self.inserted_after else None,
            "inserted_through": through,
            "start_floor": utc_iso(self.start_floor) if self.start_floor else None,
            "position": {"start": utc_iso(self.position.start), "session_id": self.position.session_id} if self.position else None,
        }

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> "SessionsState":
        """This connector's state since 0.3.0, or the earlier `{"$start_timestamp", "session_id"}`
        (everything starting before it was delivered once settled): that becomes a pass over every
        ingestion time from that start, so nothing is lost. Raises InvalidSessionsState."""
        if "inserted_through" not in value and "$start_timestamp" in value:
            start = _timestamp(value, "$start_timestamp")
            return cls(inserted_through=None, inserted_after=None, start_floor=start, position=None, in_pass=True)
        if "start_floor" not in value and "position" not in value:
            return cls(inserted_through=_timestamp(value, "inserted_through"), in_pass=False)
        # in a pass: a null watermark is an earlier release's position, read up to this sync's
        through = _timestamp(value, "inserted_through") if value.get("inserted_through") is not None else None
        after = _timestamp(value, "inserted_after") if value.get("inserted_after") is not None else None
        floor = _timestamp(value, "start_floor") if value.get("start_floor") is not None else None
        raw = value.get("position")
        position = None
        if raw is not None:
            if not isinstance(raw, Mapping):
                raise InvalidSessionsState(f"'position' must be an object, got {type(raw).__name__}")
            position = SessionPosition(_timestamp(raw, "start"), _session_id(raw.get("session_id")))
        if after is not None and through is not None and after > through:
            raise InvalidSessionsState(f"'inserted_after' {utc_iso(after)} is after 'inserted_through' {utc_iso(through)}")
        return cls(inserted_through=through, inserted_after=after, start_floor=floor, position=position, in_pass=True)


@dataclass(frozen=True)
class SessionsCount:
    start: datetime
    end: datetime
    inserted_after: Optional[datetime]
    inserted_through: datetime
    limit: int = COUNT_ROWS_MAX

    def hogql(self) -> str:
        return sessions_count_query(self.start, self.end, self.inserted_after, self.inserted_through, self.limit)


@dataclass(frozen=True)
class SessionsPage:
    after: SessionPosition
    before: datetime
    inserted_after: Optional[datetime]
    inserted_through: datetime
    limit: int

    def hogql(self) -> str:
        return sessions_page_query(self.after, self.before, self.limit, self.inserted_after, self.inserted_through)


class SessionsQueryTooSlow(Exception):
    """PostHog's execution limit is hit even for the smallest window and page."""


@dataclass(frozen=True)
class SessionsPlan:
    state: SessionsState
    upper: datetime  # sessions start before now
    page_size: int
    windows: Tuple[Window, ...] = ()
    counted: bool = False  # the windows from the current position are planned

    @classmethod
    def begin(
        cls,
        state: Optional[SessionsState],
        anchor: datetime,
        now: datetime,
        lag: timedelta,
        lookback: timedelta,
        tolerance: timedelta,
        page_size: int,
        incremental: bool,
    ) -> "SessionsPlan":
        through = now - lag
        if not incremental or state is None:
            state = SessionsState(inserted_through=through, inserted_after=None, start_floor=anchor)
        elif not state.in_pass:
            after = min(state.inserted_through - tolerance, through)
            floor = max(after - lookback - SESSION_MAX_LENGTH, anchor)
            state = SessionsState(inserted_through=max(through, state.inserted_through), inserted_after=after, start_floor=floor)
        elif state.inserted_through is None:  # an earlier release's position: this sync's watermark
            state = replace(state, inserted_through=through)
        return cls(state, now, page_size)

    def _from(self) -> SessionPosition:
        state = self.state
        return state.position or SessionPosition(state.start_floor or self.upper)

    def next_query(self) -> Optional[Union[SessionsCount, SessionsPage]]:
        state = self.state
        if not state.in_pass:
            return None
        start = self._from().start
        if not self.counted:
            return SessionsCount(start, self.upper, state.inserted_after, state.inserted_through)
        if not self.windows:
            return None
        window = self.windows[0]
        return SessionsPage(self._from(), window.end, state.inserted_after, state.inserted_through, self.page_size)

    def after_counts(self, query: SessionsCount, hours: Sequence[Tuple[datetime, int]]) -> "SessionsPlan":
        """Windows of at most WINDOW_FILL of a page, cut at hour starts; none at all: the pass is done.
        A result of `query.limit` buckets may be cut short: the windows end after its last hour, and the
        rest is counted again when the position gets there."""
        hours = tuple((hour, n) for hour, n in hours if n > 0)
        end = query.end if len(hours) < query.limit else min(query.end, hours[-1][0] + HOUR)
        windows = pack_windows(hours, query.start, end, max(int(WINDOW_FILL * self.page_size), 1))
        if not windows:
            return self._done() if end >= self.upper else replace(self, state=replace(self.state, position=SessionPosition(end)), counted=False)
        return replace(self, windows=windows, counted=True)

    def estimated_rows(self) -> int:
        return sum(window.rows or 0 for window in self.windows)

    def after_page(self, query: SessionsPage, rows: int, last: Optional[SessionPosition]) -> "SessionsPlan":
        """The plan once a page of `rows` sessions, the last one `last`, has been delivered."""
        if rows >= query.limit and last is not None:
            return replace(self, state=replace(self.state, position=last))  # a full page: more in this window
        rest = self.windows[1:]
        window_end = self.windows[0].end
        if not rest:
            if window_end >= self.upper:
                return self._done()
            return replace(self, state=replace(self.state, position=SessionPosition(window_end)), windows=(), counted=False)
        return replace(self, state=replace(self.state, position=SessionPosition(window_end)), windows=rest)

    def after_timeout(self, query: SessionsPage) -> "SessionsPlan":
        """PostHog's execution limit: the same sessions over half the window; at one instant, half the page."""
        start, window = query.after.start, self.windows[0]
        span = window.end - start
        if span > MICROSECOND:
            middle = start + max(span / 2, MICROSECOND)
            return replace(self, windows=(Window(start, middle, None), Window(middle, window.end, None), *self.windows[1:]))
        if self.page_size > PAGE_SIZE_MIN:
            return replace(self, page_size=max(self.page_size // 2, PAGE_SIZE_MIN))
        raise SessionsQueryTooSlow(f"a page of {self.page_size} sessions starting at {utc_iso(start)} still exceeds PostHog's query time limit")

    def _done(self) -> "SessionsPlan":
        return replace(self, state=SessionsState(inserted_through=self.state.inserted_through, in_pass=False), windows=(), counted=False)


def _timestamp(value: Mapping[str, Any], key: str) -> datetime:
    return state_timestamp(value, key, InvalidSessionsState)


def _session_id(raw: Any) -> Optional[str]:
    if raw is None:
        return None
    try:
        return str(uuid_module.UUID(str(raw)))
    except ValueError:
        raise InvalidSessionsState(f"'position.session_id' must be null or a session UUID, got {str(raw)[:40]!r}")


__all__ = ["SessionsPlan", "SessionsState", "SessionsCount", "SessionsPage", "InvalidSessionsState", "SessionsQueryTooSlow"]
