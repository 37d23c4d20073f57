"""events: the HogQL keyset export (`POST /api/projects/{id}/query/`).

The endpoint is served by `FakeHogQL`, which evaluates the connector's own WHERE clause over an
in-memory event list (see unit_tests/hogql_fake.py). Nothing here replays canned pages, so
"every event is delivered exactly once" is checked against the data, whatever windows and pages
the connector chooses. `requests_mock` is used directly: HttpMocker matches whole bodies, and a
keyset query's body is only known once the previous page has been read.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Sequence

import pytest
from airbyte_cdk.models import FailureType, SyncMode, Type

from source_posthog import settings
from unit_tests.builders import API_KEY, NOW, PROJECT_ID, ConfigBuilder, load_template
from unit_tests.hogql_fake import QUERY_URL, Event, FakeHogQL, make_events, utc
from unit_tests.support.clickhouse import uuid_order
from unit_tests.reader import config_errors, everything_emitted, final_state, read_stream, records, states

PAGE = 1000  # the smallest events_page_size the spec allows
NOW_UTC = utc(NOW)
UPPER = NOW_UTC - settings.EVENTS_INGESTION_LAG  # the first sync reads up to now minus the ingestion lag
ANCHOR = utc("2025-05-01T00:00:00Z")


def config(**fields: Any) -> Dict[str, Any]:
    # One query in flight: these tests count and order the queries (two in flight: TestTwoInFlight).
    builder = ConfigBuilder().with_events_page_size(PAGE).with_anchor_date("2025-05-01T00:00:00Z").with_field("events_queries_in_flight", 1)
    for key, value in fields.items():
        builder.with_field(key, value)
    return builder.build()


def iso(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def uuids(items: Sequence[Dict[str, Any]]) -> List[str]:
    return [item["uuid"] for item in items]


def pages_between_states(output: Any) -> List[List[str]]:
    """The record uuids emitted between consecutive STATE messages."""
    chunks: List[List[str]] = []
    current: List[str] = []
    for message in output.records_and_state_messages:
        if message.type == Type.STATE:
            chunks.append(current)
            current = []
        else:
            current.append(message.record.data["uuid"])
    assert not current, f"{len(current)} records were emitted after the last STATE"
    return chunks


def sync(fake: FakeHogQL, state: Dict[str, Any] | None = None, **config_fields: Any) -> Any:
    return read_stream("events", SyncMode.incremental, config(**config_fields), state=state)


def spread(count: int, start: datetime, end: datetime, first: int = 0) -> List[Event]:
    step = (end - start) / count
    return make_events(count, start, start=first, step=step)


class TestEventsFullRefresh:
    def test_given_events_when_read_full_refresh_then_every_event_since_anchor_date_is_emitted(self, requests_mock: Any) -> None:
        before_anchor = make_events(3, ANCHOR - timedelta(days=2), start=0, step=timedelta(hours=1))
        inside = spread(40, ANCHOR, UPPER - timedelta(hours=1), first=100)
        fake = FakeHogQL(before_anchor + inside).register(requests_mock)

        output = read_stream("events", SyncMode.full_refresh, config())

        assert Counter(uuids(records(output))) == Counter(uuids([vars(event) for event in inside]))
        assert not fake.rejected
        assert not output.errors

    def test_given_a_state_when_read_full_refresh_then_it_starts_again_from_anchor_date(self, requests_mock: Any) -> None:
        data = spread(20, ANCHOR, UPPER)
        FakeHogQL(data).register(requests_mock)

        output = read_stream("events", SyncMode.full_refresh, config(), state={"timestamp": iso(UPPER - timedelta(days=1))})

        assert Counter(uuids(records(output))) == Counter(event.uuid for event in data)

    def test_when_read_then_each_request_is_a_named_blocking_hogql_query_with_limit_and_no_offset(self, requests_mock: Any) -> None:
        fake = FakeHogQL(spread(10, ANCHOR, UPPER)).register(requests_mock)

        read_stream("events", SyncMode.full_refresh, config())

        assert fake.calls >= 1
        for request, body in zip(requests_mock.request_history, fake.bodies):
            assert request.method == "POST" and request.url == QUERY_URL
            assert request.headers["Authorization"] == f"Bearer {API_KEY}"
            assert body["query"]["kind"] == "HogQLQuery"
            assert body["refresh"] == "blocking" and body.get("name")
            assert "OFFSET" not in body["query"]["query"].upper()
            if body["name"].endswith("_counts"):  # the hourly counts the windows are planned from
                assert body["query"]["query"].startswith("SELECT toStartOfHour(timestamp) AS hour, count()")
            else:
                assert body["query"]["query"].endswith(f"LIMIT {PAGE}")
        assert fake.count_queries == 1
        assert fake.rejected == []

    def test_given_properties_as_json_string_when_read_then_properties_is_an_object(self, requests_mock: Any) -> None:
        properties = {"$browser": "Firefox", "nested": {"a": [1, 2]}, "quote": "it's \"fine\"", "unicode": "żółw"}
        FakeHogQL(make_events(1, ANCHOR + timedelta(days=3), properties=properties)).register(requests_mock)

        output = read_stream("events", SyncMode.full_refresh, config())

        assert [record["properties"] for record in records(output)] == [properties]

    def test_given_timestamps_in_project_timezone_when_read_then_timestamps_are_utc_with_z(self, requests_mock: Any) -> None:
        at = utc("2025-05-10T22:30:00.250000Z")
        FakeHogQL(make_events(1, at, ingested_after=timedelta(seconds=2)), render_offset=timedelta(hours=2)).register(requests_mock)

        output = read_stream("events", SyncMode.full_refresh, config())

        (record,) = records(output)
        assert record["timestamp"] == "2025-05-10T22:30:00.250000Z"
        assert record["created_at"] == "2025-05-10T22:30:02.250000Z"


class TestEventsKeysetPagination:
    def test_given_three_pages_of_events_sharing_one_timestamp_when_read_then_every_event_is_delivered_once(self, requests_mock: Any) -> None:
        """The keyset inside a tie is on `uuid` alone, and the fake orders UUIDs as ClickHouse does
        (second half first) while their text order differs (issue #17): a connector that compared
        UUIDs itself would skip or repeat events at the page edges here."""
        tie = utc("2025-05-20T10:00:00.123456Z")
        tied = make_events(2500, tie, start=1000)  # 2.5 pages, all at one timestamp
        assert sorted(e.uuid for e in tied) != [e.uuid for e in sorted(tied, key=lambda e: uuid_order(e.uuid))]
        around = make_events(5, tie - timedelta(seconds=1), start=0) + make_events(5, tie + timedelta(microseconds=1), start=9000)
        fake = FakeHogQL(tied + around).register(requests_mock)

        output = sync(fake)

        delivered = uuids(records(output))
        assert Counter(delivered) == Counter(event.uuid for event in tied + around)
        pages_with_tie = [page for page in fake.pages if set(page) & {event.uuid for event in tied}]
        assert len(pages_with_tie) >= 3, "the tie must span at least three pages for this test to mean anything"
        assert fake.rejected == []

    def test_given_event_exactly_on_a_window_boundary_when_read_then_it_is_delivered_once(self, requests_mock: Any) -> None:
        # The first hour holds more than a window's eight pages, so the next window starts at the next hour.
        boundary = ANCHOR + timedelta(hours=1)
        filler = spread(8500, ANCHOR + timedelta(minutes=1), ANCHOR + timedelta(minutes=59), first=100)
        on_edges = filler + [
            Event(uuid="0190f6a2-0000-7000-8000-00000000000a", timestamp=ANCHOR, created_at=ANCHOR + timedelta(seconds=1)),
            Event(uuid="0190f6a2-0000-7000-8000-00000000000b", timestamp=boundary, created_at=boundary + timedelta(seconds=1)),
            Event(uuid="0190f6a2-0000-7000-8000-00000000000c", timestamp=boundary - timedelta(microseconds=1), created_at=boundary),
        ]
        fake = FakeHogQL(on_edges).register(requests_mock)

        output = sync(fake)

        assert any(end == boundary for _, end in fake.windows()), f"no window ended at {boundary}: {fake.windows()}"
        assert Counter(uuids(records(output))) == Counter(event.uuid for event in on_edges)

    def test_given_window_with_more_rows_than_limit_when_read_then_window_is_paged_until_a_short_page(self, requests_mock: Any) -> None:
        # 3,500 events inside one minute: the smallest bucket the plan counts holds 3.5 pages.
        dense = spread(3500, ANCHOR + timedelta(minutes=15), ANCHOR + timedelta(minutes=15, seconds=30))
        fake = FakeHogQL(dense).register(requests_mock)

        output = sync(fake)

        assert Counter(uuids(records(output))) == Counter(event.uuid for event in dense)
        # Full keyset pages until the window is exhausted (later windows shrink to the density seen).
        assert [len(page) for page in fake.pages if page][:2] == [PAGE, PAGE]
        assert max(len(page) for page in fake.pages) <= PAGE

    def test_when_read_then_a_state_follows_every_page(self, requests_mock: Any) -> None:
        data = make_events(2200, utc("2025-05-20T10:00:00Z"), start=0) + spread(300, ANCHOR, UPPER, first=5000)
        fake = FakeHogQL(data).register(requests_mock)

        output = sync(fake)

        # Every query is followed by a STATE: the pages, and the hourly counts (no records).
        assert [chunk for chunk in pages_between_states(output) if chunk] == [page for page in fake.pages if page]
        assert len(states(output)) == fake.calls

    def test_given_no_state_when_read_then_final_state_is_upper_bound_and_ingestion_watermark(self, requests_mock: Any) -> None:
        FakeHogQL(spread(20, ANCHOR, UPPER)).register(requests_mock)

        output = sync(None)

        state = final_state(output)
        snapshot = state.pop("snapshot")
        assert state == {"timestamp": iso(UPPER), "uuid": None, "ingested_through": iso(UPPER), "project_id": PROJECT_ID}
        # the created_at minutes of the last half hour before the watermark, as counted before the reads
        assert snapshot["through"] == iso(UPPER) and snapshot["floor"] == iso(UPPER - timedelta(days=7, minutes=30))

    def test_given_state_when_read_then_only_newer_events(self, requests_mock: Any) -> None:
        cursor = utc("2025-05-25T00:00:00Z")
        older = make_events(5, cursor - timedelta(days=2), start=0, step=timedelta(hours=1))
        newer = make_events(5, cursor + timedelta(hours=1), start=100, step=timedelta(hours=1))
        fake = FakeHogQL(older + newer).register(requests_mock)
        state = {"timestamp": iso(cursor), "uuid": None, "ingested_through": iso(cursor + timedelta(hours=1))}

        output = sync(fake, state=state)

        assert Counter(uuids(records(output))) == Counter(event.uuid for event in newer)

    def test_given_any_emitted_state_when_resumed_then_nothing_is_lost_and_at_most_one_page_is_reemitted(
        self, requests_mock: Any, frozen_time: Any
    ) -> None:
        tie = utc("2025-05-20T10:00:00Z")
        data = make_events(2300, tie, start=0) + spread(1500, ANCHOR, UPPER, first=10_000)
        fake = FakeHogQL(data).register(requests_mock)
        everything = {event.uuid for event in data}

        first = sync(fake)
        chunks = pages_between_states(first)
        emitted_states = states(first)
        assert len(emitted_states) >= 5

        for index, state in enumerate(emitted_states):
            frozen_time.move_to(NOW)  # the same sync, killed after its index-th checkpoint and run again
            before_kill = [uuid for chunk in chunks[: index + 1] for uuid in chunk]
            resumed = sync(fake, state=state)
            after = uuids(records(resumed))
            assert not resumed.errors
            assert everything <= set(before_kill) | set(after), f"events lost when resuming from state #{index}: {state}"
            reemitted = set(before_kill) & set(after)
            assert len(reemitted) <= PAGE, f"{len(reemitted)} events re-emitted when resuming from state #{index}"
            assert len(after) == len(set(after)), f"duplicates inside the sync resumed from state #{index}"

    def test_given_far_future_state_when_read_then_config_error_naming_stream_value_and_reset_before_any_query(self, requests_mock: Any) -> None:
        fake = FakeHogQL(spread(50, ANCHOR, UPPER)).register(requests_mock)

        output = read_stream("events", SyncMode.incremental, config(), state={"timestamp": "2030-01-01T00:00:00Z"}, expecting_exception=True)

        (error, *_) = config_errors(output)
        assert "'events'" in error.message and "2030-01-01" in error.message and "future" in error.message and "reset" in error.message
        assert records(output) == [] and fake.calls == 0

    @pytest.mark.parametrize(
        "state",
        [
            pytest.param({str(PROJECT_ID): {"timestamp": "2025-05-25T00:00:00.000000+00:00"}}, id="per-project"),
            pytest.param({"timestamp": "2025-05-25T00:00:00.000000+00:00"}, id="flat"),
        ],
    )
    def test_given_official_connector_state_when_read_then_events_from_its_timestamp_are_read_again(
        self, requests_mock: Any, state: Dict[str, Any]
    ) -> None:
        cursor = utc("2025-05-25T00:00:00Z")
        older = make_events(3, cursor - timedelta(hours=3), start=0, step=timedelta(hours=1))
        at_cursor = make_events(3, cursor, start=100)  # the official connector's strict `after` may have skipped these
        newer = make_events(3, cursor + timedelta(hours=1), start=200, step=timedelta(hours=1))
        fake = FakeHogQL(older + at_cursor + newer).register(requests_mock)

        output = sync(fake, state=state)

        assert not output.errors
        assert Counter(uuids(records(output))) == Counter(event.uuid for event in at_cursor + newer)
        assert final_state(output)["timestamp"] == iso(UPPER)


class TestEventsLateArrivals:
    def test_given_late_event_when_next_sync_then_it_is_delivered_exactly_once(self, requests_mock: Any, frozen_time: Any) -> None:
        data = spread(30, ANCHOR, UPPER - timedelta(hours=1))
        fake = FakeHogQL(data).register(requests_mock)
        first = sync(fake)
        first_state = final_state(first)
        assert first_state["ingested_through"] == iso(UPPER)

        # A day later: an offline client flushes an event that happened three days before the cursor.
        frozen_time.move_to(NOW_UTC + timedelta(days=1))
        late = Event(uuid="0190f6a2-0000-7000-8000-00000000beef", timestamp=UPPER - timedelta(days=3), created_at=NOW_UTC + timedelta(hours=1))
        fresh = make_events(2, NOW_UTC + timedelta(hours=2), start=50_000, step=timedelta(minutes=5))
        fake.add([late] + fresh)
        second = sync(fake, state=first_state)

        frozen_time.move_to(NOW_UTC + timedelta(days=2))
        third = sync(fake, state=final_state(second))

        assert Counter(uuids(records(second))) == Counter([late.uuid] + [event.uuid for event in fresh])
        assert records(third) == []
        assert fake.rejected == []

    def test_given_sync_killed_during_the_late_event_sweep_when_resumed_from_any_state_then_nothing_is_lost(
        self, requests_mock: Any, frozen_time: Any
    ) -> None:
        fake = FakeHogQL(spread(30, ANCHOR, UPPER - timedelta(hours=1))).register(requests_mock)
        first_state = final_state(sync(fake))

        later = NOW_UTC + timedelta(days=1)
        frozen_time.move_to(later)
        late = [  # 2.5 pages of late events, six days back, ingested after the first sync
            Event(uuid=event.uuid, timestamp=event.timestamp, created_at=NOW_UTC + timedelta(hours=1))
            for event in spread(2500, UPPER - timedelta(days=6), UPPER - timedelta(days=1), first=100_000)
        ]
        fresh = spread(20, NOW_UTC, later - timedelta(hours=1), first=200_000)
        fake.add(late + fresh)
        second = sync(fake, state=first_state)
        expected = {event.uuid for event in late + fresh}
        assert Counter(uuids(records(second))) == Counter(expected)

        chunks = pages_between_states(second)
        for index, state in enumerate(states(second)):
            frozen_time.move_to(later)
            before_kill = {uuid for chunk in chunks[: index + 1] for uuid in chunk}
            after = uuids(records(sync(fake, state=state)))
            assert expected <= before_kill | set(after), f"late events lost when resuming from state #{index}: {state}"
            assert len(before_kill & set(after)) <= PAGE, f"more than a page re-emitted when resuming from state #{index}"

    def test_given_event_ingested_during_the_ingestion_lag_when_next_sync_then_it_is_not_delivered_again(
        self, requests_mock: Any, frozen_time: Any
    ) -> None:
        # Happened 10 minutes ago, ingested 1 minute ago: visible to this sync, and ingested after its watermark.
        recent = Event(
            uuid="0190f6a2-0000-7000-8000-00000000cafe", timestamp=NOW_UTC - timedelta(minutes=10), created_at=NOW_UTC - timedelta(minutes=1)
        )
        fake = FakeHogQL([recent]).register(requests_mock)
        first = sync(fake)

        frozen_time.move_to(NOW_UTC + timedelta(hours=6))
        second = sync(fake, state=final_state(first))

        delivered = uuids(records(first)) + uuids(records(second))
        assert delivered.count(recent.uuid) == 1, f"delivered {delivered.count(recent.uuid)} times across two syncs"

    def test_given_late_event_exactly_at_the_cursor_when_next_sync_then_it_is_delivered_once(
        self, requests_mock: Any, frozen_time: Any
    ) -> None:
        fake = FakeHogQL(spread(5, ANCHOR, UPPER - timedelta(hours=1))).register(requests_mock)
        first = sync(fake)
        assert final_state(first)["timestamp"] == iso(UPPER)

        frozen_time.move_to(NOW_UTC + timedelta(days=1))
        on_cursor = Event(uuid="0190f6a2-0000-7000-8000-0000000000ed", timestamp=UPPER, created_at=NOW_UTC + timedelta(hours=1))
        fake.add([on_cursor])
        second = sync(fake, state=final_state(first))

        assert uuids(records(second)).count(on_cursor.uuid) == 1


HOSTILE = [
    "2025-05-01T00:00:00Z' OR 1=1 --",
    "2025-05-01'); DROP TABLE events; --",
    "\\' OR ''='",
    "'; DROP TABLE events; --",
]


class TestEventsHostileState:
    @pytest.mark.parametrize(
        "state",
        [pytest.param({"timestamp": value}, id=f"timestamp-{n}") for n, value in enumerate(HOSTILE)]
        + [pytest.param({"timestamp": "2025-05-20T00:00:00Z", "uuid": value}, id=f"uuid-{n}") for n, value in enumerate(HOSTILE)]
        + [
            pytest.param({"timestamp": "2025-05-20T00:00:00Z", "ingested_through": HOSTILE[1]}, id="ingested_through"),
            pytest.param(
                {"timestamp": "2025-05-20T00:00:00Z", "sweep": {"timestamp": "2025-05-19T00:00:00Z", "uuid": None, "ingested_after": HOSTILE[0]}},
                id="sweep-ingested_after",
            ),
            pytest.param(
                {"timestamp": "2025-05-20T00:00:00Z", "sweep": {"timestamp": "2025-05-19T00:00:00Z", "uuid": HOSTILE[3], "ingested_after": "2025-05-19T00:00:00Z"}},
                id="sweep-uuid",
            ),
            pytest.param({str(PROJECT_ID): {"timestamp": HOSTILE[1]}}, id="official-per-project"),
        ],
    )
    def test_given_hostile_value_in_state_when_read_then_clear_config_error_and_nothing_reaches_a_query(
        self, requests_mock: Any, state: Dict[str, Any]
    ) -> None:
        fake = FakeHogQL(spread(10, ANCHOR, UPPER)).register(requests_mock)

        output = sync(fake, state=state)

        assert records(output) == []
        assert fake.calls == 0, f"a query was sent: {fake.queries}"
        (error, *_) = config_errors(output)
        assert "State of stream 'events'" in error.message and "reset" in error.message
        assert "DROP TABLE" not in " ".join(fake.queries)


class TestEventsRateLimits:
    def test_given_429_with_retry_after_on_query_when_read_then_waits_and_retries(self, requests_mock: Any, sleeps: List[float]) -> None:
        data = spread(10, ANCHOR, ANCHOR + timedelta(hours=5))
        fake = FakeHogQL(data).register(requests_mock)
        fake.fail_next(429, load_template("error_429_throttled"), {"Retry-After": "7"})

        output = sync(fake)

        assert Counter(uuids(records(output))) == Counter(event.uuid for event in data)
        assert sleeps[0] == 7 + 1  # Retry-After, plus the CDK's extra second
        assert fake.queries[0] == fake.queries[1]  # the same page was asked again
        assert not output.errors

    def test_given_concurrency_429_without_retry_after_when_read_then_backs_off_exponentially_and_retries(
        self, requests_mock: Any, sleeps: List[float]
    ) -> None:
        data = spread(10, ANCHOR, ANCHOR + timedelta(hours=5))
        fake = FakeHogQL(data).register(requests_mock)
        fake.fail_next(429, load_template("error_429_concurrency"))
        fake.fail_next(429, load_template("error_429_concurrency"))

        output = sync(fake)

        assert Counter(uuids(records(output))) == Counter(event.uuid for event in data)
        assert sleeps == [5 + 1, 10 + 1]
        assert fake.queries[0] == fake.queries[1] == fake.queries[2]
        assert not output.errors

    def test_given_query_keeps_returning_429_when_read_then_fails_after_five_retries_with_checkpoint_kept(
        self, requests_mock: Any, sleeps: List[float]
    ) -> None:
        first_page = make_events(PAGE, ANCHOR, start=0, step=timedelta(minutes=30) / PAGE)  # fills the first window's first page
        fake = FakeHogQL(first_page + spread(10, ANCHOR + timedelta(days=3), UPPER, first=5000)).register(requests_mock)
        original = fake.__call__

        def throttle_after_first_page(request: Any, context: Any) -> Any:
            if fake.calls >= 4:  # after the watermark snapshot, the hourly and minute counts, and the first page
                fake.fail_next(429, load_template("error_429_concurrency"))
            return original(request, context)

        requests_mock.post(QUERY_URL, json=throttle_after_first_page)

        output = sync(fake)

        assert fake.calls == 4 + 6
        assert sleeps == [6, 11, 21, 41, 81]
        (error, *_) = [message.trace.error for message in output.errors]
        assert error.failure_type == FailureType.transient_error
        assert "/api/projects/2/query/" in error.message and "429" in error.message
        assert uuids(records(output)) == fake.pages[0] == [event.uuid for event in first_page][: len(fake.pages[0])]
        assert final_state(output)["timestamp"] > iso(ANCHOR)  # the first window's end: nothing before it is read again


class TestEventsReadBudget:
    """PostHog's hourly budget of bytes read (429 api_queries_budget_exceeded + Retry-After)."""

    BUDGET = {"type": "throttled_error", "code": "api_queries_budget_exceeded", "detail": "API queries read budget exhausted. Expected available in 300 seconds.", "attr": None}

    def test_given_the_budget_refills_soon_when_read_then_waits_as_asked_and_logs_why_and_until_when(self, requests_mock: Any, sleeps: List[float]) -> None:
        data = spread(10, ANCHOR, ANCHOR + timedelta(hours=5))
        fake = FakeHogQL(data).register(requests_mock)
        fake.fail_next(429, self.BUDGET, {"Retry-After": "300"})

        output = sync(fake)

        assert Counter(uuids(records(output))) == Counter(event.uuid for event in data)
        assert sleeps[0] == 301
        (line,) = [log.log.message for log in output.logs if "budget" in log.log.message and ", project " not in log.log.message]
        assert "bytes read" in line and "waiting 301 s, until 2025-06-01 12:05:01 UTC" in line
        assert not output.errors

    def test_given_the_budget_refills_later_than_the_bound_when_read_then_stops_with_a_transient_error_naming_when_and_keeps_the_checkpoint(
        self, requests_mock: Any, sleeps: List[float]
    ) -> None:
        first_page = make_events(PAGE, ANCHOR, start=0, step=timedelta(minutes=30) / PAGE)
        fake = FakeHogQL(first_page + spread(10, ANCHOR + timedelta(days=3), UPPER, first=5000)).register(requests_mock)
        original = fake.__call__

        def budget_after_first_page(request: Any, context: Any) -> Any:
            if fake.calls == 4:
                fake.fail_next(429, self.BUDGET, {"Retry-After": "2400"})
            return original(request, context)

        requests_mock.post(QUERY_URL, json=budget_after_first_page)

        output = sync(fake)

        assert sleeps == []
        (error, *_) = [message.trace.error for message in output.errors]
        assert error.failure_type == FailureType.transient_error
        # The sync's last word too (issue #21, item 4): the platform retries a transient failure later;
        # the CDK's own summary would say config_error, "the user must fix the config".
        assert [message.trace.error.failure_type for message in output.errors][-1] == FailureType.transient_error
        assert "run the sync again after 2025-06-01 12:40:01 UTC" in error.message and "api_queries_budget_exceeded" in error.message
        assert uuids(records(output)) == fake.pages[0] == [event.uuid for event in first_page][: len(fake.pages[0])]
        assert final_state(output)["timestamp"] > iso(ANCHOR)  # the first window's end: nothing before it is read again


def test_api_key_never_appears_in_events_output(requests_mock: Any, capsys: Any) -> None:
    fake = FakeHogQL(spread(5, ANCHOR, UPPER)).register(requests_mock)
    fake.fail_next(429, load_template("error_429_throttled"), {"Retry-After": "1"})

    output = sync(fake)

    assert API_KEY not in everything_emitted(output)
    assert API_KEY not in json.dumps(fake.bodies)
    assert API_KEY not in capsys.readouterr().out


class TestTwoInFlight:
    """The default: the next window's first page is asked for while the current page is read.
    (requests_mock answers one call at a time, so the overlap itself is measured against the
    emulator, in integration_tests/test_events_conditions.py; here: who sent what, and the result.)"""

    def test_given_many_windows_when_read_with_two_in_flight_then_every_event_once_in_order_and_pages_sent_ahead_from_a_second_lane(
        self, requests_mock: Any
    ) -> None:
        import threading

        data = spread(6000, ANCHOR, UPPER - timedelta(hours=1))
        fake = FakeHogQL(data)
        senders = []

        def recorded(request: Any, context: Any) -> Any:
            senders.append(threading.get_ident())
            return fake(request, context)

        requests_mock.post(QUERY_URL, json=recorded)
        output = read_stream("events", SyncMode.incremental, {**config(), "events_queries_in_flight": 2})

        assert Counter(uuids(records(output))) == Counter(event.uuid for event in data)
        assert [r["timestamp"] for r in records(output)] == sorted(r["timestamp"] for r in records(output))
        assert len(set(senders)) == 2, "the pages ahead come from one worker lane"
        assert fake.calls == len(states(output))  # nothing sent ahead was wasted; a STATE after each
        assert not output.errors


class TestLanesEndWithTheRead:
    """Issue #18: the lanes live exactly as long as one project's read (`with QueryLanes(...)`). A
    read that fails while the page sent ahead is still out (PostHog slow, or a Retry-After of
    minutes) ends at once: nothing waits for that lane, and the lane stops at its next attempt."""

    def test_given_a_refused_page_while_the_next_window_is_still_out_when_read_then_the_read_ends_within_seconds(self, requests_mock: Any) -> None:
        import threading

        from freezegun.api import real_monotonic

        data = spread(6000, ANCHOR, UPPER - timedelta(hours=1))
        fake = FakeHogQL(data)
        release = threading.Event()
        pages_asked = []

        def answer(request: Any, context: Any) -> Any:
            if "ORDER BY timestamp ASC, uuid ASC" in request.json()["query"]["query"]:
                pages_asked.append(threading.get_ident())
                if len(pages_asked) == 1:  # the first page: refused
                    context.status_code = 400
                    return {"type": "validation_error", "code": "invalid_input", "detail": "refused for the test", "attr": None}
                release.wait(60)  # the page sent ahead: still out
            return fake(request, context)

        requests_mock.post(QUERY_URL, json=answer)
        started = real_monotonic()
        try:
            output = read_stream("events", SyncMode.incremental, {**config(), "events_queries_in_flight": 2}, expecting_exception=True)
            took = real_monotonic() - started
        finally:
            release.set()

        assert len(pages_asked) == 2, "a second page was sent ahead while the first was read"
        assert "refused for the test" in output.errors[0].trace.error.message
        assert took < 5, f"the failed read waited {took:.1f} s for the lane still out"
