"""projects: `/api/projects/` (every project the key sees); a project-scoped key falls back to its project."""

from __future__ import annotations

from airbyte_cdk.models import FailureType
from airbyte_cdk.test.mock_http import HttpMocker

from unit_tests.builders import PostHogRequest, PostHogResponse, load_template, record
from unit_tests.reader import config_errors, final_state, read_stream, records

LIMIT = 1000


class TestProjectsFullRefresh:
    def test_given_key_that_can_list_projects_when_read_then_every_project_is_emitted(self, http_mocker: HttpMocker) -> None:
        request = PostHogRequest.projects().with_limit(LIMIT).build()
        http_mocker.get(
            request,
            PostHogResponse.page("projects").with_records([record("projects", id=2), record("projects", id=3, name="Staging")]).with_count(2).build(),
        )

        output = read_stream("projects")

        assert [project["id"] for project in records(output)] == [2, 3]
        assert final_state(output) == {"__ab_full_refresh_sync_complete": True}
        http_mocker.assert_number_of_calls(request, 1)

    def test_given_more_projects_than_a_page_when_read_then_next_is_followed(self, http_mocker: HttpMocker) -> None:
        next_url = f"https://us.posthog.com/api/projects/?limit={LIMIT}&offset={LIMIT}"
        first = PostHogRequest.projects().with_limit(LIMIT).build()
        second = PostHogRequest.from_next_url(next_url).build()
        http_mocker.get(first, PostHogResponse.page("projects").with_records([record("projects", id=2)]).with_next(next_url).build())
        http_mocker.get(second, PostHogResponse.page("projects").with_records([record("projects", id=9)]).build())

        output = read_stream("projects")

        assert [project["id"] for project in records(output)] == [2, 9]
        http_mocker.assert_number_of_calls(second, 1)

    def test_given_project_scoped_key_when_list_is_forbidden_then_the_configured_project_is_read(self, http_mocker: HttpMocker) -> None:
        listing = PostHogRequest.projects().with_limit(LIMIT).build()
        detail = PostHogRequest.project(2).build()
        http_mocker.get(listing, PostHogResponse.error(403, "error_403_scoped_projects_list").build())
        http_mocker.get(detail, PostHogResponse(load_template("project")).build())

        output = read_stream("projects")

        assert not output.errors
        assert records(output) == [load_template("project")]
        http_mocker.assert_number_of_calls(listing, 1)
        http_mocker.assert_number_of_calls(detail, 1)

    def test_given_key_without_project_scope_when_read_then_config_error_naming_the_scope(self, http_mocker: HttpMocker) -> None:
        listing = PostHogRequest.projects().with_limit(LIMIT).build()
        detail = PostHogRequest.project(2).build()
        http_mocker.get(listing, PostHogResponse.forbidden_scope("project:read").build())
        http_mocker.get(detail, PostHogResponse.forbidden_scope("project:read").build())

        output = read_stream("projects", expecting_exception=True)

        assert records(output) == []
        (error, *_) = config_errors(output)
        assert "'project:read'" in error.message
        http_mocker.assert_number_of_calls(detail, 1)

    def test_given_invalid_key_when_read_then_config_error_at_once(self, http_mocker: HttpMocker) -> None:
        listing = PostHogRequest.projects().with_limit(LIMIT).build()
        http_mocker.get(listing, PostHogResponse.error(401).build())

        output = read_stream("projects", expecting_exception=True)

        (error, *_) = config_errors(output)
        assert error.failure_type == FailureType.config_error and "'api_key'" in error.message
        http_mocker.assert_number_of_calls(listing, 1)
