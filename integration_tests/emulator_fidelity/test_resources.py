"""The emulator's § 14 resources (groups_types, groups, dashboards, experiments, surveys) against
docs/posthog-api.md: envelopes, orders, filters, hidden rows, scopes and ground truth.

    python -m pytest integration_tests/emulator_fidelity/test_resources.py -q
"""

from __future__ import annotations

import base64
import json
import re
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tools.emulator import KEYS, EmulatorConfig, EmulatorServer
from tools.emulator.keys import READ_SCOPES, RESOURCE_SCOPES

BASE = datetime.now(timezone.utc).replace(second=0, microsecond=0)
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")

_FIELDS = json.loads((Path(__file__).resolve().parents[2] / "tools/emulator/serializer_fields.json").read_text())["streams"]
DASHBOARD_FIELDS = set(_FIELDS["dashboards"]["fields"])  # DashboardBasicSerializer (posthog/api/dashboards/dashboard.py)
EXPERIMENT_FIELDS = set(_FIELDS["experiments"]["fields"])  # ExperimentBasicSerializer
SURVEY_FIELDS = set(_FIELDS["surveys"]["fields"])  # SurveySerializer (posthog/api/survey.py)
GROUP_TYPE_FIELDS = {"group_type", "group_type_index", "name_singular", "name_plural", "detail_dashboard", "default_columns", "created_at"}
GROUP_FIELDS = {"group_type_index", "group_key", "group_properties", "created_at"}


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    with EmulatorServer(EmulatorConfig(events=300, seed=3, base_time=BASE, data_dir=tmp_path_factory.mktemp("emu"))) as e:
        yield e


def get(e, path, key="all_access", **kw):
    return requests.get(e.url + path, headers={"Authorization": f"Bearer {KEYS[key]}"}, timeout=30, **kw)


def follow(e, path, key="all_access"):
    """Every row of a list, following `next` (absolute URLs) until it is null."""
    body = get(e, path, key).json()
    rows = list(body["results"])
    while body.get("next"):
        body = requests.get(body["next"], headers={"Authorization": f"Bearer {KEYS[key]}"}, timeout=30).json()
        rows += body["results"]
    return rows


# -- groups_types (§ 14.1) --------------------------------------------------------------------


def test_group_types_are_one_bare_array_by_index(emu):
    body = get(emu, "/api/projects/2/groups_types/?limit=1").json()
    assert isinstance(body, list) and len(body) == 3  # not paginated: `limit` means nothing
    assert [t["group_type_index"] for t in body] == [0, 1, 2] == emu.ground_truth("group_types")
    assert all(set(t) == GROUP_TYPE_FIELDS for t in body)
    assert [t["group_type"] for t in get(emu, "/api/projects/3/groups_types/").json()] == ["organization"]


# -- groups (§ 14.2) --------------------------------------------------------------------------


def test_groups_need_a_group_type_index(emu):
    missing = get(emu, "/api/projects/2/groups/")
    assert missing.status_code == 400 and missing.json()["attr"] == "group_type_index"
    assert "You must pass ?group_type_index= in this URL" in missing.json()["detail"]
    wrong = get(emu, "/api/projects/2/groups/?group_type_index=abc")
    assert wrong.status_code == 400 and wrong.json()["detail"] == "A valid integer is required."
    assert get(emu, "/api/projects/2/groups/?group_type_index=4").json() == {"next": None, "previous": None, "results": []}


def test_groups_pages_are_a_fixed_100_with_a_keyset_cursor_in_next(emu):
    first = get(emu, "/api/projects/2/groups/?group_type_index=0&limit=5").json()
    assert set(first) == {"next", "previous", "results"} and first["previous"] is None
    assert len(first["results"]) == 100  # `limit` is not a parameter of this endpoint
    parts = urlsplit(first["next"])
    assert f"{parts.scheme}://{parts.netloc}" == emu.url and parts.path == "/api/projects/2/groups/"
    query = parse_qs(parts.query)
    assert set(query) == {"group_type_index", "cursor"} and query["group_type_index"] == ["0"]
    last = first["results"][-1]
    cursor = json.loads(base64.urlsafe_b64decode(query["cursor"][0]))
    assert cursor["k"] == last["group_key"] and set(cursor) == {"c", "k"}
    assert all(set(g) == GROUP_FIELDS and g["group_type_index"] == 0 for g in first["results"])


def test_groups_of_every_type_equal_the_ground_truth_in_order_created_at_desc_key_desc(emu):
    read = []
    for group_type in get(emu, "/api/projects/2/groups_types/").json():
        rows = follow(emu, f"/api/projects/2/groups/?group_type_index={group_type['group_type_index']}")
        order = [(g["created_at"], g["group_key"]) for g in rows]
        assert order == sorted(order, reverse=True)
        read += [[g["group_type_index"], g["group_key"]] for g in rows]
    truth = emu.ground_truth("groups")
    assert read == truth and len({tuple(k) for k in truth}) == len(truth) == 370
    created = [g["created_at"] for g in follow(emu, "/api/projects/2/groups/?group_type_index=0")]
    assert len(created) > len(set(created)), "some groups share a created_at: the keyset must break ties by key"


def test_groups_filters_and_an_invalid_cursor_restarts(emu):
    some = get(emu, "/api/projects/2/groups/?group_type_index=1").json()["results"][3]
    by_key = get(emu, f"/api/projects/2/groups/?group_type_index=1&group_key={some['group_key'][-6:].upper()}").json()
    assert some["group_key"] in [g["group_key"] for g in by_key["results"]]
    exact = get(emu, f"/api/projects/2/groups/?group_type_index=1&search={some['group_key']}").json()["results"]
    assert [g["group_key"] for g in exact] == [some["group_key"]]
    restart = get(emu, "/api/projects/2/groups/?group_type_index=1&cursor=not-a-cursor").json()
    assert restart["results"][0] == get(emu, "/api/projects/2/groups/?group_type_index=1").json()["results"][0]


# -- dashboards (§ 14.3) ----------------------------------------------------------------------


def test_dashboards_are_a_counted_list_ordered_pinned_first_then_name_without_deleted_or_unlisted(emu):
    body = get(emu, "/api/projects/2/dashboards/?limit=7").json()
    assert set(body) == {"count", "next", "previous", "results"} and body["count"] == 30 and len(body["results"]) == 7
    rows = follow(emu, "/api/projects/2/dashboards/?limit=7")
    assert [d["id"] for d in rows] == emu.ground_truth("dashboards")
    assert [(not d["pinned"], d["name"]) for d in rows] == sorted((not d["pinned"], d["name"]) for d in rows)
    assert all(set(d) == DASHBOARD_FIELDS and not d["deleted"] and d["creation_mode"] != "unlisted" for d in rows)
    hidden = [e.item for e in emu.app.store.resources.rows["dashboards"] if e.hidden and e.team_id == 2]
    assert {d["creation_mode"] for d in hidden} >= {"unlisted"} and any(d["deleted"] for d in hidden)
    assert not {d["id"] for d in hidden} & {d["id"] for d in rows}
    assert get(emu, f"/api/projects/2/dashboards/{rows[0]['id']}/").json()["id"] == rows[0]["id"]


# -- experiments (§ 14.4) ---------------------------------------------------------------------


def test_experiments_hide_archived_unless_asked_and_archived_true_returns_only_those(emu):
    default = follow(emu, "/api/projects/2/experiments/")
    explicit = follow(emu, "/api/projects/2/experiments/?archived=false")
    archived = follow(emu, "/api/projects/2/experiments/?archived=true")
    assert default == explicit and default and archived
    assert not any(x["archived"] for x in default) and all(x["archived"] for x in archived)
    assert sorted(x["id"] for x in default + archived) == sorted(emu.ground_truth("experiments"))
    assert all(set(x) == EXPERIMENT_FIELDS and not x["deleted"] for x in default + archived)
    assert [x["created_at"] for x in default] == sorted((x["created_at"] for x in default), reverse=True)
    deleted = {e.item["id"] for e in emu.app.store.resources.rows["experiments"] if e.hidden}
    assert deleted and not deleted & {x["id"] for x in default + archived}
    assert get(emu, "/api/projects/2/experiments/?order=nonsense").status_code == 400


# -- surveys (§ 14.5) -------------------------------------------------------------------------


def test_surveys_keep_archived_ones_and_have_uuid_ids(emu):
    rows = follow(emu, "/api/projects/2/surveys/?limit=4")
    assert [s["id"] for s in rows] == emu.ground_truth("surveys") and len(rows) == 15
    assert any(s["archived"] for s in rows) and all(UUID.match(s["id"]) for s in rows)
    assert all(set(s) == SURVEY_FIELDS for s in rows)
    assert get(emu, "/api/projects/2/surveys/").json()["count"] == 15


# -- scopes and project 3 ---------------------------------------------------------------------


@pytest.mark.parametrize("path,scope", [
    ("groups_types/", "group:read"), ("groups/?group_type_index=0", "group:read"), ("dashboards/", "dashboard:read"),
    ("experiments/", "experiment:read"), ("surveys/", "survey:read"),
])
def test_each_resource_needs_its_read_scope_and_the_limited_keys_keep_it(emu, path, scope):
    assert RESOURCE_SCOPES[path.split("/")[0]] == scope and scope in READ_SCOPES
    for key in ("no_query", "no_persons", "no_recordings", "project_scoped"):
        assert get(emu, f"/api/projects/2/{path}", key=key).status_code == 200, key
    assert get(emu, f"/api/projects/2/{path}", key="other_project").status_code == 403


def test_project_3_has_a_handful_of_each(emu):
    truth = emu.app.store.ground_truth
    for stream in ("group_types", "groups", "dashboards", "experiments", "surveys"):
        assert 0 < len(truth(stream, project_id=3)) < 10, stream
    assert len(follow(emu, "/api/projects/3/groups/?group_type_index=0")) == 4
