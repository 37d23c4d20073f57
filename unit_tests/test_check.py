"""`check`: one request to `/api/projects/{id}/` proves host, key and project; failures say what to fix."""

from __future__ import annotations

import logging
from typing import Any, List

import pytest
import requests
from airbyte_cdk.models import Status
from airbyte_cdk.test.mock_http import HttpMocker

from unit_tests.builders import API_KEY, ConfigBuilder, PostHogRequest, PostHogResponse, load_template, mock_current_key, mock_scope_probes, readable_everywhere
from source_posthog.source import SourcePosthog
from unit_tests.reader import connection_status, everything_emitted, run_check


def assert_no_secret(output: Any, capsys: Any) -> None:
    assert API_KEY not in everything_emitted(output)
    captured = capsys.readouterr()
    assert API_KEY not in captured.out and API_KEY not in captured.err


def assert_failed_naming(output: Any, texts: List[str]) -> str:
    status = connection_status(output)
    assert status.status == Status.FAILED
    for text in texts:
        assert text in status.message, f"{text!r} not in {status.message!r}"
    return status.message


class TestCheckSucceeds:
    def test_given_valid_key_and_project_when_check_then_succeeded_after_one_request(self, http_mocker: HttpMocker, capsys: Any) -> None:
        request = PostHogRequest.project(2).build()  # carries `Authorization: Bearer <key>`
        http_mocker.get(request, PostHogResponse(load_template("project")).build())
        mock_scope_probes(http_mocker)

        output = run_check(ConfigBuilder().build())

        assert connection_status(output).status == Status.SUCCEEDED
        http_mocker.assert_number_of_calls(request, 1)
        assert_no_secret(output, capsys)

    def test_given_loopback_http_host_when_check_then_it_is_allowed(self, requests_mock: Any) -> None:
        readable_everywhere(requests_mock, "http://localhost:8000")
        mocked = requests_mock.get("http://localhost:8000/api/projects/2/", json=load_template("project"))

        output = run_check(ConfigBuilder().with_host("http://localhost:8000/").build())

        assert connection_status(output).status == Status.SUCCEEDED
        assert mocked.call_count == 1

    def test_given_eu_host_with_api_suffix_when_check_then_eu_is_called(self, requests_mock: Any) -> None:
        readable_everywhere(requests_mock, "https://eu.posthog.com")
        mocked = requests_mock.get("https://eu.posthog.com/api/projects/2/", json=load_template("project"))

        output = run_check(ConfigBuilder().with_host("https://eu.posthog.com/api/").build())

        assert connection_status(output).status == Status.SUCCEEDED
        assert mocked.call_count == 1


class TestCheckFailsWithTheFix:
    @pytest.mark.parametrize(
        "response, texts",
        [
            pytest.param(PostHogResponse.error(401), ["'api_key'", "personal API key", "us.posthog.com"], id="401"),
            pytest.param(PostHogResponse.forbidden_scope("project:read"), ["'project:read' scope"], id="403-scope"),
            pytest.param(PostHogResponse.error(403, "error_403_project"), ["project 2", "'project_id'"], id="403-project"),
            pytest.param(PostHogResponse.error(404), ["project 2", "'project_id'", "'host'"], id="404"),
        ],
    )
    def test_given_client_error_when_check_then_failed_with_message_naming_the_fix(
        self, http_mocker: HttpMocker, capsys: Any, response: PostHogResponse, texts: List[str]
    ) -> None:
        request = PostHogRequest.project(2).build()
        http_mocker.get(request, response.build())

        output = run_check(ConfigBuilder().build())

        assert_failed_naming(output, texts)
        http_mocker.assert_number_of_calls(request, 1)
        assert_no_secret(output, capsys)

    def test_given_unreachable_host_when_check_then_failed_naming_host_and_the_right_values(self, requests_mock: Any, capsys: Any) -> None:
        requests_mock.get("https://posthog.unreachable.example/api/projects/2/", exc=requests.exceptions.ConnectionError("Name or service not known"))

        output = run_check(ConfigBuilder().with_host("posthog.unreachable.example").build())

        assert_failed_naming(output, ["https://posthog.unreachable.example", "'host'", "us.posthog.com", "eu.posthog.com"])
        assert_no_secret(output, capsys)

    def test_given_host_that_redirects_when_check_then_failed_and_the_key_is_not_sent_on(self, requests_mock: Any) -> None:
        requests_mock.get("https://app.posthog.example/api/projects/2/", status_code=301, headers={"Location": "https://login.example/"})
        elsewhere = requests_mock.get("https://login.example/", text="login")

        output = run_check(ConfigBuilder().with_host("app.posthog.example").build())

        assert_failed_naming(output, ["'host'", "301"])
        assert elsewhere.call_count == 0

    @pytest.mark.parametrize("host, right", [("us.i.posthog.com", "us.posthog.com"), ("eu.i.posthog.com", "eu.posthog.com")])
    def test_given_ingestion_host_when_check_then_failed_naming_the_api_host_without_any_request(
        self, http_mocker: HttpMocker, host: str, right: str
    ) -> None:
        output = run_check(ConfigBuilder().with_host(host).build())

        assert_failed_naming(output, ["'host'", f"Use {right}"])

    def test_given_plain_http_to_a_remote_host_when_check_then_failed_before_the_key_travels(self, http_mocker: HttpMocker, capsys: Any) -> None:
        output = run_check(ConfigBuilder().with_host("http://posthog.example.com").build())

        assert_failed_naming(output, ["'host'", "https://posthog.example.com"])
        assert_no_secret(output, capsys)

    @pytest.mark.parametrize("anchor_date", ["2025-13-45", "2025-02-30", "01/02/2025", "last year"])
    def test_given_malformed_anchor_date_when_check_then_failed_naming_the_field_and_format(self, http_mocker: HttpMocker, anchor_date: str) -> None:
        output = run_check(ConfigBuilder().with_anchor_date(anchor_date).build())

        message = assert_failed_naming(output, ["anchor_date"])
        assert "2025-01-01" in message or "YYYY-MM-DD" in message

    def test_given_future_anchor_date_when_check_then_failed_saying_it_is_in_the_future(self, http_mocker: HttpMocker) -> None:
        output = run_check(ConfigBuilder().with_anchor_date("2025-07-01").build())

        assert_failed_naming(output, ["'anchor_date'", "future"])

    def test_given_project_api_key_when_check_then_failed_asking_for_a_personal_key(self, http_mocker: HttpMocker, capsys: Any) -> None:
        output = run_check(ConfigBuilder().with_api_key("phc_projecttoken").build())

        assert_failed_naming(output, ["'api_key'", "phx_"])

    @pytest.mark.parametrize(
        "response",
        [
            pytest.param(PostHogResponse.error(401), id="401"),
            pytest.param(PostHogResponse.error(500), id="500"),
            pytest.param(PostHogResponse.raw(f"<html>echo Bearer {API_KEY}</html>", 400), id="400-echoing-the-header"),
        ],
    )
    def test_given_any_failure_when_check_then_the_api_key_appears_in_no_message(
        self, http_mocker: HttpMocker, capsys: Any, response: PostHogResponse
    ) -> None:
        http_mocker.get(PostHogRequest.project(2).build(), response.build())

        output = run_check(ConfigBuilder().build())

        assert connection_status(output).status == Status.FAILED
        assert_no_secret(output, capsys)


class TestCheckUsesTheSyncsHttpPolicy:
    """`check` goes through the same HttpClient, error handler and backoff as `read`."""

    def test_given_502_then_success_when_check_then_retried_linearly_and_succeeded(self, http_mocker: HttpMocker, sleeps: List[float]) -> None:
        request = PostHogRequest.project(2).build()
        http_mocker.get(request, [PostHogResponse.error(502).build(), PostHogResponse.error(502).build(), PostHogResponse(load_template("project")).build()])
        mock_scope_probes(http_mocker)

        output = run_check(ConfigBuilder().build())

        assert connection_status(output).status == Status.SUCCEEDED
        assert sleeps == [5 + 1, 10 + 1]  # linear 5, 10 s (+ the CDK's extra second)
        http_mocker.assert_number_of_calls(request, 3)

    def test_given_connection_reset_then_success_when_check_then_succeeded(self, requests_mock: Any, sleeps: List[float]) -> None:
        readable_everywhere(requests_mock, "https://us.posthog.com")
        requests_mock.get(
            "https://us.posthog.com/api/projects/2/",
            [{"exc": requests.exceptions.ConnectionError("Connection reset by peer")}, {"json": load_template("project")}],
        )

        output = run_check(ConfigBuilder().build())

        assert connection_status(output).status == Status.SUCCEEDED
        assert sleeps == [5 + 1]

    def test_given_429_with_retry_after_when_check_then_waits_as_asked_and_succeeded(self, http_mocker: HttpMocker, sleeps: List[float]) -> None:
        http_mocker.get(
            PostHogRequest.project(2).build(),
            [PostHogResponse.error(429).with_retry_after(30).build(), PostHogResponse(load_template("project")).build()],
        )
        mock_scope_probes(http_mocker)

        output = run_check(ConfigBuilder().build())

        assert connection_status(output).status == Status.SUCCEEDED
        assert sleeps == [30 + 1]

    def test_given_5xx_until_retries_run_out_when_check_then_failed_saying_it_is_a_server_error_not_a_refusal(
        self, http_mocker: HttpMocker, sleeps: List[float]
    ) -> None:
        request = PostHogRequest.project(2).build()
        http_mocker.get(request, PostHogResponse.error(502).build())

        output = run_check(ConfigBuilder().build())

        message = assert_failed_naming(output, ["HTTP 502", "after 3 retries", "GET /api/projects/2/"])
        assert "refused" not in message
        assert sleeps == [6, 11, 16]
        http_mocker.assert_number_of_calls(request, 4)


def test_given_a_self_hosted_posthog_over_http_on_a_private_network_and_the_opt_in_when_check_then_succeeded(requests_mock: Any) -> None:
    readable_everywhere(requests_mock, "http://posthog-web:8000")
    project = requests_mock.get("http://posthog-web:8000/api/projects/2/", json=load_template("project"))

    output = run_check(ConfigBuilder().with_host("http://posthog-web:8000").with_field("allow_http_on_private_network", True).build())

    assert connection_status(output).status == Status.SUCCEEDED
    assert project.call_count == 1


def test_given_the_same_host_without_the_opt_in_when_check_then_failed_naming_the_field_before_the_key_travels(requests_mock: Any) -> None:
    project = requests_mock.get("http://posthog-web:8000/api/projects/2/", json=load_template("project"))

    output = run_check(ConfigBuilder().with_host("http://posthog-web:8000").build())

    assert_failed_naming(output, ["'allow_http_on_private_network'"])
    assert project.call_count == 0



class TestScopes:
    """A key that cannot read some streams still sets up a connection: check warns, discover leaves them out."""

    def test_given_a_key_without_some_scopes_when_check_then_succeeded_with_a_warning_per_stream_naming_its_scope(self, http_mocker: HttpMocker) -> None:
        http_mocker.get(PostHogRequest.project(2).build(), PostHogResponse(load_template("project")).build())
        mock_scope_probes(http_mocker, refused=["session_recordings", "persons"])

        output = run_check(ConfigBuilder().build())

        assert connection_status(output).status == Status.SUCCEEDED
        warnings = [log.log.message for log in output.logs if log.log.level.value == "WARN"]
        assert len(warnings) == 2
        assert any("session_recordings" in w and "'session_recording:read'" in w for w in warnings)
        assert any("persons" in w and "'person:read'" in w for w in warnings)

    def test_given_a_key_without_some_scopes_when_discover_then_those_streams_are_left_out_and_logged(self, http_mocker: HttpMocker) -> None:
        from airbyte_cdk.test.entrypoint_wrapper import discover

        mock_scope_probes(http_mocker, refused=["session_recordings"])

        output = discover(SourcePosthog(), ConfigBuilder().build())

        names = {stream.name for stream in output.catalog.catalog.streams}
        assert "session_recordings" not in names and {"events", "persons", "cohorts", "groups", "surveys"} <= names and len(names) == 18
        assert any("session_recordings" in log.log.message and "session_recording:read" in log.log.message for log in output.logs)

    def test_given_posthog_describes_the_key_when_check_then_one_request_tells_every_missing_scope(self, http_mocker: HttpMocker) -> None:
        http_mocker.get(PostHogRequest.project(2).build(), PostHogResponse(load_template("project")).build())
        mock_current_key(http_mocker, ["query:read", "cohort:write", "project:read", "feature_flag:read", "insight:read", "annotation:read",
                                       "action:read", "event_definition:read", "property_definition:read", "person:read",
                                       "group:read", "dashboard:read", "experiment:write", "survey:read", "activity_log:read"])

        output = run_check(ConfigBuilder().build())

        assert connection_status(output).status == Status.SUCCEEDED
        (warning,) = [log.log.message for log in output.logs if log.log.level.value == "WARN"]
        assert "session_recordings" in warning and "'session_recording:read'" in warning  # cohort:write covers cohort:read

    def test_given_a_key_with_every_scope_when_discover_then_every_stream_without_a_probe(self, http_mocker: HttpMocker) -> None:
        from airbyte_cdk.test.entrypoint_wrapper import discover

        mock_current_key(http_mocker, ["*"])

        output = discover(SourcePosthog(), ConfigBuilder().build())

        assert len(output.catalog.catalog.streams) == 19

    def test_given_a_key_without_access_to_the_project_when_check_then_failed(self, http_mocker: HttpMocker) -> None:
        http_mocker.get(PostHogRequest.project(2).build(), PostHogResponse.error(403).build())

        output = run_check(ConfigBuilder().build())

        assert connection_status(output).status == Status.FAILED


class TestWhatANewUserMet:
    """Issue #21, item 8: messages that named the wrong field, or took 33 s to say the host is wrong."""

    def test_given_a_host_that_dns_cannot_resolve_when_check_then_it_fails_at_once_naming_host(self, requests_mock: Any, sleeps: List[float]) -> None:
        import urllib3

        dns = urllib3.exceptions.NameResolutionError("posthog.invalid", None, OSError("Name or service not known"))  # type: ignore[arg-type]
        requests_mock.get("https://posthog.invalid/api/projects/2/", exc=requests.exceptions.ConnectionError(urllib3.exceptions.MaxRetryError(None, "/api/projects/2/", dns)))

        output = run_check({**ConfigBuilder().build(), "host": "posthog.invalid"})

        status = connection_status(output)
        assert status.status == Status.FAILED and "cannot be found" in status.message and "Check 'host'" in status.message
        assert sleeps == [], "a name DNS does not know is not retried"

    def test_given_an_additional_project_posthog_does_not_have_when_check_then_the_message_names_additional_project_ids(self, requests_mock: Any) -> None:
        requests_mock.get("https://us.posthog.com/api/projects/2/", json={"id": 2})
        requests_mock.get("https://us.posthog.com/api/projects/77/", status_code=404, json={"type": "invalid_request", "code": "not_found", "detail": "Not found.", "attr": None})

        output = run_check({**ConfigBuilder().build(), "additional_project_ids": [77]})

        message = connection_status(output).message
        assert "Check 'additional_project_ids'" in message and "Check 'project_id'" not in message


def test_given_a_boolean_field_of_the_wrong_type_then_the_example_is_written_as_json() -> None:
    from source_posthog.config import ConfigError, validate_against_spec

    spec = SourcePosthog().spec(logging.getLogger("airbyte")).connectionSpecification
    with pytest.raises(ConfigError) as raised:
        validate_against_spec({**ConfigBuilder().build(), "all_projects": "yes"}, spec)

    assert "Example: false." in raised.value.message or "Example: true." in raised.value.message, raised.value.message


def test_one_version_in_setup_the_image_the_metadata_and_the_changelog() -> None:
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    setup = re.search(r'version="([^"]+)"', (root / "setup.py").read_text()).group(1)
    image = re.search(r"io\.airbyte\.version=(\S+)", (root / "Dockerfile").read_text()).group(1)
    metadata = re.search(r"dockerImageTag: (\S+)", (root / "metadata.yaml").read_text()).group(1)
    changelog = re.search(r"^## (?:Unreleased \()?(\d+\.\d+\.\d+)", (root / "CHANGELOG.md").read_text(), re.M).group(1)
    assert setup == image == metadata == changelog, (setup, image, metadata, changelog)
