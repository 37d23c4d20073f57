"""Timestamps: parse anything PostHog sends, write UTC ISO-8601 with microseconds."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Callable, Mapping

import pendulum

ISO_UTC = "%Y-%m-%dT%H:%M:%S.%fZ"


def parse_timestamp(value: Any) -> pendulum.DateTime:
    """A PostHog timestamp (any offset) or date → aware UTC datetime. Raises ValueError."""
    if isinstance(value, datetime):
        parsed = pendulum.instance(value)
    else:
        parsed = pendulum.parse(str(value), tz="UTC")
        if not isinstance(parsed, pendulum.DateTime):
            if isinstance(parsed, pendulum.Date):
                parsed = pendulum.datetime(parsed.year, parsed.month, parsed.day, tz="UTC")
            else:
                raise ValueError(f"{value!r} is not a timestamp")
    return parsed.in_timezone("UTC")


def utc_iso(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime(ISO_UTC)


def to_utc_iso(value: str) -> str:
    """Normalise a PostHog timestamp string to `YYYY-MM-DDTHH:MM:SS.ffffffZ`.

    HogQL returns DateTimes in the project's timezone; the fast path keeps strings that are
    already in the canonical form.
    """
    if len(value) == 27 and value[-1] == "Z" and value[10] == "T":
        return value
    return utc_iso(parse_timestamp(value))


def state_timestamp(state: Mapping[str, Any], key: str, invalid: Callable[[str], Exception]) -> pendulum.DateTime:
    """`state[key]` as a timestamp; raises `invalid(why)` when it is not an ISO-8601 string."""
    value = state.get(key)
    if not isinstance(value, str):
        raise invalid(f"'{key}' must be an ISO-8601 timestamp string, got {type(value).__name__}")
    try:
        return parse_timestamp(value)
    except ValueError:
        raise invalid(f"'{key}' = {value[:40]!r} is not an ISO-8601 timestamp") from None
