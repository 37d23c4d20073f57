"""PyAirbyte (issue #10): the real `source-posthog` command read three times through PyAirbyte
into a DuckDB cache, with PyAirbyte's default behaviour (it keeps the state of every stream in
the cache and passes it back on the next read).

After each read every table of the cache equals the emulator's ground truth (primary keys, no
duplicates, and the fields the mutation changed), and every full-refresh stream was read again
by that read (its rows carry this read's `_airbyte_extracted_at`; a full-refresh stream whose
state makes it deliver nothing would otherwise only look right because its data did not change).
PyAirbyte must find a SQL type for every field of every schema: no "Could not determine airbyte
type" warning.

Offline: PyAirbyte reads `AIRBYTE_OFFLINE_MODE`, `AIRBYTE_LOCAL_REGISTRY`, `DO_NOT_TRACK` and its
directories' variables when it is imported, so they are set before the (lazy) import, and any
connection that is not to the loopback emulator fails the test.
"""

from __future__ import annotations

import io
import ipaddress
import logging
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import pytest

from integration_tests.conftest import ANCHOR_DATE, SUBPROCESS_ENV, hashable
from tools.connector import ALL_STREAMS, INCREMENTAL_STREAMS, PRIMARY_KEYS, connector_command
from tools.emulator import PROJECT_ID, EmulatorServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

FULL_REFRESH_STREAMS = tuple(stream for stream in ALL_STREAMS if stream not in INCREMENTAL_STREAMS)
TYPE_WARNINGS = ("Could not determine airbyte type", "Could not find SQL type")
# PyAirbyte reads these once, when `airbyte` is first imported.
OFFLINE_ENV = {
    "AIRBYTE_OFFLINE_MODE": "1",  # no registry download (errors ignored) and no telemetry
    "AIRBYTE_LOCAL_REGISTRY": "0",  # the registry is disabled outright, not just its errors
    "DO_NOT_TRACK": "1",  # no anonymous usage reporting (also implied by offline mode)
}
# The fields `emu.mutate` changes in the records it lists as "updated".
CHANGED_FIELDS = {"annotations": ("content", "updated_at"), "session_recordings": ("end_time", "recording_duration", "active_seconds")}
TIME_FIELDS = {"updated_at", "end_time"}
MUTATIONS = (
    dict(new_events=150, late_events=20, late_events_max_age_days=3, new_annotations=3, updated_annotations=4,
         new_session_recordings=4, grow_ongoing_recordings=True, new_persons=5, new_sessions=3, grow_ongoing_sessions=True),
    dict(new_events=120, late_events=15, late_events_max_age_days=2, new_annotations=2, updated_annotations=3,
         new_session_recordings=3, grow_ongoing_recordings=True, new_persons=4, new_sessions=2, grow_ongoing_sessions=True),
)


# -- PyAirbyte, offline --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The `airbyte` module, imported with the offline environment and its directories in a
    temporary folder (by default it writes `.cache/` and logs into the working directory and /tmp)."""
    home = tmp_path_factory.mktemp("pyairbyte")
    env = {
        **OFFLINE_ENV,
        "AIRBYTE_PROJECT_DIR": str(home / "project"),
        "AIRBYTE_CACHE_ROOT": str(home / "cache"),
        "AIRBYTE_LOGGING_ROOT": str(home / "logs"),
        "AIRBYTE_TEMP_DIR": str(home / "tmp"),
    }
    (home / "tmp").mkdir()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        import airbyte
        from airbyte import constants, registry

        if not constants.AIRBYTE_OFFLINE_MODE or not registry._is_registry_disabled(registry._get_registry_url()):
            pytest.fail("airbyte was imported before this module set AIRBYTE_OFFLINE_MODE: it would reach the registry")
        yield airbyte


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> List[str]:
    """Fail any connection or name lookup of this process that leaves the machine (the emulator
    listens on 127.0.0.1; the connector runs in a subprocess with the emulator's URL only)."""
    attempts: List[str] = []

    def is_local(host: Any) -> bool:
        if host in ("localhost", "", None):
            return True
        try:
            return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
        except ValueError:
            return False

    real_connect, real_connect_ex, real_getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def check(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not is_local(address[0]):
            attempts.append(f"connect {address}")
            raise OSError(f"test_pyairbyte: network access to {address} refused (offline test)")

    def connect(sock: socket.socket, address: Any) -> None:
        check(sock, address)
        return real_connect(sock, address)

    def connect_ex(sock: socket.socket, address: Any) -> int:
        check(sock, address)
        return real_connect_ex(sock, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not is_local(host):
            attempts.append(f"getaddrinfo {host}")
            raise socket.gaierror(f"test_pyairbyte: name lookup of {host} refused (offline test)")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return attempts


class PyAirbyteOutput:
    """What PyAirbyte prints (its type warnings go to stdout through `rich.print`) and logs."""

    def __init__(self, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture) -> None:
        self.capsys, self.caplog, self.text = capsys, caplog, io.StringIO()

    def collect(self) -> str:
        captured = self.capsys.readouterr()
        self.text.write(captured.out + captured.err + "\n".join(r.getMessage() for r in self.caplog.records))
        self.caplog.clear()
        return self.text.getvalue()

    def type_warnings(self) -> List[str]:
        return [line.strip() for line in self.collect().splitlines() if any(w in line for w in TYPE_WARNINGS)]


# -- comparing the cache with the emulator -------------------------------------------------------


def table_rows(cache: Any, stream: str, columns: Tuple[str, ...]) -> List[Mapping[str, Any]]:
    with cache.get_sql_engine().connect() as connection:
        import sqlalchemy

        table = cache.processor.get_sql_table(stream)
        result = connection.execute(sqlalchemy.select(*(table.c[name] for name in columns)))
        return [dict(zip(columns, row)) for row in result]


def key_of(stream: str, row: Mapping[str, Any]) -> Any:
    names = PRIMARY_KEYS.get(stream, ("id",))
    return tuple(row[name] for name in names) if len(names) > 1 else row[names[0]]


def parse_time(value: Any) -> Any:
    """ISO strings and datetimes as aware datetimes (PyAirbyte keeps `_airbyte_extracted_at` as a
    naive UTC timestamp)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value


def differences(
    cache: Any, emu: EmulatorServer, changed: Mapping[str, List[Any]], read_started: datetime, sessions: Optional[Mapping[str, Any]] = None
) -> List[str]:
    """Everything in which the cache differs from the emulator, one line per problem.

    `sessions`: `final`, the `$end_timestamp` of each session a mutation changed (grown, created,
    or made or grown by events hours late: sessions are read by ingestion time, README "Sessions")."""
    truth = emu.ground_truth()
    sessions = sessions or {}
    problems: List[str] = []
    for stream in ALL_STREAMS:
        rows = table_rows(cache, stream, PRIMARY_KEYS.get(stream, ("id",)) + ("_airbyte_extracted_at",))
        keys = [key_of(stream, row) for row in rows]
        expected, got = set(map(hashable, truth[stream])), set(keys)
        if len(keys) != len(got):
            problems.append(f"{stream}: {len(keys) - len(got)} duplicate primary keys in the cache table")
        missing, extra = expected - got, got - expected
        if missing or extra:
            problems.append(f"{stream}: {len(missing)} missing (e.g. {sorted(map(str, missing))[:3]}), {len(extra)} not in the ground truth")
        if stream in FULL_REFRESH_STREAMS:
            stale = [row for row in rows if parse_time(row["_airbyte_extracted_at"]) < read_started]
            if stale:
                problems.append(f"{stream}: {len(stale)} of {len(rows)} rows not read again by this read (full refresh stream left stale)")
    ends = {row["session_id"]: row["_end_timestamp"] for row in table_rows(cache, "sessions", ("session_id", "_end_timestamp"))}
    for session_id, final in sessions.get("final", {}).items():
        if session_id in ends and parse_time(ends[session_id]) != parse_time(final["$end_timestamp"]):
            problems.append(f"sessions {session_id}: $end_timestamp is {ends[session_id]!r} in the cache, {final['$end_timestamp']!r} in PostHog")
    for stream, names in CHANGED_FIELDS.items():
        rows = {row["id"]: row for row in table_rows(cache, stream, ("id",) + names)}
        for item_id in changed.get(stream, []):
            item = emu.app.store.resources.find(stream, PROJECT_ID, str(item_id))
            row = rows.get(item_id)
            if item is None or row is None:
                continue  # a missing key is reported above
            for name in names:
                value = parse_time(item[name]) if name in TIME_FIELDS else item[name]
                if value != (parse_time(row[name]) if name in TIME_FIELDS else row[name]):
                    problems.append(f"{stream} {item_id}: {name} is {row[name]!r} in the cache, {item[name]!r} in PostHog")
    return problems


def unresolvable_fields(catalog: Any) -> List[str]:
    """The columns PyAirbyte cannot type (its warning prints only the property's schema)."""
    from airbyte.types import SQLTypeConversionError, _get_airbyte_type

    fields = []
    for stream in catalog.streams:
        for name, definition in stream.json_schema.get("properties", {}).items():
            try:
                _get_airbyte_type(definition)
            except SQLTypeConversionError:
                fields.append(f"{stream.name}.{name}: {definition}")
    return fields


def changed_records(changes: Mapping[str, Any]) -> Dict[str, List[Any]]:
    return {stream: list(changes.get(stream, {}).get("updated", [])) for stream in ("annotations", "session_recordings")}


# -- the test ------------------------------------------------------------------------------------


def test_given_three_pyairbyte_reads_with_changes_between_then_the_cache_equals_the_ground_truth_after_each(
    ab: Any,
    start_emulator: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    caplog: pytest.LogCaptureFixture,
    loopback_only: List[str],
) -> None:
    caplog.set_level(logging.INFO)
    output = PyAirbyteOutput(capsys, caplog)
    for name, value in SUBPROCESS_ENV.items():  # ingestion lag 1 s (the emulator has none), fast pacing
        monkeypatch.setenv(name, value)
    emu = start_emulator(events=3_000, seed=10)
    source = ab.get_source(
        "source-posthog",
        config={"api_key": emu.api_key, "project_id": emu.project_id, "host": emu.url, "anchor_date": ANCHOR_DATE},
        local_executable=connector_command()[0],
    )
    source.select_all_streams()
    cache = ab.DuckDBCache(db_path=tmp_path / "posthog.duckdb", cache_dir=tmp_path / "cache-files")

    changed: Dict[str, List[Any]] = {}
    sessions: Dict[str, Any] = {"final": {}}
    for number in range(3):
        if number:
            changes = emu.mutate(**MUTATIONS[number - 1])
            assert changes["sessions"]["by_late_events"], "the mutation makes or grows sessions with events hours late"
            sessions["final"].update(changes["sessions"]["final"])
            for stream, ids in changed_records(changes).items():
                changed[stream] = sorted(set(changed.get(stream, [])) | set(ids))
            time.sleep(2)  # past the 1 s ingestion lag the connector leaves at the end of the events range
        read_started = datetime.now(timezone.utc)  # the connector takes seconds to emit its first record
        result = source.read(cache=cache)

        assert set(result.streams) == set(ALL_STREAMS)
        problems = differences(cache, emu, changed, read_started, sessions)
        assert not problems, f"after read {number + 1} of 3 the cache differs from PostHog:\n" + "\n".join(problems)
        warnings = output.type_warnings()
        assert not warnings, (
            f"PyAirbyte found no SQL type for {len(warnings)} columns ({len(set(warnings))} distinct warnings: "
            f"{sorted(set(warnings))}); the fields:\n" + "\n".join(unresolvable_fields(source.discovered_catalog))
        )

    assert not loopback_only, f"PyAirbyte tried to reach the network: {loopback_only}"
