"""The HTTP policy, in one place: pacing, retries, timeouts and the messages of failures.

- Pacing: one shared `HttpAPIBudget` for the whole sync. Every request class gets
  3 requests/second plus PostHog's per-key limits for its endpoint class (posthog/rate_limit.py:
  CRUD 480/min + 4800/h, analytics 240/min + 1200/h, query 240/min + 2400/h), so a long sync
  waits for budget instead of collecting 429s.
- 429: exponential backoff (5, 10, 20, 40, 80 s), or exactly `Retry-After` when PostHog sends it
  (it can ask for minutes); at most 5 retries. The query-concurrency 429 has no Retry-After.
- 5xx, connection resets, truncated bodies and timeouts: linear backoff (5, 10, 15 s), at most
  3 retries.
- 401/403/404/400 fail at once with a message that says what to fix.
- Explicit connect and read timeouts on every request.
The CDK's HttpClient runs the retry loop; this module only decides.
"""

from __future__ import annotations

import logging
import os
import re
from datetime import timedelta
from typing import Any, Dict, Optional, Tuple, Union
from urllib.parse import urlsplit

import requests
import urllib3
from airbyte_cdk.models import FailureType
from airbyte_cdk.sources.streams.call_rate import HttpAPIBudget, HttpRequestRegexMatcher, MovingWindowCallRatePolicy, Rate
from airbyte_cdk.sources.streams.http.error_handlers import BackoffStrategy, ErrorHandler
from airbyte_cdk.sources.streams.http.error_handlers.response_models import ErrorResolution, ResponseAction
from airbyte_cdk.utils.airbyte_secrets_utils import filter_secrets
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from source_posthog import settings

logger = logging.getLogger("airbyte")

# PostHog throttles these with its ClickHouse classes (240/min, 1200/h); `query/` has its own.
ANALYTICS_RESOURCES = ("persons", "events", "insights", "session_recordings")


def endpoint_name(url: str) -> str:
    """`GET /api/projects/2/persons/` style name for messages (no query string: it may hold cursors)."""
    return urlsplit(url).path


def rate_limit_scale() -> float:
    try:
        return max(float(os.environ.get(settings.RATE_LIMIT_SCALE_ENV, "1")), 1e-6)
    except ValueError:
        return 1.0


def build_api_budget(scale: Optional[float] = None) -> HttpAPIBudget:
    """One budget for the whole sync; a policy per endpoint class, each inside PostHog's limits."""
    scale = scale or rate_limit_scale()
    patterns = {
        "query": r"/api/(projects|environments)/[^/]+/query/?$",
        "analytics": rf"/api/(projects|environments)/[^/]+/({'|'.join(ANALYTICS_RESOURCES)})/?",
        "crud": r"/api/",  # not anchored: a self-hosted base path may precede it
    }
    policies = []
    for name, pattern in patterns.items():
        per_minute, per_hour = settings.RATE_LIMITS[name]
        # pyrate-limiter works in whole milliseconds: a scaled window never goes below 1 ms.
        rates = [
            Rate(limit=limit, interval=max(window / scale, timedelta(milliseconds=1)))
            for limit, window in (
                (settings.REQUESTS_PER_SECOND, timedelta(seconds=1)),
                (per_minute, timedelta(minutes=1)),
                (per_hour, timedelta(hours=1)),
            )
        ]
        policies.append(MovingWindowCallRatePolicy(rates=rates, matchers=[HttpRequestRegexMatcher(url_path_pattern=pattern)]))
    # 429s are handled by the backoff strategy below; PostHog sends no X-RateLimit-* headers.
    return HttpAPIBudget(policies=policies, status_codes_for_ratelimit_hit=[])


def request_kwargs(read_timeout_seconds: int) -> Dict[str, Any]:
    """Every request: explicit connect/read timeouts, body read by `read_body`."""
    return {"timeout": timeouts(read_timeout_seconds), "stream": True}


def timeouts(read_timeout_seconds: int) -> Tuple[int, int]:
    return settings.CONNECT_TIMEOUT_SECONDS, read_timeout_seconds


def error_detail(response: requests.Response) -> str:
    """PostHog's drf-exceptions-hog body: {"type", "code", "detail", "attr"}; anything else, briefly.

    Secrets are masked here: an error page may echo the request's Authorization header.
    """
    try:
        body = response.json()
    except ValueError:
        text = " ".join((response.text or "").split())
        if text.startswith("<"):  # a gateway's HTML error page: its title says enough
            title = re.search(r"<title>(.*?)</title>", text, re.IGNORECASE)
            text = f"an HTML error page{f' ({title.group(1)[:100]})' if title else ''}"
        return filter_secrets(text[:300] or f"HTTP {response.status_code}")
    detail = body.get("detail") if isinstance(body, dict) else None
    return filter_secrets(str(detail) if detail else str(body)[:300])


def read_body(response: requests.Response) -> ErrorResolution:
    """Read a streamed 2xx body in one call, inside the retry loop.

    Requests are sent with `stream=True`: `requests` would otherwise assemble a 30 MB HogQL page
    from 10 KB chunks, which costs more CPU than parsing it. Reading here also makes a body cut
    short (the connection dropped mid-transfer) a retryable failure like a reset.
    """
    if response._content is False:  # not read yet (requests' own marker)
        try:
            response._content = response.raw.read(decode_content=True) or b""
        except (urllib3.exceptions.HTTPError, OSError) as error:
            response._content = b""
            response.body_error = type(error).__name__  # type: ignore[attr-defined]  # named if retries run out
            response.close()
            where = f"{response.request.method} {endpoint_name(response.request.url)}" if response.request is not None else "PostHog"
            return ErrorResolution(ResponseAction.RETRY, FailureType.transient_error, f"{type(error).__name__} while reading the body of {where}")
        finally:
            response._content_consumed = True
    return ErrorResolution(ResponseAction.SUCCESS)


class PostHogErrorHandler(ErrorHandler):
    """Maps a PostHog response to retry/fail, with messages that name the fix.

    `scope` is the personal-API-key scope the stream needs; `project_id` and `host` make 403 and
    404 messages say which project and host are wrong.
    """

    def __init__(self, stream_name: str, scope: str, project_id: int, host: str):
        self.stream_name = stream_name
        self.scope = scope
        self.project_id = project_id
        self.host = host

    @property
    def max_retries(self) -> Optional[int]:
        # The CDK's loop must allow the longest schedule; PostHogBackoffStrategy enforces each class's own limit.
        return settings.RATE_LIMIT_MAX_RETRIES + settings.SERVER_ERROR_MAX_RETRIES

    @property
    def max_time(self) -> Optional[int]:
        return 6 * 3600

    def interpret_response(self, response: Optional[Union[requests.Response, Exception]]) -> ErrorResolution:
        if isinstance(response, Exception):
            if isinstance(response, requests.RequestException):
                return ErrorResolution(ResponseAction.RETRY, FailureType.transient_error, f"{type(response).__name__} from PostHog")
            return ErrorResolution(ResponseAction.FAIL, FailureType.system_error, str(response))
        if response is None:
            return ErrorResolution(ResponseAction.RETRY, FailureType.transient_error, "no response from PostHog")
        status = response.status_code
        if status < 300:
            return read_body(response)
        where = f"{response.request.method} {endpoint_name(response.request.url)}" if response.request is not None else self.stream_name
        if status == 429:
            return ErrorResolution(ResponseAction.RATE_LIMITED, FailureType.transient_error, f"PostHog rate limit on {where}: {error_detail(response)}")
        if status >= 500:
            return ErrorResolution(ResponseAction.RETRY, FailureType.transient_error, f"PostHog server error {status} on {where}")
        # Raised, not returned as FAIL: the CDK's FAIL path logs the raw response body, which may
        # echo the key; this message is the whole story and is masked.
        message = self.client_error_message(response, where)
        raise ClientError(message=message, internal_message=message, failure_type=FailureType.config_error)

    def client_error_message(self, response: requests.Response, where: str) -> str:
        status, detail = response.status_code, error_detail(response)
        if status == 401:
            return (
                f"PostHog rejected the API key (401 on {where}: {detail}). Check 'api_key': it must be a personal API "
                f"key (phx_…) created on {self.host} under Settings → User → Personal API keys, not revoked."
            )
        if status == 403:
            if "scope" in detail:
                fix = f"Give the personal API key the '{self.scope}' scope (or deselect the {self.stream_name} stream)."
            else:
                fix = f"Give the personal API key access to project {self.project_id}, or set 'project_id' to a project the key can read."
            return f"PostHog refused {self.stream_name} (403 on {where}: {detail}). {fix}"
        if status == 404:
            return (
                f"PostHog has no project {self.project_id} on {self.host} (404 on {where}: {detail}). Check 'project_id' "
                f"(Project settings → Project ID) and 'host' (us.posthog.com for US Cloud, eu.posthog.com for EU Cloud)."
            )
        return f"PostHog refused the request for {self.stream_name} ({status} on {where}: {detail})."


class RetriesExhausted(AirbyteTracedException):
    pass


class ClientError(AirbyteTracedException):
    """PostHog refused the request (401/403/404/400): retrying cannot help, the message says what to fix."""


class PostHogBackoffStrategy(BackoffStrategy):
    """429 → exponential or Retry-After, at most 5 retries; 5xx/network → linear, at most 3.

    Attempts are counted per request and per class, so each schedule is exact whatever the mix.
    """

    def __init__(self, stream_name: str, endpoint: str = ""):
        self.stream_name = stream_name
        self.endpoint = endpoint  # named in messages when an exception carries no request
        # A stream sends one request at a time; the CDK's attempt_count restarts at 1 for each
        # new request, so these counters are the current request's retries by class. (Not keyed
        # by request: a truncated body raises ChunkedEncodingError without one.)
        self._attempts: Dict[str, int] = {}

    def backoff_time(
        self, response_or_exception: Optional[Union[requests.Response, requests.RequestException]], attempt_count: int
    ) -> Optional[float]:
        request = getattr(response_or_exception, "request", None)
        is_rate_limit = isinstance(response_or_exception, requests.Response) and response_or_exception.status_code == 429
        kind = "rate_limit" if is_rate_limit else "server"
        if attempt_count <= 1:
            self._attempts = {}
        attempt = self._attempts[kind] = self._attempts.get(kind, 0) + 1
        limit = settings.RATE_LIMIT_MAX_RETRIES if is_rate_limit else settings.SERVER_ERROR_MAX_RETRIES
        if attempt > limit:
            raise self._exhausted(response_or_exception, request, limit)
        if is_rate_limit:
            retry_after = _retry_after_seconds(response_or_exception)
            if retry_after is not None:
                return min(retry_after, settings.RATE_LIMIT_MAX_WAIT_SECONDS)
            return settings.RATE_LIMIT_BACKOFF_BASE_SECONDS * 2 ** (attempt - 1)
        return settings.SERVER_ERROR_BACKOFF_STEP_SECONDS * attempt

    def _exhausted(self, response_or_exception: Any, request: Any, retries: int) -> RetriesExhausted:
        where = f"{request.method} {endpoint_name(request.url)}" if request is not None else (self.endpoint or self.stream_name)
        body_error = getattr(response_or_exception, "body_error", None)
        if body_error:
            what = f"a body cut short ({body_error}: the connection dropped mid-transfer)"
        elif isinstance(response_or_exception, requests.Response):
            status = response_or_exception.status_code
            what = f"HTTP {status} ({error_detail(response_or_exception)})"
        else:
            what = type(response_or_exception).__name__
        failure = FailureType.transient_error
        message = (
            f"Stream {self.stream_name}: {where} still failed with {what} after {retries} retries. "
            f"The last checkpoint is saved; run the sync again to resume from it."
        )
        return RetriesExhausted(message=message, internal_message=message, failure_type=failure)


def _retry_after_seconds(response: requests.Response) -> Optional[float]:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None
