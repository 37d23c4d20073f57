"""The REST lists read in full: a few declarative lines each.

Each checkpoints the next page after every page, so a killed sync resumes from its last page.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Iterator, Mapping, Optional, Sequence, Tuple

from airbyte_cdk.models import AirbyteMessage

from source_posthog.cdk_internals import FULL_REFRESH_COMPLETE
from source_posthog.streams.base import ChangeTimeList, PagedList, PostHogStream, ProjectRead


class Cohorts(PagedList):
    """`cohorts/`: no `updated_at` field or filter exists, so full refresh."""

    resource = "cohorts"
    scope = "cohort:read"


class ArchivedPasses:
    """A list PostHog filters by `archived=true|false` and shows only active items without it:
    two passes, active then archived, each keeping only its own items (a server that ignored the
    filter would otherwise duplicate them)."""

    def passes(self, part: ProjectRead) -> Sequence[Mapping[str, Any]]:
        return ({"archived": False}, {"archived": True})

    def pass_params(self, one_pass: Mapping[str, Any]) -> Mapping[str, Any]:
        return {"archived": "true" if one_pass["archived"] else "false"}

    def records(self, body: Mapping[str, Any], one_pass: Mapping[str, Any]) -> Iterable[Dict[str, Any]]:
        return (record for record in body["results"] if bool(record.get("archived")) == one_pass["archived"])


class FeatureFlags(ArchivedPasses, ChangeTimeList):
    """`feature_flags/`: two passes, active and archived (PostHog lists archived flags only when
    `archived` is passed, and `archived=true|false` then filters on it); deleted flags never.
    Incremental on `updated_at`, which PostHog leaves null until a flag's first edit: such a flag
    counts from its `created_at` (products/feature_flags/backend/api/feature_flag.py, § 20.5)."""

    resource = "feature_flags"
    scope = "feature_flag:read"
    change_field = "updated_at"
    fallback_field = "created_at"



class Insights(ChangeTimeList):
    """`insights/`: `basic=true` asks for the lighter serializer (no cached results). Incremental
    on `last_modified_at`: PostHog orders by it and filters on it (`date_from`, strict)."""

    resource = "insights"
    scope = "insight:read"
    change_field = "last_modified_at"
    since_param = "date_from"

    def pass_params(self, one_pass: Mapping[str, Any]) -> Mapping[str, Any]:
        return {"basic": "true"}

    def probe_request(self, part: ProjectRead) -> Tuple[str, str, Mapping[str, Any], Optional[Mapping[str, Any]]]:
        return "GET", part.url(f"{self.resource}/"), {"limit": 1, "basic": "true"}, None


class Actions(PagedList):
    """`actions/`: current PostHog returns every action in one `{"results": [...]}`; older
    servers paginate. No `next` means done, so both shapes read fully."""

    resource = "actions"
    scope = "action:read"


class EventDefinitions(PagedList):
    resource = "event_definitions"
    scope = "event_definition:read"


class Dashboards(PagedList):
    """`dashboards/`: PostHog leaves out deleted (and unlisted) dashboards. No `updated_at`
    field or filter exists, so full refresh."""

    resource = "dashboards"
    scope = "dashboard:read"


class Experiments(ArchivedPasses, ChangeTimeList):
    """`experiments/`: two passes. The list hides archived experiments unless asked, and
    `archived=true` returns only the archived ones (docs/posthog-api.md § 14.4), so a sync reads
    `archived=false`, then `archived=true`. Each record already says which it is (`archived`);
    a pass keeps only its own, so a server that ignored the filter would not duplicate any.
    Incremental on `updated_at` (an allowed `order`, products/experiments/backend/experiment_service.py)."""

    resource = "experiments"
    scope = "experiment:read"
    change_field = "updated_at"



class Surveys(PagedList):
    """`surveys/`: archived surveys stay in the list; a deleted survey is gone (no soft delete).
    No `updated_at` field exists, so full refresh."""

    resource = "surveys"
    scope = "survey:read"


class Projects(PostHogStream):
    """`/api/projects/{id}/`: the project being read, one record per project the sync reads
    (with `all_projects`, every listed one). The detail works for every key that can read the
    project, also one scoped to projects (which cannot list them)."""

    scope = "project:read"

    def read_project(self, part: ProjectRead) -> Iterator[AirbyteMessage]:
        yield part.record(part.get_body(part.project_url, required=None))
        yield part.checkpoint(FULL_REFRESH_COMPLETE)

    def missing_scope(self) -> None:
        # The request `check` makes to prove the key and the project: a key that cannot read the
        # project fails check itself, naming project:read, so no probe is needed.
        return None
