"""A sync a user can watch (issue #21, item 5): TRACE ESTIMATE messages from the plans' counts,
progress lines, and a summary per stream and project that matches what was really sent."""

from __future__ import annotations

from typing import Any, List

from airbyte_cdk.models import SyncMode, TraceType, Type

from source_posthog.http import Usage
from source_posthog.progress import Progress
from unit_tests.builders import ConfigBuilder, numbered
from unit_tests.hogql_fake import FakeHogQL, utc
from unit_tests.reader import read_stream

COHORTS = "https://us.posthog.com/api/projects/2/cohorts/"


def estimates(output: Any) -> List[int]:
    return [m.trace.estimate.row_estimate for m in output.trace_messages if m.trace.type == TraceType.ESTIMATE]


def first_record_index(output: Any) -> int:
    return next(i for i, m in enumerate(output.get_message_iterator()) if m.type == Type.RECORD)


def estimate_index(output: Any) -> int:
    return next(i for i, m in enumerate(output.get_message_iterator()) if m.type == Type.TRACE and m.trace.type == TraceType.ESTIMATE)


def test_given_events_when_read_then_one_estimate_equal_to_the_count_comes_before_the_first_record(requests_mock: Any) -> None:
    from unit_tests.integration.test_events import spread

    events = spread(3_000, utc("2025-05-02T00:00:00Z"), utc("2025-05-30T00:00:00Z"))
    FakeHogQL(events).register(requests_mock)

    output = read_stream("events", SyncMode.incremental, ConfigBuilder().with_anchor_date("2025-05-01").build())

    assert len(output.records) == 3_000
    assert estimates(output) == [3_000]
    assert estimate_index(output) < first_record_index(output)


def test_given_persons_when_read_then_the_estimate_is_their_count_before_the_first_record(requests_mock: Any) -> None:
    from unit_tests.integration.test_persons import FakePersonsQuery, current_key, person

    FakePersonsQuery([person(n) for n in range(1, 8)]).register(requests_mock)
    current_key(requests_mock, ["*"])

    output = read_stream("persons")

    assert estimates(output) == [7] and len(output.records) == 7
    assert estimate_index(output) < first_record_index(output)


def test_given_a_read_when_it_ends_then_one_summary_line_per_stream_and_project_counts_what_was_sent(requests_mock: Any) -> None:
    next_url = f"{COHORTS}?limit=1000&offset=1000"
    requests_mock.get(f"{COHORTS}?limit=1000", json={"count": 4, "next": next_url, "previous": None, "results": numbered("cohorts", 3)})
    requests_mock.get(next_url, json={"count": 4, "next": None, "previous": None, "results": numbered("cohorts", 1, start=4)})

    output = read_stream("cohorts")

    lines = [log.log.message for log in output.logs if log.log.message.startswith("Stream cohorts, project 2: ")]
    assert lines == ["Stream cohorts, project 2: read 4 records in 0 s; 2 requests (0 HogQL queries), 0 retries, waited 0.0 s on PostHog."]
    assert requests_mock.call_count == 2
    (summary,) = [log.log.message for log in output.logs if log.log.message.startswith("Sync summary")]
    assert summary == "Sync summary, project 2: 4 records from 1 stream; 2 requests (0 HogQL queries), 0 retries, waited 0.0 s on PostHog."
    assert not [log for log in output.logs if log.log.message == "Finished syncing cohorts"], "the CDK's per-stream line reads as if the sync ended"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Logged:
    def __init__(self) -> None:
        self.lines: List[str] = []

    def info(self, line: str) -> None:
        self.lines.append(line)


def test_given_a_long_read_then_a_line_at_each_tenth_and_at_least_every_30_seconds_with_share_rate_and_time_left() -> None:
    clock, logged = Clock(), Logged()
    progress = Progress("events", 4, Usage(), clock=clock)
    progress.estimated_rows = 100_000
    for step in range(1, 101):  # 1,000 records a second
        clock.now = step
        progress.records = step * 1_000
        progress.maybe_log(logged)

    assert len(logged.lines) == 9, logged.lines  # 10% … 90%: each tenth, and no gap of 30 s between them
    assert logged.lines[0] == (
        "Stream events, project 4: 10,000 of ~100,000 records (10%), 1,000/s, about 90 s left; "
        "0 requests (0 HogQL queries), 0 retries, waited 0.0 s on PostHog so far."
    )

    slow = Progress("sessions", 2, Usage(), clock=clock)
    clock.now, slow.started, slow._last_line = 0.0, 0.0, 0.0
    for second in range(0, 95):
        clock.now = second
        slow.records = second
        slow.maybe_log(logged)
    assert [line.split(":")[1].split(",")[0].strip() for line in logged.lines[9:]] == ["30 records", "60 records", "90 records"]
