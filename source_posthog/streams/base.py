"""PostHogStream and PostHog's pagination styles, each written once.

PostHog lists come in five envelopes (posthog-api.md § 2):
  counted  {"count", "next", "previous", "results"}   → NextUrlPagination
  persons  {"next", "previous", "results"}            → NextUrlPagination (a short page is not the end)
  actions  {"results"} (older servers: counted)       → NextUrlPagination (no `next` = done)
  recordings {"results", "has_next", "version"}      → HasNextOffsetPagination
  HogQL    {"results", "columns", "types", ...}       → streams/events.py (keyset)
"""

from __future__ import annotations

from abc import ABC
from typing import Any, Iterable, Mapping, MutableMapping, Optional
from urllib.parse import parse_qs, urlsplit

import orjson
import requests
from airbyte_cdk.models import FailureType
from airbyte_cdk.sources.streams import CheckpointMixin
from airbyte_cdk.sources.streams.call_rate import APIBudget
from airbyte_cdk.sources.streams.http import HttpStream
from airbyte_cdk.sources.streams.http.requests_native_auth import TokenAuthenticator
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from source_posthog import settings
from source_posthog.config import PostHogConfig
from source_posthog.http import PostHogBackoffStrategy, PostHogErrorHandler, endpoint_name, request_kwargs


class MalformedResponse(AirbyteTracedException):
    pass


def where(response: requests.Response) -> str:
    return f"{response.request.method} {endpoint_name(response.request.url)}"


def decode_body(response: requests.Response, required: Optional[str] = "results", item_type: type = dict) -> Mapping[str, Any]:
    """Parse a PostHog JSON body once per response; anything else is a clear error naming the endpoint.

    `required` names the list the body must hold, and `item_type` what its items must be
    (objects for REST lists, row arrays for HogQL).
    """
    cached = getattr(response, "_posthog_body", None)
    if cached is not None:
        return cached
    place = where(response)
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError as error:
        raise malformed_response(place, f"the body is not JSON ({error}); it starts with {response.content[:80]!r}")
    if not isinstance(body, dict) or (required and not isinstance(body.get(required), list)):
        got = type(body.get(required)).__name__ if isinstance(body, dict) else type(body).__name__
        expected = f"an object with a '{required}' list" if required else "an object"
        raise malformed_response(place, f"expected {expected}, got {got}")
    if required and not all(item.__class__ is item_type for item in body[required]):
        wrong = next(item for item in body[required] if item.__class__ is not item_type)
        raise malformed_response(place, f"'{required}' holds a {type(wrong).__name__} where {item_type.__name__}s are expected")
    response._posthog_body = body  # type: ignore[attr-defined]
    response._content = b""  # the parsed body is all that is needed now: free the bytes (a page is ~40 MB)
    return body


def malformed_response(where: str, problem: str) -> MalformedResponse:
    message = f"PostHog sent an unexpected response to {where}: {problem}. The last checkpoint is saved; retry the sync, and report it if it persists."
    return MalformedResponse(message=message, internal_message=message, failure_type=FailureType.system_error)


class PostHogStream(HttpStream, ABC):
    """One PostHog list endpoint under /api/projects/{project_id}/.

    A stream declares `resource` (the path), `scope` (the personal API key scope it needs) and,
    where it differs from the default, `page_size` and its pagination mixin.
    """

    primary_key = "id"
    resource: str = ""
    scope: str = ""
    page_size: Optional[int] = settings.LIST_PAGE_SIZE

    def __init__(self, config: PostHogConfig, api_budget: APIBudget):
        self.config = config
        super().__init__(authenticator=TokenAuthenticator(config.api_key), api_budget=api_budget)

    @property
    def url_base(self) -> str:
        return self.config.project_url

    def path(self, **kwargs: Any) -> str:
        return f"{self.resource}/"

    def request_kwargs(self, **kwargs: Any) -> Mapping[str, Any]:
        return request_kwargs(self.config.request_timeout_seconds)

    def get_error_handler(self) -> PostHogErrorHandler:
        return PostHogErrorHandler(self.name, self.scope, self.config.project_id, self.config.base_url)

    def get_backoff_strategy(self) -> PostHogBackoffStrategy:
        return PostHogBackoffStrategy(self.name, f"{self.http_method} {endpoint_name(self.url_base + self.resource)}/")

    def parse_response(self, response: requests.Response, **kwargs: Any) -> Iterable[Mapping[str, Any]]:
        yield from decode_body(response)["results"]


class ValidatedState(CheckpointMixin):
    """Incremental state kept by the stream; `parse_state` checks what comes in.

    Put it first among the bases, so its `state` wins over HttpStream's cursor-based one.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        self._state: MutableMapping[str, Any] = {}
        super().__init__(*args, **kwargs)

    @property
    def state(self) -> MutableMapping[str, Any]:
        return self._state

    @state.setter
    def state(self, value: MutableMapping[str, Any]) -> None:
        self._state = self.parse_state(value) if value else {}

    def parse_state(self, value: Mapping[str, Any]) -> MutableMapping[str, Any]:
        """The canonical form of an incoming state; raises StateError if it cannot be trusted."""
        raise NotImplementedError


class NextUrlPagination(PostHogStream, ABC):
    """Follow PostHog's absolute `next` URL until it is null.

    A page shorter than `limit` is not the end (persons can return short pages with a `next`);
    only a missing `next` is. The `next` URL is re-based onto the configured host: a
    self-hosted PostHog behind a TLS proxy builds `http://internal-host/...` links, and the key
    must never be sent anywhere but the configured host.
    """

    def next_page_token(self, response: requests.Response) -> Optional[Mapping[str, Any]]:
        next_url = decode_body(response).get("next")
        if not next_url:
            return None
        if not isinstance(next_url, str):
            raise malformed_response(where(response), f"'next' is a {type(next_url).__name__}, not a URL")
        parts = urlsplit(next_url)
        return {"next": f"{parts.path}?{parts.query}" if parts.query else parts.path}

    def path(self, next_page_token: Optional[Mapping[str, Any]] = None, **kwargs: Any) -> str:
        if next_page_token:
            return f"{self.config.base_url}{next_page_token['next']}"
        return f"{self.resource}/"

    def request_params(self, next_page_token: Optional[Mapping[str, Any]] = None, **kwargs: Any) -> MutableMapping[str, Any]:
        if next_page_token:
            return {}  # `next` carries every parameter
        return {"limit": self.page_size} if self.page_size else {}


class HasNextOffsetPagination(PostHogStream, ABC):
    """Session recordings: `{"results", "has_next"}`; page with `offset += limit` while `has_next`.

    The opaque `after` cursor's shape varies by PostHog version; offset paging does not.
    """

    def next_page_token(self, response: requests.Response) -> Optional[Mapping[str, Any]]:
        body = decode_body(response)
        if not body.get("has_next") or not body["results"]:
            return None
        offset = parse_offset(response.request.url) + len(body["results"])
        return {"offset": offset}

    def request_params(self, next_page_token: Optional[Mapping[str, Any]] = None, **kwargs: Any) -> MutableMapping[str, Any]:
        params: dict = {"limit": self.page_size}
        if next_page_token:
            params["offset"] = next_page_token["offset"]
        return params


def parse_offset(url: str) -> int:
    values = parse_qs(urlsplit(url).query).get("offset")
    return int(values[0]) if values else 0

