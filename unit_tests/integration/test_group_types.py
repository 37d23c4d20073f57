"""group_types: `groups_types/` answers a bare JSON array, not paginated (docs/posthog-api.md § 14.1)."""

from __future__ import annotations

from airbyte_cdk.models import FailureType
from airbyte_cdk.test.mock_http import HttpMocker

from unit_tests.builders import PostHogRequest, PostHogResponse, load_template
from unit_tests.reader import as_emitted, config_errors, errors, final_state, read_stream, records

REQUEST = PostHogRequest.resource("groups_types").build()  # no `limit`: the endpoint has no pages


class TestGroupTypesFullRefresh:
    def test_given_a_bare_array_when_read_then_every_group_type_is_emitted_after_one_request(self, http_mocker: HttpMocker) -> None:
        body = load_template("group_types")
        http_mocker.get(REQUEST, PostHogResponse(body).build())

        output = read_stream("group_types")

        assert records(output) == as_emitted(body)
        assert [group_type["group_type_index"] for group_type in records(output)] == [0, 1]
        assert final_state(output) == {"__ab_full_refresh_sync_complete": True}
        http_mocker.assert_number_of_calls(REQUEST, 1)

    def test_given_no_group_types_when_read_then_nothing_is_emitted(self, http_mocker: HttpMocker) -> None:
        http_mocker.get(REQUEST, PostHogResponse([]).build())

        assert records(read_stream("group_types")) == []

    def test_given_an_object_instead_of_an_array_when_read_then_a_system_error_names_the_endpoint(self, http_mocker: HttpMocker) -> None:
        http_mocker.get(REQUEST, PostHogResponse({"results": []}).build())

        output = read_stream("group_types", expecting_exception=True)

        (error, *_) = errors(output)
        assert error.failure_type == FailureType.system_error
        assert "/api/projects/2/groups_types/" in error.message and "expected a JSON array" in error.message

    def test_given_key_without_scope_when_read_then_config_error_naming_the_scope(self, http_mocker: HttpMocker) -> None:
        http_mocker.get(REQUEST, PostHogResponse.forbidden_scope("group:read").build())

        output = read_stream("group_types", expecting_exception=True)

        (error, *_) = config_errors(output)
        assert "'group:read'" in error.message
        http_mocker.assert_number_of_calls(REQUEST, 1)
