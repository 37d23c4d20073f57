"""Events under PostHog's real operating conditions, through the real command (issue #11).

The emulator reproduces them (tools/emulator/README.md, "Operating conditions"): an
event becomes queryable some time after its `created_at`; a query over the time limit is a 504.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from tools.connector import run_sync, write_catalog, write_config, write_state
from tools.emulator import EmulatorConfig, EmulatorServer

ENV = {"SOURCE_POSTHOG_INGESTION_LAG_SECONDS": "1", "SOURCE_POSTHOG_RATE_LIMIT_SCALE": "100"}


def iso(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.mark.parametrize("tolerance, delivered", [(30, "all"), (0, "none")])
def test_given_events_stamped_20_minutes_before_they_become_queryable_when_synced_then_all_are_delivered_within_the_tolerance(
    tmp_path: Path, tolerance: int, delivered: str
) -> None:
    with EmulatorServer(EmulatorConfig(events=2_000, seed=5)) as emulator:
        config = write_config(tmp_path, emulator.url, emulator.api_key, emulator.project_id, events_visibility_tolerance_minutes=tolerance)
        catalog = write_catalog(tmp_path, ["events"], incremental=True)
        first = run_sync(config, catalog, env=ENV)
        assert first.returncode == 0, first.stderr[-2000:]

        # An ingestion incident: 48 events stamped 20 minutes ago, queryable only 8 s from now.
        now = datetime.now(timezone.utc)
        rows = [{"timestamp": iso(now - timedelta(minutes=25, seconds=n)), "created_at": iso(now - timedelta(minutes=20)), "event": "incident"} for n in range(48)]
        stuck = set(emulator.add_events(rows, visibility_delay_seconds=20 * 60 + 8))

        during = run_sync(config, catalog, state=write_state(tmp_path, first.states, name="s1.json"), env=ENV)
        assert during.returncode == 0 and not stuck & set(during.keys("events")), "not queryable yet"
        time.sleep(9)
        after = run_sync(config, catalog, state=write_state(tmp_path, during.states, name="s2.json"), env=ENV)

        assert after.returncode == 0, after.stderr[-2000:]
        got = stuck & set(after.keys("events"))
        assert got == (stuck if delivered == "all" else set()), f"{len(got)} of {len(stuck)} delayed events delivered"
        if delivered == "all":
            assert len(after.keys("events")) == len(stuck), "only the minute whose count changed is read again"


def test_given_a_query_over_the_time_limit_when_read_then_smaller_queries_deliver_every_event(tmp_path: Path) -> None:
    # Modeled execution time: 0.1 s + 4 µs per row in range × the columns' share; a 0.25 s limit
    # lets a query scan only ~37k full rows: the 100k-event first window must be split.
    config_emu = EmulatorConfig(events=100_000, seed=6, events_span_days=2, query_cost_model=True, query_time_scale=0.001,
                                query_max_execution_seconds=0.25)
    with EmulatorServer(config_emu) as emulator:
        config = write_config(tmp_path, emulator.url, emulator.api_key, emulator.project_id, anchor_date="2020-01-01", events_page_size=50_000)

        result = run_sync(config, write_catalog(tmp_path, ["events"], incremental=True), env=ENV)

        assert result.returncode == 0, result.stderr[-2000:]
        assert set(result.keys("events")) == set(emulator.ground_truth("events"))
        timed_out = [entry for entry in emulator.requests() if entry["status"] == 504]
        assert timed_out, "the time limit was meant to be hit"


def test_given_slow_queries_when_a_whole_sync_runs_then_two_queries_are_in_flight_never_more_and_events_read_faster(tmp_path: Path) -> None:
    # The emulator's cost model (0.1 s + 4 µs a scanned row + 30 ns a byte returned, ×2) makes every query take real time.
    emulator_config = EmulatorConfig(events=40_000, seed=8, query_cost_model=True, query_time_scale=2.0)
    with EmulatorServer(emulator_config) as emulator:
        from tools.connector import ALL_STREAMS

        def sync(in_flight: int, streams: Any) -> Any:
            emulator.reset_query_stats()
            config = write_config(tmp_path, emulator.url, emulator.api_key, emulator.project_id, anchor_date="2020-01-01",
                                  events_page_size=5_000, events_queries_in_flight=in_flight)
            result = run_sync(config, write_catalog(tmp_path, streams, incremental=True), env=ENV)
            assert result.returncode == 0, result.stderr[-2000:]
            assert set(result.keys("events")) == set(emulator.ground_truth("events"))
            return result, emulator.query_stats()

        _, whole = sync(2, ALL_STREAMS)
        assert whole["peak_concurrency"] == 2 and whole["peak_in_flight"] == 2, whole  # the whole sync, every stream
        one, stats_one = sync(1, ["events"])
        two, stats_two = sync(2, ["events"])
        assert stats_one["peak_in_flight"] == 1 and stats_two["peak_in_flight"] == 2
        assert two.seconds < 0.75 * one.seconds, (one.seconds, two.seconds)
