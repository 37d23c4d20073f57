"""sessions: PostHog's HogQL `sessions` table (`POST /api/projects/{id}/query/`), read by the
ingestion time of the sessions' events (`max_inserted_at`, issue #19; the plan on its own:
unit_tests/test_sessions_plan.py).

`FakeSessions` answers the connector's two query shapes from an in-memory list of sessions, after
PostHog's own parser: the hourly count and the keyset page, each bounded on `$start_timestamp` and
on a `max_inserted_at` band. Any other shape is a 400 (recorded in `rejected`). It filters, orders by
(`$start_timestamp`, `session_id`) and applies LIMIT as ClickHouse would, and answers with the
HogQLQueryResponse shape of docs/posthog-api.md § 4.2, so paging and state are checked against the
data. Time is frozen at builders.NOW (2025-06-01T12:00Z); the ingestion lag is 120 s.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Optional

import pytest
from airbyte_cdk.models import FailureType, SyncMode, TraceType

from source_posthog import settings
from source_posthog.streams.sessions import Sessions
from unit_tests.builders import API_KEY, PROJECT_URL, ConfigBuilder, load_template, stream_of
from unit_tests.hogql_fake import utc
from unit_tests.reader import config_errors, errors, everything_emitted, final_state, read_stream, records, states
from unit_tests.support.hogql_parser import parse_error

QUERY_URL = f"{PROJECT_URL}/query/"
TEMPLATE = load_template("query_sessions")
COLUMNS = TEMPLATE["columns"]
ANCHOR = "2025-05-01T00:00:00Z"
NOW = utc("2025-06-01T12:00:00Z")
LAG = timedelta(seconds=120)

_TS = r"toDateTime64\('(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6})', 6, 'UTC'\)"
_BAND = r"(?: AND max_inserted_at > " + _TS + r")?" + r" AND max_inserted_at <= " + _TS
_PAGE = re.compile(
    r"SELECT (?P<columns>.+?) FROM sessions WHERE `\$start_timestamp` >= " + _TS + r" AND `\$start_timestamp` < " + _TS + _BAND
    + r"(?: AND \(`\$start_timestamp` > " + _TS + r" OR \(`\$start_timestamp` = " + _TS + r" AND `session_id` > '([0-9a-f-]{36})'\)\))?"
    + r" ORDER BY `\$start_timestamp` ASC, `session_id` ASC LIMIT (\d+)"
)
_COUNT = re.compile(
    r"SELECT toStartOfHour\(`\$start_timestamp`\) AS hour, count\(\) AS sessions FROM sessions WHERE `\$start_timestamp` >= " + _TS
    + r" AND `\$start_timestamp` < " + _TS + _BAND + r" GROUP BY hour ORDER BY hour ASC LIMIT (\d+)"
)


def parse(value: Optional[str]) -> Optional[datetime]:
    return datetime.strptime(value, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=timezone.utc) if value else None


def session_id(n: int) -> str:
    return str(uuid.UUID(int=(0x0190F6A2_0000_7000_8000_000000000000 | n)))


def iso(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Session:
    n: int
    start: datetime
    end: datetime
    inserted: Optional[datetime] = None  # max_inserted_at; default: a second after its end
    pageviews: int = 1

    @property
    def id(self) -> str:
        return session_id(self.n)

    @property
    def max_inserted_at(self) -> datetime:
        return self.inserted or self.end + timedelta(seconds=1)

    def row(self, columns: List[str], offset: timedelta) -> List[Any]:
        zone = timezone(offset)
        values = dict(zip(COLUMNS, TEMPLATE["results"][0]))
        values.update({
            "session_id": self.id,
            "$start_timestamp": self.start.astimezone(zone).isoformat(),
            "$end_timestamp": self.end.astimezone(zone).isoformat(),
            "max_inserted_at": self.max_inserted_at.astimezone(zone).isoformat(),
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
    timeouts_left: int = 0  # answer this many pages with PostHog's 504 (its execution limit)

    def register(self, mocker: Any) -> "FakeSessions":
        mocker.post(QUERY_URL, json=self)
        return self

    def _matching(self, lo: str, hi: str, after: Optional[str], through: str) -> List[Session]:
        return sorted(
            (s for s in self.sessions if parse(lo) <= s.start < parse(hi) and (after is None or s.max_inserted_at > parse(after)) and s.max_inserted_at <= parse(through)),
            key=lambda s: (s.start, s.id),
        )

    def __call__(self, request: Any, context: Any) -> Dict[str, Any]:
        assert request.headers["Authorization"] == f"Bearer {API_KEY}"
        text = request.json()["query"]["query"]
        self.queries.append(text)
        body = dict(TEMPLATE)
        if parse_error(text) is None and (count := _COUNT.fullmatch(text)):
            lo, hi, after, through, limit = count.groups()
            hours: Dict[datetime, int] = {}
            for s in self._matching(lo, hi, after, through):
                hour = s.start.replace(minute=0, second=0, microsecond=0)
                hours[hour] = hours.get(hour, 0) + 1
            body.update(results=[[iso(h), n] for h, n in sorted(hours.items())][: int(limit)], columns=["hour", "sessions"], limit=int(limit))
            return body
        page = _PAGE.fullmatch(text) if parse_error(text) is None else None
        columns = [name.strip().strip("`") for name in page.group("columns").split(",")] if page else []
        if not page or any(name not in COLUMNS for name in columns):
            self.rejected.append(text)
            context.status_code = 400
            return {"type": "validation_error", "code": "hogql_syntax_error", "detail": "Syntax error", "attr": None}
        if self.timeouts_left:
            self.timeouts_left -= 1
            context.status_code = 504
            return {"type": "server_error", "code": "error", "detail": "Query has hit the max execution time before completing.", "attr": None}
        lo, hi, after, through, key_at, key_at_again, key_id, limit = page.groups()[1:]
        rows = self._matching(lo, hi, after, through)
        if key_at is not None:
            assert key_at == key_at_again
            rows = [s for s in rows if (s.start, s.id) > (parse(key_at), key_id)]
        rows = rows[: min(int(limit), 50_000)]
        body.update(results=[s.row(columns, self.render_offset) for s in rows], columns=columns, limit=int(limit))
        return body

    def pages(self) -> List[re.Match]:
        return [m for m in (_PAGE.fullmatch(q) for q in self.queries) if m]

    def counts(self) -> List[re.Match]:
        return [m for m in (_COUNT.fullmatch(q) for q in self.queries) if m]


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(settings, "SESSIONS_PAGE_SIZE", 4)
    return 4


def sync(state: Optional[Dict[str, Any]] = None, mode: SyncMode = SyncMode.incremental, expecting_exception: bool = False, **fields: Any) -> Any:
    builder = ConfigBuilder().with_anchor_date(ANCHOR)
    for key, value in fields.items():
        builder.with_field(key, value)
    return read_stream("sessions", mode, builder.build(), state=state, expecting_exception=expecting_exception)


def ids(output: Any) -> List[str]:
    return [item["session_id"] for item in records(output)]


def spread(count: int, first: int, start: datetime, step: timedelta, length: timedelta = timedelta(minutes=5)) -> List[Session]:
    return [Session(first + k, start + k * step, start + k * step + length) for k in range(count)]


class TestFirstSync:
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

    def test_given_a_session_still_being_ingested_when_read_then_it_is_left_to_the_next_sync(self, requests_mock: Any) -> None:
        done = Session(1, at("2025-06-01T10:00:00Z"), at("2025-06-01T10:30:00Z"))
        ongoing = Session(2, at("2025-06-01T11:00:00Z"), at("2025-06-01T11:59:30Z"), inserted=NOW - timedelta(seconds=30))  # after now − lag
        FakeSessions([done, ongoing]).register(requests_mock)

        output = sync()

        assert ids(output) == [done.id]
        assert final_state(output) == {"inserted_through": iso(NOW - LAG), "project_id": 2}

    def test_given_sessions_when_read_then_records_carry_max_inserted_at_in_utc_and_the_estimate_is_their_count(self, requests_mock: Any) -> None:
        FakeSessions(spread(5, 0, at("2025-05-10T00:00:00Z"), timedelta(hours=3)), render_offset=timedelta(hours=5, minutes=30)).register(requests_mock)

        output = sync()

        first = records(output)[0]
        assert first["max_inserted_at"] == "2025-05-10T00:05:01.000000Z" and first["$start_timestamp"].endswith("Z")
        estimates = [m.trace.estimate.row_estimate for m in output.trace_messages if m.trace.type == TraceType.ESTIMATE]
        assert estimates == [5]

    def test_given_an_anchor_years_before_the_data_when_read_then_empty_history_costs_no_query(self, requests_mock: Any) -> None:
        fake = FakeSessions(spread(30, 0, at("2025-05-20T00:00:00Z"), timedelta(hours=2))).register(requests_mock)

        output = sync(anchor_date="2015-01-01")

        assert len(ids(output)) == 30
        assert len(fake.counts()) == 1 and len(fake.pages()) == 1, "one count, one page: no query walks the empty years"


class TestIncremental:
    def test_given_a_last_watermark_then_the_band_starts_a_tolerance_before_it_and_starts_are_bounded_by_the_lookback(self, requests_mock: Any) -> None:
        fake = FakeSessions([]).register(requests_mock)
        watermark = at("2025-06-01T10:00:00Z")

        sync(state={"inserted_through": iso(watermark), "project_id": 2})

        lo, hi, after, through, _ = fake.counts()[0].groups()
        assert parse(after) == watermark - timedelta(minutes=30), "events_visibility_tolerance_minutes before the last watermark"
        assert parse(through) == NOW - LAG
        assert parse(lo) == watermark - timedelta(minutes=30) - timedelta(days=7) - timedelta(hours=24), "the lookback and a day"

    def test_given_a_session_extended_and_one_created_by_a_late_event_when_synced_then_both_arrive_with_their_new_values(self, requests_mock: Any, frozen_time: Any) -> None:
        old = Session(1, at("2025-05-25T08:00:00Z"), at("2025-05-25T08:10:00Z"))
        growing = Session(2, at("2025-06-01T11:00:00Z"), at("2025-06-01T11:20:00Z"))
        fake = FakeSessions([old, growing]).register(requests_mock)
        first = sync()
        frozen_time.tick(timedelta(hours=1))
        later = NOW + timedelta(hours=1)
        growing.end, growing.inserted, growing.pageviews = at("2025-06-01T11:40:00Z"), later - timedelta(minutes=10), 5
        late = Session(3, at("2025-05-28T09:00:00Z"), at("2025-05-28T09:05:00Z"), inserted=later - timedelta(minutes=5))  # an old start, ingested now
        fake.sessions.append(late)

        second = sync(state=final_state(first))

        got = {r["session_id"]: r for r in records(second)}
        assert set(got) == {growing.id, late.id}, "the unchanged old session is not read again"
        assert got[growing.id]["$pageview_count"] == 5 and got[growing.id]["$end_timestamp"] == "2025-06-01T11:40:00.000000Z"

    def test_given_full_pages_when_read_then_a_state_follows_every_page_and_a_resume_continues_after_it(self, requests_mock: Any, small_pages: int) -> None:
        sessions = spread(10, 0, at("2025-05-10T00:00:00Z"), timedelta(minutes=7))
        FakeSessions(sessions).register(requests_mock)

        output = sync()

        in_pass = [state for state in states(output) if state.get("position")]
        assert in_pass[0]["position"] == {"start": iso(sessions[3].start), "session_id": sessions[3].id}
        resumed = sync(state=in_pass[0])
        assert ids(resumed) == [s.id for s in sessions[4:]]

    def test_given_a_page_over_the_time_limit_when_read_then_a_smaller_window_delivers_every_session(self, requests_mock: Any) -> None:
        sessions = spread(20, 0, at("2025-05-10T00:00:00Z"), timedelta(hours=1))
        fake = FakeSessions(sessions, timeouts_left=2).register(requests_mock)

        output = sync()

        assert fake.timeouts_left == 0, "both 504s were answered"
        assert sorted(ids(output)) == sorted(s.id for s in sessions) and len(ids(output)) == 20
        assert not output.errors and any("query time limit" in log.log.message for log in output.logs)

    def test_given_the_state_of_an_earlier_release_when_read_then_every_session_from_its_start_is_read_again(self, requests_mock: Any) -> None:
        fake = FakeSessions(spread(6, 0, at("2025-05-20T00:00:00Z"), timedelta(days=1))).register(requests_mock)

        output = sync(state={"$start_timestamp": "2025-05-22T00:00:00.000000Z", "session_id": None, "project_id": 2})

        assert ids(output) == [session_id(k) for k in range(2, 6)]
        assert fake.counts()[0].group(3) is None, "every ingestion time: nothing from that start on is skipped"

    def test_given_a_state_when_read_full_refresh_then_it_reads_from_the_anchor_date(self, requests_mock: Any) -> None:
        fake = FakeSessions([Session(1, at("2025-05-02T00:00:00Z"), at("2025-05-02T00:05:00Z"))]).register(requests_mock)

        output = sync(state={"inserted_through": "2025-05-30T00:00:00.000000Z"}, mode=SyncMode.full_refresh)

        assert len(records(output)) == 1 and fake.counts()[0].group(1) == "2025-05-01 00:00:00.000000"

    def test_given_a_watermark_in_the_future_when_read_then_a_config_error_says_to_reset(self, requests_mock: Any) -> None:
        fake = FakeSessions([]).register(requests_mock)

        output = sync(state={"inserted_through": "2025-07-01T00:00:00.000000Z"}, expecting_exception=True)

        (error,) = config_errors(output)
        assert "in the future" in error.message and not fake.queries

    @pytest.mark.parametrize(
        "state, problem",
        [
            ({"inserted_through": "yesterday"}, "not an ISO-8601 timestamp"),
            ({"inserted_through": "2025-05-10T00:00:00Z", "start_floor": "2025-05-01T00:00:00Z", "position": {"start": "2025-05-02T00:00:00Z", "session_id": "x' OR 1=1"}}, "session UUID"),
            ({"inserted_through": "2025-05-10T00:00:00Z", "inserted_after": "2025-05-20T00:00:00Z", "start_floor": "2025-05-01T00:00:00Z", "position": None}, "is after"),
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

        assert len(records(output)) == 1 and not output.errors and fake.counts()[0].group(1) == "2025-05-01 00:00:00.000000"

    def test_given_a_state_of_another_project_when_read_then_it_starts_from_the_anchor_date(self, requests_mock: Any) -> None:
        fake = FakeSessions([]).register(requests_mock)

        sync(state={"inserted_through": "2025-05-30T00:00:00.000000Z", "project_id": 999})

        assert fake.counts()[0].group(1) == "2025-05-01 00:00:00.000000"


class TestSessionsMalformed:
    @pytest.mark.parametrize(
        "body, problem",
        [
            ({"results": "nope", "columns": COLUMNS}, "expected an object with a 'results' list"),
            ({"results": [["2025-05-10T00:00:00Z", "x"]], "columns": ["hour", "sessions"]}, "the sessions counts cannot be read"),
        ],
    )
    def test_given_a_malformed_count_when_read_then_the_sync_fails_with_a_system_error_naming_it(self, requests_mock: Any, body: Dict[str, Any], problem: str) -> None:
        requests_mock.post(QUERY_URL, json=body)

        output = sync(mode=SyncMode.full_refresh, expecting_exception=True)

        error = errors(output)[0]
        assert error.failure_type == FailureType.system_error
        assert "POST /api/projects/2/query/" in error.message and problem in error.message
        assert API_KEY not in everything_emitted(output)

    @pytest.mark.parametrize(
        "row_columns, row, problem",
        [
            (["distinct_id"], ["x"], "no session_id, $start_timestamp, $end_timestamp, max_inserted_at column"),
            (["session_id", "$start_timestamp", "$end_timestamp", "max_inserted_at"], [session_id(1), "soon", "2025-05-10T00:00:00Z", "2025-05-10T00:00:00Z"], "a session row cannot be read"),
            (["session_id", "$start_timestamp", "$end_timestamp", "max_inserted_at"], [42, "2025-05-10T00:00:00Z", "2025-05-10T00:00:00Z", "2025-05-10T00:00:00Z"], "a session row cannot be read"),
        ],
    )
    def test_given_a_malformed_page_when_read_then_the_sync_fails_with_a_system_error_naming_it(self, requests_mock: Any, row_columns: List[str], row: List[Any], problem: str) -> None:
        def answer(request: Any, context: Any) -> Dict[str, Any]:
            if "count()" in request.json()["query"]["query"]:
                return {"results": [["2025-05-10T00:00:00Z", 1]], "columns": ["hour", "sessions"]}
            return {"results": [row], "columns": row_columns}

        requests_mock.post(QUERY_URL, json=answer)

        output = sync(mode=SyncMode.full_refresh, expecting_exception=True)

        assert problem in errors(output)[0].message

    def test_given_a_body_that_is_not_json_when_read_then_the_sync_fails_with_a_system_error(self, requests_mock: Any) -> None:
        requests_mock.post(QUERY_URL, text="<html>oops</html>")

        output = sync(mode=SyncMode.full_refresh, expecting_exception=True)

        assert "the body is not JSON" in errors(output)[0].message


class TestSessionsScope:
    def test_given_a_key_without_query_read_when_a_scope_probe_runs_then_the_stream_reports_the_missing_scope(self, requests_mock: Any) -> None:
        requests_mock.post(QUERY_URL, status_code=403, json={"type": "authentication_error", "code": "permission_denied", "detail": "API key missing required scope 'query:read'", "attr": None})

        message = stream_of(Sessions).missing_scope()

        assert message is not None and "query:read" in message
        sent = json.loads(requests_mock.last_request.body)["query"]["query"]
        assert "FROM sessions" in sent and sent.endswith("LIMIT 1") and parse_error(sent) is None  # a one-row sessions page

    def test_given_a_key_with_query_read_when_a_scope_probe_runs_then_nothing_is_missing(self, requests_mock: Any) -> None:
        requests_mock.post(QUERY_URL, json=dict(TEMPLATE, results=[]))

        assert stream_of(Sessions).missing_scope() is None
