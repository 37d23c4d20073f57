"""groups: one slice per group type (read from `groups_types/` first), each paged by the keyset
cursor PostHog puts in `next`; a fixed page of 100, no `limit` (docs/posthog-api.md § 14.2)."""

from __future__ import annotations

from typing import Any, Dict, List

from airbyte_cdk.models import FailureType
from airbyte_cdk.test.mock_http import HttpMocker

from unit_tests.builders import PostHogRequest, PostHogResponse, load_template, record
from unit_tests.reader import as_emitted, config_errors, read_stream, records

GROUP_TYPES = PostHogRequest.resource("groups_types").build()


def of_type(index: int) -> Any:
    return PostHogRequest.resource("groups").with_param("group_type_index", index)


def groups(index: int, first: int, count: int) -> List[Dict[str, Any]]:
    return [record("groups", group_type_index=index, group_key=f"key-{n}", group_properties={"name": f"Group {n}"}) for n in range(first, first + count)]


def next_url(index: int, cursor: str) -> str:
    return f"https://us.posthog.com/api/projects/2/groups/?group_type_index={index}&cursor={cursor}"


class TestGroupsFullRefresh:
    def test_when_read_then_each_group_type_of_the_project_is_one_pass(self, http_mocker: HttpMocker) -> None:
        zero, one = of_type(0).build(), of_type(1).build()
        http_mocker.get(GROUP_TYPES, PostHogResponse(load_template("group_types")).build())  # indexes 0 and 1
        http_mocker.get(zero, PostHogResponse.page("groups").with_records(groups(0, 1, 3)).with_next(None).build())
        http_mocker.get(one, PostHogResponse.page("groups").with_records(groups(1, 1, 2)).with_next(None).build())

        output = read_stream("groups")

        assert records(output) == as_emitted(groups(0, 1, 3) + groups(1, 1, 2))
        for request in (GROUP_TYPES, zero, one):
            http_mocker.assert_number_of_calls(request, 1)

    def test_given_the_same_key_in_two_types_when_read_then_both_are_kept_apart_by_the_composite_key(self, http_mocker: HttpMocker) -> None:
        http_mocker.get(GROUP_TYPES, PostHogResponse(load_template("group_types")).build())
        for index in (0, 1):
            http_mocker.get(of_type(index).build(), PostHogResponse.page("groups").with_records(groups(index, 7, 1)).with_next(None).build())

        output = read_stream("groups")

        assert [(group["group_type_index"], group["group_key"]) for group in records(output)] == [(0, "key-7"), (1, "key-7")]

    def test_given_pages_of_100_when_read_then_the_cursor_in_next_is_followed_until_null(self, http_mocker: HttpMocker) -> None:
        http_mocker.get(GROUP_TYPES, PostHogResponse([{**load_template("group_types")[0], "group_type_index": 3}]).build())
        first = of_type(3).build()
        second = PostHogRequest.from_next_url(next_url(3, "eyJjIjogMSwgImsiOiAiYSJ9")).build()
        third = PostHogRequest.from_next_url(next_url(3, "eyJjIjogMiwgImsiOiAiYiJ9")).build()
        http_mocker.get(first, PostHogResponse.page("groups").with_records(groups(3, 0, 100)).with_next(next_url(3, "eyJjIjogMSwgImsiOiAiYSJ9")).build())
        http_mocker.get(second, PostHogResponse.page("groups").with_records(groups(3, 100, 100)).with_next(next_url(3, "eyJjIjogMiwgImsiOiAiYiJ9")).build())
        http_mocker.get(third, PostHogResponse.page("groups").with_records(groups(3, 200, 5)).with_next(None).build())

        output = read_stream("groups")

        assert [group["group_key"] for group in records(output)] == [f"key-{n}" for n in range(205)]
        for request in (first, second, third):
            http_mocker.assert_number_of_calls(request, 1)

    def test_given_a_project_without_group_types_when_read_then_no_group_is_requested(self, http_mocker: HttpMocker) -> None:
        http_mocker.get(GROUP_TYPES, PostHogResponse([]).build())

        output = read_stream("groups")

        assert records(output) == [] and not output.errors
        http_mocker.assert_number_of_calls(GROUP_TYPES, 1)

    def test_given_key_without_scope_when_read_then_config_error_naming_the_scope(self, http_mocker: HttpMocker) -> None:
        http_mocker.get(GROUP_TYPES, PostHogResponse.forbidden_scope("group:read").build())

        output = read_stream("groups", expecting_exception=True)

        assert records(output) == []
        (error, *_) = config_errors(output)
        assert error.failure_type == FailureType.config_error and "'group:read'" in error.message
