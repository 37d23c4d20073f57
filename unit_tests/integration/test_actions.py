"""actions: current PostHog returns one unpaginated `{"results": [...]}`; older servers paginate."""

from __future__ import annotations

from airbyte_cdk.models import FailureType
from airbyte_cdk.test.mock_http import HttpMocker

from unit_tests.builders import PostHogRequest, PostHogResponse, numbered
from unit_tests.reader import as_emitted, config_errors, final_state, read_stream, records

LIMIT = 1000
NEXT = f"https://us.posthog.com/api/projects/2/actions/?limit={LIMIT}&offset={LIMIT}"


class TestActionsFullRefresh:
    def test_given_unpaginated_results_when_read_then_every_action_is_emitted_in_one_call(self, http_mocker: HttpMocker) -> None:
        request = PostHogRequest.actions().with_limit(LIMIT).build()
        everything = numbered("actions", 1500)  # more than a page: the current API ignores limit
        http_mocker.get(request, PostHogResponse.page("actions").with_records(everything).build())

        output = read_stream("actions")

        assert records(output) == as_emitted(everything)
        assert final_state(output) == {"__ab_full_refresh_sync_complete": True}
        http_mocker.assert_number_of_calls(request, 1)

    def test_given_older_paginated_shape_when_read_then_next_is_followed(self, http_mocker: HttpMocker) -> None:
        first = PostHogRequest.actions().with_limit(LIMIT).build()
        second = PostHogRequest.from_next_url(NEXT).build()
        page_one, page_two = numbered("actions_paginated", LIMIT), numbered("actions_paginated", 3, start=LIMIT + 1)
        http_mocker.get(first, PostHogResponse.page("actions_paginated").with_records(page_one).with_count(LIMIT + 3).with_next(NEXT).build())
        http_mocker.get(second, PostHogResponse.page("actions_paginated").with_records(page_two).with_count(LIMIT + 3).build())

        output = read_stream("actions")

        assert records(output) == as_emitted(page_one + page_two)
        http_mocker.assert_number_of_calls(first, 1)
        http_mocker.assert_number_of_calls(second, 1)

    def test_given_key_without_action_scope_when_read_then_config_error_naming_the_scope(self, http_mocker: HttpMocker) -> None:
        request = PostHogRequest.actions().with_limit(LIMIT).build()
        http_mocker.get(request, PostHogResponse.forbidden_scope("action:read").build())

        output = read_stream("actions", expecting_exception=True)

        (error, *_) = config_errors(output)
        assert error.failure_type == FailureType.config_error and "'action:read'" in error.message
        http_mocker.assert_number_of_calls(request, 1)
