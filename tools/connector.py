"""Run the real `source-posthog` command and read what it prints.

Shared by the demo, the end-to-end and reliability tests and the benchmark: one way to write a
config and catalog, run a sync (optionally killing it), and collect records and states.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

import orjson

from tools.emulator.keys import KEYS
from unit_tests.support.secrets import known_secrets, leaked

REPO = Path(__file__).resolve().parent.parent
INCREMENTAL_STREAMS = {"events": "timestamp", "annotations": "updated_at", "session_recordings": "start_time", "sessions": "max_inserted_at",
                       "insights": "last_modified_at", "experiments": "updated_at", "feature_flags": "updated_at", "activity_log": "created_at"}
# Read by change time: an incremental sync delivers what changed, and may deliver again the items
# that tie with the cursor (streams/base.py ChangeTimeList, streams/activity_log.py).
CHANGE_TIME_STREAMS = ("insights", "experiments", "feature_flags", "activity_log")
PRIMARY_KEYS = {"events": ("uuid",), "property_definitions": ("type", "id"), "group_types": ("group_type_index",),
                "groups": ("group_type_index", "group_key"), "sessions": ("session_id",), "cohort_membership": ("cohort_id", "person_id")}
ALL_STREAMS = (
    "projects", "cohorts", "feature_flags", "insights", "annotations", "actions", "event_definitions",
    "property_definitions", "group_types", "groups", "dashboards", "experiments", "surveys", "activity_log", "persons",
    "cohort_membership", "session_recordings", "sessions", "events",
)


def hashable(value: Any) -> Any:
    """A primary key as a set member: the emulator's ground truth sends composite keys as JSON
    lists, records give tuples."""
    return tuple(value) if isinstance(value, list) else value


def connector_command() -> List[str]:
    """The installed console script of the running interpreter's venv."""
    script = Path(sys.executable).parent / "source-posthog"
    return [str(script)] if script.exists() else [sys.executable, "-m", "source_posthog.run"]


def primary_key(stream: str, record: Mapping[str, Any]) -> Any:
    fields = PRIMARY_KEYS.get(stream, ("id",))
    return tuple(record.get(name) for name in fields) if len(fields) > 1 else record.get(fields[0])


def expected_incremental_keys(stream: str, changes: Mapping[str, Any], truth_after: Mapping[str, List[Any]]) -> set:
    """What an incremental sync must deliver after `emu.mutate(...)`: the changes for the
    incremental streams, everything for the full-refresh ones."""
    if stream == "events":
        return set(changes["events"]["new"]) | set(changes["events"]["late"])
    if stream in CHANGE_TIME_STREAMS:
        block = changes.get(stream, {})
        return set(block.get("new", [])) | set(block.get("updated", []))
    if stream in ("annotations", "session_recordings"):
        block = changes.get(stream, {})
        return set(block.get("new", [])) | set(block.get("updated", []))
    if stream == "sessions":
        # the least an incremental sync must deliver: sessions are read by ingestion time, so those
        # late events made or grew come too (it may also re-read the tolerance band, see
        # sessions_incremental_problems).
        block = changes.get(stream, {})
        return set(block.get("new", [])) | set(block.get("updated", [])) | set(block.get("by_late_events", []))
    return set(map(hashable, truth_after.get(stream, [])))


def change_time_problems(stream: str, result: "SyncResult", changes: Mapping[str, Any], since: Mapping[str, Any]) -> List[str]:
    """What an incremental sync of a change-time stream (CHANGE_TIME_STREAMS) after
    `emu.mutate(...)` must deliver, one line per failure: every item created or changed, and
    besides them only items that tie with the incoming cursor (`since`, that stream's state) —
    read again by design, with the same id (streams/base.py ChangeTimeList)."""
    cursor_field = INCREMENTAL_STREAMS[stream]
    since = since.get("2", since)
    cursor = since.get(cursor_field)
    records = result.records.get(stream, [])
    keys = [primary_key(stream, record) for record in records]
    expected = expected_incremental_keys(stream, changes, {})
    problems = []
    if len(keys) != len(set(keys)):
        problems.append(f"{stream}: duplicate primary keys in one sync")
    if expected - set(keys):
        problems.append(f"{stream}: {len(expected - set(keys))} changes not delivered (e.g. {sorted(expected - set(keys))[:3]})")
    def at(value: Any) -> Any:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None
    fallback = "created_at"  # feature flags' updated_at stays null until the first edit
    extra = [key for key, record in zip(keys, records) if key not in expected
             and (cursor is None or at(record.get(cursor_field) or record.get(fallback)) != at(cursor))]
    if extra:
        problems.append(f"{stream}: {len(extra)} unchanged items delivered that do not tie with the cursor {cursor!r} (e.g. {extra[:3]})")
    return problems


def sessions_incremental_problems(result: "SyncResult", changes: Mapping[str, Any], truth_after: List[Any], since: Mapping[str, Any]) -> List[str]:
    """What an incremental sessions sync after `emu.mutate(...)` must do (the sessions stream reads
    by ingestion time, issue #19), one line per failure: emit every session the mutation created or
    changed, late events included (`new`, `updated`, `by_late_events`), with its final start and end;
    emit nothing outside the ground truth, nothing twice; and read again only the sessions of the
    tolerance band (ingested in the visibility tolerance before the incoming watermark `since`)."""
    block = changes.get("sessions", {})
    emitted = result.records.get("sessions", [])
    records = {record["session_id"]: record for record in emitted}
    problems = []
    if len(records) != len(emitted):
        problems.append("sessions: duplicate session_id in one sync")
    changed = set(block.get("new", [])) | set(block.get("updated", [])) | set(block.get("by_late_events", []))
    missing = changed - set(records)
    if missing:
        problems.append(f"sessions: {len(missing)} new or changed sessions not emitted (e.g. {sorted(missing)[:3]})")
    extra = set(records) - set(truth_after)
    if extra:
        problems.append(f"sessions: {len(extra)} emitted sessions are not in the ground truth")
    for session_id, final in block.get("final", {}).items():
        record = records.get(session_id)
        if record is not None and (record["$end_timestamp"], record["$start_timestamp"]) != (final["$end_timestamp"], final["$start_timestamp"]):
            problems.append(f"sessions {session_id}: ({record['$start_timestamp']}, {record['$end_timestamp']}) emitted, final ({final['$start_timestamp']}, {final['$end_timestamp']})")
    since = since.get("2", since)  # project 2's (the emulator's first project) in a per-project state
    watermark = since.get("inserted_through")
    if watermark:
        band = (datetime.fromisoformat(watermark.replace("Z", "+00:00")) - timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        again = [sid for sid, record in records.items() if sid not in changed and (record.get("max_inserted_at") or "") <= band]
        if again:
            problems.append(f"sessions: {len(again)} unchanged sessions ingested before the tolerance band were read again")
    return problems


def write_config(directory: Path, url: str, api_key: str, project_id: int, **extra: Any) -> Path:
    config = {"api_key": api_key, "project_id": project_id, "host": url, **extra}
    path = directory / "config.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def write_catalog(directory: Path, streams: Iterable[str] = ALL_STREAMS, incremental: bool = True, name: str = "catalog.json") -> Path:
    configured = []
    for stream in streams:
        cursor = INCREMENTAL_STREAMS.get(stream) if incremental else None
        configured.append(
            {
                "stream": {
                    "name": stream,
                    "json_schema": {},
                    "supported_sync_modes": ["full_refresh", "incremental"] if stream in INCREMENTAL_STREAMS else ["full_refresh"],
                },
                "sync_mode": "incremental" if cursor else "full_refresh",
                "destination_sync_mode": "append_dedup" if cursor else "overwrite",
                **({"cursor_field": [cursor]} if cursor else {}),
            }
        )
    path = directory / name
    path.write_text(json.dumps({"streams": configured}, indent=2))
    return path


def write_state(
    directory: Path, states: Mapping[str, Mapping[str, Any]], name: str = "state.json", incremental_only: bool = False
) -> Path:
    """A --state file. A new sync gets only the incremental streams' states (as the Airbyte
    platform does); resuming an interrupted sync gets every stream's checkpoint."""
    if incremental_only:
        states = {stream: state for stream, state in states.items() if stream in INCREMENTAL_STREAMS}
    messages = [
        {"type": "STREAM", "stream": {"stream_descriptor": {"name": stream}, "stream_state": state}}
        for stream, state in states.items()
    ]
    path = directory / name
    path.write_text(json.dumps(messages))
    return path


@dataclass
class SyncResult:
    returncode: int
    records: Dict[str, List[Mapping[str, Any]]] = field(default_factory=dict)
    states: Dict[str, Mapping[str, Any]] = field(default_factory=dict)  # last STATE per stream
    state_count: int = 0
    traces: List[Mapping[str, Any]] = field(default_factory=list)
    logs: List[str] = field(default_factory=list)
    stdout: bytes = b""
    stderr: bytes = b""
    killed: bool = False
    seconds: float = 0.0

    def keys(self, stream: str) -> List[Any]:
        return [primary_key(stream, record) for record in self.records.get(stream, [])]

    def errors(self) -> List[Mapping[str, Any]]:
        return [trace for trace in self.traces if trace.get("type") == "ERROR"]

    def estimates(self, stream: str) -> List[int]:
        """The `row_estimate` of each ESTIMATE the stream sent, in order."""
        return [trace["row_estimate"] for trace in self.traces if trace.get("type") == "ESTIMATE" and trace.get("name") == stream]


def parse_output(stdout: bytes, result: SyncResult) -> SyncResult:
    lines = stdout.splitlines()
    if result.killed and lines and not stdout.endswith(b"\n"):
        lines = lines[:-1]  # a kill can cut the last line
    for line in lines:
        if not line.startswith(b"{"):
            continue
        message = orjson.loads(line)
        kind = message.get("type")
        if kind == "RECORD":
            record = message["record"]
            result.records.setdefault(record["stream"], []).append(record["data"])
        elif kind == "STATE":
            state = message["state"]
            if state.get("type") == "STREAM":
                stream = state["stream"]["stream_descriptor"]["name"]
                result.states[stream] = state["stream"].get("stream_state") or {}
                result.state_count += 1
        elif kind == "TRACE":
            trace = message["trace"]
            if trace.get("type") == "ERROR":
                result.traces.append({"type": "ERROR", **trace.get("error", {})})
            elif trace.get("type") == "ESTIMATE":
                result.traces.append({**trace.get("estimate", {}), "estimate_type": trace.get("estimate", {}).get("type"), "type": "ESTIMATE"})
        elif kind == "LOG":
            result.logs.append(message["log"].get("message", ""))
    return result


def run_sync(
    config: Optional[Path],
    catalog: Optional[Path] = None,
    state: Optional[Path] = None,
    command: str = "read",
    kill_after_bytes: Optional[int] = None,
    env: Optional[Mapping[str, str]] = None,
    extra_args: Sequence[str] = (),
    timeout: float = 900,
    command_prefix: Optional[Sequence[str]] = None,
) -> SyncResult:
    """Run `source-posthog <command>`; with kill_after_bytes, SIGKILL it once it has printed that much."""
    args = list(command_prefix or connector_command()) + [command] + (["--config", str(config)] if config else [])
    if catalog:
        args += ["--catalog", str(catalog)]
    if state:
        args += ["--state", str(state)]
    args += list(extra_args)
    started = time.monotonic()
    process = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})}, cwd=str(REPO)
    )
    result = SyncResult(returncode=0)
    if kill_after_bytes is None:
        stdout, stderr = process.communicate(timeout=timeout)
    else:
        chunks: List[bytes] = []
        read = 0
        assert process.stdout is not None
        while True:
            chunk = process.stdout.read1(65536)  # type: ignore[attr-defined]
            if not chunk:
                break
            chunks.append(chunk)
            read += len(chunk)
            if read >= kill_after_bytes:
                process.send_signal(signal.SIGKILL)
                result.killed = True
                break
        process.wait(timeout=timeout)
        stdout = b"".join(chunks)
        stderr = process.stderr.read() if process.stderr else b""
    result.returncode = process.returncode
    result.stdout, result.stderr = stdout, stderr
    result.seconds = time.monotonic() - started
    # Issue "Reliability": no API key may reach the output, whatever the mode or failure. Checked
    # for the configured key (with and without `phx_`, and its first line if it was pasted with a
    # line break) and every emulator key.
    try:
        configured = json.loads(config.read_text()).get("api_key") if config else None
    except (OSError, ValueError, AttributeError):
        configured = None
    secrets = known_secrets(configured, *KEYS.values())
    found = leaked(stdout, secrets) + leaked(stderr, secrets)
    if found:
        raise AssertionError(f"an API key appeared in the output of `source-posthog {command}`: {found}")
    return parse_output(stdout, result)
