"""`property_definitions/`: one pass per `type`.

The endpoint returns event properties unless asked for another `type` (docs/posthog-api.md § 3.11),
so a full sync reads event, person and session properties, and group properties for each of
PostHog's five group type indexes. Each record says which pass it came from.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple

from source_posthog.streams.base import PagedList, ProjectRead

GROUP_TYPE_INDEXES = range(5)  # PostHog allows at most five group types per project
PASSES = (
    *({"type": kind} for kind in ("event", "person", "session")),
    *({"type": "group", "group_type_index": index} for index in GROUP_TYPE_INDEXES),
)


class PropertyDefinitions(PagedList):
    resource = "property_definitions"
    scope = "property_definition:read"
    primary_key = ["type", "id"]  # one row per pass; the same name exists as event and person property

    def passes(self, part: ProjectRead) -> Sequence[Mapping[str, Any]]:
        return PASSES

    def records(self, body: Mapping[str, Any], one_pass: Mapping[str, Any]) -> Iterable[Dict[str, Any]]:
        return ({**record, **one_pass} for record in body["results"])  # each record says which pass it came from

    def probe_request(self, part: ProjectRead) -> Tuple[str, str, Mapping[str, Any], Optional[Mapping[str, Any]]]:
        return "GET", part.url(f"{self.resource}/"), {"limit": 1, "type": "event"}, None
