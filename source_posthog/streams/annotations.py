"""`annotations/`: incremental on `updated_at`, filtered on the client.

PostHog offers no `updated_at` filter or ordering for annotations (the list is ordered
`-date_marker`, default limit 1000; docs/posthog-api.md § 3.7), so every sync reads the whole list
and emits the annotations updated after the cursor. The cursor moves only when the whole list
has been read: the order is not by `updated_at`, so a partial read proves nothing.
"""

from __future__ import annotations

from typing import Any, Iterable, List, Mapping, MutableMapping, Optional

import pendulum
from airbyte_cdk.models import SyncMode

from source_posthog.state import not_in_future, state_timestamp
from source_posthog.streams.base import NextUrlPagination, ValidatedState
from source_posthog.api.timestamps import parse_timestamp, utc_iso


class Annotations(ValidatedState, NextUrlPagination):
    resource = "annotations"
    scope = "annotation:read"
    cursor_field = "updated_at"

    def parse_state(self, value: Mapping[str, Any]) -> MutableMapping[str, Any]:
        cursor = not_in_future(self.name, "updated_at", state_timestamp(value, "updated_at", self.name))
        return {"updated_at": utc_iso(cursor), "project_id": self.config.project_id}

    def read_records(
        self,
        sync_mode: SyncMode,
        cursor_field: Optional[List[str]] = None,
        stream_slice: Optional[Mapping[str, Any]] = None,
        stream_state: Optional[Mapping[str, Any]] = None,
    ) -> Iterable[Mapping[str, Any]]:
        since = parse_timestamp(self._state["updated_at"]) if self._state and sync_mode == SyncMode.incremental else None
        newest = since
        for record in super().read_records(sync_mode, cursor_field, stream_slice, stream_state):
            updated = _updated_at(record)
            if since is None or (updated is not None and updated > since):
                yield record
            if updated is not None and (newest is None or updated > newest):
                newest = updated
        if newest is not None:
            self._state = {"updated_at": utc_iso(newest), "project_id": self.config.project_id}


def _updated_at(record: Mapping[str, Any]) -> Optional[pendulum.DateTime]:
    value = record.get("updated_at") or record.get("created_at")
    return parse_timestamp(value) if value else None

