"""Secrets (issue "Reliability" 5): the configured API key appears in no output, log or state.

Two guards do the scanning for every test of the repository: the root `conftest.py` (what a test
prints and logs) and `connector.run_sync` (a subprocess's stdout and stderr; it raises when a key
shows up). The tests here drive the connector down the paths where a key is most likely to leak:
debug mode, retries, refused keys, a key pasted with a line break, an error page that echoes
the Authorization header.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator, Tuple

import pytest

from integration_tests.conftest import SUBPROCESS_ENV, error_messages
from tools.connector import ALL_STREAMS, SyncResult, run_sync, write_catalog
from tools.emulator import KEYS, PROJECT_ID, FaultConfig


def test_given_debug_mode_and_faults_when_every_stream_is_read_then_the_key_appears_nowhere(start_emulator: Any, workspace: Any) -> None:
    emulator = start_emulator()
    # 429s (Retry-After: 1) take the retry path at a cost of 2 s each: backoffs are real here.
    emulator.set_faults(FaultConfig({"429": 0.05}, seed=3))
    files = workspace(emulator)

    result = run_sync(files.config(events_page_size=1000), files.catalog(ALL_STREAMS), env=SUBPROCESS_ENV, extra_args=["--debug"])

    # run_sync has already failed the test if the key was printed; these prove the paths ran.
    assert result.returncode == 0, error_messages(result)
    assert b"Making outbound API request" in result.stdout, "debug mode (which prints each request's headers) was not on"
    assert any(entry["fault"] for entry in emulator.requests()), "no retry path was exercised"


@pytest.mark.parametrize("command", ["check", "discover", "read"])
def test_given_debug_mode_and_a_key_with_surrounding_whitespace_when_any_command_runs_then_no_form_of_the_key_is_printed(
    command: str, start_emulator: Any, workspace: Any
) -> None:
    """The key is sent stripped; `--debug` logs each request's headers. Masking only the value as
    configured (`"phx_…\\n"`) printed `Authorization: Bearer phx_…` (issue #21, item 1)."""
    emulator = start_emulator()
    files = workspace(emulator, api_key=f"\t {KEYS['all_access']}\r\n")
    catalog = files.catalog(["cohorts", "events"]) if command == "read" else None

    result = run_sync(files.config(), catalog, command=command, env=SUBPROCESS_ENV, extra_args=["--debug"])

    # run_sync has already failed the test if any form of the key was printed.
    assert b"Making outbound API request" in result.stdout, "debug mode (which prints each request's headers) was not on"
    assert b"Bearer ****" in result.stdout, "the Authorization header is printed masked"
    assert result.returncode == 0, error_messages(result)


REFUSED_KEYS = {
    "unknown to PostHog (401)": "phx_revokedKeyNeverIssued0123456789abcdefABCD",
    "without query:read (403 on events)": KEYS["no_query"],
    "without access to the project (403)": KEYS["other_project"],
    "scoped to the project (403 on the projects list)": KEYS["project_scoped"],
}


def test_given_keys_that_posthog_refuses_in_whole_or_in_part_when_check_and_read_then_no_key_appears_anywhere(
    start_emulator: Any, workspace: Any
) -> None:
    emulator = start_emulator()
    jobs = []
    for number, key in enumerate(REFUSED_KEYS.values()):
        files = workspace(emulator, api_key=key)
        config, catalog = files.config(name=f"config_{number}"), files.catalog(["projects", "cohorts", "events"])
        jobs += [(config, None, "check"), (config, catalog, "read")]

    with ThreadPoolExecutor(4) as pool:  # run_sync fails the test if a key is printed
        results = list(pool.map(lambda job: run_sync(job[0], job[1], command=job[2], env=SUBPROCESS_ENV), jobs))

    for (label, key), check, read in zip(REFUSED_KEYS.items(), results[0::2], results[1::2]):
        assert b"CONNECTION_STATUS" in check.stdout, label
        assert read.returncode == 1 or label.startswith("scoped"), f"{label}: PostHog refused part of the sync"
        output = (check.stdout + check.stderr + read.stdout + read.stderr).decode()
        assert key not in output and key.removeprefix("phx_") not in output, label


def test_given_a_key_with_spaces_and_a_trailing_line_break_when_read_then_it_works_and_appears_nowhere(start_emulator: Any, workspace: Any) -> None:
    emulator = start_emulator()
    files = workspace(emulator, api_key=f"  {KEYS['all_access']}\n")

    result = run_sync(files.config(), files.catalog(["cohorts"]), env=SUBPROCESS_ENV)

    assert result.returncode == 0, error_messages(result)


@pytest.mark.parametrize("command", ["check", "read"])
def test_given_a_key_pasted_with_a_line_break_and_a_header_when_check_or_read_then_it_is_refused_and_appears_nowhere(
    command: str, start_emulator: Any, workspace: Any
) -> None:
    emulator = start_emulator()
    files = workspace(emulator, api_key=f"{KEYS['all_access']}\r\nX-Injected: 1")

    result = run_sync(files.config(), files.catalog(["cohorts", "events"]) if command == "read" else None, command=command, env=SUBPROCESS_ENV)

    assert b'"FAILED"' in result.stdout or result.returncode == 1
    assert not any(entry.get("key") for entry in emulator.requests()), "no request may be sent with a malformed key"


# -- an error page that echoes the Authorization header -----------------------------------------------


class _EchoServer(ThreadingHTTPServer):
    daemon_threads = True


class _EchoHandler(BaseHTTPRequestHandler):
    """A proxy's error page that prints the request headers back, Authorization included."""

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        body = f"<html>400 Bad Request. Authorization: {self.headers.get('Authorization')}</html>".encode()
        self.send_response(400)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def echo_server() -> Iterator[str]:
    server = _EchoServer(("127.0.0.1", 0), _EchoHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def echo_config(directory: Path, host: str) -> Tuple[Path, Path]:
    config = directory / "config.json"
    config.write_text(json.dumps({"api_key": KEYS["all_access"], "project_id": PROJECT_ID, "host": host, "anchor_date": "2024-06-01"}))
    return config, write_catalog(directory, ["cohorts"])


def test_given_an_error_page_echoing_the_authorization_header_when_read_then_the_printed_output_masks_the_key(echo_server: str, tmp_path: Path) -> None:
    config, catalog = echo_config(tmp_path, echo_server)

    result: SyncResult = run_sync(config, catalog, env=SUBPROCESS_ENV)

    assert result.returncode == 1
    assert "400" in error_messages(result)


def test_given_an_error_page_echoing_the_authorization_header_when_read_in_process_then_no_log_record_holds_the_key(
    echo_server: str, tmp_path: Path, in_process: Any
) -> None:
    """The root conftest also reads the log records (caplog): a record holding the key leaks to
    any log handler other than the CDK's secret-filtering formatter."""
    config, catalog = echo_config(tmp_path, echo_server)

    result = in_process.read(config, catalog)

    assert result.returncode == 1
