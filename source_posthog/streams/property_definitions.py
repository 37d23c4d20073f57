"""`property_definitions/`: one pass per `type`.

The endpoint returns event properties unless asked for another `type` (docs/posthog-api.md § 3.11),
so a full sync reads event, person and session properties, and group properties for each of
PostHog's five group type indexes. Each record says which pass it came from.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional

import requests

from source_posthog.streams.base import ListInPasses, partition_of

GROUP_TYPE_INDEXES = range(5)  # PostHog allows at most five group types per project


def property_passes() -> Iterable[Mapping[str, Any]]:
    for kind in ("event", "person", "session"):
        yield {"type": kind}
    for index in GROUP_TYPE_INDEXES:
        yield {"type": "group", "group_type_index": index}


class PropertyDefinitions(ListInPasses):
    resource = "property_definitions"
    scope = "property_definition:read"
    primary_key = ["type", "id"]  # one row per pass; the same name exists as event and person property

    def passes(self) -> Iterable[Mapping[str, Any]]:
        return property_passes()

    def probe_params(self) -> Mapping[str, Any]:
        return {"limit": 1, "type": "event"}

    def parse_response(
        self, response: requests.Response, stream_slice: Optional[Mapping[str, Any]] = None, **kwargs: Any
    ) -> Iterable[Mapping[str, Any]]:
        partition = partition_of(stream_slice)  # each record says which pass it came from
        for record in super().parse_response(response, **kwargs):
            yield {**record, **partition}
