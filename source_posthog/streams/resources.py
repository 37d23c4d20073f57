"""The full-refresh streams: a few declarative lines each.

Each is resumable full refresh: the CDK checkpoints the next page after every page, so a
killed sync resumes from its last page.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, MutableMapping, Optional

import requests
from airbyte_cdk.sources.streams.http.error_handlers.response_models import ErrorResolution, ResponseAction

from source_posthog import settings
from source_posthog.http import ClientError, PostHogClient, PostHogErrorHandler, where
from source_posthog.posthog import envelopes
from source_posthog.posthog.envelopes import MalformedBody
from source_posthog.streams.base import ListInPasses, NextUrlPagination, malformed_response, partition_of


class Persons(NextUrlPagination):
    """`persons/`: id is the person UUID. No server-side updated filter exists and properties
    change without changing `created_at`, so full refresh is the honest mode."""

    resource = "persons"
    scope = "person:read"
    page_size = settings.PERSONS_PAGE_SIZE


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


class Projects(NextUrlPagination):
    """`/api/projects/`: every project the key can see.

    A key scoped to projects cannot list them (403 "API keys with scoped projects are only
    supported on project-based views."): then the configured project is read from
    `/api/projects/{id}/`, so `projects` still holds it.
    """

    resource = "projects"
    scope = "project:read"

    @property
    def url_base(self) -> str:
        return self.config.api_url

    def get_error_handler(self) -> PostHogErrorHandler:
        return _ListForbiddenIsIgnored(self.name, self.scope, self.config.project_id, self.config.base_url, self.bodies)

    def parse_response(self, response: requests.Response, **kwargs: Any) -> Iterable[Mapping[str, Any]]:
        if response.status_code == 403:
            self.logger.info("The API key cannot list projects; reading the configured project only.")
            yield self._configured_project()
            return
        yield from super().parse_response(response, **kwargs)

    def next_page_token(self, response: requests.Response) -> Optional[Mapping[str, Any]]:
        return None if response.status_code == 403 else super().next_page_token(response)

    def missing_scope(self) -> Optional[str]:
        try:
            return super().missing_scope()
        except ClientError as refused:
            if refused.status == 403:  # a project-scoped key cannot list projects: the stream falls back
                return None
            raise

    def _configured_project(self) -> Mapping[str, Any]:
        config = self.config
        client = PostHogClient(self.name, self.scope, config.api_key, config.project_id, config.base_url, self.api_budget, config.request_timeout_seconds)
        response, body = client.get(config.project_url)
        try:
            return envelopes.decode_body(body, required=None)
        except MalformedBody as error:
            raise malformed_response(where(response), str(error))


class _ListForbiddenIsIgnored(PostHogErrorHandler):
    def interpret_response(self, response: Any) -> ErrorResolution:
        if isinstance(response, requests.Response) and response.status_code == 403 and response.request is not None:
            if response.request.url.split("?")[0].rstrip("/").endswith("/api/projects"):
                return ErrorResolution(ResponseAction.IGNORE)
        return super().interpret_response(response)
