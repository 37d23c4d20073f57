"""`activity_log/`: the history of flags, experiments, insights, cohorts, dashboards … (every
scope), incremental on `created_at`.

PostHog pages the log with DRF's cursor pagination on (`-created_at`, `-id`), 100 a page, the
cursor inside `next` (`posthog/api/advanced_activity_logs/viewset.py`, docs/posthog-api.md § 20.5).
An entry is written once and never changes, so a sync reads newest first and stops at the first
page that reaches an entry older than the cursor. The first sync reads the whole log, whatever
`anchor_date` says: it is the history that explains the flags, insights, experiments … that every
sync delivers in full, and a small one (a thousand entries a page).
The next cursor is the newest entry of the first page, read before anything else. Entries that
tie with the cursor are read again (the same `id`). `detail` (what changed) is kept as PostHog
sends it, an object. Scope `activity_log:read`.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping, MutableMapping, Optional

import pendulum
from airbyte_cdk.models import AirbyteMessage

from source_posthog.api.timestamps import parse_timestamp, utc_iso
from source_posthog.state import not_in_future, state_timestamp
from source_posthog.streams.base import IncrementalStream, ProjectRead, malformed_response

CURSOR = "created_at"
PAGE_SIZE = 1000  # PostHog's max page_size for the log (100 by default)


class ActivityLog(IncrementalStream):
    resource = "activity_log"
    scope = "activity_log:read"
    cursor_field = CURSOR
    page_size = PAGE_SIZE

    def parse_state(self, project_id: int, value: Mapping[str, Any]) -> MutableMapping[str, Any]:
        cursor = not_in_future(self.name, CURSOR, state_timestamp(value, CURSOR, self.name))
        return {CURSOR: utc_iso(cursor), "project_id": project_id}

    def read_project(self, part: ProjectRead) -> Iterator[AirbyteMessage]:
        since: Optional[pendulum.DateTime] = parse_timestamp(part.resume[CURSOR]) if part.incremental and part.resume else None
        newest = since
        first = True
        for body, _ in part.pages(part.url(f"{self.resource}/"), {"page_size": self.page_size}):
            older_reached = False
            for entry in body["results"]:
                created = _created_at(entry, part.project_id)
                if first and (newest is None or created > newest):
                    newest = created
                if since is not None and created < since:
                    older_reached = True
                    continue
                yield part.record(entry)
            first = False
            if older_reached:
                break
        if newest is not None:
            yield part.checkpoint({CURSOR: utc_iso(newest), "project_id": part.project_id})

    def probe_request(self, part: ProjectRead) -> Any:
        return "GET", part.url(f"{self.resource}/"), {"page_size": 1}, None


def _created_at(entry: Mapping[str, Any], project_id: int) -> pendulum.DateTime:
    try:
        return parse_timestamp(entry["created_at"])
    except (KeyError, TypeError, ValueError) as error:
        raise malformed_response(f"GET /api/projects/{project_id}/activity_log/", f"an entry has no valid created_at ({type(error).__name__}: {error})")
