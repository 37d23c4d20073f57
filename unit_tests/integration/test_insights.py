"""insights: a counted list read with `basic=true` (the lighter serializer, no cached results)."""

from __future__ import annotations

from airbyte_cdk.models import FailureType
from airbyte_cdk.test.mock_http import HttpMocker

from unit_tests.builders import PostHogRequest, PostHogResponse, numbered
from unit_tests.reader import as_emitted, config_errors, final_state, read_stream, records

LIMIT = 1000
NEXT = f"https://us.posthog.com/api/projects/2/insights/?basic=true&limit={LIMIT}&offset={LIMIT}"


class TestInsightsFullRefresh:
    def test_given_one_page_when_read_then_the_light_payload_is_asked_for_and_every_insight_emitted(self, http_mocker: HttpMocker) -> None:
        request = PostHogRequest.insights().with_limit(LIMIT).with_basic().build()
        page = numbered("insights", 4)
        http_mocker.get(request, PostHogResponse.page("insights").with_records(page).with_count(4).build())

        output = read_stream("insights")

        assert records(output) == as_emitted(page)
        assert final_state(output) == {"__ab_full_refresh_sync_complete": True}
        http_mocker.assert_number_of_calls(request, 1)

    def test_given_two_pages_when_read_then_next_is_followed_as_given(self, http_mocker: HttpMocker) -> None:
        first = PostHogRequest.insights().with_limit(LIMIT).with_basic().build()
        second = PostHogRequest.from_next_url(NEXT).build()
        page_one, page_two = numbered("insights", LIMIT), numbered("insights", 2, start=LIMIT + 1)
        http_mocker.get(first, PostHogResponse.page("insights").with_records(page_one).with_next(NEXT).build())
        http_mocker.get(second, PostHogResponse.page("insights").with_records(page_two).build())

        output = read_stream("insights")

        assert records(output) == as_emitted(page_one + page_two)
        http_mocker.assert_number_of_calls(second, 1)

    def test_given_key_without_insight_scope_when_read_then_config_error_naming_the_scope(self, http_mocker: HttpMocker) -> None:
        request = PostHogRequest.insights().with_limit(LIMIT).with_basic().build()
        http_mocker.get(request, PostHogResponse.forbidden_scope("insight:read").build())

        output = read_stream("insights", expecting_exception=True)

        (error, *_) = config_errors(output)
        assert error.failure_type == FailureType.config_error and "'insight:read'" in error.message
        http_mocker.assert_number_of_calls(request, 1)
