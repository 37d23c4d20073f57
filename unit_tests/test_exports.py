"""export_mode file_download on its own (source_posthog/api/exports.py, issue #20): the window plan
and its state, what each PostHog run status means, the lines of the files as records, and the
config field. The reading against PostHog's API is integration_tests/test_export_path.py."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest

from source_posthog import settings
from source_posthog.api import exports
from source_posthog.api.exports import ExportState, InvalidExportState, MalformedRun, PersonLines, Verdict, Window
from source_posthog.config import ConfigError, parse_config

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
WEEK = timedelta(days=7)
RUN = "0193f6a2-0000-7000-8000-000000000001"


def assert_back_to_back(windows, start, end):
    assert windows[0].start == start and windows[-1].end == end
    assert all(a.end == b.start for a, b in zip(windows, windows[1:])), "no gap, no overlap"
    assert all(timedelta(0) < w.end - w.start <= WEEK for w in windows), "each window at most a week (PostHog's FILE_DOWNLOAD_MAX_RANGE)"


class TestWindowPlan:
    @pytest.mark.parametrize("days", [0.5, 7, 7.01, 30, 365])
    def test_given_a_first_sync_when_planned_then_back_to_back_windows_of_at_most_a_week_cover_through_to_the_upper_bound(self, days: float) -> None:
        upper = T0 + timedelta(days=days)
        windows = exports.plan_windows(ExportState(T0), upper)
        assert_back_to_back(windows, T0, upper)
        assert len(windows) == -(-int(days * 86400) // int(WEEK.total_seconds()))
        assert all(window.run_id is None for window in windows)

    def test_given_nothing_ingested_since_through_when_planned_then_no_window(self) -> None:
        assert exports.plan_windows(ExportState(T0), T0) == []
        assert exports.plan_windows(ExportState(T0), T0 - timedelta(hours=1)) == []

    def test_given_started_windows_in_the_state_when_resumed_later_then_they_keep_their_bounds_and_runs_and_new_windows_follow(self) -> None:
        started = (Window(T0, T0 + WEEK, RUN, 2, 1), Window(T0 + WEEK, T0 + timedelta(days=9), "r2", 0, 1))
        upper = T0 + timedelta(days=30)
        windows = exports.plan_windows(ExportState(T0, started), upper)
        assert tuple(windows[:2]) == started
        assert_back_to_back(windows, T0, upper)
        assert windows[2].start == T0 + timedelta(days=9) and windows[2].run_id is None

    def test_given_any_order_of_starts_and_deliveries_when_every_state_is_resumed_then_every_moment_is_in_exactly_one_window_and_no_run_is_started_twice(self) -> None:
        """A simulated sync killed after every checkpoint: each resumed sync plans from the state
        it got (through JSON), starts runs only for windows without one, and delivers in order."""
        rng = random.Random(3)
        for _ in range(50):
            upper = T0 + timedelta(days=rng.uniform(1, 60))
            state, started, delivered, in_flight = ExportState(T0), [], [], rng.randint(1, 6)
            while True:
                windows = exports.plan_windows(state, upper)
                if not windows:
                    break
                for index in range(min(in_flight, len(windows))):  # start ahead; a kill may follow any checkpoint
                    if windows[index].run_id is None:
                        windows[index] = windows[index].started(f"run-{len(started)}")
                        started.append((windows[index].start, windows[index].end))
                        state = ExportState.from_dict(exports.with_window(state, windows[index]).to_dict())
                        if rng.random() < 0.2:
                            break
                else:
                    delivered.append((windows[0].start, windows[0].end))
                    state = ExportState.from_dict(exports.delivered(state, windows[0]).to_dict())
                upper += timedelta(hours=rng.uniform(0, 3)) if rng.random() < 0.1 else timedelta(0)
            assert len(started) == len(set(started)), "a window's run is started once"
            assert delivered == sorted(delivered) and all(a[1] == b[0] for a, b in zip(delivered, delivered[1:]))
            assert delivered[0][0] == T0 and delivered[-1][1] == upper == state.through


class TestState:
    def test_given_a_state_with_started_and_planned_windows_when_written_and_read_then_it_is_the_same(self) -> None:
        state = ExportState(T0, (Window(T0, T0 + WEEK, RUN, 3, 2), Window(T0 + WEEK, T0 + 2 * WEEK)))
        written = state.to_dict()
        assert written[exports.STATE_MARK] == exports.STATE_MODE, "an export state is told from a HogQL one by its mark"
        assert ExportState.from_dict(written) == state

    def test_given_a_window_delivered_then_through_moves_to_its_end_and_the_later_windows_stay(self) -> None:
        later = Window(T0 + WEEK, T0 + 2 * WEEK, "r2", 0, 1)
        state = exports.delivered(ExportState(T0, (Window(T0, T0 + WEEK, RUN, 1, 1), later)), Window(T0, T0 + WEEK, RUN, 1, 1))
        assert state == ExportState(T0 + WEEK, (later,))

    @pytest.mark.parametrize(
        "value, problem",
        [
            ({"through": "2025-01-01T00:00:00Z"}, "export_mode"),
            ({"export_mode": "file_download"}, "'through'"),
            ({"export_mode": "file_download", "through": "yesterday"}, "'through'"),
            ({"export_mode": "file_download", "through": "2025-01-01T00:00:00Z", "windows": {}}, "not a list"),
            ({"export_mode": "file_download", "through": "2025-01-01T00:00:00Z", "windows": [{"start": "2025-01-02T00:00:00Z", "end": "2025-01-03T00:00:00Z"}]}, "does not follow"),
            ({"export_mode": "file_download", "through": "2025-01-01T00:00:00Z", "windows": [{"start": "2025-01-01T00:00:00Z", "end": "2025-01-09T00:00:00Z"}]}, "at most a week"),
            ({"export_mode": "file_download", "through": "2025-01-01T00:00:00Z", "windows": [{"start": "2025-01-01T00:00:00Z", "end": "2025-01-02T00:00:00Z", "run_id": 5}]}, "run id"),
            ({"export_mode": "file_download", "through": "2025-01-01T00:00:00Z", "windows": [{"start": "2025-01-01T00:00:00Z", "end": "2025-01-02T00:00:00Z", "run_id": RUN, "files_done": -1}]}, "count"),
        ],
    )
    def test_given_a_corrupt_export_state_when_read_then_it_is_refused_naming_the_problem(self, value: dict, problem: str) -> None:
        with pytest.raises(InvalidExportState, match=problem):
            ExportState.from_dict(value)

    def test_given_a_run_that_must_start_again_then_it_keeps_its_bounds_and_loses_its_run_and_files(self) -> None:
        window = Window(T0, T0 + WEEK, RUN, 4, 2)
        assert window.again() == Window(T0, T0 + WEEK, None, 0, 2)
        assert window.again(attempts=0).attempts == 0
        assert window.again().started("r2") == Window(T0, T0 + WEEK, "r2", 0, 3)


class TestRunStatus:
    @pytest.mark.parametrize(
        "body, verdict",
        [
            ({"status": "Starting"}, Verdict.WAIT),
            ({"status": "Running"}, Verdict.WAIT),  # also a Completed run whose files are not registered yet
            ({"status": "Completed", "files": ["f1", "f2"], "records_completed": 9}, Verdict.DONE),
            ({"status": "Completed", "files": [], "records_completed": 0}, Verdict.DONE),
            ({"status": "FailedRetryable", "error": "An intermittent `RequestTimeout`"}, Verdict.AGAIN),
            ({"status": "TimedOut"}, Verdict.AGAIN),
            ({"status": "Terminated"}, Verdict.AGAIN),
            ({"status": "Cancelled"}, Verdict.AGAIN),
            ({"status": "Failed", "error": "An unexpected error has occurred"}, Verdict.FAILED),
            ({"status": "FailedBilling"}, Verdict.BILLING),  # no `error` key: PostHog sets no latest_error
        ],
    )
    def test_given_each_posthog_status_then_its_verdict(self, body: dict, verdict: Verdict) -> None:
        status = exports.run_status(body)
        assert status.verdict is verdict and status.error == body.get("error")
        if verdict is Verdict.DONE:
            assert status.files == tuple(body["files"]) and status.records == body["records_completed"]

    @pytest.mark.parametrize("body", [{}, [], {"status": "Completed"}, {"status": "Completed", "files": [1]}, {"status": "Exploded"}])
    def test_given_an_unexpected_body_then_it_is_malformed(self, body) -> None:
        with pytest.raises(MalformedRun):
            exports.run_status(body)

    def test_the_billing_message_says_what_to_do(self) -> None:
        message = exports.billing_message("events", 2)
        assert "Settings → Billing" in message and "billed per exported row" in message and "'export_mode'" in message


class TestLines:
    def test_given_a_window_then_the_create_body_asks_json_lines_in_gzip_for_exactly_that_interval(self) -> None:
        body = exports.create_body("persons", T0, T0 + WEEK)
        assert body == {"model": "persons", "data_interval_start": "2025-01-01T00:00:00.000000Z", "data_interval_end": "2025-01-08T00:00:00.000000Z",
                        "file": {"format": "JSONLines", "compression": "gzip", "max_size_mb": settings.EXPORT_FILE_MAX_SIZE_MB}}
        with pytest.raises(ValueError):
            exports.create_body("hogql", T0, T0 + WEEK)

    @pytest.mark.parametrize(
        "value, expected",
        [
            ("2024-06-01T12:00:00.123456+00:00", "2024-06-01T12:00:00.123456Z"),
            ("2024-06-01T12:00:00+00:00", "2024-06-01T12:00:00.000000Z"),  # orjson writes no fraction when it is zero
            ("2024-06-01T12:00:00.123000+00:00", "2024-06-01T12:00:00.123000Z"),  # persons' created_at: milliseconds
            ("2024-06-01T14:00:00.5+02:00", "2024-06-01T12:00:00.500000Z"),  # sessions in the project's time zone
            (None, None),
        ],
    )
    def test_export_timestamps_are_written_as_the_hogql_path_writes_them(self, value, expected) -> None:
        assert exports.utc(value) == expected

    def test_given_an_event_line_then_the_record_has_the_hogql_paths_fields(self) -> None:
        line = {"uuid": "u1", "timestamp": "2024-06-01T12:00:00+00:00", "_inserted_at": "2024-06-02T00:00:00+00:00", "created_at": "2024-06-02T00:00:00+00:00",
                "event": "$pageview", "properties": {"a": 1}, "distinct_id": "d", "elements_chain": "", "person_properties": None, "person_id": "p"}
        record = exports.event_record(line)
        assert set(record) == set(exports.EVENT_FIELDS)
        assert record["timestamp"] == "2024-06-01T12:00:00.000000Z" and record["created_at"] == "2024-06-02T00:00:00.000000Z" and record["properties"] == {"a": 1}

    def test_given_a_session_line_then_the_record_has_the_hogql_sessions_names(self) -> None:
        line = {theirs: None for theirs, _ in exports.SESSION_FIELDS}
        line.update(session_id="s", start_timestamp="2024-06-01T12:00:00+00:00", end_timestamp="2024-06-01T12:30:00.5+00:00", is_bounce=0,
                    pageview_count=3, _inserted_at="2024-06-01T12:31:00+00:00", urls=["x"])
        record = exports.session_record(line)
        assert record["$start_timestamp"] == "2024-06-01T12:00:00.000000Z" and record["$end_timestamp"] == "2024-06-01T12:30:00.500000Z"
        assert record["$pageview_count"] == 3 and record["$is_bounce"] is False and record["max_inserted_at"] == "2024-06-01T12:31:00.000000Z"
        assert "urls" not in record and "start_timestamp" not in record

    def test_given_a_persons_lines_in_any_order_then_one_record_with_every_distinct_id_and_the_latest_change(self) -> None:
        lines = [
            {"distinct_id": f"d{n}", "person_id": "p1", "properties": {"plan": "pro"}, "person_distinct_id_version": n, "person_version": 2,
             "created_at": "2024-01-01T00:00:00.123000+00:00", "_inserted_at": f"2024-06-0{n + 1}T00:00:00+00:00", "is_deleted": False}
            for n in (2, 0, 1)
        ]
        persons: dict = {}
        for line in lines:
            exports.add_person_line(persons, line)
        record = exports.person_record("p1", persons["p1"])
        assert record["distinct_ids"] == ["d0", "d1", "d2"] and record["changed_at"] == "2024-06-03T00:00:00.000000Z"
        assert record["_ab_cdc_deleted_at"] is None and record["properties"] == {"plan": "pro"} and record["created_at"] == "2024-01-01T00:00:00.123000Z"

    def test_given_a_deleted_persons_lines_then_the_record_carries_airbytes_deletion_mark(self) -> None:
        line = {"distinct_id": "d", "person_id": "p", "properties": {}, "created_at": "2024-01-01T00:00:00+00:00", "_inserted_at": "2024-06-01T00:00:00+00:00", "is_deleted": True}
        record = exports.person_record("p", PersonLines(line, ["d"], line["_inserted_at"], True))
        assert record["_ab_cdc_deleted_at"] == record["changed_at"] == "2024-06-01T00:00:00.000000Z"


class TestConfig:
    BASE = {"api_key": "phx_abc", "project_id": 2}

    def test_given_no_export_mode_then_hogql_the_path_of_every_earlier_release(self) -> None:
        assert parse_config(self.BASE).export_mode == "hogql" and not parse_config(self.BASE).exports

    def test_given_file_download_then_the_streams_read_through_exports(self) -> None:
        assert parse_config({**self.BASE, "export_mode": "file_download"}).exports

    @pytest.mark.parametrize("value", ["parquet", 1, True, "batch"])
    def test_given_another_value_then_a_config_error_names_the_field_and_the_fix(self, value) -> None:
        with pytest.raises(ConfigError) as error:
            parse_config({**self.BASE, "export_mode": value})
        assert error.value.field == "export_mode" and "'hogql'" in error.value.message and "billed per exported row" in error.value.message


class TestGzipLines:
    """streams/exported.py `gzip_lines`: PostHog's JSON lines exports in gzip, one member per line."""

    LINES = [orjson_line for orjson_line in (b'{"n":%d,"pad":"%s"}' % (n, b"x" * (n % 97)) for n in range(3000))]

    @staticmethod
    def chunks(data: bytes, rng: random.Random):
        position = 0
        while position < len(data):
            size = rng.choice((1, 7, 100, 4096, 16384, 100_000))
            yield data[position:position + size]
            position += size

    @pytest.mark.parametrize("seed", range(4))
    def test_given_one_member_per_line_in_chunks_of_any_size_then_every_line_once_in_order(self, seed: int) -> None:
        import gzip

        from source_posthog.streams.exported import gzip_lines

        data = b"".join(gzip.compress(line + b"\n") for line in self.LINES)
        assert list(gzip_lines(self.chunks(data, random.Random(seed)))) == self.LINES

    def test_given_one_member_for_the_whole_file_then_the_same_lines(self) -> None:
        import gzip

        from source_posthog.streams.exported import gzip_lines

        data = gzip.compress(b"\n".join(self.LINES))  # no newline after the last line
        assert list(gzip_lines(self.chunks(data, random.Random(9)))) == self.LINES

    def test_given_a_stream_cut_inside_a_member_then_eof_error_not_a_short_file(self) -> None:
        import gzip

        from source_posthog.streams.exported import gzip_lines

        data = b"".join(gzip.compress(line + b"\n") for line in self.LINES[:10])
        with pytest.raises(EOFError):
            list(gzip_lines(iter([data[:-5]])))


def test_given_is_deleted_as_clickhouses_uint8_then_the_person_is_deleted_all_the_same() -> None:
    persons: dict = {}
    for deleted in (0, 1):
        exports.add_person_line(persons, {"distinct_id": f"d{deleted}", "person_id": "p", "properties": {}, "created_at": "2024-01-01T00:00:00+00:00",
                                          "_inserted_at": "2024-06-01T00:00:00+00:00", "is_deleted": deleted})
    assert exports.person_record("p", persons["p"])["_ab_cdc_deleted_at"] == "2024-06-01T00:00:00.000000Z"


class TestMergedAway:
    """A merged-away person has no line in PostHog's persons export; its distinct ids appear, moved
    (`person_distinct_id_version` ≥ 1), under the survivor. PostHog's ingestion gives a person the
    UUID of uuid5("{team_id}:{distinct_id}") of the distinct id it was created with (nodejs
    `uuidFromDistinctId`), which names the person the merge deleted."""

    @staticmethod
    def line(distinct_id: str, person_id: str, version: int = 0, deleted: bool = False) -> dict:
        return {"team_id": 2, "distinct_id": distinct_id, "person_id": person_id, "properties": {"email": "a@b.c"}, "person_distinct_id_version": version,
                "person_version": 1, "created_at": "2024-01-01T00:00:00+00:00", "_inserted_at": "2024-06-01T10:00:00+00:00", "is_deleted": deleted}

    @staticmethod
    def records(lines) -> list:
        from source_posthog.streams.exported import person_records

        persons: dict = {}
        for line in lines:
            exports.add_person_line(persons, line)
        return [record for person_id, held in persons.items() for record in person_records(person_id, held)]

    def test_posthogs_derived_person_uuid(self) -> None:
        import uuid

        assert exports.PERSON_UUIDV5_NAMESPACE == uuid.UUID("932979b4-65c3-4424-8467-0b66ec27bc22")  # nodejs person-uuid.ts
        assert str(uuid.uuid5(exports.PERSON_UUIDV5_NAMESPACE, "2:anon-1")) == str(uuid.uuid5(uuid.UUID("932979b4-65c3-4424-8467-0b66ec27bc22"), "2:anon-1"))

    def test_given_a_survivor_with_a_moved_distinct_id_then_the_person_it_came_from_is_delivered_as_a_deletion(self) -> None:
        import uuid

        survivor = str(uuid.uuid5(exports.PERSON_UUIDV5_NAMESPACE, "2:user@example.com"))
        gone = str(uuid.uuid5(exports.PERSON_UUIDV5_NAMESPACE, "2:anon-1"))
        records = self.records([self.line("user@example.com", survivor), self.line("anon-1", survivor, version=1)])
        assert [record["id"] for record in records] == [survivor, gone]
        assert records[0]["distinct_ids"] == ["anon-1", "user@example.com"] and records[0]["_ab_cdc_deleted_at"] is None
        assert records[1]["_ab_cdc_deleted_at"] == records[0]["changed_at"] == "2024-06-01T10:00:00.000000Z" and records[1]["distinct_ids"] == []

    def test_given_no_moved_distinct_id_or_a_deleted_person_or_a_split_then_no_derived_deletion(self) -> None:
        import uuid

        person = str(uuid.uuid5(exports.PERSON_UUIDV5_NAMESPACE, "2:d1"))
        assert len(self.records([self.line("d1", person), self.line("d2", person)])) == 1  # version 0: never moved
        assert len(self.records([self.line("d2", "p-deleted", version=101, deleted=True)])) == 1  # a deletion, not a move
        assert len(self.records([self.line("d1", person, version=1)])) == 1  # moved to the person derived from it (a split)
