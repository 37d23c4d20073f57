"""`make bench`: source-posthog vs the official Airbyte connector vs a raw baseline, on the emulator.

    .venv/bin/python -m tools.bench.benchmark [--events 100000,1000000] [--runs 3]
        [--settings capped,uncapped] [--tools ours,official,raw] [--streams events,other]
        [--output BENCHMARKS.md]
    make bench                                   # the full benchmark (defaults above)
    make bench BENCH_ARGS="--events 20000 --runs 1"   # a quick smoke run (BENCH_ARGS is read when no argv)

What it measures, for each events count N and each emulator setting:
- tools: `ours` (this repo's `source-posthog`, the `events` stream and, separately, the ten other
  streams), `official` (`airbyte-source-posthog==1.1.28` from PyPI, installed here into
  `.bench/official-venv`; its `events` stream and, separately, its six other streams) and `raw`
  (`tools/bench/benchmark_raw.py`: plain HTTP, the same HogQL keyset pages, orjson, RECORD lines);
- settings: `capped` (the legacy `GET /events/` as PostHog has it today: 1000 rows a page, offset
  ≤ 50,000) and `uncapped` (no page cap, no offset limit: the official connector at its best);
- per run: records delivered, records missing and duplicated versus the emulator's ground truth (uuid
  sets; the official connector's events carry `id` = uuid), requests (the emulator's request log),
  wall seconds, CPU seconds (user+sys of the child alone, from `os.wait4`), peak RSS (its ru_maxrss; the child is
  started by a ~10 MB measurer process, because Linux carries the forking process's RSS into ru_maxrss).
Runs are interleaved (run 1 of every tool, then run 2 ...) and the table shows medians.

The emulator is a separate process (`EmulatorProcess`), so its CPU is not counted; its dataset is
cached in `.bench/emulator-cache/` keyed by its parameters (fixed `base_time`). The child's stdout is
read through a pipe by a regex over whole chunks (uuids of the events records); the child's CPU and
RSS are its own (`os.wait4` on its pid). Our connector keeps its 3 requests/s pacing: wall seconds
include it, CPU seconds do not.

Results: BENCHMARKS.md (or --output), and every run's raw figures in .bench/results/<stamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import orjson

from tools.connector import ALL_STREAMS, REPO, connector_command, primary_key, write_catalog, write_config
from tools.emulator import EmulatorConfig, EmulatorProcess
from tools.connector import hashable

BENCH = REPO / ".bench"
OFFICIAL_PACKAGE = "airbyte-source-posthog"
OFFICIAL_VERSION = "1.1.28"
OFFICIAL_VENV = BENCH / "official-venv"
OFFICIAL_STREAMS = ("projects", "cohorts", "feature_flags", "persons", "annotations", "insights")  # besides events
OUR_OTHER_STREAMS = tuple(s for s in ALL_STREAMS if s != "events")

BASE_TIME = datetime(2026, 11, 1, tzinfo=timezone.utc)
SPAN_DAYS = 30
START = BASE_TIME - timedelta(days=31)  # ours: anchor_date; official: start_date
SEED = 1
INGESTION_LAG_SECONDS = 1
PAGE_SIZE = 25_000  # our default events_page_size; the raw baseline uses the same

SETTINGS = {
    "capped": {"legacy_events_page_cap": 1000, "legacy_events_max_offset": 50_000},
    "uncapped": {"legacy_events_page_cap": None, "legacy_events_max_offset": None},
}
# PostHog's hourly limits per endpoint class (posthog/rate_limit.py; docs/posthog-api.md).
HOURLY_LIMIT = {"query": 2400, "analytics": 1200, "crud": 4800}
TOOL_ENDPOINT_CLASS = {"ours": "query", "raw": "query", "official": "analytics"}
MODEL_EVENTS = 10_000_000

TARGET_REQUESTS_PER_1M = 100
TARGET_CPU_VS_OFFICIAL = 1 / 3
TARGET_CPU_VS_RAW = 2.0
TARGET_RSS_MB = 250
TARGET_RSS_GROWTH = 0.10

RECORD_PREFIX = b'{"type":"RECORD"'
EVENT_UUID = re.compile(rb'\{"type":"RECORD","record":\{"stream":"events","data":\{"(?:uuid|id)":"([^"]*)"')


# ------------------------------------------------------------------------------------------------
# Reading a child's output
# ------------------------------------------------------------------------------------------------


class OutputReader:
    """Counts RECORD lines per stream and collects primary keys, chunk by chunk.

    Events records (the bulk) are matched by one regex over a whole chunk; a chunk where the regex
    does not account for every RECORD line (an unexpected layout) is parsed line by line instead.
    Other streams' records are few: each is parsed with orjson.
    """

    def __init__(self, key_of: Callable[[str, Mapping[str, Any]], Any], events_fast: bool):
        self.key_of = key_of
        self.events_fast = events_fast
        self.counts: Dict[str, int] = {}
        self.keys: Dict[str, List[Any]] = {}
        self.event_uuids: List[bytes] = []
        self.states = 0
        self.errors: List[str] = []
        self.bytes = 0
        self._rest = b""

    def feed(self, chunk: bytes) -> None:
        self.bytes += len(chunk)
        data = self._rest + chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            self._rest = data
            return
        self._rest = data[cut + 1:]
        self._complete(data[:cut + 1])

    def close(self) -> None:
        if self._rest:
            self._complete(self._rest + b"\n")
            self._rest = b""

    def _complete(self, block: bytes) -> None:
        self.states += block.count(b'{"type":"STATE"')
        if b'"type":"TRACE","trace":{"type":"ERROR"' in block:
            for line in block.split(b"\n"):
                if line.startswith(b'{"type":"TRACE","trace":{"type":"ERROR"'):
                    error = orjson.loads(line)["trace"].get("error", {})
                    self.errors.append(str(error.get("message") or error.get("internal_message"))[:500])
        total = block.count(RECORD_PREFIX)
        if not total:
            return
        if self.events_fast:
            uuids = EVENT_UUID.findall(block)
            if len(uuids) == total:
                self.event_uuids.extend(uuids)
                self.counts["events"] = self.counts.get("events", 0) + len(uuids)
                return
        for line in block.split(b"\n"):
            if not line.startswith(RECORD_PREFIX):
                continue
            record = orjson.loads(line)["record"]
            stream = record["stream"]
            self.counts[stream] = self.counts.get(stream, 0) + 1
            if stream == "events":
                data = record["data"]
                self.event_uuids.append(str(data.get("uuid") or data.get("id")).encode())
            else:
                self.keys.setdefault(stream, []).append(self.key_of(stream, record["data"]))


def official_key(stream: str, record: Mapping[str, Any]) -> Any:
    return record.get("id")


# ------------------------------------------------------------------------------------------------
# Running one measured child
# ------------------------------------------------------------------------------------------------


@dataclass
class Job:
    tool: str  # ours | official | raw
    streams: str  # events | other
    command: List[str]
    env: Dict[str, str]
    cwd: Path
    key_of: Callable[[str, Mapping[str, Any]], Any]

    @property
    def name(self) -> str:
        return f"{self.tool}:{self.streams}"


@dataclass
class Measurement:
    tool: str
    streams: str
    events: int
    setting: str
    run: int
    exit_code: int
    records: int
    unique: int
    missing: int
    duplicates: int
    requests: int
    requests_by_class: Dict[str, int]
    requests_by_status: Dict[str, int]
    wall: float
    cpu: float
    user: float
    sys: float
    rss_mb: float
    states: int
    output_mb: float
    errors: List[str] = field(default_factory=list)
    per_stream: Dict[str, Dict[str, int]] = field(default_factory=dict)

    @property
    def cpu_us_per_record(self) -> Optional[float]:
        return self.cpu / self.records * 1e6 if self.records else None


# The child is started by a tiny measurer process, not by this one: Linux carries the RSS of the
# process that forks (and, through vfork, execs) into the child's ru_maxrss, and this process holds
# the ground truth (a million uuids). The measurer (python -S, ~10 MB) starts the child with the
# stdout pipe it inherited from us, waits for it with os.wait4 and writes the child's own rusage.
MEASURER = r"""
import json, os, sys, time, subprocess
out, cmd = sys.argv[1], sys.argv[2:]
started = time.perf_counter()
child = subprocess.Popen(cmd, close_fds=True)
_, status, ru = os.wait4(child.pid, 0)
wall = time.perf_counter() - started
with open(out, "w") as f:
    json.dump({"exit": os.waitstatus_to_exitcode(status), "wall": wall, "user": ru.ru_utime, "sys": ru.ru_stime,
               "maxrss_kb": ru.ru_maxrss}, f)
"""


def run_child(job: Job, stderr_path: Path, timeout: float) -> Tuple[int, OutputReader, float, Dict[str, Any]]:
    reader = OutputReader(job.key_of, events_fast=job.streams == "events")
    usage_path = stderr_path.with_suffix(".rusage.json")
    usage_path.unlink(missing_ok=True)
    with open(stderr_path, "wb") as stderr:
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-S", "-c", MEASURER, str(usage_path), *job.command],
                                   stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL,
                                   env=job.env, cwd=str(job.cwd), bufsize=0, start_new_session=True)
        assert process.stdout is not None
        fd = process.stdout.fileno()
        deadline = started + timeout
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            reader.feed(chunk)
            if time.perf_counter() > deadline:
                os.killpg(process.pid, 9)  # the measurer's own session: it and the child, nothing else
                reader.errors.append(f"killed after the {timeout:.0f}s timeout")
                break
        reader.close()
        process.wait()
        wall = time.perf_counter() - started
        process.stdout.close()
    try:
        usage = json.loads(usage_path.read_text())
    except (OSError, ValueError):
        usage = {"exit": process.returncode or -1, "wall": wall, "user": 0.0, "sys": 0.0, "maxrss_kb": 0}
        reader.errors.append(f"the measurer wrote no rusage (exit {process.returncode})")
    return usage["exit"], reader, usage["wall"], usage


def measure(job: Job, emu: EmulatorProcess, truth: Mapping[str, Any], events: int, setting: str, run: int,
            logs: Path, timeout: float) -> Measurement:
    emu.clear_requests()
    stderr_path = logs / f"{events}-{setting}-{job.tool}-{job.streams}-run{run}.stderr"
    code, reader, wall, usage = run_child(job, stderr_path, timeout)
    log = emu.requests()
    by_class: Dict[str, int] = {}
    by_status: Dict[str, int] = {}
    for entry in log:
        by_class[entry.get("endpoint_class") or "?"] = by_class.get(entry.get("endpoint_class") or "?", 0) + 1
        by_status[str(entry.get("status"))] = by_status.get(str(entry.get("status")), 0) + 1

    per_stream: Dict[str, Dict[str, int]] = {}
    missing = unique = duplicates = records = 0
    if job.streams == "events":
        expected_streams: Sequence[str] = ("events",)
    else:
        expected_streams = OFFICIAL_STREAMS if job.tool == "official" else OUR_OTHER_STREAMS
    for stream in expected_streams:
        if stream == "events":
            delivered = set(reader.event_uuids)
            count = len(reader.event_uuids)
            expected = truth["events_bytes"]
        else:
            delivered = set(map(hashable, reader.keys.get(stream, [])))
            count = reader.counts.get(stream, 0)
            expected = set(map(hashable, truth[stream]))
        lost = len(expected - delivered)
        per_stream[stream] = {"records": count, "unique": len(delivered), "missing": lost, "truth": len(expected)}
        records += count
        unique += len(delivered)
        duplicates += count - len(delivered)
        missing += lost
    cpu = usage["user"] + usage["sys"]
    if code != 0 and not reader.errors:
        reader.errors.append(stderr_path.read_bytes()[-400:].decode(errors="replace"))
    return Measurement(
        tool=job.tool, streams=job.streams, events=events, setting=setting, run=run, exit_code=code,
        records=records, unique=unique, missing=missing, duplicates=duplicates, requests=len(log),
        requests_by_class=by_class, requests_by_status=by_status, wall=wall, cpu=cpu, user=usage["user"],
        sys=usage["sys"], rss_mb=usage["maxrss_kb"] / 1024, states=reader.states, output_mb=reader.bytes / 2**20,
        errors=reader.errors[:5], per_stream=per_stream,
    )


# ------------------------------------------------------------------------------------------------
# Setting up the tools
# ------------------------------------------------------------------------------------------------


def ensure_official_venv() -> Path:
    """`.bench/official-venv` with airbyte-source-posthog==1.1.28 from PyPI (installed once)."""
    script = OFFICIAL_VENV / "bin" / "source-posthog"
    marker = OFFICIAL_VENV / f".installed-{OFFICIAL_PACKAGE}-{OFFICIAL_VERSION}"
    if script.exists() and marker.exists():
        return script
    print(f"Installing {OFFICIAL_PACKAGE}=={OFFICIAL_VERSION} into {OFFICIAL_VENV.relative_to(REPO)} ...", flush=True)
    BENCH.mkdir(exist_ok=True)
    if not (OFFICIAL_VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(OFFICIAL_VENV)], check=True)
    pip = [str(OFFICIAL_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run(pip + ["--upgrade", "pip"], check=True)
    subprocess.run(pip + [f"{OFFICIAL_PACKAGE}=={OFFICIAL_VERSION}"], check=True)
    marker.write_text(f"{OFFICIAL_PACKAGE}=={OFFICIAL_VERSION}\n")
    return script


def git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=str(REPO), capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def snapshot_source(directory: Path) -> Tuple[Path, Dict[str, Any]]:
    """Copy source_posthog/ as it is now, so every run measures the same code.

    Other people commit to this checkout while a benchmark runs; `ours` runs the installed console
    script with PYTHONPATH on this copy (it wins over the editable install's finder).
    """
    destination = directory / "src"
    shutil.copytree(REPO / "source_posthog", destination / "source_posthog", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    changes = git("status", "--porcelain", "--", "source_posthog")
    return destination, {"commit": git("rev-parse", "--short", "HEAD"), "subject": git("log", "-1", "--format=%s"),
                         "uncommitted": changes.splitlines()}


def clean_env(**extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP", "PYTHONPROFILEIMPORTTIME")}
    env.update(extra)
    return env


def official_catalog(directory: Path, streams: Iterable[str], name: str) -> Path:
    configured = []
    for stream in streams:
        incremental = stream == "events"
        configured.append({
            "stream": {"name": stream, "json_schema": {},
                       "supported_sync_modes": ["full_refresh", "incremental"] if incremental else ["full_refresh"]},
            "sync_mode": "incremental" if incremental else "full_refresh",
            "destination_sync_mode": "append" if incremental else "overwrite",
            **({"cursor_field": ["timestamp"]} if incremental else {}),
        })
    path = directory / name
    path.write_text(json.dumps({"streams": configured}, indent=2))
    return path


def build_jobs(tools: Sequence[str], streams: Sequence[str], emu: EmulatorProcess, directory: Path, official: Optional[Path],
               ours_source: Path) -> List[Job]:
    directory.mkdir(parents=True, exist_ok=True)
    start_iso = START.strftime("%Y-%m-%dT%H:%M:%SZ")
    ours_env = clean_env(SOURCE_POSTHOG_INGESTION_LAG_SECONDS=str(INGESTION_LAG_SECONDS), PYTHONPATH=str(ours_source))
    jobs: List[Job] = []
    ours_config = write_config(directory, emu.url, emu.api_key, emu.project_id, anchor_date=start_iso, events_page_size=PAGE_SIZE)
    official_config = directory / "official_config.json"
    official_config.write_text(json.dumps({"api_key": emu.api_key, "start_date": start_iso, "base_url": emu.url}, indent=2))
    for tool in tools:
        for part in streams:
            if tool == "ours":
                catalog = write_catalog(directory, ["events"] if part == "events" else OUR_OTHER_STREAMS, incremental=True,
                                        name=f"ours_catalog_{part}.json")
                command = connector_command() + ["read", "--config", str(ours_config), "--catalog", str(catalog)]
                jobs.append(Job("ours", part, command, ours_env, directory, primary_key))
            elif tool == "official":
                assert official is not None
                catalog = official_catalog(directory, ["events"] if part == "events" else OFFICIAL_STREAMS, f"official_catalog_{part}.json")
                command = [str(official), "read", "--config", str(official_config), "--catalog", str(catalog)]
                jobs.append(Job("official", part, command, clean_env(), directory, official_key))
            elif tool == "raw" and part == "events":
                command = [sys.executable, "-m", "tools.bench.benchmark_raw", "--url", emu.url, "--api-key", emu.api_key,
                           "--project-id", str(emu.project_id), "--start", start_iso, "--page-size", str(PAGE_SIZE),
                           "--lag-seconds", str(INGESTION_LAG_SECONDS)]
                jobs.append(Job("raw", "events", command, clean_env(PYTHONPATH=str(REPO)), REPO, primary_key))
    return jobs


# ------------------------------------------------------------------------------------------------
# Aggregation, targets, model, report
# ------------------------------------------------------------------------------------------------


def median(values: Iterable[Optional[float]]) -> Optional[float]:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


@dataclass
class Row:
    tool: str
    streams: str
    events: int
    setting: str
    runs: List[Measurement]

    def med(self, attr: str) -> Optional[float]:
        return median(getattr(m, attr) for m in self.runs)

    @property
    def cpu_per_record(self) -> Optional[float]:  # µs
        return median(m.cpu_us_per_record for m in self.runs)

    @property
    def max_missing(self) -> int:
        return max(m.missing for m in self.runs)

    @property
    def exit_codes(self) -> str:
        codes = sorted({m.exit_code for m in self.runs})
        return ",".join(map(str, codes))


def group(measurements: Sequence[Measurement]) -> Dict[Tuple[int, str, str, str], Row]:
    rows: Dict[Tuple[int, str, str, str], Row] = {}
    for m in measurements:
        key = (m.events, m.setting, m.tool, m.streams)
        rows.setdefault(key, Row(m.tool, m.streams, m.events, m.setting, [])).runs.append(m)
    return rows


def fmt(value: Optional[float], digits: int = 1, thousands: bool = False) -> str:
    if value is None:
        return "–"
    if thousands:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def results_table(rows: Mapping[Tuple[int, str, str, str], Row]) -> List[str]:
    header = ("| events | setting | tool | streams | records delivered | missing | dup. | requests | wall s | CPU s "
              "| CPU µs/record | peak RSS MB | exit |")
    lines = [header, "|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for key in sorted(rows, key=lambda k: (k[0], list(SETTINGS).index(k[1]), ["ours", "official", "raw"].index(k[2]), k[3])):
        row = rows[key]
        lines.append(
            f"| {row.events:,} | {row.setting} | {row.tool} | {row.streams} | {fmt(row.med('records'), thousands=True)} "
            f"| {fmt(row.med('missing'), thousands=True)} | {fmt(row.med('duplicates'), thousands=True)} "
            f"| {fmt(row.med('requests'), thousands=True)} | {fmt(row.med('wall'))} | {fmt(row.med('cpu'), 2)} "
            f"| {fmt(row.cpu_per_record)} | {fmt(row.med('rss_mb'))} | {row.exit_codes} |"
        )
    return lines


@dataclass
class Verdict:
    name: str
    ok: Optional[bool]  # None: not measured in this run
    measured: str
    info: bool = False  # reported, not a target

    def line(self) -> str:
        mark = "INFO" if self.info else {True: "PASS", False: "FAIL", None: "n/a "}[self.ok]
        return f"[{mark}] {self.name}: {self.measured}"


def evaluate(rows: Mapping[Tuple[int, str, str, str], Row], events: Sequence[int]) -> Tuple[List[Verdict], int]:
    big = 1_000_000 if 1_000_000 in events else max(events)
    small = 100_000 if 100_000 in events else min(events)
    verdicts: List[Verdict] = []
    settings = [s for s in SETTINGS if any(k[0] == big and k[1] == s for k in rows)]

    def row(tool: str, setting: str, streams: str = "events", n: int = big) -> Optional[Row]:
        return rows.get((n, setting, tool, streams))

    # 1. No events missing.
    parts, ok = [], True
    for setting in settings:
        r = row("ours", setting)
        if r:
            parts.append(f"{setting}: {r.max_missing:,} missing of {big:,} (worst of {len(r.runs)} runs), exit {r.exit_codes}")
            ok = ok and r.max_missing == 0 and r.exit_codes == "0"
    verdicts.append(Verdict(f"ours: 0 events missing at {big:,}", ok if parts else None, "; ".join(parts) or "not run"))
    parts = []
    for setting in settings:
        r = row("official", setting)
        if r:
            parts.append(f"{setting}: delivered {fmt(r.med('records'), thousands=True)}, missing {fmt(r.med('missing'), thousands=True)} "
                         f"({100 * (r.med('missing') or 0) / big:.1f}%)")
    if parts:
        verdicts.append(Verdict("official: events lost (reported as measured)", None, "; ".join(parts), info=True))

    # 2. Requests per 1M events.
    parts, ok = [], True
    for setting in settings:
        r = row("ours", setting)
        if r:
            per_million = (r.med("requests") or 0) * 1_000_000 / big
            parts.append(f"{setting}: {per_million:,.0f} per 1M ({fmt(r.med('requests'), thousands=True)} for {big:,})")
            ok = ok and per_million <= TARGET_REQUESTS_PER_1M
    verdicts.append(Verdict(f"ours: requests <= {TARGET_REQUESTS_PER_1M} per 1M events", ok if parts else None, "; ".join(parts) or "not run"))

    # 3. CPU per record vs the official connector, uncapped.
    ours, official = row("ours", "uncapped"), row("official", "uncapped")
    if ours and official and ours.cpu_per_record and official.cpu_per_record:
        ratio = ours.cpu_per_record / official.cpu_per_record
        verdicts.append(Verdict(
            "ours: CPU s/record <= 1/3 of the official connector's (uncapped)", ratio <= TARGET_CPU_VS_OFFICIAL,
            f"{ours.cpu_per_record:.1f} vs {official.cpu_per_record:.1f} µs/record = {ratio:.3f}x (limit {TARGET_CPU_VS_OFFICIAL:.3f}x)"))
    else:
        verdicts.append(Verdict("ours: CPU s/record <= 1/3 of the official connector's (uncapped)", None, "needs ours and official, uncapped"))

    # 4. CPU per record vs the raw baseline.
    parts, ok = [], True
    for setting in settings:
        ours, raw = row("ours", setting), row("raw", setting)
        if ours and raw and ours.cpu_per_record and raw.cpu_per_record:
            ratio = ours.cpu_per_record / raw.cpu_per_record
            parts.append(f"{setting}: {ours.cpu_per_record:.1f} vs {raw.cpu_per_record:.1f} µs/record = {ratio:.2f}x")
            ok = ok and ratio <= TARGET_CPU_VS_RAW
    verdicts.append(Verdict(f"ours: CPU s/record <= {TARGET_CPU_VS_RAW:g}x the raw baseline's", ok if parts else None,
                            "; ".join(parts) or "needs ours and raw"))

    # 5. Peak RSS, and its growth from the small to the big dataset.
    for streams in ("events", "other"):
        parts, ok = [], True
        for setting in settings:
            r = row("ours", setting, streams)
            if r:
                parts.append(f"{setting}: {r.med('rss_mb'):.1f} MB")
                ok = ok and (r.med("rss_mb") or 0) <= TARGET_RSS_MB
        if parts:
            verdicts.append(Verdict(f"ours ({streams}): peak RSS <= {TARGET_RSS_MB} MB at {big:,}", ok, "; ".join(parts)))
        parts, ok = [], True
        if small != big:
            for setting in settings:
                a, b = row("ours", setting, streams, small), row("ours", setting, streams, big)
                if a and b:
                    growth = (b.med("rss_mb") or 0) / (a.med("rss_mb") or 1) - 1
                    parts.append(f"{setting}: {a.med('rss_mb'):.1f} → {b.med('rss_mb'):.1f} MB ({100 * growth:+.1f}%)")
                    ok = ok and growth <= TARGET_RSS_GROWTH
        if parts:
            verdicts.append(Verdict(f"ours ({streams}): peak RSS at {big:,} <= +{100 * TARGET_RSS_GROWTH:.0f}% of {small:,}", ok, "; ".join(parts)))
        elif streams == "events":
            verdicts.append(Verdict(f"ours ({streams}): peak RSS growth from 100k to 1M <= +10%", None, "needs two event counts"))
    return verdicts, big


def backfill_model(rows: Mapping[Tuple[int, str, str, str], Row], big: int) -> List[str]:
    lines = [
        f"Modeled backfill of {MODEL_EVENTS:,} events under PostHog's hourly rate limits, from the {big:,}-event medians:",
        "",
        "    R = requests(N) × 10M / N                     requests for 10M events (pages scale with events)",
        "    T_rate = R / L                                L = hourly limit of the endpoint class:",
        "                                                  query (HogQL) 2,400/h; analytics (legacy /events/) 1,200/h",
        "    T_cpu  = CPU s/record × 10M                   measured client CPU",
        "    T = max(T_rate, T_cpu)                        pacing waits cost no CPU, so the two overlap",
        "",
        "| setting | tool | delivered of N | requests (N) | R (10M) | L /h | T_rate | T_cpu | modeled T |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for setting in SETTINGS:
        for tool in ("ours", "official", "raw"):
            r = rows.get((big, setting, tool, "events"))
            if not r or not r.med("requests"):
                continue
            limit = HOURLY_LIMIT[TOOL_ENDPOINT_CLASS[tool]]
            requests_10m = r.med("requests") * MODEL_EVENTS / big
            t_rate = requests_10m / limit * 3600
            t_cpu = (r.cpu_per_record or 0) * 1e-6 * MODEL_EVENTS
            delivered = r.med("records") or 0
            if delivered < big * 0.999:  # pages stop early: nothing to model, the loss is the result
                lines.append(f"| {setting} | {tool} | {100 * delivered / big:.1f}% | {r.med('requests'):,.0f} | – | {limit:,} | – | – "
                             f"| no backfill: it stops after {delivered:,.0f} of {big:,} events |")
                continue
            lines.append(
                f"| {setting} | {tool} | {100 * delivered / big:.1f}% | {r.med('requests'):,.0f} | {requests_10m:,.0f} | {limit:,} "
                f"| {_duration(t_rate)} | {_duration(t_cpu)} | {_duration(max(t_rate, t_cpu))} |"
            )
    lines += [
        "",
        "T_rate is the sustained bound (requests ÷ hourly limit); a backfill needing fewer requests than one hour's",
        "budget is bounded instead by the per-minute limit (240/min) and our 3 requests/s pacing, i.e. faster.",
    ]
    return lines


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def machine() -> Dict[str, str]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        memory = f"{kb / 2**20:.1f} GiB"
    except (OSError, IndexError, ValueError):
        pass
    return {"cores": str(os.cpu_count()), "memory": memory, "cpu": model or platform.processor(),
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version()}


NOTES_BEGIN, NOTES_END = "<!-- notes:begin -->", "<!-- notes:end -->"


def write_report(path: Path, args: argparse.Namespace, command: str, measurements: Sequence[Measurement], started: datetime,
                 seconds: float, results_json: Path) -> List[str]:
    rows = group(measurements)
    verdicts, big = evaluate(rows, args.events)
    info = machine()
    notes = ""
    if path.exists():
        old = path.read_text()
        if NOTES_BEGIN in old and NOTES_END in old:
            notes = old[old.index(NOTES_BEGIN):old.index(NOTES_END) + len(NOTES_END)]
    full = "make bench   # = .venv/bin/python -m tools.bench.benchmark --events 100000,1000000 --runs 3 --settings capped,uncapped --tools ours,official,raw"
    out = [
        "# Benchmarks: source-posthog vs the official Airbyte connector vs a raw baseline",
        "",
        f"- Date: {started.strftime('%Y-%m-%d %H:%M UTC')}; the whole benchmark took {seconds / 60:.1f} min of wall time.",
        f"- Machine: {info['cores']} cores ({info['cpu']}), {info['memory']} memory, {info['os']}, Python {info['python']}.",
        f"- Command: `{command}`",
        f"- Reproduce: `{full}` (quick smoke run: `make bench BENCH_ARGS=\"--events 20000 --runs 1\"`).",
        f"- ours = `source_posthog/` at commit {args.source['commit']} ({args.source['subject']})"
        + (f", plus uncommitted changes ({'; '.join(args.source['uncommitted'])})" if args.source["uncommitted"] else "")
        + "; copied when the benchmark started, so every run measures the same code.",
        f"- Raw figures of every run: `{results_json.relative_to(REPO)}` (not committed).",
        "",
        "## Setup",
        "",
        f"- The bundled PostHog emulator in its own process (`EmulatorProcess`), seed {SEED}, base_time "
        f"{BASE_TIME.strftime('%Y-%m-%dT%H:%M:%SZ')}, events over {SPAN_DAYS} days, ~30 properties (~1 KB) an event; "
        "project 2 holds every event, project 3 none.",
        "- Settings: **capped** = the legacy `GET /events/` as PostHog has it today (1000 rows a page, offset ≤ 50,000); "
        "**uncapped** = no page cap and no offset limit (the official connector at its best). The HogQL `query/` endpoint "
        "that ours and raw use is the same in both.",
        f"- **ours**: `source-posthog read` of this repo (incremental first sync, anchor_date {START.strftime('%Y-%m-%dT%H:%M:%SZ')}, "
        f"events_page_size {PAGE_SIZE:,}, `SOURCE_POSTHOG_INGESTION_LAG_SECONDS={INGESTION_LAG_SECONDS}`, its 3 requests/s pacing on: "
        "wall time includes it, CPU does not). `events` alone, and separately the ten other streams.",
        f"- **official**: `{OFFICIAL_PACKAGE}=={OFFICIAL_VERSION}` from PyPI in `.bench/official-venv` (declarative CDK source), "
        f"config `{{api_key, start_date: {START.strftime('%Y-%m-%dT%H:%M:%SZ')}, base_url}}`. It reads every project the key lists and "
        "pages `GET /events/` with offset and limit=10000 in 30-day slices. `events` alone, and separately its six other streams.",
        "- **raw**: `tools/bench/benchmark_raw.py`: plain `http.client`, the same HogQL keyset page queries as ours "
        f"(LIMIT {PAGE_SIZE:,}), orjson, RECORD lines with `properties` parsed to an object: the client-side floor.",
        "- Per run: records delivered; missing and duplicated versus the emulator's ground truth (uuid sets for events, "
        "primary keys for the other streams, project 2); requests from the emulator's request log; wall seconds; CPU seconds = "
        "user+sys of the child alone (`os.wait4`); peak RSS = its ru_maxrss. The child's stdout is read through a pipe by a "
        "regex over whole chunks, in the parent process.",
        f"- {args.runs} run(s) of each tool, interleaved (run 1 of every tool, then run 2 ...); the table shows medians.",
        "",
        "## Results (medians)",
        "",
        *results_table(rows),
        "",
        "`other` = every stream but events (ours: projects, cohorts, feature_flags, insights, annotations, actions, "
        "event_definitions, property_definitions, persons, session_recordings; official: projects, cohorts, "
        "feature_flags, persons, annotations, insights — the official one also reads project 3, so it delivers more "
        "records than project 2's ground truth).",
        "",
        f"## Targets ({big:,} events)",
        "",
        "```",
        *[v.line() for v in verdicts],
        "```",
        "",
        "## Modeled backfill",
        "",
        *backfill_model(rows, big),
        "",
    ]
    errors = [(m, e) for m in measurements for e in m.errors]
    if errors:
        out += ["## Errors reported by the tools", ""]
        seen = set()
        for m, error in errors:
            key = (m.tool, m.streams, m.setting, error[:120])
            if key not in seen:
                seen.add(key)
                out.append(f"- {m.tool}:{m.streams} {m.events:,} {m.setting} run {m.run} (exit {m.exit_code}): {error[:300]}")
        out.append("")
    if notes:
        out += [notes, ""]
    path.write_text("\n".join(out))
    return [v.line() for v in verdicts]


# ------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    if argv is None:
        argv = sys.argv[1:] or shlex.split(os.environ.get("BENCH_ARGS", ""))
    parser = argparse.ArgumentParser(prog="python -m tools.bench.benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("--events", default="100000,1000000", help="comma-separated event counts (default 100000,1000000)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each tool, interleaved (default 3)")
    parser.add_argument("--settings", default="capped,uncapped", help="emulator settings: capped, uncapped")
    parser.add_argument("--tools", default="ours,official,raw", help="ours, official, raw")
    parser.add_argument("--streams", default="events,other", help="events, other (every other stream; ours and official)")
    parser.add_argument("--output", default=str(REPO / "BENCHMARKS.md"), help="the report (default BENCHMARKS.md)")
    parser.add_argument("--timeout", type=float, default=4 * 3600, help="seconds before one run is killed")
    args = parser.parse_args(list(argv))
    args.events = [int(float(n)) for n in args.events.split(",") if n]
    args.settings = [s for s in args.settings.split(",") if s]
    args.tools = [t for t in args.tools.split(",") if t]
    args.streams = [s for s in args.streams.split(",") if s]
    for name, values, known in (("settings", args.settings, SETTINGS), ("tools", args.tools, ("ours", "official", "raw")),
                                ("streams", args.streams, ("events", "other"))):
        unknown = [v for v in values if v not in known]
        if unknown:
            parser.error(f"unknown {name}: {', '.join(unknown)} (known: {', '.join(known)})")
    args.argv = list(argv)
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    command = ".venv/bin/python -m tools.bench.benchmark" + (" " + shlex.join(args.argv) if args.argv else "")
    started = datetime.now(timezone.utc)
    t0 = time.monotonic()
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    workdir = BENCH / "runs" / stamp
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    (BENCH / "results").mkdir(parents=True, exist_ok=True)
    results_json = BENCH / "results" / f"{stamp}.json"
    official = ensure_official_venv() if "official" in args.tools else None
    ours_source, args.source = snapshot_source(workdir)
    probe = subprocess.run([sys.executable, "-c", "import source_posthog; print(source_posthog.__file__)"], capture_output=True,
                           text=True, env=clean_env(PYTHONPATH=str(ours_source)), cwd=str(workdir))
    if not probe.stdout.strip().startswith(str(ours_source)):
        raise SystemExit(f"the snapshot of source_posthog is not the one imported: {probe.stdout.strip()} {probe.stderr[-500:]}")
    print(f"ours: source_posthog at {args.source['commit']} ({args.source['subject']})"
          + (f", with uncommitted changes: {'; '.join(args.source['uncommitted'])}" if args.source["uncommitted"] else "")
          + f", snapshot in {ours_source.relative_to(REPO)}", flush=True)
    print(f"Benchmark {stamp}: events {args.events}, {args.runs} run(s), settings {args.settings}, tools {args.tools}, "
          f"streams {args.streams}; logs in {workdir.relative_to(REPO)}", flush=True)

    measurements: List[Measurement] = []
    for events in args.events:
        for setting in args.settings:
            config = EmulatorConfig(events=events, seed=SEED, base_time=BASE_TIME, events_span_days=SPAN_DAYS,
                                    data_dir=BENCH / "emulator-cache", **SETTINGS[setting])
            t_start = time.monotonic()
            with EmulatorProcess(config) as emu:
                health = emu.health()
                truth = emu.ground_truth()
                truth["events_bytes"] = {u.encode() for u in truth["events"]}
                print(f"\n== {events:,} events, {setting}: emulator {emu.url} ready in {time.monotonic() - t_start:.1f}s "
                      f"(generated: {health.get('generated')}); ground truth {len(truth['events']):,} events", flush=True)
                jobs = build_jobs(args.tools, args.streams, emu, workdir / f"{events}-{setting}", official, ours_source)
                for run in range(1, args.runs + 1):
                    for job in jobs:
                        m = measure(job, emu, truth, events, setting, run, logs, args.timeout)
                        measurements.append(m)
                        print(f"  run {run} {job.name:15s} exit {m.exit_code} records {m.records:>9,} missing {m.missing:>9,} "
                              f"dup {m.duplicates:>6,} requests {m.requests:>6,} wall {m.wall:8.1f}s cpu {m.cpu:8.2f}s "
                              f"({fmt(m.cpu_us_per_record)} µs/rec) rss {m.rss_mb:7.1f} MB"
                              + (f"  ERROR {m.errors[0][:160]}" if m.errors else ""), flush=True)
                        results_json.write_bytes(orjson.dumps([m.__dict__ for m in measurements], option=orjson.OPT_INDENT_2))
                del truth

    seconds = time.monotonic() - t0
    output = Path(args.output)
    verdicts = write_report(output, args, command, measurements, started, seconds, results_json)
    rows = group(measurements)
    print("\n" + "\n".join(results_table(rows)))
    print("\nTargets:")
    for line in verdicts:
        print("  " + line)
    print(f"\nWrote {output} and {results_json.relative_to(REPO)}; {seconds / 60:.1f} min in all.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
