"""PostHog's file-download batch exports: ``/api/projects/{id}/file_download_batch_exports/``.

The API follows ``products/batch_exports/backend/presentation/views/file_download.py`` (the newest
version read; ``products/batch_exports/backend/api/file_download.py`` before it), the run timeline
follows the Temporal workflow (``temporal/destinations/file_download_batch_export.py``,
``temporal/pipeline/entrypoint.py``, ``temporal/pipeline/internal_stage.py``), the files are
``export_files.py``'s and the download host is ``object_store.py``. README "File-download exports" lists
every behaviour with its source.

- ``POST`` (scope ``batch_export:write``) validates like the DRF serializer (field errors in declaration
  order: ``file`` and its ``format``/``compression``/``max_size_mb``, ``model``, ``include``, ``exclude``,
  ``hogql_query``, ``hogql_modifiers``, ``data_interval_start``, ``data_interval_end``; then the
  serializer's ``validate``), counts the team's Starting/Running runs against the limit (429
  ``too_many_concurrent_file_downloads``, no Retry-After), and answers 202 ``{"id"}``.
- ``GET {run_id}/`` (``batch_export:read``): ``{"status"}``, plus ``files`` and ``records_completed`` when
  Completed (and shown as Running while the run is Completed but its files are not registered yet),
  plus ``error`` whenever the run has one.
- ``GET {run_id}/download[/{file id or index}]/`` (``batch_export:read``): 302 to a presigned URL on the
  object-store host, ``Cache-Control: no-store``.
- ``POST {run_id}/cancel/`` (``batch_export:write``): ``{"status": "Cancelled"}``.
- ``GET`` the collection: ``{"count", "next", "previous", "results": [{"id", "status"}]}``, newest first.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import time
import uuid as uuid_mod
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from . import endpoints as ep
from . import export_files as xf
from . import timeutil as tu
from .data import _pid_alive, uuid7_text
from .endpoints import ApiError, Ctx, Result
from .object_store import ObjectStore

RESOURCE = "file_download_batch_exports"
READ_SCOPE, WRITE_SCOPE = "batch_export:read", "batch_export:write"
MODELS = ("events", "persons", "sessions", "hogql")
FORMATS = ("Parquet", "JSONLines")
COMPRESSIONS = ("zstd", "gzip", "brotli", "lz4", "snappy")
DEFAULT_MAX_SIZE_MB = 1024  # DEFAULT_MAX_SIZE_MB (presentation/views/file_download.py)
MAX_RANGE = timedelta(weeks=1)  # FILE_DOWNLOAD_MAX_RANGE
FAILED = ("Terminated", "TimedOut", "Failed", "FailedRetryable", "FailedBilling")
STATUSES = ("Starting", "Running", "Completed", "Cancelled", *FAILED)
#: The ``error`` each failure carries unless one is given. Failed: entrypoint.py's ``except Exception``
#: branch. FailedRetryable: ``str(e.cause)`` of an activity error, here the S3 upload's own
#: ``IntermittentUploadPartTimeoutError`` text (s3_batch_export.py). FailedBilling: ``start_batch_export_run``
#: creates the run with no ``latest_error``, so PostHog's retrieve has no ``error`` key. TimedOut and
#: Terminated: where PostHog sets them is not in the source read; no ``latest_error`` is the less convenient.
DEFAULT_ERRORS = {"Failed": "An unexpected error has occurred",
                  "FailedRetryable": "An intermittent `RequestTimeout` was raised while attempting to upload part 1",
                  "FailedBilling": None, "TimedOut": None, "Terminated": None, "Cancelled": None}
FAILED_TO_START = ("The batch export failed to start. Check our status page for any ongoing incidents and try again "
                   "later.")
HOGQL_DISABLED = "HogQL batch exports are not enabled for this team."
#: _generate_s3_pre_signed_url assumes a role for exactly the link's lifetime; STS refuses DurationSeconds
#: under 900 (AWS's minimum; PostHog's test sets the expiration setting to 900, "Minimum"), so a file whose
#: lifecycle ends within 15 minutes cannot be downloaded: the ClientError is not handled (500).
STS_MIN_DURATION_SECONDS = 900
_SEGMENT = re.compile(r"^[^/.]+$")  # DRF's default lookup_value_regex, and the download part's
_DJANGO_DATETIME = re.compile(  # django.utils.dateparse.datetime_re (the fallback after fromisoformat)
    r"^(?P<year>\d{4})-(?P<month>\d{1,2})-(?P<day>\d{1,2})[T ](?P<hour>\d{1,2}):(?P<minute>\d{1,2})"
    r"(?::(?P<second>\d{1,2})(?:[.,](?P<microsecond>\d{1,6})\d{0,6})?)?\s*(?P<tzinfo>Z|[+-]\d{2}(?::?\d{2})?)?$")
STAGES = {"Running": 1, "Queried": 2, "Completed": 3, "Files": 4}


@dataclass
class ExportSettings:
    """Knobs of the export emulation (``EmulatorConfig(exports=ExportSettings(...))``, CLI ``--exports
    "time_scale=0.01,run_seconds=1"``, control ``POST /_emulator/exports/settings``). ``time_scale``
    multiplies every duration below (the wait past the interval end, the link and file lifetimes too)."""

    time_scale: float = 1.0
    start_seconds: float = 2.0  # Starting → Running: the workflow starts, staging begins (emulator's choice)
    wait_past_end_seconds: float | None = None  # None: PostHog's 60 s (30 s for a 5-minute interval)
    run_seconds: float = 5.0  # the query and the upload after the wait (emulator's choice)
    files_gap_seconds: float = 2.0  # Completed in the database → files registered (generate_file_downloads)
    link_ttl_seconds: float = 3600.0  # BATCH_EXPORTS_FILE_DOWNLOAD_EXPIRATION_SECONDS: "expires after an hour" (docs)
    file_retention_seconds: float | None = None  # the bucket's lifecycle (unknown in the source): None = files stay
    max_concurrent_per_team: int = 20  # BATCH_EXPORT_MAX_CONCURRENT_ON_DEMAND_PER_TEAM: 20 per the docs
    object_store_host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "object_store_host" and value is not None and (not isinstance(value, (int, float)) or value < 0):
                raise ValueError(f"exports {f.name} must be a number >= 0")

    @classmethod
    def parse(cls, spec: str | None) -> "ExportSettings":
        """``"time_scale=0.01,run_seconds=1,wait_past_end_seconds=none"`` → ExportSettings."""
        kinds = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {}
        for part in (spec or "").split(","):
            if not part.strip():
                continue
            name, _, text = part.partition("=")
            name, text = name.strip(), text.strip()
            if name not in kinds:
                raise ValueError(f"unknown exports setting {name!r}; known: {', '.join(kinds)}")
            if name == "object_store_host":
                values[name] = text
            elif text.lower() in ("none", "null", "off"):
                values[name] = None
            else:
                values[name] = int(text) if name == "max_concurrent_per_team" else float(text)
        return cls(**values)

    def to_spec(self) -> str:
        default = ExportSettings()
        return ",".join(f"{f.name}={'none' if getattr(self, f.name) is None else getattr(self, f.name)}"
                        for f in fields(self) if getattr(self, f.name) != getattr(default, f.name))

    def to_dict(self) -> dict:
        return asdict(self)

    def scaled(self, seconds: float) -> float:
        return seconds * self.time_scale


def required_scope(rest: list[str], method: str) -> str:
    """The scope a request needs (``scope_object = "batch_export"``: read for GET, write otherwise;
    ``download`` read, ``cancel`` and ``count_rows`` write), or 404 for a path PostHog does not route."""
    if any(not _SEGMENT.match(s) for s in rest):
        raise ep.not_found()
    shapes = (len(rest) <= 1 or (len(rest) in (2, 3) and rest[1] == "download") or (len(rest) == 2 and rest[1] == "cancel"))
    if not shapes:
        raise ep.not_found()
    if rest == ["count_rows"] or rest[1:2] == ["cancel"]:
        return WRITE_SCOPE
    return READ_SCOPE if method == "GET" else WRITE_SCOPE


def _not_allowed(method: str) -> ApiError:
    return ApiError(405, "invalid_request", "method_not_allowed", f'Method "{method}" not allowed.')


# ------------------------------------------------------------------------------------------------
# DRF field validation (rest_framework/fields.py messages, drf-exceptions-hog attrs: nested "a__b")
# ------------------------------------------------------------------------------------------------


def _invalid(attr: str | None, detail: str, code: str = "invalid_input") -> ApiError:
    return ep.validation_error(detail, attr, code=code)


def _null(attr: str) -> ApiError:
    return _invalid(attr, "This field may not be null.", "null")


def _choice(value: Any, choices: tuple, attr: str, allow_null: bool = False) -> Any:
    if value is None:
        if allow_null:
            return None
        raise _null(attr)
    if isinstance(value, str) and value in choices:
        return value
    raise _invalid(attr, f'"{value}" is not a valid choice.', "invalid_choice")


def _char(value: Any, attr: str) -> str:
    if value is None:
        raise _null(attr)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _invalid(attr, "Not a valid string.")
    text = str(value).strip()
    if not text:
        raise _invalid(attr, "This field may not be blank.", "blank")
    return text


def _char_list(value: Any, attr: str) -> list[str]:
    if value is None:
        raise _null(attr)
    if isinstance(value, (str, dict)) or not isinstance(value, list):
        raise _invalid(attr, f'Expected a list of items but got type "{type(value).__name__}".', "not_a_list")
    return [_char(item, f"{attr}__{i}") for i, item in enumerate(value)]


def _integer(value: Any, attr: str, min_value: int) -> int | None:
    if value is None:
        return None
    try:
        number = int(re.sub(r"\.0*\s*$", "", str(value)))
    except (TypeError, ValueError):
        raise _invalid(attr, "A valid integer is required.") from None
    if number < min_value:
        raise _invalid(attr, f"Ensure this value is greater than or equal to {min_value}.", "min_value")
    return number


def _datetime(value: Any, attr: str) -> datetime:
    """DRF DateTimeField(default_timezone=UTC): django's parse_datetime (``fromisoformat``, then its
    regex), a naive value read in UTC, an aware one converted to UTC."""
    if value is None:
        raise _null(attr)
    parsed = None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            m = _DJANGO_DATETIME.match(value)
            if m:
                try:
                    parsed = tu.parse_datetime(value)
                except ValueError:
                    parsed = None
    if parsed is None:
        raise _invalid(attr, "Datetime has wrong format. Use one of these formats instead: "
                             "YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z].")
    return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)


def validate_create(body: Any, now: datetime) -> dict:
    """FileDownloadBatchExportOnDemandSerializer: its fields in order, then ``validate``. Raises the first
    error as drf-exceptions-hog renders it (one error: ``SUPPORT_MULTIPLE_EXCEPTIONS`` is off)."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise _invalid(None, f"Invalid data. Expected a dictionary, but got {type(body).__name__}.")
    if "file" not in body:
        raise _invalid("file", "This field is required.", "required")
    file = body["file"]
    if file is None:
        raise _null("file")
    if not isinstance(file, dict):
        raise _invalid("file__non_field_errors", f"Invalid data. Expected a dictionary, but got {type(file).__name__}.")
    fmt = _choice(file.get("format", "Parquet"), FORMATS, "file__format")
    compression = _choice(file.get("compression"), COMPRESSIONS, "file__compression", allow_null=True)
    max_size_mb = _integer(file.get("max_size_mb", DEFAULT_MAX_SIZE_MB), "file__max_size_mb", 0)
    if "model" not in body:
        raise _invalid("model", "This field is required.", "required")
    model = _choice(body["model"], MODELS, "model")
    include = _char_list(body["include"], "include") if "include" in body else None
    exclude = _char_list(body["exclude"], "exclude") if "exclude" in body else None
    hogql_query = _char(body["hogql_query"], "hogql_query") if "hogql_query" in body else None
    modifiers = body.get("hogql_modifiers")
    start = _datetime(body["data_interval_start"], "data_interval_start") if "data_interval_start" in body else None
    end = _datetime(body["data_interval_end"], "data_interval_end") if "data_interval_end" in body else None
    if model == "hogql":  # _validate_hogql → check_hogql_batch_exports_enabled (closed beta, flag off here)
        raise ApiError(403, "authentication_error", "permission_denied", HOGQL_DISABLED)
    if hogql_query is not None:
        raise _invalid(None, "'hogql_query' is only supported when 'model' is 'hogql'")
    if modifiers is not None:
        raise _invalid(None, "'hogql_modifiers' are only supported when 'model' is 'hogql'")
    if start is None or end is None:  # validate_file_download_interval
        raise _invalid(None, "'data_interval_start' and 'data_interval_end' are required. Provide both bounds.")
    if start > end:
        raise _invalid(None, "'data_interval_end' must occur after 'data_interval_start'")
    if end - start > MAX_RANGE:
        raise _invalid(None, "data interval range too big. Choose an interval of at most seven days.")
    if start > now:
        raise _invalid(None, f"The provided 'data_interval_start' ({start.isoformat()}) is in the future")
    if end > now:
        raise _invalid(None, f"The provided 'data_interval_end' ({end.isoformat()}) is in the future")
    return {"model": model, "start": start, "end": end, "include": include if model == "events" else None,
            "exclude": exclude if model == "events" else None,
            "spec": xf.FileSpec(fmt, compression, max_size_mb)}


def emulator_limitations(spec: xf.FileSpec) -> None:
    """What the emulator cannot write without new dependencies, refused loudly (never PostHog's answer)."""
    if spec.format == "Parquet":
        raise _invalid("file__format", "Emulator limitation: Parquet files are not emulated (no Parquet writer without "
                       "new dependencies). PostHog accepts Parquet and it is the default format: send "
                       "file.format \"JSONLines\".", "emulator_unsupported")
    if spec.compression == "brotli":
        raise _invalid("file__compression", "Emulator limitation: brotli is not emulated (no brotli encoder in the "
                       "standard library). PostHog accepts it for JSONLines: use gzip or no compression.",
                       "emulator_unsupported")


# ------------------------------------------------------------------------------------------------
# runs
# ------------------------------------------------------------------------------------------------


@dataclass
class RunFile:
    id: str
    key: str
    path: Path
    size: int
    rows: int
    expires_at: float | None = None

    def to_dict(self) -> dict:
        return {"id": self.id, "key": self.key, "size": self.size, "rows": self.rows,
                "expires_at": None if self.expires_at is None else _iso_epoch(self.expires_at)}


@dataclass
class Run:
    id: str
    batch_export_id: str
    team_id: int
    model: str
    start: datetime
    end: datetime
    spec: xf.FileSpec
    include: list[str] | None
    exclude: list[str] | None
    created: float
    times: dict[int, float]
    status: str = "Starting"
    error: str | None = None
    records: int | None = None
    files: list[RunFile] = field(default_factory=list)
    written: list[xf.WrittenFile] = field(default_factory=list)
    stage: int = 0
    skip_to: int = 0
    halted: bool = False
    planned: dict | None = None
    stuck: str | None = None
    emulator_error: str | None = None
    queried_at: float | None = None

    def shown_status(self) -> str:
        """retrieve(): a Completed run with records but no file downloads yet shows Running."""
        if self.status == "Completed" and not self.files and (self.records or 0) > 0:
            return "Running"
        return self.status

    def to_dict(self) -> dict:
        return {"id": self.id, "batch_export_id": self.batch_export_id, "team_id": self.team_id, "model": self.model,
                "data_interval_start": self.start.isoformat(), "data_interval_end": self.end.isoformat(),
                "file": asdict(self.spec), "include": self.include, "exclude": self.exclude,
                "status": self.status, "shown_status": self.shown_status(), "error": self.error,
                "records_completed": self.records, "files": [f.to_dict() for f in self.files],
                "stage": next((k for k, v in STAGES.items() if v == self.stage), "Starting"),
                "created_at": _iso_epoch(self.created),
                "schedule": {k: _iso_epoch(self.times[v]) for k, v in STAGES.items() if v in self.times},
                "queried_at": None if self.queried_at is None else _iso_epoch(self.queried_at),
                "planned": self.planned, "stuck": self.stuck, "emulator_error": self.emulator_error}


def _remove_orphans(data_dir: Path) -> None:
    """The file folders of emulators that died without closing (killed processes)."""
    for folder in data_dir.glob("exports-*-*"):
        try:
            pid = int(folder.name.split("-")[1])
        except ValueError:
            continue
        if not _pid_alive(pid):
            shutil.rmtree(folder, ignore_errors=True)


def _iso_epoch(t: float) -> str:
    return tu.iso_z(datetime.fromtimestamp(t, timezone.utc))


class ExportManager:
    """The export runs of every team, their Temporal-like timeline, the files and the object store."""

    def __init__(self, store, settings: ExportSettings | None = None):
        self.store = store
        self.settings = settings or ExportSettings()
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self.runs: dict[str, Run] = {}
        self._outcomes: list[dict] = []
        self._closed = False
        _remove_orphans(Path(store.data_dir))
        self.directory = Path(tempfile.mkdtemp(prefix=f"exports-{os.getpid()}-", dir=str(store.data_dir)))
        self.object_store = ObjectStore(self.settings.object_store_host)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self.object_store.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    # -- API ----------------------------------------------------------------------------------------

    def handle(self, ctx: Ctx, method: str, item_path: str) -> Result:
        rest = [s for s in item_path.split("/") if s]
        if not rest:
            if method == "GET":
                return self._list(ctx)
            if method == "POST":
                return self._create(ctx)
            raise _not_allowed(method)
        if rest == ["count_rows"]:
            if method != "POST":
                raise _not_allowed(method)
            return self._count_rows(ctx)
        if len(rest) == 1 and method != "GET":
            raise _not_allowed(method)
        if rest[1:2] == ["download"] and method != "GET":
            raise _not_allowed(method)
        if rest[1:2] == ["cancel"] and method != "POST":
            raise _not_allowed(method)
        run = self._get(ctx.project_id, rest[0])
        if len(rest) == 1:
            return Result(self._retrieve_body(run))
        if rest[1] == "cancel":
            return self._cancel(run)
        return self._download(run, rest[2] if len(rest) == 3 else None)

    def _get(self, team_id: int, run_id: str) -> Run:
        """get_object(): an id that is not a UUID of this team's runs is 404 ``Not found.``."""
        try:
            key = str(uuid_mod.UUID(run_id))
        except ValueError:
            raise ep.not_found() from None
        with self._lock:
            run = self.runs.get(key)
        if run is None or run.team_id != team_id:
            raise ep.not_found()
        return run

    def _list(self, ctx: Ctx) -> Result:
        with self._lock:
            runs = sorted((r for r in self.runs.values() if r.team_id == ctx.project_id), key=lambda r: -r.created)
            items = [{"id": r.id, "status": r.status} for r in runs]  # ListOutputSerializer: the stored status
        return ep.drf_page(ctx, items, 100)

    def _count_rows(self, ctx: Ctx) -> Result:
        """count_rows (hogql only): validated, then the closed beta's 403."""
        body = {} if ctx.body is None else ctx.body
        if not isinstance(body, dict):
            raise _invalid(None, f"Invalid data. Expected a dictionary, but got {type(body).__name__}.")
        if "model" not in body:
            raise _invalid("model", "This field is required.", "required")
        _choice(body["model"], ("hogql",), "model")
        if "hogql_query" not in body:
            raise _invalid("hogql_query", "This field is required.", "required")
        _char(body["hogql_query"], "hogql_query")
        raise ApiError(403, "authentication_error", "permission_denied", HOGQL_DISABLED)

    def _create(self, ctx: Ctx) -> Result:
        now = tu.utcnow()
        req = validate_create(ctx.body, now)
        emulator_limitations(req["spec"])
        s = self.settings
        with self._cond:
            running = sum(1 for r in self.runs.values() if r.team_id == ctx.project_id and r.status in ("Starting", "Running"))
            if running >= s.max_concurrent_per_team:  # TooManyConcurrentFileDownloads: an APIException, not a Throttled
                raise ApiError(429, "server_error", "too_many_concurrent_file_downloads",
                               "Too many concurrent file download batch exports for this team.")
            planned = self._outcomes.pop(0) if self._outcomes else None
            created = time.time()
            ms = int(created * 1000)
            run_id = uuid7_text(ms, uuid_mod.uuid4().int >> 54)
            interval = (req["end"] - req["start"]).total_seconds()
            wait = s.wait_past_end_seconds if s.wait_past_end_seconds is not None else (30.0 if interval == 300 else 60.0)
            running_at = created + s.scaled(s.start_seconds)
            times = {1: running_at, 2: max(running_at, req["end"].timestamp() + s.scaled(wait))}
            run = Run(run_id, uuid7_text(ms, uuid_mod.uuid4().int >> 54), ctx.project_id, req["model"], req["start"],
                      req["end"], req["spec"], req["include"], req["exclude"], created, times, planned=planned)
            self.runs[run_id] = run
            if planned and planned.get("at") == "start":  # start_file_download_batch_export raised
                run.status, run.error, run.stage = "Failed", "Failed to start", STAGES["Files"]
                return Result({"detail": FAILED_TO_START}, status=500)
        threading.Thread(target=self._work, args=(run,), name=f"export-{run_id[:8]}", daemon=True).start()
        return Result({"id": run_id}, status=202)

    def _retrieve_body(self, run: Run) -> dict:
        with self._lock:
            body: dict[str, Any] = {"status": run.shown_status()}
            if body["status"] == "Completed":
                body["files"] = [f.id for f in run.files]
                body["records_completed"] = run.records
            if run.error is not None:
                body["error"] = run.error
            return body

    def _cancel(self, run: Run) -> Result:
        with self._cond:
            if run.status not in ("Running", "Starting"):
                raise _invalid(None, f"Cannot cancel a run that is in '{run.status}' status")
            run.status, run.halted = "Cancelled", True  # cancel_running_batch_export_run, then refresh_from_db
            self._cond.notify_all()
            return Result({"status": run.status})

    def _download(self, run: Run, part: str | None) -> Result:
        with self._lock:
            status = run.status
            files = sorted(run.files, key=lambda f: f.key)  # .order_by("key")
        if status in ("Running", "Starting"):
            raise _invalid(None, "Batch export run is still in progress")
        if status in FAILED:
            raise _invalid(None, "Batch export run has failed")
        if status == "Cancelled":
            raise _invalid(None, "Batch export run was cancelled")
        try:  # _get_file_download_for_run: a UUID, else an index (none: 0)
            wanted = str(uuid_mod.UUID(part))  # type: ignore[arg-type]
        except (ValueError, TypeError, AttributeError):
            try:
                index = int(part) if part is not None else 0
            except (ValueError, TypeError):
                raise _invalid(None, f"Invalid file id or index: '{part}'") from None
            if index < 0 or index >= len(files):
                raise ep.not_found(f"No files with index {index}")
            file = files[index]
        else:
            file = next((f for f in files if f.id == wanted), None)
            if file is None:
                raise ep.not_found()
        s = self.settings
        ttl = s.scaled(s.link_ttl_seconds)
        if file.expires_at is not None:  # _calculate_expiration_for_file_download
            remaining = file.expires_at - time.time()
            if remaining < 0:
                raise _invalid(None, "This file download has expired")
            ttl = min(remaining, ttl)
        if ttl < s.scaled(STS_MIN_DURATION_SECONDS):  # sts.assume_role(DurationSeconds=ttl) raises: an unhandled 500
            raise ApiError(500, "server_error", "error", "A server error occurred.")
        url = self.object_store.presign(file.key, max(1, int(ttl)), file.key.rsplit("/", 1)[-1])
        return Result(None, status=302, raw=b"", headers={"Location": url, "Cache-Control": "no-store",
                                                           "Content-Type": "text/html; charset=utf-8"})

    # -- the workflow -------------------------------------------------------------------------------

    def _wait(self, run: Run, stage: int) -> bool:
        """Sleep until the stage's time (or an advance); False when the run was halted or we close."""
        with self._cond:
            while not self._closed and not run.halted and run.skip_to < stage:
                left = run.times.get(stage, float("inf")) - time.time()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.25))
            return not self._closed and not run.halted

    def _reach(self, run: Run, stage: int) -> None:
        with self._cond:
            run.stage = max(run.stage, stage)
            self._cond.notify_all()

    def _work(self, run: Run) -> None:
        try:
            self._run_workflow(run)
        except Exception as e:  # the emulator stopped under a running export (or an emulator bug)
            with self._cond:
                run.emulator_error = f"{type(e).__name__}: {e}"
                self._cond.notify_all()

    def _run_workflow(self, run: Run) -> None:
        s = self.settings
        if not self._wait(run, 1):
            return
        with self._cond:  # set_status_to_running_task: Running once staging starts
            if run.status == "Starting":
                run.status = "Running"
        self._reach(run, 1)
        if not self._wait(run, 2):
            return
        run.queried_at = time.time()
        writer = xf.Writer(self.directory / run.id, run.spec, f"batch-exports/{run.batch_export_id}/{run.id}/"
                           f"{run.start.isoformat()}-{run.end.isoformat()}", run.start.isoformat(), run.end.isoformat())
        rows = 0
        if run.planned is None:
            writer.directory.mkdir(parents=True, exist_ok=True)
            window = xf.Window(run.team_id, tu.to_db(run.start), tu.to_db(run.end), run.include, run.exclude, tu.utcnow())
            try:
                rows = xf.write_export(self.store, run.model, window, writer, lambda: run.halted or self._closed)
            except xf.UnsupportedCompression as e:  # retried forever (NON_RETRYABLE_ERROR_TYPES = ()): stays Running
                writer.abort()
                with self._cond:
                    run.stuck = f"{e} (dump_record_batch; the activity is retried forever)"
                self._reach(run, 2)
                return
            except Exception as e:  # an emulator bug: fail the run like entrypoint.py's `except Exception`
                writer.abort()
                with self._cond:
                    if not run.halted:
                        run.status, run.error = "Failed", DEFAULT_ERRORS["Failed"]
                    run.emulator_error = f"{type(e).__name__}: {e}"
                self._reach(run, 4)
                return
        written = writer.close()
        with self._cond:
            if run.halted or self._closed:
                writer.abort()
                return
            run.written, run.records = written, rows
            run.times[3] = max(time.time(), run.queried_at + s.scaled(s.run_seconds))
        self._reach(run, 2)
        if not self._wait(run, 3):
            writer.abort()
            return
        with self._cond:
            if run.planned is not None:  # a planned outcome ends the run instead of Completed
                run.status = run.planned["status"]
                run.error = run.planned.get("error", DEFAULT_ERRORS.get(run.status))
                run.records = None
                run.stage = 4
                self._cond.notify_all()
                return
            run.status = "Completed"  # _finish_run: the run is Completed before its file downloads exist
            run.times[4] = time.time() + (s.scaled(s.files_gap_seconds) if rows else 0)
        self._reach(run, 3)
        if not self._wait(run, 4):
            return
        retention = s.file_retention_seconds
        files = []
        for w in run.written:  # generate_file_downloads: one BatchExportFileDownload per uploaded key
            expires = time.time() + s.scaled(retention) if retention is not None else None
            self.object_store.put(w.key, w.path, run.id, expires)
            files.append(RunFile(uuid7_text(int(time.time() * 1000), uuid_mod.uuid4().int >> 54), w.key, w.path, w.size,
                                 w.rows, expires))
        with self._cond:
            run.files = sorted(files, key=lambda f: f.key)  # BatchExportFileDownload ... .order_by("key")
        self._reach(run, 4)

    # -- control API --------------------------------------------------------------------------------

    def control(self, method: str, sub: str, body: Any) -> tuple[int, Any]:
        """``/_emulator/exports[...]`` (README "File-download exports", ground truth and control)."""
        parts = [p for p in sub.split("/") if p]
        body = body if isinstance(body, dict) else {}
        if not parts and method == "GET":
            with self._lock:
                runs = [r.to_dict() for r in sorted(self.runs.values(), key=lambda r: r.created)]
                return 200, {"runs": runs, "settings": self.settings.to_dict(), "outcomes": list(self._outcomes),
                             "object_store": self.object_store.url}
        if parts == ["settings"]:
            if method == "POST":
                with self._lock:
                    self.settings = ExportSettings(**{**self.settings.to_dict(), **body})
            return 200, self.settings.to_dict()
        if parts == ["outcomes"]:
            if method == "POST":
                status = body.get("status")
                if status not in (*FAILED, "Cancelled"):
                    return 400, {"error": f"status must be one of {', '.join((*FAILED, 'Cancelled'))}"}
                at = body.get("at", "end")
                if at not in ("start", "end") or (at == "start" and status != "Failed"):
                    return 400, {"error": "at must be 'end', or 'start' (status Failed: 'Failed to start', a 500)"}
                outcome = {"status": status, "at": at, "error": body.get("error", DEFAULT_ERRORS.get(status))}
                if at == "start":
                    outcome["error"] = "Failed to start"
                with self._lock:
                    self._outcomes.extend(dict(outcome) for _ in range(int(body.get("count", 1))))
            elif method == "DELETE":
                with self._lock:
                    self._outcomes.clear()
            with self._lock:
                return 200, {"outcomes": list(self._outcomes)}
        if parts == ["expire_links"] and method == "POST":
            return 200, {"expired_before": _iso_epoch(self.object_store.expire_links(body.get("run_id")))}
        if parts == ["object_store", "requests"]:
            if method == "DELETE":
                self.object_store.clear_requests()
                return 200, {"cleared": True}
            return 200, self.object_store.requests()
        if parts:
            with self._lock:
                run = self.runs.get(parts[0])
            if run is None:
                return 404, {"error": f"no export run {parts[0]!r}"}
            if len(parts) == 1 and method == "GET":
                return 200, run.to_dict()
            if parts[1:] == ["advance"] and method == "POST":
                return self._advance(run, body.get("to"), float(body.get("timeout", 30)))
            if parts[1:] == ["status"] and method == "POST":
                return self._force(run, body)
            if parts[1:] == ["expire_files"] and method == "POST":
                with self._cond:
                    for f in run.files:
                        f.expires_at = time.time() - 1
                        self.object_store.delete(f.key)  # the lifecycle rule removed the object
                return 200, run.to_dict()
        return 404, {"error": f"unknown exports control endpoint {method} /{sub}"}

    def _advance(self, run: Run, to: str | None, timeout: float) -> tuple[int, Any]:
        """Skip the waits up to a stage (default: the next one) and wait until the run is there."""
        with self._cond:
            target = STAGES.get(to) if to else min(run.stage + 1, 4)
            if target is None:
                return 400, {"error": f"to must be one of {', '.join(STAGES)}"}
            run.skip_to = max(run.skip_to, target)
            self._cond.notify_all()
            deadline = time.time() + timeout
            while run.stage < target and not run.halted and run.stuck is None and time.time() < deadline:
                self._cond.wait(0.05)
            return 200, run.to_dict()

    def _force(self, run: Run, body: dict) -> tuple[int, Any]:
        status = body.get("status")
        if status == "Completed":
            return self._advance(run, "Files", float(body.get("timeout", 30)))
        if status not in (*FAILED, "Cancelled", "Running", "Starting"):
            return 400, {"error": f"status must be one of {', '.join(STATUSES)}"}
        with self._cond:
            run.status = status
            run.error = body.get("error", DEFAULT_ERRORS.get(status))
            if status not in ("Running", "Starting"):
                run.halted = True
            self._cond.notify_all()
            return 200, run.to_dict()


__all__ = ["ExportManager", "ExportSettings", "RESOURCE", "required_scope"]
