"""`persons`: HogQL keyset pages on `id`, with the REST list as the fallback.

Why not `GET /persons/`: it is an ActorsQuery paged by offset, 1000 at a time under the analytics
rate limit (240/min, 1200/h); at scale users report incomplete reads and waits of ~2200 s, and
PostHog points integrators to queries (docs/posthog-api.md § 3.2, § 11.3). Instead each page is:

1. `SELECT id, created_at, properties, is_identified, last_seen_at FROM persons WHERE id > {after}
   ORDER BY id LIMIT N` (`persons` is an argMax view over `raw_persons`, ordered by (team_id, id):
   the WHERE on `id` is pushed into the raw table, § 11.3);
2. the distinct ids of exactly that id range, from `person_distinct_ids`, with their own keyset on
   (person_id, distinct_id), repeated while a request comes back full (a person can have thousands);
3. both merged, the persons emitted in id order, and `{"after": <last id>}` checkpointed.

Records have the REST list's shape: `id` (the person UUID), `uuid` (== id), `distinct_ids`,
`properties` (an object), `is_identified`, `created_at`, and `last_seen_at` where PostHog has it
(newer versions only: a 400 naming it drops the column for the rest of the sync). The REST-only
fields `type`, `name` (a display name built from team settings), `matched_recordings` and
`value_at_data_point` are not emitted in either mode.

A key without `query:read` (PostHog's introspection says so, or `/query/` answers 403 naming it)
reads the REST list instead, with one WARN line saying so. Both modes are resumable full refresh:
the CDK checkpoints the page token after every page (`{"after": id, "project_id": …}` or the REST
list's `{"next": path}`), and a killed sync resumes from it.
"""

from __future__ import annotations

import time
import uuid as uuid_module
from collections import defaultdict
from typing import Any, Dict, Iterable, List, Mapping, MutableMapping, Optional, Tuple

import orjson
import requests
from airbyte_cdk.models import AirbyteMessage, AirbyteRecordMessage, SyncMode, Type
from airbyte_cdk.sources.streams.checkpoint import ResumableFullRefreshCursor
from airbyte_cdk.sources.streams.checkpoint.checkpoint_reader import FULL_REFRESH_COMPLETE_STATE
from airbyte_cdk.sources.types import StreamSlice

from source_posthog import settings
from source_posthog.http import ClientError, PostHogClient, RetriesExhausted, where
from source_posthog.api import envelopes, scopes
from source_posthog.api.envelopes import MalformedBody
from source_posthog.api.hogql import PERSON_LAST_SEEN_COLUMN, person_distinct_ids_query, persons_page_query, query_body
from source_posthog.api.timestamps import to_utc_iso
from source_posthog.state import StateError, require_mapping
from source_posthog.streams.base import PostHogStream, malformed_response

QUERY_SCOPE = "query:read"
REST_SCOPE = "person:read"
FIELDS = ("id", "uuid", "distinct_ids", "properties", "is_identified", "created_at", "last_seen_at")


class Persons(PostHogStream):
    resource = "persons"
    scope = QUERY_SCOPE
    page_size = settings.PERSONS_PAGE_SIZE  # the REST list's

    def __init__(self, *args: Any, **kwargs: Any):
        self._rest: Optional[bool] = None  # None until the first page of a sync decides it
        super().__init__(*args, **kwargs)
        self.cursor = ResumableFullRefreshCursor()  # the page token is the state, checkpointed per page
        self.query_page_size = settings.PERSONS_QUERY_PAGE_SIZE
        self.distinct_ids_page_size = settings.PERSONS_DISTINCT_IDS_PAGE_SIZE
        self._last_seen_at = True
        self._emitted = False
        self._client: Optional[PostHogClient] = None
        self._after: Optional[str] = None  # the HogQL page being read starts after this id (None: the first)
        self._page_end: Optional[Tuple[str, bool]] = None  # (last id, page was full) of the HogQL page just read

    @property
    def accepted_scopes(self) -> Tuple[str, ...]:
        """Either scope reads persons: `query:read` the fast way, `person:read` the REST list."""
        return (QUERY_SCOPE, REST_SCOPE)

    @property
    def http_method(self) -> str:
        return "GET" if self._rest else "POST"

    # -- which way: HogQL unless the key cannot query ------------------------------------------
    def read_records(
        self,
        sync_mode: SyncMode,
        cursor_field: Optional[List[str]] = None,
        stream_slice: Optional[Mapping[str, Any]] = None,
        stream_state: Optional[Mapping[str, Any]] = None,
    ) -> Iterable[Any]:
        token = self._extract_slice_fields(stream_slice)[1]
        self._after = token.get("after")
        if "next" in token:
            self._rest = True  # resuming a sync that read the REST list
        elif "after" in token:
            self._rest = False
        elif self._rest is None:
            self._rest = self._key_lacks_query_scope()
        while True:
            try:
                yield from super().read_records(sync_mode, cursor_field, stream_slice, stream_state)
                return
            except ClientError as refused:
                if self._rest or self._emitted:
                    raise
                if refused.missing_scope and QUERY_SCOPE in refused.message:
                    self._use_rest_list(f"/query/ answered 403 for the missing '{QUERY_SCOPE}' scope")
                    stream_slice, self._after = StreamSlice(partition={}, cursor_slice={}), None  # the REST list from its first page
                elif refused.status == 400 and self._last_seen_at and PERSON_LAST_SEEN_COLUMN in refused.message:
                    self._last_seen_at = False
                    self.logger.info(f"Stream persons: this PostHog has no persons.{PERSON_LAST_SEEN_COLUMN} in HogQL; the field is left out.")
                else:
                    raise

    def _key_lacks_query_scope(self) -> bool:
        """True when PostHog says the key has `person:read` but not `query:read` (one request,
        no scope needed, docs/posthog-api.md § 12.1). Unknown (older or self-hosted PostHog): HogQL
        is tried, and a 403 naming `query:read` switches to the REST list then."""
        config = self.config
        client = PostHogClient("persons", "", config.api_key, config.project_id, config.base_url, self.api_budget, min(config.request_timeout_seconds, 30))
        try:
            _, body = client.get(f"{config.base_url}{scopes.CURRENT_KEY_PATH}")
            granted = scopes.granted_scopes(orjson.loads(body))
        except (ClientError, RetriesExhausted, orjson.JSONDecodeError):
            return False
        if granted is None or scopes.covers(granted, QUERY_SCOPE) or not scopes.covers(granted, REST_SCOPE):
            return False
        self._use_rest_list(f"the API key's scopes ({', '.join(granted)}) do not include '{QUERY_SCOPE}'")
        return True

    def _use_rest_list(self, why: str) -> None:
        self._rest = True
        self.logger.warning(
            f"Stream persons: {why}, so persons are read from the REST list (GET /api/projects/{self.config.project_id}/persons/, "
            f"offset pages of {self.page_size} under PostHog's analytics rate limit), which is much slower than HogQL keyset pages. "
            f"Give the personal API key the '{QUERY_SCOPE}' scope to read persons through HogQL."
        )

    # -- requests ------------------------------------------------------------------------------
    def path(self, next_page_token: Optional[Mapping[str, Any]] = None, **kwargs: Any) -> str:
        if not self._rest:
            return "query/"
        if next_page_token and "next" in next_page_token:
            return f"{self.config.base_url}{next_page_token['next']}"
        return f"{self.resource}/"

    def request_params(self, next_page_token: Optional[Mapping[str, Any]] = None, **kwargs: Any) -> MutableMapping[str, Any]:
        if not self._rest or next_page_token:
            return {}  # a query has no parameters; the REST `next` carries them all
        return {"limit": self.page_size}

    def request_body_json(self, next_page_token: Optional[Mapping[str, Any]] = None, **kwargs: Any) -> Optional[Mapping[str, Any]]:
        if self._rest:
            return None
        after = next_page_token.get("after") if next_page_token else None
        return self._query_body(persons_page_query(after, self.query_page_size, self._last_seen_at), "airbyte_source_posthog_persons")

    @staticmethod
    def _query_body(text: str, name: str) -> Mapping[str, Any]:
        return query_body(text, name)

    def next_page_token(self, response: requests.Response) -> Optional[Mapping[str, Any]]:
        if self._rest:
            try:
                path = envelopes.next_path(self.decode(response))
            except MalformedBody as error:
                raise malformed_response(where(response), str(error))
            return {"next": path} if path else None
        if self._page_end is None or not self._page_end[1]:
            return None  # a short page is the last one
        return {"after": self._page_end[0], "project_id": self.config.project_id}

    # -- responses -----------------------------------------------------------------------------
    def parse_response(self, response: requests.Response, stream_slice: Optional[Mapping[str, Any]] = None, **kwargs: Any) -> Iterable[Any]:
        emitted_at = int(time.time() * 1000)
        records = self._rest_records(response) if self._rest else self._query_records(response, self._after)
        for record in records:
            self._emitted = True
            yield AirbyteMessage(type=Type.RECORD, record=AirbyteRecordMessage(stream=self.name, data=record, emitted_at=emitted_at))

    def _rest_records(self, response: requests.Response) -> Iterable[Dict[str, Any]]:
        for item in self.decode(response)["results"]:
            yield self._shaped(item, where(response))

    def _query_records(self, response: requests.Response, after: Optional[str]) -> List[Dict[str, Any]]:
        place = where(response)
        body = self.decode(response, item_type=list)
        columns = body.get("columns") or []
        missing = [name for name in ("id", "created_at", "properties", "is_identified") if name not in columns]
        if missing:
            raise malformed_response(place, f"the persons query result has no {', '.join(missing)} column")
        persons = []
        for row in body["results"]:
            if len(row) != len(columns):
                raise malformed_response(place, f"a persons row has {len(row)} values for {len(columns)} columns")
            person = dict(zip(columns, row))
            person["uuid"] = person["id"]
            persons.append(person)
        self._page_end = (self._checked_id(persons[-1].get("id"), place), len(persons) >= self.query_page_size) if persons else None
        if not persons:
            return []
        if self._page_end[0] == after:  # a server that ignored the keyset would loop forever
            raise malformed_response(place, f"the persons page did not move past id {after}")
        distinct_ids = self._distinct_ids(after, self._page_end[0])
        records = []
        for person in persons:
            person["distinct_ids"] = distinct_ids.get(str(person["id"]).lower(), [])
            records.append(self._shaped(person, place))
        return records

    def _distinct_ids(self, after: Optional[str], through: str) -> Dict[str, List[str]]:
        """person id → its distinct ids, for the persons in (after, through]: as many requests as it takes."""
        found: Dict[str, List[str]] = defaultdict(list)
        resume: Optional[Tuple[str, str]] = None
        while True:
            text = person_distinct_ids_query(after, through, self.distinct_ids_page_size, resume)
            response, content = self._query_client().send("POST", f"{self.url_base}query/", json=self._query_body(text, "airbyte_source_posthog_person_distinct_ids"))
            place = where(response)
            try:
                body = envelopes.decode_body(content, item_type=list)
            except MalformedBody as error:
                raise malformed_response(place, str(error))
            columns = body.get("columns") or []
            if "person_id" not in columns or "distinct_id" not in columns:
                raise malformed_response(place, "the distinct ids query result has no person_id or distinct_id column")
            person_at, distinct_at = columns.index("person_id"), columns.index("distinct_id")
            rows = body["results"]
            for row in rows:
                try:
                    person_id, distinct_id = str(row[person_at]).lower(), row[distinct_at]
                except IndexError:
                    raise malformed_response(place, f"a distinct ids row has {len(row)} values for {len(columns)} columns")
                if not isinstance(distinct_id, str):
                    raise malformed_response(place, f"a distinct_id is a {type(distinct_id).__name__}, not a string")
                found[person_id].append(distinct_id)
            if len(rows) < self.distinct_ids_page_size:
                return found
            following = (self._checked_id(rows[-1][person_at], place), rows[-1][distinct_at])
            if following == resume:  # a server that ignored the keyset would loop forever
                raise malformed_response(place, f"the distinct ids did not move past ({following[0]}, {following[1][:40]!r})")
            resume = following

    def _query_client(self) -> PostHogClient:
        if self._client is None:
            config = self.config
            self._client = PostHogClient(self.name, self.scope, config.api_key, config.project_id, config.base_url, self.api_budget, config.request_timeout_seconds)
        return self._client

    @staticmethod
    def _checked_id(value: Any, place: str) -> str:
        try:
            return str(uuid_module.UUID(str(value)))
        except ValueError:
            raise malformed_response(place, f"a person id is {str(value)[:40]!r}, not a UUID")

    @staticmethod
    def _shaped(person: Mapping[str, Any], place: str) -> Dict[str, Any]:
        """The record both modes emit (FIELDS): properties an object, timestamps UTC ISO-8601."""
        record = {name: person.get(name) for name in FIELDS}
        record["uuid"] = record["uuid"] or record["id"]
        try:
            properties = record["properties"]
            if isinstance(properties, (str, bytes)):
                record["properties"] = orjson.loads(properties) if properties else {}
            for name in ("created_at", "last_seen_at"):
                if record[name]:
                    record[name] = to_utc_iso(str(record[name]))
        except (orjson.JSONDecodeError, ValueError, TypeError) as error:
            raise malformed_response(place, f"person {str(record['id'])[:40]} cannot be read ({type(error).__name__}: {error})")
        if record["is_identified"] is not None:
            record["is_identified"] = bool(record["is_identified"])
        if not isinstance(record["distinct_ids"], list):
            raise malformed_response(place, f"person {str(record['id'])[:40]} has distinct_ids of type {type(record['distinct_ids']).__name__}")
        return record

    # -- scopes and state ----------------------------------------------------------------------
    def missing_scope(self) -> Optional[str]:
        """None if the key can read persons either way; else the message naming both scopes."""
        config = self.config
        client = PostHogClient(self.name, self.scope, config.api_key, config.project_id, config.base_url, self.api_budget, config.request_timeout_seconds)
        refusals = []
        for method, url, params, body in (
            ("POST", f"{self.url_base}query/", {}, self.probe_body()),
            ("GET", f"{self.url_base}{self.resource}/", {"limit": 1}, None),
        ):
            try:
                client.send(method, url, params=params, json=body)
                return None
            except ClientError as refused:
                if not refused.missing_scope:
                    raise
                refusals.append(refused.message)
        return (
            f"the API key has neither the '{QUERY_SCOPE}' scope (persons through HogQL) nor '{REST_SCOPE}' (the REST list). "
            f"Give it '{QUERY_SCOPE}' to sync persons. ({refusals[-1]})"
        )

    def probe_body(self) -> Optional[Mapping[str, Any]]:
        return self._query_body(persons_page_query(None, 1, last_seen_at=False), "airbyte_source_posthog_scope_check")

    def incoming_state(self, value: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
        """A HogQL checkpoint (`{"after": id, "project_id": …}`), a REST one (`{"next": path}`), or
        the completed state (read everything again). A checkpoint of another project is dropped."""
        value = require_mapping(value, self.name)
        if "after" not in value or value == FULL_REFRESH_COMPLETE_STATE:
            return super().incoming_state(value)
        written_for = value.get("project_id")
        if written_for is not None and written_for != self.config.project_id:
            self.logger.warning(f"Stream persons: the checkpoint was written for project {written_for}, not project {self.config.project_id}; reading persons from the first page.")
            return None
        try:
            uuid_module.UUID(str(value["after"]))
        except ValueError:
            raise StateError(self.name, f"'after' = {str(value['after'])[:40]!r} is not a person id (a UUID)")
        return value
