"""Fixtures of the reliability suite (issue "Reliability", and the kill test of issue "Events").

- `BASE_TIME` is the emulator datasets' "now" for the whole session (this hour, so the emulator's
  dataset cache is reused across tests and runs); `ANCHOR_DATE` lies before every generated event.
- `start_emulator(...)` starts an in-process `EmulatorServer`; it is stopped after the test.
- `in_process.read(...)` runs a sync through `AirbyteEntrypoint` in this process: the command
  `source-posthog read` runs, minus the process. The CDK's backoff sleeps
  (`airbyte_cdk.sources.streams.http.rate_limiting.time.sleep`) are recorded in
  `in_process.backoffs` instead of waited for, so a 5xx schedule (5 + 10 + 15 s) or a 120 s
  Retry-After costs nothing; every other sleep (the pacing budget, the emulator's slow responses)
  is real. The events ingestion lag is 1 s (the emulator has no ingestion delay).
- `virtual_throttle_clock`: the emulator's throttles measure time on a clock that moves only when
  the connector's backoff "sleeps", so a recorded 121 s sleep is 121 s to the emulator too.

Subprocess runs (`connector.run_sync`) are used where the process itself matters: kills, the
exit codes and output of bad input, debug mode, and pacing in real time.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence

import orjson
import pytest
from airbyte_cdk.entrypoint import AirbyteEntrypoint
from airbyte_cdk.models import AirbyteMessageSerializer
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from tools.connector import (
    ALL_STREAMS,
    PRIMARY_KEYS,
    SyncResult,
    parse_output,
    write_catalog,
    write_config,
    write_state,
)
from tools.emulator import KEYS, EmulatorConfig, EmulatorServer
from tools.emulator import ratelimit as emulator_ratelimit
from source_posthog import seams
from source_posthog.source import SourcePosthog
from tools.connector import hashable
from unit_tests.support.secrets import known_secrets, leaked
from unit_tests.support.sleeps import BACKOFF_MODULE, SleepRecorder

BASE_TIME = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
ANCHOR_DATE = (BASE_TIME - timedelta(days=31)).strftime("%Y-%m-%dT%H:%M:%SZ")  # events span 30 days
INGESTION_LAG_SECONDS = 1
SUBPROCESS_ENV = {
    seams.INGESTION_LAG_ENV: str(INGESTION_LAG_SECONDS),
    # Pacing windows shrunk 1000x: only the tests about pacing pace for real.
    seams.RATE_LIMIT_SCALE_ENV: "1000",
}
CDK_EXTRA_SECOND = 1  # the CDK sleeps backoff + 1 s ("to cover any fractions of second")


# -- keys and truth ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def api_keys_in_use() -> List[str]:
    """The root conftest's leak guard also scans for every emulator key."""
    return list(KEYS.values())



def truth_sets(truth: Mapping[str, Sequence[Any]]) -> Dict[str, set]:
    return {stream: set(map(hashable, keys)) for stream, keys in truth.items()}


def duplicates(keys: Iterable[Any]) -> List[Any]:
    seen, repeated = set(), []
    for key in keys:
        if key in seen:
            repeated.append(key)
        seen.add(key)
    return repeated


def union_keys(results: Iterable[SyncResult], stream: str) -> set:
    keys: set = set()
    for result in results:
        keys.update(result.keys(stream))
    return keys


def assert_union_is_truth(results: Sequence[SyncResult], truth: Mapping[str, Sequence[Any]], streams: Sequence[str] = ALL_STREAMS) -> None:
    expected = truth_sets(truth)
    problems = []
    for stream in streams:
        got = union_keys(results, stream)
        missing, extra = expected[stream] - got, got - expected[stream]
        if missing or extra:
            problems.append(f"{stream}: {len(missing)} missing (e.g. {sorted(map(str, missing))[:3]}), {len(extra)} not in truth")
    assert not problems, "union of the syncs differs from the ground truth:\n" + "\n".join(problems)


def error_messages(result: SyncResult) -> str:
    return "\n".join(str(error.get("message")) for error in result.errors())


# -- emulators ------------------------------------------------------------------------------------


@pytest.fixture
def start_emulator() -> Iterator[Callable[..., EmulatorServer]]:
    """`start_emulator(events=..., seed=..., **EmulatorConfig fields)`; stopped after the test."""
    started: List[EmulatorServer] = []

    def start(events: int = 2_000, seed: int = 1, **config: Any) -> EmulatorServer:
        config.setdefault("base_time", BASE_TIME)
        server = EmulatorServer(EmulatorConfig(events=events, seed=seed, **config)).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@dataclass
class Workspace:
    """Config, catalog and state files for syncs against one emulator."""

    directory: Path
    emulator: Any
    api_key: Optional[str] = None

    def config(self, name: str = "config", **fields: Any) -> Path:
        fields.setdefault("anchor_date", ANCHOR_DATE)
        directory = self.directory / name
        directory.mkdir(parents=True, exist_ok=True)
        return write_config(directory, self.emulator.url, self.api_key or self.emulator.api_key, self.emulator.project_id, **fields)

    def catalog(self, streams: Sequence[str] = ALL_STREAMS, incremental: bool = True, name: str = "catalog.json") -> Path:
        return write_catalog(self.directory, streams, incremental=incremental, name=name)

    def state(self, states: Mapping[str, Mapping[str, Any]], name: str = "state.json", incremental_only: bool = False) -> Path:
        return write_state(self.directory, states, name=name, incremental_only=incremental_only)


@pytest.fixture
def workspace(tmp_path: Path) -> Callable[..., Workspace]:
    def make(emulator: Any, api_key: Optional[str] = None) -> Workspace:
        return Workspace(tmp_path, emulator, api_key)

    return make


# -- in-process syncs -----------------------------------------------------------------------------


class VirtualClock:
    """`time` for the emulator's throttles: it stands still, and moves when the connector sleeps."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class InProcessConnector:
    sleep: SleepRecorder

    @property
    def backoffs(self) -> List[float]:
        return self.sleep.backoffs

    def read(self, config: Path, catalog: Path, state: Optional[Path] = None) -> SyncResult:
        """`source-posthog read` in this process. Records keep their primary key fields only.

        The exit code is the one `launch` would give: 1 when the entrypoint raises (the CDK raises
        after a sync in which a stream failed, and on config errors), else 0.
        """
        args = ["read", "--config", str(config), "--catalog", str(catalog)] + (["--state", str(state)] if state else [])
        configured = orjson.loads(config.read_bytes())
        secrets = known_secrets(configured.get("api_key") if isinstance(configured, dict) else None, *KEYS.values())
        result = SyncResult(returncode=0)
        started = time.monotonic()
        entrypoint = AirbyteEntrypoint(SourcePosthog())
        try:
            for line in entrypoint.run(AirbyteEntrypoint.parse_args(args)):
                self._collect(line, result, secrets)
        except Exception as error:  # what launch()'s excepthook does: a TRACE message, exit code 1
            traced = error if isinstance(error, AirbyteTracedException) else AirbyteTracedException.from_exception(error)
            self._collect(orjson.dumps(AirbyteMessageSerializer.dump(traced.as_airbyte_message())).decode(), result, secrets)
            result.returncode = 1
        result.seconds = time.monotonic() - started
        return result

    @staticmethod
    def _collect(line: str, result: SyncResult, secrets: Sequence[str]) -> None:
        found = leaked(line, secrets)
        assert not found, f"an API key reached the connector's output: {found} in {line[:120]}…"
        if line.startswith('{"type":"RECORD"'):
            record = orjson.loads(line)["record"]
            names = PRIMARY_KEYS.get(record["stream"], ("id",))
            result.records.setdefault(record["stream"], []).append({name: record["data"].get(name) for name in names})
            return
        parse_output(line.encode() + b"\n", result)


@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch) -> InProcessConnector:
    monkeypatch.setenv(seams.INGESTION_LAG_ENV, str(INGESTION_LAG_SECONDS))
    monkeypatch.setenv(seams.RATE_LIMIT_SCALE_ENV, SUBPROCESS_ENV[seams.RATE_LIMIT_SCALE_ENV])
    recorder = SleepRecorder(real_sleep=time.sleep)
    monkeypatch.setattr(f"{BACKOFF_MODULE}.time.sleep", recorder)
    yield InProcessConnector(recorder)
    logging.getLogger("airbyte").setLevel(logging.INFO)


@pytest.fixture
def virtual_throttle_clock(monkeypatch: pytest.MonkeyPatch, in_process: InProcessConnector) -> VirtualClock:
    clock = VirtualClock()
    monkeypatch.setattr(emulator_ratelimit, "time", clock)
    in_process.sleep.advance = clock.advance
    return clock


# -- emulator request log -------------------------------------------------------------------------


def api_requests(emulator: Any, path_contains: str = "") -> List[Mapping[str, Any]]:
    return [entry for entry in emulator.requests() if path_contains in entry["path"]]


def statuses(entries: Iterable[Mapping[str, Any]]) -> List[Any]:
    """Per request: its status, or the fault that answered it without one (reset, truncate, slow)."""
    return [entry["fault"] if entry.get("fault") in ("reset", "truncate", "slow") else entry["status"] for entry in entries]

