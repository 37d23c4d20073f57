"""`make demo`: the connector's main job against the bundled PostHog emulator, no account needed.

Starts the emulator with a demo dataset, runs spec, check, discover and a full read of every
stream, changes the data (new, late and updated records), runs an incremental read from the
last state, and prints a per-stream table. Everything the connector printed is kept in
.demo-output/.
"""

from __future__ import annotations

import json
import sys
import time

from tools.connector import (
    ALL_STREAMS,
    CHANGE_TIME_STREAMS,
    REPO,
    change_time_problems,
    expected_incremental_keys,
    hashable,
    run_sync,
    sessions_incremental_problems,
    write_catalog,
    write_config,
    write_state,
)
from tools.emulator import EmulatorConfig, EmulatorServer

OUTPUT = REPO / ".demo-output"
DEMO_EVENTS = 20_000
# The emulator makes an event visible the moment it is ingested; PostHog takes a while, which is
# why the connector leaves the last two minutes of ingestion to the next sync. Against the
# emulator one second is enough, and the demo need not wait two minutes between its syncs.
INGESTION_LAG_SECONDS = 1
ENV = {"SOURCE_POSTHOG_INGESTION_LAG_SECONDS": str(INGESTION_LAG_SECONDS)}


def main() -> int:
    OUTPUT.mkdir(exist_ok=True)
    print(f"Starting the PostHog emulator with a demo dataset ({DEMO_EVENTS:,} events)...", flush=True)
    with EmulatorServer(EmulatorConfig(events=DEMO_EVENTS, seed=1)) as emu:
        config = write_config(OUTPUT, emu.url, emu.api_key, emu.project_id)
        catalog = write_catalog(OUTPUT, ALL_STREAMS, incremental=True)
        print(f"Emulator at {emu.url}, project {emu.project_id}\n", flush=True)

        for command in ("spec", "check", "discover"):
            result = run_sync(None if command == "spec" else config, command=command, env=ENV)
            (OUTPUT / f"{command}.jsonl").write_bytes(result.stdout)
            print(f"{command:9s} {_summary(command, result.stdout)}", flush=True)

        truth_before = emu.ground_truth()
        full = run_sync(config, catalog, env=ENV)
        (OUTPUT / "read_full.jsonl").write_bytes(full.stdout)
        print(f"read      full sync: exit {full.returncode}, {sum(len(r) for r in full.records.values()):,} records in {full.seconds:.1f}s", flush=True)
        if full.returncode != 0:
            return _fail(full)

        # Change the data as PostHog would between two syncs, then let it pass the ingestion lag.
        changes = emu.mutate(
            new_events=500, late_events=50, late_events_max_age_days=3, new_annotations=2,
            updated_annotations=3, new_session_recordings=5, grow_ongoing_recordings=True, new_persons=10,
            new_sessions=3, grow_ongoing_sessions=True,
        )
        truth_after = emu.ground_truth()
        time.sleep(INGESTION_LAG_SECONDS + 1)
        state = write_state(OUTPUT, full.states, name="state_after_full.json", incremental_only=True)
        incremental = run_sync(config, catalog, state=state, env=ENV)
        (OUTPUT / "read_incremental.jsonl").write_bytes(incremental.stdout)
        print(f"read      incremental sync from the last state: exit {incremental.returncode}, "
              f"{sum(len(r) for r in incremental.records.values()):,} records in {incremental.seconds:.1f}s\n", flush=True)
        if incremental.returncode != 0:
            return _fail(incremental)

    problems = _table(full, incremental, truth_before, truth_after, changes)
    for line in _summaries(incremental.stdout):
        print(line)
    print(f"\nAll output (spec, check, discover, both reads, states) is in {OUTPUT.relative_to(REPO)}/")
    for problem in problems:
        print("PROBLEM:", problem)
    return 1 if problems else 0


def _summary(command: str, stdout: bytes) -> str:
    for line in stdout.splitlines():
        message = json.loads(line) if line.startswith(b"{") else {}
        if command == "spec" and message.get("type") == "SPEC":
            return f"{len(message['spec']['connectionSpecification']['properties'])} config fields"
        if command == "check" and message.get("type") == "CONNECTION_STATUS":
            status = message["connectionStatus"]
            return status["status"] + (f": {status.get('message')}" if status.get("message") else "")
        if command == "discover" and message.get("type") == "CATALOG":
            return f"{len(message['catalog']['streams'])} streams: " + ", ".join(s["name"] for s in message["catalog"]["streams"])
    return "no output"


def _table(full, incremental, truth_before, truth_after, changes) -> list:
    """The per-stream table; returns the problems (a stream marked NO says why)."""
    header = f"{'stream':22s} {'full':>7s} {'truth':>7s} {'incr.':>6s} {'expect':>6s} {'ok':3s} final state"
    print(header)
    print("-" * (len(header) + 40))
    problems = []
    for stream in ALL_STREAMS:
        full_keys = set(map(hashable, full.keys(stream)))
        incremental_keys = set(map(hashable, incremental.keys(stream)))
        expected = expected_incremental_keys(stream, changes, truth_after)
        found = [] if full_keys == set(map(hashable, truth_before.get(stream, []))) else [f"{stream}: the full sync differs from the ground truth"]
        if stream == "sessions":  # the changes, and the sessions of the tolerance band read again
            found += sessions_incremental_problems(incremental, changes, truth_after["sessions"], full.states["sessions"])
        elif stream in CHANGE_TIME_STREAMS:  # the changes, and the items that tie with the cursor
            found += change_time_problems(stream, incremental, changes, full.states[stream])
        elif incremental_keys != expected or len(incremental.keys(stream)) != len(incremental_keys):
            found.append(f"{stream}: the incremental sync delivered other records than the changes (or one twice)")
        problems += found
        state = json.dumps(incremental.states.get(stream, {}))
        print(
            f"{stream:22s} {len(full_keys):7,d} {len(truth_before.get(stream, [])):7,d} {len(incremental_keys):6,d} "
            f"{len(expected):6,d} {'NO' if found else 'yes':3s} {state[:60]}{'…' if len(state) > 60 else ''}"
        )
    return problems


def _summaries(stdout: bytes) -> list:
    """The connector's own summary of the incremental sync (its `Sync summary` log lines)."""
    lines = []
    for line in stdout.splitlines():
        message = json.loads(line) if line.startswith(b"{") else {}
        text = message.get("log", {}).get("message", "") if message.get("type") == "LOG" else ""
        if text.startswith("Sync summary"):
            lines.append("\n" + text)
    return lines


def _fail(result) -> int:
    sys.stdout.write(result.stderr.decode(errors="replace")[-3000:])
    for error in result.errors():
        print("ERROR:", error.get("message"))
    return 1


if __name__ == "__main__":
    sys.exit(main())
