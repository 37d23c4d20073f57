"""PostHog's response envelopes and page tokens, each written once (docs/posthog-api.md § 2).

  counted    {"count", "next", "previous", "results"}   → next_path (follow `next`)
  persons    {"next", "previous", "results"}            → next_path (a short page is not the end)
  actions    {"results"} (older servers: counted)       → next_path (no `next` = done)
  recordings {"results", "has_next", "version"}        → next_offset
  HogQL      {"results", "columns", "types", ...}       → hogql_records (keyset: events_plan.py)
  groups     {"next", "previous": null, "results"}      → next_path (keyset cursor inside `next`)
  bare list  [...] (groups_types, § 14.1)               → decode_body(bare_list=True): {"results": [...]}

Pure functions over bytes and dicts; a body that is not what PostHog sends raises
`MalformedBody` with a sentence saying what was wrong.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Mapping, Optional
from urllib.parse import urlsplit

import orjson

from source_posthog.api.timestamps import to_utc_iso


class MalformedBody(ValueError):
    """The body is not the JSON PostHog sends for this endpoint."""


def decode_body(content: bytes, required: Optional[str] = "results", item_type: type = dict, bare_list: bool = False) -> Dict[str, Any]:
    """Parse a PostHog JSON body. `required` names the list the body must hold, `item_type` what
    its items must be (objects for REST lists, row arrays for HogQL).

    `bare_list`: the endpoint answers a bare JSON array, not paginated (groups_types,
    docs/posthog-api.md § 14.1); it is given the shape of every other list, `{"results": [...]}`
    with no `next`, so the rest of the connector reads it as a one-page list."""
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError as error:
        raise MalformedBody(f"the body is not JSON ({error}); it starts with {content[:80]!r}")
    if bare_list:
        if not isinstance(body, list):
            raise MalformedBody(f"expected a JSON array, got {type(body).__name__}")
        body = {required or "results": body}
    if not isinstance(body, dict) or (required and not isinstance(body.get(required), list)):
        got = type(body.get(required)).__name__ if isinstance(body, dict) else type(body).__name__
        expected = f"an object with a '{required}' list" if required else "an object"
        raise MalformedBody(f"expected {expected}, got {got}")
    if required and not all(item.__class__ is item_type for item in body[required]):
        wrong = next(item for item in body[required] if item.__class__ is not item_type)
        raise MalformedBody(f"'{required}' holds a {type(wrong).__name__} where {item_type.__name__}s are expected")
    return body


def next_path(body: Mapping[str, Any]) -> Optional[str]:
    """The path and query of PostHog's absolute `next` URL, or None at the end.

    Only the path is kept: the caller re-bases it onto the configured host, because a
    self-hosted PostHog behind a TLS proxy builds `http://internal-host/...` links and the key
    must never travel anywhere but the configured host.
    """
    next_url = body.get("next")
    if not next_url:
        return None
    if not isinstance(next_url, str):
        raise MalformedBody(f"'next' is a {type(next_url).__name__}, not a URL")
    parts = urlsplit(next_url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def next_offset(body: Mapping[str, Any], offset: int) -> Optional[int]:
    """Session recordings: `offset += len(results)` while `has_next` (the opaque `after` cursor's
    shape varies by PostHog version; offset paging does not)."""
    if not body.get("has_next") or not body["results"]:
        return None
    return offset + len(body["results"])


def hogql_records(body: Dict[str, Any], required_columns: tuple = ()) -> Iterator[Dict[str, Any]]:
    """HogQL rows → records: `properties` parsed (the API sends a JSON string), DateTimes in UTC
    (HogQL returns them in the project's timezone). Rows are freed as they are read: a page is
    ~50 MB. This loop runs once per event: keep it lean."""
    rows: List[List[Any]] = body["results"]
    columns = body.get("columns") or []
    missing = [name for name in required_columns if name not in columns]
    if missing:
        raise MalformedBody(f"the HogQL result has no {', '.join(missing)} column")
    loads, normalise = orjson.loads, to_utc_iso
    delivered: Optional[str] = None
    try:
        for index, row in enumerate(rows):
            rows[index] = None  # type: ignore[call-overload]
            record = dict(zip(columns, row))
            properties = record.get("properties")
            if properties.__class__ is str:
                record["properties"] = loads(properties) if properties else {}
            timestamp = record.get("timestamp")
            if timestamp and (len(timestamp) != 27 or timestamp[-1] != "Z"):  # canonical UTC is the common case
                record["timestamp"] = normalise(timestamp)
            created_at = record.get("created_at")
            if created_at and (len(created_at) != 27 or created_at[-1] != "Z"):
                record["created_at"] = normalise(created_at)
            yield record
            delivered = record.get("uuid")
    except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError) as error:
        raise MalformedBody(f"a row after uuid {delivered} cannot be read ({type(error).__name__}: {error})")
