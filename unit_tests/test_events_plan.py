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
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pytest

from source_posthog.api.events_plan import CountQuery, EventsPlan, MinuteCountQuery, EventsState, InvalidEventsState, Page, PageQuery, QueryTooSlow
from source_posthog.api.hogql import KeysetPosition
from unit_tests.hogql_fake import Event, event_uuid, parse_query, utc
from unit_tests.support.clickhouse import uuid_order

ANCHOR = utc("2025-05-01T00:00:00Z")
UPPER = utc("2025-06-01T00:00:00Z")
LOOKBACK = timedelta(days=7)


def matching(events: Sequence[Event], query: Any, now: datetime) -> List[Event]:
    """The visible events matching the query's WHERE (parsed by the strict fake), ordered."""
    parsed = parse_query(query.hogql())
    return sorted((e for e in events if e.visible(now) and parsed.predicate(e)), key=lambda e: (e.timestamp, uuid_order(e.uuid)))


def serve(events: Sequence[Event], query: PageQuery, now: datetime) -> List[Event]:
    """What PostHog answers to a page: the matching events, LIMITed."""
    return matching(events, query, now)[: query.limit]


def hours_of(events: Sequence[Event], query: CountQuery, now: datetime) -> List[Tuple[datetime, int]]:
    if query.unit == "minute":
        counts = Counter(e.timestamp.replace(second=0, microsecond=0) for e in matching(events, query, now))
    else:
        counts = Counter(e.timestamp.replace(minute=0, second=0, microsecond=0) for e in matching(events, query, now))
    return sorted(counts.items())[: query.limit]


def page_of(rows: List[Event], limit: int) -> Page:
    last = KeysetPosition(rows[-1].timestamp, rows[-1].uuid) if rows else None
    return Page(len(rows), last, len(rows) >= limit)


def scanned(events: Sequence[Event], query: PageQuery) -> int:
    return sum(1 for e in events if query.start <= e.timestamp < query.end)


def step(plan: EventsPlan, events: Sequence[Event], now: datetime, scan_limit: Optional[int] = None) -> Tuple[EventsPlan, Optional[List[Event]]]:
    """Send the plan's next query to a PostHog holding `events`; the plan after the answer, and
    the page's rows (None for a count or a timeout). Over `scan_limit` rows in range: a 504."""
    query = plan.next_query()
    if isinstance(query, CountQuery):
        return plan.after_counts(query, hours_of(events, query, now)), None
    if isinstance(query, MinuteCountQuery):
        minutes = Counter(e.created_at.replace(second=0, microsecond=0) for e in matching(events, query, now))
        return plan.after_minutes(query, sorted(minutes.items())), None
    if scan_limit is not None and scanned(events, query) > scan_limit:
        return plan.after_timeout(query), None
    rows = serve(events, query, now)
    return plan.after_page(query, page_of(rows, query.limit)), rows


def run(
    plan: EventsPlan, events: Sequence[Event], now: datetime, max_queries: int = 20_000, scan_limit: Optional[int] = None
) -> Tuple[List[List[str]], List[Dict], EventsPlan]:
    """Read the plan to the end: the uuids of every page, the state after every query, the final plan."""
    pages: List[List[str]] = []
    states: List[Dict] = []
    queries = 0
    while plan.next_query() is not None:
        plan, rows = step(plan, events, now, scan_limit)
        queries += 1
        if rows is not None:
            pages.append([e.uuid for e in rows])
            states.append(plan.state.to_dict())
        assert queries <= max_queries, "the plan does not terminate"
    return pages, states, plan


def queries_of(plan: EventsPlan, events: Sequence[Event], now: datetime, scan_limit: Optional[int] = None) -> int:
    count = 0
    while plan.next_query() is not None:
        plan, _ = step(plan, events, now, scan_limit)
        count += 1
    return count


TOLERANCE = timedelta(minutes=30)


def begin(
    state: Optional[EventsState], page_size: int, upper: datetime = UPPER, incremental: bool = True, lookback: timedelta = LOOKBACK,
    tolerance: timedelta = TOLERANCE,
) -> EventsPlan:
    return EventsPlan.begin(state, ANCHOR, upper, page_size, lookback, incremental, tolerance)


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

    def test_given_no_events_from_an_old_anchor_when_read_then_one_count_and_nothing_else(self) -> None:
        plan = EventsPlan.begin(None, utc("2016-01-01T00:00:00Z"), UPPER, 1000, LOOKBACK, incremental=False)

        assert queries_of(plan, [], now=UPPER) == 1

    @pytest.mark.parametrize("seed", range(8))
    @pytest.mark.parametrize("anchor", ["2016-01-01T00:00:00Z", "2025-05-01T00:00:00Z"])
    def test_given_n_events_from_any_anchor_when_read_then_at_most_five_quarters_of_the_pages_plus_four_queries(self, seed: int, anchor: str) -> None:
        rng = random.Random(500 + seed)
        events = random_events(rng, rng.randint(50, 3000))
        page_size = rng.choice([10, 25, 100])
        plan = EventsPlan.begin(None, utc(anchor), UPPER, page_size, LOOKBACK, incremental=False)

        queries = queries_of(plan, events, now=UPPER)

        pages = -(-len(events) // page_size)
        assert queries <= 1.25 * pages + 4, f"{queries} queries for {len(events)} events ({pages} pages)"

    @pytest.mark.parametrize("per_hour, page_size, hours", [(6, 10, 480), (15, 25, 480), (104, 25, 30), (1, 100, 480), (260, 100, 12)])
    def test_given_evenly_spread_events_of_any_density_then_at_most_five_quarters_of_the_pages_plus_four_queries(
        self, per_hour: int, page_size: int, hours: int
    ) -> None:
        step_ = timedelta(hours=1) / per_hour
        events = [Event(event_uuid(n), ANCHOR + step_ * n, ANCHOR + step_ * n) for n in range(per_hour * hours)]

        queries = queries_of(begin(None, page_size, incremental=False), events, now=UPPER)

        assert queries <= 1.25 * -(-len(events) // page_size) + 4

    def test_given_more_than_the_time_limit_allows_when_read_then_windows_split_down_to_a_tie_and_every_event_is_read(self) -> None:
        tie = ANCHOR + timedelta(days=2)
        events = [Event(event_uuid(n), tie, tie) for n in range(60)] + random_events(random.Random(3), 300)

        pages, _, _ = run(begin(None, page_size=7, incremental=False), events, now=UPPER, scan_limit=80)

        assert Counter(flat(pages)) == Counter(e.uuid for e in events)

    def test_given_a_tie_larger_than_the_time_limit_allows_then_the_page_shrinks_and_at_the_end_too_slow(self) -> None:
        tie = ANCHOR + timedelta(days=2)
        events = [Event(event_uuid(n), tie, tie) for n in range(50)]
        plan = EventsPlan.begin(None, ANCHOR, UPPER, 4000, LOOKBACK, incremental=False)

        with pytest.raises(QueryTooSlow, match="page of 1000 events"):
            run(plan, events, now=UPPER, scan_limit=10)

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
                plan, rows = step(plan, world, second_upper)
                delivered.update(e.uuid for e in rows or [])
            state = EventsState.from_dict(plan.state.to_dict(), 2)
        second, _, _ = run(begin(state, page_size, upper=second_upper), world, now=second_upper)
        delivered.update(flat(second))
        return delivered, world

    @pytest.mark.parametrize("page_size", [1, 4, 50])
    def test_given_late_events_when_next_sync_then_each_is_delivered_exactly_once(self, page_size: int) -> None:
        delivered, world = self._two_syncs(page_size)
        assert delivered == Counter(e.uuid for e in world)

    def test_given_a_sweep_over_more_than_the_time_limit_allows_then_it_narrows_and_each_late_event_is_delivered_once(self) -> None:
        rng = random.Random(9)
        events = random_events(rng, 400)
        first, states, _ = run(begin(None, 20), events, now=UPPER)
        late = [Event(event_uuid(10**9 + n), UPPER - timedelta(days=1, minutes=7 * n), UPPER + timedelta(hours=1)) for n in range(30)]
        state = EventsState.from_dict(states[-1], 2)

        second, _, _ = run(begin(state, 20, upper=UPPER + timedelta(hours=3)), events + late, now=UPPER + timedelta(hours=3), scan_limit=60)

        assert Counter(flat(first) + flat(second)) == Counter(e.uuid for e in events + late)

    def test_given_a_resume_position_inside_a_tie_when_a_late_event_lands_in_that_tie_then_the_sweep_delivers_it(self) -> None:
        """Issue #17: the sweep reads up to and including the resume position's timestamp (its
        pairs up to the position). A sweep that stopped before that timestamp would lose a late
        event inside the tie, and the main pass starts after the position: no other query reads it."""
        tie = UPPER - timedelta(days=1)
        tied = [Event(event_uuid(100 + n), tie, tie + timedelta(seconds=1)) for n in range(10)]
        plan = begin(None, page_size=4)
        delivered: List[str] = []
        while True:  # the first sync, killed after its first page inside the tie
            plan, rows = step(plan, tied, UPPER)
            if rows:
                delivered += [e.uuid for e in rows]
                break
        killed = EventsState.from_dict(plan.state.to_dict(), 2)
        assert killed.position.timestamp == tie and killed.position.uuid is not None, "the position must sit inside the tie"
        late = Event(event_uuid(101).replace("0190f6a2", "0190f6a3"), tie, UPPER + timedelta(minutes=30))  # in the tie, ordered before the position
        assert uuid_order(late.uuid) < uuid_order(killed.position.uuid)
        world = tied + [late]

        second, _, _ = run(begin(killed, 4, upper=UPPER + timedelta(hours=1)), world, now=UPPER + timedelta(hours=1))

        assert late.uuid in flat(second)
        assert Counter(delivered + flat(second)) == Counter(e.uuid for e in world), "each event once"

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


class TestVisibilityDelay:
    """PostHog makes an event queryable some time after it stamps `created_at` (§ 11.1)."""

    def _syncs(self, delay: timedelta, tolerance: timedelta, hourly: int = 4, page_size: int = 20) -> Tuple[Counter, List[Event], int]:
        """`hourly` incremental syncs one hour apart over a world where new events keep arriving,
        each queryable `delay` after its created_at. Returns deliveries, the world, and how many
        events the syncs re-emitted."""
        rng = random.Random(42)
        world: List[Event] = []
        delivered: Counter = Counter()
        state = None
        clock = UPPER
        for sync in range(hourly + 1):
            start = clock - timedelta(hours=1)
            for n in range(120):  # events of the last hour, stamped as they arrive
                at = start + timedelta(seconds=rng.uniform(0, 3600))
                world.append(Event(event_uuid(sync * 10_000 + n), at, at, visible_at=at + delay))
            upper = clock - timedelta(minutes=2)
            pages, states, plan = run(EventsPlan.begin(state, ANCHOR, upper, page_size, LOOKBACK, True, tolerance), world, now=clock)
            delivered.update(flat(pages))
            state = plan.state
            clock += timedelta(hours=1)
        # What was stamped before the last sync's watermark minus the tolerance must be there.
        due = [e for e in world if e.created_at <= clock - timedelta(hours=1) - timedelta(minutes=2) - tolerance]
        return delivered, due, sum(delivered.values()) - len(delivered)

    def test_given_events_queryable_20_minutes_after_created_at_when_synced_hourly_then_none_is_lost(self) -> None:
        delivered, due, _ = self._syncs(delay=timedelta(minutes=20), tolerance=TOLERANCE)
        assert not [e.uuid for e in due if e.uuid not in delivered]

    def test_given_the_check_off_and_a_20_minute_delay_then_events_are_lost(self) -> None:
        delivered, due, _ = self._syncs(delay=timedelta(minutes=20), tolerance=timedelta(0))
        assert [e.uuid for e in due if e.uuid not in delivered], "the emulated delay must lose events without the check"

    def test_given_no_delay_when_synced_hourly_then_nothing_is_re_emitted(self) -> None:
        delivered, due, duplicates = self._syncs(delay=timedelta(0), tolerance=TOLERANCE)
        assert not [e.uuid for e in due if e.uuid not in delivered]
        assert duplicates == 0

    def test_the_snapshot_and_recheck_survive_the_state_round_trip(self) -> None:
        _, _, plan = run(begin(None, 10), random_events(random.Random(1), 50), now=UPPER)
        assert plan.state.snapshot is not None
        assert EventsState.from_dict(plan.state.to_dict(), 2) == plan.state
