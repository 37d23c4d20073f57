"""Tables of the reliability suite: bad configs, bad states, malformed responses, hostile strings.

Each row is one scenario; the tests in `test_reliability_bad_input.py` and
`test_reliability_query_safety.py` run every row through the real connector.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Tuple

REMOVE = object()  # as a config value: the key is absent


@dataclass(frozen=True)
class BadConfig:
    """`fields` are merged into a valid config for the emulator (REMOVE deletes a key)."""

    name: str
    fields: Mapping[str, Any]
    field: str  # the config field the message must name
    fix: str  # a regex (case-insensitive) the message's fix must match
    commands: Tuple[str, ...] = ("check", "read")
    api_key: Optional[str] = None  # another emulator key (by name in KEYS) instead of all_access
    raw_config: Optional[str] = None  # the whole config file's text, instead of a merged config


BAD_CONFIGS = (
    BadConfig("api_key missing", {"api_key": REMOVE}, "api_key", r"personal API key"),
    BadConfig("api_key empty", {"api_key": ""}, "api_key", r"personal API key"),
    BadConfig("api_key a number", {"api_key": 123456789012}, "api_key", r"personal API key"),
    BadConfig("api_key a project key (phc_)", {"api_key": "phc_projecttoken0123456789abcdef"}, "api_key", r"phx_"),
    BadConfig("project_id missing", {"project_id": REMOVE}, "project_id", r"Project settings|Project ID"),
    BadConfig("project_id not a number", {"project_id": "my-project"}, "project_id", r"Project settings|Project ID"),
    BadConfig("project_id zero", {"project_id": 0}, "project_id", r"Project settings|Project ID"),
    BadConfig("host the US ingestion host", {"host": "us.i.posthog.com"}, "host", r"Use us\.posthog\.com"),
    BadConfig("host the EU ingestion host as a URL", {"host": "https://eu.i.posthog.com/"}, "host", r"Use eu\.posthog\.com"),
    BadConfig("host with an ftp scheme", {"host": "ftp://posthog.example.com"}, "host", r"us\.posthog\.com|https://"),
    BadConfig("host plain http off loopback", {"host": "http://posthog.example.com"}, "host", r"https://posthog\.example\.com"),
    BadConfig("host with an invalid port", {"host": "localhost:99999"}, "host", r"port"),
    BadConfig("anchor_date in the future", {"anchor_date": "2999-01-01"}, "anchor_date", r"before today"),
    BadConfig("anchor_date not ISO (US order)", {"anchor_date": "01/02/2025"}, "anchor_date", r"2025-01-01"),
    BadConfig("anchor_date a number", {"anchor_date": 20250101}, "anchor_date", r"2025-01-01"),
    BadConfig("events_page_size below PostHog's range", {"events_page_size": 10}, "events_page_size", r"1,?000|50,?000|25,?000"),
    BadConfig("events_page_size a string", {"events_page_size": "lots"}, "events_page_size", r"\d,?000"),
    BadConfig("config not a JSON object", {}, "config", r"JSON object|object", raw_config='["phx_not_an_object"]'),
    # Valid in form, refused by PostHog (the emulator): the message must still say what to fix.
    BadConfig("api_key unknown to PostHog", {"api_key": "phx_revokedKey0123456789abcdefABCDEF0123"}, "api_key", r"Personal API keys"),
    BadConfig("project_id not on this host", {"project_id": 12345}, "project_id", r"Project settings|Project ID"),
    BadConfig("api_key without access to the project", {}, "project_id", r"access to project 2", api_key="other_project"),
    BadConfig("host that refuses connections", {"host": "http://127.0.0.1:9"}, "host", r"us\.posthog\.com", commands=("check",)),
)

VALID_EVENTS_STATE = {"timestamp": "2024-06-01T00:00:00.000000Z", "uuid": "0190f6a2-aaaa-7bbb-8ccc-123456789abc"}


@dataclass(frozen=True)
class BadState:
    name: str
    stream: str
    state: Any  # that stream's stream_state
    raw_file: Optional[str] = None  # the whole --state file's text, instead of a STREAM message


BAD_STATES = (
    BadState("events timestamp not a date", "events", {"timestamp": "yesterday", "uuid": None}),
    BadState("events uuid not a UUID", "events", {**VALID_EVENTS_STATE, "uuid": "not-a-uuid"}),
    BadState("events sweep corrupt", "events", {**VALID_EVENTS_STATE, "sweep": {"timestamp": "2024-06-01T00:00:00Z"}}),
    BadState("events state of annotations' shape", "events", {"updated_at": "2024-06-01T00:00:00Z"}),
    BadState("annotations state of events' shape", "annotations", dict(VALID_EVENTS_STATE)),
    BadState("session_recordings ongoing a list", "session_recordings", {"start_time": "2024-06-01T00:00:00Z", "ongoing": ["a"]}),
    BadState("session_recordings state of events' shape", "session_recordings", dict(VALID_EVENTS_STATE)),
    BadState("state file not JSON", "events", None, raw_file='[{"type": "STREAM", "stream": {'),
    BadState("events stream_state a list", "events", ["2024-06-01T00:00:00Z"]),
)


@dataclass(frozen=True)
class MalformedResponse:
    """A tiny local server answers `path` with `body` (200); every other path is a valid, empty list."""

    name: str
    stream: str
    path: str  # the endpoint the error must name
    body: bytes
    content_type: str = "application/json"


QUERY_COLUMNS = ["uuid", "event", "timestamp", "distinct_id", "properties", "elements_chain", "person_id", "created_at"]


def query_row(**changes: Any) -> list:
    """A valid HogQL events row, with `changes` by column name."""
    row = {
        "uuid": "0190f6a2-aaaa-7bbb-8ccc-123456789abc", "event": "$pageview", "timestamp": "2024-06-01T00:00:01.000000Z",
        "distinct_id": "u1", "properties": "{}", "elements_chain": "", "person_id": "0190f6a2-aaaa-7bbb-8ccc-000000000001",
        "created_at": "2024-06-01T00:00:02.000000Z",
    }
    row.update(changes)
    return [row[column] for column in QUERY_COLUMNS]


def query_body(rows: list, columns: list = QUERY_COLUMNS) -> bytes:
    return json.dumps({"results": rows, "columns": columns, "types": [], "hasMore": False}).encode()


MALFORMED_RESPONSES = (
    MalformedResponse("cohorts: an HTML page", "cohorts", "/api/projects/2/cohorts/", b"<html><body>Bad gateway</body></html>", "text/html"),
    MalformedResponse("cohorts: JSON without results", "cohorts", "/api/projects/2/cohorts/", b'{"count": 3, "next": null}'),
    MalformedResponse("cohorts: results not a list", "cohorts", "/api/projects/2/cohorts/", b'{"count": 1, "next": null, "results": "cohort"}'),
    MalformedResponse("cohorts: results of numbers", "cohorts", "/api/projects/2/cohorts/", b'{"count": 2, "next": null, "results": [1, 2]}'),
    # persons are read through HogQL (streams/persons.py): a persons page without its id column
    MalformedResponse("persons: query result without id", "persons", "/api/projects/2/query/", b'{"results": [["x"]], "columns": ["uuid"], "types": [], "hasMore": false}'),
    MalformedResponse("query: not JSON", "events", "/api/projects/2/query/", b'{"results": [["0190'),
    MalformedResponse("query: no timestamp column", "events", "/api/projects/2/query/", query_body([query_row()], ["uuid", "event"])),
    MalformedResponse("query: timestamp null", "events", "/api/projects/2/query/", query_body([query_row(timestamp=None)])),
    MalformedResponse("query: properties not JSON", "events", "/api/projects/2/query/", query_body([query_row(properties="{oops")])),
    MalformedResponse("session_recordings: start_time missing", "session_recordings", "/api/projects/2/session_recordings/", b'{"results": [{"id": "r1"}], "has_next": false, "version": 4}'),
)


@dataclass(frozen=True)
class HostileState:
    """An events state carrying hostile text. `accepted`: it is valid once parsed (its values are
    re-formatted), so the sync runs and every query must still be the connector's template."""

    name: str
    state: Any
    accepted: bool = False


INJECTION = "' OR 1=1 --"
HOSTILE_STATES = (
    HostileState("timestamp with a quote and OR", {"timestamp": f"2024-06-01T00:00:00Z{INJECTION}", "uuid": None}),
    HostileState("timestamp closing the call", {"timestamp": "2024-06-01 00:00:00'), 6, 'UTC') OR (1=1", "uuid": None}),
    HostileState("timestamp with a statement", {"timestamp": "2024-06-01T00:00:00Z'; DROP TABLE events; --"}),
    HostileState("timestamp with a line break", {"timestamp": "2024-06-01T00:00:00Z\nUNION SELECT 1"}),
    HostileState("timestamp with a backslash", {"timestamp": "2024-06-01T00:00:00Z\\' OR 1=1"}),
    HostileState("timestamp with a unicode quote", {"timestamp": "2024-06-01T00:00:00Z\u2019 OR 1=1"}),
    HostileState("uuid with a quote and OR", {**VALID_EVENTS_STATE, "uuid": f"0190f6a2-aaaa-7bbb-8ccc-123456789abc{INJECTION}"}),
    HostileState("uuid with a backslash", {**VALID_EVENTS_STATE, "uuid": "0190f6a2-aaaa-7bbb-8ccc-123456789ab\\"}),
    HostileState("ingested_through with SQL", {**VALID_EVENTS_STATE, "ingested_through": f"2024-06-01T00:00:00Z{INJECTION}"}),
    HostileState("sweep timestamp with SQL", {**VALID_EVENTS_STATE, "ingested_through": "2024-06-01T00:00:00Z",
                                              "sweep": {"timestamp": f"2024-05-30T00:00:00Z{INJECTION}", "uuid": None, "ingested_after": "2024-05-01T00:00:00Z"}}),
    HostileState("sweep uuid with SQL", {**VALID_EVENTS_STATE, "ingested_through": "2024-06-01T00:00:00Z",
                                         "sweep": {"timestamp": "2024-05-30T00:00:00Z", "uuid": f"x{INJECTION}", "ingested_after": "2024-05-01T00:00:00Z"}}),
    HostileState("legacy nested timestamp with SQL", {"2": {"timestamp": f"2024-06-01T00:00:00{INJECTION}"}}),
    # Valid once parsed: the hostile parts are dropped or re-formatted.
    HostileState("extra keys holding SQL", {**VALID_EVENTS_STATE, "where": f"1=1{INJECTION}", "limit": "1; DROP TABLE events"}, accepted=True),
    HostileState("uuid in braces, upper case", {**VALID_EVENTS_STATE, "uuid": "{0190F6A2-AAAA-7BBB-8CCC-123456789ABC}"}, accepted=True),
    HostileState("uuid as a URN", {**VALID_EVENTS_STATE, "uuid": "urn:uuid:0190f6a2-aaaa-7bbb-8ccc-123456789abc"}, accepted=True),
    HostileState("timestamp with an offset", {"timestamp": "2024-06-01T05:30:00+05:30", "uuid": None}, accepted=True),
)


@dataclass(frozen=True)
class HostileConfig:
    name: str
    fields: Mapping[str, Any]
    field: str


HOSTILE_CONFIGS = (
    HostileConfig("anchor_date with a quote and OR", {"anchor_date": f"2024-06-01{INJECTION}"}, "anchor_date"),
    HostileConfig("anchor_date closing the call", {"anchor_date": "2024-06-01 00:00:00'), 6, 'UTC') OR (1=1"}, "anchor_date"),
    HostileConfig("anchor_date with a backslash", {"anchor_date": "2024-06-01T00:00:00Z\\"}, "anchor_date"),
    HostileConfig("project_id with SQL", {"project_id": "2 OR 1=1"}, "project_id"),
    HostileConfig("project_id as a path", {"project_id": "2/../../3"}, "project_id"),
    HostileConfig("events_page_size with SQL", {"events_page_size": "1000 UNION SELECT 1"}, "events_page_size"),
    HostileConfig("host with a path to the query endpoint", {"host": "127.0.0.1:1/api/projects/2/query/?q='"}, "host"),
)

# Event data is output, never query text; hostile values in it must come back intact.
HOSTILE_EVENT_TEXT = (
    "'; DROP TABLE events; --",
    "\\' OR 1=1 --",
    "a\"b'c`d",
    "line\nbreak\r\nand\ttab",
    "toDateTime64('2024-01-01', 6, 'UTC')",
)

