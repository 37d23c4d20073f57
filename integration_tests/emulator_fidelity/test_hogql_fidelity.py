"""The emulator's HogQL against PostHog's facts (issue #17; tools/emulator/README.md "HogQL"): PostHog's
parser on every query, ClickHouse's UUID order, the sessions table versions and ``max_inserted_at``,
the precision PostHog stores timestamps with, and the cohort tables.

Fast by design (small datasets). Run with:
    python -m pytest integration_tests/emulator_fidelity/test_hogql_fidelity.py -q
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
import requests

from tools.emulator import PROJECT_ID, EmulatorConfig, EmulatorServer
from tools.emulator import hogql
from unit_tests.support import posthog_parser
from tools.emulator.__main__ import config_from_args, parse_args
from tools.emulator.data import uuid_order_key
from tools.emulator.keys import SECOND_PROJECT_ID
from integration_tests.emulator_fidelity.test_emulator import auth, error_body, hog

BASE = datetime(2026, 11, 2, tzinfo=timezone.utc)
REPO = Path(__file__).resolve().parents[2]
# ClickHouse 26.9 (chDB 4.4), ORDER BY on a UUID column: the first comes before the second.
CH_FIRST, CH_SECOND = "ffffffff-0000-0000-0000-000000000000", "00000000-0000-0000-ffff-000000000000"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("emulator-cache")


@pytest.fixture(scope="module")
def emu(data_dir):
    """A shared, read-only server (project 3 opted into sessions v3)."""
    config = EmulatorConfig(events=1500, seed=13, base_time=BASE, data_dir=data_dir,
                            project_sessions_table_versions={SECOND_PROJECT_ID: "v3"})
    with EmulatorServer(config) as e:
        yield e


def ok(response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def ts(value: str) -> str:
    """A HogQL result DateTime → the toDateTime64 literal text."""
    return value.replace("T", " ").rstrip("Z")


def dt(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# ------------------------------------------------------------------------------------------------
# 1. PostHog's parser on every query
# ------------------------------------------------------------------------------------------------


def test_a_parse_error_is_posthogs_400_and_the_request_log_names_the_parser(emu):
    emu.clear_requests()
    r = hog(emu, "SELEC uuid FROM events")

    assert r.status_code == 400
    assert r.json() == {"type": "validation_error", "code": "hogql_syntax_error",
                        "detail": "mismatched input 'SELEC' expecting {SELECT, WITH, '{', '(', '<'}", "attr": None}
    assert emu.requests()[-1]["parser"] == posthog_parser.PARSER and posthog_parser.PARSER.startswith("hogql-parser ")
    assert Path(posthog_parser.hogql_parser.__file__).name.startswith("hogql_parser.")  # the PyPI package's extension


def test_what_posthogs_parser_accepts_but_the_emulator_cannot_evaluate_says_so(emu):
    for query in ("SELECT uuid FROM events UNION ALL SELECT uuid FROM events", "SELECT DISTINCT event FROM events",
                  "SELECT x FROM (SELECT uuid AS x FROM events)", "SELECT uuid FROM events WHERE event LIKE '$page%'",
                  "SELECT uuid FROM events WHERE timestamp > now() - INTERVAL 1 DAY", "SELECT * FROM sessions"):
        body = hog(emu, query).json()
        assert body["code"] == "emulator_not_supported" and body["detail"].endswith("is not supported by this emulator"), query


CONNECTOR_SHAPES = [
    "SELECT uuid, event, timestamp, distinct_id, properties, elements_chain, person_id, created_at FROM events WHERE "
    "timestamp >= toDateTime64('2026-10-01 00:00:00.000000', 6, 'UTC') AND timestamp < toDateTime64('2026-10-02 00:00:00.000000', 6, 'UTC') "
    "AND (timestamp > toDateTime64('2026-10-01 10:00:00.123456', 6, 'UTC') OR (timestamp = toDateTime64('2026-10-01 10:00:00.123456', 6, 'UTC') "
    "AND uuid > toUUID('01a0f9e9-2000-77cd-8885-0000008857cd'))) ORDER BY timestamp ASC, uuid ASC LIMIT 10000",
    "SELECT person_id, distinct_id FROM person_distinct_ids WHERE person_id > toUUID('01a0f9e9-2000-77cd-8885-0000008857cd') "
    "AND (person_id > toUUID('01a0f9e9-2000-77cd-8885-0000008857cd') OR (person_id = toUUID('01a0f9e9-2000-77cd-8885-0000008857cd') "
    "AND distinct_id > 'it\\'s a ''quote''')) ORDER BY person_id ASC, distinct_id ASC LIMIT 50000",
    "SELECT uuid FROM events WHERE event = '' AND distinct_id = '\\\\' AND event != 'a\\nb'",
    "SELECT `it's`, \"q'\" FROM events WHERE event = 'x' -- 'a comment'",
    "SELECT uuid FROM events WHERE event = '__emu_literal_0__'",
]


@pytest.mark.parametrize("query", CONNECTOR_SHAPES)
def test_parsing_once_per_shape_gives_the_ast_posthogs_parser_gives_the_text(query):
    def positions_dropped(node):
        if isinstance(node, dict):
            return {k: positions_dropped(v) for k, v in node.items() if k not in ("start", "end")}
        return [positions_dropped(x) for x in node] if isinstance(node, list) else node

    as_written = positions_dropped(orjson.loads(posthog_parser.hogql_parser.parse_select_json(query)))

    assert positions_dropped(posthog_parser.parse_select(query)) == as_written
    assert positions_dropped(posthog_parser.parse_select(query)) == as_written  # from the shape cache


def test_an_importable_posthog_package_is_left_alone(tmp_path):
    """PostHog's Python SDK is also called `posthog`: only the missing posthog.hogql modules are added."""
    (tmp_path / "posthog").mkdir()
    (tmp_path / "posthog" / "__init__.py").write_text("SDK = 'the analytics SDK'\n")
    script = textwrap.dedent("""
        import sys
        from unit_tests.support import posthog_parser
        import posthog
        assert posthog.SDK == 'the analytics SDK', posthog
        assert sys.modules['posthog.hogql.errors'].SyntaxError.code_name == 'hogql_syntax_error'
        print(posthog_parser.parse_select('SELECT 1')['node'])
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=REPO, timeout=60)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "SelectQuery"


# ------------------------------------------------------------------------------------------------
# 2. ClickHouse's UUID order
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def uuid_events(make_emu):
    """A server with 12 events at one timestamp whose UUIDs sort differently as text and as ClickHouse UUIDs."""
    e = make_emu(events=200, seed=21, base_time=BASE)
    at = "2026-10-20T12:00:00.000000Z"
    uuids = [CH_FIRST, CH_SECOND] + [f"{a:08x}-0000-7000-{b:04x}-000000000000" for a, b in
                                     ((1, 0x9000), (2, 0x8000), (3, 0xb000), (0xf0, 0x8000), (0x0f, 0xa000), (5, 0x8001),
                                      (4, 0x9000), (0xee, 0x8000), (6, 0xa000), (7, 0xb000))]
    e.add_events([{"uuid": u, "event": "tie", "timestamp": at} for u in uuids])
    return e, at, uuids


def test_order_by_uuid_is_clickhouses_order(uuid_events):
    e, at, uuids = uuid_events
    rows = ok(hog(e, "SELECT uuid FROM events WHERE event = 'tie' ORDER BY uuid ASC"))["results"]
    desc = ok(hog(e, "SELECT uuid FROM events WHERE event = 'tie' ORDER BY uuid DESC"))["results"]

    assert [r[0] for r in rows] == sorted(uuids, key=uuid_order_key) != sorted(uuids)
    assert [r[0] for r in rows].index(CH_FIRST) < [r[0] for r in rows].index(CH_SECOND)
    assert [r[0] for r in desc] == [r[0] for r in rows][::-1]


def test_uuid_comparisons_equality_and_tuples_follow_clickhouses_order(uuid_events):
    e, at, uuids = uuid_events

    def ids(where):
        return {r[0] for r in ok(hog(e, f"SELECT uuid FROM events WHERE event = 'tie' AND {where} LIMIT 100"))["results"]}

    assert CH_SECOND in ids(f"uuid > toUUID('{CH_FIRST}')") and CH_FIRST not in ids(f"uuid >= toUUID('{CH_SECOND}')")
    assert CH_FIRST in ids(f"uuid < toUUID('{CH_SECOND}')") and CH_FIRST in ids(f"uuid <= '{CH_FIRST}'")
    assert ids(f"uuid = toUUID('{CH_SECOND.upper()}')") == {CH_SECOND}
    assert ids(f"uuid != toUUID('{CH_SECOND}')") == set(uuids) - {CH_SECOND}
    after = f"(timestamp, uuid) > (toDateTime64('{ts(at)}', 6, 'UTC'), toUUID('{CH_FIRST}'))"
    assert ids(after) == {u for u in uuids if uuid_order_key(u) > uuid_order_key(CH_FIRST)}
    assert CH_SECOND in ids(after) and ids(after) != {u for u in uuids if u > CH_FIRST}


@pytest.mark.parametrize("form", ["or", "tuple"])
def test_a_keyset_walk_over_uuids_in_another_text_order_returns_each_once_in_clickhouses_order(uuid_events, form):
    e, at, uuids = uuid_events
    at_sql = f"toDateTime64('{ts(at)}', 6, 'UTC')"
    seen, last = [], None
    while True:
        where = f"timestamp = {at_sql}"
        if last and form == "or":
            where += f" AND (timestamp > {at_sql} OR (timestamp = {at_sql} AND uuid > toUUID('{last}')))"
        elif last:
            where += f" AND (timestamp, uuid) > ({at_sql}, toUUID('{last}'))"
        page = [r[0] for r in ok(hog(e, f"SELECT uuid FROM events WHERE {where} ORDER BY timestamp, uuid LIMIT 3"))["results"]]
        seen += page
        if len(page) < 3:
            break
        last = page[-1]

    assert seen == sorted(uuids, key=uuid_order_key)


def test_persons_and_distinct_ids_page_in_clickhouses_uuid_order_and_the_ground_truth_follows_it(emu):
    persons = [r[0] for r in ok(hog(emu, "SELECT id FROM persons ORDER BY id LIMIT 1000"))["results"]]
    assert persons == sorted(persons, key=uuid_order_key) != sorted(persons)
    assert [p["id"] for p in emu.app.store.person_records()] == persons
    middle = persons[len(persons) // 2]
    after = [r[0] for r in ok(hog(emu, f"SELECT id FROM persons WHERE id > toUUID('{middle}') ORDER BY id LIMIT 1000"))["results"]]
    assert after == persons[len(persons) // 2 + 1:]
    pairs = ok(hog(emu, f"SELECT person_id, distinct_id FROM person_distinct_ids WHERE person_id <= toUUID('{middle}') "
                        "ORDER BY person_id, distinct_id LIMIT 50000"))["results"]
    assert [p for p, _ in pairs] == sorted((p for p, _ in pairs), key=uuid_order_key)
    assert {p for p, _ in pairs} == set(persons[: len(persons) // 2 + 1])
    events = ok(hog(emu, "SELECT uuid FROM events ORDER BY timestamp, uuid LIMIT 50000"))["results"]
    assert [r[0] for r in events] == emu.ground_truth("events")


def test_the_persons_list_breaks_created_at_ties_in_clickhouses_uuid_order(emu):
    """The persons list is an ActorsQuery (HogQL) ordered created_at DESC, id DESC."""
    listed = requests.get(f"{emu.url}/api/projects/2/persons/?limit=1000", headers=auth(), timeout=30).json()["results"]
    ties = {}
    for person in listed:
        ties.setdefault(person["created_at"], []).append(person["id"])
    tied = [ids for ids in ties.values() if len(ids) > 2 and sorted(ids, key=uuid_order_key) != sorted(ids)]

    assert tied, "the dataset has created_at ties whose text order is not ClickHouse's"
    assert all(ids == sorted(ids, key=uuid_order_key, reverse=True) for ids in ties.values())
    assert [p["id"] for p in listed] == emu.ground_truth("persons")


# ------------------------------------------------------------------------------------------------
# 3. Sessions v2 by default, v3 per project, per query or for every project
# ------------------------------------------------------------------------------------------------

V3_ONLY = ["session_timestamp", "$has_autocapture", "$has_replay_events", "$entry_has_gclid", "$entry_has_fbclid",
           "$entry_epik"]


def field_query(name: str) -> str:
    return f"SELECT session_id, `{name}` FROM sessions ORDER BY `$start_timestamp`, session_id LIMIT 5"


@pytest.mark.parametrize("name", V3_ONLY)
def test_a_v3_field_is_posthogs_400_on_a_v2_project_and_served_on_a_v3_one(emu, name):
    refused = hog(emu, field_query(name))
    served = ok(hog(emu, field_query(name), path=f"/api/projects/{SECOND_PROJECT_ID}/query/"))
    asked = ok(hog(emu, field_query(name), modifiers={"sessionTableVersion": "v3"}))

    assert refused.status_code == 400
    assert refused.json() == error_body("validation_error", "hogql_query_error", f"Unable to resolve field: {name}")
    assert served["columns"] == ["session_id", name] and served["modifiers"]["sessionTableVersion"] == "v3"
    assert asked["columns"] == ["session_id", name] and len(asked["results"]) == 5


def test_a_v2_field_is_refused_on_a_v3_project_and_each_version_serves_its_own_field_set(emu):
    v3 = f"/api/projects/{SECOND_PROJECT_ID}/query/"
    assert hog(emu, field_query("$entry_referrer"), path=v3).json()["detail"] == "Unable to resolve field: $entry_referrer"
    assert ok(hog(emu, field_query("$entry_referrer")))["modifiers"]["sessionTableVersion"] == "auto"
    for spec, path in ((hogql.SESSIONS_V2, f"/api/projects/{PROJECT_ID}/query/"), (hogql.SESSIONS_V3, v3)):
        names = list(spec.fields)
        body = ok(hog(emu, "SELECT " + ", ".join(f"`{n}`" for n in names) + " FROM sessions LIMIT 3", path=path))
        assert body["columns"] == names and [t for _, t in body["types"]] == list(spec.fields.values())
    assert set(hogql.SESSIONS_V2.fields) ^ set(hogql.SESSIONS_V3.fields) >= {"$entry_referrer", *V3_ONLY}
    unserved = hog(emu, field_query("$urls")).json()
    assert unserved["code"] == "emulator_not_supported" and "$urls" in unserved["detail"]


def test_the_querys_own_modifier_wins_over_the_projects_and_auto_is_v2(emu):
    v3 = f"/api/projects/{SECOND_PROJECT_ID}/query/"
    assert hog(emu, field_query("session_timestamp"), path=v3, modifiers={"sessionTableVersion": "v2"}).status_code == 400
    auto = hog(emu, field_query("session_timestamp"), path=v3, modifiers={"sessionTableVersion": "auto"})
    assert auto.status_code == 400 and auto.json()["detail"] == "Unable to resolve field: session_timestamp"
    assert hog(emu, field_query("x"), modifiers={"sessionTableVersion": "v9"}).status_code == 400


def test_every_project_is_v3_when_configured_so_and_the_cli_sets_the_same(make_emu):
    e = make_emu(events=200, seed=22, base_time=BASE, sessions_table_version="v3",
                 project_sessions_table_versions={SECOND_PROJECT_ID: "v2"})
    assert ok(hog(e, field_query("$has_autocapture")))["modifiers"]["sessionTableVersion"] == "v3"
    assert hog(e, field_query("$has_autocapture"), path=f"/api/projects/{SECOND_PROJECT_ID}/query/").status_code == 400
    config = config_from_args(parse_args(["--sessions-table-version", "v3", "--project-sessions-table-version", "3=v2"]))
    assert (config.sessions_table_version, config.project_sessions_table_versions) == ("v3", {3: "v2"})
    assert config_from_args(parse_args(config.to_cli_args())).project_sessions_table_versions == {3: "v2"}
    with pytest.raises(ValueError):
        EmulatorConfig(sessions_table_version="v4")


def test_v2_and_v3_agree_on_their_common_fields_and_v3_adds_its_own(emu):
    """Both versions aggregate the same events (the generator makes no `$screen` events, so `$is_bounce`, which
    counts pageviews in v2 and pageviews + screens in v3, agrees too)."""
    common = ["session_id", "$start_timestamp", "$end_timestamp", "max_inserted_at", "$entry_pathname", "$channel_type",
              "$session_duration", "$pageview_count"]
    query = "SELECT " + ", ".join(f"`{c}`" for c in common) + " FROM sessions ORDER BY `$start_timestamp`, session_id LIMIT 50000"
    v2 = ok(hog(emu, query))["results"]
    v3 = ok(hog(emu, query, modifiers={"sessionTableVersion": "v3"}))["results"]
    assert v2 == v3 and len(v2) == len(emu.ground_truth("sessions"))
    autocapture = ok(hog(emu, "SELECT `$has_autocapture`, `$autocapture_count`, session_timestamp, session_id FROM sessions "
                              "LIMIT 50000", modifiers={"sessionTableVersion": "v3"}))["results"]
    assert {row[0] for row in autocapture} == {True, False} and all(row[0] == (row[1] > 0) for row in autocapture)
    assert all(row[2] == datetime.fromtimestamp(int(row[3][:8] + row[3][9:13], 16) / 1000, timezone.utc)
               .strftime("%Y-%m-%dT%H:%M:%S.%fZ") for row in autocapture), "the time the session id (UUIDv7) carries"


# ------------------------------------------------------------------------------------------------
# max_inserted_at: the latest ingestion time of the session's events
# ------------------------------------------------------------------------------------------------


def _session_max_inserted(e, sid, version="v2"):
    rows = ok(hog(e, f"SELECT max_inserted_at, `$start_timestamp`, `$end_timestamp` FROM sessions WHERE session_id = '{sid}'",
                  modifiers={"sessionTableVersion": version}))["results"]
    assert len(rows) == 1
    return rows[0]


@pytest.mark.parametrize("version", ["v2", "v3"])
def test_max_inserted_at_is_the_latest_created_at_of_the_sessions_events(emu, version):
    events = ok(hog(emu, "SELECT properties, created_at FROM events LIMIT 50000"))["results"]
    latest = {}
    for properties, created in events:
        sid = orjson.loads(properties)["$session_id"]
        latest[sid] = max(latest.get(sid, created), created)
    rows = ok(hog(emu, "SELECT session_id, max_inserted_at FROM sessions LIMIT 50000",
                  modifiers={"sessionTableVersion": version}))

    assert dict(map(tuple, rows["results"])) == latest
    assert dict(map(tuple, rows["types"]))["max_inserted_at"] == "DateTime64(6, 'UTC')"


def test_a_late_event_raises_an_old_sessions_max_inserted_at(make_emu):
    e = make_emu(events=300, seed=23, base_time=datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(days=2))
    sid, before, start, end = ok(hog(e, "SELECT session_id, max_inserted_at, `$start_timestamp`, `$end_timestamp` FROM sessions "
                                        "ORDER BY `$start_timestamp` LIMIT 1"))["results"][0]
    started = datetime.now(timezone.utc)
    e.add_events([{"event": "$pageview", "timestamp": start, "properties": {"$session_id": sid, "$current_url": "https://app.example.com/late"}}])

    after = _session_max_inserted(e, sid)
    assert dt(before) < started - timedelta(days=1), "an old session"
    assert started - timedelta(seconds=1) <= dt(after[0]) <= datetime.now(timezone.utc)
    assert (after[1], after[2]) == (start, end), "the late event is inside the session: start and end stay"
    assert _session_max_inserted(e, sid, "v3")[0] == after[0]


def test_max_inserted_at_is_when_the_event_became_queryable(make_emu):
    """Ingestion time = created_at + the visibility delay that applies (a batch's own, else the run-wide one)."""
    e = make_emu(events=200, seed=24, base_time=BASE)
    sid = ok(hog(e, "SELECT session_id FROM sessions ORDER BY `$start_timestamp` LIMIT 1"))["results"][0][0]
    created = (datetime.now(timezone.utc) - timedelta(minutes=10)).replace(microsecond=250_000)
    e.add_events([{"event": "$pageview", "timestamp": "2026-10-05T00:00:00Z", "created_at": created.isoformat(),
                   "properties": {"$session_id": sid}}], visibility_delay_seconds=300)
    assert dt(_session_max_inserted(e, sid)[0]) == created + timedelta(seconds=300)

    e.set_visibility_delay(60)
    other = ok(hog(e, "SELECT session_id, max_inserted_at FROM sessions WHERE session_id != '" + sid + "' "
                      "ORDER BY `$start_timestamp` LIMIT 1"))["results"][0]
    created_max = max(r[0] for r in ok(hog(e, "SELECT created_at, properties FROM events LIMIT 50000"))["results"]
                      if orjson.loads(r[1])["$session_id"] == other[0])
    assert dt(other[1]) == dt(created_max) + timedelta(seconds=60)
    assert e.app.store.ingestion_time_sql() == "COALESCE(visible_at, emu_plus_seconds(created_at, 60.0))"


def test_a_filter_on_max_inserted_at_is_not_pushed_into_the_scan_only_start_and_end_are(make_emu):
    e = make_emu(events=600, seed=25, base_time=BASE, query_cost_model=True, query_time_scale=0.0)
    total = len(e.ground_truth("events"))
    e.clear_requests()
    hog(e, "SELECT session_id FROM sessions WHERE max_inserted_at >= toDateTime64('2026-10-30 00:00:00', 6, 'UTC') LIMIT 10")
    hog(e, "SELECT session_id FROM sessions WHERE `$start_timestamp` >= toDateTime64('2026-10-30 00:00:00', 6, 'UTC') "
           "AND max_inserted_at >= toDateTime64('2026-10-30 00:00:00', 6, 'UTC') LIMIT 10")
    hog(e, "SELECT session_id FROM sessions WHERE `$end_timestamp` < toDateTime64('2026-10-10 00:00:00', 6, 'UTC') LIMIT 10")
    scanned = [entry["rows_scanned"] for entry in e.requests()]
    from_27th = ok(hog(e, "SELECT count() FROM events WHERE timestamp >= toDateTime64('2026-10-27 00:00:00', 6, 'UTC')"))
    until_13th = ok(hog(e, "SELECT count() FROM events WHERE timestamp <= toDateTime64('2026-10-13 00:00:00', 6, 'UTC')"))

    assert scanned == [total, from_27th["results"][0][0], until_13th["results"][0][0]]  # ±3 days (SESSION_BUFFER_DAYS)
    assert 0 < scanned[1] < total and 0 < scanned[2] < total


# ------------------------------------------------------------------------------------------------
# 4. Timestamp precisions as PostHog stores them
# ------------------------------------------------------------------------------------------------


def test_persons_created_at_is_milliseconds_in_hogql_and_rest(emu, make_emu):
    body = ok(hog(emu, "SELECT created_at FROM persons LIMIT 1000"))
    listed = requests.get(f"{emu.url}/api/projects/2/persons/?limit=1000", headers=auth(), timeout=30).json()["results"]

    assert dict(map(tuple, body["types"]))["created_at"] == "DateTime64(3, 'UTC')"
    assert all(dt(r[0]).microsecond % 1000 == 0 for r in body["results"]) and len(body["results"]) == 75
    assert all(dt(p["created_at"]).microsecond % 1000 == 0 for p in listed)
    e = make_emu(events=100, seed=26, base_time=BASE)
    new = e.mutate(new_persons=3)["persons"]["new"]
    rows = ok(hog(e, "SELECT id, created_at FROM persons WHERE id IN (" + ", ".join(f"'{p}'" for p in new) + ")"))["results"]
    assert len(rows) == 3 and all(dt(r[1]).microsecond % 1000 == 0 for r in rows)


def test_a_persons_id_is_the_uuid5_postHogs_ingestion_derives_from_its_first_distinct_id(emu, make_emu):
    # uuidFromDistinctId(team, distinct_id) = uuid5(PERSON_UUIDV5_NAMESPACE, "team:distinct_id"): a
    # merged-away person can be named from the distinct ids that moved (docs/posthog-api.md § 20.3).
    namespace = uuid.UUID("932979b4-65c3-4424-8467-0b66ec27bc22")
    e = make_emu(events=100, seed=26, base_time=BASE)
    new = set(e.mutate(new_persons=3)["persons"]["new"])
    for server in (emu, e):
        rows = ok(hog(server, "SELECT person_id, distinct_id FROM person_distinct_ids LIMIT 10000"))["results"]
        persons = {str(r[0]) for r in rows}
        derived = {str(r[0]) for r in rows if str(r[0]) == str(uuid.uuid5(namespace, f"2:{r[1]}"))}
        assert derived == persons and persons, f"{len(persons - derived)} persons' ids are not derived from a distinct id"
    assert new <= persons


def test_groups_created_at_is_milliseconds_in_the_rest_list(emu):
    groups = []
    for index in (0, 1, 2):
        url = f"{emu.url}/api/projects/2/groups/?group_type_index={index}"
        while url:
            body = requests.get(url, headers=auth(), timeout=30).json()
            groups += body["results"]
            url = body["next"]

    assert len(groups) == 370
    assert all(dt(g["created_at"]).microsecond % 1000 == 0 for g in groups)
    assert any(dt(g["created_at"]).microsecond for g in groups), "milliseconds, not whole seconds"


# ------------------------------------------------------------------------------------------------
# 5. cohort_people and static_cohort_people
# ------------------------------------------------------------------------------------------------


def _cohorts(e) -> dict:
    out, url = {}, f"{e.url}/api/projects/2/cohorts/?limit=500"
    while url:
        body = requests.get(url, headers=auth(), timeout=30).json()
        out.update({c["id"]: c for c in body["results"]})
        url = body["next"]
    return out


def _members(e, table: str) -> list:
    return ok(hog(e, f"SELECT cohort_id, person_id FROM {table} ORDER BY cohort_id, person_id LIMIT 50000"))["results"]


def test_cohort_tables_serve_each_cohorts_current_members_and_the_ground_truth_is_their_union(emu):
    cohorts = _cohorts(emu)
    dynamic, static = _members(emu, "cohort_people"), _members(emu, "static_cohort_people")
    persons = {r[0] for r in ok(hog(emu, "SELECT id FROM persons LIMIT 1000"))["results"]}

    assert dynamic and static
    assert {c for c, _ in dynamic} <= {cid for cid, c in cohorts.items() if not c["is_static"]}
    assert {c for c, _ in static} <= {cid for cid, c in cohorts.items() if c["is_static"]}
    assert {p for _, p in dynamic + static} <= persons
    assert emu.ground_truth("cohort_membership") == sorted(dynamic + static, key=lambda m: (m[0], uuid_order_key(m[1])))
    assert len({tuple(m) for m in dynamic}) == len(dynamic), "DISTINCT (person_id, cohort_id)"
    star = ok(hog(emu, "SELECT * FROM cohort_people LIMIT 1"))
    assert star["columns"] == ["person_id", "cohort_id"] and star["types"] == [["person_id", "UUID"], ["cohort_id", "Int64"]]
    assert ok(hog(emu, "SELECT team_id FROM static_cohort_people LIMIT 1"))["results"] == [[2]]
    assert ok(hog(emu, "SELECT cohort_id FROM cohort_people LIMIT 1", path="/api/projects/3/query/"))["results"] == []


def test_cohort_people_leaves_out_old_versions_and_deleted_cohorts(emu):
    """schema/cohort_people.py: rows whose (cohort_id, version) is a non-deleted cohort's current version."""
    served = {tuple(m) for m in _members(emu, "cohort_people")}
    with emu.app.store.read() as conn:
        raw = conn.execute("SELECT cohort_id, person_id, version FROM raw_cohort_people WHERE team_id = 2").fetchall()
        current = dict(conn.execute("SELECT cohort_id, version FROM cohort_versions WHERE team_id = 2").fetchall())
    stale = {(c, p) for c, p, v in raw if current.get(c) != v} - {(c, p) for c, p, v in raw if current.get(c) == v}
    deleted = {c for c, _, _ in raw} - set(current)

    assert stale and deleted, "the generated data has rows of older versions and of a deleted cohort"
    assert not stale & served and not {c for c, _ in served} & deleted
    assert served == {(c, p) for c, p, v in raw if current.get(c) == v}


@pytest.mark.parametrize("table", ["cohort_people", "static_cohort_people"])
def test_a_keyset_walk_on_cohort_and_person_follows_clickhouses_uuid_order(emu, table):
    seen, last = [], None
    while True:
        where = f" WHERE (cohort_id, person_id) > ({last[0]}, toUUID('{last[1]}'))" if last else ""
        page = ok(hog(emu, f"SELECT cohort_id, person_id FROM {table}{where} ORDER BY cohort_id, person_id LIMIT 400"))["results"]
        seen += page
        if len(page) < 400:
            break
        last = page[-1]

    assert seen == _members(emu, table) and len(seen) > 400
    by_cohort = {}
    for cohort, person in seen:
        by_cohort.setdefault(cohort, []).append(person)
    assert any(people != sorted(people) for people in by_cohort.values())
    assert all(people == sorted(people, key=uuid_order_key) for people in by_cohort.values())


def test_a_mutation_adds_and_removes_cohort_members(make_emu):
    e = make_emu(events=300, seed=27, base_time=BASE)
    before = {tuple(m) for m in e.ground_truth("cohort_membership")}
    with e.app.store.read() as conn:
        versions = dict(conn.execute("SELECT cohort_id, version FROM cohort_versions").fetchall())

    change = e.mutate(added_cohort_members=8, removed_cohort_members=6)["cohort_membership"]

    added, removed = {tuple(m) for m in change["added"]}, {tuple(m) for m in change["removed"]}
    after = {tuple(m) for m in e.ground_truth("cohort_membership")}
    served = {tuple(m) for m in _members(e, "cohort_people") + _members(e, "static_cohort_people")}
    persons = {r[0] for r in ok(hog(e, "SELECT id FROM persons LIMIT 1000"))["results"]}
    assert len(added) == 8 and len(removed) == 6 and not added & before and removed <= before
    assert after == served == (before - removed) | added
    assert {p for _, p in added} <= persons
    cohorts = _cohorts(e)
    recalculated = {c for c, _ in added | removed if not cohorts[c]["is_static"]}
    with e.app.store.read() as conn:
        now = dict(conn.execute("SELECT cohort_id, version FROM cohort_versions").fetchall())
    assert recalculated and all(now[c] == versions[c] + 1 for c in recalculated)
    assert all(now[c] == versions[c] for c in set(versions) - recalculated)


# ------------------------------------------------------------------------------------------------
# 6. The probe
# ------------------------------------------------------------------------------------------------


def test_the_probe_prints_each_fact_as_the_emulator_answers_it(tmp_path):
    done = subprocess.run([sys.executable, "-m", "tools.emulator.probe", "--data-dir", str(tmp_path)], capture_output=True,
                          text=True, cwd=REPO, timeout=120)

    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 6, done.stdout
    answers = [line.split(" -> ", 1)[1].split(" ", 1) for line in lines[:5]]
    status = [int(code) for code, _ in answers]
    body = [orjson.loads(text) for _, text in answers]
    assert status == [400, 200, 400, 200, 200]
    assert body[0]["code"] == "hogql_syntax_error" and body[0]["detail"].startswith("mismatched input 'SELEC'")
    assert body[1]["results"] == [[CH_FIRST], [CH_SECOND]]
    assert body[2]["detail"] == "Unable to resolve field: $has_autocapture" and body[3]["columns"][1] == "$has_autocapture"
    assert body[4]["columns"] == ["session_id", "max_inserted_at"] and len(body[4]["results"]) == 1
    assert posthog_parser.PARSER in lines[5] and "hogql_parser" in lines[5]
    assert "phx_" not in done.stdout + done.stderr
