"""The full-refresh streams: a few declarative lines each.

Each is resumable full refresh: the CDK checkpoints the next page after every page, so a
killed sync resumes from its last page.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, MutableMapping, Optional

import requests

from source_posthog.streams.base import ListInPasses, NextUrlPagination, PostHogStream, partition_of


class Cohorts(NextUrlPagination):
    """`cohorts/`: no `updated_at` field or filter exists, so full refresh."""

    resource = "cohorts"
    scope = "cohort:read"


class FeatureFlags(NextUrlPagination):
    """`feature_flags/`: excludes deleted flags; archived ones need `archived`, not sent."""

    resource = "feature_flags"
    scope = "feature_flag:read"


class Insights(NextUrlPagination):
    """`insights/`: `basic=true` asks for the lighter serializer (no cached results)."""

    resource = "insights"
    scope = "insight:read"

    def request_params(self, next_page_token: Optional[Mapping[str, Any]] = None, **kwargs: Any) -> MutableMapping[str, Any]:
        params = super().request_params(next_page_token=next_page_token, **kwargs)
        if not next_page_token:
            params["basic"] = "true"
        return params

    def probe_params(self) -> Mapping[str, Any]:
        return {"limit": 1, "basic": "true"}


class Actions(NextUrlPagination):
    """`actions/`: current PostHog returns every action in one `{"results": [...]}`; older
    servers paginate. No `next` means done, so both shapes read fully."""

    resource = "actions"
    scope = "action:read"


class EventDefinitions(NextUrlPagination):
    resource = "event_definitions"
    scope = "event_definition:read"


class Dashboards(NextUrlPagination):
    """`dashboards/`: PostHog leaves out deleted (and unlisted) dashboards. No `updated_at`
    field or filter exists, so full refresh."""

    resource = "dashboards"
    scope = "dashboard:read"


class Experiments(ListInPasses):
    """`experiments/`: two passes. The list hides archived experiments unless asked, and
    `archived=true` returns only the archived ones (docs/posthog-api.md § 14.4), so a sync reads
    `archived=false`, then `archived=true`. Each record already says which it is (`archived`);
    a pass keeps only its own, so a server that ignored the filter would not duplicate any."""

    resource = "experiments"
    scope = "experiment:read"

    def passes(self) -> Iterable[Mapping[str, Any]]:
        return [{"archived": False}, {"archived": True}]

    def pass_params(self, partition: Mapping[str, Any]) -> Mapping[str, Any]:
        return {"archived": "true" if partition["archived"] else "false"}

    def parse_response(
        self, response: requests.Response, stream_slice: Optional[Mapping[str, Any]] = None, **kwargs: Any
    ) -> Iterable[Mapping[str, Any]]:
        archived = bool(partition_of(stream_slice).get("archived"))
        for record in super().parse_response(response, **kwargs):
            if bool(record.get("archived")) == archived:
                yield record


class Surveys(NextUrlPagination):
    """`surveys/`: archived surveys stay in the list; a deleted survey is gone (no soft delete).
    No `updated_at` field exists, so full refresh."""

    resource = "surveys"
    scope = "survey:read"


class Projects(PostHogStream):
    """`/api/projects/{id}/`: the project being read, one record per configured project (with
    `all_projects`, per listed project). The detail works for every key that can read the
    project, also one scoped to projects (which cannot list them)."""

    scope = "project:read"

    @property
    def url_base(self) -> str:
        return f"{self.config.api_url}projects/"

    @property
    def resource(self) -> str:  # type: ignore[override]
        return str(self.config.project_id)

    def request_params(self, **kwargs: Any) -> MutableMapping[str, Any]:
        return {}

    def missing_scope(self) -> Optional[str]:
        # The request `check` makes to prove the key and the project: a key that cannot read the
        # project fails check itself, naming project:read, so no probe is needed.
        return None

    def next_page_token(self, response: requests.Response) -> Optional[Mapping[str, Any]]:
        return None

    def parse_response(self, response: requests.Response, **kwargs: Any) -> Iterable[Mapping[str, Any]]:
        yield self.decode(response, required=None)
