"""Every query shape the connector builds parses with PostHog's own HogQL parser (issue #17).

The unit tests' fakes of `/query/` parse every query with it too (unit_tests/hogql_fake.py, the
persons and sessions fakes), so a query shape no test names here is still checked wherever a test
sends it; this module names each shape once, with the table it must read."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List

import pytest

from source_posthog.api import hogql
from source_posthog.api.events_plan import CountQuery, MinuteCountQuery, PageQuery
from source_posthog.api.hogql import KeysetPosition, SessionPosition
from unit_tests.support.hogql_parser import parse_select

AT = datetime(2025, 5, 20, 10, 0, 0, 123456, tzinfo=timezone.utc)
UUID = "0190f6a2-0000-7000-8000-000000000001"
OTHER = "ffffffff-0000-0000-0000-000000000000"

SHAPES = {
    "events page, first": (PageQuery("main", AT, AT + timedelta(hours=1), None, None, None, None, 25_000).hogql(), "events"),
    "events page, keyset": (PageQuery("main", AT, AT + timedelta(hours=1), KeysetPosition(AT, UUID), None, None, AT, 25_000).hogql(), "events"),
    "events sweep": (PageQuery("sweep", AT - timedelta(days=7), AT, KeysetPosition(AT, UUID), KeysetPosition(AT, OTHER), AT - timedelta(hours=1), AT, 50_000).hogql(), "events"),
    "events recheck": (PageQuery("recheck", AT, AT, None, KeysetPosition(AT, UUID), AT, AT + timedelta(minutes=1), 1_000).hogql(), "events"),
    "events per hour": (CountQuery(AT - timedelta(days=365), AT, AT).hogql(), "events"),
    "events per minute": (CountQuery(AT, AT + timedelta(hours=1), None, unit="minute").hogql(), "events"),
    "events per created_at minute": (MinuteCountQuery("snapshot", AT - timedelta(days=7), AT - timedelta(minutes=30), AT).hogql(), "events"),
    "sessions page, first": (hogql.sessions_page_query(SessionPosition(AT), AT + timedelta(days=1), 10_000), "sessions"),
    "sessions page, keyset, unbounded": (hogql.sessions_page_query(SessionPosition(AT, UUID), None, 10_000), "sessions"),
    "persons page, first": (hogql.persons_page_query(None, 25_000), "persons"),
    "persons page, keyset, without last_seen_at": (hogql.persons_page_query(UUID, 25_000, last_seen_at=False), "persons"),
    "persons count": (hogql.persons_count_query(), "persons"),
    "persons count after a checkpoint": (hogql.persons_count_query(UUID), "persons"),
    "distinct ids of a page": (hogql.person_distinct_ids_query(None, UUID, 50_000), "person_distinct_ids"),
    "distinct ids, resumed inside a person": (hogql.person_distinct_ids_query(UUID, OTHER, 50_000, (UUID, "it's \\ odd")), "person_distinct_ids"),
}


def fields_of(tree: Any) -> List[List[str]]:
    """Every Field chain in PostHog's AST."""
    found: List[List[str]] = []
    if isinstance(tree, dict):
        if tree.get("node") == "Field":
            found.append(tree["chain"])
        for value in tree.values():
            found += fields_of(value)
    elif isinstance(tree, list):
        for value in tree:
            found += fields_of(value)
    return found


def constants_of(tree: Any) -> List[Any]:
    if isinstance(tree, dict):
        return ([tree["value"]] if tree.get("node") == "Constant" else []) + [c for value in tree.values() for c in constants_of(value)]
    if isinstance(tree, list):
        return [c for value in tree for c in constants_of(value)]
    return []


@pytest.mark.parametrize("text, table", list(SHAPES.values()), ids=list(SHAPES))
def test_every_query_shape_the_connector_builds_parses_with_posthogs_parser(text: str, table: str) -> None:
    tree: Dict[str, Any] = parse_select(text)

    assert not tree.get("error"), f"PostHog's parser refuses it: {tree.get('message')}\n{text}"
    assert tree["node"] == "SelectQuery" and tree["select_from"]["table"]["chain"] == [table]
    limit = tree.get("limit")
    assert (limit is None and "count()" in text) or limit["value"] <= 50_000, "an explicit LIMIT within PostHog's cap (or one aggregate row)"
    assert "OFFSET" not in text.upper() and tree.get("offset") is None


def test_backtick_quoted_session_fields_reach_posthogs_ast_as_their_names() -> None:
    tree = parse_select(SHAPES["sessions page, keyset, unbounded"][0])

    assert ["$start_timestamp"] in fields_of(tree["order_by"]) and ["session_id"] in fields_of(tree["order_by"])


def test_a_string_literal_with_quotes_and_backslashes_reaches_posthogs_ast_unchanged() -> None:
    tree = parse_select(SHAPES["distinct ids, resumed inside a person"][0])

    assert "it's \\ odd" in constants_of(tree["where"])


def test_posthogs_parser_refuses_what_it_should() -> None:
    assert parse_select("SELECT FROM events")["error"] is True or parse_select("SELECT uuid FROM events WHERE")["error"] is True
    assert parse_select("SELECT uuid FROM events WHERE timestamp > 'unterminated")["error"] is True
