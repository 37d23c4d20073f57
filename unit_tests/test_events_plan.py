"""The events plan on its own: no HTTP, no Airbyte.

Each page query the plan asks for is parsed and evaluated by the strict HogQL fake's evaluator
(`unit_tests/hogql_fake.parse_query`) over an in-memory event list, so these tests prove that the
plan and the HogQL text together lose nothing: randomized event sets (ties, empty ranges, bursts
larger than a page), page sizes, and a kill after every page with a partly delivered next page.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timedelta
from typing import Dict, List, Optional, Sequence, Tuple

import pytest

from source_posthog.posthog.events_plan import EventsPlan, EventsState, InvalidEventsState, Page, PageQuery
from source_posthog.posthog.hogql import KeysetPosition
from unit_tests.hogql_fake import Event, event_uuid, parse_query, utc

ANCHOR = utc("2025-05-01T00:00:00Z")
UPPER = utc("2025-06-01T00:00:00Z")
LOOKBACK = timedelta(days=7)


def serve(events: Sequence[Event], query: PageQuery, now: datetime) -> List[Event]:
    """What PostHog answers: the visible events matching the query's WHERE, ordered, LIMITed."""
    parsed = parse_query(query.hogql())
    matching = sorted((e for e in events if e.created_at <= now and parsed.predicate(e)), key=lambda e: (e.timestamp, e.uuid))
    return matching[: parsed.limit]


def page_of(rows: List[Event], limit: int) -> Page:
    last = KeysetPosition(rows[-1].timestamp, rows[-1].uuid) if rows else None
    return Page(len(rows), last, len(rows) >= limit)


def run(plan: EventsPlan, events: Sequence[Event], now: datetime, max_pages: int = 10_000) -> Tuple[List[List[str]], List[Dict], EventsPlan]:
    """Read the plan to the end: the uuids of every page, the state after every page, the final plan."""
    pages: List[List[str]] = []
    states: List[Dict] = []
    while (query := plan.next_query()) is not None:
        rows = serve(events, query, now)
        pages.append([e.uuid for e in rows])
        plan = plan.after_page(query, page_of(rows, query.limit))
        states.append(plan.state.to_dict())
        assert len(pages) <= max_pages, "the plan does not terminate"
    return pages, states, plan


def begin(state: Optional[EventsState], page_size: int, upper: datetime = UPPER, incremental: bool = True, lookback: timedelta = LOOKBACK) -> EventsPlan:
    return EventsPlan.begin(state, ANCHOR, upper, page_size, lookback, incremental)


def random_events(rng: random.Random, count: int) -> List[Event]:
    """Clusters of ties, bursts and long empty gaps between ANCHOR and UPPER."""
    span = (UPPER - ANCHOR).total_seconds()
    hot = [ANCHOR + timedelta(seconds=rng.uniform(0, span)) for _ in range(rng.randint(1, 6))]
    events = []
    for n in range(count):
        roll = rng.random()
        if roll < 0.3:
            at = rng.choice(hot)  # an exact tie with others
        elif roll < 0.6:
            at = rng.choice(hot) + timedelta(milliseconds=rng.randint(0, 5000))  # a dense burst
        else:
            at = ANCHOR + timedelta(seconds=rng.uniform(0, span))
        at = at.replace(microsecond=at.microsecond // 1000 * 1000)
        events.append(Event(uuid=event_uuid(rng.getrandbits(40)), timestamp=at, created_at=at + timedelta(seconds=1)))
    return [e for e in events if e.timestamp < UPPER - timedelta(seconds=2)]


def flat(pages: List[List[str]]) -> List[str]:
    return [uuid for page in pages for uuid in page]


class TestOneSync:
    @pytest.mark.parametrize("seed", range(25))
    def test_given_random_events_and_page_size_when_read_then_every_event_exactly_once(self, seed: int) -> None:
        rng = random.Random(seed)
        events = random_events(rng, rng.randint(0, 400))
        page_size = rng.choice([1, 2, 3, 7, 25, 100])

        pages, _, plan = run(begin(None, page_size), events, now=UPPER)

        assert Counter(flat(pages)) == Counter(e.uuid for e in events)
        assert plan.state.position.timestamp == UPPER

    def test_given_more_events_on_one_timestamp_than_a_page_when_read_then_keyset_pages_inside_the_tie(self) -> None:
        at = ANCHOR + timedelta(days=3)
        events = [Event(event_uuid(n), at, at) for n in range(50)]

        pages, _, _ = run(begin(None, page_size=7), events, now=UPPER)

        assert sorted(flat(pages)) == sorted(e.uuid for e in events)
        assert [len(page) for page in pages if page] == [7, 7, 7, 7, 7, 7, 7, 1]

    def test_given_no_events_from_an_old_anchor_when_read_then_windows_grow_and_the_plan_ends(self) -> None:
        plan = EventsPlan.begin(None, utc("2016-01-01T00:00:00Z"), UPPER, 1000, LOOKBACK, incremental=False)

        pages, _, final = run(plan, [], now=UPPER)

        assert final.next_query() is None and len(pages) < 150

    def test_next_query_is_a_pure_function_of_the_plan(self) -> None:
        plan = begin(None, 10)
        assert plan.next_query() == plan.next_query()


class TestResume:
    @pytest.mark.parametrize("seed", range(12))
    def test_given_a_kill_after_any_page_when_resumed_from_its_state_then_nothing_lost_and_at_most_one_page_repeated(self, seed: int) -> None:
        rng = random.Random(1000 + seed)
        events = random_events(rng, rng.randint(1, 250))
        page_size = rng.choice([2, 5, 30])
        pages, states, _ = run(begin(None, page_size, incremental=False), events, now=UPPER)

        for killed_after in range(len(pages) - 1):
            before = flat(pages[: killed_after + 1])
            in_flight = pages[killed_after + 1][: rng.randint(0, len(pages[killed_after + 1]))]  # delivered, not checkpointed
            state = EventsState.from_dict(states[killed_after], project_id=2)

            resumed, _, _ = run(begin(state, page_size), events, now=UPPER)

            delivered = Counter(before + in_flight + flat(resumed))
            assert set(delivered) == {e.uuid for e in events}
            assert sum(delivered.values()) - len(delivered) == len(in_flight) <= page_size


class TestLateEvents:
    def _two_syncs(self, page_size: int, kill_sweep_after: Optional[int] = None) -> Tuple[Counter, List[Event]]:
        rng = random.Random(7)
        events = random_events(rng, 120)
        second_upper = UPPER + timedelta(hours=6)
        # Late: old timestamps (inside the lookback), ingested after the first sync's watermark.
        late = [Event(event_uuid(10**9 + n), UPPER - timedelta(days=2, minutes=n), UPPER + timedelta(hours=1)) for n in range(13)]
        fresh = [Event(event_uuid(2 * 10**9 + n), UPPER + timedelta(minutes=5 * n), UPPER + timedelta(minutes=5 * n, seconds=1)) for n in range(9)]
        first, first_states, _ = run(begin(None, page_size), events, now=UPPER)
        world = events + late + fresh

        state = EventsState.from_dict(first_states[-1], 2)
        delivered = Counter(flat(first))
        if kill_sweep_after is not None:
            plan = begin(state, page_size, upper=second_upper)
            for _ in range(kill_sweep_after):
                query = plan.next_query()
                rows = serve(world, query, second_upper)
                delivered.update(e.uuid for e in rows)
                plan = plan.after_page(query, page_of(rows, query.limit))
            state = EventsState.from_dict(plan.state.to_dict(), 2)
        second, _, _ = run(begin(state, page_size, upper=second_upper), world, now=second_upper)
        delivered.update(flat(second))
        return delivered, world

    @pytest.mark.parametrize("page_size", [1, 4, 50])
    def test_given_late_events_when_next_sync_then_each_is_delivered_exactly_once(self, page_size: int) -> None:
        delivered, world = self._two_syncs(page_size)
        assert delivered == Counter(e.uuid for e in world)

    @pytest.mark.parametrize("kill_after", [1, 2, 3])
    def test_given_a_kill_during_the_sweep_when_resumed_then_nothing_is_lost(self, kill_after: int) -> None:
        delivered, world = self._two_syncs(page_size=4, kill_sweep_after=kill_after)
        assert set(delivered) == {e.uuid for e in world}
        assert sum(delivered.values()) - len(delivered) <= 4


class TestStateParsing:
    def test_state_round_trips(self) -> None:
        state = EventsState(KeysetPosition(ANCHOR, event_uuid(3)), UPPER)
        assert EventsState.from_dict(state.to_dict(), 2) == state

    def test_official_connectors_per_project_state_is_read_for_this_project(self) -> None:
        parsed = EventsState.from_dict({"2": {"timestamp": "2025-05-02T00:00:00Z"}}, 2)
        assert parsed.position == KeysetPosition(utc("2025-05-02T00:00:00Z"), None)

    @pytest.mark.parametrize(
        "value, problem",
        [
            ([], "expected an object"),
            ({"timestamp": 5}, "must be an ISO-8601"),
            ({"timestamp": "yesterday"}, "not an ISO-8601"),
            ({"timestamp": "2025-05-02T00:00:00Z", "uuid": "x' OR 1=1 --"}, "not a UUID"),
            ({"7": {"timestamp": "2025-05-02T00:00:00Z"}}, "entry for project 2"),
        ],
    )
    def test_given_a_state_that_cannot_be_trusted_then_invalid(self, value: object, problem: str) -> None:
        with pytest.raises(InvalidEventsState, match=problem):
            EventsState.from_dict(value, 2)
