"""`groups_types/` and `groups/`: the project's group types, and the groups of each type.

groups_types is a bare JSON array, not paginated (docs/posthog-api.md § 14.1). groups has to be
asked one group type at a time (`?group_type_index=N`, a 400 without it, § 14.2), so a sync
reads groups_types first and makes one slice per type the project has.
"""

from __future__ import annotations

from typing import Any, Iterable, List, Mapping

from source_posthog.http import PostHogClient, where
from source_posthog.api import envelopes
from source_posthog.api.envelopes import MalformedBody
from source_posthog.streams.base import ListInPasses, NextUrlPagination, malformed_response


class GroupTypes(NextUrlPagination):
    """`groups_types/`: every group type of the project at once, a bare JSON array (no pages).
    Nothing is soft-deleted: a deleted type is gone."""

    resource = "groups_types"
    scope = "group:read"
    primary_key = ["project_id", "group_type_index"]  # an index is unique within its project only
    page_size = None  # not paginated: no `limit`
    bare_list = True

    def probe_params(self) -> Mapping[str, Any]:
        return {}


class Groups(ListInPasses):
    """`groups/?group_type_index=N`: one slice per group type the project has (read from
    `groups_types/` when the sync starts), each paged by the keyset cursor PostHog puts in
    `next` (`{"next", "previous": null, "results"}`, a fixed 100 a page: no `limit`).

    Full refresh: the REST list has no updated filter or field (only `created_at`, and group
    properties change without moving it). HogQL's `groups.updated_at` is ClickHouse's
    second-precision `_timestamp` (§ 14.6); an incremental mode over HogQL can come later.
    """

    resource = "groups"
    scope = "group:read"
    primary_key = ["project_id", "group_type_index", "group_key"]  # a key is unique within its project and type only
    page_size = None  # PostHog fixes the page at 100 and has no `limit` parameter

    def passes(self) -> Iterable[Mapping[str, Any]]:
        return [{"group_type_index": index} for index in self.group_type_indexes()]

    def group_type_indexes(self) -> List[int]:
        config = self.config
        client = PostHogClient(self.name, self.scope, config.api_key, config.project_id, config.base_url, self.api_budget, config.request_timeout_seconds)
        response, body = client.get(f"{self.url_base}{GroupTypes.resource}/")
        try:
            types = envelopes.decode_body(body, bare_list=True)["results"]
            return sorted({int(group_type["group_type_index"]) for group_type in types})
        except (MalformedBody, KeyError, TypeError, ValueError) as error:
            raise malformed_response(where(response), f"the group types cannot be read ({type(error).__name__}: {error})")

    def probe_params(self) -> Mapping[str, Any]:
        return {"group_type_index": 0}
