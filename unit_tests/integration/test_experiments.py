"""experiments: two passes of a counted DRF list. PostHog hides archived experiments unless asked,
and `archived=true` returns only those (docs/posthog-api.md § 14.4)."""

from __future__ import annotations

from typing import Any, Dict, List

from airbyte_cdk.models import FailureType
from airbyte_cdk.test.mock_http import HttpMocker

from unit_tests.builders import PostHogRequest, PostHogResponse, record
from unit_tests.reader import as_emitted, config_errors, read_stream, records, states

LIMIT = 1000


def pass_request(archived: str) -> Any:
    return PostHogRequest.resource("experiments").with_limit(LIMIT).with_param("archived", archived)


def experiments(first: int, count: int, archived: bool) -> List[Dict[str, Any]]:
    return [record("experiments", id=n, name=f"Experiment {n}", archived=archived) for n in range(first, first + count)]


class TestExperimentsFullRefresh:
    def test_when_read_then_the_active_and_the_archived_pass_are_both_read(self, http_mocker: HttpMocker) -> None:
        active, archived = experiments(1, 3, False), experiments(10, 2, True)
        first_pass, second_pass = pass_request("false").build(), pass_request("true").build()
        http_mocker.get(first_pass, PostHogResponse.page("experiments").with_records(active).with_count(3).build())
        http_mocker.get(second_pass, PostHogResponse.page("experiments").with_records(archived).with_count(2).build())

        output = read_stream("experiments")

        assert records(output) == as_emitted(active + archived)
        assert states(output) == [{"next": None, "pass": {"archived": True}}, {"__ab_full_refresh_sync_complete": True}]
        http_mocker.assert_number_of_calls(first_pass, 1)
        http_mocker.assert_number_of_calls(second_pass, 1)

    def test_given_a_pass_with_two_pages_when_read_then_next_is_followed_inside_the_pass(self, http_mocker: HttpMocker) -> None:
        next_url = f"https://us.posthog.com/api/projects/2/experiments/?archived=true&limit={LIMIT}&offset={LIMIT}"
        http_mocker.get(pass_request("false").build(), PostHogResponse.page("experiments").with_records(experiments(1, 2, False)).build())
        http_mocker.get(
            pass_request("true").build(),
            PostHogResponse.page("experiments").with_records(experiments(100, LIMIT, True)).with_count(LIMIT + 4).with_next(next_url).build(),
        )
        second = PostHogRequest.from_next_url(next_url).build()
        http_mocker.get(second, PostHogResponse.page("experiments").with_records(experiments(100 + LIMIT, 4, True)).with_count(LIMIT + 4).build())

        output = read_stream("experiments")

        assert len(records(output)) == 2 + LIMIT + 4
        assert len({experiment["id"] for experiment in records(output)}) == 2 + LIMIT + 4
        http_mocker.assert_number_of_calls(second, 1)

    def test_given_a_server_that_ignores_the_archived_filter_when_read_then_no_experiment_is_emitted_twice(self, http_mocker: HttpMocker) -> None:
        everything = experiments(1, 2, False) + experiments(3, 2, True)
        for archived in ("false", "true"):
            http_mocker.get(pass_request(archived).build(), PostHogResponse.page("experiments").with_records(everything).build())

        output = read_stream("experiments")

        assert sorted(experiment["id"] for experiment in records(output)) == [1, 2, 3, 4]

    def test_given_key_without_scope_when_read_then_config_error_naming_the_scope(self, http_mocker: HttpMocker) -> None:
        request = pass_request("false").build()
        http_mocker.get(request, PostHogResponse.forbidden_scope("experiment:read").build())

        output = read_stream("experiments", expecting_exception=True)

        assert records(output) == []
        (error, *_) = config_errors(output)
        assert error.failure_type == FailureType.config_error and "'experiment:read'" in error.message
        http_mocker.assert_number_of_calls(request, 1)
