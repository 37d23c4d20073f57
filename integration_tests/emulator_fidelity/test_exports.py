"""File-download batch exports in the emulator (README "File-download exports", tools/emulator/exports.py):
validation, the status sequence and its timing, the download through the object-store host, expired
links, the per-team limit, scopes, failures, the files (columns, gzip members, splitting) and exact
back-to-back ingestion-time windows across late events, person merges and deletions, and sessions.

Fast by design: small datasets, the export timeline scaled by ``ExportSettings.time_scale``, and
``advance_export`` where a test is not about the waits. Run with:
    python -m pytest integration_tests/emulator_fidelity/test_exports.py -q
"""

from __future__ import annotations

import gzip
import re
import time
import urllib.error
import urllib.request
import zlib
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
import requests

from tools.emulator import KEYS, PROJECT_ID, EmulatorConfig, EmulatorServer, FaultConfig
from tools.emulator import export_files as xf
from tools.emulator import exports as ex
from tools.emulator.data import uuid7_text
from tools.emulator.exports import ExportSettings
from integration_tests.emulator_fidelity.test_emulator import auth, hog, ts

BASE = datetime.now(timezone.utc).replace(second=0, microsecond=0)
PATH = f"/api/projects/{PROJECT_ID}/file_download_batch_exports/"
DT_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?\+00:00$")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("emulator-cache")


@pytest.fixture(scope="module")
def exp(data_dir):
    """A shared server whose data is never mutated (runs are created on it, data is not changed)."""
    with EmulatorServer(EmulatorConfig(events=3000, seed=11, base_time=BASE, data_dir=data_dir,
                                       exports=ExportSettings(time_scale=0.01))) as e:
        yield e


@pytest.fixture(scope="module")
def big(data_dir):
    """9,000 events in 6 days: enough for a dozen 1 MiB files."""
    with EmulatorServer(EmulatorConfig(events=9000, seed=13, base_time=BASE, events_span_days=6, data_dir=data_dir,
                                       exports=ExportSettings(time_scale=0.01))) as e:
        yield e


def now() -> datetime:
    return datetime.now(timezone.utc)


def body(model="events", start=None, end=None, include=None, exclude=None, **file) -> dict:
    end = end or now()
    start = start or end - timedelta(days=7)
    out = {"model": model, "data_interval_start": start.isoformat(), "data_interval_end": end.isoformat(),
           "file": {"format": "JSONLines", **file}}
    if include is not None:
        out["include"] = include
    if exclude is not None:
        out["exclude"] = exclude
    return out


def create(e, payload, key="all_access", project=PROJECT_ID):
    return requests.post(f"{e.url}/api/projects/{project}/file_download_batch_exports/", json=payload, headers=auth(key),
                         timeout=30)


def retrieve(e, run_id, key="all_access"):
    return requests.get(f"{e.url}{PATH}{run_id}/", headers=auth(key), timeout=30)


def start_run(e, payload) -> str:
    r = create(e, payload)
    assert r.status_code == 202, r.text
    assert list(r.json()) == ["id"]
    return r.json()["id"]


def finished(e, payload) -> tuple[str, dict]:
    """Create a run, skip its waits, and return its id and retrieve body (Completed with files)."""
    run_id = start_run(e, payload)
    e.advance_export(run_id, "Files")
    r = retrieve(e, run_id)
    assert r.status_code == 200 and r.json()["status"] == "Completed", r.text
    return run_id, r.json()


def download(e, run_id, part="", **kw) -> requests.Response:
    return requests.get(f"{e.url}{PATH}{run_id}/download/{part}", headers=auth(), timeout=30, **kw)


def lines_of(content: bytes, compressed: bool = False) -> list[dict]:
    return [orjson.loads(line) for line in (gzip.decompress(content) if compressed else content).splitlines()]


def all_lines(e, run_id, files, compressed=False) -> list[dict]:
    out = []
    for fid in files:
        r = download(e, run_id, fid)  # requests follows the 302 and drops Authorization (another port)
        assert r.status_code == 200, r.text
        out += lines_of(r.content, compressed)
    return out


def error(type_, code, detail, attr=None):
    return {"type": type_, "code": code, "detail": detail, "attr": attr}


def next_second() -> datetime:
    """A boundary, then a pause until the next whole second: persons' ``_timestamp`` is whole seconds,
    so no change made after this returns shares a second with the boundary."""
    t = now()
    time.sleep(1.02 - t.microsecond / 1e6)
    return t


# ------------------------------------------------------------------------------------------------
# validation (presentation/views/file_download.py serializers, drf-exceptions-hog bodies)
# ------------------------------------------------------------------------------------------------

NOW = now()
GOOD = body(start=NOW - timedelta(hours=2), end=NOW - timedelta(hours=1))
FUTURE_END = (NOW + timedelta(hours=1)).astimezone(timezone(timedelta(hours=5, minutes=30)))


def _with(**changes):
    b = orjson.loads(orjson.dumps(GOOD))
    for k, v in changes.items():
        if k.startswith("file_"):
            b["file"][k[5:]] = v
        elif v is ...:
            b.pop(k, None)
        else:
            b[k] = v
    return b


VALIDATION = [
    ({"model": "nope"}, 400, error("validation_error", "required", "This field is required.", "file")),
    ([GOOD], 400, error("validation_error", "invalid_input", "Invalid data. Expected a dictionary, but got list.")),
    (_with(file="JSONLines"), 400, error("validation_error", "invalid_input",
                                         "Invalid data. Expected a dictionary, but got str.", "file__non_field_errors")),
    (_with(file_format="CSV"), 400, error("validation_error", "invalid_choice", '"CSV" is not a valid choice.',
                                          "file__format")),
    (_with(file_compression="zip"), 400, error("validation_error", "invalid_choice", '"zip" is not a valid choice.',
                                               "file__compression")),
    (_with(file_max_size_mb=-1), 400, error("validation_error", "min_value",
                                            "Ensure this value is greater than or equal to 0.", "file__max_size_mb")),
    (_with(file_max_size_mb="big"), 400, error("validation_error", "invalid_input", "A valid integer is required.",
                                               "file__max_size_mb")),
    (_with(model=...), 400, error("validation_error", "required", "This field is required.", "model")),
    (_with(model="groups"), 400, error("validation_error", "invalid_choice", '"groups" is not a valid choice.', "model")),
    (_with(include="$pageview"), 400, error("validation_error", "not_a_list",
                                            'Expected a list of items but got type "str".', "include")),
    (_with(exclude=[""]), 400, error("validation_error", "blank", "This field may not be blank.", "exclude__0")),
    (_with(data_interval_start="yesterday"), 400, error(
        "validation_error", "invalid_input", "Datetime has wrong format. Use one of these formats instead: "
        "YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z].", "data_interval_start")),
    (_with(data_interval_end=None), 400, error("validation_error", "null", "This field may not be null.",
                                               "data_interval_end")),
    (_with(data_interval_end=...), 400, error(
        "validation_error", "invalid_input", "'data_interval_start' and 'data_interval_end' are required. Provide both bounds.")),
    (_with(data_interval_start=GOOD["data_interval_end"], data_interval_end=GOOD["data_interval_start"]), 400,
     error("validation_error", "invalid_input", "'data_interval_end' must occur after 'data_interval_start'")),
    (_with(data_interval_start=(NOW - timedelta(days=7, hours=2)).isoformat()), 400, error(
        "validation_error", "invalid_input", "data interval range too big. Choose an interval of at most seven days.")),
    (_with(data_interval_end=FUTURE_END.isoformat()), 400, error(
        "validation_error", "invalid_input",
        f"The provided 'data_interval_end' ({FUTURE_END.astimezone(timezone.utc).isoformat()}) is in the future")),
    (_with(data_interval_start=FUTURE_END.isoformat(), data_interval_end=(FUTURE_END + timedelta(hours=1)).isoformat()),
     400, error("validation_error", "invalid_input",
                f"The provided 'data_interval_start' ({FUTURE_END.astimezone(timezone.utc).isoformat()}) is in the future")),
    (_with(hogql_query="SELECT event AS event FROM events"), 400, error(
        "validation_error", "invalid_input", "'hogql_query' is only supported when 'model' is 'hogql'")),
    (_with(model="hogql", hogql_query="SELECT event AS event FROM events"), 403, error(
        "authentication_error", "permission_denied", "HogQL batch exports are not enabled for this team.")),
    (_with(file={}), 400, error("validation_error", "emulator_unsupported", None, "file__format")),  # Parquet: the default
    (_with(file_compression="brotli"), 400, error("validation_error", "emulator_unsupported", None, "file__compression")),
]


@pytest.mark.parametrize("payload,status,expected", VALIDATION, ids=[f"{i}-{c[2]['code']}" for i, c in enumerate(VALIDATION)])
def test_create_validation_errors(exp, payload, status, expected):
    before = len(exp.exports()["runs"])
    r = create(exp, payload)
    assert r.status_code == status, r.text
    got = r.json()
    if expected["detail"] is None:  # the emulator's own refusals: the detail names the limitation
        assert got["detail"].startswith("Emulator limitation:")
        got = {**got, "detail": None}
    assert got == expected
    assert len(exp.exports()["runs"]) == before  # nothing was created


def test_create_answers_202_id_and_accepts_an_empty_interval_and_offsets(exp):
    point = now() - timedelta(hours=1)
    run_id, done = finished(exp, body(start=point, end=point))  # start == end is allowed ('>' in validate)
    assert done == {"status": "Completed", "files": [], "records_completed": 0}
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", run_id)
    kolkata = timezone(timedelta(hours=5, minutes=30))
    run_id = start_run(exp, body(start=(now() - timedelta(hours=3)).astimezone(kolkata), end=now().astimezone(kolkata)))
    truth = exp.export_run(run_id)
    assert truth["data_interval_end"].endswith("+00:00")  # DateTimeField(default_timezone=UTC): converted
    assert requests.post(f"{exp.url}/api/environments/{PROJECT_ID}/file_download_batch_exports/", json=GOOD,
                         headers=auth(), timeout=30).status_code == 404  # the newest PostHog registers projects only
    assert requests.post(f"{exp.url}{PATH[:-1]}", json=GOOD, headers=auth(), timeout=30).status_code == 202  # slash optional


# ------------------------------------------------------------------------------------------------
# the status sequence and the wait past the interval end
# ------------------------------------------------------------------------------------------------


def test_status_sequence_waits_past_the_interval_end(make_emu):
    scale = 0.02  # the 60 s wait is 1.2 s; Starting 0.04 s; the Completed-without-files gap 0.2 s
    e = make_emu(events=400, exports=ExportSettings(time_scale=scale, files_gap_seconds=10, run_seconds=5))
    end = now()
    run_id = start_run(e, body(start=end - timedelta(hours=6), end=end))
    seen, gap_checked, t_done = [], False, None
    deadline = time.time() + 20
    while time.time() < deadline:
        r = retrieve(e, run_id).json()
        if not seen or seen[-1] != r["status"]:
            seen.append(r["status"])
        truth = e.export_run(run_id)
        if truth["status"] == "Completed" and truth["shown_status"] == "Running" and not gap_checked:
            assert r == {"status": "Running"}  # Completed, but no file downloads yet: retrieve says Running
            listed = requests.get(e.url + PATH, headers=auth(), timeout=30).json()
            assert listed["results"][0] == {"id": run_id, "status": "Completed"}  # the list shows the stored status
            gap_checked = True
        if r["status"] == "Completed":
            t_done = time.time()
            break
        time.sleep(0.005)
    assert seen == ["Starting", "Running", "Completed"]
    assert gap_checked
    assert t_done - end.timestamp() >= 60 * scale  # wait_for_delta_past_data_interval_end: 1 minute, scaled
    done = retrieve(e, run_id).json()
    assert set(done) == {"status", "files", "records_completed"} and len(done["files"]) == 1
    lo, hi = ts(end - timedelta(hours=6)), ts(end)
    truth_rows = hog(e, f"SELECT uuid FROM events WHERE created_at >= '{lo}' AND created_at < '{hi}' LIMIT 50000").json()
    assert done["records_completed"] == len(truth_rows["results"]) > 0


def test_a_five_minute_interval_waits_30_seconds_others_60(exp):
    end = now()
    five = exp.export_run(start_run(exp, body(start=end - timedelta(minutes=5), end=end)))
    other = exp.export_run(start_run(exp, body(start=end - timedelta(minutes=6), end=end)))
    waited = [datetime.fromisoformat(r["schedule"]["Queried"].replace("Z", "+00:00")) - end for r in (five, other)]
    assert abs(waited[0].total_seconds() - 30 * 0.01) < 0.05 and abs(waited[1].total_seconds() - 60 * 0.01) < 0.05


# ------------------------------------------------------------------------------------------------
# downloads: the redirect, the object-store host, expired links
# ------------------------------------------------------------------------------------------------


def test_download_through_the_redirect_to_the_object_store(exp):
    exp.clear_object_store_requests()
    run_id, done = finished(exp, body(compression="gzip"))
    r = download(exp, run_id, allow_redirects=False)
    assert r.status_code == 302 and r.content == b"" and r.headers["Cache-Control"] == "no-store"
    location = urlsplit(r.headers["Location"])
    assert location.port != urlsplit(exp.url).port  # another host
    q = parse_qs(location.query)
    assert q["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and q["X-Amz-Expires"] == [str(int(3600 * 0.01))]
    followed = download(exp, run_id)  # requests follows the 302 and strips Authorization for another port
    assert followed.status_code == 200 and followed.history[0].status_code == 302
    key = exp.export_run(run_id)["files"][0]["key"]
    assert followed.headers["Content-Disposition"] == f'attachment; filename="{key.rsplit("/", 1)[1]}"'
    assert followed.headers["Content-Type"] == "binary/octet-stream" and followed.headers["Accept-Ranges"] == "bytes"
    assert len(lines_of(followed.content, compressed=True)) == done["records_completed"] > 0
    assert download(exp, run_id, done["files"][0]).content == followed.content  # by id, by index 0, and no part
    assert download(exp, run_id, "0").content == followed.content
    # a client that forwards its PostHog key across the redirect is refused, like S3 does
    refused = requests.get(r.headers["Location"], headers=auth(), timeout=30)
    assert refused.status_code == 400 and refused.headers["Content-Type"] == "application/xml"
    assert "<Code>InvalidArgument</Code>" in refused.text
    assert "Only one auth mechanism allowed" in refused.text and "<ArgumentName>Authorization</ArgumentName>" in refused.text
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with pytest.raises(urllib.error.HTTPError) as naive:  # urllib keeps every header on a redirect
        opener.open(urllib.request.Request(f"{exp.url}{PATH}{run_id}/download/", headers=auth()), timeout=30)
    assert naive.value.code == 400
    head = requests.head(r.headers["Location"], timeout=30)
    assert head.status_code == 403  # the method is signed: HEAD on a GET link
    tampered = requests.get(r.headers["Location"].replace("X-Amz-Expires=36", "X-Amz-Expires=360"), timeout=30)
    assert tampered.status_code == 403 and "<Code>SignatureDoesNotMatch</Code>" in tampered.text
    unsigned = requests.get(r.headers["Location"].split("?")[0], timeout=30)
    assert unsigned.status_code == 403 and "<Code>AccessDenied</Code><Message>Access Denied</Message>" in unsigned.text
    ranged = requests.get(r.headers["Location"], headers={"Range": "bytes=0-9"}, timeout=30)
    assert ranged.status_code == 206 and ranged.content == followed.content[:10]
    log = exp.object_store_requests()
    assert [x["status"] for x in log] == [200, 200, 200, 400, 400, 403, 403, 403, 206]
    assert [x["error_code"] for x in log][3:8] == ["InvalidArgument", "InvalidArgument", "SignatureDoesNotMatch",
                                                  "SignatureDoesNotMatch", "AccessDenied"]
    assert all("Authorization" not in x["headers"] for x in log[:3])
    assert log[3]["headers"]["Authorization"] == "Bearer <masked>" and log[3]["key"] == key
    assert not any(k in orjson.dumps(log).decode() + refused.text for k in KEYS.values())


def test_download_errors_by_part_and_status(exp):
    run_id, done = finished(exp, body(max_size_mb=None))
    assert download(exp, run_id, "abc", allow_redirects=False).json() == error(
        "validation_error", "invalid_input", "Invalid file id or index: 'abc'")
    assert download(exp, run_id, "5", allow_redirects=False).json() == error(
        "invalid_request", "not_found", "No files with index 5")
    assert download(exp, run_id, "-1", allow_redirects=False).json()["detail"] == "No files with index -1"
    assert download(exp, run_id, uuid7_text(1, 1), allow_redirects=False).json() == error(
        "invalid_request", "not_found", "Not found.")
    assert download(exp, run_id, "0.jsonl", allow_redirects=False).status_code == 404  # [^/.]+
    assert retrieve(exp, "not-a-uuid").json() == error("invalid_request", "not_found", "Not found.")
    other_team = create(exp, body(), project=3).json()["id"]
    assert retrieve(exp, other_team).json() == error("invalid_request", "not_found", "Not found.")  # another team's run
    running = start_run(exp, body())
    assert download(exp, running, allow_redirects=False).json()["detail"] == "Batch export run is still in progress"
    assert requests.delete(f"{exp.url}{PATH}{run_id}/", headers=auth(), timeout=30).json() == error(
        "invalid_request", "method_not_allowed", 'Method "DELETE" not allowed.')


def test_expired_links_and_expired_files(exp):
    run_id, done = finished(exp, body())
    location = download(exp, run_id, allow_redirects=False).headers["Location"]
    assert requests.get(location, timeout=30).status_code == 200
    exp.expire_export_links(run_id)
    expired = requests.get(location, timeout=30)
    assert expired.status_code == 403
    assert re.search(r"<Code>AccessDenied</Code><Message>Request has expired</Message><X-Amz-Expires>36</X-Amz-Expires>"
                     r"<Expires>[0-9T:Z-]+</Expires><ServerTime>[0-9T:Z-]+</ServerTime>", expired.text)
    fresh = download(exp, run_id)  # a new link works
    assert fresh.status_code == 200
    store = exp.app.exports.object_store
    fresh_location = download(exp, run_id, allow_redirects=False).headers["Location"]
    real = store.clock
    store.clock = lambda: real() + 37  # past X-Amz-Date + X-Amz-Expires (36 s: 3600 s scaled by 0.01)
    try:
        assert "Request has expired" in requests.get(fresh_location, timeout=30).text
    finally:
        store.clock = real
    assert requests.get(fresh_location, timeout=30).status_code == 200
    exp.expire_export_files(run_id)  # the bucket's lifecycle removed the files
    assert download(exp, run_id, allow_redirects=False).json() == error(
        "validation_error", "invalid_input", "This file download has expired")
    gone = requests.get(fresh_location, timeout=30)
    assert gone.status_code == 403 and "<Message>Access Denied</Message>" in gone.text


def test_file_retention_shortens_the_link_and_is_announced(make_emu):
    e = make_emu(events=400, exports=ExportSettings(time_scale=0.01, file_retention_seconds=1200))
    run_id, _ = finished(e, body())
    r = download(e, run_id, allow_redirects=False)
    expires = int(parse_qs(urlsplit(r.headers["Location"]).query)["X-Amz-Expires"][0])
    assert 9 <= expires <= 12  # min(the file's remaining lifetime: 1200 s scaled, the link lifetime: 36 s)
    got = requests.get(r.headers["Location"], timeout=30)
    assert got.status_code == 200 and got.headers["x-amz-expiration"].startswith('expiry-date="')
    e.app.exports.runs[run_id].files[0].expires_at = time.time() + 5  # under STS's 900 s minimum (9 s scaled)
    assert download(e, run_id, allow_redirects=False).json() == error("server_error", "error", "A server error occurred.")


# ------------------------------------------------------------------------------------------------
# the per-team limit, cancel, scopes, faults
# ------------------------------------------------------------------------------------------------


def test_per_team_limit_429_and_cancel(make_emu):
    e = make_emu(events=400, exports=ExportSettings(time_scale=1.0))  # real waits: every run stays Running
    ids = [start_run(e, body()) for _ in range(20)]
    r = create(e, body())
    assert r.status_code == 429 and "Retry-After" not in r.headers
    assert r.json() == error("server_error", "too_many_concurrent_file_downloads",
                             "Too many concurrent file download batch exports for this team.")
    assert create(e, body(), project=3).status_code == 202  # per team
    cancelled = requests.post(f"{e.url}{PATH}{ids[0]}/cancel/", headers=auth(), timeout=30)
    assert cancelled.status_code == 200 and cancelled.json() == {"status": "Cancelled"}
    again = requests.post(f"{e.url}{PATH}{ids[0]}/cancel/", headers=auth(), timeout=30)
    assert again.json() == error("validation_error", "invalid_input", "Cannot cancel a run that is in 'Cancelled' status")
    assert download(e, ids[0], allow_redirects=False).json()["detail"] == "Batch export run was cancelled"
    assert create(e, body()).status_code == 202  # a place is free again
    listed = requests.get(e.url + PATH + "?limit=5", headers=auth(), timeout=30).json()
    assert listed["count"] == 21 and len(listed["results"]) == 5 and listed["next"] and listed["previous"] is None
    full = requests.get(e.url + PATH, headers=auth(), timeout=30).json()["results"]
    assert [x["id"] for x in full][-20:] == ids[::-1] and full[-1]["status"] == "Cancelled"  # newest first


def test_scopes(exp):
    for key in ("no_batch_exports", "batch_exports_read"):
        assert create(exp, body(), key=key).json() == error(
            "authentication_error", "permission_denied", "API key missing required scope 'batch_export:write'")
    assert requests.get(exp.url + PATH, headers=auth("no_batch_exports"), timeout=30).json() == error(
        "authentication_error", "permission_denied", "API key missing required scope 'batch_export:read'")
    run_id, _ = finished(exp, body())
    assert retrieve(exp, run_id, key="no_batch_exports").status_code == 403
    assert retrieve(exp, run_id, key="batch_exports_read").json()["status"] == "Completed"
    assert requests.get(f"{exp.url}{PATH}{run_id}/download/", headers=auth("batch_exports_read"),
                        timeout=30).status_code == 200
    assert requests.post(f"{exp.url}{PATH}{run_id}/cancel/", headers=auth("batch_exports_read"),
                         timeout=30).json()["detail"] == "API key missing required scope 'batch_export:write'"
    assert requests.get(exp.url + PATH, headers=auth("other_project"), timeout=30).status_code == 403


def test_faults_apply_to_the_export_endpoints(make_emu):
    e = make_emu(events=400, faults=FaultConfig({"500": 1.0}))
    r = create(e, body())
    assert r.status_code == 500 and r.json()["type"] == "server_error"
    assert requests.get(e.url + PATH, headers=auth(), timeout=30).status_code == 500


# ------------------------------------------------------------------------------------------------
# failures
# ------------------------------------------------------------------------------------------------


def test_planned_failures_carry_posthogs_error_text(make_emu):
    e = make_emu(events=400, exports=ExportSettings(time_scale=0.01))
    expected = {"Failed": {"status": "Failed", "error": "An unexpected error has occurred"},
                "FailedRetryable": {"status": "FailedRetryable",
                                    "error": "An intermittent `RequestTimeout` was raised while attempting to upload part 1"},
                "FailedBilling": {"status": "FailedBilling"},  # start_batch_export_run sets no latest_error
                "TimedOut": {"status": "TimedOut"}}
    for status, shown in expected.items():
        e.plan_export_outcomes(status)
        run_id = start_run(e, body())
        e.advance_export(run_id, "Completed")
        assert retrieve(e, run_id).json() == shown
        assert download(e, run_id, allow_redirects=False).json()["detail"] == "Batch export run has failed"
    e.plan_export_outcomes("Failed", error="ClickHouse went away")
    run_id = start_run(e, body())
    assert e.advance_export(run_id, "Completed")["error"] == "ClickHouse went away"
    e.plan_export_outcomes("Failed", at="start")
    r = create(e, body())
    assert r.status_code == 500 and r.json() == {"detail": ex.FAILED_TO_START}
    failed = requests.get(e.url + PATH, headers=auth(), timeout=30).json()["results"][0]
    assert failed["status"] == "Failed" and retrieve(e, failed["id"]).json() == {"status": "Failed", "error": "Failed to start"}
    running = start_run(e, body())
    e.set_export_status(running, "Terminated", error="terminated by an operator")
    assert retrieve(e, running).json() == {"status": "Terminated", "error": "terminated by an operator"}


def test_jsonlines_with_zstd_never_completes_when_there_are_rows(exp):
    stuck = start_run(exp, body(compression="zstd"))
    truth = exp.advance_export(stuck, "Completed", timeout=5)
    assert truth["status"] == "Running" and "Unsupported compression: 'zstd'" in truth["stuck"]
    assert retrieve(exp, stuck).json() == {"status": "Running"}
    point = now() - timedelta(minutes=5)
    _, empty = finished(exp, body(start=point, end=point, compression="zstd"))  # no row: nothing to compress
    assert empty == {"status": "Completed", "files": [], "records_completed": 0}
    exp.set_export_status(stuck, "Cancelled")


# ------------------------------------------------------------------------------------------------
# the files: columns, values, gzip members, splitting
# ------------------------------------------------------------------------------------------------


def test_event_lines_hold_posthogs_columns_and_the_query_apis_data(exp):
    run_id, done = finished(exp, body(include=["$pageview", "$autocapture"]))
    lines = all_lines(exp, run_id, done["files"])
    assert lines and all(tuple(x) == xf.EVENT_COLUMNS for x in lines)
    assert {x["event"] for x in lines} == {"$pageview", "$autocapture"}
    sample = lines[:40]
    ids = ", ".join(f"'{x['uuid']}'" for x in sample)
    rows = hog(exp, f"SELECT uuid, timestamp, created_at, properties, distinct_id, person_id, elements_chain "
                    f"FROM events WHERE uuid IN ({ids}) LIMIT 100").json()["results"]
    by_id = {r[0]: r for r in rows}
    for x in sample:
        uid, ts, created, props, did, pid, chain = by_id[x["uuid"]]
        assert DT_UTC.match(x["timestamp"]) and x["timestamp"] == datetime.fromisoformat(ts.replace("Z", "+00:00")).isoformat()
        assert x["created_at"] == x["_inserted_at"] == datetime.fromisoformat(created.replace("Z", "+00:00")).isoformat()
        assert x["properties"] == orjson.loads(props) and (x["distinct_id"], x["person_id"], x["elements_chain"]) == (did, pid, chain)
        assert x["person_properties"] is None
    run_id, done = finished(exp, body(exclude=["$pageview"]))
    excluded = all_lines(exp, run_id, done["files"])
    assert excluded and "$pageview" not in {x["event"] for x in excluded}


def test_person_and_session_lines_hold_posthogs_columns(exp):
    run_id, done = finished(exp, body("persons", start=BASE - timedelta(days=40), end=BASE - timedelta(days=33)))
    persons = all_lines(exp, run_id, done["files"])
    assert persons and all(tuple(x) == xf.PERSON_COLUMNS for x in persons)
    assert all(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3}000)?\+00:00$", x["created_at"]) for x in persons)
    assert all(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$", x["_inserted_at"]) for x in persons)  # whole seconds
    assert {(x["person_version"], x["person_distinct_id_version"], x["is_deleted"]) for x in persons} == {(0, 0, False)}
    truth = {r[0]: r[1] for r in hog(exp, "SELECT distinct_id, person_id FROM person_distinct_ids LIMIT 50000").json()["results"]}
    assert all(truth[x["distinct_id"]] == x["person_id"] for x in persons)
    run_id, done = finished(exp, body("sessions"))
    sessions = all_lines(exp, run_id, done["files"])
    assert sessions and all(tuple(x) == xf.SESSION_COLUMNS for x in sessions)
    ids = ", ".join(f"'{x['session_id']}'" for x in sessions[:30])
    rows = hog(exp, f'SELECT session_id, "$start_timestamp", "$end_timestamp", "$pageview_count", "$channel_type" '
                    f"FROM sessions WHERE session_id IN ({ids}) LIMIT 100").json()["results"]
    by_id = {r[0]: r for r in rows}
    for x in sessions[:30]:
        _, start_ts, end_ts, pageviews, channel = by_id[x["session_id"]]
        assert x["start_timestamp"] == datetime.fromisoformat(start_ts.replace("Z", "+00:00")).isoformat()
        assert (x["end_timestamp"], x["pageview_count"], x["channel_type"]) == (
            datetime.fromisoformat(end_ts.replace("Z", "+00:00")).isoformat(), pageviews, channel)
        assert datetime.fromisoformat(x["_inserted_at"]) >= datetime.fromisoformat(x["end_timestamp"])
        assert isinstance(x["urls"], list) and x["urls"] and x["session_id_v7"] == x["session_id"]


def test_split_files_are_named_and_ordered_by_key(big):
    end = now()
    run_id, done = finished(big, body(start=end - timedelta(days=7), end=end, max_size_mb=1))
    truth = big.export_run(run_id)["files"]
    assert len(done["files"]) >= 11  # so that the key order is not the number order
    suffixes = [re.search(r"-(\d+)\.jsonl$", f["key"]).group(1) for f in truth]
    assert suffixes == sorted(suffixes) and suffixes[:3] == ["0", "1", "10"]  # .order_by("key"): lexicographic
    assert done["files"] == [f["id"] for f in truth]
    assert download(big, run_id, "2").content.count(b"\n") == truth[2]["rows"]  # index 2 is the file "-10"
    limit = 1024 * 1024
    total = []
    last_written = max(truth, key=lambda f: int(re.search(r"-(\d+)\.jsonl$", f["key"]).group(1)))
    for f, fid in zip(truth, done["files"]):
        content = download(big, run_id, fid).content
        assert len(content) == f["size"]
        lines = content.splitlines(keepends=True)
        total += lines
        if f is not last_written:  # a file ends after the line that takes it over the limit
            assert len(content) > limit >= len(content) - len(lines[-1])
        else:
            assert len(content) - len(lines[-1]) <= limit
    assert len(total) == done["records_completed"] == len({orjson.loads(x)["uuid"] for x in total})
    lo, hi = ts(end - timedelta(days=7)), ts(end)
    expected = hog(big, f"SELECT count() FROM events WHERE created_at >= '{lo}' AND created_at < '{hi}'").json()["results"][0][0]
    assert len(total) == expected


def test_gzip_writes_one_member_per_line(big):
    end = now()
    run_id, done = finished(big, body(start=end - timedelta(days=2), end=end, compression="gzip", max_size_mb=1))
    keys = [f["key"] for f in big.export_run(run_id)["files"]]
    assert all(k.endswith(".jsonl.gz") for k in keys) and len(keys) >= 2
    count = 0
    for fid in done["files"]:
        content = download(big, run_id, fid).content
        lines = lines_of(content, compressed=True)
        members, rest = 0, content
        while rest:  # each line is its own gzip member
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            assert d.decompress(rest).count(b"\n") == 1
            rest = d.unused_data
            members += 1
        assert members == len(lines)
        count += len(lines)
    assert count == done["records_completed"]


def test_max_size_mb_null_and_zero_name_one_file(exp):
    for size, suffix in ((None, ""), (0, "-0")):
        run_id, done = finished(exp, body(max_size_mb=size))
        assert len(done["files"]) == 1
        truth = exp.export_run(run_id)
        span = f"{truth['data_interval_start']}-{truth['data_interval_end']}"
        assert truth["files"][0]["key"] == f"batch-exports/{truth['batch_export_id']}/{run_id}/{span}/{span}{suffix}.jsonl"


# ------------------------------------------------------------------------------------------------
# windows: back-to-back exactness, late events, merges and deletions, the lookbacks
# ------------------------------------------------------------------------------------------------


def _export(e, model, start, end):
    run_id, done = finished(e, body(model, start=start, end=end))
    return all_lines(e, run_id, done["files"])


def test_back_to_back_windows_are_exact_across_late_events_and_person_changes(make_emu):
    e = make_emu(events=2000, seed=21, exports=ExportSettings(time_scale=0.01))
    people = e.ground_truth("persons")
    a = people[:12]  # changed in window 1
    b = people[12:20]  # changed in window 2
    twice = people[20]  # updated in both
    t0 = next_second()
    m1 = e.mutate(new_events=30, late_events=15, new_persons=2, new_sessions=2, grow_ongoing_sessions=True,
                  merge_persons=[[a[0], a[1]], [a[2], a[3]]], delete_persons=[a[4]], update_persons=[a[5], twice])
    sid = uuid7_text(int(time.time() * 1000), 12345)
    stamp = now() - timedelta(hours=2)
    delayed = e.add_events([{"event": "$pageview", "timestamp": (stamp + timedelta(seconds=i)).isoformat(),
                             "properties": {"$session_id": sid, "$current_url": "https://app.example.com/late"}}
                            for i in range(2)], visibility_delay_seconds=1.5)  # created in window 1, ingested in window 2
    created = time.time()
    t1 = next_second()
    m2 = e.mutate(new_events=20, late_events=10, grow_ongoing_sessions=True, merge_persons=[[b[0], b[1]]],
                  delete_persons=[b[2]], update_persons=[b[3], twice])
    time.sleep(max(0.0, created + 1.6 - time.time()))
    t2 = next_second()
    w1, w2, both = (_export(e, "events", *w) for w in ((t0, t1), (t1, t2), (t0, t2)))
    ev1 = set(m1["events"]["new"]) | set(m1["events"]["late"])
    ev2 = set(m2["events"]["new"]) | set(m2["events"]["late"]) | set(delayed)
    assert [x["uuid"] for x in w1] and {x["uuid"] for x in w1} == ev1 and len(w1) == len(ev1)
    assert {x["uuid"] for x in w2} == ev2 and len(w2) == len(ev2) and not ev1 & ev2
    assert sorted(x["uuid"] for x in both) == sorted(ev1 | ev2)
    late = {x["uuid"]: x for x in w1 if x["uuid"] in m1["events"]["late"]}
    assert late and all(datetime.fromisoformat(x["_inserted_at"]) - datetime.fromisoformat(x["timestamp"]) > timedelta(hours=1)
                        for x in late.values())  # an old timestamp, ingested now

    p1, p2 = _export(e, "persons", t0, t1), _export(e, "persons", t1, t2)
    c1, c2 = m1["persons"], m2["persons"]
    dids = {r[0]: r[1] for r in hog(e, "SELECT distinct_id, person_id FROM person_distinct_ids LIMIT 50000").json()["results"]}

    def dids_of(*pids):
        return {d for d, p in dids.items() if p in pids}

    expect1 = (dids_of(*c1["new"], a[5], a[0], a[2]) | set(c1["deleted_distinct_ids"]))  # `twice` moved to window 2
    expect2 = dids_of(b[3], twice, b[0]) | set(c2["deleted_distinct_ids"])
    assert {x["distinct_id"] for x in p1} == expect1 and len(p1) == len(expect1)
    assert {x["distinct_id"] for x in p2} == expect2 and len(p2) == len(expect2)
    line1 = {x["distinct_id"]: x for x in p1}
    for merge in c1["merged"]:
        assert merge["from"] not in {x["person_id"] for x in p1 + p2}  # a merged-away person has no line of its own
        for d in merge["moved_distinct_ids"]:
            assert (line1[d]["person_id"], line1[d]["person_distinct_id_version"], line1[d]["person_version"]) == (
                merge["into"], 1, 1)
    for d in c1["deleted_distinct_ids"]:
        assert line1[d]["is_deleted"] is True and line1[d]["person_version"] == line1[d]["person_distinct_id_version"] == 100
    changed_at = datetime.fromisoformat(c1["changed_at"].replace("Z", "+00:00")).isoformat()
    assert {x["_inserted_at"] for x in p1 if x["person_id"] not in c1["new"]} == {changed_at}
    twice_line = [x for x in p2 if x["person_id"] == twice]
    assert twice_line and all(x["person_version"] == 2 for x in twice_line)  # the latest version wins
    assert all(x["properties"]["emulator_mutation"] for x in p1 if x["person_id"] == a[5])

    s1, s2 = _export(e, "sessions", t0, t1), _export(e, "sessions", t1, t2)
    changed1 = set(m1["sessions"]["new"]) | set(m1["sessions"]["updated"]) | set(m1["sessions"]["by_late_events"])
    changed2 = set(m2["sessions"]["new"]) | set(m2["sessions"]["updated"]) | set(m2["sessions"]["by_late_events"]) | {sid}
    assert {x["session_id"] for x in s1} == changed1 - changed2 and len(s1) == len(changed1 - changed2)
    assert {x["session_id"] for x in s2} == changed2 and len(s2) == len(changed2)
    final = {**m1["sessions"]["final"], **m2["sessions"]["final"]}
    for x in s1 + s2:
        if x["session_id"] in final:
            assert x["end_timestamp"] == datetime.fromisoformat(
                final[x["session_id"]]["$end_timestamp"].replace("Z", "+00:00")).isoformat()


def test_merges_and_deletions_show_in_hogql_and_the_mutation_result(make_emu):
    e = make_emu(events=400, seed=8)
    people = e.ground_truth("persons")
    into, other, gone = people[0], people[1], people[2]
    before = {r[0]: r[1] for r in hog(e, "SELECT distinct_id, person_id FROM person_distinct_ids LIMIT 5000").json()["results"]}
    result = e.mutate(merge_persons=[[into, other]], delete_persons=[gone])["persons"]
    assert set(result) == {"new", "updated", "merged", "deleted", "merged_away", "moved_distinct_ids", "deleted_distinct_ids",
                           "versions", "distinct_id_versions", "changed_at"}
    moved = sorted(d for d, p in before.items() if p == other)
    assert result["merged"] == [{"into": into, "from": other, "moved_distinct_ids": moved}]
    assert result["moved_distinct_ids"] == {d: into for d in moved} and result["merged_away"] == [other]
    assert result["deleted"] == [gone] and sorted(result["deleted_distinct_ids"]) == sorted(d for d, p in before.items() if p == gone)
    assert result["versions"] == {into: 1, other: 100, gone: 100}
    ids = hog(e, f"SELECT id FROM persons WHERE id IN ('{into}', '{other}', '{gone}')").json()["results"]
    assert ids == [[into]]
    after = {r[0]: r[1] for r in hog(e, "SELECT distinct_id, person_id FROM person_distinct_ids LIMIT 5000").json()["results"]}
    assert all(after[d] == into for d in moved) and not set(result["deleted_distinct_ids"]) & set(after)
    assert set(after) == set(before) - set(result["deleted_distinct_ids"])
    assert other not in e.ground_truth("persons") and gone not in e.ground_truth("persons")
    with pytest.raises(RuntimeError):  # a person takes part in one change of a mutation only
        e.mutate(merge_persons=[[into, people[3]]], update_persons=[into])


def test_events_of_old_windows_follow_the_timestamp_lookback(make_emu):
    e = make_emu(events=400)
    ten = now() - timedelta(days=10)
    far, near = e.add_events([{"event": "old_far", "timestamp": (ten - timedelta(days=10)).isoformat(), "created_at": ten.isoformat()},
                              {"event": "old_near", "timestamp": (ten - timedelta(days=2)).isoformat(), "created_at": ten.isoformat()}])
    got = {x["uuid"] for x in _export(e, "events", ten - timedelta(hours=1), ten + timedelta(hours=1))}
    assert near in got and far not in got  # `events` table: timestamp >= start - 7 days
    recent = e.add_events([{"event": "recent_far", "timestamp": (now() - timedelta(days=20)).isoformat()}])[0]
    time.sleep(0.01)
    assert recent in {x["uuid"] for x in _export(e, "events", now() - timedelta(hours=1), now())}  # events_recent: no bound


def test_sessions_whose_events_arrive_more_than_3_days_late_are_not_exported(make_emu):
    e = make_emu(events=400)
    t0 = now()
    late_sid, ok_sid = uuid7_text(1, 1), uuid7_text(1, 2)
    e.add_events([{"event": "$pageview", "timestamp": (t0 - timedelta(days=5)).isoformat(), "properties": {"$session_id": late_sid}},
                  {"event": "$pageview", "timestamp": (t0 - timedelta(days=2)).isoformat(), "properties": {"$session_id": ok_sid}}])
    time.sleep(0.01)
    got = {x["session_id"] for x in _export(e, "sessions", t0, now())}
    assert ok_sid in got and late_sid not in got


def test_export_settings_round_trip_through_the_cli():
    from tools.emulator.__main__ import config_from_args, parse_args

    cfg = EmulatorConfig(exports=ExportSettings(time_scale=0.01, link_ttl_seconds=60, max_concurrent_per_team=3,
                                                file_retention_seconds=600))
    assert "--exports" in cfg.to_cli_args() and "--exports" not in EmulatorConfig().to_cli_args()
    assert config_from_args(parse_args(cfg.to_cli_args())).exports == cfg.exports
    assert ExportSettings.parse("time_scale=0.5,wait_past_end_seconds=none").wait_past_end_seconds is None
    with pytest.raises(ValueError):
        ExportSettings.parse("run_later=1")
    with pytest.raises(ValueError):
        ExportSettings(time_scale=-1)
