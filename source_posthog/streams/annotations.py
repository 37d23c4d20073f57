"""`annotations/`: incremental on `updated_at`, filtered on the client.

PostHog offers no `updated_at` filter or ordering for annotations (the list is ordered
`-date_marker`, default limit 1000; its `date_from`/`date_to` are on `date_marker`,
docs/posthog-api.md § 3.7, § 20.5), so every sync reads the whole list and emits the annotations
updated after the cursor. The cursor moves only when the whole list has been read: the order is
not by `updated_at`, so a partial read proves nothing.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping, MutableMapping, Optional

import pendulum
from airbyte_cdk.models import AirbyteMessage

from source_posthog.api.timestamps import parse_timestamp, utc_iso
from source_posthog.state import not_in_future, state_timestamp
from source_posthog.streams.base import IncrementalStream, ProjectRead

CURSOR = "updated_at"


class Annotations(IncrementalStream):
    resource = "annotations"
    scope = "annotation:read"
    cursor_field = CURSOR

    def parse_state(self, project_id: int, value: Mapping[str, Any]) -> MutableMapping[str, Any]:
        cursor = not_in_future(self.name, CURSOR, state_timestamp(value, CURSOR, self.name))
        return {CURSOR: utc_iso(cursor), "project_id": project_id}

    def read_project(self, part: ProjectRead) -> Iterator[AirbyteMessage]:
        since = parse_timestamp(part.resume[CURSOR]) if part.resume and part.incremental else None
        newest = since
        for body, _ in part.pages(part.url(f"{self.resource}/"), {"limit": self.page_size}):
            for record in body["results"]:
                updated = _updated_at(record)
                if since is None or (updated is not None and updated > since):
                    yield part.record(record)
                if updated is not None and (newest is None or updated > newest):
                    newest = updated
        if newest is not None:
            yield part.checkpoint({CURSOR: utc_iso(newest), "project_id": part.project_id})


def _updated_at(record: Mapping[str, Any]) -> Optional[pendulum.DateTime]:
    value = record.get("updated_at") or record.get("created_at")
    return parse_timestamp(value) if value else None
