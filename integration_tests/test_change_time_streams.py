"""What changes after it was first read, for the REST lists PostHog can read by change time
(issue #19), through the real command against the emulator: an incremental sync delivers the new
and edited insights, experiments and feature flags and the new activity-log entries, and reads
only the newest-first page of each list to find them."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tools.connector import run_sync, write_catalog, write_config, write_state
from tools.emulator import EmulatorConfig, EmulatorServer

ENV = {"SOURCE_POSTHOG_INGESTION_LAG_SECONDS": "1", "SOURCE_POSTHOG_RATE_LIMIT_SCALE": "100"}
STREAMS = ["insights", "experiments", "feature_flags", "activity_log"]


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig(events=1_000, seed=31)) as server:
        yield server


def test_given_edits_and_creations_after_a_sync_when_synced_incrementally_then_exactly_those_arrive_from_one_page_each(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    config = write_config(tmp_path, emulator.url, emulator.api_key, emulator.project_id, anchor_date="2020-01-01")
    catalog = write_catalog(tmp_path, STREAMS, incremental=True)
    first = run_sync(config, catalog, env=ENV)
    assert first.returncode == 0, first.stderr[-2000:]
    truth = emulator.ground_truth()
    for stream in STREAMS:
        assert sorted(first.keys(stream)) == sorted(truth[stream]), f"{stream}: the first sync must hold everything"

    changes = emulator.mutate(updated_insights=4, new_insights=2, updated_experiments=3, new_experiments=1, updated_feature_flags=3,
                              new_feature_flags=2, new_activity_log=5)
    emulator.clear_requests()
    second = run_sync(config, catalog, state=write_state(tmp_path, first.states), env=ENV)

    assert second.returncode == 0, second.stderr[-2000:]
    for stream in ("insights", "experiments", "feature_flags"):
        expected = set(changes[stream]["new"]) | set(changes[stream]["updated"])
        got = set(second.keys(stream))
        assert expected <= got, f"{stream}: {sorted(expected - got)} changed and were not delivered"
        ties = got - expected
        assert len(ties) <= 3, f"{stream}: {len(ties)} unchanged items read again (only ties with the cursor may be)"
    assert set(changes["activity_log"]["new"]) <= set(second.keys("activity_log"))
    lists = [entry for entry in emulator.requests() if any(f"/{stream}/" in entry["path"] for stream in ("insights", "experiments", "feature_flags"))]
    assert all("order" in entry["query"] for entry in lists), "only newest-first pages: no list was read in full"
    assert len(lists) == 1 + 2 + 4, "one page for insights, one per pass for experiments, two per pass for flags"
