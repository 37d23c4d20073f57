"""Reliability under faults (issue "Reliability" 1): 500, 502, 429, resets, truncated bodies, slow responses.

Syncs run in-process (conftest `in_process`): the CDK's backoff sleeps (5-80 s each) are
recorded instead of waited for, while timeouts stay real: `request_timeout_seconds` is 1 and the
emulator's slow responses take 2 s. The fault sequence is seeded, so each run sees the same faults.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from typing import Any, Dict

import pytest

from integration_tests.conftest import (
    INGESTION_LAG_SECONDS,
    assert_union_is_truth,
    duplicates,
    error_messages,
    statuses,
    truth_sets,
)
from tools.connector import ALL_STREAMS, expected_incremental_keys
from tools.emulator import FaultConfig

EVENTS = 100_000
EVENTS_PAGE_SIZE = 1_000  # many pages, so many requests meet a fault
FAULT_RATES = {"500": 0.05, "502": 0.02, "429": 0.03, "reset": 0.01, "truncate": 0.01, "slow": 0.01}
FAULT_SEED = 7  # with this seed every kind of fault occurs during the full + incremental syncs
HEAVY_FAULT_RATES = {kind: rate * 5 for kind, rate in FAULT_RATES.items()}  # 65%: retries run out
SLOW_SECONDS = 2.0
READ_TIMEOUT_SECONDS = 1
RETRIES_EXHAUSTED = re.compile(
    r"Stream (?P<stream>\w+): (?P<method>GET|POST) (?P<path>/api/\S+) still failed with "
    r"(?:HTTP (?P<status>\d{3}) \(.*?\)|a body cut short \((?P<body_error>\w+): [^)]*\)|(?P<exception>\w+)) after (?P<retries>\d+) retries",
    re.S,  # a 502's HTML body spans lines
)
CDK_SUMMARY = "During the sync, the following streams did not sync successfully"
EXCEPTION_OF_FAULT = {
    "reset": ("ConnectionError",),
    "truncate": ("ChunkedEncodingError", "ProtocolError", "ConnectionError"),
    "slow": ("ReadTimeout", "ConnectionError"),
}


@pytest.fixture
def emulator(start_emulator: Any) -> Any:
    return start_emulator(events=EVENTS, seed=11)


def faults(rates: Dict[str, float]) -> FaultConfig:
    return FaultConfig(rates, seed=FAULT_SEED, slow_seconds=SLOW_SECONDS)


def config_fields() -> Dict[str, Any]:
    return {"request_timeout_seconds": READ_TIMEOUT_SECONDS, "events_page_size": EVENTS_PAGE_SIZE}


def test_given_faults_on_13_percent_of_requests_when_full_then_incremental_sync_then_nothing_is_missing_or_duplicated(
    emulator: Any, workspace: Any, in_process: Any
) -> None:
    files = workspace(emulator)
    config, catalog = files.config(**config_fields()), files.catalog(ALL_STREAMS)
    emulator.set_faults(faults(FAULT_RATES))

    full = in_process.read(config, catalog)

    assert full.returncode == 0, error_messages(full)
    assert not full.errors()
    truth = truth_sets(emulator.ground_truth())
    for stream in ALL_STREAMS:
        keys = full.keys(stream)
        assert set(keys) == truth[stream], f"{stream}: {len(truth[stream] - set(keys))} missing, {len(set(keys) - truth[stream])} unexpected"
        assert not duplicates(keys), f"{stream}: duplicate primary keys within one sync"

    changes = emulator.mutate(
        new_events=500, late_events=50, late_events_max_age_days=3, new_annotations=2, updated_annotations=3,
        new_session_recordings=5, grow_ongoing_recordings=True, new_persons=10,
    )
    time.sleep(INGESTION_LAG_SECONDS + 1)  # let the new events pass the ingestion lag
    state = files.state(full.states, name="after_full.json", incremental_only=True)

    incremental = in_process.read(config, catalog, state)

    assert incremental.returncode == 0, error_messages(incremental)
    truth_after = truth_sets(emulator.ground_truth())
    for stream in ALL_STREAMS:
        keys = incremental.keys(stream)
        expected = expected_incremental_keys(stream, changes, truth_after)
        assert expected <= set(keys), f"{stream}: {len(expected - set(keys))} changed records missing from the incremental sync"
        assert set(keys) <= truth_after[stream], f"{stream}: records that do not exist"
        assert not duplicates(keys), f"{stream}: duplicate primary keys within one sync"

    injected = Counter(entry["fault"] for entry in emulator.requests() if entry["fault"])
    assert set(injected) == set(FAULT_RATES), f"the seed must exercise every kind of fault, got {dict(injected)}"
    assert in_process.backoffs, "faults were injected, so the connector must have backed off"


def test_given_faults_at_a_rate_that_exhausts_retries_when_sync_then_fails_naming_endpoint_and_status_and_the_last_state_resumes_to_completion(
    emulator: Any, workspace: Any, in_process: Any
) -> None:
    files = workspace(emulator)
    config, catalog = files.config(**config_fields()), files.catalog(ALL_STREAMS)
    emulator.set_faults(faults(HEAVY_FAULT_RATES))

    failed = in_process.read(config, catalog)

    assert failed.returncode != 0
    stream_errors = [error for error in failed.errors() if not str(error.get("message")).startswith(CDK_SUMMARY)]
    assert stream_errors, f"expected a TRACE error per failed stream, got:\n{error_messages(failed)}"
    assert all(error.get("failure_type") == "transient_error" for error in stream_errors)
    exhausted = [RETRIES_EXHAUSTED.search(str(error.get("message"))) for error in stream_errors]
    assert all(exhausted), f"every failed stream must say which endpoint failed with what:\n{error_messages(failed)}"
    assert any(match["status"] for match in exhausted), "at least one failure must name its HTTP status"
    log = emulator.requests()
    for match in exhausted:
        # in the order the requests arrived (a slow answer is logged when it is sent, after the retry's)
        answers = statuses(sorted((entry for entry in log if entry["path"] == match["path"]), key=lambda entry: entry["t"]))
        assert answers, f"the error names {match['path']}, which was never requested"
        # The events stream has two lanes: while one spends its retries, the other may go on asking
        # (retries sleep no time here), so the failing request's last answer can be any of the path's.
        recent = answers if match["path"].endswith("/query/") else answers[-1:]
        if match["status"]:
            assert match["status"] in map(str, recent), f"{match['path']}: error says HTTP {match['status']}, the emulator last answered {recent}"
            assert int(match["retries"]) == (5 if match["status"] == "429" else 3)
        else:
            exception = match["exception"] or match["body_error"]
            named = [answer for answer in recent if exception in EXCEPTION_OF_FAULT.get(str(answer), ())]
            assert named, f"{match['path']}: {exception} for {recent}"

    emulator.set_faults(None)
    resumed = in_process.read(config, catalog, files.state(failed.states, name="resume.json", incremental_only=False))

    assert resumed.returncode == 0, error_messages(resumed)
    assert_union_is_truth([failed, resumed], emulator.ground_truth())
    for stream in ALL_STREAMS:
        assert not duplicates(resumed.keys(stream)), f"{stream}: duplicates within the resumed sync"

