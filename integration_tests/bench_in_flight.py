"""Events wall time with PostHog's query latency modeled: one query in flight against two.

    .venv/bin/python -m integration_tests.bench_in_flight [--events 1000000] [--runs 3]

The emulator runs in its own process with its query cost model on (0.1 s + 4 µs per scanned row
× the columns' share + 30 ns per returned byte: a 25,000-event page of ~1.5 KB rows takes about
1.35 s, integration_tests/emulator/README.md). `source-posthog read` of the events stream (a
first incremental sync) runs with `events_queries_in_flight` 1 and 2, interleaved; the medians of
wall time, CPU and queries are printed as a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from integration_tests.connector import REPO, connector_command, write_catalog, write_config
from integration_tests.emulator import EmulatorConfig, EmulatorProcess

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
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                started = time.monotonic()
                subprocess.run([*connector_command(), "read", "--config", str(config_path), "--catalog", str(catalog)], env=env, check=True, stdout=subprocess.DEVNULL)
                wall = time.monotonic() - started
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                queries = sum(1 for entry in emulator.requests() if entry["path"].endswith("/query/"))
                results[in_flight].append((wall, cpu, queries))
                print(f"run {run + 1} in flight {in_flight}: wall {wall:.1f} s, cpu {cpu:.1f} s, {queries} queries", flush=True)
    print(f"\n| events | in flight | wall s (median) | CPU s | queries |\n|---:|---:|---:|---:|---:|")
    for in_flight, runs in results.items():
        print(f"| {args.events:,} | {in_flight} | {statistics.median(r[0] for r in runs):.1f} | {statistics.median(r[1] for r in runs):.1f} | {runs[0][2]} |")
    ratio = statistics.median(r[0] for r in results[2]) / statistics.median(r[0] for r in results[1])
    print(f"\nwall with 2 in flight / with 1: {ratio:.2f} (target <= 0.6)")


if __name__ == "__main__":
    main()
