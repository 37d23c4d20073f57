"""Events and persons through PostHog's file-download exports against the HogQL path, on the same data (issue #20).

    .venv/bin/python -m tools.bench.bench_export [--events 1000000] [--persons 1000000]
        [--modes hogql,file_download] [--streams events,persons] [--exports "time_scale=1"]

The emulator runs in its own process (`EmulatorProcess`) with its query cost model and PostHog's rate
limits on at their real values, and its export timeline at PostHog's order of magnitude (a run is
Starting 2 s, queries and uploads 5 s, registers its files 2 s later, and reads no earlier than 60 s
past its interval's end: tools/emulator/README.md "File-download exports"; `--exports` changes it).
`source-posthog read` runs once per mode as a subprocess with its real pacing:
- hogql: events by HogQL keyset pages, persons by HogQL pages (a full refresh);
- file_download: `export_mode: file_download`, every stream through export runs (persons incremental).
Per mode: wall time, the connector process's CPU (user + system, `os.wait4`) and CPU per record, its
peak RSS (VmHWM of /proc/<pid>/status, polled, and `ru_maxrss`), PostHog requests, HogQL queries by
stream (the export path's goal: 0), export runs and object-store downloads; then a modeled 100M-event
backfill for both paths with its assumptions. Prints Markdown for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Dict, List, NamedTuple, Sequence

import orjson

from tools.connector import REPO, connector_command, write_config
from tools.emulator import EmulatorConfig, EmulatorProcess
from tools.emulator.exports import ExportSettings

BASE_TIME = datetime(2026, 11, 1, tzinfo=timezone.utc)
ANCHOR_DATE = (BASE_TIME - timedelta(days=31)).strftime("%Y-%m-%dT%H:%M:%SZ")  # the events span 30 days
CURSORS = {"events": "timestamp", "persons": "changed_at", "sessions": "max_inserted_at"}
MODEL_EVENTS = 100_000_000


class Run(NamedTuple):
    mode: str
    wall: float
    cpu: float
    vm_hwm_mb: float
    maxrss_mb: float
    records: Dict[str, int]
    requests: int
    queries: Dict[str, int]
    export_runs: int
    downloads: int

    @property
    def total_records(self) -> int:
        return sum(self.records.values())

    @property
    def cpu_us_per_record(self) -> float:
        return self.cpu / max(self.total_records, 1) * 1e6


def catalog(directory: Path, streams: Sequence[str], mode: str) -> Path:
    configured = []
    for name in streams:
        incremental = name != "persons" or mode == "file_download"  # persons are incremental through exports only
        configured.append({
            "stream": {"name": name, "json_schema": {}, "supported_sync_modes": ["full_refresh", "incremental"]},
            "sync_mode": "incremental" if incremental else "full_refresh",
            "destination_sync_mode": "append_dedup" if incremental else "overwrite",
            **({"cursor_field": [CURSORS[name]]} if incremental else {}),
        })
    path = directory / f"catalog_{mode}.json"
    path.write_text(json.dumps({"streams": configured}))
    return path


def vm_hwm_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_mode(emulator: EmulatorProcess, work: Path, mode: str, streams: Sequence[str]) -> Run:
    config = write_config(work, emulator.url, emulator.api_key, emulator.project_id, anchor_date=ANCHOR_DATE, export_mode=mode)
    env = {key: value for key, value in os.environ.items() if key != "SOURCE_POSTHOG_RATE_LIMIT_SCALE"}  # real pacing
    emulator.clear_requests()
    emulator.clear_object_store_requests()
    runs_before = len(emulator.exports()["runs"])
    output = work / f"{mode}.jsonl"
    peak = [0]
    started = time.monotonic()
    with open(output, "wb") as sink:
        process = subprocess.Popen([*connector_command(), "read", "--config", str(config), "--catalog", str(catalog(work, streams, mode))],
                                   env=env, stdout=sink, cwd=str(REPO))
        done = threading.Event()

        def watch() -> None:  # the connector's own process (the console script is the Python process)
            while not done.wait(0.05):
                peak[0] = max(peak[0], vm_hwm_kb(process.pid))

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        _, status, usage = os.wait4(process.pid, 0)
        done.set()
        watcher.join()
    wall = time.monotonic() - started
    if status != 0:
        raise SystemExit(f"source-posthog read ({mode}) exited with status {status}; see {output}")
    records: Counter = Counter()
    keys: Dict[str, set] = {name: set() for name in streams}
    key_of = {"events": "uuid", "persons": "id", "sessions": "session_id"}
    with open(output, "rb") as lines:
        for line in lines:
            if line.startswith(b'{"type":"RECORD"'):
                record = orjson.loads(line)["record"]
                records[record["stream"]] += 1
                keys[record["stream"]].add(record["data"][key_of[record["stream"]]])
    for name in streams:
        if records[name] != len(keys[name]):
            raise SystemExit(f"{mode}: {records[name]} {name} records for {len(keys[name])} distinct keys")
    log = emulator.requests()
    queries: Counter = Counter()
    for entry in log:
        if entry["path"].rstrip("/").endswith("/query"):
            name = str(entry.get("query_name") or "unnamed").removeprefix("airbyte_source_posthog_")
            queries[next((stream for stream in ("events", "persons", "person_distinct_ids", "sessions") if name.startswith(stream)), name)] += 1
    return Run(mode, wall, usage.ru_utime + usage.ru_stime, peak[0] / 1024, usage.ru_maxrss / 1024, dict(records), len(log), dict(queries),
               len(emulator.exports()["runs"]) - runs_before, len(emulator.object_store_requests()))


def duration(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def backfill_model(runs: Dict[str, Run], events: int) -> List[str]:
    """100M events from the measured per-event figures; the assumptions are printed with it."""
    lines = [f"Modeled backfill of {MODEL_EVENTS:,} events over a year, from the {events:,}-event run (queries: the events stream's; "
             f"CPU per record: over every stream read):", ""]
    hogql, export = runs.get("hogql"), runs.get("file_download")
    if hogql:
        queries = hogql.queries.get("events", 0) * MODEL_EVENTS / events
        lines += [
            f"- hogql: {queries:,.0f} HogQL queries at PostHog's 2,400/h per project → {duration(queries / 2400 * 3600)}; "
            f"client CPU {hogql.cpu_us_per_record:.1f} µs/record → {duration(hogql.cpu_us_per_record * 1e-6 * MODEL_EVENTS)}; "
            f"the read budget's refill can stretch it to ~6.6 h (BENCHMARKS.md, issue #11). It spends the project's query budget, shared with its dashboards.",
        ]
    if export:
        windows = 53  # a year of week-long windows
        run_minutes = (5, 30)  # PostHog's time to stage and upload ~1.9M rows: not in its source; assumed 5 to 30 min a run
        in_flight = 5
        t_runs = [windows / in_flight * minutes * 60 for minutes in run_minutes]
        t_cpu = export.cpu_us_per_record * 1e-6 * MODEL_EVENTS
        lines += [
            f"- file_download: {windows} runs of a week (~{MODEL_EVENTS // windows:,} events each), {in_flight} in flight: PostHog's side "
            f"{duration(t_runs[0])} to {duration(t_runs[1])} if a run takes {run_minutes[0]} to {run_minutes[1]} min (assumed: not in PostHog's source); "
            f"client CPU {export.cpu_us_per_record:.1f} µs/record → {duration(t_cpu)}, overlapping the runs in flight; "
            f"requests ≈ {windows} creates + polls every 5 s + one link per file of 256 MiB: a few thousand, under the CRUD limit (4,800/h); "
            f"0 HogQL queries. Modeled: {duration(max(t_runs[0], t_cpu))} to {duration(max(t_runs[1], t_cpu))}. Billed per exported row (100M rows).",
        ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000, help="events of project 2 (default 1,000,000)")
    parser.add_argument("--persons", type=int, default=1_000_000, help="persons of project 2 (default 1,000,000)")
    parser.add_argument("--modes", default="hogql,file_download", help="comma-separated: hogql, file_download")
    parser.add_argument("--streams", default="events,persons", help="comma-separated: events, persons, sessions")
    parser.add_argument("--exports", default="", help='the emulator\'s ExportSettings, e.g. "time_scale=0.1" (default: PostHog\'s timeline)')
    args = parser.parse_args()
    streams = args.streams.split(",")
    config = EmulatorConfig(events=args.events, seed=1, base_time=BASE_TIME, persons=args.persons, query_cost_model=True, rate_limits=True,
                            exports=ExportSettings.parse(args.exports), data_dir=REPO / ".bench" / "emulator-cache")
    runs: Dict[str, Run] = {}
    started = time.monotonic()
    with EmulatorProcess(config) as emulator, tempfile.TemporaryDirectory() as directory:
        print(f"emulator ready in {time.monotonic() - started:.0f} s", flush=True)
        for mode in args.modes.split(","):
            runs[mode] = run_mode(emulator, Path(directory), mode, streams)
            print(runs[mode], flush=True)
    print(f"\n| mode | records ({', '.join(streams)}) | wall s | CPU s | CPU µs/record | peak RSS MB (VmHWM) | PostHog requests | HogQL queries ({', '.join(streams)}) | export runs | object-store GETs |")
    print("|---|---|---:|---:|---:|---:|---:|---|---:|---:|")
    for run in runs.values():
        counted = " / ".join(f"{run.records.get(name, 0):,}" for name in streams)
        queried = " / ".join(str(run.queries.get(name, 0) + (run.queries.get("person_distinct_ids", 0) if name == "persons" else 0)) for name in streams)
        print(f"| {run.mode} | {counted} | {run.wall:.1f} | {run.cpu:.1f} | {run.cpu_us_per_record:.1f} | {run.vm_hwm_mb:.0f} | {run.requests:,} | {queried} | {run.export_runs} | {run.downloads} |")
    print()
    print("\n".join(backfill_model(runs, args.events)))


if __name__ == "__main__":
    main()
