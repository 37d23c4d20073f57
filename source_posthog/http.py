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
The CDK's HttpClient runs the retry loop; `source_posthog/api/errors.py` decides, this module
adapts those decisions to the CDK's ErrorHandler and BackoffStrategy.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
import weakref
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Tuple, Union
from urllib.parse import urlsplit

import orjson
import requests
import urllib3
from airbyte_cdk.models import FailureType
from airbyte_cdk.sources.streams.call_rate import APIBudget, HttpAPIBudget, HttpRequestRegexMatcher, MovingWindowCallRatePolicy, Rate
from airbyte_cdk.sources.streams.http.error_handlers import BackoffStrategy, ErrorHandler
from airbyte_cdk.sources.streams.http.error_handlers.response_models import ErrorResolution, ResponseAction
from airbyte_cdk.sources.streams.http.http_client import HttpClient
from airbyte_cdk.sources.streams.http.requests_native_auth import TokenAuthenticator
from airbyte_cdk.utils.airbyte_secrets_utils import filter_secrets
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from source_posthog import seams, settings
from source_posthog.cdk_internals import RETRY_EXTRA_SECONDS
from source_posthog.api import errors, scopes
from source_posthog.api.errors import Outcome

if TYPE_CHECKING:
    from source_posthog.config import PostHogConfig

logger = logging.getLogger("airbyte")

# PostHog throttles these with its ClickHouse classes (240/min, 1200/h); `query/` has its own.
ANALYTICS_RESOURCES = ("persons", "events", "insights", "session_recordings")


def endpoint_name(url: str) -> str:
    """`GET /api/projects/2/persons/` style name for messages (no query string: it may hold cursors)."""
    return urlsplit(url).path


WAIT_CAUSES = ("rate limit", "read budget", "concurrency", "server errors", "pacing")
BYTES_READ_HEADER = "X-PostHog-Query-Bytes-Read"  # where PostHog reports what a query read (docs/posthog-api.md § 11.2)


class Usage:
    """What one stream's read of one project cost PostHog, and how long it waited on PostHog:
    requests (every attempt), HogQL queries, bytes read where PostHog reports them, retries, and
    seconds waited by cause (its rate limit, its read budget, its query concurrency limit, server
    errors, and this connector's own pacing inside PostHog's limits). Lanes update it from their
    threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.queries = 0
        self.bytes_read = 0
        self.retries = 0
        self.waited: Dict[str, float] = {cause: 0.0 for cause in WAIT_CAUSES}

    def request(self, response: requests.Response) -> None:
        with self._lock:
            self.requests += 1
            request = response.request
            if request is not None and request.method == "POST" and urlsplit(request.url or "").path.rstrip("/").endswith("/query"):
                self.queries += 1
            try:
                self.bytes_read += int(response.headers.get(BYTES_READ_HEADER) or 0)
            except ValueError:
                pass

    def failed_attempt(self) -> None:
        with self._lock:
            self.requests += 1

    def wait(self, cause: str, seconds: float, retry: bool = True) -> None:
        with self._lock:
            self.retries += int(retry)
            self.waited[cause] += max(seconds, 0.0)

    def add(self, other: "Usage") -> None:
        with self._lock:
            self.requests += other.requests
            self.queries += other.queries
            self.bytes_read += other.bytes_read
            self.retries += other.retries
            for cause, seconds in other.waited.items():
                self.waited[cause] += seconds

    def describe(self) -> str:
        """`14 requests (7 HogQL queries, 38.5 MB read), 2 retries, waited 6 s on PostHog (rate limit 6 s)`"""
        read = f", {self.bytes_read / 1e6:.1f} MB read" if self.bytes_read else ""
        waited = sum(seconds for cause, seconds in self.waited.items() if cause != "pacing")
        causes = ", ".join(f"{cause} {seconds:.1f} s" for cause, seconds in self.waited.items() if seconds and cause != "pacing")
        pacing = self.waited["pacing"]
        return (
            f"{plural(self.requests, 'request')} ({plural(self.queries, 'HogQL query', 'HogQL queries')}{read}), {plural(self.retries, 'retry', 'retries')}, "
            f"waited {waited:.1f} s on PostHog{f' ({causes})' if causes else ''}"
            f"{f', {pacing:.1f} s pacing inside its limits' if pacing >= 0.05 else ''}"
        )


def plural(count: int, one: str, many: str = "") -> str:
    return f"{count:,} {one if count == 1 else (many or one + 's')}"


_current_usage = threading.local()  # the Usage of the request this thread is sending (for the budget's waits)


class PacedBudget(HttpAPIBudget):
    """The CDK's HttpAPIBudget, with the time a request waited for budget added to its Usage."""

    def acquire_call(self, request: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        started = time.monotonic()
        try:
            super().acquire_call(request, block=block, timeout=timeout)
        finally:
            usage = getattr(_current_usage, "usage", None)
            waited = time.monotonic() - started
            if usage is not None and waited > 0.001:
                usage.wait("pacing", waited, retry=False)


def build_api_budget(scale: Optional[float] = None) -> HttpAPIBudget:
    """One budget for the whole sync; a policy per endpoint class, each inside PostHog's limits."""
    scale = scale or seams.rate_limit_scale()
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
    return PacedBudget(policies=policies, status_codes_for_ratelimit_hit=[])


def request_kwargs(read_timeout_seconds: int) -> Dict[str, Any]:
    """Every request: explicit connect/read timeouts; the body is read by `ResponseBodies.read`."""
    return {"timeout": timeouts(read_timeout_seconds), "stream": True, "allow_redirects": False}


def timeouts(read_timeout_seconds: int) -> Tuple[int, int]:
    return settings.CONNECT_TIMEOUT_SECONDS, read_timeout_seconds


def is_name_resolution_failure(error: BaseException) -> bool:
    """A host name DNS does not know (urllib3's NameResolutionError, or socket.gaierror, inside requests' ConnectionError)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, (socket.gaierror, urllib3.exceptions.NameResolutionError)):
            return True
        error = getattr(error, "reason", None) or error.__cause__ or error.__context__ or (error.args[0] if error.args and isinstance(error.args[0], BaseException) else None)
    return False


def where(response_or_request: Any) -> str:
    """`GET /api/projects/2/persons/`: method and path, for messages."""
    request = getattr(response_or_request, "request", response_or_request)
    return f"{request.method} {endpoint_name(request.url)}"


def error_detail(response: requests.Response) -> str:
    """PostHog's error detail, masked: an error page may echo the request's Authorization header."""
    return filter_secrets(errors.error_detail(response.content or b"", response.status_code))


def is_query_timeout(response: requests.Response) -> bool:
    return errors.is_query_time_limit(response.status_code, response.content or b"")


class ResponseBodies:
    """The bodies of successful responses, read in one call inside the retry loop.

    Requests are sent with `stream=True`: `requests` would otherwise assemble a 30 MB HogQL page
    from 10 KB chunks, which costs more CPU than parsing it. Reading here also makes a body cut
    short (the connection dropped mid-transfer) a retryable failure like a reset. Bodies are
    kept beside the response (weakly), not written into it, and handed over once (`take`).

    `permit`: where several lanes read one stream's pages (streams/query_lanes.py), a body is read
    off the socket only while the permit is free; the reader of a page holds it while the page is
    decoded. A page's bytes and its rows are each ~40-70 MB, so this bounds what one read holds.
    """

    def __init__(self, permit: Optional[threading.Lock] = None) -> None:
        self._permit = permit
        self._bodies: "weakref.WeakKeyDictionary[requests.Response, bytes]" = weakref.WeakKeyDictionary()
        self._errors: "weakref.WeakKeyDictionary[requests.Response, str]" = weakref.WeakKeyDictionary()

    def read(self, response: requests.Response) -> Optional[str]:
        """Read the body; the name of the error if it was cut short, else None."""
        if response in self._bodies:
            return None
        try:
            with self._permit or _NO_PERMIT:
                self._bodies[response] = response.raw.read(decode_content=True) or b"" if response.raw is not None else response.content
        except (urllib3.exceptions.HTTPError, OSError) as error:
            self._errors[response] = type(error).__name__
            response.close()
            return type(error).__name__
        return None

    def take(self, response: requests.Response) -> bytes:
        """The body, released from this store (a page is ~40 MB: it is parsed once)."""
        body = self._bodies.pop(response, None)
        return body if body is not None else response.content

    def error(self, response: Any) -> Optional[str]:
        try:
            return self._errors.get(response)
        except TypeError:  # not weak-referenceable: an exception, None
            return None


_NO_PERMIT = contextlib.nullcontext()


class PostHogErrorHandler(ErrorHandler):
    """Adapts `errors.classify` to the CDK: retry, rate-limited, or refused with a message.

    `scope` is the personal-API-key scope the stream needs; `project_id` and `host` make 403 and
    404 messages say which project and host are wrong.
    """

    def __init__(
        self, stream_name: str, scope: str, project_id: int, host: str, bodies: Optional[ResponseBodies] = None, adapts_to_query_timeouts: bool = False,
        usage: Optional[Usage] = None,
        project_field: str = "project_id",
        accepts_redirect: bool = False,
    ):
        self.usage = usage or Usage()
        self.accepts_redirect = accepts_redirect  # an export download's 302 to its presigned URL is its answer
        self.adapts_to_query_timeouts = adapts_to_query_timeouts
        self.stream_name = stream_name
        self.scope = scope
        self.project_id = project_id
        self.project_field = project_field  # the config field that named this project, for 403/404 messages
        self.host = host
        self.bodies = bodies or ResponseBodies()

    @property
    def max_retries(self) -> Optional[int]:
        # The CDK's loop must allow the longest schedule; PostHogBackoffStrategy enforces each class's own limit.
        return settings.RATE_LIMIT_MAX_RETRIES + settings.SERVER_ERROR_MAX_RETRIES

    @property
    def max_time(self) -> Optional[int]:
        return 6 * 3600

    def interpret_response(self, response: Optional[Union[requests.Response, Exception]]) -> ErrorResolution:
        if isinstance(response, requests.Response):
            self.usage.request(response)
        else:
            self.usage.failed_attempt()
        if isinstance(response, Exception):
            if is_name_resolution_failure(response):
                # Not retried: a host that does not resolve is a config to fix, and waiting 33 s to say so helps no one.
                message = (
                    f"The host {self.host} cannot be found (DNS: {type(response).__name__}). Check 'host': us.posthog.com for US Cloud, "
                    f"eu.posthog.com for EU Cloud, or your self-hosted address."
                )
                raise ClientError(message=message, internal_message=message, failure_type=FailureType.config_error)
            if isinstance(response, requests.RequestException):
                return ErrorResolution(ResponseAction.RETRY, FailureType.transient_error, f"{type(response).__name__} from PostHog")
            return ErrorResolution(ResponseAction.FAIL, FailureType.system_error, str(response))
        if response is None:
            return ErrorResolution(ResponseAction.RETRY, FailureType.transient_error, "no response from PostHog")
        outcome = errors.classify(response.status_code)
        if self.accepts_redirect and 300 <= response.status_code < 400 and response.headers.get("Location"):
            outcome = Outcome.SUCCESS  # not followed here: the caller fetches the Location without the key
        place = where(response) if response.request is not None else self.stream_name
        if outcome is Outcome.SUCCESS:
            cut_short = self.bodies.read(response)
            if cut_short:
                return ErrorResolution(ResponseAction.RETRY, FailureType.transient_error, f"{cut_short} while reading the body of {place}")
            return ErrorResolution(ResponseAction.SUCCESS)
        if outcome is Outcome.RATE_LIMITED:
            return ErrorResolution(ResponseAction.RATE_LIMITED, FailureType.transient_error, f"PostHog rate limit on {place}: {error_detail(response)}")
        if outcome is Outcome.RETRY and self.adapts_to_query_timeouts and is_query_timeout(response):
            return ErrorResolution(ResponseAction.IGNORE, error_message=f"{place} hit PostHog's query time limit: a smaller query follows")
        if outcome is Outcome.RETRY:
            return ErrorResolution(ResponseAction.RETRY, FailureType.transient_error, f"PostHog server error {response.status_code} on {place}")
        # Raised, not returned as FAIL: the CDK's FAIL path logs the raw response body, which may
        # echo the key; this message is the whole story and is masked.
        message = self.client_error_message(response, place)
        refused = ClientError(message=message, internal_message=message, failure_type=FailureType.config_error)
        refused.status, refused.missing_scope = response.status_code, response.status_code == 403 and "scope" in error_detail(response)
        raise refused

    def client_error_message(self, response: requests.Response, place: str) -> str:
        return errors.refusal_message(
            response.status_code, error_detail(response), place, self.stream_name, self.scope, self.project_id, self.host, response.headers.get("Location", "?"),
            self.project_field,
        )


class RetriesExhausted(AirbyteTracedException):
    """Retries ran out; `last_failure` is the last response or exception."""

    last_failure: Any = None


class ClientError(AirbyteTracedException):
    """PostHog refused the request (401/403/404/400): retrying cannot help, the message says what to fix."""

    status: int = 0
    missing_scope: bool = False  # a 403 for a scope the key lacks (not for the project)


class PostHogBackoffStrategy(BackoffStrategy):
    """Adapts `errors.retry_wait` to the CDK: 429 → exponential or Retry-After, at most 5 retries;
    5xx/network → linear, at most 3. Attempts are counted per request and per class, so each
    schedule is exact whatever the mix.
    """

    def __init__(
        self, stream_name: str, endpoint: str = "", bodies: Optional[ResponseBodies] = None, cancelled: Optional[threading.Event] = None,
        usage: Optional[Usage] = None,
    ):
        self.usage = usage or Usage()
        self.stream_name = stream_name
        self.endpoint = endpoint  # named in messages when an exception carries no request
        self.bodies = bodies or ResponseBodies()
        self.cancelled = cancelled
        # The CDK's attempt_count restarts at 1 for each new request, so these counters are the
        # current request's retries by class. (Not keyed by request: a truncated body raises
        # ChunkedEncodingError without one.)
        self._attempts: Dict[Outcome, int] = {}

    def backoff_time(
        self, response_or_exception: Optional[Union[requests.Response, requests.RequestException]], attempt_count: int
    ) -> Optional[float]:
        if self.cancelled is not None and self.cancelled.is_set():
            raise Cancelled()  # the read that sent this has ended: no retry
        is_response = isinstance(response_or_exception, requests.Response)
        outcome = Outcome.RATE_LIMITED if is_response and response_or_exception.status_code == 429 else Outcome.RETRY
        if attempt_count <= 1:
            self._attempts = {}
        attempt = self._attempts[outcome] = self._attempts.get(outcome, 0) + 1
        limit = errors.retry_limit(outcome)
        if attempt > limit:
            raise self._exhausted(response_or_exception, limit)
        retry_after = errors.retry_after_seconds(response_or_exception.headers) if outcome is Outcome.RATE_LIMITED else None
        wait = errors.retry_wait(outcome, attempt, retry_after)
        if outcome is Outcome.RATE_LIMITED and errors.error_code(response_or_exception.content or b"") == errors.BUDGET_EXCEEDED_CODE:
            budget_wait = self._budget_wait(response_or_exception, retry_after)
            self.usage.wait("read budget", budget_wait + RETRY_EXTRA_SECONDS)
            return budget_wait
        cause = "server errors" if outcome is Outcome.RETRY else ("rate limit" if retry_after is not None else "concurrency")
        self.usage.wait(cause, wait + RETRY_EXTRA_SECONDS)
        logger.info(
            f"Stream {self.stream_name}: {self._place(response_or_exception)} {self._cause(response_or_exception, retry_after)}; "
            f"retry {attempt} of {limit} in {wait + RETRY_EXTRA_SECONDS:g} s."
        )
        return wait

    def _budget_wait(self, response: requests.Response, retry_after: Optional[float]) -> float:
        """The read budget refills slowly: wait as PostHog asks if that is short, else stop resumably."""
        wait = retry_after if retry_after is not None else settings.RATE_LIMIT_BACKOFF_BASE_SECONDS
        until = (datetime.now(timezone.utc) + timedelta(seconds=wait + RETRY_EXTRA_SECONDS)).strftime("%Y-%m-%d %H:%M:%S UTC")
        if wait > settings.QUERY_BUDGET_MAX_WAIT_SECONDS:
            message = errors.budget_stop_message(self.stream_name, self._place(response), wait, until, settings.QUERY_BUDGET_MAX_WAIT_SECONDS)
            raise RetriesExhausted(message=message, internal_message=message, failure_type=FailureType.transient_error)
        logger.info(errors.budget_wait_message(self.stream_name, self._place(response), wait + RETRY_EXTRA_SECONDS, until))
        return wait

    def _place(self, response_or_exception: Any) -> str:
        request = getattr(response_or_exception, "request", None)
        return where(request) if request is not None else (self.endpoint or self.stream_name)

    def _cause(self, response_or_exception: Any, retry_after: Optional[float]) -> str:
        """What really happened, in words: the status and PostHog's detail, or the network error."""
        body_error = self.bodies.error(response_or_exception)
        if body_error:
            return f"sent a body cut short ({body_error}: the connection dropped mid-transfer)"
        if isinstance(response_or_exception, requests.Response):
            status = response_or_exception.status_code
            after = f", Retry-After {retry_after:g} s" if retry_after is not None else ", no Retry-After"
            return f"answered HTTP {status} ({error_detail(response_or_exception)}{after if status == 429 else ''})"
        reason = " ".join(str(response_or_exception).split())[:160]
        return f"failed with {type(response_or_exception).__name__} ({filter_secrets(reason)})" if reason else f"failed with {type(response_or_exception).__name__}"

    def _exhausted(self, response_or_exception: Any, retries: int) -> RetriesExhausted:
        place = self._place(response_or_exception)
        body_error = self.bodies.error(response_or_exception)
        if body_error:
            what = f"a body cut short ({body_error}: the connection dropped mid-transfer)"
        elif isinstance(response_or_exception, requests.Response):
            what = f"HTTP {response_or_exception.status_code} ({error_detail(response_or_exception)})"
        else:
            what = type(response_or_exception).__name__
        message = errors.exhausted_message(self.stream_name, place, what, retries)
        exhausted = RetriesExhausted(message=message, internal_message=message, failure_type=FailureType.transient_error)
        exhausted.last_failure = response_or_exception
        return exhausted


class Cancelled(Exception):
    """The read a request belonged to has ended: its lane stops at the next attempt (streams/query_lanes.py)."""


class PostHogClient:
    """The HTTP policy for one stream's requests to one project: the CDK's HttpClient with the
    connection's budget, PostHog's error handler and backoff, and the key as a bearer token.

    Built only by `Clients` (one factory, always given the budget). `cancelled`: set when the read
    that owns this client has ended; a retry or a new attempt then stops with `Cancelled`."""

    def __init__(
        self,
        stream: str,
        scope: str,
        api_key: str,
        project_id: int,
        host: str,
        budget: APIBudget,
        read_timeout_seconds: int,
        adapts_to_query_timeouts: bool = False,
        permit: Optional[threading.Lock] = None,
        cancelled: Optional[threading.Event] = None,
        usage: Optional[Usage] = None,
        project_field: str = "project_id",
        accepts_redirect: bool = False,
    ):
        self.bodies = ResponseBodies(permit)
        self.read_timeout_seconds = read_timeout_seconds
        self.cancelled = cancelled
        self.usage = usage or Usage()
        self.http = HttpClient(
            name=stream,
            logger=logger,
            error_handler=PostHogErrorHandler(
                stream, scope, project_id, host, self.bodies, adapts_to_query_timeouts, self.usage, project_field, accepts_redirect
            ),
            backoff_strategy=PostHogBackoffStrategy(stream, bodies=self.bodies, cancelled=cancelled, usage=self.usage),
            api_budget=budget,
            authenticator=TokenAuthenticator(api_key),
        )

    def get(self, url: str, params: Optional[Mapping[str, Any]] = None) -> Tuple[requests.Response, bytes]:
        return self.send("GET", url, params=params)

    def send(self, method: str, url: str, params: Optional[Mapping[str, Any]] = None, json: Optional[Mapping[str, Any]] = None) -> Tuple[requests.Response, bytes]:
        """The response and its body (read once, inside the retry loop); raises ClientError,
        RetriesExhausted or Cancelled."""
        if self.cancelled is not None and self.cancelled.is_set():
            raise Cancelled()
        _current_usage.usage = self.usage  # the budget's pacing wait is this request's
        try:
            _, response = self.http.send_request(
                method, url, request_kwargs=request_kwargs(self.read_timeout_seconds), headers={}, params=dict(params or {}), json=json
            )
        finally:
            _current_usage.usage = None
        return response, self.bodies.take(response)


class Clients:
    """The one place a `PostHogClient` is built. Every client shares the connection's budget:
    PostHog's rate limits are per key, whatever the stream or project (docs/posthog-api.md § 5)."""

    def __init__(self, config: "PostHogConfig", budget: APIBudget):
        self.config = config
        self.budget = budget

    def client(
        self,
        stream: str,
        scope: str,
        project_id: int,
        adapts_to_query_timeouts: bool = False,
        permit: Optional[threading.Lock] = None,
        cancelled: Optional[threading.Event] = None,
        read_timeout_seconds: Optional[int] = None,
        usage: Optional[Usage] = None,
        accepts_redirect: bool = False,
    ) -> PostHogClient:
        config = self.config
        field = "project_id" if project_id == config.project_id else "additional_project_ids" if project_id in config.additional_project_ids else "all_projects"
        client = PostHogClient(
            stream,
            scope,
            config.api_key,
            project_id,
            config.base_url,
            self.budget,
            read_timeout_seconds or config.request_timeout_seconds,
            adapts_to_query_timeouts,
            permit,
            cancelled,
            usage,
            field,
            accepts_redirect,
        )
        return client


def key_scopes(client: PostHogClient, base_url: str) -> Optional[List[str]]:
    """The key's scopes as PostHog describes the key itself (`GET @current`: one request, no scope
    needed, docs/posthog-api.md § 12.1); None where the server cannot say (older or self-hosted
    versions) or the answer is not a description."""
    try:
        _, body = client.get(f"{base_url}{scopes.CURRENT_KEY_PATH}")
        return scopes.granted_scopes(orjson.loads(body))
    except (ClientError, RetriesExhausted, orjson.JSONDecodeError):
        return None
