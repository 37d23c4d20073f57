"""PostHogStream: every stream reads each project in turn, a partition with its own state.

How a sync reads a stream (the CDK's `Stream.read` drives it; `cdk_internals.py` (6) and
unit_tests/test_cdk_contract.py pin what that relies on):
- `stream_slices` yields one partition per project the sync reads, `{"project_id": 4}`;
- `read_records` reads one project through the stream's own loop, `read_project(part)`, which
  yields records and, after every page, `part.checkpoint(state)`: a STATE message holding every
  project's state, `{"<project_id>": state}` (one shape, whatever the number of projects), so a
  kill at any moment resumes each project from its own last page;
- a project that fails (a 403 naming it, retries exhausted, …) does not stop the others: the error
  is logged, the project keeps its last checkpoint, and after the last project the stream fails
  naming each project that did not sync.

Every request goes through `PostHogClient`s built by the one factory (`http.Clients`), with the
connection's budget. HttpStream's own request hooks (`path`, `parse_response`, `next_page_token`)
are not used: each pagination style is one loop here, with the checkpoint where the page ends.

The pagination styles (the bodies are read by `source_posthog/api/envelopes.py`, docs/posthog-api.md § 2):
  counted, persons, actions, groups → PagedList (follow `next`; a short page is not the end),
                                      read in one or more passes (`passes`)
  groups_types (bare list)          → PagedList with `bare_list = True` (one page, no `next`)
  recordings                        → streams/session_recordings.py (`has_next`, offset)
  HogQL keysets                     → streams/events.py, sessions.py, persons.py
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from datetime import datetime, timedelta
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Iterator, List, Mapping, MutableMapping, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from airbyte_cdk.models import (
    AirbyteMessage,
    AirbyteRecordMessage,
    AirbyteStateBlob,
    AirbyteStateMessage,
    AirbyteStateType,
    AirbyteStreamState,
    FailureType,
    StreamDescriptor,
    SyncMode,
    Type,
)
from airbyte_cdk.sources.streams import CheckpointMixin
from airbyte_cdk.sources.streams.checkpoint import Cursor
from airbyte_cdk.sources.streams.http import HttpStream
from airbyte_cdk.sources.types import StreamSlice
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from source_posthog import settings
from source_posthog.api import envelopes, hogql
from source_posthog.api.envelopes import MalformedBody
from source_posthog.cdk_internals import FULL_REFRESH_COMPLETE, NO_CURSOR_STATE, ProjectStatesCursor
from source_posthog.config import PostHogConfig
from source_posthog.http import ClientError, Clients, PostHogClient, Usage, key_scopes, where
from source_posthog.progress import Progress, estimate_message
from source_posthog.api.timestamps import parse_timestamp, utc_iso
from source_posthog.state import ProjectStates, StateError, not_in_future, split_by_project, state_timestamp


class MalformedResponse(AirbyteTracedException):
    pass


def malformed_response(place: str, problem: str) -> MalformedResponse:
    message = f"PostHog sent an unexpected response to {place}: {problem}. The last checkpoint is saved; retry the sync, and report it if it persists."
    return MalformedResponse(message=message, internal_message=message, failure_type=FailureType.system_error)


def time_counts(body: Mapping[str, Any], place: str, what: str) -> List[Tuple[datetime, int]]:
    """The rows of a `SELECT toStartOf…(time), count() … GROUP BY` (the events and sessions plans' counts)."""
    try:
        return [(parse_timestamp(bucket), int(count)) for bucket, count in body["results"]]
    except (TypeError, ValueError) as error:
        raise malformed_response(place, f"the {what} cannot be read ({type(error).__name__}: {error})")


def too_slow(stream: str, place: str, problem: Exception, advice: str) -> AirbyteTracedException:
    """PostHog's execution limit met even by the smallest query a plan can ask (a system error)."""
    message = f"Stream {stream}: {place}: {problem}. {advice}"
    return AirbyteTracedException(message=message, internal_message=message, failure_type=FailureType.system_error)


PROJECT_ID_SCHEMA = {"type": "integer", "description": "The PostHog project the record was read from."}


@dataclass(frozen=True)
class SyncContext:
    """What the streams of one command share: the config, the client factory (with the
    connection's one budget), the projects this sync reads, in order, and every project read so
    far (for the sync's summary)."""

    config: PostHogConfig
    clients: Clients
    projects: Tuple[int, ...]
    reads: List["ProjectRead"] = field(default_factory=list)
    decisions: Dict[str, Any] = field(default_factory=dict)  # made once a sync for every stream (may exports be started?)


class ProjectRead:
    """One stream's read of one project: its URLs, its client, the state it resumes from, its records
    and checkpoints, and what it cost (`progress.py`: the progress lines, estimates and summary)."""

    def __init__(self, stream: "PostHogStream", project_id: int, incremental: bool):
        self.stream = stream
        self.project_id = project_id
        self.incremental = incremental
        self.resume: Optional[Mapping[str, Any]] = stream.states.get(project_id)  # judged by trusted_state before the sync
        self._client: Optional[PostHogClient] = None
        self.usage = Usage()
        self.progress = Progress(stream.name, project_id, self.usage, multi_project=len(stream.sync.projects) > 1)

    @property
    def config(self) -> PostHogConfig:
        return self.stream.config

    @property
    def project_url(self) -> str:
        return f"{self.config.base_url}/api/projects/{self.project_id}/"

    def url(self, path: str) -> str:
        return f"{self.project_url}{path}"

    @property
    def client(self) -> PostHogClient:
        if self._client is None:
            self._client = self.new_client()
        return self._client

    def new_client(self, **options: Any) -> PostHogClient:
        return self.stream.sync.clients.client(self.stream.name, self.stream.scope, self.project_id, usage=self.usage, **options)

    def key_scopes(self) -> Optional[List[str]]:
        """The key's scopes as PostHog describes it (`http.key_scopes`), None where it cannot say."""
        return key_scopes(self.new_client(read_timeout_seconds=min(self.config.request_timeout_seconds, 30)), self.config.base_url)

    def get_body(self, url: str, params: Optional[Mapping[str, Any]] = None, **decode: Any) -> Dict[str, Any]:
        """GET a list page and check its envelope (`envelopes.decode_body`)."""
        response, content = self.client.get(url, params)
        try:
            return envelopes.decode_body(content, **decode)
        except MalformedBody as error:
            raise malformed_response(where(response), str(error))

    def query(self, text: str, name: str, columns: Sequence[str] = ()) -> Tuple[Dict[str, Any], str]:
        """One HogQL query (`name` labels it in PostHog's query log) and its checked body: the
        HogQL envelope, with every one of `columns` in its result. Returns (body, where it was asked)."""
        response, content = self.client.send("POST", self.url("query/"), json=hogql.query_body(text, name))
        place = where(response)
        try:
            body = envelopes.decode_body(content, item_type=list)
        except MalformedBody as error:
            raise malformed_response(place, str(error))
        missing = [column for column in columns if column not in (body.get("columns") or [])]
        if missing:
            raise malformed_response(place, f"the {name.removeprefix('airbyte_source_posthog_')} query result has no {' or '.join(missing)} column")
        return body, place

    def pages(self, url: str, params: Mapping[str, Any], bare_list: bool = False) -> Iterator[Tuple[Dict[str, Any], Optional[str]]]:
        """A REST list's pages from `url` on: (body, the next page's path or None). PostHog's
        absolute `next` URL is followed re-based onto the configured host (the key goes nowhere
        else), and only a missing `next` ends the list: a short page does not."""
        page: Optional[str] = url
        while page:
            body = self.get_body(page, params, bare_list=bare_list)
            path = None if bare_list else envelopes.next_path(body)
            yield body, path
            page, params = (f"{self.config.base_url}{path}", {}) if path else (None, {})  # `next` carries every parameter

    def record(self, data: Dict[str, Any], emitted_at: Optional[int] = None) -> AirbyteMessage:
        """A RECORD of this project. Emitted as a message: the CDK passes it on without
        transforming it (a measurable share of the CPU at a million events)."""
        data["project_id"] = self.project_id
        self.progress.records += 1
        return AirbyteMessage(
            type=Type.RECORD,
            record=AirbyteRecordMessage(stream=self.stream.name, data=data, emitted_at=emitted_at or int(time.time() * 1000)),
        )

    def checkpoint(self, state: Mapping[str, Any]) -> AirbyteMessage:
        """This project's state is now `state`: the STATE message of the stream, every project's.
        (A checkpoint is also where a long read says how far along it is.)"""
        self.stream.states.set(self.project_id, state)
        self.progress.maybe_log(self.stream.logger)
        return self.stream.state_message()

    def estimate(self, rows: int) -> Iterator[AirbyteMessage]:
        """The rows this project's read will deliver, as counted by its plan: a TRACE ESTIMATE
        for the stream (every project's so far) when it changes, which the Airbyte UI draws its
        progress bar from (docs/posthog-api.md § 20.6)."""
        if self.progress.estimated_rows == rows:
            return
        self.progress.estimated_rows = rows
        yield estimate_message(self.stream.name, self.stream.delivered_before + rows)


class PostHogStream(HttpStream, CheckpointMixin, ABC):
    """One PostHog resource under /api/projects/{project_id}/, read project by project.

    A stream declares `resource` (the path), `scope` (the personal API key scope it needs),
    `primary_key`, and its loop, `read_project`; the pagination styles below write the loop once.
    """

    primary_key = "id"
    resource: str = ""
    scope: str = ""
    page_size: Optional[int] = settings.LIST_PAGE_SIZE

    def __init__(self, sync: SyncContext):
        self.sync = sync
        self.config = sync.config
        self.states = ProjectStates()
        self._cursor: Cursor = ProjectStatesCursor(self.states)
        self._failures: List[Tuple[int, AirbyteTracedException]] = []
        self.delivered_before = 0  # records of the projects already read this sync (for estimates)
        # HttpStream's own client is never used (requests go through sync.clients): no key for it.
        super().__init__(authenticator=None)

    @property
    def url_base(self) -> str:
        return self.config.api_url

    def path(self, **kwargs: Any) -> str:
        raise NotImplementedError("requests are made by read_project, through http.Clients")

    def next_page_token(self, response: Any) -> Optional[Mapping[str, Any]]:
        raise NotImplementedError("pages are followed by read_project")

    def parse_response(self, response: Any, **kwargs: Any) -> Iterable[Mapping[str, Any]]:
        raise NotImplementedError("pages are read by read_project")

    def get_json_schema(self) -> Mapping[str, Any]:
        """The stream's schema file, plus `project_id`, which every record carries."""
        schema = dict(super().get_json_schema())
        schema["properties"] = {**schema.get("properties", {}), "project_id": PROJECT_ID_SCHEMA}
        return schema

    # -- state: every project's own -----------------------------------------------------------
    @property
    def state(self) -> MutableMapping[str, Any]:
        return self.states.as_state()

    @state.setter
    def state(self, value: MutableMapping[str, Any]) -> None:
        # The source has judged every project's part before the sync (`trusted_states`).
        self.states.by_project = split_by_project(dict(value) if value else None, self.config.project_id)

    def get_cursor(self) -> Optional[Cursor]:
        return self._cursor

    def state_message(self) -> AirbyteMessage:
        self.states.unsent = False
        return AirbyteMessage(
            type=Type.STATE,
            state=AirbyteStateMessage(
                type=AirbyteStateType.STREAM,
                stream=AirbyteStreamState(stream_descriptor=StreamDescriptor(name=self.name), stream_state=AirbyteStateBlob(self.state)),
            ),
        )

    def trusted_state(self, project_id: int, value: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
        """The state to resume `project_id` from, None to start it over; raises StateError if it
        cannot be trusted. Called for every project before the sync's first request.

        A list checkpoints the next page (`{"next": path}`, with `"pass"` for lists read in
        passes) and, once complete, `{"__ab_full_refresh_sync_complete": true}`. Clients that
        replay the last state (PyAirbyte, a shell following the README) hand the completed one
        back: that means "read it all again", not "read nothing". A next page of another project or
        host is not this project's either."""
        if value == FULL_REFRESH_COMPLETE or value == NO_CURSOR_STATE:
            self.logger.info(f"Stream {self.name}, project {project_id}: the previous full refresh completed; reading it again from the first page.")
            return None
        if "next" not in value:
            self.logger.info(f"Stream {self.name}, project {project_id}: the state holds no page to resume from; reading from the first page.")
            return None
        page = value.get("next")
        own = urlsplit(f"{self.config.base_url}/api/projects/{project_id}/").path
        if not isinstance(page, str) or not urlsplit(page).path.startswith(own):
            self.logger.warning(
                f"Stream {self.name}: the state's next page {urlsplit(str(page)).path} is not under {own} "
                f"(it was written for another project or host); reading project {project_id} from the first page."
            )
            return None
        return value

    def written_for_this_project(self, project_id: int, value: Mapping[str, Any]) -> bool:
        """False, with a warning, for an incremental state that names another project."""
        written_for = value.get("project_id")
        if written_for is None or written_for == project_id:
            return True
        self.logger.warning(
            f"Stream {self.name}: the state was written for project {written_for}, not project {project_id}; "
            f"syncing project {project_id} from anchor_date ({self.config.anchor_date.to_iso8601_string()})."
        )
        return False

    # -- the read: one partition per project -----------------------------------------------------
    def stream_slices(self, sync_mode: SyncMode = SyncMode.full_refresh, **kwargs: Any) -> Iterable[Optional[Mapping[str, Any]]]:
        self._failures = []
        for project in self.sync.projects:
            yield StreamSlice(partition={"project_id": project}, cursor_slice={})
        if self._failures:
            raise projects_failed(self.name, self._failures, len(self.sync.projects))

    def read_records(
        self,
        sync_mode: SyncMode,
        cursor_field: Optional[List[str]] = None,
        stream_slice: Optional[Mapping[str, Any]] = None,
        stream_state: Optional[Mapping[str, Any]] = None,
    ) -> Iterable[Any]:
        project = int(stream_slice["project_id"]) if stream_slice else self.config.project_id
        part = ProjectRead(self, project, sync_mode == SyncMode.incremental)
        self.sync.reads.append(part)
        failed = False
        try:
            yield from self.read_project(part)
        except AirbyteTracedException as error:
            failed = True
            self._failures.append((project, error))
            if len(self.sync.projects) > 1:
                self.logger.error(f"Stream {self.name}, project {project}: {error.message} The other projects go on.")
        finally:
            self.delivered_before += part.progress.records
            self.logger.info(part.progress.summary(failed))

    @abstractmethod
    def read_project(self, part: ProjectRead) -> Iterator[AirbyteMessage]:
        """The stream's loop over one project: records, and a checkpoint after every page."""

    # -- scopes --------------------------------------------------------------------------------
    @property
    def accepted_scopes(self) -> Tuple[str, ...]:
        """The scopes any one of which lets the key read this stream."""
        return (self.scope,)

    def probe_request(self, part: ProjectRead) -> Tuple[str, str, Mapping[str, Any], Optional[Mapping[str, Any]]]:
        """(method, url, params, JSON body) of the cheapest request that proves the key may read this stream."""
        return "GET", part.url(f"{self.resource}/"), {"limit": 1}, None

    def probe(self, part: ProjectRead) -> None:
        method, url, params, body = self.probe_request(part)
        part.client.send(method, url, params=params, json=body)

    def missing_scope(self) -> Optional[str]:
        """One cheap request: None if the key can read this stream, else the message naming the
        scope it lacks. PostHog checks a key's scopes per endpoint before anything else, so a 403
        here is exactly what a sync of this stream would meet."""
        try:
            self.probe(ProjectRead(self, self.config.project_id, incremental=False))
        except ClientError as refused:
            if refused.missing_scope:
                return refused.message
            raise
        return None


def projects_failed(stream: str, failures: Sequence[Tuple[int, AirbyteTracedException]], projects: int) -> AirbyteTracedException:
    """The stream's error after its last project: the one error as it was with one project; with
    several, each project that did not sync and why, typed as the most actionable of them
    (config_error before system_error before transient_error: a sync that can only succeed
    after the user acts must say so; one that will succeed on retry must not say it cannot)."""
    if len(failures) == 1 and projects == 1:
        return failures[0][1]
    parts = "; ".join(f"project {project}: {error.message}" for project, error in failures)
    message = (
        f"Stream {stream} did not sync for {len(failures)} of {projects} projects ({parts}). The other projects synced and "
        "checkpointed; the next sync resumes every project from its last state."
    )
    return AirbyteTracedException(message=message, internal_message=message, failure_type=most_actionable(error.failure_type for _, error in failures))


ACTIONABLE_ORDER = (FailureType.config_error, FailureType.system_error, FailureType.transient_error)


def most_actionable(types: Iterable[Optional[FailureType]]) -> FailureType:
    seen = {failure_type or FailureType.system_error for failure_type in types}
    return next((failure_type for failure_type in ACTIONABLE_ORDER if failure_type in seen), FailureType.system_error)


class PagedList(PostHogStream, ABC):
    """A REST list: follow PostHog's absolute `next` URL until it is null, in one or more passes.

    A page shorter than `limit` is not the end (persons can return short pages with a `next`);
    only a missing `next` is. The `next` URL is re-based onto the configured host: a self-hosted
    PostHog behind a TLS proxy builds `http://internal-host/...` links, and the key must never be
    sent anywhere but the configured host.

    Passes: a list PostHog serves one part at a time (property types, group types, archived or
    not) declares `passes`; each pass's parameters go on its first page (`next` carries them after).
    State: `{"next": path}` while a pass is read (`"pass"` names it when there are several), then
    `{"__ab_full_refresh_sync_complete": true}`.
    """

    bare_list: bool = False  # the endpoint answers a bare JSON array (envelopes.decode_body)

    def passes(self, part: ProjectRead) -> Sequence[Mapping[str, Any]]:
        return ({},)

    def pass_params(self, one_pass: Mapping[str, Any]) -> Mapping[str, Any]:
        return one_pass

    def first_page_params(self, one_pass: Mapping[str, Any]) -> Dict[str, Any]:
        params: Dict[str, Any] = {"limit": self.page_size} if self.page_size else {}
        params.update(self.pass_params(one_pass))
        return params

    def records(self, body: Mapping[str, Any], one_pass: Mapping[str, Any]) -> Iterable[Dict[str, Any]]:
        return body["results"]

    def read_project(self, part: ProjectRead) -> Iterator[AirbyteMessage]:
        passes = list(self.passes(part))
        if not passes:  # a project without group types: nothing to read
            yield part.checkpoint(FULL_REFRESH_COMPLETE)
            return
        start, resume = self._resume_point(part, passes)
        for index in range(start, len(passes)):
            one_pass = passes[index]
            url, params = (f"{self.config.base_url}{resume}", {}) if resume else (part.url(f"{self.resource}/"), self.first_page_params(one_pass))
            resume = None
            for body, path in part.pages(url, params, self.bare_list):
                for item in self.records(body, one_pass):
                    yield part.record(item)
                yield part.checkpoint(self._position(passes, index, path))

    def _position(self, passes: Sequence[Mapping[str, Any]], index: int, path: Optional[str]) -> Mapping[str, Any]:
        if path is None and index + 1 == len(passes):
            return FULL_REFRESH_COMPLETE
        if path is None:
            index, path = index + 1, None
        position: Dict[str, Any] = {"next": path}
        if len(passes) > 1:
            position["pass"] = dict(passes[index])
        return position

    def _resume_point(self, part: ProjectRead, passes: Sequence[Mapping[str, Any]]) -> Tuple[int, Optional[str]]:
        """(pass index, next page path or None) to start from; a pass no longer offered (a group
        type removed) starts the list over."""
        if not part.resume:
            return 0, None
        saved = part.resume.get("pass")
        index = next((i for i, one_pass in enumerate(passes) if dict(one_pass) == saved), 0 if saved is None else None)
        if index is None:
            self.logger.info(f"Stream {self.name}, project {part.project_id}: the pass {saved} of the last checkpoint is no longer listed; reading from the first page.")
            return 0, None
        return index, part.resume.get("next")

    def trusted_state(self, project_id: int, value: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
        if value.get("next") is None and "pass" in value and value != FULL_REFRESH_COMPLETE:
            return value  # a pass's first page: nothing to check
        return super().trusted_state(project_id, value)


class IncrementalStream(PostHogStream, ABC):
    """A stream with a cursor: each project's state is parsed and checked by `parse_state`
    before the sync (a corrupt state, or a cursor in the future, is a config error then)."""

    def trusted_state(self, project_id: int, value: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
        if not isinstance(value, Mapping):
            raise StateError(self.name, f"expected an object, got {type(value).__name__}")
        if value == FULL_REFRESH_COMPLETE or value == NO_CURSOR_STATE:  # a client replaying a completed full refresh's state
            self.logger.info(f"Stream {self.name}, project {project_id}: the previous full refresh completed; reading it again from anchor_date.")
            return None
        if not value or not self.written_for_this_project(project_id, value):
            return None
        return self.parse_state(project_id, value)

    @abstractmethod
    def parse_state(self, project_id: int, value: Mapping[str, Any]) -> MutableMapping[str, Any]:
        """The canonical form of a project's incoming state (it carries `project_id`); raises
        StateError if it cannot be trusted, or if its cursor lies in the future."""


class ChangeTimeList(PagedList, ABC):
    """A REST list PostHog can order by a change time (insights `last_modified_at`, experiments and
    feature flags `updated_at`, docs/posthog-api.md § 20.5): full refresh reads it like any list;
    incremental reads only what changed since the cursor.

    Each pass of an incremental read starts with one page ordered newest first (`order=-<field>`,
    with the server's change-time filter where PostHog has one). Between two syncs the changes
    usually fit in that page: when it also holds an older item (or is the whole list), it is all
    there is to read. Otherwise (the first sync, or more changes than a page) the list is read in its
    default order, which PostHog keeps stable across pages (a client-chosen order has no tiebreak,
    so offset pages could skip rows that share a change time), keeping what changed since the
    cursor. The next cursor is the newest change seen in the first pages, read before anything
    else: an item that changes during the read has a later change time, and the next sync reads it.
    Items that tie with the cursor are read again (the same `id`: destinations deduplicate).

    A field that stays null until the first edit (feature flags' `updated_at`) falls back to
    `fallback_field` (their `created_at`); such a list also reads its newest created items first.
    Deleted items leave the list: incremental reads do not see deletions (the activity log does).
    """

    change_field: str = ""
    fallback_field: Optional[str] = None
    since_param: Optional[str] = None  # a strict `>` filter on the change field (insights: date_from)

    @property
    def cursor_field(self) -> str:  # type: ignore[override]
        return self.change_field

    def changed_at(self, item: Mapping[str, Any]) -> Optional[datetime]:
        value = item.get(self.change_field) or (item.get(self.fallback_field) if self.fallback_field else None)
        return parse_timestamp(value) if value else None

    def trusted_state(self, project_id: int, value: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
        if self.change_field not in value:
            return super().trusted_state(project_id, value)  # a full refresh's checkpoint
        if not self.written_for_this_project(project_id, value):
            return None
        cursor = not_in_future(self.name, self.change_field, state_timestamp(value, self.change_field, self.name))
        return {self.change_field: utc_iso(cursor), "project_id": project_id}

    def read_project(self, part: ProjectRead) -> Iterator[AirbyteMessage]:
        if not part.incremental:
            yield from super().read_project(part)
            return
        since = parse_timestamp(part.resume[self.change_field]) if part.resume and self.change_field in part.resume else None
        newest = since
        for one_pass in self.passes(part):
            emitted: set = set()
            first_pages, complete = self._newest_first(part, one_pass, since)
            for page in first_pages:
                for item in page:
                    changed = self.changed_at(item)
                    newest = changed if changed is not None and (newest is None or changed > newest) else newest
            if since is not None and complete:
                items: Iterable[Mapping[str, Any]] = (item for page in first_pages for item in page)
            else:
                items = (item for body, _ in part.pages(part.url(f"{self.resource}/"), self.first_page_params(one_pass)) for item in self.records(body, one_pass))
            for item in items:
                changed = self.changed_at(item)
                if item.get("id") in emitted or (since is not None and (changed is None or changed < since)):
                    continue
                emitted.add(item.get("id"))
                yield part.record(dict(item))
        if newest is not None:
            yield part.checkpoint({self.change_field: utc_iso(newest), "project_id": part.project_id})

    def _newest_first(self, part: ProjectRead, one_pass: Mapping[str, Any], since: Optional[datetime]) -> Tuple[List[List[Mapping[str, Any]]], bool]:
        """The newest-first page of the pass (and, for a nullable change field, its newest-created
        page), and whether they hold every change since `since`."""
        orders = [self.change_field] + ([self.fallback_field] if self.fallback_field else [])
        pages, complete = [], True
        for field_name in orders:
            params = {**self.first_page_params(one_pass), "order": f"-{field_name}"}
            if self.since_param and since is not None and field_name == self.change_field:
                params[self.since_param] = utc_iso(since - timedelta(seconds=1))  # strict `>`, and not finer than seconds
            body = part.get_body(part.url(f"{self.resource}/"), params)
            page = list(self.records(body, one_pass))
            pages.append(page)
            values = [parse_timestamp(item[field_name]) for item in page if item.get(field_name)]
            complete = complete and (envelopes.next_path(body) is None or (since is not None and any(value < since for value in values)))
        return pages, complete
