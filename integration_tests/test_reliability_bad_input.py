"""Bad input (issue "Reliability" 4): bad configs, bad states and malformed API responses.

Every row of `reliability_cases.py` runs through the real `source-posthog` command. What is
expected of a bad config or state:
- `check` exits 0 and prints CONNECTION_STATUS FAILED (the Airbyte protocol: a failed check is
  an answer, not a crash); `read` exits 1 with a TRACE error of failure_type config_error;
- the message names the config field (or the stream whose state is bad) and says how to fix it;
- no Python traceback in stdout or stderr, except in the TRACE message's `stack_trace` field,
  which is where the Airbyte protocol carries one (the platform keeps it out of the user's view).
A malformed response (not JSON, no `results`, wrong types; served by a tiny local "PostHog")
must fail the sync with an error that names the endpoint; those syncs run in-process.

The commands run in parallel (a module fixture) to keep the suite fast; each row is its own test.
"""

from __future__ import annotations

import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import orjson
import pytest

from integration_tests.conftest import ANCHOR_DATE, BASE_TIME, SUBPROCESS_ENV
from tools.connector import SyncResult, run_sync, write_catalog, write_state
from tools.emulator import KEYS, EmulatorConfig, EmulatorServer
from integration_tests.reliability_cases import BAD_CONFIGS, BAD_STATES, MALFORMED_RESPONSES, REMOVE, BadConfig, BadState, MalformedResponse

WORKERS = 4
# The module fixture runs about 60 commands (each a fresh interpreter loading the CDK): its setup
# takes ~100 s on 2 cores beside the other test worker, more on a slower machine.
pytestmark = pytest.mark.timeout(900)
READ_STREAMS = ("cohorts", "events")  # a configuration stream and the HogQL one
TRACEBACK = "Traceback (most recent call last)"


# -- running every row once ------------------------------------------------------------------------


class CannedPostHog(ThreadingHTTPServer):
    """`http://127.0.0.1:PORT/case<N>` is a "self-hosted PostHog" whose `MALFORMED_RESPONSES[N].path`
    answers that row's body; every other list is valid and empty."""

    daemon_threads = True


class _CannedHandler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer()

    def _answer(self) -> None:
        match = re.match(r"/case(\d+)(/api/[^?]*)", self.path)
        status, content_type, body = 404, "application/json", b'{"type":"invalid_request","code":"not_found","detail":"Not found.","attr":null}'
        if match:
            case, path = MALFORMED_RESPONSES[int(match.group(1))], match.group(2)
            status = 200
            if path == case.path:
                content_type, body = case.content_type, case.body
            elif path.endswith("/query/"):
                body = b'{"results": [], "columns": ["uuid", "timestamp"], "types": [], "hasMore": false}'
            elif path.endswith("/session_recordings/"):
                body = b'{"results": [], "has_next": false, "version": 4}'
            else:
                body = b'{"count": 0, "next": null, "previous": null, "results": []}'
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def config_text(case: BadConfig, emulator: Any) -> str:
    if case.raw_config is not None:
        return case.raw_config
    config: Dict[str, Any] = {
        "api_key": KEYS[case.api_key] if case.api_key else emulator.api_key,
        "project_id": emulator.project_id,
        "host": emulator.url,
        "anchor_date": ANCHOR_DATE,
    }
    for key, value in case.fields.items():
        if value is REMOVE:
            config.pop(key, None)
        else:
            config[key] = value
    return json.dumps(config)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict[Tuple[str, str], SyncResult]]:
    """Runs every row (check and/or read) once; keyed by (row name, command)."""
    directory = tmp_path_factory.mktemp("bad_input")
    jobs: List[Tuple[Tuple[str, str], Path, Optional[Path], Optional[Path], str]] = []
    with EmulatorServer(EmulatorConfig(events=2_000, seed=1, base_time=BASE_TIME)) as emulator:  # start_emulator's dataset
        for number, case in enumerate(BAD_CONFIGS):
            config = directory / f"config_{number}.json"
            config.write_text(config_text(case, emulator))
            catalog = write_catalog(directory, READ_STREAMS, name=f"catalog_{number}.json")
            for command in case.commands:
                jobs.append(((case.name, command), config, catalog if command == "read" else None, None, command))
        good_config = directory / "good_config.json"
        good_config.write_text(config_text(BadConfig("valid", {}, "", ""), emulator))
        for number, case in enumerate(BAD_STATES):
            catalog = write_catalog(directory, [case.stream], name=f"state_catalog_{number}.json")
            state = directory / f"state_{number}.json"
            if case.raw_file is not None:
                state.write_text(case.raw_file)
            else:
                write_state(directory, {case.stream: case.state}, name=state.name)
            jobs.append(((case.name, "read"), good_config, catalog, state, "read"))

        def run(job: Tuple[Tuple[str, str], Path, Optional[Path], Optional[Path], str]) -> Tuple[Tuple[str, str], SyncResult]:
            key, config, catalog, state, command = job
            return key, run_sync(config, catalog, state=state, command=command, env=SUBPROCESS_ENV, timeout=120)

        with ThreadPoolExecutor(WORKERS) as pool:
            yield dict(pool.map(run, jobs))


@pytest.fixture(scope="module")
def canned_posthog() -> Iterator[str]:
    """The base URL of a `CannedPostHog`."""
    server = CannedPostHog(("127.0.0.1", 0), _CannedHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


# -- what each outcome must show ---------------------------------------------------------------------


def messages(result: SyncResult) -> List[Mapping[str, Any]]:
    return [orjson.loads(line) for line in result.stdout.splitlines() if line.startswith(b"{")]


def connection_statuses(result: SyncResult) -> List[Mapping[str, Any]]:
    return [message["connectionStatus"] for message in messages(result) if message["type"] == "CONNECTION_STATUS"]


def tracebacks(result: SyncResult) -> List[str]:
    """Where a Python traceback was printed, other than a TRACE message's `stack_trace` field."""
    places = []
    if TRACEBACK.encode() in result.stderr:
        places.append("stderr")
    for line in result.stdout.splitlines():
        if not line.startswith(b"{"):
            if b"Traceback" in line:
                places.append("stdout, plain text")
            continue
        message = orjson.loads(line)
        if message["type"] == "LOG" and TRACEBACK in message["log"]["message"]:
            places.append(f"a {message['log']['level']} LOG message: {message['log']['message'].split(chr(10))[0][:100]!r}")
        elif message["type"] == "TRACE":
            error = message["trace"].get("error") or {}
            if TRACEBACK in str(error.get("message")) or TRACEBACK in str(error.get("internal_message")):
                places.append("a TRACE message's message")
        elif message["type"] == "CONNECTION_STATUS" and TRACEBACK in str(message["connectionStatus"].get("message")):
            places.append("CONNECTION_STATUS")
    return places


def config_error(result: SyncResult) -> Mapping[str, Any]:
    errors = [error for error in result.errors() if error.get("failure_type") == "config_error"]
    assert errors, f"expected a TRACE error of failure_type config_error, got {[(e.get('failure_type'), e.get('message')) for e in result.errors()]}"
    return errors[0]


def names(message: str, field: str) -> bool:
    return re.search(rf"(?<![\w]){re.escape(field)}(?![\w])", message) is not None


CONFIG_RUNS = [pytest.param(case, command, id=f"{case.name}-{command}") for case in BAD_CONFIGS for command in case.commands]


@pytest.mark.parametrize("case, command", CONFIG_RUNS)
def test_given_a_bad_config_when_check_or_read_then_a_config_error_names_the_field_and_the_fix_without_a_traceback(
    case: BadConfig, command: str, outcomes: Dict[Tuple[str, str], SyncResult]
) -> None:
    result = outcomes[(case.name, command)]

    if command == "check" and connection_statuses(result):
        assert result.returncode == 0, "a failed check is an answer (CONNECTION_STATUS FAILED), not a crash"
        (status,) = connection_statuses(result)
        assert status["status"] == "FAILED"
        message = status.get("message") or ""
    elif command == "check":  # before the check itself runs, the protocol's answer is a config_error TRACE
        message = config_error(result)["message"]
    else:
        assert result.returncode == 1
        assert result.records == {}
        message = config_error(result)["message"]
    assert names(message, case.field), f"the message must name '{case.field}': {message!r}"
    assert re.search(case.fix, message, re.I), f"the message must say how to fix it ({case.fix!r}): {message!r}"
    assert tracebacks(result) == []


@pytest.mark.parametrize("case", [pytest.param(case, id=case.name) for case in BAD_STATES])
def test_given_a_bad_state_when_read_then_a_config_error_names_the_stream_and_the_fix_without_a_traceback(
    case: BadState, outcomes: Dict[Tuple[str, str], SyncResult]
) -> None:
    result = outcomes[(case.name, "read")]

    assert result.returncode == 1
    assert result.records == {}, "nothing may be read from a state that cannot be trusted"
    message = config_error(result)["message"]
    assert names(message, case.stream) or names(message, "state"), f"the message must name the state or its stream: {message!r}"
    assert re.search(r"reset|state this connector wrote|valid state", message, re.I), f"the message must say how to fix it: {message!r}"
    assert tracebacks(result) == []


@pytest.mark.parametrize("case", [pytest.param(case, id=case.name) for case in MALFORMED_RESPONSES])
def test_given_a_malformed_response_when_read_then_the_sync_fails_with_an_error_naming_the_endpoint(
    case: MalformedResponse, canned_posthog: str, in_process: Any, tmp_path: Path
) -> None:
    """In-process (nothing here retries or sleeps): the response is read once and refused."""
    number = MALFORMED_RESPONSES.index(case)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"api_key": KEYS["all_access"], "project_id": 2, "host": f"{canned_posthog}/case{number}", "anchor_date": "2024-06-01"}))

    result = in_process.read(config, write_catalog(tmp_path, [case.stream]))

    assert result.returncode == 1
    errors = [error for error in result.errors() if case.path in str(error.get("message"))]
    assert errors, f"no error names {case.path}: {[error.get('message') for error in result.errors()]}"
    assert TRACEBACK not in str(errors[0]["message"])
