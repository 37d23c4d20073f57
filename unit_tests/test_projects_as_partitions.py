"""Several projects in one connection: each project is a partition of each stream
(streams/base.py): records, the one state shape `{"<project_id>": state}`, stream statuses, and a
project that cannot be read."""

from __future__ import annotations

from typing import Any, Dict, List

from airbyte_cdk.models import AirbyteStreamStatus, SyncMode, TraceType

from unit_tests.builders import ConfigBuilder, record
from unit_tests.reader import composite_states, read_stream

BASE = "https://us.posthog.com/api/projects"


def annotations_of(requests_mock: Any, project_id: int, updated: List[str]) -> Any:
    items = [record("annotations", id=project_id * 100 + n, updated_at=at) for n, at in enumerate(updated)]
    return requests_mock.get(f"{BASE}/{project_id}/annotations/", json={"count": len(items), "next": None, "previous": None, "results": items})


def config(*additional: int, **fields: Any) -> Dict[str, Any]:
    built = ConfigBuilder().with_field("additional_project_ids", list(additional)).with_anchor_date("2025-01-01")
    for key, value in fields.items():
        built = built.with_field(key, value)
    return built.build()


def statuses(output: Any) -> List[AirbyteStreamStatus]:
    return [message.trace.stream_status.status for message in output.trace_messages if message.trace.type == TraceType.STREAM_STATUS]


def test_given_two_projects_when_read_incrementally_then_each_record_names_its_project_and_the_state_is_kept_per_project(requests_mock: Any) -> None:
    annotations_of(requests_mock, 2, ["2025-05-01T00:00:00.000000Z"])
    annotations_of(requests_mock, 3, ["2025-06-01T00:00:00.000000Z", "2025-06-02T00:00:00.000000Z"])

    output = read_stream("annotations", SyncMode.incremental, config=config(3))

    assert sorted((r.record.data["project_id"], r.record.data["id"]) for r in output.records) == [(2, 200), (3, 300), (3, 301)]
    final = composite_states(output)[-1]
    assert set(final) == {"2", "3"}
    assert final["2"]["updated_at"].startswith("2025-05-01") and final["3"]["updated_at"].startswith("2025-06-02")
    assert final["2"]["project_id"] == 2 and final["3"]["project_id"] == 3
    assert statuses(output) == [AirbyteStreamStatus.STARTED, AirbyteStreamStatus.RUNNING, AirbyteStreamStatus.COMPLETE]


def test_given_a_single_project_state_when_a_project_is_added_then_the_first_resumes_and_the_new_one_starts_from_anchor_date(requests_mock: Any) -> None:
    annotations_of(requests_mock, 2, ["2025-05-01T00:00:00.000000Z", "2025-07-01T00:00:00.000000Z"])
    annotations_of(requests_mock, 3, ["2025-02-01T00:00:00.000000Z"])

    output = read_stream("annotations", SyncMode.incremental, config=config(3), state={"updated_at": "2025-06-01T00:00:00.000000Z", "project_id": 2})

    assert sorted((r.record.data["project_id"], r.record.data["id"]) for r in output.records) == [(2, 201), (3, 300)]


def test_given_a_state_of_a_project_no_longer_read_then_it_is_kept_unchanged_saying_so(requests_mock: Any) -> None:
    """Issue #18: a project missing from this sync (no longer configured, or absent from an
    `all_projects` listing after a 403) keeps its state, so it resumes from it when read again."""
    annotations_of(requests_mock, 2, ["2025-05-01T00:00:00.000000Z"])
    annotations_of(requests_mock, 3, ["2025-05-01T00:00:00.000000Z"])
    state = {"2": {"updated_at": "2025-01-02T00:00:00.000000Z", "project_id": 2}, "3": {"updated_at": "2025-01-02T00:00:00.000000Z", "project_id": 3},
             "4": {"updated_at": "2025-01-02T00:00:00.000000Z", "project_id": 4}}

    output = read_stream("annotations", SyncMode.incremental, config=config(3), state=state)

    final = composite_states(output)[-1]
    assert set(final) == {"2", "3", "4"} and final["4"] == state["4"]
    assert any("written for project 4, which this sync does not read" in log.log.message and "kept" in log.log.message for log in output.logs)


def test_given_the_official_connectors_per_project_events_state_when_read_then_each_named_project_resumes_from_its_timestamp(requests_mock: Any) -> None:
    from datetime import timedelta

    from unit_tests.hogql_fake import FakeHogQL, make_events, utc

    events = make_events(4, utc("2025-05-02T00:00:00Z"), step=timedelta(days=10))
    for project_id in (2, 3):
        FakeHogQL(events).register(requests_mock, f"{BASE}/{project_id}/query/")
    official = {"2": {"timestamp": "2025-05-20T00:00:00+00:00"}, "3": {"timestamp": "2025-05-01T00:00:00+00:00"}}

    output = read_stream("events", SyncMode.incremental, config=config(3), state=official)

    by_project: Dict[int, int] = {}
    for message in output.records:
        by_project[message.record.data["project_id"]] = by_project.get(message.record.data["project_id"], 0) + 1
    assert by_project == {2: 2, 3: 4}  # project 2 from May 20 (events of May 22 and June 1), project 3 from May 1


def test_given_a_project_the_key_cannot_read_when_read_then_the_others_sync_and_checkpoint_and_the_sync_fails_naming_it(requests_mock: Any) -> None:
    annotations_of(requests_mock, 2, ["2025-05-01T00:00:00.000000Z"])
    requests_mock.get(f"{BASE}/3/annotations/", status_code=403, json={"type": "authentication_error", "code": "permission_denied", "detail": "You don't have access to the project.", "attr": None})
    annotations_of(requests_mock, 4, ["2025-05-03T00:00:00.000000Z"])

    output = read_stream("annotations", SyncMode.incremental, config=config(3, 4), expecting_exception=True)

    assert sorted(r.record.data["project_id"] for r in output.records) == [2, 4]
    assert set(composite_states(output)[-1]) == {"2", "4"}
    messages = [error.trace.error.message for error in output.errors]
    assert any("project 3" in message for message in messages), messages
    assert any("annotations did not sync for 1 of 3 projects" in message for message in messages), messages
    assert statuses(output)[-1] == AirbyteStreamStatus.INCOMPLETE and statuses(output).count(AirbyteStreamStatus.STARTED) == 1


def test_given_a_single_project_state_written_for_a_project_that_is_not_the_first_then_that_project_resumes_from_it(requests_mock: Any) -> None:
    """Issue #17: a state of the single-project shape belongs to the project it names, whichever
    position that project has in the config; reading it from anchor_date again duplicated its history."""
    from datetime import timedelta

    from unit_tests.hogql_fake import FakeHogQL, make_events, utc

    events = make_events(4, utc("2025-05-02T00:00:00Z"), step=timedelta(days=10))  # May 2, 12, 22, June 1
    for project_id in (2, 3):
        FakeHogQL(events).register(requests_mock, f"{BASE}/{project_id}/query/")
    written_for_3 = {"timestamp": "2025-05-20T00:00:00.000000Z", "uuid": None, "ingested_through": "2025-05-20T00:00:00.000000Z", "project_id": 3}

    output = read_stream("events", SyncMode.incremental, config=config(3), state=written_for_3)

    by_project: Dict[int, int] = {}
    for message in output.records:
        by_project[message.record.data["project_id"]] = by_project.get(message.record.data["project_id"], 0) + 1
    assert by_project == {2: 4, 3: 2}  # project 2 from anchor_date, project 3 after May 20 only
