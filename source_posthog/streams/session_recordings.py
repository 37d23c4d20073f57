"""`session_recordings/`: recording metadata, incremental on `start_time`.

PostHog's list defaults `date_from` to three days back (docs/posthog-api.md § 3.9), so it is always
sent: anchor_date on a first sync, then the cursor minus a lookback. Pages are `{"results",
"has_next"}`, read oldest first with offset paging. The cursor moves when the whole range has
been read. Each incremental sync emits:
- recordings that started after the cursor (new);
- recordings that were still `ongoing` (they grow after they are first seen), updated;
- recordings inside the lookback that the last sync had not seen: a recording can appear in
  the list after a later one has moved the cursor past its start.
The state keeps the ongoing ids and the ids seen inside the lookback to tell these apart.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, MutableMapping, Optional

import pendulum
from airbyte_cdk.models import SyncMode

from source_posthog import settings
from source_posthog.state import StateError, not_in_future, require_mapping, state_timestamp
from source_posthog.streams.base import HasNextOffsetPagination, ValidatedState, malformed_response
from source_posthog.api.timestamps import parse_timestamp, utc_iso


class SessionRecordings(ValidatedState, HasNextOffsetPagination):
    resource = "session_recordings"
    scope = "session_recording:read"
    cursor_field = "start_time"
    page_size = settings.RECORDINGS_PAGE_SIZE

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._date_from: pendulum.DateTime = self.config.anchor_date

    def parse_state(self, value: Mapping[str, Any]) -> MutableMapping[str, Any]:
        cursor = not_in_future(self.name, "start_time", state_timestamp(value, "start_time", self.name))
        ongoing = require_mapping(value.get("ongoing") or {}, self.name)
        if not all(isinstance(started, str) for started in ongoing.values()):
            raise StateError(self.name, "'ongoing' must map recording ids to start times")
        recent = value.get("recent") or []
        if not isinstance(recent, list):
            raise StateError(self.name, f"'recent' must be a list of recording ids, got {type(recent).__name__}")
        return {"start_time": utc_iso(cursor), "ongoing": dict(ongoing), "recent": list(recent), "project_id": self.config.project_id}

    def request_params(self, next_page_token: Optional[Mapping[str, Any]] = None, **kwargs: Any) -> MutableMapping[str, Any]:
        params = super().request_params(next_page_token=next_page_token, **kwargs)
        params.update({"date_from": self._date_from.strftime("%Y-%m-%dT%H:%M:%SZ"), "order": "start_time", "order_direction": "ASC"})
        return params

    def probe_params(self) -> Mapping[str, Any]:
        return {"limit": 1, "date_from": pendulum.now("UTC").subtract(hours=1).strftime("%Y-%m-%dT%H:%M:%SZ")}

    def read_records(
        self,
        sync_mode: SyncMode,
        cursor_field: Optional[List[str]] = None,
        stream_slice: Optional[Mapping[str, Any]] = None,
        stream_state: Optional[Mapping[str, Any]] = None,
    ) -> Iterable[Mapping[str, Any]]:
        incremental = sync_mode == SyncMode.incremental and bool(self._state)
        cursor = parse_timestamp(self._state["start_time"]) if incremental else None
        was_ongoing = self._state.get("ongoing", {}) if incremental else {}
        seen_recently = set(self._state.get("recent", [])) if incremental else set()
        self._date_from = self._read_from(cursor, was_ongoing)
        lookback_start = cursor - settings.RECORDINGS_LOOKBACK if cursor else None

        newest = cursor
        ongoing: Dict[str, str] = {}
        started_at: Dict[str, pendulum.DateTime] = {}
        for record in super().read_records(sync_mode, cursor_field, stream_slice, stream_state):
            recording_id, started = str(record.get("id")), _start_time(record, f"GET /api/projects/{self.config.project_id}/session_recordings/")
            if (
                cursor is None
                or started > cursor
                or recording_id in was_ongoing
                or (started > lookback_start and recording_id not in seen_recently)
            ):
                yield record
            started_at[recording_id] = started
            newest = started if newest is None or started > newest else newest
            if record.get("ongoing") and len(ongoing) < settings.RECORDINGS_MAX_TRACKED_ONGOING:
                ongoing[recording_id] = utc_iso(started)
        if newest is not None:
            horizon = newest - settings.RECORDINGS_LOOKBACK
            recent = sorted((r for r, s in started_at.items() if s > horizon), key=started_at.get)
            self._state = {
                "start_time": utc_iso(newest),
                "ongoing": ongoing,
                "recent": recent[-settings.RECORDINGS_MAX_TRACKED_RECENT:],
                "project_id": self.config.project_id,
            }

    def _read_from(self, cursor: Optional[pendulum.DateTime], ongoing: Mapping[str, str]) -> pendulum.DateTime:
        if cursor is None:
            return self.config.anchor_date
        starts = [parse_timestamp(started) for started in ongoing.values()]
        followed = [started for started in starts if started >= cursor - settings.RECORDINGS_ONGOING_MAX_AGE]
        return min([cursor - settings.RECORDINGS_LOOKBACK, *followed])


def _start_time(record: Mapping[str, Any], place: str) -> pendulum.DateTime:
    try:
        return parse_timestamp(record["start_time"])
    except (KeyError, ValueError, TypeError, pendulum.parsing.exceptions.ParserError):
        problem = f"recording {str(record.get('id'))[:40]} has no valid start_time ({str(record.get('start_time'))[:40]!r})"
        raise malformed_response(place, problem)
