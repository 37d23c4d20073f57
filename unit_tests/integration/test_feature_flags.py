"""feature_flags: a counted DRF list (`{"count", "next", "previous", "results"}`), full refresh."""

from __future__ import annotations

from airbyte_cdk.models import FailureType, SyncMode
from airbyte_cdk.test.mock_http import HttpMocker

from unit_tests.builders import PostHogRequest, PostHogResponse, numbered
from unit_tests.reader import as_emitted, config_errors, final_state, read_stream, records

STREAM = "feature_flags"
SCOPE = "feature_flag:read"
LIMIT = 1000
NEXT = f"https://us.posthog.com/api/projects/2/{STREAM}/?limit={LIMIT}&offset={LIMIT}"
IDS = None  # integer ids


class TestFeature_flagsFullRefresh:
    def test_given_one_page_when_read_then_every_record_is_emitted(self, http_mocker: HttpMocker) -> None:
        request = PostHogRequest.resource(STREAM).with_limit(LIMIT).build()
        page = numbered(STREAM, 3, id_format=IDS)
        http_mocker.get(request, PostHogResponse.page(STREAM).with_records(page).with_count(3).build())

        output = read_stream(STREAM)

        assert records(output) == as_emitted(page)
        assert final_state(output) == {"__ab_full_refresh_sync_complete": True}
        http_mocker.assert_number_of_calls(request, 1)

    def test_given_two_pages_when_read_then_next_is_followed_until_null(self, http_mocker: HttpMocker) -> None:
        first = PostHogRequest.resource(STREAM).with_limit(LIMIT).build()
        second = PostHogRequest.from_next_url(NEXT).build()
        page_one, page_two = numbered(STREAM, LIMIT, id_format=IDS), numbered(STREAM, 5, start=LIMIT + 1, id_format=IDS)
        http_mocker.get(first, PostHogResponse.page(STREAM).with_records(page_one).with_count(LIMIT + 5).with_next(NEXT).build())
        http_mocker.get(second, PostHogResponse.page(STREAM).with_records(page_two).with_count(LIMIT + 5).with_next(None).build())

        output = read_stream(STREAM)

        assert records(output) == as_emitted(page_one + page_two)
        http_mocker.assert_number_of_calls(first, 1)
        http_mocker.assert_number_of_calls(second, 1)

    def test_given_key_without_scope_when_read_then_config_error_naming_the_scope(self, http_mocker: HttpMocker) -> None:
        request = PostHogRequest.resource(STREAM).with_limit(LIMIT).build()
        http_mocker.get(request, PostHogResponse.forbidden_scope(SCOPE).build())

        output = read_stream(STREAM, expecting_exception=True)

        assert records(output) == []
        (error, *_) = config_errors(output)
        assert error.failure_type == FailureType.config_error and f"'{SCOPE}'" in error.message
        http_mocker.assert_number_of_calls(request, 1)

    def test_given_incremental_requested_when_read_then_full_list_is_read(self, http_mocker: HttpMocker) -> None:
        request = PostHogRequest.resource(STREAM).with_limit(LIMIT).build()
        page = numbered(STREAM, 2, id_format=IDS)
        http_mocker.get(request, PostHogResponse.page(STREAM).with_records(page).build())

        output = read_stream(STREAM, SyncMode.incremental)

        assert records(output) == as_emitted(page)
