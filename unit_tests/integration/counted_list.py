"""The contract of a counted DRF list stream (`{"count", "next", "previous", "results"}`), full refresh.

Each such stream's module subclasses `CountedListContract` and names its stream, scope and id shape.
"""

from __future__ import annotations

from airbyte_cdk.models import FailureType, SyncMode
from airbyte_cdk.test.mock_http import HttpMocker

from unit_tests.builders import PostHogRequest, PostHogResponse, numbered
from unit_tests.reader import as_emitted, config_errors, final_state, read_stream, records


LIMIT = 1000


class CountedListContract:
    stream = ""
    scope = ""
    id_format = None  # integer ids; a format string for uuid ids
    # Lists read in passes (feature_flags: active, then archived): the records are in the first;
    # each further pass answers an empty page.
    pass_params: tuple = ({},)

    @property
    def next_url(self) -> str:
        extra = "".join(f"{key}={value}&" for key, value in self.pass_params[0].items())
        return f"https://us.posthog.com/api/projects/2/{self.stream}/?{extra}limit={LIMIT}&offset={LIMIT}"

    def first_request(self, index: int = 0) -> object:
        request = PostHogRequest.resource(self.stream).with_limit(LIMIT)
        for key, value in self.pass_params[index].items():
            request = request.with_param(key, value)
        return request.build()

    def other_passes_are_empty(self, http_mocker: HttpMocker) -> None:
        for index in range(1, len(self.pass_params)):
            http_mocker.get(self.first_request(index), PostHogResponse.page(self.stream).with_records([]).with_count(0).build())

    def test_given_one_page_when_read_then_every_record_is_emitted(self, http_mocker: HttpMocker) -> None:
        request = self.first_request()
        self.other_passes_are_empty(http_mocker)
        page = numbered(self.stream, 3, id_format=self.id_format)
        http_mocker.get(request, PostHogResponse.page(self.stream).with_records(page).with_count(3).build())

        output = read_stream(self.stream)

        assert records(output) == as_emitted(page)
        assert final_state(output) == {"__ab_full_refresh_sync_complete": True}
        http_mocker.assert_number_of_calls(request, 1)

    def test_given_two_pages_when_read_then_next_is_followed_until_null(self, http_mocker: HttpMocker) -> None:
        first = self.first_request()
        self.other_passes_are_empty(http_mocker)
        second = PostHogRequest.from_next_url(self.next_url).build()
        page_one, page_two = numbered(self.stream, LIMIT, id_format=self.id_format), numbered(self.stream, 5, start=LIMIT + 1, id_format=self.id_format)
        http_mocker.get(first, PostHogResponse.page(self.stream).with_records(page_one).with_count(LIMIT + 5).with_next(self.next_url).build())
        http_mocker.get(second, PostHogResponse.page(self.stream).with_records(page_two).with_count(LIMIT + 5).with_next(None).build())

        output = read_stream(self.stream)

        assert records(output) == as_emitted(page_one + page_two)
        http_mocker.assert_number_of_calls(first, 1)
        http_mocker.assert_number_of_calls(second, 1)

    def test_given_key_without_scope_when_read_then_config_error_naming_the_scope(self, http_mocker: HttpMocker) -> None:
        request = self.first_request()
        http_mocker.get(request, PostHogResponse.forbidden_scope(self.scope).build())

        output = read_stream(self.stream, expecting_exception=True)

        assert records(output) == []
        (error, *_) = config_errors(output)
        assert error.failure_type == FailureType.config_error and f"'{self.scope}'" in error.message
        http_mocker.assert_number_of_calls(request, 1)

    def test_given_incremental_requested_when_read_then_full_list_is_read(self, http_mocker: HttpMocker) -> None:
        request = self.first_request()
        self.other_passes_are_empty(http_mocker)
        page = numbered(self.stream, 2, id_format=self.id_format)
        http_mocker.get(request, PostHogResponse.page(self.stream).with_records(page).build())

        output = read_stream(self.stream, SyncMode.incremental)

        assert records(output) == as_emitted(page)
