"""Events wall time with PostHog's query latency modeled: one query in flight against two.

    .venv/bin/python -m tools.bench.bench_in_flight [--events 1000000] [--runs 3]

The emulator runs in its own process with its query cost model on (0.1 s + 4 µs per scanned row
× the columns' share + 30 ns per returned byte: a 25,000-event page of ~1.5 KB rows takes about
1.35 s, tools/emulator/README.md). `source-posthog read` of the events stream (a
first incremental sync) runs with `events_queries_in_flight` 1 and 2, interleaved; the medians of
wall time, CPU, peak RSS, queries and what the queries read are printed as a Markdown table, then a
modeled 100M-event backfill under PostHog's limits (its assumptions printed with it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

from tools.connector import REPO, connector_command, write_catalog, write_config
from tools.emulator import EmulatorConfig, EmulatorProcess

BASE_TIME = datetime(2026, 11, 1, tzinfo=timezone.utc)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    config = EmulatorConfig(events=args.events, seed=1, base_time=BASE_TIME, query_cost_model=True, data_dir=REPO / ".bench" / "emulator-cache")
    env = {**os.environ, "SOURCE_POSTHOG_INGESTION_LAG_SECONDS": "1"}
    results = {1: [], 2: []}
    with EmulatorProcess(config) as emulator, tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        catalog = write_catalog(work, ["events"], incremental=True)
        for run in range(args.runs):
            for in_flight in (1, 2):
                config_path = write_config(work, emulator.url, emulator.api_key, emulator.project_id, anchor_date="2026-10-01", events_queries_in_flight=in_flight)
                emulator.clear_requests()
                emulator.reset_query_stats()
                started = time.monotonic()
                process = subprocess.Popen([*connector_command(), "read", "--config", str(config_path), "--catalog", str(catalog)], env=env, stdout=subprocess.DEVNULL)
                _, status, usage = os.wait4(process.pid, 0)  # this run's own CPU and peak RSS
                wall = time.monotonic() - started
                if status != 0:
                    raise SystemExit(f"source-posthog read exited with status {status}")
                stats = emulator.query_stats()
                run_result = Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, stats["queries"], stats["bytes_read"], stats["rows_scanned"], stats["total_run_seconds"])
                results[in_flight].append(run_result)
                print(f"run {run + 1} in flight {in_flight}: {run_result}", flush=True)
    median = {n: Run(*(statistics.median(getattr(r, f) for r in runs) for f in Run._fields)) for n, runs in results.items()}
    print("\n| events | in flight | wall s | CPU s | µs CPU/event | peak RSS MB | queries | GB read | rows scanned |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for in_flight, m in median.items():
        print(f"| {args.events:,} | {in_flight} | {m.wall:.1f} | {m.cpu:.1f} | {1e6 * m.cpu / args.events:.1f} | {m.rss_mb:.0f} | {m.queries:.0f} | {m.bytes_read / 1e9:.2f} | {m.rows_scanned:,.0f} |")
    ratio = median[2].wall / median[1].wall
    print(f"\nMedians of {args.runs} runs. Wall with 2 in flight / with 1: {ratio:.2f} (target <= 0.6)")
    print(modeled_backfill(median[2], args.events))


class Run(NamedTuple):
    wall: float
    cpu: float
    rss_mb: float
    queries: float
    bytes_read: float
    rows_scanned: float
    query_seconds: float  # the emulator's modeled execution time, summed over the queries

    def __str__(self) -> str:
        return (f"wall {self.wall:.1f} s, cpu {self.cpu:.1f} s, peak RSS {self.rss_mb:.0f} MB, {self.queries:.0f} queries, "
                f"{self.bytes_read / 1e9:.2f} GB read, {self.rows_scanned:,.0f} rows scanned, {self.query_seconds:.1f} s of queries")


# PostHog's per-project query limits (docs/posthog-api.md § 11.2).
QUERIES_PER_HOUR = 2400
BUDGET_BYTES_PER_HOUR = 20e9  # "about 20 GB/h free" (a secondary note; deployed values are not in PostHog's source)


def modeled_backfill(measured: Run, events: int, target: int = 100_000_000) -> str:
    """A 100M-event first sync, scaled from the measured 2-in-flight run: queries, bytes read, query
    time and CPU grow with the events (pages and windows are sized from the data)."""
    scale = target / events
    queries, read, cpu = measured.queries * scale, measured.bytes_read * scale, measured.cpu * scale
    latency = measured.wall * scale  # two in flight against the modeled query times, as measured
    rate = queries / QUERIES_PER_HOUR * 3600
    budget_full = max(0.0, (read - 24 * BUDGET_BYTES_PER_HOUR) / BUDGET_BYTES_PER_HOUR * 3600)  # a bucket of 24 h
    budget_empty = read / BUDGET_BYTES_PER_HOUR * 3600  # a bucket of ~nothing: every byte waits for refill
    best, worst = max(latency, rate, budget_full, cpu), max(latency, rate, budget_empty, cpu)
    hours = lambda seconds: f"{seconds / 3600:.2f} h"
    return "\n".join([
        f"\nModeled backfill of {target:,} events (from the 2-in-flight medians × {scale:,.0f}):",
        "",
        "| bound | assumption | time |",
        "|---|---|---:|",
        f"| query latency | {queries:,.0f} queries at the modeled times, 2 in flight (the measured wall time × {scale:,.0f}) | {hours(latency)} |",
        f"| queries per hour | {QUERIES_PER_HOUR:,}/h per project (240/min is never reached: 2 in flight) | {hours(rate)} |",
        f"| read budget, bucket full | {read / 1e9:,.0f} GB read; {BUDGET_BYTES_PER_HOUR / 1e9:.0f} GB/h refill, a 24 h bucket full at the start | {hours(budget_full)} |",
        f"| read budget, bucket empty | the same bytes, paid at the refill rate | {hours(budget_empty)} |",
        f"| connector CPU | {1e6 * measured.cpu / events:.1f} µs per event | {hours(cpu)} |",
        f"| **modeled** | the largest bound (they overlap: waits cost no CPU) | **{hours(best)} to {hours(worst)}** |",
    ])


if __name__ == "__main__":
    main()
