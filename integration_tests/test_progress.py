"""A sync a user can watch (issue #21), checked against what the emulator saw.

- events, sessions and persons send a TRACE `ESTIMATE` before their first record, and the last
  one equals the rows PostHog holds (events: the emulator's ground truth);
- each stream ends with one summary line per project whose records, requests and HogQL queries
  are the ones the emulator logged for that stream, and the sync ends with one line per project
  whose requests are every request the emulator logged; every HogQL query carries a name;
- with faults, the retries the summary counts are the faults the emulator injected, and the time
  it says was waited on server errors is the backoff the CDK slept.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping

import orjson
import pytest

from integration_tests.conftest import SUBPROCESS_ENV, error_messages
from tools.connector import run_sync, write_catalog, write_config
from tools.emulator import FaultConfig

STREAMS = ["events", "sessions", "persons", "cohorts", "cohort_membership", "annotations"]
SUMMARY = re.compile(
    r"^Stream (?P<stream>\w+), project (?P<project>\d+): read (?P<records>[\d,]+) records? in [^;]+; "
    r"(?P<requests>[\d,]+) requests? \((?P<queries>[\d,]+) HogQL quer(?:y|ies)(?:, [\d.]+ MB read)?\), "
    r"(?P<retries>[\d,]+) retr(?:y|ies), waited (?P<waited>[\d.]+) s on PostHog"
)
SYNC_SUMMARY = re.compile(r"^Sync summary, project (?P<project>\d+): (?P<records>[\d,]+) records from (?P<streams>\d+) streams?; (?P<requests>[\d,]+) requests?")
PROGRESS = re.compile(r"^Stream (?P<stream>\w+), project \d+: (?P<records>[\d,]+) of ~(?P<estimate>[\d,]+) records \((?P<share>\d+)%\)")
# The HogQL query names of each stream (PostHog shows them in its query log).
QUERY_NAMES = {"events": ("airbyte_source_posthog_events",), "sessions": ("airbyte_source_posthog_sessions",),
               "persons": ("airbyte_source_posthog_persons", "airbyte_source_posthog_person_distinct_ids"),
               "cohort_membership": ("airbyte_source_posthog_cohort_membership",)}


def number(text: str) -> int:
    return int(text.replace(",", ""))


def summaries(lines: List[str]) -> Dict[str, Mapping[str, str]]:
    found: Dict[str, Mapping[str, str]] = {}
    for line in lines:
        match = SUMMARY.match(line)
        if match:
            assert match["stream"] not in found, f"one summary per stream and project: {line}"
            found[match["stream"]] = match.groupdict()
    return found


def attributed(entries: List[Mapping[str, Any]], stream: str) -> List[Mapping[str, Any]]:
    """The emulator's log entries of one stream's requests: its HogQL queries by name, its REST list by path."""
    names = QUERY_NAMES.get(stream)
    if names:
        return [entry for entry in entries if (entry.get("query_name") or "").startswith(names)]
    return [entry for entry in entries if entry["path"].endswith(f"/{stream}/")]


def test_given_a_real_run_then_estimates_progress_and_summaries_match_what_posthog_saw(start_emulator: Any, tmp_path: Path) -> None:
    emulator = start_emulator(events=60_000, seed=41)
    # pages of 5,000: a line at each tenth (the lines come at checkpoints, after a page)
    config = write_config(tmp_path, emulator.url, emulator.api_key, emulator.project_id, anchor_date="2020-01-01", events_page_size=5_000)
    emulator.clear_requests()

    result = run_sync(config, write_catalog(tmp_path, STREAMS), env=SUBPROCESS_ENV)

    assert result.returncode == 0, error_messages(result)
    log = emulator.requests()
    truth = emulator.ground_truth()
    # ESTIMATE: before the stream's first record, and the last one is the truth
    first_record: Dict[str, int] = {}
    first_estimate: Dict[str, int] = {}
    for index, line in enumerate(result.stdout.splitlines()):
        message = orjson.loads(line) if line.startswith(b"{") else {}
        if message.get("type") == "RECORD":
            first_record.setdefault(message["record"]["stream"], index)
        elif message.get("type") == "TRACE" and message["trace"]["type"] == "ESTIMATE":
            first_estimate.setdefault(message["trace"]["estimate"]["name"], index)
    for stream in ("events", "sessions", "persons"):
        assert first_estimate[stream] < first_record[stream], f"{stream}: the estimate comes before the first record"
        assert result.estimates(stream)[-1] == len(result.records[stream]), f"{stream}: estimate {result.estimates(stream)} for {len(result.records[stream])} rows"
    assert result.estimates("events")[-1] == len(truth["events"]) == 60_000
    assert result.estimates("persons")[-1] == len(truth["persons"])

    # progress lines: a share of the estimate, at each tenth of a long read
    events_progress = [PROGRESS.match(line) for line in result.logs if line.startswith("Stream events, project 2: ") and " of ~" in line]
    assert len(events_progress) >= 7, "a 60,000-row read logs its tenths"
    for match in events_progress:
        assert number(match["estimate"]) == 60_000 and int(match["share"]) == round(100 * number(match["records"]) / 60_000)

    # per stream: records, requests and queries as the emulator logged them
    found = summaries(result.logs)
    assert set(found) == set(STREAMS)
    for stream, summary in found.items():
        mine = attributed(log, stream)
        hogql = [entry for entry in mine if entry["path"].endswith("/query/")]
        assert number(summary["records"]) == len(result.records[stream])
        assert number(summary["queries"]) == len(hogql), f"{stream}: {summary['queries']} queries said, {len(hogql)} logged"
        assert number(summary["requests"]) >= len(mine) and number(summary["retries"]) == 0 and float(summary["waited"]) == 0
    # the sync: every request the emulator logged, and every query with its name
    (sync,) = [SYNC_SUMMARY.match(line) for line in result.logs if SYNC_SUMMARY.match(line)]
    assert number(sync["requests"]) == len(log) == sum(number(s["requests"]) for s in found.values())
    assert number(sync["records"]) == sum(len(records) for records in result.records.values()) and int(sync["streams"]) == len(STREAMS)
    assert all(entry.get("query_name") for entry in log if entry["path"].endswith("/query/"))
    assert not any("Finished syncing events" in line for line in result.logs), "no CDK line that reads as the end of the sync"


def test_given_faults_then_the_summaries_count_the_retries_and_the_backoff_slept(
    start_emulator: Any, workspace: Any, in_process: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    emulator = start_emulator(events=20_000, seed=42)
    files = workspace(emulator)
    emulator.set_faults(FaultConfig({"502": 0.08, "500": 0.04}, seed=3))

    result = in_process.read(files.config(events_page_size=1000), files.catalog(["events", "cohorts", "annotations"]))

    assert result.returncode == 0, error_messages(result)
    lines = [record.getMessage() for record in caplog.records]
    faults = [entry for entry in emulator.requests() if entry["fault"]]
    assert faults, "the seed injects faults"
    found = summaries(lines)
    assert sum(number(summary["retries"]) for summary in found.values()) == len(faults)
    (sync,) = [line for line in lines if line.startswith("Sync summary, project 2:")]
    assert f"{len(faults)} retr" in sync
    waited = sum(in_process.backoffs)  # what the CDK slept (recorded here, not waited)
    assert f"waited {waited:.1f} s on PostHog (server errors {waited:.1f} s)" in sync, (sync, in_process.backoffs)
