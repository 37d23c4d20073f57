"""cohort_membership: HogQL `cohort_people` then `static_cohort_people`, keyset pages on
(cohort_id, person_id) compared by the server in ClickHouse's UUID order (issue #19)."""

from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Tuple

import pytest

from source_posthog import settings
from unit_tests.builders import API_KEY, person_uuid
from unit_tests.reader import read_stream, records, states
from unit_tests.support.clickhouse import uuid_order
from unit_tests.support.hogql_parser import parse_error

QUERY_URL = "https://us.posthog.com/api/projects/2/query/"
_PAGE = re.compile(
    r"SELECT cohort_id, person_id FROM (?P<table>cohort_people|static_cohort_people)"
    r"(?: WHERE \(cohort_id > (?P<c>\d+) OR \(cohort_id = (?P=c) AND person_id > toUUID\('(?P<p>[0-9a-f-]{36})'\)\)\))?"
    r" ORDER BY cohort_id ASC, person_id ASC LIMIT (?P<limit>\d+)"
)


class FakeCohortTables:
    def __init__(self, tables: Dict[str, List[Tuple[int, str]]]) -> None:
        self.tables = {name: sorted(pairs, key=lambda pair: (pair[0], uuid_order(pair[1]))) for name, pairs in tables.items()}
        self.queries: List[str] = []

    def __call__(self, request: Any, context: Any) -> Dict[str, Any]:
        assert request.headers["Authorization"] == f"Bearer {API_KEY}"
        text = json.loads(request.body)["query"]["query"]
        self.queries.append(text)
        match = _PAGE.fullmatch(text) if parse_error(text) is None else None
        if not match:
            context.status_code = 400
            return {"type": "validation_error", "code": "invalid_input", "detail": f"unsupported {text[:100]}", "attr": None}
        pairs = self.tables[match["table"]]
        if match["c"]:
            key = (int(match["c"]), uuid_order(match["p"]))
            pairs = [pair for pair in pairs if (pair[0], uuid_order(pair[1])) > key]
        page = pairs[: int(match["limit"])]
        return {"results": [list(pair) for pair in page], "columns": ["cohort_id", "person_id"], "types": [["cohort_id", "Int64"], ["person_id", "UUID"]],
                "hasMore": False}


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "COHORT_MEMBERS_PAGE_SIZE", 3)


def test_given_dynamic_and_static_cohorts_when_read_then_every_pair_once_in_keyset_pages_with_a_checkpoint_after_each(requests_mock: Any, small_pages: None) -> None:
    dynamic = [(1, person_uuid(n)) for n in range(1, 5)] + [(2, person_uuid(n)) for n in range(3, 6)]
    static = [(7, person_uuid(n)) for n in range(1, 3)]
    fake = FakeCohortTables({"cohort_people": dynamic, "static_cohort_people": static})
    requests_mock.post(QUERY_URL, json=fake)

    output = read_stream("cohort_membership")

    got = [(r["cohort_id"], r["person_id"], r["static"]) for r in records(output)]
    assert sorted(got) == sorted([(c, p, False) for c, p in dynamic] + [(c, p, True) for c, p in static])
    assert len(got) == len(set(got))
    assert states(output)[0] == {"pass": "cohort_people", "after": [1, fake.tables["cohort_people"][2][1]]}
    assert states(output)[-1] == {"__ab_full_refresh_sync_complete": True}


def test_given_a_checkpoint_inside_the_static_pass_when_read_then_it_resumes_after_it(requests_mock: Any, small_pages: None) -> None:
    static = [(7, person_uuid(n)) for n in range(1, 6)]
    fake = FakeCohortTables({"cohort_people": [(1, person_uuid(1))], "static_cohort_people": static})
    requests_mock.post(QUERY_URL, json=fake)
    after = fake.tables["static_cohort_people"][2]

    output = read_stream("cohort_membership", state={"pass": "static_cohort_people", "after": list(after)})

    assert [(r["cohort_id"], r["person_id"]) for r in records(output)] == fake.tables["static_cohort_people"][3:]
    assert not [q for q in fake.queries if "FROM cohort_people" in q], "the dynamic pass was complete"
