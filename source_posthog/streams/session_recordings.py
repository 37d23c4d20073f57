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

from typing import Any, Dict, Iterator, Mapping, MutableMapping, Optional, Tuple

import pendulum
from airbyte_cdk.models import AirbyteMessage

from source_posthog import settings
from source_posthog.api import envelopes
from source_posthog.api.timestamps import parse_timestamp, utc_iso
from source_posthog.state import StateError, not_in_future, require_mapping, state_timestamp
from source_posthog.streams.base import IncrementalStream, ProjectRead, malformed_response

CURSOR = "start_time"


def date_param(value: pendulum.DateTime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


class SessionRecordings(IncrementalStream):
    resource = "session_recordings"
    scope = "session_recording:read"
    cursor_field = CURSOR
    page_size = settings.RECORDINGS_PAGE_SIZE

    def parse_state(self, project_id: int, value: Mapping[str, Any]) -> MutableMapping[str, Any]:
        cursor = not_in_future(self.name, CURSOR, state_timestamp(value, CURSOR, self.name))
        ongoing = require_mapping(value.get("ongoing") or {}, self.name)
        if not all(isinstance(started, str) for started in ongoing.values()):
            raise StateError(self.name, "'ongoing' must map recording ids to start times")
        recent = value.get("recent") or []
        if not isinstance(recent, list):
            raise StateError(self.name, f"'recent' must be a list of recording ids, got {type(recent).__name__}")
        return {CURSOR: utc_iso(cursor), "ongoing": dict(ongoing), "recent": list(recent), "project_id": project_id}

    def probe_request(self, part: ProjectRead) -> Tuple[str, str, Mapping[str, Any], Optional[Mapping[str, Any]]]:
        return "GET", part.url(f"{self.resource}/"), {"limit": 1, "date_from": date_param(pendulum.now("UTC").subtract(hours=1))}, None

    def pages(self, part: ProjectRead, date_from: pendulum.DateTime) -> Iterator[Dict[str, Any]]:
        """`{"results", "has_next"}` pages, oldest first, `offset += len(results)` while `has_next`
        (the opaque `after` cursor's shape varies by PostHog version; offset paging does not)."""
        params: Dict[str, Any] = {"limit": self.page_size, "date_from": date_param(date_from), "order": "start_time", "order_direction": "ASC"}
        url = part.url(f"{self.resource}/")
        while True:
            body = part.get_body(url, params)
            yield body
            offset = envelopes.next_offset(body, params.get("offset", 0))
            if offset is None:
                return
            params = {**params, "offset": offset}

    def read_project(self, part: ProjectRead) -> Iterator[AirbyteMessage]:
        state = part.resume if part.incremental and part.resume else None
        cursor = parse_timestamp(state[CURSOR]) if state else None
        was_ongoing = state.get("ongoing", {}) if state else {}
        seen_recently = set(state.get("recent", [])) if state else set()
        lookback_start = cursor - settings.RECORDINGS_LOOKBACK if cursor else None

        newest = cursor
        ongoing: Dict[str, str] = {}
        started_at: Dict[str, pendulum.DateTime] = {}
        for body in self.pages(part, self._read_from(cursor, was_ongoing)):
            for record in body["results"]:
                recording_id, started = str(record.get("id")), _start_time(record, f"GET /api/projects/{part.project_id}/session_recordings/")
                if (
                    cursor is None
                    or started > cursor
                    or recording_id in was_ongoing
                    or (started > lookback_start and recording_id not in seen_recently)
                ):
                    yield part.record(record)
                started_at[recording_id] = started
                newest = started if newest is None or started > newest else newest
                if record.get("ongoing") and len(ongoing) < settings.RECORDINGS_MAX_TRACKED_ONGOING:
                    ongoing[recording_id] = utc_iso(started)
        if newest is not None:
            horizon = newest - settings.RECORDINGS_LOOKBACK
            recent = sorted((r for r, s in started_at.items() if s > horizon), key=started_at.get)
            yield part.checkpoint(
                {CURSOR: utc_iso(newest), "ongoing": ongoing, "recent": recent[-settings.RECORDINGS_MAX_TRACKED_RECENT:], "project_id": part.project_id}
            )

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
