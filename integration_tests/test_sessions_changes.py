"""Sessions by ingestion time (issue #19), against the emulator's v2 and v3 sessions tables.

- After a full sync, PostHog gains new events and late ones (old `timestamp`, ingested now) that
  create and extend sessions; after the incremental sync, the sessions as a deduplicating
  destination holds them (the last record of each `session_id` wins) equal PostHog's sessions
  table field by field: every session complete and fresh.
- From an `anchor_date` ten years before the data, the sessions stream spends at most four
  queries more than the events stream on the same data (both plan from counts; empty history
  costs nothing).
- Kills in the middle of a sessions read resume from the last state with nothing lost.
"""

from __future__ import annotations

import random
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import pytest
import requests

from integration_tests.conftest import SUBPROCESS_ENV, error_messages
from source_posthog.api.hogql import SESSION_COLUMNS
from tools.connector import run_sync, write_catalog, write_config, write_state
from tools.emulator import EmulatorServer

TIME_FIELDS = ("$start_timestamp", "$end_timestamp", "max_inserted_at")
MUTATION = dict(new_events=44, late_events=20, late_events_max_age_days=3)  # 64 new events, 20 of them late


def posthog_sessions(emulator: EmulatorServer, columns: List[str]) -> Dict[str, Dict[str, Any]]:
    """Every session of project 2 as PostHog's `sessions` table serves it now (one HogQL query of its own)."""
    fields = ", ".join(f"`{name}`" if name.startswith("$") else name for name in columns)
    body = {"query": {"kind": "HogQLQuery", "query": f"SELECT {fields} FROM sessions ORDER BY session_id LIMIT 50000",
                      "modifiers": {"convertToProjectTimezone": False}}, "name": "test_truth", "refresh": "blocking"}
    response = requests.post(f"{emulator.url}/api/projects/{emulator.project_id}/query/", json=body,
                             headers={"Authorization": f"Bearer {emulator.api_key}"}, timeout=60)
    response.raise_for_status()
    content = response.json()
    assert not content.get("hasMore"), "the truth query must see every session"
    return {row[0]: dict(zip(content["columns"], row)) for row in content["results"]}


def normalized(row: Mapping[str, Any]) -> Dict[str, Any]:
    def at(value: Any) -> Any:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).replace(tzinfo=None) if value else value

    # the CDK leaves a record's top-level nulls out (the destination reads them as null)
    return {name: at(value) if name in TIME_FIELDS else value for name, value in row.items() if name != "project_id" and value is not None}


def destination(*results: Any) -> Dict[str, Mapping[str, Any]]:
    """What an append + dedup destination holds after these syncs: the last record per session_id."""
    held: Dict[str, Mapping[str, Any]] = {}
    for result in results:
        for record in result.records.get("sessions", []):
            held[record["session_id"]] = record
    return held


def differences(held: Mapping[str, Mapping[str, Any]], truth: Mapping[str, Mapping[str, Any]]) -> List[str]:
    problems = []
    missing, extra = set(truth) - set(held), set(held) - set(truth)
    if missing or extra:
        problems.append(f"{len(missing)} sessions missing (e.g. {sorted(missing)[:3]}), {len(extra)} not in PostHog")
    stale = [sid for sid in set(truth) & set(held) if normalized(held[sid]) != normalized(truth[sid])]
    for sid in sorted(stale)[:5]:
        got, want = normalized(held[sid]), normalized(truth[sid])
        problems.append(f"session {sid} stale: " + ", ".join(f"{k} {got.get(k)!r} != {want.get(k)!r}" for k in set(want) | set(got) if got.get(k) != want.get(k)))
    if len(stale) > 5:
        problems.append(f"... {len(stale)} stale sessions in all")
    return problems


@pytest.mark.parametrize("version", ["v2", "v3"])
def test_given_new_and_late_events_when_the_incremental_sync_runs_then_every_session_is_complete_and_fresh(
    start_emulator: Any, tmp_path: Path, version: str
) -> None:
    emulator = start_emulator(events=5_000, seed=31, sessions_table_version=version)
    config = write_config(tmp_path, emulator.url, emulator.api_key, emulator.project_id, anchor_date="2020-01-01")
    catalog = write_catalog(tmp_path, ["sessions"], incremental=True)
    full = run_sync(config, catalog, env=SUBPROCESS_ENV)
    assert full.returncode == 0, error_messages(full)
    columns = list(SESSION_COLUMNS) + ["max_inserted_at"]
    assert not differences(destination(full), posthog_sessions(emulator, columns))

    changes = emulator.mutate(**MUTATION)
    time.sleep(2)  # past the 1 s ingestion lag
    incremental = run_sync(config, catalog, state=write_state(tmp_path, full.states), env=SUBPROCESS_ENV)

    assert incremental.returncode == 0, error_messages(incremental)
    sessions = changes["sessions"]
    assert sessions["by_late_events"] and sessions["new"], "late events must create or extend sessions here"
    truth = posthog_sessions(emulator, columns)
    assert not differences(destination(full, incremental), truth), f"{version}: the destination differs from PostHog"
    delivered = {record["session_id"] for record in incremental.records["sessions"]}
    changed = set(sessions["new"]) | set(sessions["updated"]) | set(sessions["by_late_events"])
    assert changed <= delivered
    assert len(delivered) < len(truth) / 4, "an incremental sync reads what changed, not the table"


def queries_by_stream(emulator: EmulatorServer) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for entry in emulator.requests():
        name = entry.get("query_name") or ""
        for stream in ("sessions", "events"):
            if name.startswith(f"airbyte_source_posthog_{stream}"):
                counts[stream] = counts.get(stream, 0) + 1
    return counts


def test_given_an_anchor_ten_years_before_the_data_when_synced_then_sessions_cost_at_most_four_queries_more_than_events(
    start_emulator: Any, tmp_path: Path
) -> None:
    emulator = start_emulator(events=13_000, seed=32)
    config = write_config(tmp_path, emulator.url, emulator.api_key, emulator.project_id, anchor_date="2016-01-01")
    result = run_sync(config, write_catalog(tmp_path, ["events", "sessions"], incremental=True), env=SUBPROCESS_ENV)

    assert result.returncode == 0, error_messages(result)
    counts = queries_by_stream(emulator)
    print(f"\nfrom 2016-01-01: {len(result.records['events']):,} events in {counts['events']} queries, "
          f"{len(result.records['sessions']):,} sessions in {counts['sessions']} queries")
    assert counts["sessions"] <= counts["events"] + 4, counts
    unnamed = [entry for entry in emulator.requests() if entry["path"].endswith("/query/") and not entry.get("query_name")]
    assert not unnamed, "every HogQL query carries a name PostHog shows in its query log"


def test_given_kills_during_a_sessions_read_when_each_run_resumes_from_the_last_state_then_nothing_is_lost(
    start_emulator: Any, tmp_path: Path
) -> None:
    emulator = start_emulator(events=30_000, seed=33)
    config = write_config(tmp_path, emulator.url, emulator.api_key, emulator.project_id, anchor_date="2020-01-01")
    catalog = write_catalog(tmp_path, ["sessions"], incremental=True)
    baseline = run_sync(config, catalog, env=SUBPROCESS_ENV)
    assert baseline.returncode == 0, error_messages(baseline)
    assert len(baseline.records["sessions"]) > 20_000, "several pages of 10,000 sessions"
    columns = list(SESSION_COLUMNS) + ["max_inserted_at"]

    rng = random.Random(7)
    runs: List[Any] = []
    states: Dict[str, Mapping[str, Any]] = {}
    kills = 0
    while True:
        state: Optional[Path] = write_state(tmp_path, states, name=f"state_{len(runs)}.json") if states else None
        threshold = rng.randint(20_000, len(baseline.stdout) // 2) if kills < 5 else None
        result = run_sync(config, catalog, state=state, kill_after_bytes=threshold, env=SUBPROCESS_ENV)
        runs.append(result)
        states.update(result.states)
        if not result.killed:
            assert result.returncode == 0, error_messages(result)
            break
        kills += 1
        if kills == 2:  # between two kills PostHog changes: late events extend old sessions
            emulator.mutate(**MUTATION)

    assert kills == 5
    assert sum(1 for run in runs[:-1] if run.records.get("sessions")) >= 3, "most kills land inside the sessions read"
    time.sleep(2)  # the mutation's events past the ingestion lag, then one more incremental sync
    final = run_sync(config, catalog, state=write_state(tmp_path, states, name="state_final.json"), env=SUBPROCESS_ENV)
    assert final.returncode == 0, error_messages(final)
    truth = posthog_sessions(emulator, columns)
    assert not differences(destination(*runs, final), truth)
