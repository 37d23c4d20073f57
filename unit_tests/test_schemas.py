"""The stream schemas declare every field PostHog's list serializers send, each with a type that admits
every JSON type the serializer sends it as (nullable where PostHog may send null), and one JSON
type per field besides null (PyAirbyte and typed destinations find no column type for a union).

The expectations are tools/emulator/serializer_fields.json, read from PostHog's source; it is read
here as data (json), never imported, so the unit tests load nothing of tools/ (test_layout.py).
integration_tests/emulator_fidelity/test_serializer_fields.py checks the emulator's records against
the same file and against these schemas with undeclared fields treated as errors.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Dict, List

import jsonschema
import pytest

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "source_posthog" / "schemas"
SERIALIZER_FIELDS = json.loads((ROOT / "tools" / "emulator" / "serializer_fields.json").read_text())["streams"]
JSON_TYPES = {"null", "string", "integer", "number", "boolean", "object", "array"}

#: Fields the connector itself puts on records (kept in the schemas whatever PostHog sends).
CONNECTOR_FIELDS = {
    "persons.json": {"id": {"string"}, "uuid": {"string"}, "distinct_ids": {"array"}, "properties": {"object"},
                     "is_identified": {"boolean"}, "created_at": {"string"}, "last_seen_at": {"string"}},
    "property_definitions.json": {"type": {"string"}, "group_type_index": {"integer", "null"}},
    "experiments.json": {"archived": {"boolean"}},
    "cohort_membership.json": {"cohort_id": {"integer"}, "person_id": {"string"}},
}


def load(name: str) -> dict:
    return json.loads((SCHEMAS / name).read_text())


def declared_types(prop: dict) -> set:
    kinds = prop.get("type", [])
    return {kinds} if isinstance(kinds, str) else set(kinds)


def missing_or_narrow(schema: dict, fields: Dict[str, List[str]]) -> List[str]:
    """The serializer fields a schema does not declare, or declares with a type that refuses one PostHog sends."""
    props = schema.get("properties", {})
    problems = []
    for name, kinds in fields.items():
        if name == "project_id":  # added to every record by the connector (source_posthog/streams/base.py)
            continue
        if name not in props:
            problems.append(f"{name}: not declared")
        elif not set(kinds) <= declared_types(props[name]):
            problems.append(f"{name}: declared {sorted(declared_types(props[name]))}, PostHog sends {sorted(kinds)}")
    return problems


WITH_SCHEMA = sorted(name for name, spec in SERIALIZER_FIELDS.items() if spec["schema"])


def test_the_expectations_name_their_posthog_source_and_use_json_types_only() -> None:
    assert {"projects", "cohorts", "feature_flags", "insights", "annotations", "actions", "session_recordings",
            "event_definitions", "property_definitions", "group_types", "groups", "dashboards", "experiments",
            "surveys", "persons", "activity_log"} <= set(WITH_SCHEMA)
    for name, spec in SERIALIZER_FIELDS.items():
        assert spec["source"] and spec["serializer"] and spec["fields"], name
        for field, kinds in spec["fields"].items():
            assert kinds and set(kinds) <= JSON_TYPES, (name, field, kinds)


@pytest.mark.parametrize("stream", WITH_SCHEMA)
def test_given_a_stream_then_its_schema_declares_every_serializer_field_with_a_compatible_type(stream: str) -> None:
    spec = SERIALIZER_FIELDS[stream]

    problems = missing_or_narrow(load(spec["schema"]), spec["fields"])

    assert not problems, f"{spec['schema']} ({spec['serializer']}, {spec['source']}): {problems}"


def test_given_a_field_dropped_or_narrowed_then_the_check_reports_it() -> None:
    spec = SERIALIZER_FIELDS["projects"]
    schema = load("projects.json")
    dropped = copy.deepcopy(schema)
    del dropped["properties"]["session_recording_sample_rate"]
    narrowed = copy.deepcopy(schema)
    narrowed["properties"]["primary_dashboard"]["type"] = ["integer"]

    assert missing_or_narrow(schema, spec["fields"]) == []
    assert missing_or_narrow(dropped, spec["fields"]) == ["session_recording_sample_rate: not declared"]
    assert missing_or_narrow(narrowed, spec["fields"]) == [
        "primary_dashboard: declared ['integer'], PostHog sends ['integer', 'null']"]


@pytest.mark.parametrize("name", sorted(p.name for p in SCHEMAS.glob("*.json")))
def test_given_a_schema_file_then_it_is_a_valid_draft7_object_schema_without_project_id(name: str) -> None:
    schema = load(name)

    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["type"] == "object" and schema["properties"]
    assert "project_id" not in schema["properties"], "project_id is added by the connector (streams/base.py)"
    unions = {name: sorted(declared_types(prop)) for name, prop in schema["properties"].items()
              if len(declared_types(prop) - {"null"}) != 1}
    assert not unions, f"one JSON type (and null) per field, or typed destinations find no SQL type: {unions}"


@pytest.mark.parametrize("name", sorted(CONNECTOR_FIELDS))
def test_given_fields_the_connector_emits_itself_then_they_stay_declared(name: str) -> None:
    props = load(name)["properties"]

    for field, kinds in CONNECTOR_FIELDS[name].items():
        assert field in props and kinds <= declared_types(props[field]), (name, field)


def test_the_new_streams_schemas_keep_the_activity_detail_an_object_and_membership_its_pair() -> None:
    activity = load("activity_log.json")["properties"]
    membership = load("cohort_membership.json")["properties"]

    assert declared_types(activity["detail"]) == {"null", "object"}
    assert {"name", "changes"} <= set(activity["detail"]["properties"])
    assert set(membership) == {"cohort_id", "person_id", "static"}  # `static`: which HogQL table the pair came from
