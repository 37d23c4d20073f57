"""The REST lists a client reads by change time, the activity log, the cohort persons list and the
mutations that move change times, against PostHog's source (docs/posthog-api.md § 20.5; the README
of tools/emulator names each file):

- insights: ``order`` (any model field) and ``date_from``/``date_to`` strict on ``last_modified_at``;
- experiments: ``order`` from PostHog's allowlist, anything else a 400;
- feature_flags: ``order`` straight into ORDER BY (default ``-created_at``), archived flags only when asked;
- cohorts, dashboards, surveys, actions: no change-time order (an ``order`` is ignored);
- ``activity_log/``: DRF cursor pages of 100 on ``-created_at, -id``, ties at the page edges;
- ``cohorts/{id}/persons/``: limit/offset pages as PostHog's CohortViewSet.persons builds them;
- ``mutate(...)``: edits and creations whose ids the mutation returns, each with an activity entry.

    python -m pytest integration_tests/emulator_fidelity/test_rest_changes.py -q
"""

from __future__ import annotations

import base64
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tools.emulator import KEYS, EmulatorConfig, EmulatorServer

BASE = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(hours=1)  # the data ends an hour ago


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    with EmulatorServer(EmulatorConfig(events=300, seed=11, base_time=BASE, data_dir=tmp_path_factory.mktemp("emu"))) as e:
        yield e


@pytest.fixture()
def fresh(tmp_path_factory):
    """An emulator of its own, for the tests that mutate."""
    with EmulatorServer(EmulatorConfig(events=300, seed=11, base_time=BASE, data_dir=tmp_path_factory.mktemp("emu"))) as e:
        yield e


def get(e, path, key="all_access"):
    return requests.get(e.url + path if path.startswith("/") else path,
                        headers={"Authorization": f"Bearer {KEYS[key]}"}, timeout=30)


def body(e, path, key="all_access"):
    response = get(e, path, key)
    assert response.status_code == 200, (path, response.text[:300])
    return response.json()


def follow(e, path):
    page = body(e, path)
    rows = list(page["results"])
    while page.get("next"):
        page = body(e, page["next"])
        rows += page["results"]
    return rows


def ts(value):
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def tie_groups(rows, field):
    groups = defaultdict(list)
    for row in rows:
        groups[row[field]].append(row["id"])
    return {value: ids for value, ids in groups.items() if value is not None and len(ids) > 1}


SERVER_ERROR = {"type": "server_error", "code": "error", "detail": "A server error occurred.", "attr": None}


# -- insights (posthog/api/insight.py) --------------------------------------------------------


def test_insights_change_times_are_realistic_with_ties(emu):
    rows = follow(emu, "/api/projects/2/insights/?limit=1000")
    for row in rows:
        assert ts(row["created_at"]) <= ts(row["last_modified_at"]) <= ts(row["updated_at"]) <= BASE
    assert any(row["created_at"] == row["last_modified_at"] for row in rows), "never-edited insights"
    assert any(ts(row["created_at"]) < ts(row["last_modified_at"]) for row in rows)
    assert any(ts(row["last_modified_at"]) < ts(row["updated_at"]) for row in rows), "saved without a material edit"
    assert tie_groups(rows, "last_modified_at"), "insights edited in the same instant"


def test_insights_order_by_last_modified_at_both_ways_and_an_unknown_field_is_a_500(emu):
    desc = body(emu, "/api/projects/2/insights/?order=-last_modified_at&limit=1000&basic=true")["results"]
    asc = body(emu, "/api/projects/2/insights/?order=last_modified_at&limit=1000&basic=true")["results"]
    assert len(desc) == len(asc) == len(emu.ground_truth("insights"))
    assert [ts(r["last_modified_at"]) for r in desc] == sorted((ts(r["last_modified_at"]) for r in desc), reverse=True)
    assert [ts(r["last_modified_at"]) for r in asc] == sorted(ts(r["last_modified_at"]) for r in asc)
    response = get(emu, "/api/projects/2/insights/?order=no_such_field")
    assert response.status_code == 500 and response.json() == SERVER_ERROR  # Django's FieldError
    default = [r["id"] for r in follow(emu, "/api/projects/2/insights/?order=")]
    assert default == emu.ground_truth("insights")  # an empty order: the model ordering, as before


def test_insights_ties_on_a_client_order_come_back_in_an_order_that_depends_on_the_page(emu):
    """Postgres orders ties on ``order_by(order)`` arbitrarily (no id tiebreak), and differently for
    another LIMIT/OFFSET: each tie group stays together, its inner order can change."""
    orders = {}
    for limit in (1000, 999):
        rows = body(emu, f"/api/projects/2/insights/?order=-last_modified_at&limit={limit}")["results"]
        orders[limit] = {value: ids for value, ids in tie_groups(rows, "last_modified_at").items()}
    assert orders[1000] and set(orders[1000]) == set(orders[999])
    assert all(sorted(orders[1000][v]) == sorted(orders[999][v]) for v in orders[1000])
    assert any(orders[1000][v] != orders[999][v] for v in orders[1000])


def test_insights_date_from_and_date_to_are_strict_on_last_modified_at(emu):
    rows = follow(emu, "/api/projects/2/insights/?limit=1000")
    tied, ids = next(iter(tie_groups(rows, "last_modified_at").items()))
    after = {r["id"] for r in rows if ts(r["last_modified_at"]) > ts(tied)}
    before = {r["id"] for r in rows if ts(r["last_modified_at"]) < ts(tied)}
    got_after = {r["id"] for r in follow(emu, f"/api/projects/2/insights/?date_from={tied.replace('+', '%2B')}")}
    got_before = {r["id"] for r in follow(emu, f"/api/projects/2/insights/?date_to={tied}")}
    assert got_after == after and got_before == before and not set(ids) & (got_after | got_before)
    window = {r["id"] for r in follow(emu, "/api/projects/2/insights/?date_from=-30d&basic=true")}
    assert window == {r["id"] for r in rows if ts(r["last_modified_at"]) > datetime.now(timezone.utc) - timedelta(days=30)}


# -- experiments (products/experiments/backend/experiment_service.py) ---------------------------


ALLOWLIST = ("created_at", "created_by", "updated_at", "name", "start_date", "end_date", "duration", "status")


def test_experiments_order_from_the_allowlist_and_a_400_for_anything_else(emu):
    all_rows = follow(emu, "/api/projects/2/experiments/") + follow(emu, "/api/projects/2/experiments/?archived=true")
    for row in all_rows:
        assert ts(row["created_at"]) <= ts(row["updated_at"]) <= BASE
    assert tie_groups(all_rows, "updated_at"), "experiments saved in the same instant"
    for name in ALLOWLIST:
        for order in (name, f"-{name}"):
            assert get(emu, f"/api/projects/2/experiments/?order={order}").status_code == 200, order
    rows = body(emu, "/api/projects/2/experiments/?order=-updated_at")["results"]
    assert [ts(r["updated_at"]) for r in rows] == sorted((ts(r["updated_at"]) for r in rows), reverse=True)
    asc = body(emu, "/api/projects/2/experiments/?order=updated_at")["results"]
    assert [ts(r["updated_at"]) for r in asc] == sorted(ts(r["updated_at"]) for r in asc)
    for order in ("last_modified_at", "-id", "updated"):
        response = get(emu, f"/api/projects/2/experiments/?order={order}")
        assert response.status_code == 400 and response.json() == {
            "type": "validation_error", "code": "invalid", "detail": f"Invalid order field: '{order}'", "attr": None}


def test_experiments_duration_and_status_orders_and_postgres_nulls(emu):
    rows = body(emu, "/api/projects/2/experiments/?order=duration")["results"]
    drafts = [r["start_date"] is None for r in rows]
    assert any(drafts) and drafts == sorted(drafts)  # NULL durations last ascending
    assert body(emu, "/api/projects/2/experiments/?order=-duration")["results"][0]["start_date"] is None  # first descending
    rank = [0 if r["start_date"] is None else (1 if r["end_date"] is None else 2)
            for r in body(emu, "/api/projects/2/experiments/?order=status")["results"]]
    assert rank == sorted(rank) and len(set(rank)) == 3


# -- feature flags (products/feature_flags/backend/api/feature_flag.py) -------------------------


def test_feature_flags_order_goes_into_order_by_with_postgres_nulls(emu):
    rows = body(emu, "/api/projects/2/feature_flags/?order=-updated_at&limit=1000")["results"]
    nulls = [r["updated_at"] is None for r in rows]
    assert nulls[0] and not nulls[-1] and nulls == sorted(nulls, reverse=True)  # never-edited flags first
    edited = [ts(r["updated_at"]) for r in rows if r["updated_at"]]
    assert edited == sorted(edited, reverse=True)
    asc = body(emu, "/api/projects/2/feature_flags/?order=updated_at&limit=1000")["results"]
    assert asc[-1]["updated_at"] is None and asc[0]["updated_at"] is not None  # NULLS LAST ascending
    default = [r["id"] for r in follow(emu, "/api/projects/2/feature_flags/")]
    archived = {r["id"] for r in follow(emu, "/api/projects/2/feature_flags/?archived=true")}
    assert default == [i for i in emu.ground_truth("feature_flags") if i not in archived]  # the truth holds archived flags too
    assert [ts(r["created_at"]) for r in body(emu, "/api/projects/2/feature_flags/?limit=1000")["results"]] == sorted(
        (ts(r["created_at"]) for r in rows), reverse=True)  # default -created_at
    assert get(emu, "/api/projects/2/feature_flags/?order=rollout").json() == SERVER_ERROR
    for row in rows:
        assert row["updated_at"] is None or ts(row["created_at"]) <= ts(row["updated_at"]) <= BASE
        assert (row["updated_at"] is None) == (row["version"] == 1) == (row["last_modified_by"] is None)
    assert tie_groups(rows, "updated_at"), "flags edited in the same bulk update"


def test_feature_flags_leave_archived_ones_out_unless_asked(emu):
    default = follow(emu, "/api/projects/2/feature_flags/")
    archived = follow(emu, "/api/projects/2/feature_flags/?archived=true")
    not_archived = follow(emu, "/api/projects/2/feature_flags/?archived=false")
    assert archived and all(r["archived"] and not r["active"] and r["status"] == "archived" for r in archived)
    assert default == not_archived and not any(r["archived"] for r in default)
    # The ground truth is everything the key can read: both passes, in list order.
    assert sorted(r["id"] for r in default + archived) == sorted(emu.ground_truth("feature_flags"))


@pytest.mark.parametrize("resource", ["cohorts", "dashboards", "surveys", "actions"])
def test_resources_without_a_change_time_order_ignore_order(emu, resource):
    plain = [r["id"] for r in follow(emu, f"/api/projects/2/{resource}/")]
    for order in ("-updated_at", "name", "-last_modified_at", "nonsense"):
        assert [r["id"] for r in follow(emu, f"/api/projects/2/{resource}/?order={order}")] == plain
    rows = follow(emu, f"/api/projects/2/{resource}/")
    assert "updated_at" not in rows[0] and "last_modified_at" not in rows[0]


# -- activity log (posthog/api/advanced_activity_logs/viewset.py) -------------------------------


def cursor_of(url):
    raw = parse_qs(urlsplit(url).query)["cursor"][0]
    return parse_qs(base64.b64decode(raw).decode())


def test_activity_log_cursor_pages_of_100_cover_the_log_with_ties_at_the_page_edges(emu):
    first = body(emu, "/api/projects/2/activity_log/")
    assert set(first) == {"next", "previous", "results"} and first["previous"] is None and len(first["results"]) == 100
    pages = [first["results"]]
    page = first
    while page["next"]:
        page = body(emu, page["next"])
        pages.append(page["results"])
    ids = [a["id"] for p in pages for a in p]
    truth = emu.ground_truth("activity_log")
    assert ids == truth and len(set(ids)) == len(ids) > 300
    keys = [(a["created_at"], a["id"]) for p in pages for a in p]
    assert keys == sorted(keys, reverse=True)  # -created_at, -id
    assert pages[0][-1]["created_at"] == pages[1][0]["created_at"]  # a tie across the first edge
    assert pages[1][-1]["created_at"] == pages[2][0]["created_at"] == pages[2][1]["created_at"]  # three across the second
    second_cursor = cursor_of(first["next"])
    assert "p" in second_cursor and second_cursor.get("o") == ["1"]  # position + offset into the tie


def test_activity_log_previous_leads_back_and_page_size_and_ascending_order(emu):
    first = body(emu, "/api/projects/2/activity_log/")
    second = body(emu, first["next"])
    back = body(emu, second["previous"])
    assert [a["id"] for a in back["results"]] == [a["id"] for a in first["results"]]
    truth = emu.ground_truth("activity_log")
    small = body(emu, "/api/projects/2/activity_log/?page_size=7")
    assert [a["id"] for a in small["results"]] == truth[:7]
    assert len(body(emu, "/api/projects/2/activity_log/?page_size=5000")["results"]) == min(1000, len(truth))
    ascending = follow(emu, "/api/projects/2/activity_log/?ordering=created_at&page_size=250")
    assert [a["id"] for a in ascending] == truth[::-1]
    tail = body(emu, "/api/projects/2/activity_log/?ordering=created_at&page_size=1000&follow=true")
    while len(tail["results"]) == 1000:
        tail = body(emu, tail["next"])
    assert tail["next"] and body(emu, tail["next"])["results"] == []  # follow=true: a next past the end


def test_activity_log_fields_filters_and_page_numbers(emu):
    entry = next(a for a in follow(emu, "/api/projects/2/activity_log/?scope=FeatureFlag") if a["activity"] == "updated")
    assert entry["scope"] == "FeatureFlag" and entry["detail"]["changes"][0]["field"] == "filters"
    assert set(entry["detail"]) == {"name", "short_id", "type", "changes", "trigger", "context"}
    of_item = follow(emu, f"/api/projects/2/activity_log/?item_id={entry['item_id']}")
    every = follow(emu, "/api/projects/2/activity_log/?page_size=1000")
    assert [a["id"] for a in of_item] == [a["id"] for a in every if a["item_id"] == entry["item_id"]]
    assert {a["activity"] for a in of_item if a["scope"] == "FeatureFlag"} >= {"created", "updated"}
    scopes = {a["scope"] for a in every}
    assert scopes == {"FeatureFlag", "Insight", "Experiment", "Cohort", "Dashboard"}
    two = follow(emu, "/api/projects/2/activity_log/?scopes=Cohort,Dashboard")
    assert {a["scope"] for a in two} == {"Cohort", "Dashboard"} and len(two) == sum(a["scope"] in ("Cohort", "Dashboard") for a in every)
    assert any(a["is_system"] and a["user"] is None for a in every) and any(a["activity"] == "deleted" for a in every)
    numbered = body(emu, "/api/projects/2/activity_log/?page=2&page_size=50")
    assert set(numbered) == {"count", "next", "previous", "results"} and numbered["count"] == len(every)
    assert [a["id"] for a in numbered["results"]] == [a["id"] for a in every[50:100]]
    assert "page=3" in numbered["next"] and "page=" not in numbered["previous"]
    assert get(emu, "/api/projects/2/activity_log/?page=999").status_code == 404
    bad = get(emu, "/api/projects/2/activity_log/?cursor=" + base64.b64encode(b"o=x").decode())
    assert bad.status_code == 404 and bad.json()["detail"] == "Invalid cursor"
    assert get(emu, "/api/projects/2/activity_log/?cursor=%25%25").status_code == 200  # b64decode drops them: page 1


def test_activity_log_needs_its_scope_and_is_per_project(emu):
    denied = get(emu, "/api/projects/2/activity_log/", key="no_activity_log")
    assert denied.status_code == 403 and denied.json() == {
        "type": "authentication_error", "code": "permission_denied",
        "detail": "API key missing required scope 'activity_log:read'", "attr": None}
    for key in ("no_query", "no_persons", "no_recordings", "project_scoped"):
        assert get(emu, "/api/projects/2/activity_log/", key=key).status_code == 200, key
    assert get(emu, "/api/projects/2/activity_log/", key="other_project").status_code == 403
    p3 = follow(emu, "/api/projects/3/activity_log/")
    assert 5 < len(p3) < 100 and all(a["team_id"] == 3 for a in p3)
    assert [a["id"] for a in p3] == emu.ground_truth("activity_log", project_id=3)
    assert not {a["id"] for a in p3} & set(emu.ground_truth("activity_log"))


# -- cohort persons (posthog/api/cohort.py, CohortViewSet.persons) ------------------------------


def test_cohort_persons_pages_as_posthog_builds_them(emu):
    membership = emu.ground_truth("cohort_membership")
    members = defaultdict(list)
    for cohort_id, person_id in membership:
        members[cohort_id].append(person_id)
    cohort_id = max(members, key=lambda c: len(members[c]))
    expected = members[cohort_id]
    assert len(expected) > 7
    first = body(emu, f"/api/projects/2/cohorts/{cohort_id}/persons/?limit=3")
    assert set(first) == {"results", "next", "previous"} and first["previous"] is None
    assert first["next"].endswith(f"/cohorts/{cohort_id}/persons/?limit=3&offset=3")
    second = body(emu, first["next"])
    assert second["previous"] == first["next"]  # offset 0 is falsy in format_query_params_absolute_url
    third = body(emu, second["next"])
    assert third["previous"].endswith("limit=3&offset=3")
    got, page = [], first
    while True:
        got += [p["id"] for p in page["results"]]
        if not page["next"]:
            break
        page = body(emu, page["next"])
    assert sorted(got) == sorted(expected) and len(got) == len(expected)
    assert (len(expected) % 3 == 0) == (page["results"] == [])  # a full last page still gets a next
    person = first["results"][0]
    assert person["type"] == "person" and person["id"] == person["uuid"] and len(person["distinct_ids"]) <= 10
    whole = body(emu, f"/api/projects/2/cohorts/{cohort_id}/persons/")["results"]  # default limit 100
    assert {p["id"] for p in whole} == set(expected)
    keys = [(p["created_at"], p["uuid"]) for p in whole]
    assert keys == sorted(keys, key=lambda k: (k[0], tuple(-ord(c) for c in k[1])), reverse=True)  # created_at DESC, uuid


def test_cohort_persons_scopes_and_which_cohorts(emu):
    cohort_id = body(emu, "/api/projects/2/cohorts/")["results"][0]["id"]
    denied = get(emu, f"/api/projects/2/cohorts/{cohort_id}/persons/", key="no_persons")
    assert denied.status_code == 403 and denied.json()["detail"] == "API key missing required scope 'person:read'"
    assert get(emu, f"/api/projects/2/cohorts/{cohort_id}/persons/", key="no_query").status_code == 200
    deleted = next(e.item["id"] for e in emu.app.store.resources.rows["cohorts"] if e.hidden and e.team_id == 2)
    assert get(emu, f"/api/projects/2/cohorts/{deleted}/persons/").status_code == 200  # only the list hides deleted ones
    p3 = body(emu, "/api/projects/3/cohorts/")["results"][0]["id"]
    assert get(emu, f"/api/projects/2/cohorts/{p3}/persons/").status_code == 404
    assert get(emu, "/api/projects/2/cohorts/abc/persons/").status_code == 404
    assert get(emu, f"/api/projects/2/cohorts/{cohort_id}/people/").status_code == 404
    # REST and HogQL (cohort_people, static_cohort_people) read the same membership, each in its own order.
    assert sorted(emu.app.store.cohort_members(2, cohort_id)) == sorted(p for c, p in emu.ground_truth("cohort_membership") if c == cohort_id)


# -- mutations ----------------------------------------------------------------------------------


def test_mutations_move_change_times_and_report_exactly_what_changed(fresh):
    since = datetime.now(timezone.utc) - timedelta(seconds=2)
    before_log = fresh.ground_truth("activity_log")
    result = fresh.mutate(updated_insights=4, new_insights=2, updated_experiments=3, new_experiments=1,
                          updated_feature_flags=5, new_feature_flags=2, new_activity_log=3)
    changed = {kind: set(result[kind]["new"]) | set(result[kind]["updated"])
               for kind in ("insights", "experiments", "feature_flags")}
    assert [len(result[k]["updated"]) for k in ("insights", "experiments", "feature_flags")] == [4, 3, 5]
    assert [len(result[k]["new"]) for k in ("insights", "experiments", "feature_flags")] == [2, 1, 2]
    stamp = since.isoformat().replace("+00:00", "Z")
    assert {r["id"] for r in follow(fresh, f"/api/projects/2/insights/?date_from={stamp}&basic=true")} == changed["insights"]
    experiments = follow(fresh, "/api/projects/2/experiments/?order=-updated_at") + follow(
        fresh, "/api/projects/2/experiments/?archived=true")
    assert {r["id"] for r in experiments if ts(r["updated_at"]) > since} == changed["experiments"]
    flags = follow(fresh, "/api/projects/2/feature_flags/")
    assert {r["id"] for r in flags if ts(r["updated_at"] or r["created_at"]) > since} == changed["feature_flags"]
    new_flags = [r for r in flags if r["id"] in result["feature_flags"]["new"]]
    assert all(r["updated_at"] is None and r["version"] == 1 for r in new_flags)  # created, never edited
    log = fresh.ground_truth("activity_log")
    added = result["activity_log"]["new"]
    assert log[:len(added)] == added and log[len(added):] == before_log
    assert len(added) == 4 + 2 + 3 + 1 + 5 + 2 + 3
    entries = follow(fresh, "/api/projects/2/activity_log/?page_size=1000")[:len(added)]
    assert all(ts(a["created_at"]) > since for a in entries)
    logged = {(a["scope"], a["item_id"], a["activity"]) for a in entries}
    for kind, scope in (("insights", "Insight"), ("experiments", "Experiment"), ("feature_flags", "FeatureFlag")):
        assert {(scope, str(i), "updated") for i in result[kind]["updated"]} <= logged
        assert {(scope, str(i), "created") for i in result[kind]["new"]} <= logged
    assert len({a["created_at"] for a in entries}) < len(entries), "entries of one instant (ties)"


def test_an_edited_flag_moves_its_version_and_an_edited_insight_its_last_modified_at(fresh):
    flags = {r["id"]: r for r in follow(fresh, "/api/projects/2/feature_flags/")}
    insights = {r["id"]: r for r in follow(fresh, "/api/projects/2/insights/?basic=true")}
    result = fresh.mutate(updated_feature_flags=2, updated_insights=2)
    for fid in result["feature_flags"]["updated"]:
        now = body(fresh, f"/api/projects/2/feature_flags/{fid}/")
        assert now["version"] == (flags[fid]["version"] or 1) + 1 and now["filters"] != flags[fid]["filters"]
        assert ts(now["updated_at"]) > ts(flags[fid]["updated_at"] or flags[fid]["created_at"])
    for iid in result["insights"]["updated"]:
        now = body(fresh, f"/api/projects/2/insights/{iid}/?basic=true")
        assert now["last_modified_at"] == now["updated_at"] and ts(now["last_modified_at"]) > ts(insights[iid]["last_modified_at"])
        assert now["created_at"] == insights[iid]["created_at"]
    assert "insights" not in fresh.mutate()  # no resource change asked: none reported
    with pytest.raises(RuntimeError, match="400"):
        fresh.mutate(updated_dashboards=1)  # not a mutation the emulator knows
