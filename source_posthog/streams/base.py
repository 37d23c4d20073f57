"""PostHogStream and the Airbyte side of PostHog's pagination styles, each written once.

The envelopes themselves are read by `source_posthog/api/envelopes.py` (docs/posthog-api.md § 2):
  counted, persons, actions  → NextUrlPagination (follow `next`; a short page is not the end)
  groups                     → NextUrlPagination (the keyset cursor travels inside `next`)
  groups_types (bare list)   → NextUrlPagination with `bare_list = True` (one page, no `next`)
  recordings                 → HasNextOffsetPagination
  HogQL                      → streams/events.py (keyset, planned by posthog/events_plan.py)
"""

from __future__ import annotations

from abc import ABC
from typing import Any, Iterable, Mapping, MutableMapping, Optional, Tuple
from urllib.parse import urlsplit

import requests
from airbyte_cdk.models import FailureType
from airbyte_cdk.sources.streams import CheckpointMixin
from airbyte_cdk.sources.streams.call_rate import APIBudget
from airbyte_cdk.sources.streams.checkpoint.checkpoint_reader import FULL_REFRESH_COMPLETE_STATE
from airbyte_cdk.sources.streams.http import HttpStream
from airbyte_cdk.sources.streams.http.requests_native_auth import TokenAuthenticator
from airbyte_cdk.sources.types import StreamSlice
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from source_posthog import settings
from source_posthog.config import PostHogConfig
from source_posthog.http import ClientError, PostHogBackoffStrategy, PostHogClient, PostHogErrorHandler, ResponseBodies, endpoint_name, request_kwargs, where
from source_posthog.api import envelopes
from source_posthog.api.envelopes import MalformedBody


class MalformedResponse(AirbyteTracedException):
    pass


def malformed_response(place: str, problem: str) -> MalformedResponse:
    message = f"PostHog sent an unexpected response to {place}: {problem}. The last checkpoint is saved; retry the sync, and report it if it persists."
    return MalformedResponse(message=message, internal_message=message, failure_type=FailureType.system_error)


PROJECT_ID_SCHEMA = {"type": "integer", "description": "The PostHog project the record was read from."}


class PostHogStream(HttpStream, ABC):
    """One PostHog list endpoint under /api/projects/{project_id}/.

    A stream declares `resource` (the path), `scope` (the personal API key scope it needs) and,
    where it differs from the default, `page_size` and its pagination mixin.
    """

    primary_key = "id"
    resource: str = ""
    scope: str = ""
    page_size: Optional[int] = settings.LIST_PAGE_SIZE
    bare_list: bool = False  # the endpoint answers a bare JSON array (envelopes.decode_body)

    def __init__(self, config: PostHogConfig, api_budget: APIBudget):
        self.config = config
        self.api_budget = api_budget  # shared by every stream and PostHogClient: PostHog's limits are per key
        self.bodies = ResponseBodies()  # shared by the error handler (reads) and the parser (takes)
        self._decoded: Optional[Tuple[requests.Response, Mapping[str, Any]]] = None
        super().__init__(authenticator=TokenAuthenticator(config.api_key), api_budget=api_budget)

    @property
    def url_base(self) -> str:
        return self.config.project_url

    def path(self, **kwargs: Any) -> str:
        return f"{self.resource}/"

    def request_kwargs(self, **kwargs: Any) -> Mapping[str, Any]:
        return request_kwargs(self.config.request_timeout_seconds)

    def get_error_handler(self) -> PostHogErrorHandler:
        return PostHogErrorHandler(self.name, self.scope, self.config.project_id, self.config.base_url, self.bodies)

    def get_backoff_strategy(self) -> PostHogBackoffStrategy:
        return PostHogBackoffStrategy(self.name, f"{self.http_method} {endpoint_name(self.url_base + self.resource)}/", self.bodies)

    def decode(self, response: requests.Response, required: Optional[str] = "results", item_type: type = dict) -> Mapping[str, Any]:
        """The response's body, parsed once (parse_response and next_page_token both need it)."""
        if self._decoded is not None and self._decoded[0] is response:
            return self._decoded[1]
        try:
            body = envelopes.decode_body(self.bodies.take(response), required, item_type, bare_list=self.bare_list)
        except MalformedBody as error:
            raise malformed_response(where(response), str(error))
        self._decoded = (response, body)
        return body

    def parse_response(self, response: requests.Response, **kwargs: Any) -> Iterable[Mapping[str, Any]]:
        yield from self.decode(response)["results"]

    def get_json_schema(self) -> Mapping[str, Any]:
        """The stream's schema file, plus `project_id`, which every record carries (projects.py)."""
        schema = dict(super().get_json_schema())
        schema["properties"] = {**schema.get("properties", {}), "project_id": PROJECT_ID_SCHEMA}
        return schema

    # -- scopes ------------------------------------------------------------------------------
    @property
    def accepted_scopes(self) -> Tuple[str, ...]:
        """The scopes any one of which lets the key read this stream."""
        return (self.scope,)

    def probe_params(self) -> Mapping[str, Any]:
        """The query of the cheapest request that proves the key may read this stream."""
        return {"limit": 1}

    def probe_body(self) -> Optional[Mapping[str, Any]]:
        return None

    def missing_scope(self) -> Optional[str]:
        """One cheap request: None if the key can read this stream, else the message naming the
        scope it lacks. PostHog checks a key's scopes per endpoint before anything else, so a 403
        here is exactly what a sync of this stream would meet."""
        config = self.config
        client = PostHogClient(self.name, self.scope, config.api_key, config.project_id, config.base_url, self.api_budget, config.request_timeout_seconds)
        try:
            client.send(self.http_method, f"{self.url_base}{self.resource}/", params=self.probe_params(), json=self.probe_body())
        except ClientError as refused:
            if refused.missing_scope:
                return refused.message
            raise
        return None

    # -- incoming state ----------------------------------------------------------------------
    def incoming_state(self, value: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
        """The state to resume from, None to start over; raises StateError if it cannot be trusted.

        A full-refresh list checkpoints the next page (`{"next": path}`) and, once complete,
        `{"__ab_full_refresh_sync_complete": true}`. Clients that replay the last state (PyAirbyte,
        a shell following the README) hand the completed one back: that means "read it all again",
        not "read nothing". A next page of another project or host is not this stream's either.
        """
        if value == FULL_REFRESH_COMPLETE_STATE:
            self.logger.info(f"Stream {self.name}: the previous full refresh completed; reading it again from the first page.")
            return None
        pages = [value.get("next")] if "next" in value else [partition.get("cursor", {}).get("next") for partition in value.get("states", []) if isinstance(partition, Mapping)]
        foreign = [page for page in pages if isinstance(page, str) and not urlsplit(page).path.startswith(urlsplit(self.url_base).path)]
        if foreign:
            self.logger.warning(
                f"Stream {self.name}: the state's next page {urlsplit(foreign[0]).path} is not under {urlsplit(self.url_base).path} "
                f"(it was written for another project or host); reading this project from the first page."
            )
            return None
        return value

    def owns(self, value: Mapping[str, Any]) -> bool:
        """False, with a warning, for an incremental state written for another project."""
        written_for = value.get("project_id")
        if written_for is None or written_for == self.config.project_id:
            return True
        self.logger.warning(
            f"Stream {self.name}: the state was written for project {written_for}, not project {self.config.project_id}; "
            f"syncing project {self.config.project_id} from anchor_date ({self.config.anchor_date.to_iso8601_string()})."
        )
        return False


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
        self._state = self.parse_state(value) if value and self.owns(value) else {}

    def incoming_state(self, value: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
        if not value or not self.owns(value):
            return None
        self.parse_state(value)
        return value

    def parse_state(self, value: Mapping[str, Any]) -> MutableMapping[str, Any]:
        """The canonical form of an incoming state (it carries `project_id`); raises StateError
        if it cannot be trusted, or if its cursor lies in the future."""
        raise NotImplementedError


class NextUrlPagination(PostHogStream, ABC):
    """Follow PostHog's absolute `next` URL until it is null.

    A page shorter than `limit` is not the end (persons can return short pages with a `next`);
    only a missing `next` is. The `next` URL is re-based onto the configured host: a
    self-hosted PostHog behind a TLS proxy builds `http://internal-host/...` links, and the key
    must never be sent anywhere but the configured host.
    """

    def next_page_token(self, response: requests.Response) -> Optional[Mapping[str, Any]]:
        try:
            path = envelopes.next_path(self.decode(response))
        except MalformedBody as error:
            raise malformed_response(where(response), str(error))
        return {"next": path} if path else None

    def path(self, next_page_token: Optional[Mapping[str, Any]] = None, **kwargs: Any) -> str:
        if next_page_token:
            return f"{self.config.base_url}{next_page_token['next']}"
        return f"{self.resource}/"

    def request_params(self, next_page_token: Optional[Mapping[str, Any]] = None, **kwargs: Any) -> MutableMapping[str, Any]:
        if next_page_token:
            return {}  # `next` carries every parameter
        return {"limit": self.page_size} if self.page_size else {}


class ListInPasses(NextUrlPagination, ABC):
    """A list PostHog serves one pass at a time (property types, group types, archived or not):
    one slice per pass, the pass's parameters on its first page (`next` carries them after)."""

    def passes(self) -> Iterable[Mapping[str, Any]]:
        raise NotImplementedError

    def pass_params(self, partition: Mapping[str, Any]) -> Mapping[str, Any]:
        return partition

    def stream_slices(self, **kwargs: Any) -> Iterable[Optional[Mapping[str, Any]]]:
        for partition in self.passes():
            yield StreamSlice(partition=dict(partition), cursor_slice={})

    def request_params(
        self, stream_slice: Optional[Mapping[str, Any]] = None, next_page_token: Optional[Mapping[str, Any]] = None, **kwargs: Any
    ) -> MutableMapping[str, Any]:
        params = super().request_params(next_page_token=next_page_token, **kwargs)
        if not next_page_token and stream_slice:
            params.update(self.pass_params(partition_of(stream_slice)))
        return params


def partition_of(stream_slice: Optional[Mapping[str, Any]]) -> Mapping[str, Any]:
    if stream_slice is None:
        return {}
    return stream_slice.partition if isinstance(stream_slice, StreamSlice) else stream_slice


class HasNextOffsetPagination(PostHogStream, ABC):
    """Session recordings: `{"results", "has_next"}`; page with `offset += limit` while `has_next`.

    The opaque `after` cursor's shape varies by PostHog version; offset paging does not.
    """

    def next_page_token(self, response: requests.Response) -> Optional[Mapping[str, Any]]:
        offset = envelopes.next_offset(self.decode(response), response.request.url)
        return {"offset": offset} if offset is not None else None

    def request_params(self, next_page_token: Optional[Mapping[str, Any]] = None, **kwargs: Any) -> MutableMapping[str, Any]:
        params: dict = {"limit": self.page_size}
        if next_page_token:
            params["offset"] = next_page_token["offset"]
        return params

