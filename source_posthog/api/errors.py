"""What a PostHog response means, and what to do about it (docs/posthog-api.md § 1.4, § 5).

Pure decisions over status codes, headers and bodies; the Airbyte layer (`source_posthog/http.py`)
adapts them to the CDK's retry loop.

- 2xx: success.
- 429: rate limited. Exponential backoff (5, 10, 20, 40, 80 s) or exactly `Retry-After` when
  PostHog sends it (a DRF throttle does; the query-concurrency 429 does not), at most 5 retries.
- 5xx, connection resets, truncated bodies, timeouts: linear backoff (5, 10, 15 s), at most 3.
- 401/403/404/other 4xx: refused; retrying cannot help, the message says what to fix.
"""

from __future__ import annotations

import enum
import re
from typing import Any, Mapping, Optional

import orjson

from source_posthog import settings


class Outcome(enum.Enum):
    SUCCESS = "success"
    RATE_LIMITED = "rate_limited"
    RETRY = "retry"
    REFUSED = "refused"


def classify(status: int) -> Outcome:
    if status < 300:
        return Outcome.SUCCESS
    if status == 429:
        return Outcome.RATE_LIMITED
    if status >= 500:
        return Outcome.RETRY
    return Outcome.REFUSED


def retry_limit(outcome: Outcome) -> int:
    return settings.RATE_LIMIT_MAX_RETRIES if outcome is Outcome.RATE_LIMITED else settings.SERVER_ERROR_MAX_RETRIES


def retry_wait(outcome: Outcome, attempt: int, retry_after: Optional[float] = None) -> float:
    """Seconds to wait before retry number `attempt` (1-based) of a failure of this class."""
    if outcome is Outcome.RATE_LIMITED:
        if retry_after is not None:
            return min(retry_after, settings.RATE_LIMIT_MAX_WAIT_SECONDS)
        return settings.RATE_LIMIT_BACKOFF_BASE_SECONDS * 2 ** (attempt - 1)
    return settings.SERVER_ERROR_BACKOFF_STEP_SECONDS * attempt


def retry_after_seconds(headers: Mapping[str, str]) -> Optional[float]:
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None


BUDGET_EXCEEDED_CODE = "api_queries_budget_exceeded"


def error_code(content: bytes) -> str:
    """The drf-exceptions-hog `code` of an error body ("" if there is none)."""
    try:
        body: Any = orjson.loads(content)
    except orjson.JSONDecodeError:
        return ""
    code = body.get("code") if isinstance(body, dict) else None
    return code if isinstance(code, str) else ""


def budget_wait_message(stream: str, where: str, wait: float, until: str) -> str:
    return (
        f"Stream {stream}: {where}: PostHog's hourly budget of bytes read by API queries for this project is spent "
        f"(429 {BUDGET_EXCEEDED_CODE}); waiting {wait:g} s, until {until}, as its Retry-After asks."
    )


def budget_stop_message(stream: str, where: str, wait: float, until: str, bound: float) -> str:
    return (
        f"Stream {stream}: {where}: PostHog's hourly budget of bytes read by API queries for this project is spent "
        f"(429 {BUDGET_EXCEEDED_CODE}) and refills in {wait:g} s, longer than this connector waits ({bound:g} s). "
        f"The last checkpoint is saved; run the sync again after {until} to resume from it."
    )


_QUERY_TIME_LIMIT = re.compile(r"max execution time|time limit", re.IGNORECASE)


def is_query_time_limit(status: int, content: bytes) -> bool:
    """PostHog's answer to a query over its execution limit: 504 `server_error` whose detail
    speaks of the max execution time or the time limit (docs/posthog-api.md § 13). A gateway's
    own 504 says neither: it is retried like any 5xx."""
    return status == 504 and bool(_QUERY_TIME_LIMIT.search(error_detail(content, status)))


def error_detail(content: bytes, status: int) -> str:
    """PostHog's drf-exceptions-hog body `{"type", "code", "detail", "attr"}` → its detail;
    anything else (a gateway's HTML page, plain text), briefly. Not masked: the caller masks."""
    try:
        body: Any = orjson.loads(content)
    except orjson.JSONDecodeError:
        text = " ".join(content.decode("utf-8", "replace").split())
        if text.startswith("<"):  # a gateway's HTML error page: its title says enough
            title = re.search(r"<title>(.*?)</title>", text, re.IGNORECASE)
            text = f"an HTML error page{f' ({title.group(1)[:100]})' if title else ''}"
        return text[:300] or f"HTTP {status}"
    detail = body.get("detail") if isinstance(body, dict) else None
    return str(detail) if detail else str(body)[:300]


def refusal_message(
    status: int, detail: str, where: str, stream: str, scope: str, project_id: int, host: str, location: str = "?", project_field: str = "project_id"
) -> str:
    """The sentence for a refused request: which key, scope, project or host to fix.

    Redirects are not followed (the key must reach the configured host only): a 3xx means the
    API lives elsewhere.
    """
    if 300 <= status < 400:
        return f"{host} redirected the API request ({status} on {where} to {location}). Set 'host' to the address PostHog is served from."
    if status == 401:
        return (
            f"PostHog rejected the API key (401 on {where}: {detail}). Check 'api_key': it must be a personal API "
            f"key (phx_…) created on {host} under Settings → User → Personal API keys, not revoked."
        )
    if status == 403:
        if "scope" in detail:
            fix = f"Give the personal API key the '{scope}' scope (or deselect the {stream} stream)."
        else:
            fix = f"Give the personal API key access to project {project_id}, or set '{project_field}' to projects the key can read."
        return f"PostHog refused {stream} (403 on {where}: {detail}). {fix}"
    if status == 404:
        return (
            f"PostHog has no project {project_id} on {host} (404 on {where}: {detail}). Check '{project_field}' "
            f"(Project settings → Project ID) and 'host' (us.posthog.com for US Cloud, eu.posthog.com for EU Cloud)."
        )
    return f"PostHog refused the request for {stream} ({status} on {where}: {detail})."


def exhausted_message(stream: str, where: str, what: str, retries: int) -> str:
    return (
        f"Stream {stream}: {where} still failed with {what} after {retries} retries. "
        f"The last checkpoint is saved; run the sync again to resume from it."
    )
