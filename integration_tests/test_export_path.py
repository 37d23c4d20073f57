"""export_mode file_download (issue #20) against the emulator's file-download exports.

- A full and an incremental sync around late events, new and updated persons, a merge, a deletion
  and new sessions: every event exactly once, persons and sessions as PostHog has them in a
  deduplicating destination (deleted persons dropped through `_ab_cdc_deleted_at`, moved distinct ids
  under the survivor, the ids PostHog's ingestion derives from them delivered as deletions, which
  drops the merged-away person, whose id the emulator derives as PostHog does), no HogQL query, and
  the API key never sent to the object store.
- An expired link is asked for again through PostHog; runs that end FailedRetryable are started
  again, Failed and FailedBilling stop the stream saying what to do; the 429 for too many runs
  waits in the HTTP policy; a key without batch_export scopes is read over HogQL, said in one line.
- Kills at random moments: each resumed sync polls the runs its state holds (no window's run is
  started twice) and nothing is lost.
- Three projects (UTC, Asia/Kolkata, empty) through exports: each equals its own ground truth, a
  state per project, no HogQL query.

The emulator's export timeline is scaled by 0.01 (a run takes ~0.1 s; the wait past the interval
end 0.6 s) and the connector polls every 0.05 s.
"""

from __future__ import annotations

import json
import random
import uuid
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional

import pytest
import requests

from integration_tests.conftest import ANCHOR_DATE, BASE_TIME, SUBPROCESS_ENV, error_messages
from integration_tests.test_sessions_changes import differences, posthog_sessions
from source_posthog import seams, settings
from source_posthog.api.exports import PERSON_UUIDV5_NAMESPACE
from source_posthog.api.hogql import SESSION_COLUMNS
from source_posthog.streams.exported import ExportReader
from tools.connector import SyncResult, run_sync, write_config, write_state
from tools.emulator import KEYS, FaultConfig
from tools.emulator.exports import ExportSettings

POLL_SECONDS = "0.05"
ENV = {**SUBPROCESS_ENV, seams.EXPORT_POLL_ENV: POLL_SECONDS}
CURSORS = {"events": "timestamp", "persons": "changed_at", "sessions": "max_inserted_at"}
STREAMS = tuple(CURSORS)
FAST = ExportSettings(time_scale=0.01)


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(seams.EXPORT_POLL_ENV, POLL_SECONDS)


def catalog(directory: Path, streams: Iterable[str] = STREAMS) -> Path:
    configured = [
        {
            "stream": {"name": name, "json_schema": {}, "supported_sync_modes": ["full_refresh", "incremental"]},
            "sync_mode": "incremental",
            "destination_sync_mode": "append_dedup",
            "cursor_field": [CURSORS[name]],
        }
        for name in streams
    ]
    path = directory / "export_catalog.json"
    path.write_text(json.dumps({"streams": configured}))
    return path


def config(directory: Path, emulator: Any, key: Optional[str] = None, **fields: Any) -> Path:
    return write_config(directory, emulator.url, key or emulator.api_key, emulator.project_id, anchor_date=ANCHOR_DATE, export_mode="file_download", **fields)


def connector_queries(emulator: Any) -> List[str]:
    """The HogQL queries the connector sent (the test's own truth queries are named test_…)."""
    return [entry.get("query_name") or "?" for entry in emulator.requests() if entry["path"].rstrip("/").endswith("/query") and not str(entry.get("query_name")).startswith("test_")]


def keyed_object_store_requests(emulator: Any) -> List[Mapping[str, Any]]:
    return [entry for entry in emulator.object_store_requests() if any(name.lower() == "authorization" for name in entry.get("headers", {}))]


def posthog_distinct_ids(emulator: Any) -> Dict[str, List[str]]:
    body = {"query": {"kind": "HogQLQuery", "query": "SELECT person_id, distinct_id FROM person_distinct_ids LIMIT 50000"}, "name": "test_truth"}
    response = requests.post(f"{emulator.url}/api/projects/{emulator.project_id}/query/", json=body, headers={"Authorization": f"Bearer {emulator.api_key}"}, timeout=60)
    response.raise_for_status()
    found: Dict[str, List[str]] = {}
    for person, distinct_id in response.json()["results"]:
        found.setdefault(str(person), []).append(distinct_id)
    return {person: sorted(ids) for person, ids in found.items()}


def destination(stream: str, key: str, *results: SyncResult) -> Dict[Any, Mapping[str, Any]]:
    """An append + dedup destination: the last record per key; a record with _ab_cdc_deleted_at drops the row."""
    held: Dict[Any, Mapping[str, Any]] = {}
    for result in results:
        for record in result.records.get(stream, []):
            if record.get("_ab_cdc_deleted_at"):
                held.pop(record[key], None)
            else:
                held[record[key]] = record
    return held


def once_after_the_first_link(monkeypatch: pytest.MonkeyPatch, action: Callable[[str], Any]) -> None:
    """`action(run_id)` once, right after the connector is given its first download link."""
    link = ExportReader._link
    done: List[str] = []

    def link_then_act_once(reader: ExportReader, window: Any, file_id: str) -> str:
        location = link(reader, window, file_id)
        if not done:
            action(window.run_id)
            done.append(window.run_id)
        return location

    monkeypatch.setattr(ExportReader, "_link", link_then_act_once)


def runs_per_window(emulator: Any) -> Counter:
    return Counter((run["model"], run["data_interval_start"]) for run in emulator.exports()["runs"])


def test_given_file_download_when_a_full_and_an_incremental_sync_run_around_late_events_a_merge_and_a_deletion_then_events_persons_and_sessions_are_exact(
    start_emulator: Any, tmp_path: Path
) -> None:
    emulator = start_emulator(events=3_000, seed=41, exports=FAST)
    cfg, cat = config(tmp_path, emulator), catalog(tmp_path)
    full = run_sync(cfg, cat, env=ENV)
    assert full.returncode == 0, error_messages(full)
    assert sorted(full.keys("events")) == sorted(emulator.ground_truth("events"))

    people = emulator.ground_truth("persons")
    into, merged_away, deleted = people[0], people[1], people[2]
    changes = emulator.mutate(new_events=40, late_events=20, late_events_max_age_days=2, new_persons=3, update_persons=[people[3], people[4]],
                              merge_persons=[[into, merged_away]], delete_persons=[deleted], new_sessions=3, grow_ongoing_sessions=True)
    time.sleep(1.5)  # past the 1 s ingestion lag
    incremental = run_sync(cfg, cat, state=write_state(tmp_path, full.states), env=ENV)
    assert incremental.returncode == 0, error_messages(incremental)

    # events: each exactly once over the two syncs, the late ones in the incremental one
    delivered = full.keys("events") + incremental.keys("events")
    assert sorted(delivered) == sorted(emulator.ground_truth("events")), "every event exactly once"
    assert set(changes["events"]["late"]) | set(changes["events"]["new"]) == set(incremental.keys("events"))

    # persons: the destination holds PostHog's persons, each with its distinct ids now
    held = destination("persons", "id", full, incremental)
    truth = posthog_distinct_ids(emulator)
    deletions = {record["id"] for record in incremental.records["persons"] if record.get("_ab_cdc_deleted_at")}
    moved = changes["persons"]["moved_distinct_ids"]
    derived = {str(uuid.uuid5(PERSON_UUIDV5_NAMESPACE, f"{emulator.project_id}:{distinct_id}")) for distinct_id in moved}
    assert deletions == {deleted} | derived, "the deleted person, and the ids PostHog's ingestion would have given the merged-away person"
    assert set(truth) == set(emulator.ground_truth("persons"))
    # PostHog's export has no line for a merged-away person (its distinct ids move to the survivor); its
    # id is derived from one of them (uuidFromDistinctId), and that deletion drops it.
    assert merged_away in derived, "the merged-away person is named by a distinct id that moved"
    assert set(held) == set(truth), (sorted(set(held) - set(truth)), sorted(set(truth) - set(held)))
    stale = [person for person in truth if held[person]["distinct_ids"] != truth[person]]
    assert not stale, f"{len(stale)} persons with other distinct ids than PostHog's, e.g. {stale[:3]}"
    assert set(changes["persons"]["moved_distinct_ids"]) <= set(held[into]["distinct_ids"])
    changed = set(changes["persons"]["new"]) | {people[3], people[4], into, deleted} | derived
    assert {record["id"] for record in incremental.records["persons"]} == changed, "the incremental sync reads what changed"
    assert all(held[person]["properties"].get("emulator_mutation") for person in (people[3], people[4]))

    # sessions: as PostHog's sessions table has them, the changed ones re-delivered
    assert not differences(destination("sessions", "session_id", full, incremental), posthog_sessions(emulator, list(SESSION_COLUMNS)))
    block = changes["sessions"]
    assert set(block["new"]) | set(block["updated"]) | set(block["by_late_events"]) <= set(incremental.keys("sessions"))

    assert connector_queries(emulator) == [], "no HogQL query on the export path"
    assert emulator.object_store_requests() and not keyed_object_store_requests(emulator), "the API key never goes to the object store"
    assert len(runs_per_window(emulator)) == sum(runs_per_window(emulator).values()), "one run per window"


def test_given_an_expired_link_when_a_file_is_fetched_then_a_new_link_is_asked_from_posthog_and_nothing_is_lost(
    start_emulator: Any, workspace: Any, in_process: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator = start_emulator(events=2_000, seed=42, exports=FAST)
    once_after_the_first_link(monkeypatch, emulator.expire_export_links)  # past its hour before the fetch
    ws = workspace(emulator)
    result = in_process.read(config(ws.directory, emulator), catalog(ws.directory, ["events"]))

    assert result.returncode == 0, error_messages(result)
    assert sorted(result.keys("events")) == sorted(emulator.ground_truth("events"))
    store = emulator.object_store_requests()
    assert [entry["status"] for entry in store].count(403) == 1 and store[0]["error_code"] == "AccessDenied"
    downloads = [entry for entry in emulator.requests() if "/download/" in entry["path"]]
    assert len(downloads) == len(store) == sum(len(run["files"]) for run in emulator.exports()["runs"]) + 1
    assert not keyed_object_store_requests(emulator)


def test_given_a_key_without_batch_export_scopes_when_synced_then_hogql_reads_the_streams_and_one_log_line_says_so(
    start_emulator: Any, workspace: Any, in_process: Any, caplog: pytest.LogCaptureFixture
) -> None:
    emulator = start_emulator(events=1_000, seed=43, exports=FAST)
    ws = workspace(emulator, api_key=KEYS["no_batch_exports"])
    result = in_process.read(config(ws.directory, emulator, key=KEYS["no_batch_exports"]), catalog(ws.directory))

    assert result.returncode == 0, error_messages(result)
    lines = [record.getMessage() for record in caplog.records if record.getMessage().startswith("export_mode file_download:")]
    assert len(lines) == 1 and "batch_export:write" in lines[0] and "over HogQL" in lines[0]
    assert sorted(result.keys("events")) == sorted(emulator.ground_truth("events"))
    assert len(result.keys("persons")) == len(emulator.ground_truth("persons"))
    assert connector_queries(emulator) and not emulator.exports()["runs"]


@pytest.mark.parametrize("status", ["FailedRetryable", "TimedOut"])
def test_given_runs_that_end_in_a_retryable_failure_when_synced_then_the_window_is_exported_again_and_nothing_is_lost(
    start_emulator: Any, workspace: Any, in_process: Any, status: str, caplog: pytest.LogCaptureFixture
) -> None:
    emulator = start_emulator(events=1_500, seed=44, exports=FAST)
    emulator.plan_export_outcomes(status, count=2)
    ws = workspace(emulator)
    result = in_process.read(config(ws.directory, emulator), catalog(ws.directory, ["events"]))

    assert result.returncode == 0, error_messages(result)
    assert sorted(result.keys("events")) == sorted(emulator.ground_truth("events"))
    statuses = Counter(run["status"] for run in emulator.exports()["runs"])
    assert statuses[status] == 2 and len([record for record in caplog.records if f"ended {status}" in record.getMessage()]) == 2


def test_given_a_run_that_ends_failed_when_synced_then_the_stream_stops_with_posthogs_error_and_the_next_sync_completes_it(
    start_emulator: Any, workspace: Any, in_process: Any
) -> None:
    emulator = start_emulator(events=1_500, seed=45, exports=FAST)
    ws = workspace(emulator)
    cfg, cat = config(ws.directory, emulator), catalog(ws.directory, ["events"])
    emulator.plan_export_outcomes("Failed", count=1)
    first = in_process.read(cfg, cat)
    assert first.returncode == 1
    assert "ended Failed (An unexpected error has occurred)" in error_messages(first)
    emulator.clear_export_outcomes()
    second = in_process.read(cfg, cat, state=ws.state(first.states, name="after_failed.json"))
    assert second.returncode == 0, error_messages(second)
    assert set(first.keys("events")) | set(second.keys("events")) == set(emulator.ground_truth("events"))


def test_given_a_billing_failure_when_synced_then_the_error_says_what_the_organization_must_do_and_the_next_sync_exports_the_window_anew(start_emulator: Any, workspace: Any, in_process: Any) -> None:
    emulator = start_emulator(events=500, seed=46, exports=FAST)
    emulator.plan_export_outcomes("FailedBilling", count=1)
    ws = workspace(emulator)
    result = in_process.read(config(ws.directory, emulator), catalog(ws.directory, ["events"]))

    assert result.returncode == 1
    (error,) = [error for error in result.errors() if "FailedBilling" in str(error.get("message"))][:1]
    assert error["failure_type"] == "config_error" and "Settings → Billing" in error["message"] and "export_mode" in error["message"]
    billed = [run["id"] for run in emulator.exports()["runs"] if run["status"] == "FailedBilling"]
    again = in_process.read(config(ws.directory, emulator), catalog(ws.directory, ["events"]), state=ws.state(result.states, name="after_billing.json"))
    assert again.returncode == 0, "once billing is fixed, the next sync starts a new run for the window"
    assert set(result.keys("events")) | set(again.keys("events")) == set(emulator.ground_truth("events")) and billed


def test_given_posthogs_limit_of_runs_per_team_when_more_windows_are_due_then_the_429_waits_in_the_http_policy_and_the_sync_completes(
    start_emulator: Any, workspace: Any, in_process: Any
) -> None:
    emulator = start_emulator(events=1_500, seed=47, exports=ExportSettings(time_scale=0.01, max_concurrent_per_team=1))
    in_process.sleep.advance = lambda seconds: time.sleep(0.1)  # a backoff lets the run in flight finish
    ws = workspace(emulator)
    result = in_process.read(config(ws.directory, emulator), catalog(ws.directory, ["events"]))

    assert result.returncode == 0, error_messages(result)
    assert sorted(result.keys("events")) == sorted(emulator.ground_truth("events"))
    refused = [entry for entry in emulator.requests() if entry["path"].endswith("file_download_batch_exports/") and entry["status"] == 429]
    assert refused and len(in_process.backoffs) == len(refused)
    assert in_process.backoffs[0] == 5 + 1, "PostHog's 429 has no Retry-After: the policy's first exponential step (+ the CDK's second)"


def test_given_kills_at_random_moments_when_each_sync_resumes_from_the_last_state_then_no_run_is_started_twice_and_nothing_is_lost(
    start_emulator: Any, tmp_path: Path
) -> None:
    emulator = start_emulator(events=6_000, seed=48, exports=FAST)
    cfg, cat = config(tmp_path, emulator), catalog(tmp_path, ["persons", "sessions", "events"])
    rng = random.Random(11)
    runs: List[SyncResult] = []
    states: Dict[str, Mapping[str, Any]] = {}
    kills = 0
    while True:
        state = write_state(tmp_path, states, name=f"state_{len(runs)}.json") if states else None
        threshold = rng.randint(2_000, 600_000) if kills < 4 else None
        result = run_sync(cfg, cat, state=state, kill_after_bytes=threshold, env=ENV)
        runs.append(result)
        states.update(result.states)
        if not result.killed:
            assert result.returncode == 0, error_messages(result)
            break
        kills += 1

    assert kills == 4
    assert set().union(*(result.keys("events") for result in runs)) == set(emulator.ground_truth("events"))
    assert set().union(*(result.keys("sessions") for result in runs)) == set(emulator.ground_truth("sessions"))
    assert set().union(*(result.keys("persons") for result in runs)) == set(emulator.ground_truth("persons"))
    again = {window: count for window, count in runs_per_window(emulator).items() if count > 1}
    assert not again, f"windows whose run was started twice: {again}"
    assert connector_queries(emulator) == []


def test_given_a_hogql_state_when_export_mode_switches_to_file_download_then_a_log_line_says_where_the_windows_start_and_nothing_is_skipped(
    start_emulator: Any, workspace: Any, in_process: Any, caplog: pytest.LogCaptureFixture
) -> None:
    emulator = start_emulator(events=2_000, seed=49, exports=FAST)
    ws = workspace(emulator)
    cat = catalog(ws.directory, ["events", "sessions"])
    over_hogql = in_process.read(ws.config("hogql"), cat)
    assert over_hogql.returncode == 0, error_messages(over_hogql)
    changes = emulator.mutate(new_events=30, late_events=15, late_events_max_age_days=2)
    time.sleep(1.5)
    exported = in_process.read(config(ws.directory, emulator), cat, state=ws.state(over_hogql.states, name="hogql_state.json"))

    assert exported.returncode == 0, error_messages(exported)
    said = [record.getMessage() for record in caplog.records if "was written with export_mode hogql" in record.getMessage()]
    assert len(said) == 2 and all("nothing is skipped" in line for line in said)
    assert set(changes["events"]["new"]) | set(changes["events"]["late"]) <= set(exported.keys("events"))
    assert set(over_hogql.keys("events")) | set(exported.keys("events")) == set(emulator.ground_truth("events"))
    assert len(exported.keys("events")) < len(over_hogql.keys("events")) / 2, "it goes on from the HogQL cursor, not from anchor_date"


def test_given_an_export_state_when_export_mode_is_hogql_then_the_sync_refuses_it_saying_how_to_go_on(start_emulator: Any, workspace: Any, in_process: Any) -> None:
    emulator = start_emulator(events=500, seed=50, exports=FAST)
    ws = workspace(emulator)
    cat = catalog(ws.directory, ["events"])
    exported = in_process.read(config(ws.directory, emulator), cat)
    assert exported.returncode == 0, error_messages(exported)
    refused = in_process.read(ws.config("hogql"), cat, state=ws.state(exported.states, name="export_state.json"))

    assert refused.returncode == 1 and not refused.records
    message = error_messages(refused)
    assert "export_mode file_download" in message and "set 'export_mode' back to file_download" in message and "reset the events stream" in message


def test_given_a_window_whose_runs_keep_failing_retryably_when_synced_then_the_stream_stops_after_three_runs_and_a_later_sync_completes(
    start_emulator: Any, workspace: Any, in_process: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "EXPORT_RUNS_IN_FLIGHT", 1)  # the three planned outcomes meet the first window's three runs
    emulator = start_emulator(events=1_000, seed=51, exports=FAST)
    ws = workspace(emulator)
    cfg, cat = config(ws.directory, emulator), catalog(ws.directory, ["events"])
    emulator.plan_export_outcomes("Terminated", count=3)
    first = in_process.read(cfg, cat)
    assert first.returncode == 1 and "ended Terminated 3 times" in error_messages(first)
    second = in_process.read(cfg, cat, state=ws.state(first.states, name="after_terminated.json"))
    assert second.returncode == 0, error_messages(second)
    assert set(first.keys("events")) | set(second.keys("events")) == set(emulator.ground_truth("events"))


def test_given_file_download_and_a_key_without_batch_export_scopes_when_checked_then_check_succeeds_and_warns_that_syncs_use_hogql(
    start_emulator: Any, tmp_path: Path
) -> None:
    emulator = start_emulator(events=200, seed=52, exports=FAST)
    checked = run_sync(config(tmp_path, emulator, key=KEYS["no_batch_exports"]), command="check", env=ENV)
    assert checked.returncode == 0 and b'"status":"SUCCEEDED"' in checked.stdout.replace(b" ", b"")
    warned = [line for line in checked.logs if line.startswith("export_mode file_download:")]
    assert len(warned) == 1 and "'batch_export:write'" in warned[0] and "over HogQL" in warned[0]
    allowed = run_sync(config(tmp_path, emulator), command="check", env=ENV)
    assert allowed.returncode == 0 and not [line for line in allowed.logs if line.startswith("export_mode file_download:")]


def test_given_server_errors_resets_and_429s_on_the_export_endpoints_when_synced_then_the_http_policy_retries_them_and_nothing_is_lost(
    start_emulator: Any, workspace: Any, in_process: Any
) -> None:
    emulator = start_emulator(events=2_000, seed=53, exports=FAST)
    emulator.set_faults(FaultConfig({"500": 0.08, "502": 0.04, "reset": 0.04, "429": 0.04}, seed=5))
    ws = workspace(emulator)
    result = in_process.read(config(ws.directory, emulator), catalog(ws.directory, ["events", "persons"]))

    assert result.returncode == 0, error_messages(result)
    assert sorted(result.keys("events")) == sorted(emulator.ground_truth("events"))
    assert set(result.keys("persons")) == set(emulator.ground_truth("persons"))
    faulted = [entry for entry in emulator.requests() if entry.get("fault") and "file_download_batch_exports" in entry["path"]]
    assert faulted and len(in_process.backoffs) >= len(faulted), "every fault on the export API waited in the HTTP policy"


def test_given_files_past_their_lifecycle_when_downloaded_then_the_window_is_exported_again_and_nothing_is_lost(
    start_emulator: Any, workspace: Any, in_process: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator = start_emulator(events=1_500, seed=54, exports=FAST)
    once_after_the_first_link(monkeypatch, emulator.expire_export_files)  # removed by the bucket's lifecycle
    ws = workspace(emulator)
    result = in_process.read(config(ws.directory, emulator), catalog(ws.directory, ["events"]))

    assert result.returncode == 0, error_messages(result)
    assert set(result.keys("events")) == set(emulator.ground_truth("events"))
    (window,) = [window for window, count in runs_per_window(emulator).items() if count > 1]
    assert runs_per_window(emulator)[window] == 2, "the window whose files expired is exported once more"
    assert [entry["error_code"] for entry in emulator.object_store_requests() if entry["status"] == 403] == ["AccessDenied"]


def test_given_three_projects_when_read_through_exports_fully_then_incrementally_then_each_project_equals_its_ground_truth(
    start_emulator: Any, tmp_path: Path
) -> None:
    # Project 4 is in Asia/Kolkata (its windows and files in UTC all the same), project 5 is empty.
    from integration_tests.test_several_projects import PROJECTS, kolkata_events

    emulator = start_emulator(events=1_500, seed=57, exports=FAST)
    emulator.add_events(kolkata_events(300, BASE_TIME - timedelta(days=3), seed=5), project_id=PROJECTS[1])
    cfg = config(tmp_path, emulator, additional_project_ids=list(PROJECTS[1:]))
    cat = catalog(tmp_path, ["events", "persons"])
    full = run_sync(cfg, cat, env=ENV)
    assert full.returncode == 0, error_messages(full)
    emulator.add_events(kolkata_events(30, BASE_TIME - timedelta(days=1), seed=6, ingested_now=True), project_id=PROJECTS[1])
    emulator.mutate(new_events=25, late_events=10, late_events_max_age_days=2)
    time.sleep(1.5)  # past the 1 s ingestion lag
    incremental = run_sync(cfg, cat, state=write_state(tmp_path, full.states), env=ENV)
    assert incremental.returncode == 0, error_messages(incremental)

    for project in PROJECTS:
        events = [record["uuid"] for result in (full, incremental) for record in result.records.get("events", []) if record["project_id"] == project]
        assert sorted(events) == sorted(emulator.ground_truth("events", project_id=project)), f"project {project}: every event once"
        persons = {record["id"] for result in (full, incremental) for record in result.records.get("persons", []) if record["project_id"] == project}
        assert persons == set(emulator.ground_truth("persons", project_id=project)), f"project {project}"
    assert set(full.states["events"]) == {str(project) for project in PROJECTS}, "one export state per project"
    assert not connector_queries(emulator), "no HogQL query in any project"
