"""The sessions plan on its own (source_posthog/api/sessions_plan.py), against a simulated PostHog
of sessions: what changes after it was read (new, extended, created or moved by late events) is
delivered with its last values, kills resume, and empty history costs no query (issue #19)."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Dict, List, Optional, Tuple

import pytest

from source_posthog.api.hogql import SessionPosition
from source_posthog.api.sessions_plan import SessionsCount, SessionsPage, SessionsPlan, SessionsState

ANCHOR = datetime(2025, 1, 1, tzinfo=timezone.utc)
NOW = datetime(2025, 6, 1, 12, tzinfo=timezone.utc)
LAG = timedelta(minutes=2)
LOOKBACK = timedelta(days=7)
TOLERANCE = timedelta(minutes=30)


@dataclass(frozen=True)
class Session:
    id: str
    start: datetime
    end: datetime
    inserted: datetime  # max_inserted_at: the latest ingestion time of its events


def session_id(n: int) -> str:
    return f"0190f6a2-0000-7000-8000-{n:012x}"


class PostHog:
    """Sessions as PostHog's HogQL `sessions` table answers the plan's two queries."""

    def __init__(self, sessions: List[Session]) -> None:
        self.sessions: Dict[str, Session] = {s.id: s for s in sessions}
        self.queries = 0

    def matching(self, start: datetime, end: Optional[datetime], after: Optional[datetime], through: datetime) -> List[Session]:
        return sorted(
            (s for s in self.sessions.values() if s.start >= start and (end is None or s.start < end) and (after is None or s.inserted > after) and s.inserted <= through),
            key=lambda s: (s.start, s.id),
        )

    def answer(self, query: object) -> object:
        self.queries += 1
        if isinstance(query, SessionsCount):
            hours: Dict[datetime, int] = {}
            for s in self.matching(query.start, query.end, query.inserted_after, query.inserted_through):
                hour = s.start.replace(minute=0, second=0, microsecond=0)
                hours[hour] = hours.get(hour, 0) + 1
            return sorted(hours.items())[: query.limit]
        assert isinstance(query, SessionsPage)
        rows = [
            s for s in self.matching(query.after.start, query.before, query.inserted_after, query.inserted_through)
            if query.after.session_id is None or (s.start, s.id) > (query.after.start, query.after.session_id)
        ]
        return rows[: query.limit]


def run(plan: SessionsPlan, posthog: PostHog, kill_after: Optional[int] = None) -> Tuple[List[Session], SessionsPlan, List[dict]]:
    delivered: List[Session] = []
    states: List[dict] = []
    pages = 0
    while (query := plan.next_query()) is not None:
        answer = posthog.answer(query)
        if isinstance(query, SessionsCount):
            plan = plan.after_counts(query, answer)  # type: ignore[arg-type]
        else:
            rows: List[Session] = answer  # type: ignore[assignment]
            delivered += rows
            last = SessionPosition(rows[-1].start, rows[-1].id) if rows else None
            plan = plan.after_page(query, len(rows), last)
            pages += 1
        states.append(plan.state.to_dict())
        if kill_after is not None and pages >= kill_after:
            break
    return delivered, plan, states


def begin(state: Optional[SessionsState], now: datetime = NOW, page_size: int = 100, anchor: datetime = ANCHOR, incremental: bool = True) -> SessionsPlan:
    return SessionsPlan.begin(state, anchor, now, LAG, LOOKBACK, TOLERANCE, page_size, incremental)


def history(rng: random.Random, count: int, until: datetime = NOW - timedelta(hours=2), since: datetime = ANCHOR) -> List[Session]:
    sessions = []
    span = (until - since).total_seconds()
    for n in range(count):
        start = since + timedelta(seconds=rng.uniform(0, span))
        end = start + timedelta(minutes=rng.uniform(0, 90))
        sessions.append(Session(session_id(n), start, end, end + timedelta(seconds=rng.uniform(1, 60))))
    return sessions


def test_given_a_first_sync_then_every_session_ingested_by_the_watermark_is_delivered_once() -> None:
    posthog = PostHog(history(random.Random(1), 2_000))

    delivered, plan, _ = run(begin(None), posthog)

    assert sorted(s.id for s in delivered) == sorted(posthog.sessions)
    assert plan.next_query() is None and plan.state.to_dict() == {"inserted_through": "2025-06-01T11:58:00.000000Z"}


@pytest.mark.parametrize("seed", range(6))
def test_given_changes_after_a_sync_then_the_next_delivers_every_changed_session_with_its_last_values(seed: int) -> None:
    """New sessions; sessions extended (a later end, a later max_inserted_at); sessions created by
    late events (an old start, ingested now); a session whose start moved earlier by a late event."""
    rng = random.Random(seed)
    posthog = PostHog(history(rng, 1_500, since=NOW - timedelta(days=30)))
    _, first, _ = run(begin(None), posthog)
    later = NOW + timedelta(hours=3)

    changed: Dict[str, Session] = {}
    # A session changes when an event of it arrives: recent ones, and ones a late event (timestamp
    # within the lookback, ingested now) reaches; older sessions are beyond the lookback (documented).
    reachable = sorted((s for s in posthog.sessions.values() if s.start >= later - LOOKBACK), key=lambda s: s.id)
    for n, old in enumerate(rng.sample(reachable, 40)):
        if n % 2:
            changed[old.id] = replace(old, end=old.end + timedelta(minutes=5), inserted=later - timedelta(minutes=rng.uniform(5, 100)))
        else:
            changed[old.id] = replace(old, start=old.start - timedelta(minutes=3), inserted=later - timedelta(minutes=rng.uniform(5, 100)))
    for n in range(30):
        start = later - timedelta(days=rng.uniform(0, 6.5))  # late events up to the lookback old
        changed[session_id(10_000 + n)] = Session(session_id(10_000 + n), start, start + timedelta(minutes=3), later - timedelta(minutes=rng.uniform(3, 60)))
    posthog.sessions.update(changed)

    delivered, second, _ = run(begin(first.state, now=later), posthog)

    got = {s.id: s for s in delivered}
    assert not [sid for sid in changed if sid not in got], "a changed session was not delivered"
    assert all(got[sid] == changed[sid] for sid in changed), "a changed session was delivered with stale values"
    band = first.state.inserted_through - TOLERANCE
    unchanged_again = [s for s in delivered if s.id not in changed]
    assert all(s.inserted > band for s in unchanged_again), "only the tolerance band is read again"


@pytest.mark.parametrize("kill_after", [1, 2, 3, 5, 8])
def test_given_a_kill_after_any_page_when_resumed_from_its_state_then_nothing_is_lost(kill_after: int) -> None:
    posthog = PostHog(history(random.Random(7), 900))

    first_part, killed, states = run(begin(None, page_size=50), posthog, kill_after=kill_after)
    resumed_state = SessionsState.from_dict(states[-1])
    rest, final, _ = run(begin(resumed_state, page_size=50), posthog)

    assert {s.id for s in first_part} | {s.id for s in rest} == set(posthog.sessions)
    assert len(first_part) + len(rest) - len(posthog.sessions) <= 50, "at most the page in flight again"
    assert final.next_query() is None


def test_given_an_anchor_ten_years_before_the_data_then_empty_history_costs_no_query() -> None:
    sessions = [replace(s, start=s.start + timedelta(days=120), end=s.end + timedelta(days=120)) for s in history(random.Random(3), 1_200, until=NOW - timedelta(days=130))]
    posthog = PostHog(sessions)

    delivered, _, _ = run(begin(None, page_size=1_000, anchor=ANCHOR - timedelta(days=3650)), posthog)

    assert len(delivered) == 1_200
    assert posthog.queries <= 1 + 2 * 1_200 // 900 + 2, f"{posthog.queries} queries for two pages of sessions"


def test_given_the_state_of_an_earlier_release_then_it_is_read_as_a_pass_from_its_position_over_every_ingestion_time() -> None:
    state = SessionsState.from_dict({"$start_timestamp": "2025-05-01T00:00:00.000000Z", "session_id": None, "project_id": 2})
    posthog = PostHog(history(random.Random(4), 500))

    delivered, _, _ = run(begin(state), posthog)

    assert {s.id for s in delivered} == {s.id for s in posthog.sessions.values() if s.start >= datetime(2025, 5, 1, tzinfo=timezone.utc)}


def test_given_a_page_over_the_time_limit_then_the_window_halves_and_every_session_still_arrives() -> None:
    posthog = PostHog(history(random.Random(5), 400))
    plan = begin(None, page_size=100)
    delivered: List[Session] = []
    timeouts = 0
    while (query := plan.next_query()) is not None:
        if isinstance(query, SessionsPage) and timeouts < 3:
            timeouts += 1
            plan = plan.after_timeout(query)
            continue
        answer = posthog.answer(query)
        if isinstance(query, SessionsCount):
            plan = plan.after_counts(query, answer)  # type: ignore[arg-type]
        else:
            delivered += answer  # type: ignore[arg-type]
            plan = plan.after_page(query, len(answer), SessionPosition(answer[-1].start, answer[-1].id) if answer else None)  # type: ignore[index,arg-type]

    assert sorted(s.id for s in delivered) == sorted(posthog.sessions)


def test_given_a_session_written_before_the_watermark_but_shown_after_it_then_the_next_sync_delivers_it() -> None:
    """PostHog may show a row a little after its `_inserted_at` (replica lag): the next sync's band
    starts `events_visibility_tolerance_minutes` before the last watermark."""
    posthog = PostHog(history(random.Random(8), 300, since=NOW - timedelta(days=3)))
    hidden = Session(session_id(99_999), NOW - timedelta(hours=1), NOW - timedelta(minutes=40), NOW - LAG - timedelta(minutes=20))
    _, first, _ = run(begin(None), posthog)  # not yet shown to the first sync
    posthog.sessions[hidden.id] = hidden

    delivered, _, _ = run(begin(first.state, now=NOW + timedelta(hours=1)), posthog)

    assert hidden in delivered
    assert len(delivered) < 20, "only the tolerance band is read again"


def test_given_a_late_event_older_than_the_lookback_then_its_session_is_not_read_again() -> None:
    """The documented limit, as for events: a session is followed for `events_lookback_window_days`."""
    posthog = PostHog(history(random.Random(9), 300, since=NOW - timedelta(days=30)))
    _, first, _ = run(begin(None), posthog)
    old = min(posthog.sessions.values(), key=lambda s: s.start)
    posthog.sessions[old.id] = replace(old, inserted=NOW + timedelta(minutes=30))

    delivered, _, _ = run(begin(first.state, now=NOW + timedelta(hours=1)), posthog)

    assert old.id not in {s.id for s in delivered}
