"""Checks the PostHog API emulator against the facts of docs/posthog-api.md.

Fast by design (small datasets, a few seconds in total). Run with:
    python -m pytest integration_tests/emulator_fidelity/test_emulator.py -q
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import requests

from tools.emulator import KEYS, PROJECT_ID, EmulatorConfig, EmulatorProcess, EmulatorServer, FaultConfig
from tools.emulator import hogql
from tools.emulator.data import DataParams, Store
from tools.emulator.ratelimit import RateLimiter, Throttled

from integration_tests.emulator_fidelity.conftest import BASE

ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
ISO_OFFSET = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}\+00:00$")
EVENT_COLUMNS = "uuid, event, timestamp, distinct_id, properties, elements_chain, person_id, created_at"


# ------------------------------------------------------------------------------------------------
# fixtures and helpers
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def emu(data_dir):
    """A shared, read-only server: never mutated, never faulted."""
    with EmulatorServer(EmulatorConfig(events=3000, seed=3, base_time=BASE, data_dir=data_dir)) as e:
        yield e


def auth(key: str = "all_access") -> dict:
    return {"Authorization": f"Bearer {KEYS[key]}"}


def get(e, path, key="all_access", **kw):
    return requests.get(e.url + path, headers=auth(key), timeout=30, **kw)


def hog(e, query, key="all_access", path=None, **extra):
    body = {"query": {"kind": "HogQLQuery", "query": query, **extra}, "name": "emulator_test", "refresh": "blocking"}
    return requests.post(e.url + (path or f"/api/projects/{PROJECT_ID}/query/"), headers=auth(key), json=body,
                         timeout=30)


def follow(e, path, key="all_access"):
    """All results, following absolute `next` URLs."""
    out, url = [], e.url + path
    while url:
        r = requests.get(url, headers=auth(key), timeout=30)
        assert r.status_code == 200, r.text
        body = r.json()
        out.extend(body["results"])
        url = body.get("next")
    return out


def ts(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%d %H:%M:%S.%f")


def error_body(type_, code, detail, attr=None):
    return {"type": type_, "code": code, "detail": detail, "attr": attr}


# ------------------------------------------------------------------------------------------------
# routing, projects, envelopes
# ------------------------------------------------------------------------------------------------

PROJECT_LIST_FIELDS = {"id", "uuid", "organization", "api_token", "name", "completed_snippet_onboarding",
                       "has_completed_onboarding_for", "ingested_event", "is_demo", "timezone", "access_control"}


def test_projects_list_detail_and_organization_views(emu):
    body = get(emu, "/api/projects/").json()
    assert set(body) == {"count", "next", "previous", "results"}
    assert body["count"] == 4 and body["next"] is None and body["previous"] is None
    assert [p["id"] for p in body["results"]] == [2, 3, 4, 5]
    assert emu.ground_truth("projects") == [2]  # the connector emits the project it reads
    assert {p["id"]: p["timezone"] for p in body["results"]} == {2: "UTC", 3: "UTC", 4: "Asia/Kolkata", 5: "UTC"}
    assert all(set(p) == PROJECT_LIST_FIELDS for p in body["results"])
    assert body["results"][0]["name"] == "Default project"
    detail = get(emu, "/api/projects/2/").json()
    assert PROJECT_LIST_FIELDS < set(detail) and "test_account_filters" in detail
    org = body["results"][0]["organization"]
    for path in ("/api/organizations/@current/projects/", f"/api/organizations/{org}/projects/"):
        assert [p["id"] for p in get(emu, path).json()["results"]] == [2, 3, 4, 5]
    assert get(emu, "/api/organizations/00000000-0000-0000-0000-000000000000/projects/").status_code == 404


def test_trailing_slash_current_and_environment_aliases(emu):
    for path in ("/api/projects/2/persons", "/api/projects/@current/persons/", "/api/environments/2/persons/",
                 "/api/environments/2/insights", "/api/environments/@current/session_recordings/"):
        assert get(emu, path).status_code == 200, path
    assert get(emu, "/api/environments/2/cohorts/").status_code == 404  # projects-only resource
    r = hog(emu, "SELECT count() FROM events", path="/api/environments/2/query")
    assert r.status_code == 200 and r.json()["results"] == [[3000]]


def test_next_is_absolute_and_built_from_the_host_header(emu):
    r = requests.get(emu.url + "/api/projects/2/cohorts/?limit=10", timeout=10,
                     headers={**auth(), "Host": "posthog.example.test:8443"})
    assert r.json()["next"] == "http://posthog.example.test:8443/api/projects/2/cohorts/?limit=10&offset=10"
    assert get(emu, "/api/projects/2/cohorts/").json()["next"].startswith(emu.url + "/api/projects/2/cohorts/?")


@pytest.mark.parametrize("resource,default_limit", [
    ("cohorts", 100), ("feature_flags", 100), ("insights", 100), ("annotations", 1000), ("event_definitions", 100),
    ("property_definitions", 100),
])
def test_drf_limit_offset_resources(emu, resource, default_limit):
    first = get(emu, f"/api/projects/2/{resource}/").json()
    assert set(first) == {"count", "next", "previous", "results"}
    assert len(first["results"]) == default_limit < first["count"], "more than one page at the default limit"
    q = parse_qs(urlsplit(first["next"]).query)
    assert q["limit"] == [str(default_limit)] and q["offset"] == [str(default_limit)]
    second = requests.get(first["next"], headers=auth(), timeout=10).json()
    assert second["previous"] == f"{emu.url}/api/projects/2/{resource}/?limit={default_limit}"
    ids = [x["id"] for x in follow(emu, f"/api/projects/2/{resource}/?limit=37")]
    truth = emu.ground_truth(resource)
    if resource == "property_definitions":
        truth = [i for t, i in truth if t == "event"]
    if resource == "feature_flags":  # the truth holds archived flags too; the default list leaves them out
        archived = {x["id"] for x in follow(emu, "/api/projects/2/feature_flags/?archived=true")}
        truth = [i for i in truth if i not in archived]
    assert ids == truth and len(set(ids)) == first["count"]


def test_default_orders(emu):
    cohorts = follow(emu, "/api/projects/2/cohorts/")
    assert [c["created_at"] for c in cohorts] == sorted((c["created_at"] for c in cohorts), reverse=True)
    flags = follow(emu, "/api/projects/2/feature_flags/")
    assert [f["created_at"] for f in flags] == sorted((f["created_at"] for f in flags), reverse=True)
    annotations = get(emu, "/api/projects/2/annotations/").json()["results"]
    assert [a["date_marker"] for a in annotations] == sorted((a["date_marker"] for a in annotations), reverse=True)
    names = [p["name"] for p in follow(emu, "/api/projects/2/property_definitions/?type=person")]
    assert names == sorted(names)
    days = [(d["last_seen_at"] or "9999")[:10] for d in follow(emu, "/api/projects/2/event_definitions/")]
    assert days == sorted(days, reverse=True)


def test_annotations_include_organization_scoped_rows_of_other_projects(emu):
    rows = follow(emu, "/api/projects/2/annotations/")
    from_p3 = {a["id"] for a in follow(emu, "/api/projects/3/annotations/") if a["scope"] == "organization"}
    assert from_p3 and from_p3 <= {a["id"] for a in rows}


def test_actions_are_one_unpaginated_list(emu):
    body = get(emu, "/api/projects/2/actions/?limit=5").json()
    assert set(body) == {"results"}
    assert [a["id"] for a in body["results"]] == emu.ground_truth("actions") and len(body["results"]) > 5


SERIALIZER_FIELDS = json.loads((Path(__file__).resolve().parents[2] / "tools/emulator/serializer_fields.json").read_text())["streams"]
DOCUMENTED = {"cohorts": "cohorts", "feature_flags": "feature_flags", "insights": "insights_full",
              "annotations": "annotations", "actions": "actions", "session_recordings": "session_recordings",
              "event_definitions": "event_definitions", "property_definitions": "property_definitions"}


@pytest.mark.parametrize("resource", sorted(DOCUMENTED))
def test_every_resource_has_the_fields_of_its_serializer(emu, resource):
    """tools/emulator/serializer_fields.json (test_serializer_fields.py checks every stream and type)."""
    suffix = "?date_from=-100d" if resource == "session_recordings" else ""
    rows = get(emu, f"/api/projects/2/{resource}/{suffix}").json()["results"]
    assert rows and all(set(row) == set(SERIALIZER_FIELDS[DOCUMENTED[resource]]["fields"]) for row in rows)
    if resource == "session_recordings":  # MinimalPersonSerializer
        assert set(rows[0]["person"]) == {"id", "name", "distinct_ids", "properties", "created_at", "uuid", "last_seen_at"}


# ------------------------------------------------------------------------------------------------
# persons, property definitions, session recordings
# ------------------------------------------------------------------------------------------------


def test_persons_envelope_ids_order_and_full_last_page(emu):
    body = get(emu, "/api/projects/2/persons/").json()
    assert set(body) == {"results", "next", "previous"}  # no count unless include_total
    person = body["results"][0]
    assert person["id"] == person["uuid"] and person["type"] == "person"
    assert {"name", "distinct_ids", "properties", "is_identified", "created_at", "last_seen_at",
            "matched_recordings", "value_at_data_point"} <= set(person)
    truth = emu.ground_truth("persons")
    total = get(emu, "/api/projects/2/persons/?include_total=true").json()["count"]
    assert total == len(truth) == 150
    ids = [p["id"] for p in follow(emu, "/api/projects/2/persons/?limit=50")]
    assert ids == truth  # created_at DESC, id DESC
    full = get(emu, f"/api/projects/2/persons/?limit={total}").json()
    assert len(full["results"]) == total and full["next"], "a full page always gets a next"
    last = requests.get(full["next"], headers=auth(), timeout=10).json()
    assert last["results"] == [] and last["next"] is None


def test_property_definitions_by_type(emu):
    seen = []
    for ptype in ("event", "person", "session"):
        rows = follow(emu, f"/api/projects/2/property_definitions/?type={ptype}")
        assert len(rows) > 100
        seen += [[ptype, r["id"]] for r in rows]
    groups = follow(emu, "/api/projects/2/property_definitions/?type=group&group_type_index=0")
    seen += [["group", r["id"]] for r in groups]
    assert sorted(seen) == sorted(emu.ground_truth("property_definitions"))
    default = get(emu, "/api/projects/2/property_definitions/").json()["results"]
    assert [r["id"] for r in default] == [i for t, i in seen if t == "event"][:100]
    assert get(emu, "/api/projects/2/property_definitions/?type=group").status_code == 400
    assert get(emu, "/api/projects/2/property_definitions/?type=nope").json()["attr"] == "type"


def test_session_recordings_defaults_and_has_next(emu):
    body = get(emu, "/api/projects/2/session_recordings/").json()
    assert set(body) == {"results", "has_next", "version"} and body["version"] == 4
    assert len(body["results"]) == 50 and body["has_next"] is True
    starts = [r["start_time"] for r in body["results"]]
    assert starts == sorted(starts, reverse=True)
    window = []
    offset = 0
    while True:
        page = get(emu, f"/api/projects/2/session_recordings/?limit=40&offset={offset}").json()
        window += page["results"]
        if not page["has_next"]:
            break
        offset += 40
    three_days_ago = (datetime.now(timezone.utc) - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert window and all(r["start_time"] >= three_days_ago for r in window), "date_from defaults to -3d"
    assert any(r["ongoing"] for r in window)
    everything = get(emu, "/api/projects/2/session_recordings/?date_from=-400d&limit=1000").json()
    assert [r["id"] for r in everything["results"]] == emu.ground_truth("session_recordings")
    assert len(window) < len(everything["results"])
    iso_from = (BASE - timedelta(days=10)).strftime("%Y-%m-%dT%H:%M:%S")
    asc = get(emu, f"/api/projects/2/session_recordings/?date_from={iso_from}&order_direction=ASC&limit=500").json()
    asc_starts = [r["start_time"] for r in asc["results"]]
    assert asc_starts == sorted(asc_starts) and all(s >= iso_from for s in asc_starts)


# ------------------------------------------------------------------------------------------------
# legacy events list
# ------------------------------------------------------------------------------------------------


def test_legacy_events_defaults_and_item_shape(emu):
    body = get(emu, "/api/projects/2/events/").json()
    assert set(body) == {"next", "results"}
    rows = body["results"]
    assert len(rows) == 100 and body["next"]
    assert set(rows[0]) == {"id", "distinct_id", "properties", "event", "timestamp", "person", "elements",
                            "elements_chain"}
    assert isinstance(rows[0]["properties"], dict) and rows[0]["person"] is None
    assert all(ISO_OFFSET.match(r["timestamp"]) for r in rows)
    stamps = [r["timestamp"] for r in rows]
    assert stamps == sorted(stamps, reverse=True)  # default orderBy ["-timestamp"]
    q = parse_qs(urlsplit(body["next"]).query)
    assert q["before"] == [rows[-1]["timestamp"]]
    auto = [r for r in follow(emu, "/api/projects/2/events/?event=%24autocapture&limit=1000") if r["elements_chain"]]
    assert auto and auto[0]["elements"][0]["tag_name"]


def test_legacy_events_page_cap_and_offset_limit(emu):
    assert len(get(emu, "/api/projects/2/events/?limit=5000").json()["results"]) == 1000
    assert get(emu, "/api/projects/2/events/?offset=50000").status_code == 200
    r = get(emu, "/api/projects/2/events/?offset=50001")
    assert r.status_code == 400 and r.json()["type"] == "validation_error" and r.json()["attr"] == "offset"


def test_legacy_events_uncapped_when_configured(make_emu):
    e = make_emu(legacy_events_page_cap=None, legacy_events_max_offset=None)
    assert len(get(e, "/api/projects/2/events/?limit=5000").json()["results"]) == 400
    assert get(e, "/api/projects/2/events/?offset=60000").status_code == 200


def test_legacy_events_strict_bounds_lose_ties_at_the_page_edge(make_emu):
    e = make_emu()
    t0 = BASE - timedelta(minutes=10)  # after every generated event
    rows = [{"uuid": f"0190f6a2-0000-7000-8000-00000000000{i}", "event": "tie_test",
             "timestamp": (t0 + timedelta(seconds=s)).isoformat().replace("+00:00", "Z")}
            for i, s in enumerate((0, 1, 1, 1, 2))]
    e.add_events(rows)
    after = quote((t0 - timedelta(seconds=1)).isoformat())
    path = f"/api/projects/2/events/?event=tie_test&orderBy=%5B%22timestamp%22%5D&limit=2&after={after}"
    got = follow(e, path)
    assert {r["id"] for r in got} < {r["uuid"] for r in rows}, "rows sharing the boundary timestamp are skipped"
    assert [r["id"][-1] for r in got] == ["0", "1", "4"]
    first = get(e, path).json()
    assert parse_qs(urlsplit(first["next"]).query)["after"] == [(t0 + timedelta(seconds=1)).strftime(
        "%Y-%m-%dT%H:%M:%S.%f+00:00")]
    # strict after/before: an event exactly at the bound is excluded
    exact = get(e, f"/api/projects/2/events/?event=tie_test&after={quote(t0.isoformat())}&before="
                   f"{quote((t0 + timedelta(seconds=2)).isoformat())}").json()["results"]
    assert sorted(r["id"][-1] for r in exact) == ["1", "2", "3"]


# ------------------------------------------------------------------------------------------------
# HogQL
# ------------------------------------------------------------------------------------------------

QUERY_RESPONSE_FIELDS = {"results", "columns", "types", "hasMore", "limit", "offset", "query", "hogql", "clickhouse",
                         "timings", "error", "modifiers", "is_cached", "cache_key", "last_refresh", "timezone",
                         "query_status"}


def test_hogql_response_shape_and_types(emu):
    r = hog(emu, f"SELECT {EVENT_COLUMNS} FROM events ORDER BY timestamp, uuid LIMIT 5")
    assert r.status_code == 200, r.text
    body = r.json()
    assert QUERY_RESPONSE_FIELDS <= set(body)
    assert body["columns"] == EVENT_COLUMNS.split(", ")
    assert body["types"] == [["uuid", "UUID"], ["event", "String"], ["timestamp", "DateTime64(6, 'UTC')"],
                             ["distinct_id", "String"], ["properties", "String"], ["elements_chain", "String"],
                             ["person_id", "UUID"], ["created_at", "DateTime64(6, 'UTC')"]]
    row = body["results"][0]
    assert ISO_Z.match(row[2]) and ISO_Z.match(row[7])
    assert isinstance(row[4], str) and len(json.loads(row[4])) >= 30
    assert body["hasMore"] is False and body["limit"] == 5 and body["offset"] == 0
    assert body["error"] is None and body["timezone"] == "UTC"


def test_hogql_default_limit_and_cap(emu):
    body = hog(emu, "SELECT uuid FROM events ORDER BY timestamp").json()
    assert len(body["results"]) == 100 and body["hasMore"] is True and body["limit"] == 100
    capped = hog(emu, "SELECT uuid FROM events LIMIT 60000").json()
    assert capped["limit"] == 50_000 and len(capped["results"]) == 3000 and capped["hasMore"] is False
    assert hogql.compile_query("SELECT uuid FROM events LIMIT 999999", 2).params[-1] == 50_000


def test_hogql_keyset_pagination_returns_every_event_once_in_order(emu):
    truth = emu.ground_truth("events")
    start, end = BASE - timedelta(days=40), BASE
    seen, last = [], None
    while True:
        where = (f"timestamp >= toDateTime64('{ts(start)}', 6, 'UTC') AND timestamp < "
                 f"toDateTime64('{ts(end)}', 6, 'UTC')")
        if last:
            where += (f" AND (timestamp > toDateTime64('{last[0]}', 6, 'UTC') OR (timestamp = "
                      f"toDateTime64('{last[0]}', 6, 'UTC') AND uuid > toUUID('{last[1]}')))")
        body = hog(emu, f"SELECT {EVENT_COLUMNS} FROM events WHERE {where} ORDER BY timestamp ASC, uuid ASC "
                        "LIMIT 700").json()
        rows = body["results"]
        seen += [r[0] for r in rows]
        if len(rows) < 700:
            break
        last = (rows[-1][2].replace("T", " ").rstrip("Z"), rows[-1][0])
    assert seen == truth
    # row-value (tuple) comparisons work too
    mid = hog(emu, "SELECT timestamp, uuid FROM events ORDER BY timestamp, uuid LIMIT 1500").json()["results"][-1]
    rest = hog(emu, f"SELECT count() FROM events WHERE (timestamp, uuid) > ('{mid[0]}', '{mid[1]}')").json()
    assert rest["results"] == [[1500]]


def test_dataset_has_ties_and_late_events(emu):
    ties = hog(emu, "SELECT timestamp FROM events ORDER BY timestamp LIMIT 50000").json()["results"]
    stamps = [r[0] for r in ties]
    tied = len(stamps) - len(set(stamps))
    assert tied >= len(stamps) * 0.05
    rows = hog(emu, "SELECT timestamp, created_at FROM events LIMIT 50000").json()["results"]
    late = [r for r in rows if datetime.fromisoformat(r[1].replace("Z", "+00:00")) - datetime.fromisoformat(
        r[0].replace("Z", "+00:00")) > timedelta(hours=1)]
    assert 0 < len(late) < len(rows) * 0.05


@pytest.mark.parametrize("query", [
    "SELECT uuid FROM events LIMIT 10 OFFSET 10",
    "SELECT uuid FROM events OFFSET 5",
    "SELECT uuid FROM events LIMIT 5, 10",
])
def test_hogql_offset_refused(emu, query):
    r = hog(emu, query)
    assert r.status_code == 400
    assert r.json() == error_body("validation_error", "hogql_query_error", hogql.OFFSET_REFUSED)
    assert r.json()["detail"].startswith("OFFSET is not supported on queries made with a personal API key.")


@pytest.mark.parametrize("query,detail", [
    ("SELEC uuid FROM events", "mismatched input 'SELEC' expecting {SELECT, WITH, '{', '(', '<'}"),
    ("SELECT uuid FROM events WHERE", "no viable alternative at input 'SELECT uuid FROM events WHERE'"),
    ("SELECT uuid FROM events WHERE event = 'unterminated",
     "no viable alternative at input 'SELECT uuid FROM events WHERE event = ''"),
    ("SELECT uuid FROM events; DROP TABLE events", "mismatched input 'DROP' expecting <EOF>"),
    ("SELECT uuid FROM events ORDER BY", "no viable alternative at input 'SELECT uuid FROM events ORDER BY'"),
    ("SELECT uuid FROM events WHERE timestamp > 5 @ 3", "Unexpected character '@' (U+0040)"),
    ("", "mismatched input '<EOF>' expecting {SELECT, WITH, '{', '(', '<'}"),
])
def test_hogql_syntax_errors_are_posthogs_400(emu, query, detail):
    """PostHog's parser's message, as ValidationError(str(e), "hogql_syntax_error") (posthog/api/query.py)."""
    r = hog(emu, query)

    assert r.status_code == 400, r.text
    assert r.json() == error_body("validation_error", "hogql_syntax_error", detail)


@pytest.mark.parametrize("query,code", [
    ("SELECT nope FROM events", "hogql_query_error"),
    ("SELECT uuid FROM nope", "hogql_query_error"),
    ("SELECT uuid FROM events WHERE timestamp > 'not a date'", "cannot_parse_datetime"),
    ("SELECT uuid FROM events WHERE uuid = toUUID('xyz')", "cannot_parse_uuid"),
    ("SELECT uuid FROM events WHERE event = 42", "illegal_type_of_argument"),
    ("SELECT uuid, count() FROM events", "not_an_aggregate"),
    ("SELECT uuid FROM events WHERE toDateTime64('2024-01-01', 6, 'Mars/Base') < timestamp", "bad_arguments"),
    ("SELECT {missing} FROM events", "hogql_query_error"),
    # accepted by PostHog, not evaluated here: a clear 400 that says so
    ("SELECT uuid FROM events LIMIT -1", "emulator_not_supported"),
    ("SELECT uuid FROM events GROUP BY uuid", "emulator_not_supported"),
    ("SELECT properties.$browser FROM events", "emulator_not_supported"),
    ("SELECT sleep(3) FROM events", "emulator_not_supported"),
    ("SELECT uuid FROM events e JOIN persons p ON e.person_id = p.id", "emulator_not_supported"),
    ("SELECT key FROM groups", "emulator_not_supported"),
])
def test_hogql_malformed_is_a_clear_400(emu, query, code):
    r = hog(emu, query)
    assert r.status_code == 400, r.text
    body = r.json()
    assert set(body) == {"type", "code", "detail", "attr"}
    assert body["type"] == "validation_error" and body["code"] == code and body["detail"] and body["attr"] is None
    assert ("is not supported by this emulator" in body["detail"]) == (code == "emulator_not_supported")


def test_hogql_resolution_errors_are_posthogs_wording(emu):
    """QueryError (code hogql_query_error): posthog/hogql/resolver.py, database.py, placeholders.py."""
    assert hog(emu, "SELECT nope FROM events").json()["detail"] == "Unable to resolve field: nope"
    assert hog(emu, "SELECT uuid FROM nope").json()["detail"] == "Unknown table `nope`."
    assert hog(emu, "SELECT {missing} FROM events").json()["detail"] == "Unresolved placeholder: {missing}"
    assert hog(emu, "SELECT uuid FROM events WHERE event = {missing}", values={"name": "x", "other": 1}).json()["detail"] == \
        "Placeholder {missing} is not available in this context. You can use the following: name, other"


def test_hogql_internal_parser_error_is_a_500(emu):
    """The parser's NotImplementedError (e.g. SETTINGS) is an InternalHogQLError: posthog/api/query.py does not
    turn it into a ValidationError, so drf-exceptions-hog answers its default server error."""
    r = hog(emu, "SELECT uuid FROM events SETTINGS max_threads = 1")

    assert r.status_code == 500
    assert r.json() == error_body("server_error", "error", "A server error occurred.")


def test_query_request_validation(emu):
    url = emu.url + "/api/projects/2/query/"
    r = requests.post(url, headers=auth(), json={"query": {"kind": "TrendsQuery", "series": []}}, timeout=10)
    assert r.status_code == 400 and r.json()["type"] == "validation_error"
    assert requests.post(url, headers=auth(), json={"nope": 1}, timeout=10).status_code == 400
    assert requests.post(url, headers={**auth(), "Content-Type": "application/json"}, data=b"{not json",
                         timeout=10).status_code == 400
    assert requests.get(url, headers=auth(), timeout=10).status_code == 405


def test_hogql_placeholders_and_persons_table(emu):
    event = hog(emu, "sElEcT event FrOm events WhErE event != '' oRdEr By timestamp DeSc LiMiT 1").json()["results"][0][0]
    n = hog(emu, "SELECT count() FROM events WHERE event = {name}", values={"name": event}).json()["results"][0][0]
    assert n > 0
    persons = hog(emu, "SELECT id, created_at, properties, is_identified FROM persons ORDER BY created_at DESC, id DESC "
                       "LIMIT 1000").json()
    assert [r[0] for r in persons["results"]] == emu.ground_truth("persons")
    assert isinstance(persons["results"][0][3], bool) and persons["types"][3] == ["is_identified", "Bool"]


HOSTILE = ["it's", "back\\slash", "'; DROP TABLE events; --", "quote'' twice", "\\'; SELECT 1; --", "tab\there"]


def _hogql_string(value: str, style: str) -> str:
    if style == "backslash":
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


@pytest.mark.parametrize("style", ["backslash", "doubled"])
def test_hostile_string_literals_cannot_change_a_query(make_emu, style):
    e = make_emu()
    when = (BASE - timedelta(minutes=5)).isoformat()
    uuids = e.add_events([{"event": name, "timestamp": when} for name in HOSTILE])
    total = len(e.ground_truth("events"))
    for name, uuid in zip(HOSTILE, uuids):
        r = hog(e, f"SELECT uuid, event FROM events WHERE event = {_hogql_string(name, style)}")
        assert r.status_code == 200, r.text
        assert r.json()["results"] == [[uuid, name]]
    for probe in ("' OR 1=1 --", "x' OR 'a'='a", "\\' OR 1=1 --"):
        r = hog(e, f"SELECT uuid FROM events WHERE event = {_hogql_string(probe, style)}")
        assert r.status_code == 200 and r.json()["results"] == []
    # raw injection attempts outside a correctly quoted literal are syntax errors, not extra statements
    assert hog(e, "SELECT uuid FROM events WHERE event = ''; DROP TABLE events; --'").status_code == 400
    assert len(e.ground_truth("events")) == total


# ------------------------------------------------------------------------------------------------
# auth and errors
# ------------------------------------------------------------------------------------------------


def test_auth_errors_exact_bodies(emu):
    r = requests.get(emu.url + "/api/projects/2/persons/", timeout=10)
    assert r.status_code == 401
    assert r.json() == error_body("authentication_error", "not_authenticated",
                                  "Authentication credentials were not provided.")
    r = requests.get(emu.url + "/api/projects/2/persons/", headers={"Authorization": "Bearer phx_wrong"}, timeout=10)
    assert r.status_code == 401
    assert r.json() == error_body("authentication_error", "authentication_failed",
                                  "Personal API key found in request Authorization header is invalid.")
    assert requests.get(emu.url + f"/api/projects/2/persons/?personal_api_key={KEYS['all_access']}",
                        timeout=10).status_code == 200
    r = get(emu, "/api/projects/", key="project_scoped")
    assert r.status_code == 403
    assert r.json() == error_body("authentication_error", "permission_denied",
                                  "API keys with scoped projects are only supported on project-based views.")
    assert get(emu, "/api/projects/2/", key="project_scoped").status_code == 200
    assert get(emu, "/api/projects/2/persons/", key="project_scoped").status_code == 200
    assert get(emu, "/api/projects/3/persons/", key="project_scoped").status_code == 403
    r = get(emu, "/api/projects/2/persons/", key="other_project")
    assert r.status_code == 403
    assert r.json() == error_body("authentication_error", "permission_denied",
                                  "API key does not have access to the requested project: ID 2.")
    r = hog(emu, "SELECT 1", key="no_query")
    assert r.status_code == 403
    assert r.json() == error_body("authentication_error", "permission_denied",
                                  "API key missing required scope 'query:read'")
    assert get(emu, "/api/projects/2/events/", key="no_query").json()["detail"] == \
        "API key missing required scope 'query:read'"
    assert get(emu, "/api/projects/2/persons/", key="no_persons").json()["detail"] == \
        "API key missing required scope 'person:read'"
    assert get(emu, "/api/projects/2/cohorts/", key="no_persons").status_code == 200


def test_not_found_bodies(emu):
    r = get(emu, "/api/projects/999/persons/")
    assert r.status_code == 404
    assert r.json() == error_body("invalid_request", "not_found", "Not found.")
    r = get(emu, "/api/projects/abc/persons/")
    assert r.status_code == 404 and r.json()["detail"] == "Project not found."
    assert get(emu, "/api/projects/2/nothing_here/").status_code == 404
    assert get(emu, "/api/projects/2/cohorts/999999/").status_code == 404
    cohort = get(emu, "/api/projects/2/cohorts/?limit=1").json()["results"][0]
    assert get(emu, f"/api/projects/2/cohorts/{cohort['id']}/").json() == cohort


def test_project_3_has_a_handful_of_rows_and_no_events(emu):
    assert hog(emu, "SELECT count() FROM events", path="/api/projects/3/query/").json()["results"] == [[0]]
    for resource in ("cohorts", "feature_flags", "insights", "event_definitions"):
        assert 0 < get(emu, f"/api/projects/3/{resource}/").json()["count"] < 10
    assert 0 < len(get(emu, "/api/projects/3/persons/").json()["results"]) < 10


# ------------------------------------------------------------------------------------------------
# rate limits
# ------------------------------------------------------------------------------------------------


def test_rate_limit_windows_and_retry_after(make_emu):
    e = make_emu(rate_limits=True)
    s = requests.Session()
    statuses = [s.get(e.url + "/api/projects/2/persons/?limit=1", headers=auth(), timeout=10) for _ in range(241)]
    assert [r.status_code for r in statuses[:240]] == [200] * 240
    last = statuses[-1]
    assert last.status_code == 429
    wait = int(last.headers["Retry-After"])
    assert 55 <= wait <= 60
    assert last.json() == error_body("throttled_error", "throttled",
                                     f"Request was throttled. Expected available in {wait} seconds.")
    assert s.get(e.url + "/api/projects/2/persons/", headers=auth("no_query"), timeout=10).status_code == 200, \
        "limits are per key"
    assert s.get(e.url + "/api/projects/2/cohorts/", headers=auth(), timeout=10).status_code == 200, \
        "and per endpoint class"
    e.set_rate_limits(enabled=False)
    assert s.get(e.url + "/api/projects/2/persons/", headers=auth(), timeout=10).status_code == 200


def test_rate_scale_divides_windows_and_retry_after():
    limiter = RateLimiter(enabled=True, scale=600)  # a minute lasts 0.1 s, an hour 6 s
    for _ in range(240):
        limiter.check("k", "query")
    with pytest.raises(Throttled) as exc:
        limiter.check("k", "query")
    assert exc.value.wait == 1 and exc.value.detail == "Request was throttled. Expected available in 1 second."
    time.sleep(0.12)
    limiter.check("k", "query")  # the scaled minute has passed
    hourly = RateLimiter(enabled=True, scale=1)
    for _ in range(240):
        hourly.check("k", "query")
    with pytest.raises(Throttled) as exc:
        hourly.check("k", "query")
    assert 59 <= exc.value.wait <= 60


def test_query_concurrency_limit_has_no_retry_after(make_emu):
    e = make_emu(rate_limits=True, query_latency=0.6, query_queue_timeout=0.2)
    results = []

    def run():
        results.append(hog(e, "SELECT count() FROM events"))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.status_code for r in results)
    assert codes == [200, 200, 200, 429]
    refused = next(r for r in results if r.status_code == 429)
    assert "Retry-After" not in refused.headers
    body = refused.json()
    assert body["type"] == "throttled_error" and body["code"] == "throttled"
    assert body["detail"].startswith("Exceeded maximum concurrency limit: 3 for key: api:query:per-team:2")


# ------------------------------------------------------------------------------------------------
# faults
# ------------------------------------------------------------------------------------------------


def _fault_run(e, n):
    s = requests.Session()
    outcomes = []
    for _ in range(n):
        try:
            r = s.get(e.url + "/api/projects/2/cohorts/?limit=20", headers=auth(), timeout=10)
            outcomes.append(r.status_code)
        except requests.exceptions.ChunkedEncodingError:
            outcomes.append("truncated")
            s = requests.Session()
        except requests.exceptions.ConnectionError:
            outcomes.append("reset")
            s = requests.Session()
    return outcomes


def test_faults_fire_at_seeded_rates(make_emu):
    rates = {"500": 0.1, "502": 0.1, "429": 0.1, "reset": 0.05, "truncate": 0.05}
    e = make_emu(faults=FaultConfig(rates, seed=11))
    n = 600
    outcomes = _fault_run(e, n)
    log = e.requests()
    assert len(log) == n
    for kind, rate in rates.items():
        count = sum(1 for entry in log if entry["fault"] == kind)
        assert abs(count / n - rate) < 0.05, (kind, count)
    expected = {"500": 500, "502": 502, "429": 429, "reset": "reset", "truncate": "truncated", None: 200}
    assert outcomes == [expected[entry["fault"]] for entry in log]
    first_sequence = [entry["fault"] for entry in log]
    e.clear_requests()
    e.set_faults(FaultConfig(rates, seed=11))
    _fault_run(e, n)
    assert [entry["fault"] for entry in e.requests()] == first_sequence, "same seed, same faults"
    throttled = [r for r in log if r["fault"] == "429"]
    assert throttled


def test_fault_bodies_and_headers(make_emu):
    e = make_emu()
    e.set_faults(FaultConfig({"429": 1.0}))
    r = get(e, "/api/projects/2/cohorts/")
    assert r.status_code == 429 and r.headers["Retry-After"] == "1" and r.json()["code"] == "throttled"
    e.set_faults(FaultConfig({"502": 1.0}))
    r = get(e, "/api/projects/2/cohorts/")
    assert r.status_code == 502 and "Bad Gateway" in r.text
    e.set_faults(FaultConfig({"500": 1.0}))
    assert get(e, "/api/projects/2/cohorts/").json()["type"] == "server_error"
    assert requests.get(e.url + "/_emulator/health", timeout=10).status_code == 200, "control API never faulted"


def test_truncate_really_truncates(make_emu):
    e = make_emu(faults=FaultConfig({"truncate": 1.0}))
    port = int(e.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET /api/projects/2/cohorts/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                     f"{KEYS['all_access']}\r\n\r\n".encode())
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
    assert head.startswith(b"HTTP/1.1 200") and 0 < len(body) < length and abs(len(body) - length / 2) <= 1


def test_reset_and_slow(make_emu):
    e = make_emu(faults=FaultConfig({"reset": 1.0}))
    with pytest.raises(requests.exceptions.ConnectionError):
        get(e, "/api/projects/2/cohorts/")
    e.set_faults(FaultConfig({"slow": 1.0}, slow_seconds=0.5))
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(e.url + "/api/projects/2/cohorts/", headers=auth(), timeout=0.2)
    started = time.monotonic()
    assert requests.get(e.url + "/api/projects/2/cohorts/", headers=auth(), timeout=5).status_code == 200
    assert time.monotonic() - started >= 0.5
    assert [x["fault"] for x in e.requests()] == ["reset", "slow", "slow"]


# ------------------------------------------------------------------------------------------------
# request log, mutations, determinism, process mode
# ------------------------------------------------------------------------------------------------


def test_request_log(make_emu):
    e = make_emu()
    get(e, "/api/projects/2/cohorts/?limit=7")
    hog(e, "SELECT uuid FROM events LIMIT 3")
    e.ground_truth("cohorts")  # control API: not logged
    log = e.requests()
    assert [x["path"] for x in log] == ["/api/projects/2/cohorts/", "/api/projects/2/query/"]
    first = log[0]
    assert {"t", "method", "path", "query", "status", "fault", "endpoint_class", "rows"} <= set(first)
    assert first["query"] == {"limit": "7"} and first["rows"] == 7 and first["endpoint_class"] == "crud"
    assert log[1]["endpoint_class"] == "query" and log[1]["rows"] == 3 and "LIMIT 3" in log[1]["hogql"]
    e.clear_requests()
    assert e.requests() == []


def test_mutate_changes_ground_truth(make_emu):
    e = make_emu()
    before = e.ground_truth()
    max_before = hog(e, "SELECT timestamp FROM events ORDER BY timestamp DESC LIMIT 1").json()["results"][0][0]
    started = datetime.now(timezone.utc)
    change = e.mutate(new_events=30, late_events=10, late_events_max_age_days=3, new_annotations=2,
                      updated_annotations=3, new_session_recordings=4, grow_ongoing_recordings=True, new_persons=5)
    after = e.ground_truth()
    assert len(change["events"]["new"]) == 30 and len(change["events"]["late"]) == 10
    assert set(after["events"]) == set(before["events"]) | set(change["events"]["new"]) | set(change["events"]["late"])
    assert set(after["persons"]) == set(before["persons"]) | set(change["persons"]["new"])
    assert set(after["annotations"]) == set(before["annotations"]) | set(change["annotations"]["new"])
    assert set(after["session_recordings"]) == set(before["session_recordings"]) | set(change["session_recordings"]["new"])
    assert change["session_recordings"]["updated"]

    ids = ", ".join(f"'{u}'" for u in change["events"]["new"])
    rows = hog(e, f"SELECT timestamp, created_at FROM events WHERE uuid IN ({ids}) LIMIT 100").json()["results"]
    five_min_ago = (datetime.now(timezone.utc) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert all(max_before < r[0] <= five_min_ago for r in rows)
    assert all(r[1] >= started.strftime("%Y-%m-%dT%H:%M:%S") for r in rows), "created_at = now"
    ids = ", ".join(f"'{u}'" for u in change["events"]["late"])
    late = hog(e, f"SELECT timestamp, created_at FROM events WHERE uuid IN ({ids}) LIMIT 100").json()["results"]
    oldest = (started - timedelta(days=3, minutes=1)).strftime("%Y-%m-%dT%H:%M:%S")
    assert all(oldest <= r[0] < max_before for r in late)

    annotations = {a["id"]: a for a in follow(e, "/api/projects/2/annotations/")}
    for aid in change["annotations"]["updated"]:
        assert annotations[aid]["updated_at"] >= started.strftime("%Y-%m-%dT%H:%M:%S")
    recordings = {r["id"]: r for r in get(e, "/api/projects/2/session_recordings/?limit=500").json()["results"]}
    for rid in change["session_recordings"]["new"]:
        assert rid in recordings
    old = {r["id"]: r for r in get(make_emu(), "/api/projects/2/session_recordings/?limit=500").json()["results"]}
    for rid in change["session_recordings"]["updated"]:
        assert recordings[rid]["start_time"] == old[rid]["start_time"]
        assert recordings[rid]["end_time"] > old[rid]["end_time"]
        assert recordings[rid]["recording_duration"] > old[rid]["recording_duration"]


def test_mutations_never_touch_the_cache(make_emu):
    e = make_emu()
    e.mutate(new_events=5)
    fresh = make_emu()
    assert len(fresh.ground_truth("events")) == 400


def test_determinism(tmp_path):
    params = DataParams(500, 9, BASE, 30.0)
    a, b = Store(params, tmp_path / "a"), Store(params, tmp_path / "b")
    other = Store(DataParams(500, 10, BASE, 30.0), tmp_path / "c")
    try:
        assert a.generated and b.generated
        assert a.ground_truth() == b.ground_truth()
        with a.read() as ca, b.read() as cb:
            sql = "SELECT * FROM events ORDER BY timestamp, uuid"
            assert ca.execute(sql).fetchall() == cb.execute(sql).fetchall()
        assert a.ground_truth("events") != other.ground_truth("events")
        again = Store(params, tmp_path / "a")
        assert not again.generated, "second start with the same parameters reuses the cache"
        again.close()
    finally:
        for s in (a, b, other):
            s.close()


def test_process_mode(data_dir):
    cfg = EmulatorConfig(events=300, seed=4, base_time=BASE, data_dir=data_dir,
                         faults=FaultConfig({"500": 0.5}, seed=1))
    with EmulatorProcess(cfg) as proc, EmulatorServer(cfg) as local:
        assert proc.url.startswith("http://127.0.0.1:")
        assert proc.health()["status"] == "ok"
        assert proc.ground_truth() == local.ground_truth()
        codes = [get(proc, "/api/projects/2/cohorts/").status_code for _ in range(20)]
        assert set(codes) == {200, 500}
        proc.set_faults(None)
        assert get(proc, "/api/projects/2/cohorts/").status_code == 200
        change = proc.mutate(new_events=3)
        assert set(change["events"]["new"]) <= set(proc.ground_truth("events"))
        assert len(proc.requests()) == 21


# -- the HogQL `sessions` table (computed from the events' `$session_id`) ----------------------------

SESSION_QUERY = ("SELECT session_id, distinct_id, `$start_timestamp`, `$end_timestamp`, `$entry_current_url`, `$end_current_url`, "
                 "`$pageview_count`, `$autocapture_count`, `$screen_count`, `$session_duration`, `$is_bounce`, `$channel_type` "
                 "FROM sessions ORDER BY `$start_timestamp` ASC, session_id ASC LIMIT 50000")


def _sessions_from_events(e) -> dict:
    """The sessions recomputed here, in Python, from the events the emulator serves."""
    r = hog(e, "SELECT uuid, event, timestamp, distinct_id, properties FROM events ORDER BY timestamp, uuid LIMIT 50000")
    assert r.status_code == 200, r.text
    out: dict = {}
    for uid, event, stamp, distinct_id, properties in r.json()["results"]:
        props = json.loads(properties)
        out.setdefault(props["$session_id"], []).append((stamp, uid, event, distinct_id, props))
    expected = {}
    for sid, rows in out.items():
        rows.sort(key=lambda row: (row[0], row[1]))
        first, last = rows[0], rows[-1]
        start, end = (datetime.fromisoformat(row[0].replace("Z", "+00:00")) for row in (first, last))
        duration = int(end.replace(microsecond=0).timestamp() - start.replace(microsecond=0).timestamp())
        pages = sum(row[2] in ("$pageview", "$screen") for row in rows)
        autocaptures = sum(row[2] == "$autocapture" for row in rows)
        bounce = None if pages == 0 else not (pages > 1 or autocaptures > 0 or duration >= 10)
        channel = {"$direct": "Direct", "www.google.com": "Organic Search", "t.co": "Organic Social"}.get(first[4]["$referring_domain"], "Referral")
        expected[sid] = [sid, last[3], first[0], last[0], first[4]["$current_url"], last[4]["$current_url"],
                         sum(row[2] == "$pageview" for row in rows), autocaptures, sum(row[2] == "$screen" for row in rows),
                         duration, bounce, channel]
    return expected


def test_sessions_table_aggregates_the_events_of_each_session(emu):
    r = hog(emu, SESSION_QUERY)

    assert r.status_code == 200, r.text
    body = r.json()
    assert body["columns"][:4] == ["session_id", "distinct_id", "$start_timestamp", "$end_timestamp"]
    assert dict(map(tuple, body["types"]))["$start_timestamp"] == "DateTime64(6, 'UTC')"
    rows = body["results"]
    assert [row[0] for row in rows] == emu.ground_truth("sessions")
    assert {row[0]: row for row in rows} == _sessions_from_events(emu)
    assert any(row[6] > 1 for row in rows) and {row[11] for row in rows} >= {"Direct", "Organic Search"}


@pytest.mark.parametrize("column", ["`$start_timestamp`", '"$start_timestamp"', "$start_timestamp"])
def test_sessions_dollar_columns_take_backticks_double_quotes_or_no_quotes(emu, column):
    r = hog(emu, f"SELECT session_id, {column} FROM sessions WHERE {column} >= toDateTime64('2000-01-01 00:00:00.000000', 6, 'UTC') "
                 f"ORDER BY {column} ASC, session_id ASC LIMIT 5")

    assert r.status_code == 200, r.text
    assert r.json()["columns"] == ["session_id", "$start_timestamp"] and len(r.json()["results"]) == 5


def test_sessions_keyset_pages_return_every_session_once(emu):
    seen, after = [], None
    while True:
        key = "" if after is None else (f" AND (`$start_timestamp` > toDateTime64('{after[0][:-1].replace('T', ' ')}', 6, 'UTC') OR "
                                        f"(`$start_timestamp` = toDateTime64('{after[0][:-1].replace('T', ' ')}', 6, 'UTC') AND session_id > '{after[1]}'))")
        r = hog(emu, "SELECT session_id, `$start_timestamp` FROM sessions WHERE `$start_timestamp` >= toDateTime64('2000-01-01 00:00:00', 6, 'UTC')"
                     f"{key} ORDER BY `$start_timestamp` ASC, session_id ASC LIMIT 500")
        assert r.status_code == 200, r.text
        rows = r.json()["results"]
        seen += [row[0] for row in rows]
        if len(rows) < 500:
            break
        after = (rows[-1][1], rows[-1][0])
    assert seen == emu.ground_truth("sessions")


def test_sessions_unknown_column_is_a_resolution_error(emu):
    r = hog(emu, "SELECT `$no_such_field` FROM sessions LIMIT 1")

    assert r.status_code == 400 and "Unable to resolve field: $no_such_field" in r.json()["detail"]


def test_sessions_follow_the_visible_events_and_grow_with_mutations(make_emu):
    e = make_emu(events=400, seed=5, base_time=datetime.now(timezone.utc).replace(second=0, microsecond=0))
    before = set(e.ground_truth("sessions"))

    changes = e.mutate(new_sessions=2, grow_ongoing_sessions=True)

    sessions = changes["sessions"]
    assert len(sessions["new"]) == 2 and not sessions["by_late_events"] and set(sessions["new"]).isdisjoint(before)
    assert set(sessions["updated"]) <= before
    rows = {row[0]: row for row in hog(e, SESSION_QUERY).json()["results"]}
    for sid, final in sessions["final"].items():
        assert (rows[sid][2], rows[sid][3]) == (final["$start_timestamp"], final["$end_timestamp"])
    hidden = e.mutate(new_sessions=1, visibility_delay_seconds=3600)["sessions"]["new"]
    visible = {row[0] for row in hog(e, SESSION_QUERY).json()["results"]}
    assert not set(hidden) & visible and set(hidden) <= set(e.ground_truth("sessions"))
    assert not set(hidden) & set(e.ground_truth("sessions", visible_only=True))
