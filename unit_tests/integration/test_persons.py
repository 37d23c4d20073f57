"""persons: HogQL keyset pages on `id`, their distinct ids from `person_distinct_ids`, and the REST
list as the fallback for a key without `query:read` (source_posthog/streams/persons.py).

`/query/` is served by `FakePersonsQuery`, which parses the two query shapes the stream may send
and evaluates them over an in-memory set of persons (order by id, strict lower bound, LIMIT), in
PostHog's response shape (docs/posthog-api.md § 4.2: rows as arrays, `properties` a JSON string).
Anything else is a 400 recorded in `rejected`. Nothing replays canned pages, so "every person once,
with all its distinct ids" is checked against the data whatever pages the stream chooses.
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Optional

import pytest
from airbyte_cdk.models import FailureType

from source_posthog import settings
from unit_tests.builders import API_KEY, BASE_URL, PROJECT_URL, PostHogResponse, load_template, person_uuid, record
from unit_tests.reader import config_errors, errors, everything_emitted, final_state, read_stream, records, states
from unit_tests.support.clickhouse import uuid_order
from unit_tests.support.hogql_parser import parse_error

QUERY_URL = f"{PROJECT_URL}/query/"
PERSONS_URL = f"{PROJECT_URL}/persons/"
CURRENT_KEY_URL = f"{BASE_URL}/api/personal_api_keys/@current/"
_UUID = r"toUUID\('(?P<{}>[0-9a-f-]{{36}})'\)"
_PERSONS = re.compile(
    r"^SELECT (?P<columns>[a-z_, ]+) FROM persons(?: WHERE id > " + _UUID.format("after") + r")? ORDER BY id ASC LIMIT (?P<limit>\d+)$"
)
_PERSONS_COUNT = re.compile(r"SELECT count\(\) AS persons FROM persons(?: WHERE id > " + _UUID.format("after") + r")?")
_DISTINCT_IDS = re.compile(
    r"^SELECT person_id, distinct_id FROM person_distinct_ids WHERE (?:person_id > " + _UUID.format("after") + r" AND )?"
    r"person_id <= " + _UUID.format("through")
    + r"(?: AND \(person_id > " + _UUID.format("rp") + r" OR \(person_id = " + _UUID.format("rp2")
    + r" AND distinct_id > '(?P<rd>(?:[^'\\]|\\.)*)'\)\))? ORDER BY person_id ASC, distinct_id ASC LIMIT (?P<limit>\d+)$"
)


def person(n: int, distinct_ids: int = 2, **fields: Any) -> Dict[str, Any]:
    return {
        "id": person_uuid(n),
        "created_at": f"2025-05-{1 + n % 28:02d}T10:00:00.000000Z",
        "properties": {"email": f"user{n}@example.com", "plan": "pro", "nested": {"n": n}},
        "is_identified": n % 2 == 0,
        "last_seen_at": "2025-05-30T08:12:00.000000Z",
        "distinct_ids": [f"user_{n}"] + [f"anon_{n}_{i:04d}" for i in range(distinct_ids - 1)],
        **fields,
    }


def expected(people: List[Dict[str, Any]], last_seen_at: bool = True) -> List[Dict[str, Any]]:
    """What the stream emits: the REST list's fields, properties an object, distinct ids by distinct_id."""
    out = []
    for p in sorted(people, key=lambda p: uuid_order(p["id"])):  # the server's order: ClickHouse's
        item = {"id": p["id"], "uuid": p["id"], "distinct_ids": sorted(p["distinct_ids"]), "properties": p["properties"],
                "is_identified": p["is_identified"], "created_at": p["created_at"]}
        if last_seen_at and p.get("last_seen_at"):
            item["last_seen_at"] = p["last_seen_at"]
        out.append(item)
    return out


class FakePersonsQuery:
    def __init__(self, people: List[Dict[str, Any]], has_last_seen_at: bool = True) -> None:
        self.people = sorted(people, key=lambda p: uuid_order(p["id"]))  # ClickHouse's order of UUIDs
        self.has_last_seen_at = has_last_seen_at
        self.queries: List[str] = []
        self.rejected: List[str] = []
        self.faults: List[Any] = []

    def register(self, requests_mock: Any) -> "FakePersonsQuery":
        requests_mock.post(QUERY_URL, json=self)
        return self

    def __call__(self, request: Any, context: Any) -> Any:
        body = json.loads(request.body)
        text = body["query"]["query"]
        self.queries.append(text)
        assert request.headers["Authorization"] == f"Bearer {API_KEY}"
        assert body["query"]["kind"] == "HogQLQuery" and body["refresh"] == "blocking" and body["name"].startswith("airbyte_source_posthog")
        response = load_template("query_events")
        error = parse_error(text)  # PostHog's own parser first
        if error:
            return self._reject(context, text, error)
        if match := _PERSONS_COUNT.fullmatch(text):  # the estimate (faults are for the pages)
            after = match["after"]
            count = sum(1 for p in self.people if after is None or uuid_order(p["id"]) > uuid_order(after))
            response.update(results=[[count]], columns=["persons"], types=[["persons", "UInt64"]], hasMore=False, query=text)
            return response
        if self.faults:
            status, payload = self.faults.pop(0)
            context.status_code = status
            return payload
        if match := _PERSONS.match(text):
            columns = [column.strip() for column in match["columns"].split(",")]
            if "last_seen_at" in columns and not self.has_last_seen_at:
                return self._reject(context, text, "Unable to resolve field: last_seen_at")
            after, limit = match["after"], int(match["limit"])
            page = [p for p in self.people if after is None or uuid_order(p["id"]) > uuid_order(after)][: min(limit, 50_000)]
            rows = [[json.dumps(p[c]) if c == "properties" else p[c] for c in columns] for p in page]
            types = {"id": "String", "created_at": "DateTime64(6, 'UTC')", "properties": "String", "is_identified": "Bool", "last_seen_at": "DateTime64(6, 'UTC')"}
            response.update(results=rows, columns=columns, types=[[c, types[c]] for c in columns], limit=limit, hasMore=False, query=text)
            return response
        if match := _DISTINCT_IDS.match(text):
            assert match["rp"] == match["rp2"]
            after, through, limit = match["after"], match["through"], int(match["limit"])
            ch = uuid_order  # person_id is a UUID: ClickHouse's order
            pairs = sorted(
                ((p["id"], d) for p in self.people if (after is None or ch(p["id"]) > ch(after)) and ch(p["id"]) <= ch(through) for d in p["distinct_ids"]),
                key=lambda pair: (ch(pair[0]), pair[1]),
            )
            if match["rp"]:
                resume = (ch(match["rp"]), match["rd"].replace("\\'", "'").replace("\\\\", "\\"))
                pairs = [pair for pair in pairs if (ch(pair[0]), pair[1]) > resume]
            response.update(results=[list(pair) for pair in pairs[:limit]], columns=["person_id", "distinct_id"],
                            types=[["person_id", "UUID"], ["distinct_id", "String"]], limit=limit, hasMore=False, query=text)
            return response
        return self._reject(context, text, f"unsupported query {text[:200]!r}")

    def _reject(self, context: Any, text: str, detail: str) -> Dict[str, Any]:
        self.rejected.append(text)
        context.status_code = 400
        return {"type": "validation_error", "code": "invalid_input", "detail": detail, "attr": None}

    @property
    def persons_queries(self) -> List[str]:
        return [q for q in self.queries if " FROM persons" in q and "count()" not in q]

    @property
    def count_queries(self) -> List[str]:
        return [q for q in self.queries if "count()" in q]

    @property
    def distinct_id_queries(self) -> List[str]:
        return [q for q in self.queries if " FROM person_distinct_ids" in q]


def current_key(requests_mock: Any, scopes: Optional[List[str]]) -> Any:
    """PostHog describing the calling key (§ 12.1); None: an older PostHog that answers 404."""
    if scopes is None:
        return requests_mock.get(CURRENT_KEY_URL, status_code=404, json=load_template("error_404"))
    return requests_mock.get(CURRENT_KEY_URL, json={"id": "k1", "scopes": scopes, "scoped_teams": [], "scoped_organizations": []})


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    """3 persons a page, 4 distinct ids a request: pages and distinct-id requests both repeat."""
    monkeypatch.setattr(settings, "PERSONS_QUERY_PAGE_SIZE", 3)
    monkeypatch.setattr(settings, "PERSONS_DISTINCT_IDS_PAGE_SIZE", 4)


def persons_of(output: Any) -> List[Dict[str, Any]]:
    """The emitted persons, without the `project_id` every record of the connector carries."""
    return [{key: value for key, value in r.items() if key != "project_id"} for r in records(output)]


def warnings_of(output: Any) -> List[str]:
    return [log.log.message for log in output.logs if log.log.level.value == "WARN"]


class TestKeysetPages:
    def test_given_seven_persons_and_pages_of_three_when_read_then_each_page_starts_after_the_last_id_and_every_person_is_emitted_once(
        self, requests_mock: Any, small_pages: None
    ) -> None:
        people = [person(n) for n in (5, 1, 7, 3, 2, 6, 4)]
        fake = FakePersonsQuery(people).register(requests_mock)
        current_key(requests_mock, ["*"])

        output = read_stream("persons")

        assert persons_of(output) == expected(people)
        assert fake.persons_queries == [
            "SELECT id, created_at, properties, is_identified, last_seen_at FROM persons ORDER BY id ASC LIMIT 3",
            f"SELECT id, created_at, properties, is_identified, last_seen_at FROM persons WHERE id > toUUID('{person_uuid(3)}') ORDER BY id ASC LIMIT 3",
            f"SELECT id, created_at, properties, is_identified, last_seen_at FROM persons WHERE id > toUUID('{person_uuid(6)}') ORDER BY id ASC LIMIT 3",
        ]
        # the distinct ids of exactly each page's id range
        assert fake.distinct_id_queries[0].startswith(f"SELECT person_id, distinct_id FROM person_distinct_ids WHERE person_id <= toUUID('{person_uuid(3)}')")
        assert f"WHERE person_id > toUUID('{person_uuid(3)}') AND person_id <= toUUID('{person_uuid(6)}')" in fake.distinct_id_queries[2]
        assert fake.rejected == [] and "OFFSET" not in " ".join(fake.queries).upper()

    def test_given_ids_whose_text_order_is_not_clickhouses_when_read_then_the_keyset_compares_only_on_the_server(
        self, requests_mock: Any, small_pages: None
    ) -> None:
        """Issue #17: ClickHouse orders UUIDs by their second half first. A connector that compared
        ids itself (a max() of text, a sort) would skip or repeat persons at page edges here."""
        people = [person(n) for n in range(1, 11)]
        assert sorted(p["id"] for p in people) != [p["id"] for p in sorted(people, key=lambda p: uuid_order(p["id"]))]
        FakePersonsQuery(people).register(requests_mock)
        current_key(requests_mock, ["*"])

        output = read_stream("persons")

        assert [p["id"] for p in persons_of(output)] == [p["id"] for p in sorted(people, key=lambda p: uuid_order(p["id"]))]
        assert [state.get("after") for state in states(output)][:-1] == [person_uuid(3), person_uuid(6), person_uuid(9)]

    def test_when_read_then_the_keyset_is_checkpointed_after_every_page(self, requests_mock: Any, small_pages: None) -> None:
        FakePersonsQuery([person(n) for n in range(1, 8)]).register(requests_mock)
        current_key(requests_mock, ["query:read"])

        output = read_stream("persons")

        assert states(output) == [
            {"after": person_uuid(3), "project_id": 2},
            {"after": person_uuid(6), "project_id": 2},
            {"__ab_full_refresh_sync_complete": True},
        ]
        assert final_state(output) == {"__ab_full_refresh_sync_complete": True}

    def test_given_a_full_last_page_when_read_then_one_more_query_finds_it_empty(self, requests_mock: Any, small_pages: None) -> None:
        fake = FakePersonsQuery([person(n) for n in range(1, 7)]).register(requests_mock)
        current_key(requests_mock, ["*"])

        output = read_stream("persons")

        assert len(records(output)) == 6
        assert len(fake.persons_queries) == 3 and len(fake.distinct_id_queries) == 4  # pages 1 and 2 need 2 requests each
        assert fake.persons_queries[-1].endswith(f"WHERE id > toUUID('{person_uuid(6)}') ORDER BY id ASC LIMIT 3")


class TestDistinctIds:
    def test_given_a_person_with_many_distinct_ids_when_read_then_they_span_several_requests_and_all_are_delivered(
        self, requests_mock: Any, small_pages: None
    ) -> None:
        people = [person(1), person(2, distinct_ids=11, ), person(3, distinct_ids=1)]
        people[1]["distinct_ids"].append("it's a \\quoted' id")  # the resume literal must be escaped
        fake = FakePersonsQuery(people).register(requests_mock)
        current_key(requests_mock, ["*"])

        output = read_stream("persons")

        assert persons_of(output) == expected(people)
        assert len(records(output)[1]["distinct_ids"]) == 12
        # 15 distinct ids, 4 a request: 4 requests, each resuming after the last (person_id, distinct_id) delivered
        assert len(fake.distinct_id_queries) == 4
        assert all(f"(person_id > toUUID('{person_uuid(2)}') OR (person_id = toUUID('{person_uuid(2)}') AND distinct_id > " in q
                   for q in fake.distinct_id_queries[1:3])
        assert fake.rejected == []

    def test_given_a_person_without_distinct_ids_when_read_then_its_list_is_empty(self, requests_mock: Any) -> None:
        people = [person(1), person(2, distinct_ids=2)]
        people[0]["distinct_ids"] = []
        FakePersonsQuery(people).register(requests_mock)
        current_key(requests_mock, ["*"])

        output = read_stream("persons")

        assert [r["distinct_ids"] for r in records(output)] == [[], sorted(people[1]["distinct_ids"])]


class TestRestFallback:
    def rest_pages(self, requests_mock: Any, count: int) -> Any:
        page = [record("persons", id=person_uuid(n), uuid=person_uuid(n), distinct_ids=[f"user_{n}"]) for n in range(1, count + 1)]
        return requests_mock.get(f"{PERSONS_URL}?limit={settings.PERSONS_PAGE_SIZE}", json={"next": None, "previous": None, "results": page})

    def test_given_query_answers_403_for_query_read_when_read_then_the_rest_list_is_read_and_one_warning_says_so(self, requests_mock: Any) -> None:
        current_key(requests_mock, None)  # PostHog cannot describe the key: HogQL is tried first
        refused = requests_mock.post(QUERY_URL, status_code=403, json=PostHogResponse.forbidden_scope("query:read").body)
        rest = self.rest_pages(requests_mock, 3)

        output = read_stream("persons")

        assert [r["id"] for r in records(output)] == [person_uuid(n) for n in (1, 2, 3)]
        assert refused.call_count == 1 and rest.call_count == 1
        (warning,) = warnings_of(output)
        assert "'query:read'" in warning and "REST list" in warning and "slower" in warning
        assert not output.errors
        # the REST records have the HogQL records' shape: no REST-only fields
        assert set(persons_of(output)[0]) == {"id", "uuid", "distinct_ids", "properties", "is_identified", "created_at", "last_seen_at"}
        assert final_state(output) == {"__ab_full_refresh_sync_complete": True}
        assert API_KEY not in everything_emitted(output)

    def test_given_posthog_says_the_key_lacks_query_read_when_read_then_no_query_is_sent(self, requests_mock: Any) -> None:
        current_key(requests_mock, ["person:read", "cohort:read"])
        query = requests_mock.post(QUERY_URL, json={})
        self.rest_pages(requests_mock, 2)

        output = read_stream("persons")

        assert len(records(output)) == 2 and query.call_count == 0
        (warning,) = warnings_of(output)
        assert "'query:read'" in warning and "person:read" in warning

    def test_given_a_key_with_neither_scope_when_read_then_a_config_error_names_query_read(self, requests_mock: Any) -> None:
        current_key(requests_mock, None)
        requests_mock.post(QUERY_URL, status_code=403, json=PostHogResponse.forbidden_scope("query:read").body)
        requests_mock.get(f"{PERSONS_URL}?limit={settings.PERSONS_PAGE_SIZE}", status_code=403, json=PostHogResponse.forbidden_scope("person:read").body)

        output = read_stream("persons", expecting_exception=True)

        (error, *_) = config_errors(output)
        assert error.failure_type == FailureType.config_error
        assert "'person:read'" in error.message and "'query:read' scope" in error.message
        assert API_KEY not in everything_emitted(output)

    def test_given_a_rest_checkpoint_when_read_then_it_resumes_the_rest_list(self, requests_mock: Any) -> None:
        query = requests_mock.post(QUERY_URL, json={})
        resumed = requests_mock.get(f"{PERSONS_URL}?limit=1000&offset=1000", json={"next": None, "results": [record("persons", id=person_uuid(9), uuid=person_uuid(9))]})

        output = read_stream("persons", state={"next": "/api/projects/2/persons/?limit=1000&offset=1000"})

        assert [r["id"] for r in records(output)] == [person_uuid(9)]
        assert resumed.call_count == 1 and query.call_count == 0


class TestResume:
    def test_given_a_checkpointed_keyset_when_read_then_it_resumes_after_that_id(self, requests_mock: Any, small_pages: None) -> None:
        people = [person(n) for n in range(1, 8)]
        fake = FakePersonsQuery(people).register(requests_mock)
        introspection = current_key(requests_mock, ["*"])

        output = read_stream("persons", state={"after": person_uuid(4), "project_id": 2})

        assert persons_of(output) == expected(people[4:])
        assert fake.persons_queries[0].endswith(f"WHERE id > toUUID('{person_uuid(4)}') ORDER BY id ASC LIMIT 3")
        assert f"person_id > toUUID('{person_uuid(4)}')" in fake.distinct_id_queries[0]
        assert introspection.call_count == 0  # the checkpoint says HogQL already

    def test_given_a_checkpoint_of_another_project_when_read_then_it_starts_from_the_first_page(self, requests_mock: Any) -> None:
        fake = FakePersonsQuery([person(n) for n in range(1, 4)]).register(requests_mock)
        current_key(requests_mock, ["*"])

        output = read_stream("persons", state={"after": person_uuid(2), "project_id": 99})

        assert len(records(output)) == 3 and "WHERE" not in fake.persons_queries[0]
        assert any("project 99" in w for w in warnings_of(output))

    def test_given_a_checkpoint_whose_id_is_not_a_uuid_when_read_then_a_config_error_says_so(self, requests_mock: Any) -> None:
        output = read_stream("persons", state={"after": "1 OR 1=1", "project_id": 2}, expecting_exception=True)

        (error, *_) = config_errors(output)
        assert "'after'" in error.message and "not a person id" in error.message
        assert requests_mock.call_count == 0


class TestOlderPostHog:
    def test_given_no_last_seen_at_in_hogql_when_read_then_the_field_is_left_out(self, requests_mock: Any) -> None:
        people = [person(1), person(2)]
        fake = FakePersonsQuery(people, has_last_seen_at=False).register(requests_mock)
        current_key(requests_mock, ["*"])

        output = read_stream("persons")

        assert persons_of(output) == expected(people, last_seen_at=False)
        assert "last_seen_at" in fake.rejected[0] and len(fake.rejected) == 1
        assert not output.errors


class TestMalformed:
    @pytest.mark.parametrize(
        "body, problem",
        [
            pytest.param("<html>Bad gateway</html>", "not JSON", id="not-json"),
            pytest.param(json.dumps({"results": [["x"]], "columns": ["uuid"]}), "no id, created_at, properties, is_identified column", id="wrong-columns"),
            pytest.param(json.dumps({"results": {"id": 1}, "columns": ["id"]}), "'results' list", id="results-not-a-list"),
            pytest.param(
                json.dumps({"results": [["not-a-uuid", "2025-05-01T00:00:00Z", "{}", True]], "columns": ["id", "created_at", "properties", "is_identified"]}),
                "not a UUID", id="id-not-a-uuid",
            ),
        ],
    )
    def test_given_a_malformed_body_when_read_then_a_system_error_names_the_request_and_the_problem(
        self, requests_mock: Any, body: str, problem: str
    ) -> None:
        current_key(requests_mock, ["*"])
        count = FakePersonsQuery([])

        def answer(request: Any, context: Any) -> str:  # the estimate's count is fine; the page is not
            return json.dumps(count(request, context)) if "count()" in request.json()["query"]["query"] else body

        requests_mock.post(QUERY_URL, text=answer, status_code=200)

        output = read_stream("persons", expecting_exception=True)

        error = errors(output)[0]
        assert error.failure_type == FailureType.system_error
        assert "POST /api/projects/2/query/" in error.message and problem in error.message, error.message
        assert records(output) == []
        assert API_KEY not in everything_emitted(output)

    def test_given_malformed_distinct_ids_when_read_then_no_person_is_emitted_without_them(self, requests_mock: Any) -> None:
        current_key(requests_mock, ["*"])
        fake = FakePersonsQuery([person(1)]).register(requests_mock)
        real = fake.__call__
        requests_mock.post(QUERY_URL, [{"json": real}, {"json": real}, {"json": {"results": [[person_uuid(1), 42]], "columns": ["person_id", "distinct_id"]}}])

        output = read_stream("persons", expecting_exception=True)

        assert records(output) == []
        assert "a distinct_id is a int" in errors(output)[0].message


class TestDiscover:
    """Either scope reads persons: discover keeps the stream with `person:read` alone, and leaves it
    out only when the key has neither, naming both."""

    @staticmethod
    def discovered(requests_mock: Any, scopes: List[str]) -> Any:
        from airbyte_cdk.test.entrypoint_wrapper import discover

        from source_posthog.source import SourcePosthog
        from unit_tests.builders import ConfigBuilder

        current_key(requests_mock, scopes)
        return discover(SourcePosthog(), ConfigBuilder().build())

    def test_given_a_key_with_person_read_but_not_query_read_when_discover_then_persons_is_listed(self, requests_mock: Any) -> None:
        output = self.discovered(requests_mock, ["person:read", "cohort:read"])

        assert "persons" in {stream.name for stream in output.catalog.catalog.streams}

    def test_given_a_key_with_neither_scope_when_discover_then_persons_is_left_out_naming_both(self, requests_mock: Any) -> None:
        output = self.discovered(requests_mock, ["cohort:read"])

        assert "persons" not in {stream.name for stream in output.catalog.catalog.streams}
        (line,) = [log.log.message for log in output.logs if "persons" in log.log.message and "left out" in log.log.message]
        assert "'query:read'" in line and "'person:read'" in line
