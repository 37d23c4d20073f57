"""The emulator sends exactly the fields PostHog's list serializers send (tools/emulator/serializer_fields.json,
read from PostHog's source), each with a JSON type the file allows, and every record it sends validates
against the connector's schema file for the stream with undeclared fields treated as errors.

    python -m pytest integration_tests/emulator_fidelity/test_serializer_fields.py -q
"""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import jsonschema
import pytest
import requests

from tools.emulator import KEYS, EmulatorConfig, EmulatorServer

ROOT = Path(__file__).resolve().parents[2]
STREAMS = json.loads((ROOT / "tools/emulator/serializer_fields.json").read_text())["streams"]
SCHEMAS = ROOT / "source_posthog/schemas"
PROJECT_ID_SCHEMA = {"type": "integer"}  # what source_posthog/streams/base.py adds to every stream's schema
HEADERS = {"Authorization": f"Bearer {KEYS['all_access']}"}
BASE = datetime.now(timezone.utc).replace(second=0, microsecond=0)


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    with EmulatorServer(EmulatorConfig(events=400, seed=5, base_time=BASE, data_dir=tmp_path_factory.mktemp("emu"))) as e:
        yield e


def _get(url: str) -> Any:
    response = requests.get(url, headers=HEADERS, timeout=30)
    assert response.status_code == 200, (url, response.text[:300])
    return response.json()


def _follow(e, path: str) -> list[dict]:
    body = _get(e.url + path)
    rows = list(body["results"])
    while body.get("next"):
        body = _get(body["next"])
        rows += body["results"]
    return rows


def _recordings(e, project: int) -> list[dict]:
    rows, offset = [], 0
    while True:
        body = _get(f"{e.url}/api/projects/{project}/session_recordings/?date_from=-100d&limit=200&offset={offset}")
        rows += body["results"]
        if not body["has_next"]:
            return rows
        offset += 200


def _cohort_persons(e, project: int) -> list[dict]:
    rows = []
    for cohort in _get(f"{e.url}/api/projects/{project}/cohorts/?limit=6")["results"]:
        rows += _get(f"{e.url}/api/projects/{project}/cohorts/{cohort['id']}/persons/?limit=1000")["results"]
    return rows


READERS: dict[str, Callable[[Any, int], list[dict]]] = {  # every record of a stream in a project
    "projects": lambda e, p: [_get(f"{e.url}/api/projects/{p}/")],
    "cohorts": lambda e, p: _follow(e, f"/api/projects/{p}/cohorts/"),
    "feature_flags": lambda e, p: _follow(e, f"/api/projects/{p}/feature_flags/") + _follow(e, f"/api/projects/{p}/feature_flags/?archived=true"),
    "insights": lambda e, p: _follow(e, f"/api/projects/{p}/insights/?basic=true"),
    "insights_full": lambda e, p: _follow(e, f"/api/projects/{p}/insights/"),
    "annotations": lambda e, p: _follow(e, f"/api/projects/{p}/annotations/"),
    "actions": lambda e, p: _follow(e, f"/api/projects/{p}/actions/"),
    "session_recordings": _recordings,
    "event_definitions": lambda e, p: _follow(e, f"/api/projects/{p}/event_definitions/"),
    "property_definitions": lambda e, p: [r for t in ("event", "person", "session", "group&group_type_index=0")
                                          for r in _follow(e, f"/api/projects/{p}/property_definitions/?type={t}")],
    "group_types": lambda e, p: _get(f"{e.url}/api/projects/{p}/groups_types/"),
    "groups": lambda e, p: [r for t in _get(f"{e.url}/api/projects/{p}/groups_types/")
                            for r in _follow(e, f"/api/projects/{p}/groups/?group_type_index={t['group_type_index']}")],
    "dashboards": lambda e, p: _follow(e, f"/api/projects/{p}/dashboards/"),
    "experiments": lambda e, p: _follow(e, f"/api/projects/{p}/experiments/") + _follow(e, f"/api/projects/{p}/experiments/?archived=true"),
    "surveys": lambda e, p: _follow(e, f"/api/projects/{p}/surveys/"),
    "persons": lambda e, p: _follow(e, f"/api/projects/{p}/persons/?limit=500"),
    "cohort_persons": _cohort_persons,
    "activity_log": lambda e, p: _follow(e, f"/api/projects/{p}/activity_log/?page_size=500"),
}


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    return {float: "number", str: "string", dict: "object", list: "array"}[type(value)]


def records(e, stream: str) -> Iterator[dict]:
    for project in (2, 3):
        yield from READERS[stream](e, project)


def strict_schema(file: str) -> dict:
    """The connector's schema of a stream (the file plus project_id), undeclared fields an error."""
    schema = json.loads((SCHEMAS / file).read_text())
    schema["properties"] = {**schema["properties"], "project_id": PROJECT_ID_SCHEMA}
    schema["additionalProperties"] = False
    return schema


def test_every_stream_of_the_file_is_read_here():
    assert set(READERS) == set(STREAMS)


@pytest.mark.parametrize("stream", sorted(STREAMS))
def test_records_have_exactly_the_serializer_fields_with_their_types(emu, stream):
    fields = STREAMS[stream]["fields"]
    rows = list(records(emu, stream))
    assert len(rows) >= 2, "too few records to check"
    for row in rows:
        assert set(row) == set(fields), (stream, sorted(set(row) ^ set(fields)))
        for name, value in row.items():
            kind = json_type(value)
            allowed = set(fields[name]) | ({"integer"} if "number" in fields[name] else set())
            assert kind in allowed, (stream, name, value)


@pytest.mark.parametrize("stream", sorted(s for s in STREAMS if STREAMS[s]["schema"]))
def test_records_validate_against_the_connectors_schema_without_undeclared_fields(emu, stream):
    validator = jsonschema.Draft7Validator(strict_schema(STREAMS[stream]["schema"]))
    for row in records(emu, stream):
        errors = [error.message for error in validator.iter_errors(row)]
        assert not errors, (stream, row.get("id"), errors[:3])


def test_the_schema_check_fails_when_a_field_is_dropped_from_a_schema(emu):
    """The check above is not vacuous: without one declared field, a record no longer validates."""
    rows = list(records(emu, "feature_flags"))
    schema = strict_schema("feature_flags.json")
    assert jsonschema.Draft7Validator(schema).is_valid(rows[0])
    dropped = copy.deepcopy(schema)
    del dropped["properties"]["evaluation_contexts"]
    assert not jsonschema.Draft7Validator(dropped).is_valid(rows[0])
    narrowed = copy.deepcopy(schema)
    narrowed["properties"]["updated_at"]["type"] = ["string"]  # never-edited flags send null
    assert any(not jsonschema.Draft7Validator(narrowed).is_valid(row) for row in rows)


def test_nullable_fields_are_sent_both_ways_where_the_data_has_both(emu):
    """A few fields PostHog sends as null or a value, both present in the emulator's data."""
    for stream, name in (("feature_flags", "updated_at"), ("insights", "last_viewed_at"), ("experiments", "start_date"),
                         ("activity_log", "user"), ("cohorts", "last_calculation")):
        kinds = {json_type(row[name]) for row in records(emu, stream)}
        assert "null" in kinds and len(kinds) == 2, (stream, name, kinds)
