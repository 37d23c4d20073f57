"""The emulator's operating conditions (README "Operating conditions", posthog-api.md § 11):
visibility delay, query cost model, execution limit, concurrency queue, read budget, the realistic
preset and the time-bucket aggregate. Each condition is checked off (the default) and on.

Fast by design: small datasets and a small query_time_scale. Run with:
    python -m pytest integration_tests/emulator_fidelity/test_conditions.py -q
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
import requests

from tools.emulator import KEYS, PROJECT_ID, EmulatorConfig, EmulatorProcess, EmulatorServer
from tools.emulator import conditions as cond
from tools.emulator.data import SCHEMA_VERSION, DataParams
from integration_tests.emulator_fidelity.test_emulator import auth

BASE = datetime.now(timezone.utc).replace(second=0, microsecond=0)
COLUMNS = "uuid, event, timestamp, distinct_id, properties, elements_chain, person_id, created_at"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("emulator-cache")



def hog(e, query, timeout=60):
    body = {"query": {"kind": "HogQLQuery", "query": query}, "name": "conditions_test", "refresh": "blocking"}
    return requests.post(f"{e.url}/api/projects/{PROJECT_ID}/query/", headers=auth(), json=body, timeout=timeout)


def iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def visible_uuids(e, uuids) -> set:
    ids = ", ".join(f"'{u}'" for u in uuids)
    r = hog(e, f"SELECT uuid FROM events WHERE uuid IN ({ids}) LIMIT 1000")
    assert r.status_code == 200, r.text
    return {row[0] for row in r.json()["results"]}


def legacy_ids(e) -> set:
    r = requests.get(f"{e.url}/api/projects/2/events/?limit=1000", headers=auth(), timeout=30)
    assert r.status_code == 200
    return {x["id"] for x in r.json()["results"]}


# ------------------------------------------------------------------------------------------------
# defaults: off, and the dataset cache key unchanged
# ------------------------------------------------------------------------------------------------


def test_defaults_are_off_and_the_cache_key_is_unchanged():
    c = EmulatorConfig()
    q = c.query_conditions()
    assert (c.visibility_delay_seconds, q.cost_model, q.concurrency_limit, q.budget_bytes_per_hour) == (0, False, False, 0)
    assert c.query_queue_timeout == 1.0
    assert "--realistic" not in c.to_cli_args() and not any(a.startswith("--query-c") for a in c.to_cli_args())
    # the cache name is a function of (schema, events, seed, base_time, span) only
    fixed = datetime(2024, 7, 1, tzinfo=timezone.utc)
    assert DataParams(10_000, 1, fixed, 30.0).cache_name() == "posthog-emu-" + hashlib.sha1(
        f"v{SCHEMA_VERSION}|10000|1|2024-07-01 00:00:00.000000|30.0".encode()).hexdigest()[:20] + ".sqlite"


def test_defaults_add_no_headers_or_delay(make_emu):
    e = make_emu()
    r = hog(e, f"SELECT {COLUMNS} FROM events ORDER BY timestamp, uuid LIMIT 50")
    assert r.status_code == 200
    assert not any(h.lower().startswith("x-posthog-query") for h in r.headers)
    uid = e.add_events([{"event": "fresh", "timestamp": iso(datetime.now(timezone.utc))}])[0]
    assert visible_uuids(e, [uid]) == {uid}, "without a delay a new event is visible at once"


# ------------------------------------------------------------------------------------------------
# 1. visibility delay
# ------------------------------------------------------------------------------------------------


def test_batch_delay_stages_an_ingestion_incident(make_emu):
    e = make_emu()
    now = datetime.now(timezone.utc)
    # created 5 minutes ago, but an incident keeps it out of ClickHouse for 20 minutes
    late = e.add_events([{"event": "incident", "timestamp": iso(now - timedelta(minutes=6)),
                          "created_at": iso(now - timedelta(minutes=5))}], visibility_delay_seconds=20 * 60)[0]
    normal = e.add_events([{"event": "normal", "timestamp": iso(now - timedelta(minutes=6))}])[0]
    assert visible_uuids(e, [late, normal]) == {normal}
    assert late not in legacy_ids(e) and normal in legacy_ids(e)
    r = requests.get(f"{e.url}/api/projects/2/events/{late}/", headers=auth(), timeout=10)
    assert r.status_code == 404
    assert late in e.ground_truth("events"), "ground truth defaults to everything"
    assert late not in e.ground_truth("events", visible_only=True) and normal in e.ground_truth("events", visible_only=True)
    # created_at is still the ingestion-worker stamp, in the past
    e.set_visibility_delay(0)
    assert visible_uuids(e, [late]) == set(), "a batch delay does not depend on the run-wide one"


def test_rows_become_visible_on_their_own(make_emu):
    e = make_emu()
    change = e.mutate(new_events=3, late_events=2, visibility_delay_seconds=1.0)
    staged = change["events"]["new"] + change["events"]["late"]
    assert visible_uuids(e, staged) == set()
    time.sleep(1.2)
    assert visible_uuids(e, staged) == set(staged), "no control call needed"
    assert set(staged) <= set(e.ground_truth("events", visible_only=True))


def test_run_wide_delay(make_emu):
    e = make_emu(visibility_delay_seconds=0.8)
    all_before = set(e.ground_truth("events"))
    assert set(e.ground_truth("events", visible_only=True)) == all_before, "old rows are visible"
    change = e.mutate(new_events=4)
    new = change["events"]["new"]
    assert visible_uuids(e, new) == set()
    time.sleep(1.0)
    assert visible_uuids(e, new) == set(new)
    e.set_visibility_delay(3600)  # run-wide delay applies to every row without a batch delay, at once
    assert visible_uuids(e, new) == set()
    assert requests.get(e.url + "/_emulator/config", timeout=10).json()["visibility_delay_seconds"] == 3600


# ------------------------------------------------------------------------------------------------
# 2. cost model (calibration) and 3. execution limit
# ------------------------------------------------------------------------------------------------


def test_calibration_of_a_25k_row_page():
    gov = cond.QueryGovernor(cond.QueryConditions(cost_model=True))
    # measured: a 25,000-row page of this emulator's events is ~38.5 MB of result JSON (~1.54 KB a row)
    full = ["created_at", "distinct_id", "elements_chain", "event", "person_id", "properties", "timestamp", "uuid"]
    page = gov.cost("events", full, rows_scanned=25_000, bytes_returned=25_000 * 1540)
    assert 1.0 <= page.modeled_seconds <= 2.0, page
    wide = gov.cost("events", full, rows_scanned=100_000, bytes_returned=25_000 * 1540)
    assert 1.0 <= wide.modeled_seconds <= 2.0 and wide.modeled_seconds > page.modeled_seconds
    huge = gov.cost("events", full, rows_scanned=3_000_000, bytes_returned=25_000 * 1540)
    assert huge.timed_out, "a 3M-row range cannot be sorted within 10 s"
    agg = gov.cost("events", ["timestamp"], rows_scanned=10_000_000, bytes_returned=20_000)
    assert agg.modeled_seconds < 1.0 and not agg.timed_out, "a count() over timestamps is cheap (columnar)"
    assert agg.bytes_read == 10_000_000 * cond.COLUMN_BYTES["events"]["timestamp"]


def test_cost_model_sleeps_the_scaled_time_and_logs_it(make_emu):
    e = make_emu(query_cost_model=True, query_time_scale=0.5, query_overhead_seconds=0.4)
    started = time.monotonic()
    r = hog(e, "SELECT uuid FROM events ORDER BY timestamp, uuid LIMIT 10")
    took = time.monotonic() - started
    assert r.status_code == 200
    entry = e.requests()[-1]
    assert entry["rows_scanned"] == 400 and entry["bytes_returned"] > 0
    assert entry["modeled_seconds"] >= 0.4
    assert took >= 0.2 and entry["run_seconds"] >= 0.2, "0.4 s modeled × 0.5 scale"
    off = make_emu()
    off_started = time.monotonic()
    hog(off, "SELECT uuid FROM events ORDER BY timestamp, uuid LIMIT 10")
    assert time.monotonic() - off_started < 0.2 and "modeled_seconds" not in off.requests()[-1]


def test_rows_scanned_is_the_timestamp_range_before_limit(make_emu):
    e = make_emu(query_cost_model=True, query_time_scale=0.0)
    stamps = [row[0] for row in hog(e, "SELECT timestamp FROM events ORDER BY timestamp LIMIT 400").json()["results"]]
    lo, hi = stamps[100], stamps[300]
    expected = sum(1 for s in stamps if lo <= s < hi)
    r = hog(e, f"SELECT uuid FROM events WHERE timestamp >= '{lo}' AND timestamp < '{hi}' "
               f"AND event = '$pageview' ORDER BY timestamp, uuid LIMIT 5")
    assert r.status_code == 200 and len(r.json()["results"]) <= 5
    scanned = e.requests()[-1]["rows_scanned"]
    assert expected <= scanned <= expected + sum(1 for s in stamps if s == hi), "range, not LIMIT nor event filter"


def test_execution_limit_answers_like_clickhouse_timeout(make_emu):
    e = make_emu(query_cost_model=True, query_time_scale=0.01, query_max_execution_seconds=0.5,
                 query_seconds_per_row=0.01)  # 400 rows × 0.01 s = 4 s modeled > 0.5 s
    started = time.monotonic()
    r = hog(e, f"SELECT {COLUMNS} FROM events ORDER BY timestamp, uuid LIMIT 100")
    assert r.status_code == 504
    assert r.json() == {"type": "server_error", "code": "error", "detail": cond.TIMEOUT_DETAIL, "attr": None}
    assert r.json()["detail"].startswith("Query has hit the max execution time before completing.")
    assert time.monotonic() - started >= 0.005, "runs for the limit (× scale) before failing"
    assert e.requests()[-1]["timed_out"] is True and e.query_stats()["timeouts"] == 1
    assert hog(e, "SELECT count() FROM events WHERE timestamp > now()").status_code == 200, "small range is fine"
    e.set_conditions(cost_model=False)
    assert hog(e, f"SELECT {COLUMNS} FROM events ORDER BY timestamp, uuid LIMIT 100").status_code == 200


# ------------------------------------------------------------------------------------------------
# 4. concurrency queue and statistics
# ------------------------------------------------------------------------------------------------


def _parallel(e, n, query="SELECT count() FROM events"):
    results = []

    def run():
        results.append(hog(e, query))

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_fourth_query_queues_then_429_without_rate_limits(make_emu):
    e = make_emu(query_concurrency_limit=True, query_latency=0.6, query_queue_timeout=0.2)
    results = _parallel(e, 4)
    assert sorted(r.status_code for r in results) == [200, 200, 200, 429]
    refused = next(r for r in results if r.status_code == 429)
    assert "Retry-After" not in refused.headers
    body = refused.json()
    assert body["type"] == "throttled_error" and body["code"] == "throttled" and body["attr"] is None
    assert body["detail"].startswith("Exceeded maximum concurrency limit: 3 for key: api:query:per-team:2 ")
    log = [x for x in e.requests() if x["path"].endswith("/query/")]
    throttled = next(x for x in log if x["status"] == 429)
    assert 0.15 <= throttled["queue_seconds"] <= 0.5 and throttled["run_seconds"] == 0
    assert all(x["run_seconds"] >= 0.55 for x in log if x["status"] == 200)
    stats = e.query_stats()
    assert stats["peak_concurrency"] == 3 and stats["peak_in_flight"] == 4
    assert stats["queries"] == 4 and stats["succeeded"] == 3 and stats["throttled_concurrency"] == 1


def test_a_queued_query_runs_when_a_slot_frees(make_emu):
    # a latency long next to the threads' start skew on a loaded machine: the fourth waits most of it
    e = make_emu(query_concurrency_limit=True, query_latency=1.0, query_queue_timeout=5)
    results = _parallel(e, 4)
    assert [r.status_code for r in results] == [200] * 4
    queued = sorted(x["queue_seconds"] for x in e.requests())
    assert queued[-1] >= 0.5 and queued[0] < 0.3
    assert e.query_stats()["peak_concurrency"] == 3


def test_peak_concurrency_is_tracked_when_limits_are_off_and_can_be_reset(make_emu):
    e = make_emu(query_latency=0.3)
    assert [r.status_code for r in _parallel(e, 5)] == [200] * 5, "no limit by default"
    assert e.query_stats()["peak_concurrency"] == 5
    e.reset_query_stats()
    stats = e.query_stats()
    assert stats["peak_concurrency"] == 0 and stats["queries"] == 0
    _parallel(e, 2)
    assert e.query_stats()["peak_concurrency"] == 2 and e.query_stats()["peak_in_flight"] == 2


# ------------------------------------------------------------------------------------------------
# 5. read budget
# ------------------------------------------------------------------------------------------------


def test_read_budget_429_with_retry_after_and_headers(make_emu):
    full_row = cond.FULL_ROW_BYTES["events"]
    # capacity: one full scan of 400 rows and a bit; refill: 400 rows' worth per hour
    e = make_emu(query_budget_bytes_per_hour=400 * full_row, query_budget_capacity_bytes=450 * full_row)
    q = f"SELECT {COLUMNS} FROM events ORDER BY timestamp, uuid LIMIT 10"
    first = hog(e, q)
    assert first.status_code == 200
    assert first.headers["X-PostHog-Query-Bytes-Read"] == str(400 * full_row)
    assert first.headers["X-PostHog-Query-Budget-Remaining-Bytes"] == str(50 * full_row)
    second = hog(e, q)  # admitted (balance > 0), then debited below zero
    assert second.status_code == 200 and second.headers["X-PostHog-Query-Budget-Remaining-Bytes"] == "0"
    refused = hog(e, q)
    assert refused.status_code == 429
    wait = int(refused.headers["Retry-After"])
    deficit = 350 * full_row  # 450 - 400 - 400
    assert abs(wait - math.ceil(deficit / (400 * full_row / 3600))) <= 1, wait  # ~3150 s
    body = refused.json()
    assert body["type"] == "throttled_error" and body["code"] == "api_queries_budget_exceeded" and body["attr"] is None
    assert body["detail"].endswith(f"Expected available in {wait} seconds.")
    assert refused.headers["X-PostHog-Query-Budget-Remaining-Bytes"] == "0"
    assert e.query_stats()["throttled_budget"] == 1
    e.set_conditions(reset_budget=True)
    assert hog(e, q).status_code == 200


def test_read_budget_refills(make_emu):
    ts_bytes = cond.COLUMN_BYTES["events"]["timestamp"]
    e = make_emu(query_budget_bytes_per_hour=3600 * 400 * ts_bytes,  # one count() of 400 rows per second
                 query_budget_capacity_bytes=200 * ts_bytes)  # the first query overdraws by half a second
    q = "SELECT count() FROM events WHERE timestamp > '2000-01-01'"
    assert hog(e, q).status_code == 200
    refused = hog(e, q)
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
    time.sleep(1.05)
    assert hog(e, q).status_code == 200


def test_budget_off_by_default_and_legacy_requests_unaffected(make_emu):
    e = make_emu()
    for _ in range(3):
        assert hog(e, f"SELECT {COLUMNS} FROM events LIMIT 500").status_code == 200
    assert e.query_stats()["budget"] == {"enabled": False}


# ------------------------------------------------------------------------------------------------
# 6. realistic preset
# ------------------------------------------------------------------------------------------------


def test_realistic_preset_and_overrides():
    c = EmulatorConfig(realistic=True, query_time_scale=0.01)
    q = c.query_conditions()
    assert c.visibility_delay_seconds == 30 and q.cost_model and q.concurrency_limit
    assert q.queue_timeout == 30 and q.budget_bytes_per_hour == 20e9 and q.capacity == 24 * 20e9
    assert q.max_execution_seconds == 10 and q.concurrency == 3 and q.time_scale == 0.01
    o = EmulatorConfig(realistic=True, visibility_delay_seconds=0, query_budget_bytes_per_hour=0)
    assert o.visibility_delay_seconds == 0 and o.query_conditions().budget_bytes_per_hour == 0
    assert o.query_conditions().cost_model


def test_realistic_in_process_mode(data_dir):
    cfg = EmulatorConfig(events=300, seed=4, base_time=BASE, data_dir=data_dir, realistic=True,
                         query_time_scale=0.01, visibility_delay_seconds=5)
    with EmulatorProcess(cfg) as proc:
        r = hog(proc, "SELECT uuid FROM events ORDER BY timestamp, uuid LIMIT 5")
        assert r.status_code == 200 and int(r.headers["X-PostHog-Query-Bytes-Read"]) > 0
        new = proc.mutate(new_events=2)["events"]["new"]
        assert visible_uuids(proc, new) == set()
        conditions = proc.conditions()
        assert conditions["cost_model"] and conditions["concurrency_limit"] and conditions["time_scale"] == 0.01
        assert proc.query_stats()["succeeded"] == 2


# ------------------------------------------------------------------------------------------------
# 7. the time-bucket aggregate
# ------------------------------------------------------------------------------------------------


def _counts_by(uuids_ts, width):
    return Counter(ts[:width] for ts in uuids_ts)


def test_hourly_and_daily_buckets_equal_ground_truth(make_emu):
    e = make_emu(events=1500, seed=8, query_cost_model=True, query_time_scale=0.01)
    rows = hog(e, "SELECT timestamp, created_at FROM events ORDER BY timestamp LIMIT 2000").json()["results"]
    assert len(rows) == len(e.ground_truth("events")) == 1500
    lo, hi = rows[200][0], rows[1300][0]
    cutoff = sorted(r[1] for r in rows)[1000]
    in_range = [r for r in rows if lo <= r[0] < hi and r[1] <= cutoff]
    r = hog(e, f"SELECT toStartOfHour(timestamp) AS bucket, count() FROM events WHERE timestamp >= '{lo}' "
               f"AND timestamp < '{hi}' AND created_at <= '{cutoff}' GROUP BY bucket ORDER BY bucket LIMIT 10000")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["columns"] == ["bucket", "count()"]
    assert body["types"] == [["bucket", "DateTime('UTC')"], ["count()", "UInt64"]]
    expected = _counts_by([x[0] for x in in_range], 13)
    assert [(b[:13], n) for b, n in body["results"]] == sorted(expected.items())
    assert all(b.endswith(":00:00Z") for b, _ in body["results"])
    assert e.requests()[-1]["bytes_returned"] < 100_000, "few bytes returned"
    day = hog(e, "SELECT toStartOfDay(timestamp) AS d, count() AS n FROM events GROUP BY d ORDER BY d LIMIT 1000").json()
    assert day["columns"] == ["d", "n"]
    assert [(b[:10], n) for b, n in day["results"]] == sorted(_counts_by([x[0] for x in rows], 10).items())
    minute = hog(e, "SELECT toStartOfMinute(timestamp), count() FROM events GROUP BY toStartOfMinute(timestamp) "
                    "ORDER BY toStartOfMinute(timestamp) LIMIT 5000").json()
    assert minute["columns"] == ["toStartOfMinute(timestamp)", "count()"]
    assert sum(n for _, n in minute["results"]) == 1500
    six = hog(e, "SELECT toStartOfInterval(timestamp, INTERVAL 6 HOUR) AS b, count() FROM events "
                 "GROUP BY b ORDER BY b LIMIT 1000").json()
    expected6 = Counter(ts[:11] + "%02d" % (int(ts[11:13]) // 6 * 6) for ts, _ in rows)
    assert [(b[:13], n) for b, n in six["results"]] == sorted(expected6.items())


def test_bucket_default_limit_and_strictness(make_emu):
    e = make_emu(events=1500, seed=8)
    r = hog(e, "SELECT toStartOfHour(timestamp) AS bucket, count() FROM events GROUP BY bucket ORDER BY bucket").json()
    assert r["limit"] == 100 and len(r["results"]) == 100 and r["hasMore"] is True, "HogQL's default LIMIT 100"
    bad = [  # ClickHouse's refusals (code names of posthog/errors.py), then what this emulator does not evaluate
        ("SELECT toStartOfHour(timestamp) AS bucket, count() FROM events", "not_an_aggregate"),  # not in GROUP BY
        ("SELECT event, count() FROM events GROUP BY toStartOfHour(timestamp)", "not_an_aggregate"),
        ("SELECT toStartOfHour(event), count() FROM events GROUP BY toStartOfHour(event)", "illegal_type_of_argument"),
        ("SELECT toStartOfHour(timestamp) AS b, count() FROM events GROUP BY b ORDER BY event", "not_an_aggregate"),
        ("SELECT count() AS n FROM events GROUP BY n", "illegal_aggregation"),
        ("SELECT toStartOfInterval(timestamp, INTERVAL 7 HOUR) AS b, count() FROM events GROUP BY b", "emulator_not_supported"),
        ("SELECT toStartOfHour(timestamp) AS b, count() FROM events GROUP BY b HAVING count() > 1", "emulator_not_supported"),
        ("SELECT toStartOfHour(timestamp, 'Europe/Paris') AS b, count() FROM events GROUP BY b", "emulator_not_supported"),
        ("SELECT uuid FROM events AS e", "emulator_not_supported"),
    ]
    for q, code in bad:
        resp = hog(e, q)
        assert resp.status_code == 400, q
        assert resp.json()["type"] == "validation_error" and resp.json()["code"] == code, (q, resp.json())
    assert hog(e, "SELECT toStartOfInterval(timestamp, INTERVAL 1 DAY), count() FROM events GROUP BY "
                  "toStartOfInterval(timestamp, INTERVAL 1 day) LIMIT 100").status_code == 200


def test_current_key_describes_the_calling_key_without_needing_a_scope_and_can_be_turned_off() -> None:
    import json
    import urllib.request

    def get(url: str, key: str) -> tuple:
        request = urllib.request.Request(f"{url}/api/personal_api_keys/@current/", headers={"Authorization": f"Bearer {key}"})
        try:
            with urllib.request.urlopen(request) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    with EmulatorServer(EmulatorConfig(events=10)) as emu:
        status, body = get(emu.url, KEYS["no_recordings"])
        assert status == 200 and "session_recording:read" not in body["scopes"] and "query:read" in body["scopes"]
        assert body["value"] is None and KEYS["no_recordings"] not in json.dumps(body)
        assert get(emu.url, KEYS["project_scoped"])[1]["scoped_teams"] == [2]
    with EmulatorServer(EmulatorConfig(events=10, key_introspection=False)) as emu:
        assert get(emu.url, KEYS["all_access"])[0] == 404
