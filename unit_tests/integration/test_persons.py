"""persons: `{"next", "previous", "results"}`; `next` is absolute and is the only end-of-list signal."""

from __future__ import annotations

from typing import List

from airbyte_cdk.models import FailureType, SyncMode
from airbyte_cdk.test.mock_http import HttpMocker

from unit_tests.builders import API_KEY, PostHogRequest, PostHogResponse, person_uuid, record
from unit_tests.reader import config_errors, everything_emitted, final_state, read_stream, records, states

LIMIT = 1000


def persons(first: int, count: int) -> List[dict]:
    return [record("persons", id=person_uuid(n), uuid=person_uuid(n), name=f"user{n}@example.com") for n in range(first, first + count)]


def next_url(offset: int, host: str = "https://us.posthog.com") -> str:
    return f"{host}/api/projects/2/persons/?limit={LIMIT}&offset={offset}"


class TestPersonsFullRefresh:
    def test_given_one_page_when_read_then_every_person_is_emitted_with_uuid_as_id(self, http_mocker: HttpMocker) -> None:
        request = PostHogRequest.persons().with_limit(LIMIT).build()
        http_mocker.get(request, PostHogResponse.page("persons").with_records(persons(1, 3)).build())

        output = read_stream("persons")

        assert [person["id"] for person in records(output)] == [person_uuid(n) for n in (1, 2, 3)]
        assert all(person["id"] == person["uuid"] for person in records(output))
        assert final_state(output) == {"__ab_full_refresh_sync_complete": True}
        http_mocker.assert_number_of_calls(request, 1)

    def test_given_absolute_next_when_read_then_it_is_followed_until_null(self, http_mocker: HttpMocker) -> None:
        first = PostHogRequest.persons().with_limit(LIMIT).build()
        second = PostHogRequest.from_next_url(next_url(LIMIT)).build()
        third = PostHogRequest.from_next_url(next_url(2 * LIMIT)).build()
        http_mocker.get(first, PostHogResponse.page("persons").with_records(persons(1, LIMIT)).with_next(next_url(LIMIT)).build())
        http_mocker.get(second, PostHogResponse.page("persons").with_records(persons(1001, LIMIT)).with_next(next_url(2 * LIMIT)).build())
        http_mocker.get(third, PostHogResponse.page("persons").with_records(persons(2001, 10)).with_next(None).build())

        output = read_stream("persons")

        assert len(records(output)) == 2 * LIMIT + 10
        assert len({person["id"] for person in records(output)}) == 2 * LIMIT + 10
        for request in (first, second, third):
            http_mocker.assert_number_of_calls(request, 1)

    def test_given_short_page_with_next_when_read_then_it_does_not_stop(self, http_mocker: HttpMocker) -> None:
        # PostHog builds persons pages from an ActorsQuery: a page can be short and still have a `next`.
        first = PostHogRequest.persons().with_limit(LIMIT).build()
        second = PostHogRequest.from_next_url(next_url(LIMIT)).build()
        http_mocker.get(first, PostHogResponse.page("persons").with_records(persons(1, 3)).with_next(next_url(LIMIT)).build())
        http_mocker.get(second, PostHogResponse.page("persons").with_records(persons(4, 2)).build())

        output = read_stream("persons")

        assert [person["id"] for person in records(output)] == [person_uuid(n) for n in range(1, 6)]
        http_mocker.assert_number_of_calls(second, 1)

    def test_given_empty_page_with_next_when_read_then_it_still_follows_next(self, http_mocker: HttpMocker) -> None:
        first = PostHogRequest.persons().with_limit(LIMIT).build()
        second = PostHogRequest.from_next_url(next_url(LIMIT)).build()
        http_mocker.get(first, PostHogResponse.page("persons").with_records([]).with_next(next_url(LIMIT)).build())
        http_mocker.get(second, PostHogResponse.page("persons").with_records(persons(1, 1)).build())

        output = read_stream("persons")

        assert [person["id"] for person in records(output)] == [person_uuid(1)]

    def test_given_next_on_an_internal_host_when_read_then_the_key_is_sent_only_to_the_configured_host(self, http_mocker: HttpMocker) -> None:
        # A self-hosted PostHog behind a TLS proxy builds `http://internal:8000/...` links.
        first = PostHogRequest.persons().with_limit(LIMIT).build()
        rebased = PostHogRequest.from_next_url(next_url(LIMIT, host="http://posthog-web.internal:8000")).build()
        http_mocker.get(first, PostHogResponse.page("persons").with_records(persons(1, 2)).with_next(next_url(LIMIT, host="http://posthog-web.internal:8000")).build())
        http_mocker.get(rebased, PostHogResponse.page("persons").with_records(persons(3, 1)).build())

        output = read_stream("persons")

        assert len(records(output)) == 3
        http_mocker.assert_number_of_calls(rebased, 1)

    def test_when_a_page_is_read_then_the_next_page_is_checkpointed(self, http_mocker: HttpMocker) -> None:
        http_mocker.get(PostHogRequest.persons().with_limit(LIMIT).build(), PostHogResponse.page("persons").with_records(persons(1, 2)).with_next(next_url(LIMIT)).build())
        http_mocker.get(PostHogRequest.from_next_url(next_url(LIMIT)).build(), PostHogResponse.page("persons").with_records(persons(3, 1)).build())

        output = read_stream("persons")

        assert states(output) == [{"next": f"/api/projects/2/persons/?limit={LIMIT}&offset={LIMIT}"}, {"__ab_full_refresh_sync_complete": True}]
        assert API_KEY not in str(states(output))

    def test_given_checkpoint_of_a_killed_sync_when_read_then_it_resumes_from_the_saved_page(self, http_mocker: HttpMocker) -> None:
        resumed = PostHogRequest.from_next_url(next_url(LIMIT)).build()
        http_mocker.get(resumed, PostHogResponse.page("persons").with_records(persons(1001, 4)).build())

        output = read_stream("persons", SyncMode.full_refresh, state={"next": f"/api/projects/2/persons/?limit={LIMIT}&offset={LIMIT}"})

        assert [person["id"] for person in records(output)] == [person_uuid(n) for n in range(1001, 1005)]
        http_mocker.assert_number_of_calls(resumed, 1)

    def test_given_key_without_person_scope_when_read_then_config_error_naming_the_scope(self, http_mocker: HttpMocker) -> None:
        request = PostHogRequest.persons().with_limit(LIMIT).build()
        http_mocker.get(request, PostHogResponse.forbidden_scope("person:read").build())

        output = read_stream("persons", expecting_exception=True)

        assert records(output) == []
        (error, *_) = config_errors(output)
        assert error.failure_type == FailureType.config_error
        assert "'person:read'" in error.message and "persons" in error.message
        http_mocker.assert_number_of_calls(request, 1)
        assert API_KEY not in everything_emitted(output)
