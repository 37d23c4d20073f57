"""Two projects of 500,000 events against one of 1,000,000: requests and wall time (issue #12).

    .venv/bin/python -m tools.bench.bench_projects [--events 1000000]

One emulator in its own process, its query cost model on (tools/emulator/README.md):
first `source-posthog read` of events from project 2 holding all the events; then every second
event is moved to project 3 (the same data, split in two like projects) and the same read runs
with `additional_project_ids: [3]`. Each delivers every event (checked against the emulator's
ground truth of each project).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from tools.connector import REPO, connector_command, write_catalog, write_config
from tools.emulator import EmulatorConfig, EmulatorProcess
from tools.emulator.keys import PROJECT_ID, SECOND_PROJECT_ID

UUID_AT = b'"uuid":"'


def read(config: Path, catalog: Path) -> tuple:
    env = {**os.environ, "SOURCE_POSTHOG_INGESTION_LAG_SECONDS": "1"}
    started = time.monotonic()
    process = subprocess.Popen([*connector_command(), "read", "--config", str(config), "--catalog", str(catalog)], env=env, stdout=subprocess.PIPE)
    out, _ = process.communicate()
    wall = time.monotonic() - started
    if process.returncode != 0:
        raise SystemExit(f"source-posthog read exited with {process.returncode}")
    uuids = set()
    for line in out.splitlines():
        if line.startswith(b'{"type":"RECORD"'):
            at = line.index(UUID_AT) + len(UUID_AT)
            uuids.add(line[at:at + 36].decode())
    return wall, uuids


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    config = EmulatorConfig(events=args.events, seed=1, base_time=datetime(2026, 11, 1, tzinfo=timezone.utc), query_cost_model=True,
                            data_dir=REPO / ".bench" / "emulator-cache")
    rows = []
    with EmulatorProcess(config) as emulator, tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        catalog = write_catalog(work, ["events"], incremental=True)
        for label, projects in (("one project", [PROJECT_ID]), ("two projects", [PROJECT_ID, SECOND_PROJECT_ID])):
            if len(projects) == 2:
                moved = emulator.move_events(SECOND_PROJECT_ID)
                print(f"moved {moved:,} events to project {SECOND_PROJECT_ID}", flush=True)
            path = write_config(work, emulator.url, emulator.api_key, projects[0], anchor_date="2026-10-01", additional_project_ids=projects[1:])
            emulator.clear_requests()
            emulator.reset_query_stats()
            wall, uuids = read(path, catalog)
            truth = set().union(*(emulator.ground_truth("events", project_id=project) for project in projects))
            requests = len(emulator.requests())
            stats = emulator.query_stats()
            rows.append((label, [len(emulator.ground_truth("events", project_id=p)) for p in projects], requests, stats["queries"], wall, len(truth - uuids), stats["peak_in_flight"]))
            print(f"{label}: {rows[-1]}", flush=True)
    print("\n| layout | events per project | requests | of which queries | wall s | missing | peak in flight |\n|---|---|---:|---:|---:|---:|---:|")
    for label, sizes, requests, queries, wall, missing, peak in rows:
        print(f"| {label} | {' + '.join(f'{n:,}' for n in sizes)} | {requests} | {queries} | {wall:.1f} | {missing} | {peak} |")
    print(f"\nTwo projects / one: requests {rows[1][2] / rows[0][2]:.2f}×, wall {rows[1][4] / rows[0][4]:.2f}×")


if __name__ == "__main__":
    main()
