"""The HTTP policy (source_posthog/http.py): retries, backoff schedules, fail-fast messages, pacing.

Backoff waits are read from the `sleeps` fixture: the CDK sleeps for the connector's backoff plus
one second ("to cover any fractions of second", airbyte_cdk rate_limiting.py), so a 5 s backoff is
a 6 s sleep.
"""

from __future__ import annotations

from typing import Any, List

import pytest
import requests
from airbyte_cdk.models import FailureType
from airbyte_cdk.sources.streams.call_rate import HttpAPIBudget, MovingWindowCallRatePolicy
from airbyte_cdk.test.mock_http import HttpMocker

from source_posthog import seams, settings
from source_posthog.http import PostHogBackoffStrategy, build_api_budget
from source_posthog.source import SourcePosthog
from source_posthog.streams import STREAM_CLASSES
from source_posthog.streams.base import ProjectRead
from unit_tests.support.cdk_seams import budget_used_by, rates_of
from unit_tests.builders import API_KEY, PROJECT_URL, ConfigBuilder, PostHogRequest, PostHogResponse, numbered, record
from unit_tests.reader import config_errors, errors, everything_emitted, read_stream, records

CDK_EXTRA_SECOND = 1
# The policy is the same for every endpoint; a plain REST list (cohorts) carries these tests. (They
# used persons until persons moved to HogQL keyset pages, streams/persons.py.)
LIST = PostHogRequest.cohorts().with_limit(settings.LIST_PAGE_SIZE)
LIST_URL = f"{PROJECT_URL}/cohorts/?limit={settings.LIST_PAGE_SIZE}"
ENDPOINT = "/api/projects/2/cohorts/"


def ok() -> Any:
    return PostHogResponse.page("cohorts").with_records([record("cohorts", id=1)]).build()


def waited(backoffs: List[float]) -> List[float]:
    return [seconds + CDK_EXTRA_SECOND for seconds in backoffs]


class TestRateLimited:
    def test_given_429_without_retry_after_when_read_then_exponential_backoff_then_failure_after_five_retries(
        self, http_mocker: HttpMocker, sleeps: List[float]
    ) -> None:
        request = LIST.build()
        http_mocker.get(request, PostHogResponse.error(429).build())

        output = read_stream("cohorts", expecting_exception=True)

        http_mocker.assert_number_of_calls(request, 6)
        assert sleeps == waited([5, 10, 20, 40, 80])
        error = errors(output)[0]
        assert error.failure_type == FailureType.transient_error
        assert ENDPOINT in error.message and "429" in error.message
        assert records(output) == []

    def test_given_429_with_retry_after_when_read_then_waits_as_asked_and_succeeds(self, http_mocker: HttpMocker, sleeps: List[float]) -> None:
        request = LIST.build()
        http_mocker.get(request, [PostHogResponse.error(429).with_retry_after(120).build(), ok()])

        output = read_stream("cohorts")

        assert sleeps == waited([120])
        assert len(records(output)) == 1
        assert not output.errors
        http_mocker.assert_number_of_calls(request, 2)

    def test_given_429_then_success_when_read_then_one_exponential_wait(self, http_mocker: HttpMocker, sleeps: List[float]) -> None:
        request = LIST.build()
        http_mocker.get(request, [PostHogResponse.error(429, "error_429_concurrency").build(), ok()])

        output = read_stream("cohorts")

        assert sleeps == waited([5])
        assert len(records(output)) == 1

    def test_given_retry_after_on_every_429_when_read_then_still_at_most_five_retries(self, http_mocker: HttpMocker, sleeps: List[float]) -> None:
        request = LIST.build()
        http_mocker.get(request, PostHogResponse.error(429).with_retry_after(3).build())

        output = read_stream("cohorts", expecting_exception=True)

        http_mocker.assert_number_of_calls(request, 6)
        assert sleeps == waited([3] * 5)
        assert errors(output)[0].failure_type == FailureType.transient_error


class TestServerErrors:
    @pytest.mark.parametrize("status", [500, 502, 503])
    def test_given_server_error_when_read_then_linear_backoff_then_failure_after_three_retries(
        self, http_mocker: HttpMocker, sleeps: List[float], status: int
    ) -> None:
        request = LIST.build()
        http_mocker.get(request, PostHogResponse.error(status).build())

        output = read_stream("cohorts", expecting_exception=True)

        http_mocker.assert_number_of_calls(request, 4)
        assert sleeps == waited([5, 10, 15])
        error = errors(output)[0]
        assert error.failure_type == FailureType.transient_error
        assert ENDPOINT in error.message and str(status) in error.message

    def test_given_html_502_from_a_proxy_when_read_then_it_is_retried_like_any_server_error(self, http_mocker: HttpMocker, sleeps: List[float]) -> None:
        request = LIST.build()
        http_mocker.get(request, [PostHogResponse.raw("<html><body>502 Bad Gateway</body></html>", 502).build(), ok()])

        output = read_stream("cohorts")

        assert sleeps == waited([5])
        assert len(records(output)) == 1

    def test_given_mixed_failures_when_read_then_each_class_keeps_its_own_schedule(self, http_mocker: HttpMocker, sleeps: List[float]) -> None:
        request = LIST.build()
        http_mocker.get(
            request,
            [
                PostHogResponse.error(500).build(),
                PostHogResponse.error(429).build(),
                PostHogResponse.error(500).build(),
                PostHogResponse.error(429).build(),
                ok(),
            ],
        )

        output = read_stream("cohorts")

        assert sleeps == waited([5, 5, 10, 10])  # linear 5, 10 for the 500s; exponential 5, 10 for the 429s
        assert len(records(output)) == 1
        http_mocker.assert_number_of_calls(request, 5)

    def test_given_a_failure_on_one_page_when_the_next_page_fails_then_its_schedule_starts_again(self, http_mocker: HttpMocker, sleeps: List[float]) -> None:
        next_url = f"{PROJECT_URL}/cohorts/?limit=1000&offset=1000"
        http_mocker.get(
            LIST.build(),
            [PostHogResponse.error(500).build(), PostHogResponse.page("cohorts").with_records(numbered("cohorts", 1)).with_next(next_url).build()],
        )
        http_mocker.get(PostHogRequest.from_next_url(next_url).build(), [PostHogResponse.error(500).build(), ok()])

        output = read_stream("cohorts")

        assert sleeps == waited([5, 5])
        assert len(records(output)) == 2


class TestConnectionErrors:
    @pytest.mark.parametrize(
        "failure",
        [
            pytest.param(requests.exceptions.ConnectionError("Connection reset by peer"), id="connection-reset"),
            pytest.param(requests.exceptions.ConnectTimeout("connect timed out"), id="connect-timeout"),
            pytest.param(requests.exceptions.ReadTimeout("read timed out"), id="read-timeout"),
        ],
    )
    def test_given_connection_failure_when_read_then_linear_backoff_then_failure_after_three_retries(
        self, requests_mock: Any, sleeps: List[float], failure: Exception
    ) -> None:
        mocked = requests_mock.get(LIST_URL, exc=failure)

        output = read_stream("cohorts", expecting_exception=True)

        assert mocked.call_count == 4
        assert sleeps == waited([5, 10, 15])
        error = errors(output)[0]
        assert error.failure_type == FailureType.transient_error
        assert ENDPOINT in error.message and type(failure).__name__ in error.message

    def test_given_connection_reset_then_success_when_read_then_records_are_emitted(self, requests_mock: Any, sleeps: List[float]) -> None:
        requests_mock.get(LIST_URL, [{"exc": requests.exceptions.ConnectionError("reset")}, {"text": ok().body, "status_code": 200}])

        output = read_stream("cohorts")

        assert sleeps == waited([5])
        assert len(records(output)) == 1

    def test_given_body_truncated_mid_transfer_when_read_then_linear_backoff_then_failure_after_three_retries(
        self, requests_mock: Any, sleeps: List[float]
    ) -> None:
        # requests raises ChunkedEncodingError while reading the body, with no `request` attached
        # (requests/models.py iter_content); the retry schedule must not depend on it.
        def truncated(request: Any, context: Any) -> str:
            raise requests.exceptions.ChunkedEncodingError("Connection broken: IncompleteRead(512 bytes read, 4096 more expected)")

        mocked = requests_mock.get(LIST_URL, text=truncated)

        output = read_stream("cohorts", expecting_exception=True)

        assert mocked.call_count == 4
        assert sleeps == waited([5, 10, 15])
        error = errors(output)[0]
        assert error.failure_type == FailureType.transient_error
        assert "cohorts" in error.message and "ChunkedEncodingError" in error.message

    def test_when_read_then_every_request_has_explicit_connect_and_read_timeouts(self, requests_mock: Any) -> None:
        requests_mock.get(LIST_URL, text=ok().body)

        read_stream("cohorts", config=ConfigBuilder().with_field("request_timeout_seconds", 45).build())

        assert [call.timeout for call in requests_mock.request_history] == [(settings.CONNECT_TIMEOUT_SECONDS, 45)]


class TestClientErrorsFailFast:
    @pytest.mark.parametrize(
        "response, must_name",
        [
            pytest.param(PostHogResponse.error(401), ["'api_key'", "personal API key"], id="401-invalid-key"),
            pytest.param(PostHogResponse.error(401, "error_401_not_authenticated"), ["'api_key'"], id="401-no-credentials"),
            pytest.param(PostHogResponse.forbidden_scope("cohort:read"), ["'cohort:read' scope"], id="403-scope"),
            pytest.param(PostHogResponse.error(403, "error_403_project"), ["project 2", "'project_id'"], id="403-project"),
            pytest.param(PostHogResponse.error(404), ["'project_id'", "'host'", "us.posthog.com"], id="404"),
        ],
    )
    def test_given_client_error_when_read_then_fails_at_once_with_a_config_error_naming_the_fix(
        self, http_mocker: HttpMocker, sleeps: List[float], response: PostHogResponse, must_name: List[str]
    ) -> None:
        request = LIST.build()
        http_mocker.get(request, response.build())

        output = read_stream("cohorts", expecting_exception=True)

        http_mocker.assert_number_of_calls(request, 1)
        assert sleeps == []
        error = config_errors(output)[0]
        assert error.failure_type == FailureType.config_error
        for text in must_name:
            assert text in error.message, f"{text!r} not in {error.message!r}"
        assert API_KEY not in everything_emitted(output)

    def test_given_400_when_read_then_fails_at_once_with_posthog_detail(self, http_mocker: HttpMocker) -> None:
        request = LIST.build()
        http_mocker.get(request, PostHogResponse.error(400).build())

        output = read_stream("cohorts", expecting_exception=True)

        http_mocker.assert_number_of_calls(request, 1)
        assert "Unable to resolve field" in errors(output)[0].message


class TestSecrets:
    @pytest.mark.parametrize("debug", [False, True])
    def test_given_failures_and_retries_when_read_then_the_api_key_never_appears_in_any_output(
        self, http_mocker: HttpMocker, capsys: Any, debug: bool
    ) -> None:
        from airbyte_cdk.test.catalog_builder import CatalogBuilder
        from airbyte_cdk.models import SyncMode
        from airbyte_cdk.test.entrypoint_wrapper import read

        http_mocker.get(LIST.build(), [PostHogResponse.error(500).build(), PostHogResponse.error(429).build(), PostHogResponse.error(401).build()])

        output = read(
            SourcePosthog(),
            ConfigBuilder().build(),
            CatalogBuilder().with_stream("cohorts", SyncMode.full_refresh).build(),
            expecting_exception=True,
            debug=debug,
        )

        assert output.errors
        assert API_KEY not in everything_emitted(output)
        captured = capsys.readouterr()
        assert API_KEY not in captured.out and API_KEY not in captured.err

    def test_given_error_page_that_echoes_the_authorization_header_when_read_then_the_key_is_masked(
        self, http_mocker: HttpMocker, capsys: Any
    ) -> None:
        http_mocker.get(LIST.build(), PostHogResponse.raw(f"<html>Bad request. Authorization: Bearer {API_KEY}</html>", 400).build())

        output = read_stream("cohorts", expecting_exception=True)

        assert output.errors
        assert API_KEY not in everything_emitted(output)
        captured = capsys.readouterr()
        assert API_KEY not in captured.out and API_KEY not in captured.err


class TestRetryLogsTellTheTruth:
    """Each retry is logged with its real cause and its real wait; the CDK's own retry line (it
    says "Rate limit exceeded (HTTP 500)" for a server error) is not."""

    @staticmethod
    def _retry_lines(output: Any) -> List[str]:
        # (not the read's summary line, `Stream cohorts, project 2: read …; 1 retry, …`)
        return [log.log.message for log in output.logs if "retry" in log.log.message.lower() and ", project " not in log.log.message]

    def test_given_502_then_success_when_read_then_the_log_names_http_502_and_the_wait_slept(self, http_mocker: HttpMocker, sleeps: List[float]) -> None:
        http_mocker.get(LIST.build(), [PostHogResponse.raw("<html><title>502 Bad Gateway</title></html>", 502).build(), ok()])

        output = read_stream("cohorts")

        assert self._retry_lines(output) == [f"Stream cohorts: GET {ENDPOINT} answered HTTP 502 (an HTML error page (502 Bad Gateway)); retry 1 of 3 in 6 s."]
        assert sleeps == [6]

    def test_given_429_with_retry_after_when_read_then_the_log_names_it_and_the_wait(self, http_mocker: HttpMocker, sleeps: List[float]) -> None:
        http_mocker.get(LIST.build(), [PostHogResponse.error(429).with_retry_after(120).build(), ok()])

        output = read_stream("cohorts")

        (line,) = self._retry_lines(output)
        assert line.startswith(f"Stream cohorts: GET {ENDPOINT} answered HTTP 429 (") and line.endswith(", Retry-After 120 s); retry 1 of 5 in 121 s.")
        assert sleeps == [121]

    def test_given_connection_reset_when_read_then_the_log_names_the_reset(self, requests_mock: Any, sleeps: List[float]) -> None:
        requests_mock.get(LIST_URL, [{"exc": requests.exceptions.ConnectionError("Connection reset by peer")}, {"json": {"next": None, "results": []}}])

        output = read_stream("cohorts")

        assert self._retry_lines(output)[0] == f"Stream cohorts: GET {ENDPOINT} failed with ConnectionError (Connection reset by peer); retry 1 of 3 in 6 s."

    def test_no_log_line_says_rate_limit_for_a_server_error(self, http_mocker: HttpMocker, sleeps: List[float]) -> None:
        http_mocker.get(LIST.build(), [PostHogResponse.error(500).build(), ok()])

        output = read_stream("cohorts")

        assert not [log for log in output.logs if "Rate limit exceeded" in log.log.message]


class TestBackoffStrategy:
    """The schedule itself, without the CDK loop around it."""

    @staticmethod
    def _response(status: int, headers: Any = None) -> requests.Response:
        response = requests.Response()
        response.status_code = status
        response.headers.update(headers or {})
        response.request = requests.Request("GET", f"{PROJECT_URL}/persons/").prepare()
        return response

    def test_429_schedule_is_5_10_20_40_80(self) -> None:
        strategy, response = PostHogBackoffStrategy("persons"), self._response(429)
        assert [strategy.backoff_time(response, attempt) for attempt in range(1, 6)] == [5, 10, 20, 40, 80]

    def test_retry_after_is_honoured_up_to_an_hour(self) -> None:
        strategy = PostHogBackoffStrategy("persons")
        assert strategy.backoff_time(self._response(429, {"Retry-After": "120"}), 1) == 120
        assert strategy.backoff_time(self._response(429, {"Retry-After": "86400"}), 1) == settings.RATE_LIMIT_MAX_WAIT_SECONDS

    def test_server_error_schedule_is_5_10_15(self) -> None:
        strategy, response = PostHogBackoffStrategy("persons"), self._response(503)
        assert [strategy.backoff_time(response, attempt) for attempt in range(1, 4)] == [5, 10, 15]


class TestSharedBudget:
    def test_every_stream_shares_one_budget(self, config: Any) -> None:
        source = SourcePosthog()
        streams = source.streams(config)
        clients = [ProjectRead(stream, project, incremental=False).client for stream in streams for project in (2, 3)]
        budgets = {id(budget_used_by(client)) for client in clients}
        assert len(streams) == len(STREAM_CLASSES) == 19 and len(budgets) == 1
        assert isinstance(budget_used_by(clients[0]), HttpAPIBudget)
        assert budget_used_by(source.clients(streams[0].config).client("check", "", 2)) is budget_used_by(clients[0])

    @pytest.mark.parametrize(
        "url, per_minute, per_hour",
        [
            pytest.param(f"{PROJECT_URL}/query/", 240, 2400, id="query"),
            pytest.param(f"{PROJECT_URL}/persons/?limit=1000", 240, 1200, id="persons-analytics"),
            pytest.param(f"{PROJECT_URL}/insights/?basic=true", 240, 1200, id="insights-analytics"),
            pytest.param(f"{PROJECT_URL}/session_recordings/", 240, 1200, id="recordings-analytics"),
            pytest.param(f"{PROJECT_URL}/cohorts/", 480, 4800, id="cohorts-crud"),
            pytest.param("https://us.posthog.com/api/projects/", 480, 4800, id="projects-crud"),
            pytest.param(f"{PROJECT_URL}/", 480, 4800, id="project-detail-crud"),
            pytest.param("https://posthog.example.com/posthog/api/projects/2/cohorts/", 480, 4800, id="self-hosted-path-prefix-crud"),
            pytest.param("https://posthog.example.com/posthog/api/projects/2/query/", 240, 2400, id="self-hosted-path-prefix-query"),
        ],
    )
    def test_each_endpoint_class_is_paced_at_3_per_second_and_inside_posthogs_limits(
        self, monkeypatch: pytest.MonkeyPatch, url: str, per_minute: int, per_hour: int
    ) -> None:
        monkeypatch.delenv(seams.RATE_LIMIT_SCALE_ENV)  # production scale
        budget = build_api_budget()

        policy = budget.get_matching_policy(requests.Request("GET", url).prepare())

        assert isinstance(policy, MovingWindowCallRatePolicy), f"no pacing policy for {url}"
        rates = rates_of(policy)
        assert rates == [(1000, 3), (60_000, per_minute), (3_600_000, per_hour)]

    def test_given_scale_env_when_budget_is_built_then_windows_shrink_for_emulator_runs(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(seams.RATE_LIMIT_SCALE_ENV, "10")
        policy = build_api_budget().get_matching_policy(requests.Request("GET", f"{PROJECT_URL}/cohorts/").prepare())
        assert rates_of(policy) == [(100, 3), (6000, 480), (360_000, 4800)]

    def test_given_a_429_seen_by_the_budget_then_the_next_call_is_not_blocked(self) -> None:
        # The backoff strategy owns 429s (Retry-After or exponential); PostHog sends no
        # X-RateLimit-* headers, so a 429 must not also freeze the budget until some reset time.
        budget = build_api_budget()
        request = requests.Request("GET", f"{PROJECT_URL}/cohorts/").prepare()
        throttled = requests.Response()
        throttled.status_code, throttled.request = 429, request

        budget.update_from_response(request, throttled)

        budget.acquire_call(request, block=False)  # raises CallRateLimitHit if the 429 had exhausted it


def test_given_a_page_being_parsed_when_another_lane_reads_a_body_then_it_waits_until_the_parse_is_done() -> None:
    # Two lanes: the next page's ~40 MB must not arrive while this page's bytes and rows are both in memory.
    import io
    import threading

    import urllib3

    from source_posthog.http import ResponseBodies

    response = requests.Response()
    response.raw = urllib3.HTTPResponse(body=io.BytesIO(b'{"results": []}'), preload_content=False)
    permit = threading.Lock()  # one read's lanes share it (streams/query_lanes.py)
    bodies = ResponseBodies(permit)
    done = threading.Event()
    reader = threading.Thread(target=lambda: (bodies.read(response), done.set()))

    with permit:  # what Events does around decode_body
        reader.start()
        assert not done.wait(0.2), "the body was read while a page was being parsed"
    reader.join(5)

    assert done.is_set() and bodies.take(response) == b'{"results": []}'


class TestHowAFailedSyncEnds:
    """Issue #21, item 4: the sync's last error is typed by what failed. Airbyte retries a
    transient failure later; a config error means the user must act."""

    def test_given_5xx_after_every_retry_when_read_then_the_sync_ends_with_a_transient_error(self, http_mocker: HttpMocker, sleeps: List[float]) -> None:
        http_mocker.get(LIST.build(), [PostHogResponse.raw("<html><title>502 Bad Gateway</title></html>", 502).build()] * 4)

        output = read_stream("cohorts", expecting_exception=True)

        types = [message.trace.error.failure_type for message in output.errors]
        assert types and all(failure_type == FailureType.transient_error for failure_type in types), types

    def test_given_a_refused_key_when_read_then_the_sync_ends_with_a_config_error(self, http_mocker: HttpMocker) -> None:
        http_mocker.get(LIST.build(), PostHogResponse.error(401).build())

        output = read_stream("cohorts", expecting_exception=True)

        assert [message.trace.error.failure_type for message in output.errors][-1] == FailureType.config_error
