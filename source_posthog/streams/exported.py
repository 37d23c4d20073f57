"""The export reading style (`export_mode: file_download`): events, persons and sessions through
PostHog's file-download exports, one ingestion-time window after another.

The protocol and the plan are `source_posthog/api/exports.py` (docs/posthog-api.md § 20.4); this
module sends the requests and turns the files into records and checkpoints. One project's read:

1. the windows: those of the incoming state (each with its run, polled again, never started twice),
   then back-to-back windows of at most a week up to now minus the ingestion lag;
2. up to `EXPORT_RUNS_IN_FLIGHT` runs started ahead (each recorded in the state at once), the
   first window polled until its run is Completed;
3. its files downloaded one by one: the PostHog download endpoint answers 302, and the presigned
   Location is fetched by a bare session that has no key (the API key never reaches the object
   store); each file is streamed through gzip and parsed line by line, never held whole;
4. a checkpoint after every file (events, sessions) or run (persons, grouped per person), and
   `through` moved past the window once it is delivered.

Failures: a FailedRetryable, TimedOut, Terminated or Cancelled run is started again (at most
`EXPORT_RUN_MAX_ATTEMPTS` per window); Failed stops the stream with PostHog's error (the next sync
starts the window again); FailedBilling says what the organization must do; an expired link is
asked for again through PostHog; expired files start the window's run again. A 429 for too many
runs waits in the HTTP policy like every 429. A key without `batch_export:write` is read over
HogQL, said once in the log.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
import zlib
from dataclasses import replace
from datetime import datetime
from typing import Any, Callable, Dict, Iterator, Mapping, Optional

import orjson
import pendulum
import requests
from airbyte_cdk.models import AirbyteMessage, FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from source_posthog import seams, settings
from source_posthog.api import exports, scopes
from source_posthog.api.exports import ExportState, InvalidExportState, MalformedRun, Verdict, Window
from source_posthog.api.timestamps import utc_iso
from source_posthog.http import ClientError, where
from source_posthog.state import StateError, not_in_future

logger = logging.getLogger("airbyte")


class ExportsNotAllowed(Exception):
    """The key may not start exports (no `batch_export:write`): the stream is read over HogQL."""


def stopped(message: str, failure_type: FailureType = FailureType.transient_error) -> AirbyteTracedException:
    return AirbyteTracedException(message=message, internal_message=message, failure_type=failure_type)


# -- the stream side: which path, and the state ----------------------------------------------------


class ExportedStream:
    """Mixed into events, persons and sessions (before their PostHogStream base): with
    `export_mode: file_download` they are read by `ExportReader`, else by their HogQL loop
    (`read_over_hogql`). Each declares its `export_model` and how a run's files become records."""

    export_model: str = ""

    def read_project(self, part: Any) -> Iterator[AirbyteMessage]:
        if self.config.exports and exports_allowed(self, part):
            try:
                yield from ExportReader(self, part).read()
                return
            except ExportsNotAllowed:
                pass  # refused before anything was delivered, said in the log once
        if part.resume and exports.STATE_MARK in part.resume:
            raise StateError(self.name, self._export_state_in_hogql_mode(part.project_id))
        yield from self.read_over_hogql(part)

    def trusted_state(self, project_id: int, value: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
        if not isinstance(value, Mapping) or exports.STATE_MARK not in value:
            return super().trusted_state(project_id, value)  # a HogQL state: judged as ever (and carried over at the read)
        if not self.config.exports:
            raise StateError(self.name, self._export_state_in_hogql_mode(project_id))
        written_for = value.get("project_id")
        if written_for is not None and written_for != project_id:
            logger.warning(f"Stream {self.name}: the export state was written for project {written_for}, not project {project_id}; reading project {project_id} from the start.")
            return None
        try:
            state = ExportState.from_dict(value)
        except InvalidExportState as error:
            raise StateError(self.name, f"the export state cannot be read ({error})")
        not_in_future(self.name, "through", pendulum.instance(state.through))
        return {**state.to_dict(), "project_id": project_id}

    def _export_state_in_hogql_mode(self, project_id: int) -> str:
        return (
            f"the state of project {project_id} was written with export_mode file_download (ingestion-time windows), and this sync reads "
            f"{self.name} over HogQL, which cannot continue from it without skipping or guessing; set 'export_mode' back to file_download "
            f"(or give the key the batch_export:write scope), or reset the {self.name} stream to read it over HogQL from anchor_date"
        )

    # -- what each stream declares ----------------------------------------------------------------
    def read_over_hogql(self, part: Any) -> Iterator[AirbyteMessage]:
        raise NotImplementedError

    def export_floor(self, part: Any) -> datetime:
        """Where a first export read starts (ingestion time)."""
        return self.config.anchor_date

    def export_start_after_hogql(self, part: Any, value: Mapping[str, Any]) -> Optional[datetime]:
        """Where the export windows start after a HogQL state (None: from `export_floor`)."""
        return None

    def export_deliver(self, reader: "ExportReader", window: Window, run: exports.RunStatus) -> Iterator[AirbyteMessage]:
        """Every record of a Completed run: line by line, a checkpoint after each file."""
        yield from reader.deliver_lines(window, run, self.export_record)

    def export_record(self, line: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        raise NotImplementedError


def exports_allowed(stream: Any, part: Any) -> bool:
    """Whether this sync may start exports: PostHog's description of the key (one request, once a
    sync); where the server cannot describe it, yes, and a 403 on the first run says otherwise."""
    decisions = stream.sync.decisions
    if "exports" not in decisions:
        granted = part.key_scopes()
        decisions["exports"] = granted is None or scopes.covers(granted, exports.WRITE_SCOPE)
        if not decisions["exports"]:
            _fall_back(f"the API key's scopes ({', '.join(granted or [])}) do not include '{exports.WRITE_SCOPE}'")
    return decisions["exports"]


def _fall_back(why: str) -> None:
    logger.warning(
        f"export_mode file_download: {why}, so events, persons and sessions are read over HogQL this sync (persons as a full refresh). "
        f"Give the personal API key the '{exports.WRITE_SCOPE}' scope (it includes '{exports.READ_SCOPE}') to read them through PostHog's exports."
    )


# -- the reader -------------------------------------------------------------------------------------


class FilesExpired(Exception):
    """PostHog no longer serves the run's files (their lifecycle ended): the window needs a new run."""


class ExportReader:
    """One stream's export read of one project (`part`, a ProjectRead)."""

    def __init__(self, stream: Any, part: Any):
        self.stream = stream
        self.part = part
        self.model = stream.export_model
        self.name = stream.name
        self.client = part.new_client()
        self.downloads = part.new_client(accepts_redirect=True)
        self.state = self._begin()

    @property
    def runs_url(self) -> str:
        return self.part.url(f"{exports.RESOURCE}/")

    # -- the state to start from ------------------------------------------------------------------
    def _begin(self) -> ExportState:
        part, resume = self.part, self.part.resume
        if part.incremental and resume and exports.STATE_MARK in resume:
            return ExportState.from_dict(resume)
        floor = self.stream.export_floor(part)
        if part.incremental and resume:
            start = self.stream.export_start_after_hogql(part, resume)
            if start is not None:
                logger.info(
                    f"Stream {self.name}, project {part.project_id}: the state was written with export_mode hogql; the export windows "
                    f"(ingestion time) start at {utc_iso(start)}, before its cursor, so nothing is skipped (what lies between is delivered again)."
                )
                return ExportState(max(start, floor))
            logger.info(f"Stream {self.name}, project {part.project_id}: the state was written with export_mode hogql; the export windows start at {utc_iso(floor)}.")
        return ExportState(floor)

    def checkpoint(self) -> AirbyteMessage:
        return self.part.checkpoint({**self.state.to_dict(), "project_id": self.part.project_id})

    # -- the loop ---------------------------------------------------------------------------------
    def read(self) -> Iterator[AirbyteMessage]:
        upper = pendulum.now("UTC") - seams.events_ingestion_lag()
        windows = exports.plan_windows(self.state, upper)
        first = True
        while windows:
            for index in range(min(settings.EXPORT_RUNS_IN_FLIGHT, len(windows))):
                if windows[index].run_id is None:
                    windows[index] = self._start(windows[index], may_fall_back=first)
                    self.state = exports.with_window(self.state, windows[index])
                    yield self.checkpoint()  # before anything else: a kill from here on polls this run again
                first = False
            head = windows[0]
            try:
                run = self._poll(head)
            except FilesExpired:
                windows[0] = head.again()
                continue
            if run.verdict is Verdict.WAIT:
                time.sleep(seams.export_poll_seconds())
                continue
            if run.verdict is Verdict.AGAIN and head.attempts < settings.EXPORT_RUN_MAX_ATTEMPTS:
                windows[0] = self._again(head, run)
                continue
            if run.verdict in (Verdict.AGAIN, Verdict.BILLING, Verdict.FAILED):
                # The window forgets its run, so the next sync (later, or once billing is fixed) starts it anew.
                self.state = exports.with_window(self.state, head.again(attempts=0))
                yield self.checkpoint()
                raise self._ended(head, run)
            try:
                yield from self.stream.export_deliver(self, head, run)
            except FilesExpired:
                windows[0] = head.again()
                logger.info(f"Stream {self.name}, project {self.part.project_id}: the files of run {head.run_id} expired; exporting {utc_iso(head.start)} to {utc_iso(head.end)} again.")
                continue
            windows.pop(0)
            self.state = exports.delivered(self.state, head)
            yield self.checkpoint()
        if first:
            yield self.checkpoint()  # nothing to export yet: the state as it is

    def _start(self, window: Window, may_fall_back: bool) -> Window:
        body = exports.create_body(self.model, window.start, window.end)
        try:
            response, content = self.client.send("POST", self.runs_url, json=body)
        except ClientError as refused:
            if refused.status == 403 and refused.missing_scope and may_fall_back:
                self.stream.sync.decisions["exports"] = False
                _fall_back(f"PostHog refused to start an export ({refused.message})")
                raise ExportsNotAllowed() from None
            raise
        except AirbyteTracedException as error:
            raise self._failed_to_start(window, error) from None
        try:
            run_id = orjson.loads(content)["id"]
            if not isinstance(run_id, str) or not run_id:
                raise TypeError("no id")
        except (orjson.JSONDecodeError, KeyError, TypeError) as error:
            raise stopped(f"Stream {self.name}: PostHog sent an unexpected answer to {where(response)} ({type(error).__name__}); run the sync again.", FailureType.system_error)
        return window.started(run_id)

    def _failed_to_start(self, window: Window, error: AirbyteTracedException) -> AirbyteTracedException:
        return stopped(
            f"Stream {self.name}: PostHog could not start the export of project {self.part.project_id} for {utc_iso(window.start)} to "
            f"{utc_iso(window.end)} ({error.message}). Everything before it is checkpointed; run the sync again."
        )

    def _poll(self, window: Window) -> exports.RunStatus:
        try:
            response, content = self.client.get(f"{self.runs_url}{window.run_id}/")
        except ClientError as refused:
            if refused.status == 404:  # the run is gone (another project's state, or PostHog dropped it)
                logger.info(f"Stream {self.name}, project {self.part.project_id}: PostHog has no export run {window.run_id}; exporting the window again.")
                raise FilesExpired() from None
            raise
        try:
            return exports.run_status(orjson.loads(content))
        except (orjson.JSONDecodeError, MalformedRun) as error:
            raise stopped(f"Stream {self.name}: PostHog sent an unexpected answer to {where(response)} ({error}); run the sync again.", FailureType.system_error)

    def _ended(self, window: Window, run: exports.RunStatus) -> AirbyteTracedException:
        """What stops the stream once a run has ended for good (checkpointed before it)."""
        if run.verdict is Verdict.BILLING:
            return stopped(exports.billing_message(self.name, self.part.project_id), FailureType.config_error)
        export = f"Stream {self.name}: PostHog's export of project {self.part.project_id} for {utc_iso(window.start)} to {utc_iso(window.end)}"
        if run.verdict is Verdict.FAILED:
            return stopped(
                f"{export} ended Failed ({run.error or 'no error given'}). Everything before it is delivered and checkpointed; "
                f"run the sync again to export that window anew, and report it to PostHog if it fails again."
            )
        return stopped(
            f"{export} ended {run.status} {window.attempts} times ({run.error or 'no error given'}). Everything before it is checkpointed; "
            f"run the sync again later."
        )

    def _again(self, window: Window, run: exports.RunStatus) -> Window:
        logger.info(
            f"Stream {self.name}, project {self.part.project_id}: export run {window.run_id} ended {run.status}"
            f"{f' ({run.error})' if run.error else ''}; PostHog may succeed on a new run, starting attempt {window.attempts + 1} "
            f"of {settings.EXPORT_RUN_MAX_ATTEMPTS}."
        )
        return window.again()

    # -- files → lines ------------------------------------------------------------------------------
    def deliver_lines(self, window: Window, run: exports.RunStatus, record_of: Callable[[Dict[str, Any]], Optional[Dict[str, Any]]]) -> Iterator[AirbyteMessage]:
        """Events and sessions: each line is a record; a checkpoint after every file."""
        part = self.part
        loads, record = orjson.loads, part.record
        for index in range(window.files_done, len(run.files)):
            emitted_at = int(time.time() * 1000)
            for line in self.lines(window, run.files[index]):
                data = record_of(loads(line))
                if data is not None:
                    yield record(data, emitted_at)
            window = replace(window, files_done=index + 1)
            self.state = exports.with_window(self.state, window)
            yield self.checkpoint()

    def lines(self, window: Window, file_id: str) -> Iterator[bytes]:
        """The file's lines (bytes), streamed from the object store through gzip. A fetch that fails
        (a reset, a 5xx, an expired link) is asked again through PostHog, the lines already
        delivered skipped, at most `EXPORT_DOWNLOAD_MAX_ATTEMPTS` times."""
        delivered = 0
        for attempt in range(1, settings.EXPORT_DOWNLOAD_MAX_ATTEMPTS + 1):
            location = self._link(window, file_id)
            seen = 0
            try:
                with object_store_session() as session, session.get(location, stream=True, timeout=(settings.CONNECT_TIMEOUT_SECONDS, self.part.config.request_timeout_seconds), allow_redirects=False) as response:
                    if response.status_code != 200:
                        problem = object_store_problem(response)
                        if response.status_code >= 500 or "expired" in problem.lower() or "AccessDenied" in problem:
                            raise DownloadFailed(problem)  # a new link; PostHog says there if the files are gone
                        raise stopped(
                            f"Stream {self.name}: the object store refused the download of a file of export run {window.run_id} ({problem}). "
                            f"Run the sync again; report it if it persists.",
                            FailureType.system_error,
                        )
                    for line in gzip_lines(response.iter_content(GZIP_CHUNK)):
                        seen += 1
                        if seen > delivered:
                            delivered = seen
                            yield line
                return
            except (DownloadFailed, requests.RequestException, OSError, EOFError, zlib.error) as error:
                what = str(error) if isinstance(error, DownloadFailed) else type(error).__name__
                if attempt == settings.EXPORT_DOWNLOAD_MAX_ATTEMPTS:
                    raise stopped(
                        f"Stream {self.name}: a file of export run {window.run_id} could not be downloaded ({what}) after {attempt} attempts. "
                        f"The last checkpoint is saved; run the sync again to resume from it."
                    )
                logger.info(f"Stream {self.name}: the download of a file of export run {window.run_id} failed ({what}); asking PostHog for a new link (attempt {attempt + 1}).")

    def _link(self, window: Window, file_id: str) -> str:
        """The presigned URL PostHog's download endpoint redirects to (not followed with the key)."""
        try:
            response, _ = self.downloads.get(f"{self.runs_url}{window.run_id}/download/{file_id}/")
        except ClientError as refused:
            if refused.status in (400, 404) and ("expired" in refused.message or "No files" in refused.message or "Not found" in refused.message):
                raise FilesExpired() from None
            raise
        location = response.headers.get("Location") or ""
        if response.status_code not in (301, 302, 303, 307, 308) or not location.lower().startswith(("https://", "http://")):
            raise stopped(f"Stream {self.name}: {where(response)} answered {response.status_code} without a download link; run the sync again.", FailureType.system_error)
        return location


class DownloadFailed(Exception):
    pass


GZIP_CHUNK = 16 * 1024  # small: each gzip member's `unused_data` copies the rest of the chunk


def gzip_lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The lines of a gzip stream of any number of members, as it arrives. PostHog's JSON lines
    exports write every line as its own gzip member (`gzip.compress` per record); zlib stops at each
    member's end, so a new decompressor starts there. ~2.5 µs a line, against ~10 with GzipFile,
    which parses each member's header in Python. Raises EOFError on a stream cut inside a member."""
    decompressor = zlib.decompressobj(GZIP_WBITS)
    pending = b""
    fed = False
    for chunk in chunks:
        out = []
        while chunk:
            fed = True
            out.append(decompressor.decompress(chunk))
            if decompressor.eof:
                chunk = decompressor.unused_data
                decompressor = zlib.decompressobj(GZIP_WBITS)
                fed = False
            else:
                chunk = b""
        pending += b"".join(out)
        if b"\n" in pending:
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line:
                    yield line
    if fed:
        raise EOFError("the gzip stream ended inside a member")
    if pending:
        yield pending


GZIP_WBITS = 16 + zlib.MAX_WBITS  # a gzip header and trailer


def object_store_session() -> requests.Session:
    """A session that can carry no credential: no Authorization header, and a no-op `auth` so that
    requests never adds one from ~/.netrc. The presigned URL is its own authorization."""
    session = requests.Session()
    session.auth = _no_auth
    return session


def _no_auth(request: requests.PreparedRequest) -> requests.PreparedRequest:
    request.headers.pop("Authorization", None)
    return request


_S3_CODE = re.compile(rb"<Code>([A-Za-z]{1,64})</Code>")
_S3_MESSAGE = re.compile(rb"<Message>([^<]{0,200})</Message>")


def object_store_problem(response: requests.Response) -> str:
    """`403 AccessDenied: Request has expired`: S3's code and message only (an S3 error body can
    echo a request header verbatim; nothing else of it is shown)."""
    body = response.raw.read(8192, decode_content=True) if response.raw is not None else b""
    code, message = _S3_CODE.search(body or b""), _S3_MESSAGE.search(body or b"")
    text = f"{response.status_code} {code.group(1).decode() if code else 'error'}"
    if message and code and code.group(1) in (b"AccessDenied", b"SignatureDoesNotMatch", b"NoSuchKey", b"InternalError", b"SlowDown"):
        text += f": {message.group(1).decode(errors='replace')}"
    return text


# -- persons: one line per distinct id, in no order, grouped per person ------------------------------

_PERSON_ID = re.compile(rb'"person_id":"([^"\\]+)"')


def person_records(person_id: str, lines: exports.PersonLines) -> Iterator[Dict[str, Any]]:
    """The person's record, then the deletion of each person merged into it (`exports.merged_away`)."""
    record = exports.person_record(person_id, lines)
    yield record
    for gone in exports.merged_away(person_id, lines):
        yield exports.merged_away_record(gone, record)


def deliver_persons(
    reader: ExportReader, window: Window, run: exports.RunStatus, records_of: Callable[[str, exports.PersonLines], Iterator[Dict[str, Any]]] = person_records
) -> Iterator[AirbyteMessage]:
    """Every person of a Completed run, once, with all its distinct ids. A run of up to
    `EXPORT_PERSONS_LINES_IN_MEMORY` lines is grouped in memory; a larger one is first split by person
    into hash buckets on disk (raw lines, never parsed twice), each grouped in turn. One checkpoint,
    after the run (a person's lines may be in any of its files)."""
    part = reader.part
    limit = settings.EXPORT_PERSONS_LINES_IN_MEMORY
    if run.records is not None and run.records <= limit:
        persons: Dict[str, exports.PersonLines] = {}
        for file_id in run.files:
            for line in reader.lines(window, file_id):
                exports.add_person_line(persons, orjson.loads(line))
        yield from _person_messages(part, persons, records_of)
        return
    buckets = max(2, -(-(run.records or limit * 4) // limit))
    directory = tempfile.mkdtemp(prefix="source-posthog-persons-")
    try:
        files = [open(os.path.join(directory, f"{index}.jsonl"), "wb") for index in range(buckets)]
        try:
            for file_id in run.files:
                for line in reader.lines(window, file_id):
                    found = _PERSON_ID.search(line)
                    key = found.group(1) if found else str(orjson.loads(line)["person_id"]).encode()
                    files[zlib.crc32(key) % buckets].write(line if line.endswith(b"\n") else line + b"\n")
        finally:
            for file in files:
                file.close()
        for index in range(buckets):
            persons = {}
            with open(os.path.join(directory, f"{index}.jsonl"), "rb") as file:
                for line in file:
                    exports.add_person_line(persons, orjson.loads(line))
            yield from _person_messages(part, persons, records_of)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _person_messages(
    part: Any, persons: Dict[str, exports.PersonLines], records_of: Callable[[str, exports.PersonLines], Iterator[Dict[str, Any]]]
) -> Iterator[AirbyteMessage]:
    """The records of a group of persons, each person's lines let go once it is emitted."""
    for person_id in list(persons):
        for record in records_of(person_id, persons.pop(person_id)):
            yield part.record(record)


__all__ = ["ExportReader", "ExportedStream", "deliver_persons", "exports_allowed"]
