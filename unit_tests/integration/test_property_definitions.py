"""property_definitions: one pass per `type` (event, person, session, and group 0..4); records say their type."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from airbyte_cdk.models import FailureType
from airbyte_cdk.test.mock_http import HttpMocker

from unit_tests.builders import PostHogRequest, PostHogResponse, record
from unit_tests.reader import as_emitted, config_errors, read_stream, records

LIMIT = 1000
PASSES: List[Dict[str, Any]] = [{"type": "event"}, {"type": "person"}, {"type": "session"}] + [
    {"type": "group", "group_type_index": index} for index in range(5)
]


def pass_request(kind: str, group_type_index: Optional[int] = None) -> Any:
    request = PostHogRequest.property_definitions().with_limit(LIMIT).with_type(kind)
    if group_type_index is not None:
        request = request.with_group_type_index(group_type_index)
    return request


def definitions(prefix: str, count: int) -> List[Dict[str, Any]]:
    return [record("property_definitions", id=f"{prefix}-{n}", name=f"${prefix}_{n}") for n in range(count)]


def label(partition: Dict[str, Any]) -> str:
    return f"{partition['type']}{partition.get('group_type_index', '')}"


class TestPropertyDefinitionsFullRefresh:
    def test_when_read_then_one_pass_per_type_and_each_record_says_its_type(self, http_mocker: HttpMocker) -> None:
        requests = {}
        for partition in PASSES:
            requests[label(partition)] = pass_request(partition["type"], partition.get("group_type_index")).build()
            http_mocker.get(
                requests[label(partition)],
                PostHogResponse.page("property_definitions").with_records(definitions(label(partition), 2)).build(),
            )

        output = read_stream("property_definitions")

        expected = [
            {**as_emitted(definition), **partition} for partition in PASSES for definition in definitions(label(partition), 2)
        ]
        assert records(output) == expected
        for request in requests.values():
            http_mocker.assert_number_of_calls(request, 1)

    def test_given_same_name_in_two_passes_when_read_then_both_records_are_kept_apart_by_type(self, http_mocker: HttpMocker) -> None:
        same = [record("property_definitions", id="shared-id", name="email")]
        for partition in PASSES:
            body = same if partition["type"] in ("event", "person") else []
            http_mocker.get(pass_request(partition["type"], partition.get("group_type_index")).build(), PostHogResponse.page("property_definitions").with_records(body).build())

        output = read_stream("property_definitions")

        assert [(definition["type"], definition["id"]) for definition in records(output)] == [("event", "shared-id"), ("person", "shared-id")]

    def test_given_a_pass_with_two_pages_when_read_then_next_is_followed_inside_the_pass(self, http_mocker: HttpMocker) -> None:
        next_url = f"https://us.posthog.com/api/projects/2/property_definitions/?limit={LIMIT}&offset={LIMIT}&type=person"
        second_page = PostHogRequest.from_next_url(next_url).build()
        for partition in PASSES:
            response = PostHogResponse.page("property_definitions").with_records(definitions(label(partition), 1))
            if partition["type"] == "person":
                response = PostHogResponse.page("property_definitions").with_records(definitions("person", LIMIT)).with_next(next_url)
            http_mocker.get(pass_request(partition["type"], partition.get("group_type_index")).build(), response.build())
        http_mocker.get(second_page, PostHogResponse.page("property_definitions").with_records(definitions("person-page2", 3)).build())

        output = read_stream("property_definitions")

        person = [definition for definition in records(output) if definition["type"] == "person"]
        assert len(person) == LIMIT + 3
        assert len(records(output)) == LIMIT + 3 + 7
        http_mocker.assert_number_of_calls(second_page, 1)

    def test_given_key_without_scope_when_read_then_config_error_naming_the_scope(self, http_mocker: HttpMocker) -> None:
        request = pass_request("event").build()
        http_mocker.get(request, PostHogResponse.forbidden_scope("property_definition:read").build())

        output = read_stream("property_definitions", expecting_exception=True)

        (error, *_) = config_errors(output)
        assert error.failure_type == FailureType.config_error and "'property_definition:read'" in error.message
        http_mocker.assert_number_of_calls(request, 1)
