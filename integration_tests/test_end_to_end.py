"""The real `source-posthog` command against the emulator: every stream equals the ground truth.

A full sync of all sixteen streams, then the data changes (new, late and updated records), then
an incremental sync from the last state delivers exactly what changed.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from tools.connector import (
    ALL_STREAMS,
    change_time_problems,
    expected_incremental_keys,
    hashable,
    sessions_incremental_problems,
    CHANGE_TIME_STREAMS,
    run_sync,
    write_catalog,
    write_config,
    write_state,
)
from tools.emulator import EmulatorConfig, EmulatorServer

ENV = {"SOURCE_POSTHOG_INGESTION_LAG_SECONDS": "1", "SOURCE_POSTHOG_RATE_LIMIT_SCALE": "100"}


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig(events=30_000, seed=11)) as server:
        yield server


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e")


def test_spec_check_and_discover_describe_the_connector(emulator: EmulatorServer, workdir: Path) -> None:
    config = write_config(workdir, emulator.url, emulator.api_key, emulator.project_id)

    spec = run_sync(None, command="spec", env=ENV)
    check = run_sync(config, command="check", env=ENV)
    discover = run_sync(config, command="discover", env=ENV)

    messages = {cmd: [json.loads(line) for line in out.stdout.splitlines() if line.startswith(b"{")] for cmd, out in
                (("spec", spec), ("check", check), ("discover", discover))}
    assert [m["type"] for m in messages["spec"]].count("SPEC") == 1
    assert [m["connectionStatus"]["status"] for m in messages["check"] if m["type"] == "CONNECTION_STATUS"] == ["SUCCEEDED"]
    (catalog,) = [m["catalog"] for m in messages["discover"] if m["type"] == "CATALOG"]
    streams = {stream["name"]: stream for stream in catalog["streams"]}
    assert set(streams) == set(ALL_STREAMS)
    assert streams["events"]["default_cursor_field"] == ["timestamp"] and streams["events"]["source_defined_primary_key"] == [["uuid"]]
    assert streams["annotations"]["default_cursor_field"] == ["updated_at"]
    assert streams["session_recordings"]["default_cursor_field"] == ["start_time"]
    assert streams["sessions"]["default_cursor_field"] == ["max_inserted_at"] and streams["sessions"]["source_defined_primary_key"] == [["session_id"]]
    assert streams["sessions"]["supported_sync_modes"] == ["full_refresh", "incremental"]


def test_given_full_sync_then_data_changes_when_incremental_sync_then_exactly_the_changes_are_delivered(
    emulator: EmulatorServer, workdir: Path
) -> None:
    config = write_config(workdir, emulator.url, emulator.api_key, emulator.project_id)
    catalog = write_catalog(workdir, ALL_STREAMS, incremental=True)
    truth = emulator.ground_truth()

    full = run_sync(config, catalog, env=ENV)

    assert full.returncode == 0, full.stderr[-2000:]
    for stream in ALL_STREAMS:
        keys = list(map(hashable, full.keys(stream)))
        assert len(keys) == len(set(keys)), f"{stream}: duplicate primary keys in one sync"
        assert set(keys) == set(map(hashable, truth[stream])), f"{stream}: full sync differs from the ground truth"

    changes = emulator.mutate(
        new_events=300, late_events=40, late_events_max_age_days=3, new_annotations=3, updated_annotations=4,
        new_session_recordings=6, grow_ongoing_recordings=True, new_persons=7, new_sessions=5, grow_ongoing_sessions=True,
    )
    truth_after = emulator.ground_truth()
    time.sleep(2)  # past the 1 s ingestion lag the connector leaves at the end of the events range
    state = write_state(workdir, full.states, incremental_only=True)

    incremental = run_sync(config, catalog, state=state, env=ENV)

    assert incremental.returncode == 0, incremental.stderr[-2000:]
    assert len(changes["events"]["late"]) == 40 and len(changes["annotations"]["updated"]) == 4
    for stream in ALL_STREAMS:
        keys = list(map(hashable, incremental.keys(stream)))
        assert len(keys) == len(set(keys)), f"{stream}: duplicate primary keys in one sync"
        if stream == "sessions":
            continue  # the changes, and the tolerance band read again (below)
        if stream in CHANGE_TIME_STREAMS:  # the changes, and the items that tie with the cursor
            assert not change_time_problems(stream, incremental, changes, full.states[stream])
            continue
        assert set(keys) == expected_incremental_keys(stream, changes, truth_after), f"{stream}: incremental sync delivered the wrong records"
    # Sessions, read by ingestion time (issue #19): every session the changes created or grew,
    # late events included, comes with its final values, and the union is the ground truth.
    sessions = changes["sessions"]
    assert len(sessions["updated"]) >= 3 and len(sessions["new"]) >= 5 and sessions["by_late_events"]
    assert not sessions_incremental_problems(incremental, changes, truth_after["sessions"], full.states["sessions"])
    grown = {record["session_id"]: record for record in full.records["sessions"] if record["session_id"] in sessions["updated"]}
    again_emitted = {record["session_id"]: record for record in incremental.records["sessions"]}
    assert all(again_emitted[sid]["$end_timestamp"] > grown[sid]["$end_timestamp"] for sid in grown)
    union = set(full.keys("sessions")) | set(incremental.keys("sessions"))
    assert union == set(truth_after["sessions"])

    # A third sync with nothing changed delivers nothing from the incremental streams.
    again = run_sync(config, catalog, state=write_state(workdir, incremental.states, name="state2.json", incremental_only=True), env=ENV)
    assert again.returncode == 0
    assert {stream: len(again.records.get(stream, [])) for stream in ("events", "annotations")} == {"events": 0, "annotations": 0}


def test_given_the_same_sync_when_read_through_the_cdk_launch_then_records_and_states_are_identical(
    emulator: EmulatorServer, workdir: Path
) -> None:
    """`source-posthog read` writes RECORD lines itself (source_posthog/run.py) for speed; they
    must be what the CDK's own `launch` writes."""
    config = write_config(workdir, emulator.url, emulator.api_key, emulator.project_id)
    catalog = write_catalog(workdir, ALL_STREAMS, incremental=False, name="full_catalog.json")
    launch = [sys.executable, "-c", "import sys; from airbyte_cdk.entrypoint import launch; "
              "from source_posthog import SourcePosthog; launch(SourcePosthog(), sys.argv[1:])"]

    ours = run_sync(config, catalog, env=ENV)
    cdk = run_sync(config, catalog, env=ENV, command_prefix=launch)

    assert ours.returncode == cdk.returncode == 0
    for stream in ALL_STREAMS:
        assert ours.records.get(stream) == cdk.records.get(stream), stream

    def without_clock(composite: dict) -> dict:
        # The events watermark, and a position at the end of the range, are "now" of each run.
        def one(state: dict) -> dict:
            clock = {"ingested_through", "timestamp"} if state.get("uuid", "") is None else {"ingested_through"}
            clock |= {"inserted_through"}  # sessions: now − the ingestion lag
            return {key: value for key, value in state.items() if key not in clock}

        return {project: one(state) for project, state in composite.items()}

    assert {s: without_clock(v) for s, v in ours.states.items()} == {s: without_clock(v) for s, v in cdk.states.items()}
    assert ours.state_count == cdk.state_count
