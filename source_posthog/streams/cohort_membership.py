"""`cohort_membership`: who is in each cohort, static cohorts included, through HogQL.

Two passes over PostHog's HogQL tables (docs/posthog-api.md § 20.5): `cohort_people` (the members
of dynamic cohorts at their cohort's current version) and `static_cohort_people`; each in keyset
pages on (`cohort_id`, `person_id`), compared only by the server (`person_id` is a UUID, which
ClickHouse orders by its second half first, § 20.1). A checkpoint after every page,
`{"pass": table, "after": [cohort_id, person_id]}`, so a killed sync resumes after it.

Full refresh: PostHog records no change time for a membership (a cohort is recalculated as a
whole), so every sync reads every pair. Primary key (project_id, cohort_id, person_id); records
say whether the cohort is static.
"""

from __future__ import annotations

import uuid
from typing import Any, Iterator, List, Mapping, Optional, Tuple

from airbyte_cdk.models import AirbyteMessage

from source_posthog import settings
from source_posthog.api.hogql import COHORT_MEMBER_TABLES, cohort_members_query, query_body
from source_posthog.cdk_internals import FULL_REFRESH_COMPLETE
from source_posthog.state import StateError
from source_posthog.streams.base import PostHogStream, ProjectRead, malformed_response


class CohortMembership(PostHogStream):
    resource = "query"
    scope = "query:read"
    primary_key = ["project_id", "cohort_id", "person_id"]

    @property
    def page_size(self) -> int:  # type: ignore[override]
        return settings.COHORT_MEMBERS_PAGE_SIZE

    def read_project(self, part: ProjectRead) -> Iterator[AirbyteMessage]:
        resume = part.resume or {}
        start = COHORT_MEMBER_TABLES.index(resume["pass"]) if resume.get("pass") in COHORT_MEMBER_TABLES else 0
        after: Optional[Tuple[int, str]] = tuple(resume["after"]) if resume.get("after") else None  # type: ignore[assignment]
        for index in range(start, len(COHORT_MEMBER_TABLES)):
            table = COHORT_MEMBER_TABLES[index]
            while True:
                pairs = self._page(part, table, after)
                previous: Optional[Tuple[int, str]] = after
                for pair in pairs:
                    if pair != previous:  # a raw table may hold a pair twice, next to each other
                        yield part.record({"cohort_id": pair[0], "person_id": pair[1], "static": table == "static_cohort_people"})
                    previous = pair
                if len(pairs) < self.page_size:
                    break
                if pairs[-1] == after:  # a server that ignored the keyset would loop forever
                    raise malformed_response(f"POST /api/projects/{part.project_id}/query/", f"the {table} page did not move past {after}")
                after = pairs[-1]
                yield part.checkpoint({"pass": table, "after": list(after)})
            after = None
            if index + 1 < len(COHORT_MEMBER_TABLES):
                yield part.checkpoint({"pass": COHORT_MEMBER_TABLES[index + 1], "after": None})
        yield part.checkpoint(FULL_REFRESH_COMPLETE)

    def _page(self, part: ProjectRead, table: str, after: Optional[Tuple[int, str]]) -> List[Tuple[int, str]]:
        body, place = part.query(cohort_members_query(table, after, self.page_size), "airbyte_source_posthog_cohort_membership", ("cohort_id", "person_id"))
        columns = body["columns"]
        cohort_at, person_at = columns.index("cohort_id"), columns.index("person_id")
        pairs = []
        for row in body["results"]:
            try:
                pairs.append((int(row[cohort_at]), str(uuid.UUID(str(row[person_at])))))
            except (IndexError, TypeError, ValueError) as error:
                raise malformed_response(place, f"a {table} row cannot be read ({type(error).__name__}: {error})")
        return pairs

    def trusted_state(self, project_id: int, value: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
        if "pass" not in value:
            return super().trusted_state(project_id, value)
        if value.get("pass") not in COHORT_MEMBER_TABLES:
            raise StateError(self.name, f"'pass' must be one of {', '.join(COHORT_MEMBER_TABLES)}, got {str(value.get('pass'))[:40]!r}")
        after = value.get("after")
        if after is not None:
            try:
                int(after[0]), uuid.UUID(str(after[1]))
            except (TypeError, ValueError, IndexError, KeyError):
                raise StateError(self.name, f"'after' must be [cohort_id, person_id], got {str(after)[:60]!r}")
        return value

    def probe_request(self, part: ProjectRead) -> Any:
        return "POST", part.url("query/"), {}, query_body(cohort_members_query(COHORT_MEMBER_TABLES[0], None, 1), "airbyte_source_posthog_scope_check")
