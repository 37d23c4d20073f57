"""`session_recordings/`: recording metadata, incremental on `start_time`.

PostHog's list defaults `date_from` to three days back (posthog-api.md § 3.9), so it is always
sent: the anchor_date on a first sync, the cursor afterwards. Pages are `{"results",
"has_next"}`, read oldest first with offset paging. Recordings still `ongoing` grow after they
are first seen: their ids stay in state and the next sync re-reads from the earliest of them
and emits them again, updated. The cursor moves when the whole range has been read.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Dict, Iterable, List, Mapping, MutableMapping, Optional

import pendulum
from airbyte_cdk.models import SyncMode
from airbyte_cdk.sources.streams import CheckpointMixin

from source_posthog import settings
from source_posthog.state import StateError, require_mapping, state_timestamp
from source_posthog.streams.base import HasNextOffsetPagination
from source_posthog.timestamps import parse_timestamp, utc_iso

# A recording that still says `ongoing` two days after it started is not followed any more.
ONGOING_MAX_AGE = timedelta(days=2)


class SessionRecordings(HasNextOffsetPagination, CheckpointMixin):
    resource = "session_recordings"
    scope = "session_recording:read"
    cursor_field = "start_time"
    page_size = settings.RECORDINGS_PAGE_SIZE

    def __init__(self, *args: Any, **kwargs: Any):
        self._state: MutableMapping[str, Any] = {}
        super().__init__(*args, **kwargs)

    @property
    def state(self) -> MutableMapping[str, Any]:
        return self._state

    @state.setter
    def state(self, value: MutableMapping[str, Any]) -> None:
        if not value:
            self._state = {}
            return
        cursor = state_timestamp(value, "start_time", self.name)
        ongoing = require_mapping(value.get("ongoing") or {}, self.name)
        for recording_id, started in ongoing.items():
            if not isinstance(started, str):
                raise StateError(self.name, f"'ongoing' must map recording ids to start times, got {started!r}")
        self._state = {"start_time": utc_iso(cursor), "ongoing": dict(ongoing)}

    def _read_from(self, sync_mode: SyncMode) -> pendulum.DateTime:
        if sync_mode != SyncMode.incremental or not self._state:
            return self.config.anchor_date
        cursor = parse_timestamp(self._state["start_time"])
        starts = [parse_timestamp(started) for started in self._state.get("ongoing", {}).values()]
        starts = [started for started in starts if started >= cursor - ONGOING_MAX_AGE]
        return min([cursor, *starts])

    def request_params(
        self, stream_state: Optional[Mapping[str, Any]] = None, next_page_token: Optional[Mapping[str, Any]] = None, **kwargs: Any
    ) -> MutableMapping[str, Any]:
        params = super().request_params(next_page_token=next_page_token, **kwargs)
        params.update(
            {
                "date_from": self._date_from.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "order": "start_time",
                "order_direction": "ASC",
            }
        )
        return params

    def read_records(
        self,
        sync_mode: SyncMode,
        cursor_field: Optional[List[str]] = None,
        stream_slice: Optional[Mapping[str, Any]] = None,
        stream_state: Optional[Mapping[str, Any]] = None,
    ) -> Iterable[Mapping[str, Any]]:
        incremental = sync_mode == SyncMode.incremental and bool(self._state)
        cursor = parse_timestamp(self._state["start_time"]) if incremental else None
        was_ongoing = set(self._state.get("ongoing", {})) if incremental else set()
        self._date_from = self._read_from(sync_mode)
        newest = cursor
        ongoing: Dict[str, str] = {}
        for record in super().read_records(sync_mode, cursor_field, stream_slice, stream_state):
            started = parse_timestamp(record["start_time"])
            if cursor is None or started > cursor or record.get("id") in was_ongoing:
                yield record
            if newest is None or started > newest:
                newest = started
            if record.get("ongoing") and len(ongoing) < settings.RECORDINGS_MAX_TRACKED_ONGOING:
                ongoing[str(record["id"])] = utc_iso(started)
        if newest is not None:
            self._state = {"start_time": utc_iso(newest), "ongoing": ongoing}
