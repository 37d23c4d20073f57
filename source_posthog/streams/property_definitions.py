"""`property_definitions/`: one pass per `type`.

The endpoint returns event properties unless asked for another `type` (docs/posthog-api.md § 3.11),
so a full sync reads event, person and session properties, and group properties for each of
PostHog's five group type indexes. Each record says which pass it came from.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, MutableMapping, Optional

import requests
from airbyte_cdk.sources.types import StreamSlice

from source_posthog.streams.base import NextUrlPagination

GROUP_TYPE_INDEXES = range(5)  # PostHog allows at most five group types per project


def property_passes() -> Iterable[Mapping[str, Any]]:
    for kind in ("event", "person", "session"):
        yield {"type": kind}
    for index in GROUP_TYPE_INDEXES:
        yield {"type": "group", "group_type_index": index}


class PropertyDefinitions(NextUrlPagination):
    resource = "property_definitions"
    scope = "property_definition:read"
    primary_key = ["type", "id"]  # one row per pass; the same name exists as event and person property

    def stream_slices(self, **kwargs: Any) -> Iterable[Optional[Mapping[str, Any]]]:
        for partition in property_passes():
            yield StreamSlice(partition=dict(partition), cursor_slice={})

    def probe_params(self) -> Mapping[str, Any]:
        return {"limit": 1, "type": "event"}

    def request_params(
        self,
        stream_slice: Optional[Mapping[str, Any]] = None,
        next_page_token: Optional[Mapping[str, Any]] = None,
        **kwargs: Any,
    ) -> MutableMapping[str, Any]:
        params = super().request_params(next_page_token=next_page_token, **kwargs)
        if not next_page_token and stream_slice:
            params.update(_partition(stream_slice))
        return params

    def parse_response(
        self, response: requests.Response, stream_slice: Optional[Mapping[str, Any]] = None, **kwargs: Any
    ) -> Iterable[Mapping[str, Any]]:
        partition = _partition(stream_slice or {})
        for record in super().parse_response(response, **kwargs):
            yield {**record, **partition}


def _partition(stream_slice: Mapping[str, Any]) -> Mapping[str, Any]:
    partition = stream_slice.partition if isinstance(stream_slice, StreamSlice) else stream_slice
    return {key: partition[key] for key in ("type", "group_type_index") if key in partition}
