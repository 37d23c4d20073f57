"""Persons: HogQL keyset pages against the REST list, under PostHog's latency and rate limits (issue #13).

    .venv/bin/python -m tools.bench.bench_persons [--persons 1000000] [--modes hogql,rest]

The emulator runs in its own process with 1,000,000 persons (20 of them with 1,000 to 20,000
distinct ids), its query cost model on (0.1 s + 4 µs per scanned row × the columns' share + 30 ns
per returned byte; a persons page scans every person after its lower bound, a distinct-id request
every distinct id of the project: tools/emulator/README.md) and PostHog's rate limits
on at their real values (analytics 240/min and 1200/h for the REST list, query 240/min and
2400/h). `source-posthog read` of the persons stream runs with its real pacing:
- hogql: the all-access key (`query:read`): keyset pages of 25,000 persons plus their distinct ids;
- rest: the `no_query` key, which makes the stream fall back to `GET /persons/` (1,000 a page).
Wall time, the run's own CPU and peak RSS, requests and records are printed as a Markdown table.
The REST list's own latency is not modeled (only its rate limit and the emulator's SQLite time), so
its figure is a lower bound.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import orjson

from tools.connector import REPO, connector_command, write_catalog, write_config
from tools.emulator import KEYS, EmulatorConfig, EmulatorProcess

BASE_TIME = datetime(2026, 11, 1, tzinfo=timezone.utc)
KEY_OF_MODE = {"hogql": "all_access", "rest": "no_query"}


class Run(NamedTuple):
    mode: str
    wall: float
    cpu: float
    rss_mb: float
    requests: int
    query_requests: int
    rest_requests: int
    records: int
    query_seconds: float  # the emulator's modeled execution time, summed over the queries


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--persons", type=int, default=1_000_000)
    parser.add_argument("--modes", default="hogql,rest")
    args = parser.parse_args()
    config = EmulatorConfig(
        events=20_000, seed=1, base_time=BASE_TIME, persons=args.persons, heavy_persons=20, heavy_distinct_ids=20_000,
        query_cost_model=True, rate_limits=True, data_dir=REPO / ".bench" / "emulator-cache",
    )
    env = {key: value for key, value in os.environ.items() if key != "SOURCE_POSTHOG_RATE_LIMIT_SCALE"}  # real pacing
    runs = []
    started_emulator = time.monotonic()
    with EmulatorProcess(config) as emulator, tempfile.TemporaryDirectory() as directory:
        print(f"emulator ready in {time.monotonic() - started_emulator:.0f} s", flush=True)
        work = Path(directory)
        catalog = write_catalog(work, ["persons"], incremental=False)
        for mode in args.modes.split(","):
            config_path = write_config(work, emulator.url, KEYS[KEY_OF_MODE[mode]], emulator.project_id)
            emulator.clear_requests()
            emulator.reset_query_stats()
            output = work / f"{mode}.jsonl"
            started = time.monotonic()
            with open(output, "wb") as sink:
                process = subprocess.Popen([*connector_command(), "read", "--config", str(config_path), "--catalog", str(catalog)], env=env, stdout=sink)
                _, status, usage = os.wait4(process.pid, 0)  # this run's own CPU and peak RSS
            wall = time.monotonic() - started
            if status != 0:
                raise SystemExit(f"source-posthog read ({mode}) exited with status {status}")
            records, ids = 0, set()
            with open(output, "rb") as lines:
                for line in lines:
                    if line.startswith(b'{"type":"RECORD"'):
                        records += 1
                        ids.add(orjson.loads(line)["record"]["data"]["id"])
            if records != args.persons or len(ids) != args.persons:
                raise SystemExit(f"{mode}: {records} records, {len(ids)} distinct ids for {args.persons} persons")
            log = emulator.requests()
            stats = emulator.query_stats()
            run = Run(mode, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, len(log),
                      sum(1 for e in log if e["path"].endswith("/query/")), sum(1 for e in log if "/persons/" in e["path"]),
                      records, stats["total_run_seconds"])
            runs.append(run)
            print(run, flush=True)
    print("\n| persons | mode | requests | of which /query/ | of which /persons/ | wall s | CPU s | peak RSS MB | modeled query s |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        print(f"| {args.persons:,} | {r.mode} | {r.requests:,} | {r.query_requests:,} | {r.rest_requests:,} | {r.wall:.1f} | {r.cpu:.1f} | {r.rss_mb:.0f} | {r.query_seconds:.1f} |")
    by_mode = {r.mode: r for r in runs}
    if {"hogql", "rest"} <= set(by_mode):
        print(f"\nWall, REST list / HogQL: {by_mode['rest'].wall / by_mode['hogql'].wall:.1f}x; "
              f"requests: {by_mode['rest'].requests / by_mode['hogql'].requests:.1f}x")


if __name__ == "__main__":
    main()
