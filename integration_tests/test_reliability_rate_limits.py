"""Rate limits and retry schedules (issue "Reliability" 3), against the emulator's throttles.

- Pacing: the emulator enforces PostHog's per-key limits scaled 60x (a "minute" lasts one second,
  an "hour" one minute) and the connector's budget is scaled the same; a sync of hundreds of
  requests must stay inside them. This runs the real command in real time.
- Retry-After: a 429 asking for 120 s is honoured (the CDK alone gives up after ~31 s). The
  emulator's throttle clock moves only when the connector sleeps (conftest `virtual_throttle_clock`).
- Schedules: 429 → exponential (5, 10, 20, 40, 80 s) or Retry-After, 5 retries; 5xx, resets,
  truncated bodies and timeouts → linear (5, 10, 15 s), 3 retries. Requests are counted in the
  emulator's log, waits in the recorded backoff sleeps (the CDK adds one second to each).
"""

from __future__ import annotations

import bisect
import re
import time
from contextlib import ExitStack
from datetime import timedelta
from typing import Any, List, Sequence

import pytest
import requests

from integration_tests.conftest import (
    BASE_TIME,
    CDK_EXTRA_SECOND,
    SUBPROCESS_ENV,
    api_requests,
    assert_union_is_truth,
    error_messages,
    statuses,
)
from tools.connector import ALL_STREAMS, run_sync
from tools.emulator import PROJECT_ID, FaultConfig
from tools.emulator.ratelimit import CLASS_LIMITS
from source_posthog import seams, settings

RATE_SCALE = 60
SLOW_SECONDS = 2.0  # past the 1 s read timeout
ACTIONS = f"/api/projects/{PROJECT_ID}/actions/"
QUERY = f"/api/projects/{PROJECT_ID}/query/"


def waited(backoffs: Sequence[float]) -> List[float]:
    return [seconds + CDK_EXTRA_SECOND for seconds in backoffs]


def max_in_window(times: Sequence[float], window: float) -> int:
    ordered = sorted(times)
    return max((bisect.bisect_left(ordered, start + window) - index for index, start in enumerate(ordered)), default=0)


# -- pacing ---------------------------------------------------------------------------------------


def test_given_posthog_limits_scaled_60x_when_a_sync_of_hundreds_of_requests_runs_then_it_paces_itself_inside_them_without_429s(
    start_emulator: Any, workspace: Any
) -> None:
    # 260,000 events in pages of 1,000 (plus an anchor 20 years back, which costs one count): the
    # query class alone sends more requests than its "per-minute" limit allows in one window.
    emulator = start_emulator(events=260_000, seed=11, rate_limits=True, rate_scale=RATE_SCALE)
    anchor = (BASE_TIME - timedelta(days=365 * 20)).strftime("%Y-%m-%d")
    files = workspace(emulator)
    config = files.config(anchor_date=anchor, events_page_size=1000)

    # Every endpoint class, but not the HogQL streams that read whole tables (sessions, persons,
    # cohort membership): over 260,000 events they add a quarter-million records and a few requests.
    streams = [stream for stream in ALL_STREAMS if stream not in ("sessions", "persons", "cohort_membership")]
    result = run_sync(config, files.catalog(streams), env={**SUBPROCESS_ENV, seams.RATE_LIMIT_SCALE_ENV: str(RATE_SCALE)})

    assert result.returncode == 0, error_messages(result)
    log = emulator.requests()
    assert len(log) >= 300, f"a long sync was intended, it sent {len(log)} requests"
    throttled = [entry for entry in log if entry["status"] == 429]
    assert throttled == [], f"{len(throttled)} requests were throttled: the sync did not pace itself"
    for endpoint_class, limits in CLASS_LIMITS.items():
        times = [entry["t"] for entry in log if entry["endpoint_class"] == endpoint_class]
        for limit, window in limits:
            assert max_in_window(times, window / RATE_SCALE) <= limit, f"{endpoint_class}: over {limit} per {window / RATE_SCALE:g} s"
    query_times = [entry["t"] for entry in log if entry["endpoint_class"] == "query"]
    assert len(query_times) > CLASS_LIMITS["query"][0][0], "the query class must need more than one window's allowance"
    assert_union_is_truth([result], emulator.ground_truth(), streams=streams)


# -- Retry-After ---------------------------------------------------------------------------------


def test_given_a_429_with_retry_after_120_when_read_then_waits_120_seconds_beyond_the_cdk_default_give_up_and_succeeds(
    start_emulator: Any, workspace: Any, in_process: Any, virtual_throttle_clock: Any
) -> None:
    # Scale 0.5: PostHog's CRUD "minute" lasts 120 s; once its 480 requests are used, a request
    # is told to retry after 120 s.
    emulator = start_emulator(rate_limits=True, rate_scale=0.5)
    per_minute = CLASS_LIMITS["crud"][0][0]
    with requests.Session() as session:
        for _ in range(per_minute):
            session.get(f"{emulator.url}{ACTIONS}", headers={"Authorization": f"Bearer {emulator.api_key}"}).raise_for_status()
    emulator.clear_requests()
    files = workspace(emulator)

    result = in_process.read(files.config(), files.catalog(["actions"]))

    assert result.returncode == 0, error_messages(result)
    assert in_process.backoffs == waited([120])
    assert statuses(api_requests(emulator, ACTIONS)) == [429, 200]
    assert_union_is_truth([result], emulator.ground_truth(), streams=["actions"])


# -- retry schedules -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault, exhausted_by",
    [
        ("500", r"HTTP 500"),
        ("502", r"HTTP 502"),
        ("reset", r"ConnectionError"),
        ("truncate", r"ChunkedEncodingError|ProtocolError|IncompleteRead|cut short|truncated|incomplete"),
        ("slow", r"ReadTimeout|timed out"),
    ],
)
def test_given_a_server_error_on_every_attempt_when_read_then_linear_backoff_5_10_15_then_fails_after_3_retries_naming_the_endpoint(
    fault: str, exhausted_by: str, start_emulator: Any, workspace: Any, in_process: Any
) -> None:
    emulator = start_emulator()
    emulator.set_faults(FaultConfig({fault: 1.0}, seed=0, slow_seconds=SLOW_SECONDS))
    files = workspace(emulator)

    result = in_process.read(files.config(request_timeout_seconds=1), files.catalog(["actions"]))

    assert result.returncode == 1
    if fault == "slow":
        time.sleep(SLOW_SECONDS + 0.5)  # the emulator logs a slow request once it has answered it
    assert len(api_requests(emulator, ACTIONS)) == 1 + settings.SERVER_ERROR_MAX_RETRIES
    assert in_process.backoffs == waited([5, 10, 15])
    message = result.errors()[0]["message"]
    assert f"GET {ACTIONS}" in message and "after 3 retries" in message, message
    assert re.search(exhausted_by, message), f"the error must say what failed ({exhausted_by}): {message}"
    assert "HTTP 200" not in message, f"a failed request is not an HTTP 200: {message}"
    assert result.errors()[0]["failure_type"] == "transient_error"


def test_given_429_with_retry_after_on_every_attempt_when_read_then_waits_as_asked_and_fails_after_5_retries(
    start_emulator: Any, workspace: Any, in_process: Any
) -> None:
    emulator = start_emulator()
    emulator.set_faults(FaultConfig({"429": 1.0}))  # DRF's throttle body with Retry-After: 1
    files = workspace(emulator)

    result = in_process.read(files.config(), files.catalog(["actions"]))

    assert result.returncode == 1
    assert statuses(api_requests(emulator, ACTIONS)) == [429] * (1 + settings.RATE_LIMIT_MAX_RETRIES)
    assert in_process.backoffs == waited([1] * 5)
    message = result.errors()[0]["message"]
    assert f"GET {ACTIONS}" in message and "HTTP 429" in message and "after 5 retries" in message, message


def test_given_the_query_concurrency_429_without_retry_after_when_read_events_then_exponential_backoff_5_to_80_then_fails_after_5_retries(
    start_emulator: Any, workspace: Any, in_process: Any
) -> None:
    emulator = start_emulator(rate_limits=True, query_queue_timeout=0.05)
    files = workspace(emulator)

    with ExitStack() as other_queries:  # three queries of the same team hold every slot
        for _ in range(3):
            other_queries.enter_context(emulator.app.governor.slot(PROJECT_ID, {}))
        result = in_process.read(files.config(), files.catalog(["events"]))

    assert result.returncode == 1
    assert statuses(api_requests(emulator, QUERY)) == [429] * (1 + settings.RATE_LIMIT_MAX_RETRIES)
    assert in_process.backoffs == waited([5, 10, 20, 40, 80])
    message = result.errors()[0]["message"]
    assert f"POST {QUERY}" in message and "HTTP 429" in message and "concurrency" in message, message

