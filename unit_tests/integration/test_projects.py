"""projects: `/api/projects/{id}/`, one record per project read (configured, or listed with all_projects)."""

from __future__ import annotations

from airbyte_cdk.models import FailureType
from airbyte_cdk.test.mock_http import HttpMocker

from unit_tests.builders import ConfigBuilder, PostHogRequest, PostHogResponse, load_template
from unit_tests.reader import config_errors, final_state, read_stream, records


def project(project_id: int, name: str = "Default project") -> dict:
    return {**load_template("project"), "id": project_id, "name": name}


class TestProjectsFullRefresh:
    def test_given_one_project_when_read_then_its_detail_is_the_one_record(self, http_mocker: HttpMocker) -> None:
        detail = PostHogRequest.project(2).build()
        http_mocker.get(detail, PostHogResponse(load_template("project")).build())

        output = read_stream("projects")

        assert records(output) == [load_template("project")]
        assert final_state(output) == {"__ab_full_refresh_sync_complete": True}
        http_mocker.assert_number_of_calls(detail, 1)

    def test_given_additional_projects_when_read_then_each_is_emitted_once_with_its_project_id(self, http_mocker: HttpMocker) -> None:
        for project_id, name in ((2, "Production"), (3, "Staging")):
            http_mocker.get(PostHogRequest.project(project_id).build(), PostHogResponse(project(project_id, name)).build())
        config = ConfigBuilder().with_field("additional_project_ids", [3, 2]).build()  # 2 twice: read once

        output = read_stream("projects", config=config)

        emitted = [message.record.data for message in output.records]
        assert [(record["id"], record["project_id"], record["name"]) for record in emitted] == [(2, 2, "Production"), (3, 3, "Staging")]

    def test_given_all_projects_when_read_then_every_listed_project_is_read_after_the_configured_ones(self, http_mocker: HttpMocker) -> None:
        listing = PostHogRequest.projects().with_limit(100).build()
        http_mocker.get(listing, PostHogResponse.page("projects").with_records([project(5), project(2), project(4)]).build())
        for project_id in (2, 4, 5):
            http_mocker.get(PostHogRequest.project(project_id).build(), PostHogResponse(project(project_id)).build())
        config = ConfigBuilder().with_field("all_projects", True).build()

        output = read_stream("projects", config=config)

        assert [message.record.data["project_id"] for message in output.records] == [2, 5, 4]
        http_mocker.assert_number_of_calls(listing, 1)

    def test_given_all_projects_and_a_key_that_cannot_list_them_when_read_then_the_configured_project_is_read_and_it_says_so(self, http_mocker: HttpMocker) -> None:
        http_mocker.get(PostHogRequest.projects().with_limit(100).build(), PostHogResponse.error(403, "error_403_scoped_projects_list").build())
        http_mocker.get(PostHogRequest.project(2).build(), PostHogResponse(project(2)).build())

        output = read_stream("projects", config=ConfigBuilder().with_field("all_projects", True).build())

        assert [record["id"] for record in records(output)] == [2]
        assert any("cannot list projects" in log.log.message for log in output.logs)

    def test_given_key_without_project_scope_when_read_then_config_error_naming_the_scope(self, http_mocker: HttpMocker) -> None:
        detail = PostHogRequest.project(2).build()
        http_mocker.get(detail, PostHogResponse.forbidden_scope("project:read").build())

        output = read_stream("projects", expecting_exception=True)

        assert records(output) == []
        (error, *_) = config_errors(output)
        assert "'project:read'" in error.message
        http_mocker.assert_number_of_calls(detail, 1)

    def test_given_invalid_key_when_read_then_config_error_at_once(self, http_mocker: HttpMocker) -> None:
        detail = PostHogRequest.project(2).build()
        http_mocker.get(detail, PostHogResponse.error(401).build())

        output = read_stream("projects", expecting_exception=True)

        (error, *_) = config_errors(output)
        assert error.failure_type == FailureType.config_error and "'api_key'" in error.message
        http_mocker.assert_number_of_calls(detail, 1)
