"""Duplicates of hourly incremental syncs over a day of events, when PostHog has no ingestion delay.

    .venv/bin/python -m tools.bench.bench_hourly [--events 1000000] [--syncs 24]

Issue #11 item 1: an incremental sync may re-emit at most 1 % of its events as duplicates.

The day is replayed, not waited for. The emulator holds `--events` events stamped over the last day
(each ingested within 5 s of its timestamp, and ~1 % hours later, as the dataset generator makes
them). Sync h of 24 runs "at" T_h = day start + h hours:
- the emulator shows only the events ingested by T_h (its run-wide visibility delay set to now − T_h,
  so a row is queryable once created_at ≤ T_h: no ingestion delay beyond the clock);
- the connector reads up to T_h − 2 min, its normal ingestion lag (SOURCE_POSTHOG_INGESTION_LAG_SECONDS
  set to now − T_h + 120).
Each sync starts from the previous one's last STATE, as the Airbyte platform does. A last sync at the
real now (delay 0) picks up what the day's late ingestion left. Every RECORD's uuid is counted:
duplicates = records − distinct uuids, per sync and in all; missing = the emulator's ground truth
minus what arrived.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import List, Optional, Tuple

from tools.connector import REPO, connector_command, write_catalog, write_config
from tools.emulator import EmulatorConfig, EmulatorProcess

UUID_AT = b'"uuid":"'


def sync(config: Path, catalog: Path, state: Optional[Path], lag_seconds: float) -> Tuple[List[bytes], Optional[dict], float]:
    """One `source-posthog read`: the events' uuids in order, and the last events STATE."""
    args = [*connector_command(), "read", "--config", str(config), "--catalog", str(catalog)]
    if state is not None:
        args += ["--state", str(state)]
    env = {**os.environ, "SOURCE_POSTHOG_INGESTION_LAG_SECONDS": f"{lag_seconds:.3f}"}
    started = time.monotonic()
    out = subprocess.run(args, env=env, check=True, stdout=subprocess.PIPE, cwd=str(REPO)).stdout
    seconds = time.monotonic() - started
    uuids: List[bytes] = []
    last_state = None
    for line in out.splitlines():
        if line.startswith(b'{"type":"RECORD"'):
            at = line.index(UUID_AT) + len(UUID_AT)
            uuids.append(line[at:at + 36])
        elif line.startswith(b'{"type":"STATE"'):
            last_state = json.loads(line)["state"]["stream"]["stream_state"]
    return uuids, last_state, seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--syncs", type=int, default=24)
    args = parser.parse_args()
    # The dataset's "now" 10 minutes back: the last sync (at the real now, reading to now − 2 min) sees it all.
    base = (datetime.now(timezone.utc) - timedelta(minutes=10)).replace(second=0, microsecond=0)
    config = EmulatorConfig(events=args.events, seed=5, base_time=base, events_span_days=1, data_dir=REPO / ".bench" / "emulator-cache")
    day_start = base - timedelta(days=1)
    seen: Counter = Counter()
    rows = []
    with EmulatorProcess(config) as emulator, tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        catalog = write_catalog(work, ["events"], incremental=True)
        config_path = write_config(work, emulator.url, emulator.api_key, emulator.project_id, anchor_date=(day_start - timedelta(days=1)).date().isoformat())
        state_path: Optional[Path] = None
        clocks = [day_start + timedelta(hours=h) for h in range(1, args.syncs + 1)] + [None]
        for number, clock in enumerate(clocks, start=1):
            behind = (datetime.now(timezone.utc) - clock).total_seconds() if clock else 0.0
            emulator.set_visibility_delay(behind)
            uuids, state, seconds = sync(config_path, catalog, state_path, behind + 120)
            repeated = sum(1 for uuid in uuids if seen[uuid])
            seen.update(uuids)
            rows.append((number, clock, len(uuids), repeated, seconds))
            print(f"sync {number:2d} at {clock.isoformat() if clock else 'now':25s}: {len(uuids):8,d} records, {repeated:6,d} already delivered, {seconds:5.1f} s", flush=True)
            if state is not None:
                state_path = work / f"state_{number}.json"
                state_path.write_text(json.dumps([{"type": "STREAM", "stream": {"stream_descriptor": {"name": "events"}, "stream_state": state}}]))
        emulator.set_visibility_delay(0)
        truth = set(uuid.encode() for uuid in emulator.ground_truth("events"))
    records = sum(row[2] for row in rows)
    duplicates = sum(row[3] for row in rows)
    missing = len(truth - set(seen))
    worst = max(rows[1:], key=lambda row: row[3] / max(1, row[2]))
    print(f"\n{len(rows)} syncs, {records:,} records, {len(seen):,} distinct, {duplicates:,} duplicates "
          f"({100 * duplicates / max(1, records):.3f} % of the records), {missing:,} of {len(truth):,} missing; "
          f"the worst incremental sync: #{worst[0]}, {worst[3]:,} of {worst[2]:,} ({100 * worst[3] / max(1, worst[2]):.3f} %)")


if __name__ == "__main__":
    main()
