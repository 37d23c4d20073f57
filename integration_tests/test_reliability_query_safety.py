"""Query safety (issue "Reliability" 6): hostile strings cannot change a HogQL query's meaning.

Config and state values reach the events query only as re-formatted timestamps and parsed
UUIDs. So a hostile value either fails the run with a config error before any query is sent,
or is reduced to a plain timestamp or UUID. Every query in the emulator's request log must have
the connector's query grammar, with nothing injected. Hostile text in PostHog's own data is
output, never query text: it comes back intact, and a hostile value in a keyset column is never
sent back in a query.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator, List

import pytest

from integration_tests.conftest import BASE_TIME, SUBPROCESS_ENV, api_requests, error_messages
from tools.connector import run_sync, write_catalog
from tools.emulator import KEYS, PROJECT_ID
from integration_tests.reliability_cases import HOSTILE_CONFIGS, HOSTILE_EVENT_TEXT, HOSTILE_STATES, INJECTION, HostileConfig, HostileState
from source_posthog.api.hogql import EVENT_COLUMNS

QUERY = f"/api/projects/{PROJECT_ID}/query/"
_DT = r"toDateTime64\('\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}', 6, 'UTC'\)"
_UUID = r"toUUID\('[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}'\)"
_CONDITION = "|".join(
    [
        rf"timestamp >= {_DT}",
        rf"timestamp < {_DT}",
        rf"\(timestamp > {_DT} OR \(timestamp = {_DT} AND uuid > {_UUID}\)\)",
        rf"\(timestamp < {_DT} OR \(timestamp = {_DT} AND uuid <= {_UUID}\)\)",
        rf"created_at > {_DT}",
        rf"created_at <= {_DT}",
    ]
)
_WHERE = rf"WHERE (?:{_CONDITION})(?: AND (?:{_CONDITION}))* "
EVENTS_QUERY_GRAMMAR = re.compile(  # the pages, the hourly counts of the plan, the created_at minutes of the watermark
    rf"SELECT {', '.join(EVENT_COLUMNS)} FROM events {_WHERE}ORDER BY timestamp ASC, uuid ASC LIMIT \d+"
    rf"|SELECT toStartOfHour\(timestamp\) AS hour, count\(\) AS events FROM events {_WHERE}GROUP BY hour ORDER BY hour ASC LIMIT \d+"
    rf"|SELECT toStartOfMinute\(created_at\) AS minute, count\(\) AS events FROM events {_WHERE}GROUP BY minute ORDER BY minute ASC LIMIT \d+"
)
HOSTILE_FRAGMENTS = ("'--", "--", "OR 1=1", "1=1", "DROP", "UNION", ";", "\\", "\n", "\u2019")


def logged_queries(emulator: Any) -> List[str]:
    return [entry["hogql"] for entry in api_requests(emulator, QUERY) if entry.get("hogql")]


def assert_every_query_has_the_connector_grammar(queries: List[str]) -> None:
    assert queries, "the sync should have queried events"
    for query in queries:
        assert EVENTS_QUERY_GRAMMAR.fullmatch(query), f"a query outside the connector's grammar: {query}"
        found = [fragment for fragment in HOSTILE_FRAGMENTS if fragment in query]
        assert not found, f"hostile text {found} reached a query: {query}"


@pytest.fixture
def emulator(start_emulator: Any) -> Any:
    return start_emulator(events=2_000, seed=1)


@pytest.mark.parametrize("case", [pytest.param(case, id=case.name) for case in HOSTILE_STATES])
def test_given_a_hostile_events_state_when_read_then_it_fails_before_any_query_or_every_query_keeps_the_connector_grammar(
    case: HostileState, emulator: Any, workspace: Any, in_process: Any
) -> None:
    files = workspace(emulator)
    state = files.state({"events": case.state})

    result = in_process.read(files.config(), files.catalog(["events"]), state)

    if case.accepted:
        assert result.returncode == 0, error_messages(result)
        assert_every_query_has_the_connector_grammar(logged_queries(emulator))
        assert set(result.keys("events")) <= set(emulator.ground_truth("events"))
    else:
        assert result.returncode == 1
        assert any(error.get("failure_type") == "config_error" and "events" in str(error.get("message")) for error in result.errors()), error_messages(result)
        assert api_requests(emulator, QUERY) == [], "a state that cannot be trusted must stop the sync before any query"
        assert result.records == {}


def test_given_a_uuid_state_in_another_valid_form_when_read_then_the_query_carries_its_canonical_form(
    emulator: Any, workspace: Any, in_process: Any
) -> None:
    files = workspace(emulator)
    state = files.state({"events": {"timestamp": "2024-06-01T00:00:00Z", "uuid": "{0190F6A2-AAAA-7BBB-8CCC-123456789ABC}"}})

    result = in_process.read(files.config(events_lookback_window_days=0), files.catalog(["events"]), state)

    assert result.returncode == 0, error_messages(result)
    first = next(query for query in logged_queries(emulator) if "uuid" in query)  # the first page (counts come before it)
    assert "uuid > toUUID('0190f6a2-aaaa-7bbb-8ccc-123456789abc')" in first, first


@pytest.mark.parametrize("case", [pytest.param(case, id=case.name) for case in HOSTILE_CONFIGS])
def test_given_a_hostile_config_value_when_read_then_it_fails_with_a_config_error_before_any_request(
    case: HostileConfig, emulator: Any, workspace: Any, in_process: Any
) -> None:
    files = workspace(emulator)
    config = files.config()
    config.write_text(json.dumps({**json.loads(config.read_text()), **case.fields}))

    result = in_process.read(config, files.catalog(["events"]))

    assert result.returncode == 1
    assert any(error.get("failure_type") == "config_error" for error in result.errors()), error_messages(result)
    assert emulator.requests() == [], "nothing may be sent with a config that cannot be trusted"


def test_given_events_whose_data_holds_quotes_and_sql_when_read_then_they_arrive_intact_and_every_query_keeps_the_connector_grammar(
    emulator: Any, workspace: Any
) -> None:
    timestamp = (BASE_TIME.replace(microsecond=0)).strftime("%Y-%m-%dT%H:%M:%S.000000Z")  # one shared timestamp: keyset ties
    # Ingested a few seconds ago: inside the sync's watermark (now minus its 1 s lag) however fast it starts.
    created_at = (datetime.now(timezone.utc) - timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    rows = [
        {"event": text, "timestamp": timestamp, "created_at": created_at, "distinct_id": text, "properties": {"note": text, text: text}, "elements_chain": text}
        for text in HOSTILE_EVENT_TEXT
    ]
    uuids = emulator.add_events(rows)
    files = workspace(emulator)

    result = run_sync(files.config(events_page_size=1000), files.catalog(["events"]), env=SUBPROCESS_ENV)

    assert result.returncode == 0, error_messages(result)
    delivered = {record["uuid"]: record for record in result.records["events"]}
    assert set(delivered) == set(emulator.ground_truth("events"))
    for uuid, text in zip(uuids, HOSTILE_EVENT_TEXT):
        record = delivered[uuid]
        assert (record["event"], record["distinct_id"], record["elements_chain"]) == (text, text, text)
        assert record["properties"] == {"note": text, text: text}
    assert_every_query_has_the_connector_grammar(logged_queries(emulator))


# -- a hostile keyset value in a response ------------------------------------------------------------


class _HostileQueryServer(ThreadingHTTPServer):
    daemon_threads = True
    queries: List[str]


class _HostileQueryHandler(BaseHTTPRequestHandler):
    """Answers every HogQL query with a full page whose last row has a hostile `uuid`."""

    server: _HostileQueryServer

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        self.server.queries.append(body["query"]["query"])
        limit = int(re.search(r"LIMIT (\d+)$", body["query"]["query"]).group(1))
        rows = [
            [f"0190f6a2-aaaa-7bbb-8ccc-{index:012d}", "$pageview", "2024-06-01T00:00:01.000000Z", "u", "{}", "", None, "2024-06-01T00:00:02.000000Z"]
            for index in range(limit)
        ]
        rows[-1][0] = f"0190f6a2-aaaa-7bbb-8ccc-999999999999{INJECTION}"
        payload = json.dumps({"results": rows, "columns": list(EVENT_COLUMNS), "types": [], "hasMore": False}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def hostile_query_server() -> Iterator[_HostileQueryServer]:
    server = _HostileQueryServer(("127.0.0.1", 0), _HostileQueryHandler)
    server.queries = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_given_a_response_whose_last_uuid_is_hostile_when_the_next_page_is_built_then_the_hostile_text_is_never_sent(
    hostile_query_server: _HostileQueryServer, in_process: Any, tmp_path: Path
) -> None:
    config = tmp_path / "config.json"
    host = f"http://127.0.0.1:{hostile_query_server.server_address[1]}"
    config.write_text(json.dumps({"api_key": KEYS["all_access"], "project_id": PROJECT_ID, "host": host, "anchor_date": "2024-06-01", "events_page_size": 1000}))

    result = in_process.read(config, write_catalog(tmp_path, ["events"]))

    assert result.returncode == 1, "a page cannot be continued from a uuid that is not a UUID"
    assert len(hostile_query_server.queries) == 1
    assert_every_query_has_the_connector_grammar(hostile_query_server.queries)
    assert "events" not in result.states or INJECTION not in json.dumps(result.states["events"]), "the hostile uuid must not reach the state"
