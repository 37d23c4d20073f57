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

Two readers, chosen once before the first page (`Persons.reader_for`): `PersonsOverHogQL`, and
`PersonsRestList` for a key without `query:read` (PostHog's description of the key says so, or a
one-row query answers 403 naming it), with one WARN line saying so. Both checkpoint after every
page (`{"after": id, "project_id": …}` or the REST list's `{"next": path}`), and a killed sync
resumes from it with the same reader.

With `export_mode: file_download` persons are incremental (`streams/exported.py`): PostHog's persons
exports by change time, one line per distinct id, grouped here per person
(`exports.person_record`): every distinct id a person has now, so they follow a merge, and
`_ab_cdc_deleted_at` set for a deleted person, so deduplicating destinations drop it. The cursor
is `changed_at`. A merged-away person has no line in PostHog's export (its distinct ids appear
under the survivor, moved): it is delivered as a deletion when its id is the one PostHog's
ingestion derives from one of those distinct ids (`exports.merged_away`), as for every person
ingestion creates; a person created through the API with another id is not named anywhere.
"""

from __future__ import annotations

import uuid as uuid_module
from collections import defaultdict
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import orjson
from airbyte_cdk.models import AirbyteMessage

from source_posthog import settings
from source_posthog.api import exports, scopes
from source_posthog.api.timestamps import parse_timestamp
from source_posthog.api.hogql import PERSON_LAST_SEEN_COLUMN, person_distinct_ids_query, persons_count_query, persons_page_query, query_body
from source_posthog.api.timestamps import to_utc_iso
from source_posthog.cdk_internals import FULL_REFRESH_COMPLETE
from source_posthog.http import ClientError, RetriesExhausted
from source_posthog.state import StateError, require_mapping
from source_posthog.streams.base import PostHogStream, ProjectRead, malformed_response
from source_posthog.streams.exported import ExportedStream, deliver_persons

QUERY_SCOPE = "query:read"
REST_SCOPE = "person:read"
FIELDS = ("id", "uuid", "distinct_ids", "properties", "is_identified", "created_at", "last_seen_at")


EXPORT_CURSOR = "changed_at"


class Persons(ExportedStream, PostHogStream):
    resource = "persons"
    scope = QUERY_SCOPE
    export_model = "persons"

    @property
    def cursor_field(self) -> Any:  # type: ignore[override]
        """Incremental through exports only: HogQL exposes no change time of persons (docs/posthog-api.md § 20.3)."""
        return EXPORT_CURSOR if self.config.exports else []

    # -- export_mode file_download (streams/exported.py) -----------------------------------------
    def export_deliver(self, reader: Any, window: Any, run: Any) -> Iterator[AirbyteMessage]:
        yield from deliver_persons(reader, window, run)

    def export_floor(self, part: ProjectRead) -> Any:
        """Persons changed last long before anchor_date are persons all the same: a first read
        starts when the project was created (its `created_at`), or at anchor_date if that is earlier."""
        try:
            _, body = part.client.get(part.project_url)
            created = parse_timestamp(orjson.loads(body)["created_at"])
        except (ClientError, RetriesExhausted, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            self.logger.warning(
                f"Stream persons, project {part.project_id}: the project's created_at cannot be read ({type(error).__name__}); "
                f"persons exports start at anchor_date, so persons last changed before it are not read."
            )
            return self.config.anchor_date
        return min(created.start_of("day"), self.config.anchor_date)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._rest_only: Optional[bool] = None  # the key's scopes are the same for every project: decided once

    @property
    def accepted_scopes(self) -> Tuple[str, ...]:
        """Either scope reads persons: `query:read` the fast way, `person:read` the REST list."""
        return (QUERY_SCOPE, REST_SCOPE)

    def read_over_hogql(self, part: ProjectRead) -> Iterator[AirbyteMessage]:
        yield from self.reader_for(part).read(part)

    def reader_for(self, part: ProjectRead) -> "PersonsOverHogQL | PersonsRestList":
        """The reader a checkpoint was written by, else HogQL unless the key cannot query."""
        if part.resume and "next" in part.resume:
            return PersonsRestList(self)
        if part.resume and "after" in part.resume:
            return PersonsOverHogQL(self)
        if self._rest_only is None:
            self._rest_only = self._key_cannot_query(part)
        return PersonsRestList(self) if self._rest_only else PersonsOverHogQL(self)

    def _key_cannot_query(self, part: ProjectRead) -> bool:
        """PostHog's description of the key (one request, no scope needed, docs/posthog-api.md § 12.1);
        where a server cannot describe it (older or self-hosted versions), a one-row query."""
        granted = part.key_scopes()
        if granted is not None:
            if scopes.covers(granted, QUERY_SCOPE) or not scopes.covers(granted, REST_SCOPE):
                return False
            why = f"the API key's scopes ({', '.join(granted)}) do not include '{QUERY_SCOPE}'"
        else:
            try:
                self.probe(part)
                return False
            except ClientError as refused:
                if not (refused.missing_scope and QUERY_SCOPE in refused.message):
                    raise
            why = f"/query/ answered 403 for the missing '{QUERY_SCOPE}' scope"
        self.logger.warning(
            f"Stream persons: {why}, so persons are read from the REST list (GET /api/projects/{part.project_id}/persons/, "
            f"offset pages of {settings.PERSONS_PAGE_SIZE} under PostHog's analytics rate limit), which is much slower than HogQL keyset pages. "
            f"Give the personal API key the '{QUERY_SCOPE}' scope to read persons through HogQL."
        )
        return True

    # -- scopes and state ----------------------------------------------------------------------
    def probe_request(self, part: ProjectRead) -> Tuple[str, str, Mapping[str, Any], Optional[Mapping[str, Any]]]:
        text = persons_page_query(None, 1, last_seen_at=False)
        return "POST", part.url("query/"), {}, query_body(text, "airbyte_source_posthog_scope_check")

    def missing_scope(self) -> Optional[str]:
        """None if the key can read persons either way; else the message naming both scopes."""
        part = ProjectRead(self, self.config.project_id, incremental=False)
        refusals = []
        for probe in (self.probe, lambda part: part.client.get(part.url(f"{self.resource}/"), {"limit": 1})):
            try:
                probe(part)
                return None
            except ClientError as refused:
                if not refused.missing_scope:
                    raise
                refusals.append(refused.message)
        return (
            f"the API key has neither the '{QUERY_SCOPE}' scope (persons through HogQL) nor '{REST_SCOPE}' (the REST list). "
            f"Give it '{QUERY_SCOPE}' to sync persons. ({refusals[-1]})"
        )

    def trusted_state(self, project_id: int, value: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
        """A HogQL checkpoint (`{"after": id, "project_id": …}`), a REST one (`{"next": path}`), or
        the completed state (read everything again). A checkpoint of another project is dropped."""
        value = require_mapping(value, self.name)
        if exports.STATE_MARK in value or "after" not in value or value == FULL_REFRESH_COMPLETE:
            return super().trusted_state(project_id, value)
        written_for = value.get("project_id")
        if written_for is not None and written_for != project_id:
            self.logger.warning(f"Stream persons: the checkpoint was written for project {written_for}, not project {project_id}; reading persons from the first page.")
            return None
        try:
            uuid_module.UUID(str(value["after"]))
        except ValueError:
            raise StateError(self.name, f"'after' = {str(value['after'])[:40]!r} is not a person id (a UUID)")
        return value


class PersonsOverHogQL:
    """Keyset pages of `persons` on `id`, each with the distinct ids of exactly that id range."""

    def __init__(self, stream: Persons):
        self.stream = stream
        self.page_size = settings.PERSONS_QUERY_PAGE_SIZE
        self.distinct_ids_page_size = settings.PERSONS_DISTINCT_IDS_PAGE_SIZE
        self.last_seen_at = True  # newer PostHog only: a 400 naming it drops the column

    def read(self, part: ProjectRead) -> Iterator[AirbyteMessage]:
        after: Optional[str] = part.resume.get("after") if part.resume else None
        yield from part.estimate(self._count(part, after))
        while True:
            body, place = self._page(part, after)
            persons = self._persons(body, place)
            if not persons:
                yield part.checkpoint(FULL_REFRESH_COMPLETE)
                return
            last = _checked_id(persons[-1]["id"], place)
            if last == after:  # a server that ignored the keyset would loop forever
                raise malformed_response(place, f"the persons page did not move past id {after}")
            distinct_ids = self._distinct_ids(part, after, last)
            for person in persons:
                person["distinct_ids"] = distinct_ids.get(str(person["id"]).lower(), [])
                yield part.record(shaped(person, place))
            if len(persons) < self.page_size:
                yield part.checkpoint(FULL_REFRESH_COMPLETE)  # a short page is the last one
                return
            after = last
            yield part.checkpoint({"after": after, "project_id": part.project_id})

    @staticmethod
    def _count(part: ProjectRead, after: Optional[str]) -> int:
        body, place = part.query(persons_count_query(after), "airbyte_source_posthog_persons_count")
        try:
            (row,) = body["results"]
            return int(row[0])
        except (ValueError, TypeError, IndexError) as error:
            raise malformed_response(place, f"the persons count cannot be read ({type(error).__name__}: {error})")

    def _page(self, part: ProjectRead, after: Optional[str]) -> Tuple[Dict[str, Any], str]:
        while True:
            try:
                return part.query(persons_page_query(after, self.page_size, self.last_seen_at), "airbyte_source_posthog_persons")
            except ClientError as refused:
                if refused.status == 400 and self.last_seen_at and PERSON_LAST_SEEN_COLUMN in refused.message:
                    self.last_seen_at = False
                    self.stream.logger.info(f"Stream persons: this PostHog has no persons.{PERSON_LAST_SEEN_COLUMN} in HogQL; the field is left out.")
                    continue
                raise

    @staticmethod
    def _persons(body: Mapping[str, Any], place: str) -> List[Dict[str, Any]]:
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
        return persons

    def _distinct_ids(self, part: ProjectRead, after: Optional[str], through: str) -> Dict[str, List[str]]:
        """person id → its distinct ids, for the persons in (after, through]: as many requests as it takes."""
        found: Dict[str, List[str]] = defaultdict(list)
        resume: Optional[Tuple[str, str]] = None
        while True:
            text = person_distinct_ids_query(after, through, self.distinct_ids_page_size, resume)
            body, place = part.query(text, "airbyte_source_posthog_person_distinct_ids", ("person_id", "distinct_id"))
            columns = body["columns"]
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
            following = (_checked_id(rows[-1][person_at], place), rows[-1][distinct_at])
            if following == resume:  # a server that ignored the keyset would loop forever
                raise malformed_response(place, f"the distinct ids did not move past ({following[0]}, {following[1][:40]!r})")
            resume = following


class PersonsRestList:
    """`GET persons/`: PostHog's offset-paged ActorsQuery, followed by its `next` (the fallback)."""

    def __init__(self, stream: Persons):
        self.stream = stream

    def read(self, part: ProjectRead) -> Iterator[AirbyteMessage]:
        resume = part.resume.get("next") if part.resume else None
        url, params = (f"{part.config.base_url}{resume}", {}) if resume else (part.url("persons/"), {"limit": settings.PERSONS_PAGE_SIZE})
        for body, path in part.pages(url, params):
            place = f"GET /api/projects/{part.project_id}/persons/"
            for item in body["results"]:
                yield part.record(shaped(item, place))
            yield part.checkpoint({"next": path} if path else FULL_REFRESH_COMPLETE)


def _checked_id(value: Any, place: str) -> str:
    try:
        return str(uuid_module.UUID(str(value)))
    except ValueError:
        raise malformed_response(place, f"a person id is {str(value)[:40]!r}, not a UUID")


def shaped(person: Mapping[str, Any], place: str) -> Dict[str, Any]:
    """The record both readers emit (FIELDS): properties an object, timestamps UTC ISO-8601."""
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
