"""`groups_types/` and `groups/`: the project's group types, and the groups of each type.

groups_types is a bare JSON array, not paginated (docs/posthog-api.md § 14.1). groups has to be
asked one group type at a time (`?group_type_index=N`, a 400 without it, § 14.2), so a sync
reads the project's group types first and makes one pass per type.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Tuple

from source_posthog.streams.base import PagedList, ProjectRead, malformed_response


class GroupTypes(PagedList):
    """`groups_types/`: every group type of the project at once, a bare JSON array (no pages).
    Nothing is soft-deleted: a deleted type is gone."""

    resource = "groups_types"
    scope = "group:read"
    primary_key = ["project_id", "group_type_index"]  # an index is unique within its project only
    page_size = None  # not paginated: no `limit`
    bare_list = True

    def probe_request(self, part: ProjectRead) -> Tuple[str, str, Mapping[str, Any], Optional[Mapping[str, Any]]]:
        return "GET", part.url(f"{self.resource}/"), {}, None


class Groups(PagedList):
    """`groups/?group_type_index=N`: one pass per group type the project has (read from
    `groups_types/` when the project's read starts), each paged by the keyset cursor PostHog puts
    in `next` (`{"next", "previous": null, "results"}`, a fixed 100 a page: no `limit`).

    Full refresh: the REST list has no updated filter or field (only `created_at`, and group
    properties change without moving it). HogQL's `groups.updated_at` is ClickHouse's
    second-precision `_timestamp` (§ 20.1): ties are the rule, so it cannot be a cursor alone.
    """

    resource = "groups"
    scope = "group:read"
    primary_key = ["project_id", "group_type_index", "group_key"]  # a key is unique within its project and type only
    page_size = None  # PostHog fixes the page at 100 and has no `limit` parameter

    def passes(self, part: ProjectRead) -> Sequence[Mapping[str, Any]]:
        body = part.get_body(part.url(f"{GroupTypes.resource}/"), bare_list=True)
        try:
            indexes = sorted({int(group_type["group_type_index"]) for group_type in body["results"]})
        except (KeyError, TypeError, ValueError) as error:
            raise malformed_response(f"GET /api/projects/{part.project_id}/{GroupTypes.resource}/", f"the group types cannot be read ({type(error).__name__}: {error})")
        return [{"group_type_index": index} for index in indexes]

    def probe_request(self, part: ProjectRead) -> Tuple[str, str, Mapping[str, Any], Optional[Mapping[str, Any]]]:
        return "GET", part.url(f"{self.resource}/"), {"group_type_index": 0}, None
