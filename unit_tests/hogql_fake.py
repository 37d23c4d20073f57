"""A tiny, strict stand-in for PostHog's `POST /api/projects/{id}/query/` over the events table.

It does not replay canned pages: it parses the HogQL the connector sends, evaluates the WHERE
clause over an in-memory list of events, orders by (timestamp, uuid) and applies LIMIT, the
way ClickHouse would. So a test built on it proves that the connector's keyset predicates lose
nothing and duplicate nothing, whatever windows and pages the connector chooses.

Strictness (the less convenient PostHog behaviour, on purpose):
- only the grammar the connector is meant to emit is understood; anything else (OFFSET, an
  unknown column, an unquoted or malformed literal, a stray token) is a 400 `validation_error`
  and is recorded in `rejected`, so a test sees it;
- LIMIT is silently capped at 50,000 and `hasMore` is never computed for an explicit LIMIT
  (docs/posthog-api.md § 4.2);
- an event is visible only once PostHog has made it queryable (`visible_at`, default `created_at`, `<= now`);
- `properties` is returned as a JSON string; timestamps are rendered in the project's time zone
  (`render_offset`), as HogQL does.
"""

from __future__ import annotations

import json
import re
import uuid as uuid_module
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from unit_tests.builders import PROJECT_URL, load_template
from unit_tests.support.clickhouse import scrambled_half, uuid_order
from unit_tests.support.hogql_parser import parse_error

QUERY_URL = f"{PROJECT_URL}/query/"
SERVER_LIMIT_CAP = 50_000
COLUMNS = ("uuid", "event", "timestamp", "distinct_id", "properties", "elements_chain", "person_id", "created_at")
TYPES = {
    "uuid": "UUID",
    "event": "String",
    "timestamp": "DateTime64(6, 'UTC')",
    "distinct_id": "String",
    "properties": "String",
    "elements_chain": "String",
    "person_id": "UUID",
    "created_at": "DateTime64(6, 'UTC')",
}


class HogQLRejected(ValueError):
    pass


def utc(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def event_uuid(n: int) -> str:
    """Deterministic, distinct, valid UUIDs whose ClickHouse order (second half first) is n's
    order, and whose text order is not."""
    return str(uuid_module.UUID(int=(0x0190F6A2_0000_7000_8000_000000000000 | (scrambled_half(n, 12) << 64) | n)))


@dataclass
class Event:
    uuid: str
    timestamp: datetime
    created_at: datetime
    event: str = "$pageview"
    distinct_id: str = "user_42"
    properties: Dict[str, Any] = field(default_factory=lambda: {"$browser": "Chrome"})
    elements_chain: str = ""
    person_id: str = "01903a5e-7c1d-7000-8000-3c0f5b7a1e21"
    visible_at: Optional[datetime] = None  # when PostHog makes it queryable (None: at created_at)

    def visible(self, now: datetime) -> bool:
        return (self.visible_at or self.created_at) <= now


def make_events(
    count: int,
    at: datetime,
    start: int = 0,
    step: timedelta = timedelta(0),
    ingested_after: timedelta = timedelta(seconds=1),
    **fields: Any,
) -> List[Event]:
    """`count` events from `at`, `step` apart (0 = all sharing one timestamp)."""
    return [
        Event(uuid=event_uuid(start + i), timestamp=at + step * i, created_at=at + step * i + ingested_after, **fields)
        for i in range(count)
    ]


# -- the WHERE-clause evaluator ----------------------------------------------------------------

_STRING = r"'(?:[^'\\]|\\.)*'"
_DATETIME = re.compile(rf"^toDateTime64\((?P<text>{_STRING}), 6, 'UTC'\)$")
_UUID = re.compile(rf"^toUUID\((?P<text>{_STRING})\)$")
_COMPARISON = re.compile(r"^(?P<column>timestamp|uuid|created_at) (?P<op>>=|<=|=|>|<) (?P<literal>.+)$", re.S)
_QUERY = re.compile(
    r"^SELECT (?P<columns>[a-z_, ]+) FROM events WHERE (?P<where>.+) "
    r"ORDER BY timestamp ASC, uuid ASC LIMIT (?P<limit>\d+)$",
    re.S,
)
_COUNT_QUERY = re.compile(
    r"^SELECT toStartOf(?P<unit>Hour|Minute)\(timestamp\) AS (?:hour|minute), count\(\) AS events FROM events WHERE (?P<where>.+) "
    r"GROUP BY (?:hour|minute) ORDER BY (?:hour|minute) ASC LIMIT (?P<limit>\d+)$",
    re.S,
)
_MINUTES_QUERY = re.compile(
    r"^SELECT toStartOfMinute\(created_at\) AS minute, count\(\) AS events FROM events WHERE (?P<where>.+) "
    r"GROUP BY minute ORDER BY minute ASC LIMIT (?P<limit>\d+)$",
    re.S,
)
TIMEOUT_504 = {
    "type": "server_error",
    "code": "error",
    "detail": "Query has hit the max execution time before completing. See our docs for how to improve your query performance. You may need to materialize.",
    "attr": None,
}
_OPS: Dict[str, Callable[[Any, Any], bool]] = {
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    "=": lambda a, b: a == b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
}


def _unquote(literal: str) -> str:
    body = literal[1:-1]
    out, i = [], 0
    escapes = {"\\": "\\", "'": "'", "n": "\n", "r": "\r", "0": "\0", "t": "\t"}
    while i < len(body):
        if body[i] == "\\":
            out.append(escapes.get(body[i + 1], body[i + 1]))
            i += 2
        else:
            out.append(body[i])
            i += 1
    return "".join(out)


def _split_top_level(text: str, keyword: str) -> List[str]:
    """Split on ` AND ` / ` OR ` outside parentheses and string literals."""
    parts, depth, quoted, start, i = [], 0, False, 0, 0
    token = f" {keyword} "
    while i < len(text):
        char = text[i]
        if quoted:
            if char == "\\":
                i += 2
                continue
            if char == "'":
                quoted = False
        elif char == "'":
            quoted = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise HogQLRejected(f"unbalanced parenthesis in {text!r}")
        elif depth == 0 and text.startswith(token, i):
            parts.append(text[start:i])
            i += len(token)
            start = i
            continue
        i += 1
    if quoted or depth:
        raise HogQLRejected(f"unterminated literal or parenthesis in {text!r}")
    parts.append(text[start:])
    return parts


def _strip_parens(text: str) -> Optional[str]:
    """`(...)` → `...` when the outer parentheses enclose the whole text."""
    if not (text.startswith("(") and text.endswith(")")):
        return None
    inner = text[1:-1]
    try:
        _split_top_level(inner, "AND")
    except HogQLRejected:
        return None
    return inner


def _literal(column: str, text: str) -> Any:
    if column in ("timestamp", "created_at"):
        match = _DATETIME.match(text)
        if not match:
            raise HogQLRejected(f"expected toDateTime64('...', 6, 'UTC') for {column}, got {text!r}")
        raw = _unquote(match.group("text"))
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}", raw):
            raise HogQLRejected(f"malformed DateTime64 literal {raw!r}")
        return datetime.strptime(raw, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=timezone.utc)
    match = _UUID.match(text)
    if not match:
        raise HogQLRejected(f"expected toUUID('...') for uuid, got {text!r}")
    raw = _unquote(match.group("text"))
    return str(uuid_module.UUID(raw)) if re.fullmatch(r"[0-9a-f-]{36}", raw) else _reject(f"malformed UUID literal {raw!r}")


def _reject(message: str) -> Any:
    raise HogQLRejected(message)


def compile_condition(text: str) -> Callable[[Event], bool]:
    text = text.strip()
    ors = _split_top_level(text, "OR")
    if len(ors) > 1:
        branches = [compile_condition(part) for part in ors]
        return lambda event: any(branch(event) for branch in branches)
    ands = _split_top_level(text, "AND")
    if len(ands) > 1:
        conjuncts = [compile_condition(part) for part in ands]
        return lambda event: all(conjunct(event) for conjunct in conjuncts)
    inner = _strip_parens(text)
    if inner is not None:
        return compile_condition(inner)
    match = _COMPARISON.match(text)
    if not match:
        raise HogQLRejected(f"unsupported condition {text!r}")
    column, op = match.group("column"), _OPS[match.group("op")]
    value = _literal(column, match.group("literal").strip())
    if column == "uuid":  # compared as ClickHouse compares UUIDs, not as text
        key = uuid_order(value)
        return lambda event: op(uuid_order(event.uuid), key)
    return lambda event: op(getattr(event, column), value)


@dataclass
class ParsedQuery:
    columns: Tuple[str, ...]
    where: str
    limit: int
    predicate: Callable[[Event], bool]
    hourly_counts: bool = False
    minute_counts: bool = False


def parse_query(query: str) -> ParsedQuery:
    error = parse_error(query)  # PostHog's own parser first, as PostHog does
    if error:
        raise HogQLRejected(f"PostHog's HogQL parser: {error}")
    if re.search(r"\bOFFSET\b", query, re.I):
        raise HogQLRejected("OFFSET is not allowed for personal API keys")
    minutes = _MINUTES_QUERY.match(query)
    if minutes:
        return ParsedQuery(("minute", "events"), minutes.group("where"), int(minutes.group("limit")), compile_condition(minutes.group("where")), minute_counts=True)
    counts = _COUNT_QUERY.match(query)
    if counts:
        unit = counts.group("unit").lower()
        return ParsedQuery((unit, "events"), counts.group("where"), int(counts.group("limit")), compile_condition(counts.group("where")), True)
    match = _QUERY.match(query)
    if not match:
        raise HogQLRejected(f"unsupported query shape: {query[:200]!r}")
    columns = tuple(column.strip() for column in match.group("columns").split(","))
    unknown = [column for column in columns if column not in COLUMNS]
    if unknown:
        raise HogQLRejected(f"Unable to resolve field: {unknown[0]}")
    return ParsedQuery(columns, match.group("where"), int(match.group("limit")), compile_condition(match.group("where")))


# -- the endpoint ------------------------------------------------------------------------------


@dataclass
class Fault:
    status: int
    body: Dict[str, Any]
    headers: Dict[str, str] = field(default_factory=dict)


class FakeHogQL:
    """Register with `fake.register(requests_mock)`; inspect `queries`, `pages`, `rejected`."""

    def __init__(self, events: Sequence[Event] = (), render_offset: timedelta = timedelta(0), now: Optional[Callable[[], datetime]] = None):
        self.events: List[Event] = list(events)
        self.render_offset = render_offset
        self._now = now or (lambda: datetime.now(timezone.utc))
        self.queries: List[str] = []
        self.bodies: List[Dict[str, Any]] = []
        self.pages: List[List[str]] = []  # uuids served per successful request
        self.rejected: List[str] = []
        self.faults: List[Fault] = []
        self.calls = 0
        self.count_queries = 0
        # PostHog's execution limit, modeled as the rows a query's timestamp range holds: above
        # `scan_limit`, the query answers 504 as PostHog does (docs/posthog-api.md § 13).
        self.scan_limit: Optional[int] = None
        self.timeouts = 0

    def add(self, events: Sequence[Event]) -> None:
        self.events.extend(events)

    def fail_next(self, status: int, body: Dict[str, Any], headers: Optional[Dict[str, str]] = None) -> None:
        self.faults.append(Fault(status, body, dict(headers or {})))

    def register(self, mocker: Any, url: str = QUERY_URL) -> "FakeHogQL":
        mocker.post(url, json=self)
        return self

    def _render(self, value: datetime) -> str:
        tz = timezone(self.render_offset)
        text = value.astimezone(tz).isoformat(timespec="microseconds")
        return text.replace("+00:00", "Z") if self.render_offset == timedelta(0) else text

    def __call__(self, request: Any, context: Any) -> Dict[str, Any]:
        self.calls += 1
        body = json.loads(request.body)
        self.bodies.append(body)
        query = (body.get("query") or {}).get("query", "")
        self.queries.append(query)
        if self.faults:
            fault = self.faults.pop(0)
            context.status_code = fault.status
            context.headers.update(fault.headers)
            return fault.body
        if request.headers.get("Authorization", "") == "" or (body.get("query") or {}).get("kind") != "HogQLQuery":
            context.status_code = 400
            self.rejected.append(query)
            return {"type": "validation_error", "code": "invalid_input", "detail": "Expected a HogQLQuery", "attr": "query"}
        try:
            parsed = parse_query(query)
        except HogQLRejected as error:
            self.rejected.append(query)
            context.status_code = 400
            return {"type": "validation_error", "code": "invalid_input", "detail": str(error), "attr": None}
        now = self._now()
        if self.scan_limit is not None and self._scanned(parsed.where, now) > self.scan_limit:
            self.timeouts += 1
            context.status_code = 504
            return dict(TIMEOUT_504)
        matching = sorted(
            (event for event in self.events if event.visible(now) and parsed.predicate(event)),
            key=lambda event: (event.timestamp, uuid_order(event.uuid)),
        )
        response = load_template("query_events")
        if parsed.hourly_counts or parsed.minute_counts:
            hours: Dict[datetime, int] = {}
            for event in matching:
                if parsed.minute_counts:
                    hour = event.created_at.replace(second=0, microsecond=0)
                elif parsed.columns[0] == "minute":
                    hour = event.timestamp.replace(second=0, microsecond=0)
                else:
                    hour = event.timestamp.replace(minute=0, second=0, microsecond=0)
                hours[hour] = hours.get(hour, 0) + 1
            self.count_queries += 1
            response.update(
                results=[[self._render(hour), count] for hour, count in sorted(hours.items())][: min(parsed.limit, SERVER_LIMIT_CAP)],
                columns=list(parsed.columns), types=[[parsed.columns[0], "DateTime('UTC')"], ["events", "UInt64"]], hasMore=False,
                limit=parsed.limit, offset=0, query=query, hogql=query,
            )
            return response
        page = matching[: min(parsed.limit, SERVER_LIMIT_CAP)]
        self.pages.append([event.uuid for event in page])
        response.update(
            results=[self._row(event, parsed.columns) for event in page],
            columns=list(parsed.columns),
            types=[[column, TYPES[column]] for column in parsed.columns],
            hasMore=False,
            limit=parsed.limit,
            offset=0,
            query=query,
            hogql=query,
        )
        return response

    def _scanned(self, where: str, now: datetime) -> int:
        start = re.search(r"timestamp >= toDateTime64\('([^']+)'", where)
        end = re.search(r"timestamp < toDateTime64\('([^']+)'", where)
        low, high = (datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=timezone.utc) for m in (start, end))
        return sum(1 for event in self.events if low <= event.timestamp < high and event.visible(now))

    def _row(self, event: Event, columns: Sequence[str]) -> List[Any]:
        values = {
            "uuid": event.uuid,
            "event": event.event,
            "timestamp": self._render(event.timestamp),
            "distinct_id": event.distinct_id,
            "properties": json.dumps(event.properties),
            "elements_chain": event.elements_chain,
            "person_id": event.person_id,
            "created_at": self._render(event.created_at),
        }
        return [values[column] for column in columns]

    # -- helpers for assertions --------------------------------------------------------------
    def windows(self) -> List[Tuple[datetime, datetime]]:
        """(start, end) of the `timestamp >= ... AND timestamp < ...` bounds of every query."""
        found = []
        for query in self.queries:
            start = re.search(r"timestamp >= toDateTime64\('([^']+)'", query)
            end = re.search(r"timestamp < toDateTime64\('([^']+)'", query)
            if start and end:
                found.append(tuple(datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=timezone.utc) for m in (start, end)))
        return found
