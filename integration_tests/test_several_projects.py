"""Several projects in one connection, with the real `source-posthog` command against the emulator.

Projects: 2 (the emulator's data, UTC), 4 (Asia/Kolkata, +05:30: its events are added here) and 5
(empty). A full sync, then changes in two projects and an incremental sync, then a project added
and one removed, then kills at random moments; and a project the key cannot read.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Sequence, Set, Tuple

import pytest

from tools.connector import ALL_STREAMS, INCREMENTAL_STREAMS, SyncResult, hashable, primary_key, run_sync, write_catalog, write_config, write_state
from tools.emulator import EmulatorConfig, EmulatorServer
from tools.emulator.keys import EMPTY_PROJECT_ID, KEYS, KOLKATA_PROJECT_ID, PROJECT_ID, SECOND_PROJECT_ID

ENV = {"SOURCE_POSTHOG_INGESTION_LAG_SECONDS": "1", "SOURCE_POSTHOG_RATE_LIMIT_SCALE": "100"}
PROJECTS = (PROJECT_ID, KOLKATA_PROJECT_ID, EMPTY_PROJECT_ID)


def kolkata_events(count: int, start: datetime, seed: int, ingested_now: bool = False) -> List[Dict[str, Any]]:
    """Events 30 minutes apart in threes, with ties and half-hour marks (where a +05:30 hour begins);
    ingested 2 s after their timestamp, or (`ingested_now`) now, as the emulator's mutations are."""
    rng = random.Random(seed)
    rows = []
    for n in range(count):
        at = start + timedelta(minutes=30 * (n // 3), microseconds=rng.choice([0, 0, 123_000, rng.randrange(1_000_000)]))
        row = {"event": "$pageview", "timestamp": at.isoformat(), "properties": {"n": n}}
        if not ingested_now:
            row["created_at"] = (at + timedelta(seconds=2)).isoformat()
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    # The dataset ends now (as in test_end_to_end): late events then fall inside the lookback window.
    with EmulatorServer(EmulatorConfig(events=6_000, seed=21)) as server:
        server.add_events(kolkata_events(900, datetime.now(timezone.utc) - timedelta(days=20), seed=4), project_id=KOLKATA_PROJECT_ID)
        yield server


def truth(emulator: EmulatorServer, projects: Sequence[int]) -> Dict[str, Set[Tuple[int, Any]]]:
    """stream → {(project_id, primary key)} over the projects."""
    out: Dict[str, Set[Tuple[int, Any]]] = {stream: set() for stream in ALL_STREAMS}
    for project in projects:
        for stream, keys in emulator.ground_truth(project_id=project).items():
            if stream in out:
                out[stream] |= {(project, hashable(key)) for key in keys}
    return out


def delivered(results: Iterable[SyncResult]) -> Dict[str, Set[Tuple[int, Any]]]:
    out: Dict[str, Set[Tuple[int, Any]]] = {stream: set() for stream in ALL_STREAMS}
    for result in results:
        for stream, records in result.records.items():
            out[stream] |= {(record["project_id"], hashable(primary_key(stream, record))) for record in records}
    return out


def config(directory: Path, emulator: EmulatorServer, projects: Sequence[int], api_key: str = "", **fields: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    return write_config(directory, emulator.url, api_key or emulator.api_key, projects[0], anchor_date="2020-01-01",
                        additional_project_ids=list(projects[1:]), **fields)


def test_given_three_projects_when_synced_fully_then_incrementally_then_with_a_project_added_and_one_removed_then_each_equals_its_ground_truth(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    catalog = write_catalog(tmp_path, ALL_STREAMS, incremental=True)
    emulator.reset_query_stats()
    first = run_sync(config(tmp_path / "a", emulator, PROJECTS), catalog, env=ENV)
    assert emulator.query_stats()["peak_in_flight"] <= 2, "one connection, three projects: never more than two queries in flight"

    assert first.returncode == 0, [e.get("message") for e in first.errors()]
    expected = truth(emulator, PROJECTS)
    got = delivered([first])
    for stream in ALL_STREAMS:
        assert got[stream] == expected[stream], f"{stream}: {len(got[stream] ^ expected[stream])} keys differ"
    assert all(isinstance(record["project_id"], int) for records in first.records.values() for record in records)
    assert {project for project, _ in got["events"]} == {PROJECT_ID, KOLKATA_PROJECT_ID}  # project 5 is empty
    assert len([key for key in got["events"] if key[0] == KOLKATA_PROJECT_ID]) == 900
    assert [record["timestamp"][-1] for record in first.records["events"] if record["project_id"] == KOLKATA_PROJECT_ID].count("Z") == 900
    assert sorted(record["id"] for record in first.records["projects"]) == list(PROJECTS)
    assert set(first.states["events"]) == {str(project) for project in PROJECTS}

    # Changes in two projects, then an incremental sync from the last states.
    changes = emulator.mutate(new_events=40, late_events=5, new_annotations=2, updated_annotations=1)
    new_kolkata = emulator.add_events(kolkata_events(30, datetime.now(timezone.utc) - timedelta(hours=6), seed=5, ingested_now=True), project_id=KOLKATA_PROJECT_ID)
    state = write_state(tmp_path, first.states, name="after_first.json", incremental_only=True)
    second = run_sync(config(tmp_path / "a", emulator, PROJECTS), catalog, state=state, env=ENV)

    assert second.returncode == 0, [e.get("message") for e in second.errors()]
    events = {key for key in delivered([second])["events"]}
    assert {(PROJECT_ID, uuid) for uuid in changes["events"]["new"] + changes["events"]["late"]} <= events
    assert {(KOLKATA_PROJECT_ID, uuid) for uuid in new_kolkata} <= events
    assert len(events) <= len(changes["events"]["new"]) + len(changes["events"]["late"]) + len(new_kolkata), "an incremental sync re-read old events"

    # Project 3 added, project 5 removed: 3 starts from anchor_date, 2 and 4 go on, 5's state is kept
    # unchanged for when it is read again (issue #18: a project absent from a sync keeps its state).
    changed = (PROJECT_ID, KOLKATA_PROJECT_ID, SECOND_PROJECT_ID)
    state = write_state(tmp_path, {**first.states, **second.states}, name="after_second.json", incremental_only=True)
    third = run_sync(config(tmp_path / "b", emulator, changed), catalog, state=state, env=ENV)

    assert third.returncode == 0, [e.get("message") for e in third.errors()]
    assert set(third.states["events"]) == {str(project) for project in changed} | {"5"}
    assert third.states["events"]["5"] == second.states["events"]["5"]
    assert any("written for project 5, which this sync does not read" in line and "kept" in line for line in third.logs)
    third_keys = delivered([third])
    assert {key for key in third_keys["events"] if key[0] != SECOND_PROJECT_ID} == set(), "projects 2 and 4 had nothing new"
    everything = truth(emulator, changed)
    for stream in INCREMENTAL_STREAMS:
        assert {key for key in third_keys[stream] if key[0] == SECOND_PROJECT_ID} == {key for key in everything[stream] if key[0] == SECOND_PROJECT_ID}
    for stream in set(ALL_STREAMS) - set(INCREMENTAL_STREAMS):
        assert third_keys[stream] == everything[stream], f"{stream}: a full refresh must hold every configured project"


def test_given_a_project_the_key_cannot_read_when_synced_then_the_others_sync_and_checkpoint_and_the_sync_fails_naming_it(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    catalog = write_catalog(tmp_path, ["annotations", "events"], incremental=True)
    scoped = config(tmp_path, emulator, (PROJECT_ID, KOLKATA_PROJECT_ID), api_key=KEYS["project_scoped"])  # scoped to project 2

    check = run_sync(scoped, command="check", env=ENV)
    result = run_sync(scoped, catalog, env=ENV)

    assert "Project 4" in check.stdout.decode() and '"FAILED"' in check.stdout.decode()
    assert result.returncode != 0
    assert {project for project, _ in delivered([result])["events"]} == {PROJECT_ID}
    assert delivered([result])["events"] == {key for key in truth(emulator, [PROJECT_ID])["events"]}
    assert set(result.states["events"]) == {str(PROJECT_ID)} and set(result.states["annotations"]) == {str(PROJECT_ID)}
    messages = [str(error.get("message")) for error in result.errors()]
    assert any("403" in message and "access to project 4" in message for message in messages), messages
    for stream in ("annotations", "events"):
        assert any(f"Stream {stream} did not sync for 1 of 2 projects (project 4: " in message for message in messages), messages


def test_given_kills_at_random_moments_of_a_three_project_sync_when_each_resumes_from_its_last_state_then_every_project_is_complete(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    streams = ["projects", "cohorts", "annotations", "persons", "events"]
    catalog = write_catalog(tmp_path, streams, incremental=True)
    path = config(tmp_path, emulator, PROJECTS, events_page_size=1000)
    rng = random.Random(7)
    runs: List[SyncResult] = []
    state = None
    for kill in range(6):
        result = run_sync(path, catalog, state=state, kill_after_bytes=rng.randint(50_000, 4_000_000), env=ENV)
        runs.append(result)
        if not result.killed:
            break
        if result.states:
            merged: Mapping[str, Any] = {**(runs[-2].states if len(runs) > 1 else {}), **result.states}
            state = write_state(tmp_path, merged, name=f"kill_{kill}.json")
    final = run_sync(path, catalog, state=state, env=ENV)
    runs.append(final)

    assert final.returncode == 0, [e.get("message") for e in final.errors()]
    assert any(run.killed for run in runs), "no run was killed: raise the byte counts"
    expected, got = truth(emulator, PROJECTS), delivered(runs)
    for stream in streams:
        assert got[stream] == expected[stream], f"{stream}: {len(expected[stream] - got[stream])} missing after the kills"


def test_the_emulator_shows_a_kolkata_projects_datetimes_and_hours_in_its_zone_unless_the_query_asks_for_utc(emulator: EmulatorServer) -> None:
    # posthog-api.md § 15: DateTimes in the project's zone by default; `convertToProjectTimezone: false` gives UTC.
    import requests

    text = "SELECT toStartOfHour(timestamp) AS hour, count() FROM events GROUP BY hour ORDER BY hour LIMIT 3"
    url = f"{emulator.url}/api/projects/{KOLKATA_PROJECT_ID}/query/"
    headers = {"Authorization": f"Bearer {emulator.api_key}"}

    def ask(**modifiers: Any) -> Dict[str, Any]:
        query = {"kind": "HogQLQuery", "query": text, **({"modifiers": modifiers} if modifiers else {})}
        response = requests.post(url, json={"query": query, "refresh": "blocking"}, headers=headers, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()

    local, utc = ask(), ask(convertToProjectTimezone=False)

    assert local["timezone"] == "Asia/Kolkata" and utc["timezone"] == "UTC"
    assert all(hour.endswith(":00:00+05:30") for hour, _ in local["results"]), local["results"]
    assert all(hour.endswith("Z") for hour, _ in utc["results"]), utc["results"]
    local_hours = {datetime.fromisoformat(hour).astimezone(timezone.utc).minute for hour, _ in local["results"]}
    assert local_hours == {30}, "a +05:30 project's hours start at half past in UTC"
    assert sum(count for _, count in local["results"]) != 0
