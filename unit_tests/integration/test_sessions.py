"""sessions: PostHog's HogQL `sessions` table (`POST /api/projects/{id}/query/`), incremental on `$start_timestamp`.

`FakeSessions` answers the connector's queries from an in-memory list of sessions: it parses the
WHERE clause the connector sends (strictly: any other shape is a 400 `validation_error`, recorded
in `rejected`), filters, orders by (`$start_timestamp`, `session_id`) and applies LIMIT as
ClickHouse would, and answers with the HogQLQueryResponse shape of docs/posthog-api.md § 4.2.
So paging and state are checked against the data, not against canned pages.

Time is frozen at builders.NOW (2025-06-01T12:00Z); the settle time is 30 min (PostHog's
inactivity timeout) + events_visibility_tolerance_minutes (30 by default) = 60 min.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Optional

import pytest
from airbyte_cdk.models import FailureType, SyncMode, Type

from source_posthog.streams.sessions import Sessions
from unit_tests.support.hogql_parser import parse_error
from unit_tests.builders import API_KEY, PROJECT_URL, ConfigBuilder, load_template, stream_of
from unit_tests.hogql_fake import utc
from unit_tests.reader import config_errors, errors, everything_emitted, final_state, read_stream, records

QUERY_URL = f"{PROJECT_URL}/query/"
TEMPLATE = load_template("query_sessions")
COLUMNS = TEMPLATE["columns"]
ANCHOR = "2025-05-01T00:00:00Z"

_TS = r"toDateTime64\('(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6})', 6, 'UTC'\)"
_QUERY = re.compile(
    r"SELECT (?P<columns>.+?) FROM sessions WHERE `\$start_timestamp` >= " + _TS
    + r"(?: AND `\$start_timestamp` < " + _TS + r")?"
    + r"(?: AND \(`\$start_timestamp` > " + _TS + r" OR \(`\$start_timestamp` = " + _TS + r" AND `session_id` > '([0-9a-f-]{36})'\)\))?"
    + r" ORDER BY `\$start_timestamp` ASC, `session_id` ASC LIMIT (\d+)"
)


def session_id(n: int) -> str:
    """Distinct session UUIDs whose string order is n's order."""
    return str(uuid.UUID(int=(0x0190F6A2_0000_7000_8000_000000000000 | n)))


def iso(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Session:
    n: int
    start: datetime
    end: datetime
    pageviews: int = 1

    @property
    def id(self) -> str:
        return session_id(self.n)

    def row(self, columns: List[str], offset: timedelta) -> List[Any]:
        zone = timezone(offset)
        values = dict(zip(COLUMNS, TEMPLATE["results"][0]))
        values.update({
            "session_id": self.id,
            "$start_timestamp": self.start.astimezone(zone).isoformat(),
            "$end_timestamp": self.end.astimezone(zone).isoformat(),
            "$pageview_count": self.pageviews,
            "$session_duration": int((self.end - self.start).total_seconds()),
        })
        return [values[name] for name in columns]


def at(text: str) -> datetime:
    return utc(text)


@dataclass
class FakeSessions:
    sessions: List[Session] = field(default_factory=list)
    render_offset: timedelta = timedelta(0)
    queries: List[str] = field(default_factory=list)
    rejected: List[str] = field(default_factory=list)

    def register(self, mocker: Any) -> "FakeSessions":
        mocker.post(QUERY_URL, json=self)
        return self

    def __call__(self, request: Any, context: Any) -> Dict[str, Any]:
        assert request.headers["Authorization"] == f"Bearer {API_KEY}"
        text = request.json()["query"]["query"]
        self.queries.append(text)
        match = _QUERY.fullmatch(text) if parse_error(text) is None else None  # PostHog's own parser first
        columns = [name.strip().strip("`") for name in match.group("columns").split(",")] if match else []
        if not match or any(name not in COLUMNS for name in columns):
            self.rejected.append(text)
            context.status_code = 400
            return {"type": "validation_error", "code": "syntax_error", "detail": "Syntax error", "attr": None}
        lower, upper, key_at, key_at_again, key_id, limit = match.groups()[1:]
        parse = lambda value: datetime.strptime(value, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=timezone.utc)  # noqa: E731
        rows = [s for s in self.sessions if s.start >= parse(lower) and (upper is None or s.start < parse(upper))]
        if key_at is not None:
            assert key_at == key_at_again
            rows = [s for s in rows if (s.start, s.id) > (parse(key_at), key_id)]
        rows = sorted(rows, key=lambda s: (s.start, s.id))[: min(int(limit), 50_000)]
        body = dict(TEMPLATE)
        body.update(results=[s.row(columns, self.render_offset) for s in rows], columns=columns, limit=int(limit))
        return body

    def bounds(self) -> List[tuple]:
        """(lower, upper) of every query, as sent."""
        return [_QUERY.fullmatch(text).groups()[1:3] for text in self.queries]


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(Sessions, "page_size", 4)
    return 4


def sync(state: Optional[Dict[str, Any]] = None, mode: SyncMode = SyncMode.incremental, **fields: Any) -> Any:
    builder = ConfigBuilder().with_anchor_date(ANCHOR)
    for key, value in fields.items():
        builder.with_field(key, value)
    return read_stream("sessions", mode, builder.build(), state=state, expecting_exception=False)


def ids(output: Any) -> List[str]:
    return [item["session_id"] for item in records(output)]


def spread(count: int, first: int, start: datetime, step: timedelta, length: timedelta = timedelta(minutes=5)) -> List[Session]:
    return [Session(first + k, start + k * step, start + k * step + length) for k in range(count)]


class TestSessionsFullRefresh:
    def test_given_sessions_over_weeks_when_read_then_each_since_anchor_date_is_emitted_once_in_order(self, requests_mock: Any, small_pages: int) -> None:
        before_anchor = spread(3, 0, at("2025-04-28T00:00:00Z"), timedelta(hours=5))
        inside = spread(40, 100, at("2025-05-01T00:00:00Z"), timedelta(hours=17))
        same_start = [Session(500 + k, at("2025-05-20T06:00:00Z"), at("2025-05-20T06:30:00Z")) for k in range(9)]  # > 2 pages share a start
        fake = FakeSessions(before_anchor + inside + same_start).register(requests_mock)

        output = sync(mode=SyncMode.full_refresh)

        expected = sorted(inside + same_start, key=lambda s: (s.start, s.id))
        assert ids(output) == [s.id for s in expected]
        assert not fake.rejected and not output.errors
        assert all("OFFSET" not in query.upper() for query in fake.queries)

    def test_when_read_then_each_query_reads_one_window_of_starts_and_only_the_last_is_unbounded(self, requests_mock: Any) -> None:
        fake = FakeSessions(spread(3, 0, at("2025-05-02T00:00:00Z"), timedelta(days=10))).register(requests_mock)

        sync(mode=SyncMode.full_refresh)

        bounds = fake.bounds()
        assert bounds[0][0] == "2025-05-01 00:00:00.000000"
        assert all(upper is not None for _, upper in bounds[:-1]) and bounds[-1][1] is None
        for (_, upper), (lower, _) in zip(bounds, bounds[1:]):
            assert lower == upper  # windows are contiguous: nothing between them is skipped
        lengths = [utc(u.replace(" ", "T") + "Z") - utc(l.replace(" ", "T") + "Z") for l, u in bounds[:-1]]
        assert lengths[0] == timedelta(days=1) and max(lengths) <= timedelta(days=32)  # sparse windows double, capped

    def test_given_a_dense_stretch_in_a_wide_window_when_a_page_is_full_then_the_rest_is_read_a_day_at_a_time(self, requests_mock: Any, small_pages: int) -> None:
        dense = spread(30, 0, at("2025-05-20T00:00:00Z"), timedelta(hours=2))
        fake = FakeSessions(dense).register(requests_mock)

        output = sync(mode=SyncMode.full_refresh)

        assert ids(output) == [s.id for s in dense]
        bounds = fake.bounds()
        wide = [index for index, (lower, upper) in enumerate(bounds) if lower == "2025-05-16 00:00:00.000000"]
        assert wide and bounds[wide[0]][1] == "2025-06-01 00:00:00.000000"  # 1, 2, 4, 8, then 16 empty-ish days
        assert bounds[wide[0] + 1] == ("2025-05-20 06:00:00.000000", "2025-05-21 06:00:00.000000")  # after its full page: one day

    def test_given_timestamps_in_the_project_zone_when_read_then_records_carry_utc(self, requests_mock: Any) -> None:
        FakeSessions([Session(1, at("2025-05-10T10:00:00Z"), at("2025-05-10T10:20:00Z"))], render_offset=timedelta(hours=2)).register(requests_mock)

        (item,) = records(sync(mode=SyncMode.full_refresh))

        assert (item["$start_timestamp"], item["$end_timestamp"]) == ("2025-05-10T10:00:00.000000Z", "2025-05-10T10:20:00.000000Z")
        assert item["$pageview_count"] == 1 and item["$channel_type"] == "Direct" and item["$is_bounce"] is False


class TestSessionsIncremental:
    def test_given_open_sessions_when_read_then_the_state_is_the_start_of_the_oldest_one_not_settled(self, requests_mock: Any) -> None:
        settled = Session(1, at("2025-06-01T09:00:00Z"), at("2025-06-01T09:20:00Z"))
        open_long = Session(2, at("2025-06-01T10:30:00Z"), at("2025-06-01T11:30:00Z"))  # last event 30 min ago < 60 min settle
        open_new = Session(3, at("2025-06-01T11:40:00Z"), at("2025-06-01T11:45:00Z"))
        FakeSessions([settled, open_long, open_new]).register(requests_mock)

        output = sync()

        assert ids(output) == [settled.id, open_long.id, open_new.id]
        assert final_state(output) == {"$start_timestamp": "2025-06-01T10:30:00.000000Z", "session_id": None, "project_id": 2}

    def test_given_everything_settled_when_read_then_the_state_is_after_the_last_session_read(self, requests_mock: Any) -> None:
        sessions = [Session(1, at("2025-05-30T09:00:00Z"), at("2025-05-30T09:20:00Z")), Session(2, at("2025-06-01T09:00:00Z"), at("2025-06-01T10:50:00Z"))]
        FakeSessions(sessions).register(requests_mock)

        output = sync()

        assert final_state(output) == {"$start_timestamp": "2025-06-01T09:00:00.000000Z", "session_id": sessions[1].id, "project_id": 2}

    def test_given_no_sessions_when_read_then_the_state_never_passes_now_minus_the_settle_time(self, requests_mock: Any) -> None:
        FakeSessions([]).register(requests_mock)

        output = sync(state={"$start_timestamp": "2025-06-01T10:00:00.000000Z", "session_id": None, "project_id": 2})

        assert final_state(output)["$start_timestamp"] == "2025-06-01T10:00:00.000000Z"  # now − 60 min is 11:00: not passed

    def test_given_a_session_that_grew_after_a_sync_when_synced_again_then_it_is_emitted_with_its_final_values(self, requests_mock: Any, frozen_time: Any) -> None:
        old = Session(1, at("2025-06-01T08:00:00Z"), at("2025-06-01T08:10:00Z"))
        ongoing = Session(2, at("2025-06-01T11:30:00Z"), at("2025-06-01T11:55:00Z"), pageviews=2)
        fake = FakeSessions([old, ongoing]).register(requests_mock)
        first = sync()
        assert ids(first) == [old.id, ongoing.id]

        frozen_time.tick(timedelta(minutes=20))  # 12:20: the session grows, a new one starts
        ongoing.end, ongoing.pageviews = at("2025-06-01T12:15:00Z"), 5
        new = Session(3, at("2025-06-01T12:10:00Z"), at("2025-06-01T12:12:00Z"))
        fake.sessions.append(new)
        second = sync(state=final_state(first))

        assert ids(second) == [ongoing.id, new.id]  # `old` had settled: not read again
        grown = records(second)[0]
        assert (grown["$end_timestamp"], grown["$pageview_count"]) == ("2025-06-01T12:15:00.000000Z", 5)

        frozen_time.tick(timedelta(hours=3))  # 15:20: everything settled
        third = sync(state=final_state(second))
        assert ids(third) == [ongoing.id, new.id]  # the last read, now settled: final values again
        fourth = sync(state=final_state(third))
        assert ids(fourth) == []
        assert final_state(fourth) == {"$start_timestamp": "2025-06-01T12:10:00.000000Z", "session_id": new.id, "project_id": 2}

    def test_given_a_state_when_read_full_refresh_then_it_reads_from_the_anchor_date(self, requests_mock: Any) -> None:
        fake = FakeSessions([Session(1, at("2025-05-02T00:00:00Z"), at("2025-05-02T00:05:00Z"))]).register(requests_mock)

        output = sync(state={"$start_timestamp": "2025-05-30T00:00:00.000000Z", "session_id": None}, mode=SyncMode.full_refresh)

        assert len(records(output)) == 1 and fake.bounds()[0][0] == "2025-05-01 00:00:00.000000"

    def test_given_full_pages_when_read_then_a_state_follows_every_page_and_a_resume_continues_after_it(self, requests_mock: Any, small_pages: int) -> None:
        sessions = spread(10, 0, at("2025-05-10T00:00:00Z"), timedelta(minutes=7))
        FakeSessions(sessions).register(requests_mock)

        output = sync()

        seen, after_first_page = 0, None
        for message in output.records_and_state_messages:
            seen += message.type == Type.RECORD
            if message.type == Type.STATE and seen:
                assert seen == small_pages  # the page's records, then its checkpoint
                after_first_page = json.loads(json.dumps(message.state.stream.stream_state.__dict__))["2"]
                break
        assert after_first_page == {"$start_timestamp": iso(sessions[3].start), "session_id": sessions[3].id, "project_id": 2}
        resumed = sync(state=after_first_page)
        assert ids(resumed) == [s.id for s in sessions[4:]]

    def test_given_a_cursor_in_the_future_when_read_then_a_config_error_says_to_reset(self, requests_mock: Any) -> None:
        fake = FakeSessions([]).register(requests_mock)

        output = read_stream("sessions", SyncMode.incremental, ConfigBuilder().build(), state={"$start_timestamp": "2025-07-01T00:00:00Z", "project_id": 2}, expecting_exception=True)

        (error,) = config_errors(output)
        assert "in the future" in error.message and "reset the sessions stream" in error.message
        assert not fake.queries

    @pytest.mark.parametrize(
        "state, problem",
        [
            ({"session_id": None}, "has no '$start_timestamp'"),
            ({"$start_timestamp": "yesterday"}, "is not an ISO-8601 timestamp"),
            ({"$start_timestamp": "2025-05-01T00:00:00Z", "session_id": "x' OR 1=1 --"}, "'session_id' must be null or a session UUID"),
        ],
    )
    def test_given_a_corrupt_state_when_read_then_a_config_error_names_the_problem(self, requests_mock: Any, state: Dict[str, Any], problem: str) -> None:
        fake = FakeSessions([]).register(requests_mock)

        output = read_stream("sessions", SyncMode.incremental, ConfigBuilder().build(), state=state, expecting_exception=True)

        (error,) = config_errors(output)
        assert problem in error.message and not fake.queries

    def test_given_a_completed_full_refresh_state_replayed_when_read_then_it_starts_from_the_anchor_date(self, requests_mock: Any) -> None:
        fake = FakeSessions([Session(1, at("2025-05-02T00:00:00Z"), at("2025-05-02T00:05:00Z"))]).register(requests_mock)

        output = sync(state={"__ab_full_refresh_sync_complete": True})

        assert len(records(output)) == 1 and not output.errors and fake.bounds()[0][0] == "2025-05-01 00:00:00.000000"

    def test_given_a_state_of_another_project_when_read_then_it_starts_from_the_anchor_date(self, requests_mock: Any) -> None:
        fake = FakeSessions([]).register(requests_mock)

        sync(state={"$start_timestamp": "2025-05-30T00:00:00.000000Z", "session_id": None, "project_id": 999})

        assert fake.bounds()[0][0] == "2025-05-01 00:00:00.000000"


class TestSessionsMalformed:
    @pytest.mark.parametrize(
        "body, problem",
        [
            ({"results": "nope", "columns": COLUMNS}, "expected an object with a 'results' list"),
            ({"results": [["x"]], "columns": ["distinct_id"]}, "no session_id, $start_timestamp, $end_timestamp column"),
            ({"results": [[session_id(1), "soon", "2025-05-10T00:00:00Z"]], "columns": ["session_id", "$start_timestamp", "$end_timestamp"]}, "a session row cannot be read"),
            ({"results": [[42, "2025-05-10T00:00:00Z", "2025-05-10T00:00:00Z"]], "columns": ["session_id", "$start_timestamp", "$end_timestamp"]}, "a session row cannot be read"),
        ],
    )
    def test_given_a_malformed_body_when_read_then_the_sync_fails_with_a_system_error_naming_it(self, requests_mock: Any, body: Dict[str, Any], problem: str) -> None:
        requests_mock.post(QUERY_URL, json=body)

        output = read_stream("sessions", SyncMode.full_refresh, ConfigBuilder().with_anchor_date(ANCHOR).build(), expecting_exception=True)

        error = errors(output)[0]
        assert error.failure_type == FailureType.system_error
        assert "POST /api/projects/2/query/" in error.message and problem in error.message
        assert API_KEY not in everything_emitted(output)

    def test_given_a_body_that_is_not_json_when_read_then_the_sync_fails_with_a_system_error(self, requests_mock: Any) -> None:
        requests_mock.post(QUERY_URL, text="<html>oops</html>")

        output = read_stream("sessions", SyncMode.full_refresh, ConfigBuilder().with_anchor_date(ANCHOR).build(), expecting_exception=True)

        assert "the body is not JSON" in errors(output)[0].message


class TestSessionsScope:
    def test_given_a_key_without_query_read_when_a_scope_probe_runs_then_the_stream_reports_the_missing_scope(self, requests_mock: Any) -> None:
        requests_mock.post(QUERY_URL, status_code=403, json={"type": "authentication_error", "code": "permission_denied", "detail": "API key missing required scope 'query:read'", "attr": None})

        message = stream_of(Sessions).missing_scope()

        assert message is not None and "query:read" in message
        sent = json.loads(requests_mock.last_request.body)["query"]["query"]
        assert _QUERY.fullmatch(sent) and sent.endswith("LIMIT 1")  # the probe is a one-row sessions page

    def test_given_a_key_with_query_read_when_a_scope_probe_runs_then_nothing_is_missing(self, requests_mock: Any) -> None:
        FakeSessions([]).register(requests_mock)

        assert stream_of(Sessions).missing_scope() is None
