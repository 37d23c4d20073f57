"""PostHog's file-download batch exports: the protocol and the window plan (docs/posthog-api.md § 20.4).

Pure decisions over plain data (no CDK, no HTTP); `source_posthog/streams/exported.py` sends the
requests and adapts this to Airbyte.

The protocol (`products/batch_exports/backend/presentation/views/file_download.py`):
- `POST /api/projects/{id}/file_download_batch_exports/` with `model` events | persons | sessions,
  `data_interval_start` / `data_interval_end` (at most one week apart, not in the future) and
  `file` (JSONLines + gzip here: Parquet is PostHog's default, and this connector has no Parquet
  reader) answers 202 `{"id"}`; scope `batch_export:write`.
- `GET …/{run_id}/` answers `{"status"}`, with `files` (ids in key order) and `records_completed`
  once Completed, and `error` when the run has one; scope `batch_export:read`.
- `GET …/{run_id}/download/{file_id}/` answers 302 to a presigned object-store URL on another host
  (about an hour); the URL carries its own signature, so the API key is never sent there.
- At most 20 runs Starting or Running per team: 429 `too_many_concurrent_file_downloads`, no
  Retry-After (the HTTP policy waits for it like any 429).

The plan. Windows are **ingestion time** (events by insert time, persons by the change time of the
person or its distinct ids, with `is_deleted`; sessions by `max_inserted_at`): back-to-back windows
`[through, through + a week)`, … up to now minus the ingestion lag deliver every late event, person
change, merge and deletion exactly once, in the window of its ingestion or change. The state holds
`through` (everything ingested before it is delivered) and the windows started after it, each with
its run id and how many of its files are delivered: a killed sync polls those runs again instead
of starting them twice, and skips the files it delivered.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from source_posthog import settings
from source_posthog.api.timestamps import parse_timestamp, state_timestamp, utc_iso

RESOURCE = "file_download_batch_exports"
WRITE_SCOPE, READ_SCOPE = "batch_export:write", "batch_export:read"
MODELS = ("events", "persons", "sessions")
TOO_MANY_RUNS_CODE = "too_many_concurrent_file_downloads"
STATE_MARK = "export_mode"  # the key that tells an export state from a HogQL one
STATE_MODE = "file_download"


def create_body(model: str, start: datetime, end: datetime) -> Dict[str, Any]:
    """The POST body of a run over [start, end)."""
    if model not in MODELS:
        raise ValueError(f"model {model!r} is not one of {MODELS}")
    return {
        "model": model,
        "data_interval_start": utc_iso(start),
        "data_interval_end": utc_iso(end),
        "file": {"format": "JSONLines", "compression": "gzip", "max_size_mb": settings.EXPORT_FILE_MAX_SIZE_MB},
    }


class Verdict(enum.Enum):
    WAIT = "wait"  # Starting or Running: poll again
    DONE = "done"  # Completed with its files
    AGAIN = "again"  # PostHog may succeed on a new run (FailedRetryable, TimedOut, Terminated, Cancelled)
    FAILED = "failed"  # Failed: PostHog's own error; a new run in a later sync
    BILLING = "billing"  # FailedBilling: the organization must act


IN_PROGRESS = ("Starting", "Running")
START_AGAIN = ("FailedRetryable", "TimedOut", "Terminated", "Cancelled")


@dataclass(frozen=True)
class RunStatus:
    status: str
    verdict: Verdict
    files: Tuple[str, ...] = ()
    records: Optional[int] = None
    error: Optional[str] = None


class MalformedRun(ValueError):
    pass


def run_status(body: Any) -> RunStatus:
    """A retrieve body → what it means. A Completed run is shown Running by PostHog until its
    files are registered, so Completed always comes with its `files`."""
    if not isinstance(body, Mapping) or not isinstance(body.get("status"), str):
        raise MalformedRun("the run has no status")
    status, error = body["status"], body.get("error")
    error = str(error) if error is not None else None
    if status in IN_PROGRESS:
        return RunStatus(status, Verdict.WAIT, error=error)
    if status == "Completed":
        files = body.get("files")
        if not isinstance(files, list) or not all(isinstance(item, str) for item in files):
            raise MalformedRun("a Completed run has no list of files")
        records = body.get("records_completed")
        return RunStatus(status, Verdict.DONE, tuple(files), records if isinstance(records, int) else None, error)
    if status in START_AGAIN:
        return RunStatus(status, Verdict.AGAIN, error=error)
    if status == "FailedBilling":
        return RunStatus(status, Verdict.BILLING, error=error)
    if status == "Failed":
        return RunStatus(status, Verdict.FAILED, error=error)
    raise MalformedRun(f"the run's status {status[:40]!r} is not one PostHog documents")


def billing_message(stream: str, project_id: int) -> str:
    return (
        f"Stream {stream}: PostHog ended the export of project {project_id} with FailedBilling: the organization's plan or "
        f"billing limit does not allow more exported rows (file-download exports are billed per exported row). "
        f"Check Settings → Billing in PostHog (a payment method, the data pipelines / batch exports product, its billing limit), "
        f"then run the sync again: it resumes from the last completed window. Or set 'export_mode' to hogql."
    )


# -- the window plan and its state --------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """[start, end) of ingestion time; `run_id` once its run is started, `files_done` of its files
    delivered, `attempts` runs started for it (this sync and earlier ones)."""

    start: datetime
    end: datetime
    run_id: Optional[str] = None
    files_done: int = 0
    attempts: int = 0

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"start": utc_iso(self.start), "end": utc_iso(self.end)}
        if self.run_id:
            out.update(run_id=self.run_id, files_done=self.files_done, attempts=self.attempts)
        return out

    def started(self, run_id: str) -> "Window":
        return replace(self, run_id=run_id, files_done=0, attempts=self.attempts + 1)

    def again(self, attempts: Optional[int] = None) -> "Window":
        """The same interval, for a new run (`attempts` restarts the count, for a later sync)."""
        return replace(self, run_id=None, files_done=0, attempts=self.attempts if attempts is None else attempts)


class InvalidExportState(ValueError):
    pass


@dataclass(frozen=True)
class ExportState:
    """One stream's export progress for one project: everything ingested before `through` is
    delivered; `windows` are the started (or planned) windows after it, in order."""

    through: datetime
    windows: Tuple[Window, ...] = ()

    def to_dict(self) -> Dict[str, Any]:
        return {STATE_MARK: STATE_MODE, "through": utc_iso(self.through), "windows": [window.to_dict() for window in self.windows]}

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> "ExportState":
        if value.get(STATE_MARK) != STATE_MODE:
            raise InvalidExportState(f"'{STATE_MARK}' is {value.get(STATE_MARK)!r}, not {STATE_MODE!r}")
        through = _moment(value, "through")
        windows = []
        raw = value.get("windows")
        raw = [] if raw is None else raw
        if not isinstance(raw, list):
            raise InvalidExportState("'windows' is not a list")
        previous = through
        for item in raw:
            if not isinstance(item, Mapping):
                raise InvalidExportState("a window is not an object")
            start, end = _moment(item, "start"), _moment(item, "end")
            if start != previous or end <= start or end - start > settings.EXPORT_WINDOW_MAX:
                raise InvalidExportState(f"the window {utc_iso(start)} to {utc_iso(end)} does not follow {utc_iso(previous)} by at most a week")
            run_id, files_done, attempts = item.get("run_id"), item.get("files_done", 0), item.get("attempts", 1 if item.get("run_id") else 0)
            if run_id is not None and (not isinstance(run_id, str) or not run_id or len(run_id) > 64):
                raise InvalidExportState("a window's run_id is not a run id")
            if not isinstance(files_done, int) or isinstance(files_done, bool) or files_done < 0 or not isinstance(attempts, int) or attempts < 0:
                raise InvalidExportState("a window's files_done or attempts is not a count")
            windows.append(Window(start, end, run_id, files_done, attempts))
            previous = end
        return cls(through, tuple(windows))


def _moment(value: Mapping[str, Any], key: str) -> datetime:
    return state_timestamp(value, key, InvalidExportState)


def plan_windows(state: ExportState, upper: datetime, width: timedelta = settings.EXPORT_WINDOW_MAX) -> List[Window]:
    """Every window from `state.through` to `upper`: the started ones as they were (their bounds
    are fixed by their runs), then back-to-back windows of at most `width` after them."""
    windows = list(state.windows)
    start = windows[-1].end if windows else state.through
    while start < upper:
        end = min(start + width, upper)
        windows.append(Window(start, end))
        start = end
    return windows


def delivered(state: ExportState, window: Window) -> ExportState:
    """The state once `window` (the first one after `through`) is delivered."""
    rest = tuple(item for item in state.windows if item.start >= window.end)
    return ExportState(window.end, rest)


def with_window(state: ExportState, window: Window) -> ExportState:
    """The state with `window` (started, or with more files delivered) recorded in its place."""
    others = [item for item in state.windows if item.start != window.start]
    return ExportState(state.through, tuple(sorted((*others, window), key=lambda item: item.start)))


# -- the files' lines → records -----------------------------------------------------------------


def utc(value: Any) -> Any:
    """An export timestamp (`2024-06-01T12:00:00.123456+00:00`, no fraction when zero, persons'
    `created_at` in milliseconds) in the HogQL path's form, `2024-06-01T12:00:00.123456Z`."""
    if value.__class__ is not str or not value:
        return value
    if value.endswith("+00:00"):
        if len(value) == 32:
            return value[:26] + "Z"
        if len(value) == 25:
            return value[:19] + ".000000Z"
    return utc_iso(parse_timestamp(value))


EVENT_FIELDS = ("uuid", "event", "timestamp", "distinct_id", "properties", "elements_chain", "person_id", "created_at")


def event_record(line: Dict[str, Any]) -> Dict[str, Any]:
    """An events line (`s3_default_fields`) → the HogQL path's events record, in place (this runs
    once per event: no new dict)."""
    line.pop("_inserted_at", None)
    line.pop("person_properties", None)
    line["timestamp"] = utc(line["timestamp"])
    line["created_at"] = utc(line.get("created_at"))
    if line.get("properties") is None:
        line["properties"] = {}
    return line


# The sessions model's columns (`SELECT_FROM_SESSIONS_HOGQL`) and the HogQL sessions table's names.
SESSION_FIELDS: Sequence[Tuple[str, str]] = (
    ("session_id", "session_id"),
    ("distinct_id", "distinct_id"),
    ("start_timestamp", "$start_timestamp"),
    ("end_timestamp", "$end_timestamp"),
    ("entry_current_url", "$entry_current_url"),
    ("entry_pathname", "$entry_pathname"),
    ("end_current_url", "$end_current_url"),
    ("end_pathname", "$end_pathname"),
    ("entry_referring_domain", "$entry_referring_domain"),
    ("entry_utm_source", "$entry_utm_source"),
    ("entry_utm_campaign", "$entry_utm_campaign"),
    ("entry_utm_medium", "$entry_utm_medium"),
    ("entry_utm_term", "$entry_utm_term"),
    ("entry_utm_content", "$entry_utm_content"),
    ("num_uniq_urls", "$num_uniq_urls"),
    ("pageview_count", "$pageview_count"),
    ("autocapture_count", "$autocapture_count"),
    ("screen_count", "$screen_count"),
    ("session_duration", "$session_duration"),
    ("is_bounce", "$is_bounce"),
    ("channel_type", "$channel_type"),
)
SESSION_TIMES = ("$start_timestamp", "$end_timestamp")


def session_record(line: Dict[str, Any]) -> Dict[str, Any]:
    """A sessions line → the HogQL path's sessions record. `max_inserted_at` is the line's
    `_inserted_at`, `greatest(max_inserted_at, $end_timestamp)`: the same value unless an event was
    ingested before its own timestamp."""
    record = {ours: line.get(theirs) for theirs, ours in SESSION_FIELDS}
    for name in SESSION_TIMES:
        record[name] = utc(record[name])
    record["max_inserted_at"] = utc(line.get("_inserted_at"))
    if record["$is_bounce"] is not None:
        record["$is_bounce"] = bool(record["$is_bounce"])
    return record


@dataclass(slots=True)
class PersonLines:
    """The lines of one person in one run (one per distinct id); `moved`: the distinct ids among
    them that were moved to this person (`person_distinct_id_version` ≥ 1, not deleted)."""

    first: Dict[str, Any]
    distinct_ids: List[str]
    changed_at: str
    deleted: bool
    moved: Optional[List[Tuple[Any, str]]] = None


def add_person_line(persons: Dict[str, PersonLines], line: Dict[str, Any]) -> None:
    """Runs once per line of a persons export: kept lean."""
    person_id = line["person_id"]
    changed = line["_inserted_at"] or ""
    held = persons.get(person_id)
    if held is None:
        held = persons[person_id] = PersonLines(line, [line["distinct_id"]], changed, bool(line["is_deleted"]))  # ClickHouse's UInt8 or a bool
    else:
        held.distinct_ids.append(line["distinct_id"])
        if line["is_deleted"]:
            held.deleted = True
        if changed > held.changed_at:  # the same format on every line: the string order is the time order
            held.changed_at = changed
    if line.get("person_distinct_id_version") and not line["is_deleted"]:
        held.moved = (held.moved or []) + [(line.get("team_id"), line["distinct_id"])]


def person_record(person_id: str, lines: PersonLines) -> Dict[str, Any]:
    """A person's lines → the persons record: every distinct id the person has now (a merge moves
    the merged-away person's distinct ids here), and `_ab_cdc_deleted_at` (Airbyte's deletion
    mark) at the change time when PostHog deleted the person. The export has no `is_identified`
    or `last_seen_at`: they are null on this path."""
    first = lines.first
    changed_at = utc(lines.changed_at) if lines.changed_at else None
    return {
        "id": person_id,
        "uuid": person_id,
        "distinct_ids": sorted(lines.distinct_ids),
        "properties": first.get("properties") if first.get("properties") is not None else {},
        "is_identified": None,
        "created_at": utc(first.get("created_at")),
        "last_seen_at": None,
        "changed_at": changed_at,
        "_ab_cdc_deleted_at": changed_at if lines.deleted else None,
    }


# PostHog's ingestion creates a person with a UUID derived from the distinct id it was first seen with
# (nodejs `uuidFromDistinctId`: uuid5 of "{team_id}:{distinct_id}" in this namespace). Distinct ids
# move only in a merge, which deletes the person they came from; so when a moved distinct id's derived
# UUID is not its person now, that UUID is the merged-away person (if ingestion created it: a person
# created through the API has a random UUID, and its deletion names an id no destination holds).
PERSON_UUIDV5_NAMESPACE = uuid.UUID("932979b4-65c3-4424-8467-0b66ec27bc22")


def merged_away(person_id: str, lines: PersonLines) -> List[str]:
    """The persons merged into this one that PostHog's export no longer names (it has no line for a
    merged-away person), derived from the moved distinct ids; empty when nothing moved."""
    if not lines.moved:
        return []
    found = []
    for team_id, distinct_id in lines.moved:
        candidate = str(uuid.uuid5(PERSON_UUIDV5_NAMESPACE, f"{team_id}:{distinct_id}"))
        if candidate != str(person_id).lower() and candidate not in found:
            found.append(candidate)
    return found


def merged_away_record(person_id: str, into: Dict[str, Any]) -> Dict[str, Any]:
    """The deletion of a merged-away person, at the change time of the merge (its survivor's record `into`)."""
    return {
        "id": person_id,
        "uuid": person_id,
        "distinct_ids": [],
        "properties": {},
        "is_identified": None,
        "created_at": None,
        "last_seen_at": None,
        "changed_at": into["changed_at"],
        "_ab_cdc_deleted_at": into["changed_at"],
    }
