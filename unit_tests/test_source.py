"""The source as a whole: state checked before any request, record counts in STATE, the layers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, List

import pytest
from airbyte_cdk.models import SyncMode
from airbyte_cdk.test.catalog_builder import CatalogBuilder
from airbyte_cdk.test.entrypoint_wrapper import read
from airbyte_cdk.test.mock_http import HttpMocker
from airbyte_cdk.test.state_builder import StateBuilder

from source_posthog.run import PostHogEntrypoint
from source_posthog.source import SourcePosthog
from unit_tests.builders import ConfigBuilder, PostHogRequest, PostHogResponse, numbered
from unit_tests.reader import config_errors, final_state, read_stream, records

def test_given_a_corrupt_state_for_a_later_stream_when_read_then_config_error_before_the_first_request(requests_mock: Any) -> None:
    """`cohorts` comes before `events` in a sync: without the early check, cohorts would be read
    and the sync would fail halfway, on the events state."""
    cohorts = requests_mock.get("https://us.posthog.com/api/projects/2/cohorts/", json={"count": 0, "next": None, "previous": None, "results": []})
    catalog = CatalogBuilder().with_stream("cohorts", SyncMode.full_refresh).with_stream("events", SyncMode.incremental).build()
    state = StateBuilder().with_stream_state("events", {"timestamp": "not a time"}).build()

    output = read(SourcePosthog(), ConfigBuilder().build(), catalog, state, expecting_exception=True)

    (error, *_) = config_errors(output)
    assert "events" in error.message and "not a time" in error.message
    assert cohorts.call_count == 0 and requests_mock.call_count == 0
    assert output.records == []


def test_given_records_and_pages_when_read_through_the_command_then_each_state_counts_the_records_since_the_last(http_mocker: HttpMocker, tmp_path: Path) -> None:
    next_url = "https://us.posthog.com/api/projects/2/cohorts/?limit=1000&offset=1000"
    http_mocker.get(PostHogRequest.cohorts().with_limit(1000).build(), PostHogResponse.page("cohorts").with_records(numbered("cohorts", 3)).with_next(next_url).build())
    http_mocker.get(PostHogRequest.from_next_url(next_url).build(), PostHogResponse.page("cohorts").with_records(numbered("cohorts", 2, start=4)).build())
    config, catalog = tmp_path / "config.json", tmp_path / "catalog.json"
    config.write_text(json.dumps(ConfigBuilder().build()))
    from airbyte_cdk.models import ConfiguredAirbyteCatalogSerializer

    catalog.write_text(json.dumps(ConfiguredAirbyteCatalogSerializer.dump(CatalogBuilder().with_stream("cohorts", SyncMode.full_refresh).build())))
    args = argparse.Namespace(command="read", config=str(config), catalog=str(catalog), state=None, debug=False)

    messages = [json.loads(line) for line in PostHogEntrypoint(SourcePosthog()).read_lines(args)]

    counts: List[float] = []
    since_last = 0
    for message in messages:
        if message["type"] == "RECORD":
            since_last += 1
        elif message["type"] == "STATE":
            assert message["state"]["sourceStats"]["recordCount"] == since_last
            counts.append(since_last)
            since_last = 0
    assert counts[:2] == [3, 2] and sum(counts) == 5


class TestIncomingState:
    """What a replayed state means (PyAirbyte and the shell pass the last STATE back)."""

    COHORTS = "https://us.posthog.com/api/projects/2/cohorts/"

    def _two_pages(self, requests_mock: Any) -> Any:
        next_url = f"{self.COHORTS}?limit=1000&offset=1000"
        first = requests_mock.get(f"{self.COHORTS}?limit=1000", json={"count": 4, "next": next_url, "previous": None, "results": numbered("cohorts", 3)})
        second = requests_mock.get(next_url, json={"count": 4, "next": None, "previous": None, "results": numbered("cohorts", 1, start=4)})
        return first, second

    def test_given_a_completed_full_refresh_state_when_read_then_the_list_is_read_again_from_the_first_page(self, requests_mock: Any) -> None:
        first, second = self._two_pages(requests_mock)

        output = read_stream("cohorts", state={"__ab_full_refresh_sync_complete": True})

        assert [r["id"] for r in records(output)] == [1, 2, 3, 4]
        assert first.call_count == 1 and second.call_count == 1

    def test_given_a_state_left_mid_stream_when_read_then_it_resumes_from_its_page(self, requests_mock: Any) -> None:
        first, second = self._two_pages(requests_mock)

        output = read_stream("cohorts", state={"next": "/api/projects/2/cohorts/?limit=1000&offset=1000"})

        assert [r["id"] for r in records(output)] == [4]
        assert first.call_count == 0 and second.call_count == 1

    def test_given_a_mid_stream_state_of_another_project_when_read_then_this_project_is_read_from_the_first_page(self, requests_mock: Any) -> None:
        first, second = self._two_pages(requests_mock)
        foreign = requests_mock.get("https://us.posthog.com/api/projects/7/cohorts/", json={"count": 0, "next": None, "previous": None, "results": []})

        output = read_stream("cohorts", state={"next": "/api/projects/7/cohorts/?limit=1000&offset=1000"})

        assert [r["id"] for r in records(output)] == [1, 2, 3, 4]
        assert foreign.call_count == 0
        assert any("another project" in log.log.message for log in output.logs)

    def test_given_an_incremental_state_of_another_project_when_read_then_this_project_starts_from_anchor_date(self, requests_mock: Any) -> None:
        from unit_tests.hogql_fake import FakeHogQL, make_events, utc
        from datetime import timedelta

        events = make_events(5, utc("2025-05-02T00:00:00Z"), step=timedelta(hours=1))
        fake = FakeHogQL(events).register(requests_mock)
        state = {"timestamp": "2025-05-31T00:00:00.000000Z", "uuid": None, "ingested_through": "2025-05-31T00:00:00.000000Z", "project_id": 7}

        output = read_stream("events", SyncMode.incremental, state=state)

        assert sorted(r["uuid"] for r in records(output)) == sorted(e.uuid for e in events)
        assert final_state(output)["project_id"] == 2
        assert any("written for project 7" in log.log.message for log in output.logs)
        assert fake.calls >= 1


@pytest.mark.parametrize(
    "granted, needed, covered",
    [(["*"], "query:read", True), (["query:read"], "query:read", True), (["query:write"], "query:read", True),
     (["query:read"], "person:read", False), (["person:write"], "person:write", True), (["person:read"], "person:write", False)],
)
def test_a_scope_is_covered_by_itself_its_write_form_or_star(granted: List[str], needed: str, covered: bool) -> None:
    from source_posthog.api.scopes import covers

    assert covers(granted, needed) is covered


def test_a_legacy_key_without_scopes_is_described_as_star() -> None:
    from source_posthog.api.scopes import granted_scopes

    assert granted_scopes({"scopes": []}) == ["*"] and granted_scopes({"detail": "x"}) is None


def test_given_the_command_starts_then_glibc_is_asked_for_one_malloc_arena_before_anything_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    # The lanes' threads would each hold a page in their own arena (about 40 MB each at 1M events).
    import source_posthog.run as run_module

    calls: List[str] = []
    monkeypatch.setattr(run_module, "one_malloc_arena", lambda: calls.append("arena") and None)
    monkeypatch.setattr(run_module, "launch", lambda entrypoint, args: calls.append(f"launch {args}"))

    run_module.run(["spec"])

    assert calls == ["arena", "launch ['spec']"]


def test_given_glibc_when_asking_for_one_malloc_arena_then_mallopt_accepts_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from source_posthog.process import ARENA_ENV, one_malloc_arena

    monkeypatch.delenv(ARENA_ENV, raising=False)
    assert one_malloc_arena() == "one malloc arena (mallopt; set MALLOC_ARENA_MAX to choose)"  # this machine's C library is glibc


def test_given_the_operator_set_malloc_arena_max_then_it_is_left_as_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from source_posthog import process

    monkeypatch.setenv(process.ARENA_ENV, "4")
    monkeypatch.setattr(process.ctypes, "CDLL", lambda *args: pytest.fail("mallopt must not be called"))

    assert process.one_malloc_arena() == "MALLOC_ARENA_MAX=4 from the environment"


def test_the_image_sets_one_malloc_arena_in_its_environment() -> None:
    from pathlib import Path

    assert "ENV MALLOC_ARENA_MAX=1" in (Path(__file__).resolve().parent.parent / "Dockerfile").read_text()


class TestStateFileShapes:
    """Issue #21, item 3: every shape a client may pass is read or refused, never ignored silently."""

    STATE = {"updated_at": "2025-05-10T00:00:00.000000Z"}

    def read_with(self, requests_mock: Any, tmp_path: Any, raw: Any) -> Any:
        from unit_tests.builders import record

        items = [record("annotations", id=1, updated_at="2025-05-01T00:00:00.000000Z"), record("annotations", id=2, updated_at="2025-05-20T00:00:00.000000Z")]
        requests_mock.get("https://us.posthog.com/api/projects/2/annotations/", json={"count": 2, "next": None, "previous": None, "results": items})
        path = tmp_path / "state.json"
        path.write_text(json.dumps(raw))
        states = SourcePosthog().read_state(str(path))
        catalog = CatalogBuilder().with_stream("annotations", SyncMode.incremental).build()
        return read(SourcePosthog(), ConfigBuilder().build(), catalog, states)

    @pytest.mark.parametrize(
        "raw",
        [
            pytest.param([{"type": "LEGACY", "data": {"annotations": STATE}}], id="legacy-message"),
            pytest.param({"annotations": STATE}, id="legacy-object"),
            pytest.param([{"type": "GLOBAL", "global": {"shared_state": {}, "stream_states": [{"stream_descriptor": {"name": "annotations"}, "stream_state": STATE}]}}], id="global"),
            pytest.param([{"type": "STREAM", "stream": {"stream_descriptor": {"name": "annotations"}, "stream_state": STATE}}], id="stream"),
        ],
    )
    def test_given_any_protocol_shape_of_state_when_read_then_the_streams_state_is_used(self, requests_mock: Any, tmp_path: Any, raw: Any) -> None:
        output = self.read_with(requests_mock, tmp_path, raw)

        assert [r["id"] for r in records(output)] == [2], "only the annotation updated after the state's cursor"

    @pytest.mark.parametrize("raw", [[], {}], ids=["empty-list", "empty-object"])
    def test_given_an_empty_state_when_read_then_the_log_says_every_stream_starts_from_the_beginning(self, requests_mock: Any, tmp_path: Any, raw: Any) -> None:
        output = self.read_with(requests_mock, tmp_path, raw)

        assert [r["id"] for r in records(output)] == [1, 2]
        assert any("no stream has a state, so every stream syncs from the start" in log.log.message for log in output.logs)

    def test_given_a_state_for_a_stream_not_in_the_catalog_when_read_then_a_warning_says_it_is_not_used(self, requests_mock: Any, tmp_path: Any, caplog: Any) -> None:
        raw = [{"type": "STREAM", "stream": {"stream_descriptor": {"name": "cohorts"}, "stream_state": {"next": "/api/projects/2/cohorts/?offset=1000"}}},
               {"type": "STREAM", "stream": {"stream_descriptor": {"name": "nonsense"}, "stream_state": {}}}]

        output = self.read_with(requests_mock, tmp_path, raw)

        warnings = [log.log.message for log in output.logs if log.log.level.value == "WARN"]
        assert any("stream 'cohorts', which this sync's catalog does not select" in line for line in warnings), warnings
        read_state_logs = [record.getMessage() for record in caplog.records]  # read_state runs before read
        assert any("stream 'nonsense', which this connector does not have" in line for line in read_state_logs), read_state_logs

    def test_given_a_state_file_that_is_no_state_then_a_config_error_says_what_it_holds(self, tmp_path: Any) -> None:
        from source_posthog.state import StateFileError

        path = tmp_path / "state.json"
        path.write_text(json.dumps([{"type": "NONSENSE"}]))

        with pytest.raises(StateFileError) as raised:
            SourcePosthog().read_state(str(path))

        assert "entry 1 is not an Airbyte state message" in raised.value.message and "stream 'state file'" not in raised.value.message
