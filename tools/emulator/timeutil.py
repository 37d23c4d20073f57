"""Time helpers shared by the emulator modules.

Storage format (sortable text, UTC): ``YYYY-MM-DD HH:MM:SS.ffffff`` so that SQLite compares
timestamps correctly as strings.

Wire formats (posthog-api.md):
- HogQL results: ``2024-06-01T00:00:01.123000Z`` (§ 4.2, project timezone UTC);
- legacy events list: ``2024-06-01T00:00:01.123000+00:00`` (§ 3.3, ClickhouseEventSerializer isoformat);
- DRF serializers: ``2024-05-01T12:00:00.123456Z`` (§ 3).
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_DT_RE = re.compile(
    r"^\s*(\d{4})-(\d{2})-(\d{2})"
    r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?)?"
    r"\s*(Z|[+-]\d{2}(?::?\d{2})?)?\s*$",
    re.IGNORECASE,
)
_RELATIVE_RE = re.compile(r"^-(\d+)([hdwmyHDWMY]|M)$")


def utcnow() -> datetime:
    return datetime.now(UTC)


def parse_datetime(text: str, tz: timezone | None = None) -> datetime:
    """Parse an ISO-8601-ish date or date-time string into an aware UTC datetime.

    Accepts ``YYYY-MM-DD``, ``YYYY-MM-DD HH:MM[:SS[.f{1,9}]]``, a ``T`` separator and an optional
    ``Z`` / ``+HH:MM`` suffix (what ClickHouse's best-effort parser and DRF accept).
    Fractions beyond microseconds are truncated. A naive value is read in ``tz`` (default UTC).
    Raises ValueError for anything else.
    """
    m = _DT_RE.match(text)
    if not m:
        raise ValueError(f"cannot parse {text!r} as a date-time")
    year, month, day, hh, mm, ss, frac, off = m.groups()
    micro = int((frac or "0")[:6].ljust(6, "0"))
    naive = datetime(int(year), int(month), int(day), int(hh or 0), int(mm or 0), int(ss or 0), micro)
    if off:
        if off.upper() == "Z":
            offset = timezone.utc
        else:
            sign = -1 if off[0] == "-" else 1
            digits = off[1:].replace(":", "")
            hours, minutes = int(digits[:2]), int(digits[2:4] or 0)
            offset = timezone(sign * timedelta(hours=hours, minutes=minutes))
        return naive.replace(tzinfo=offset).astimezone(UTC)
    if tz is None:
        return naive.replace(tzinfo=UTC)
    return naive.replace(tzinfo=tz).astimezone(UTC)


def parse_relative_or_absolute(text: str, now: datetime) -> datetime:
    """PostHog's ``relative_date_parse``: ``-3d``, ``-24h``, ``-2w``, ``-1m`` (month), ``-1y`` or an ISO date.

    Relative values are exact offsets from ``now`` (no truncation to the start of the day).
    """
    m = _RELATIVE_RE.match(text.strip())
    if m:
        n, unit = int(m.group(1)), m.group(2).lower()
        days = {"h": n / 24, "d": n, "w": 7 * n, "m": 30 * n, "y": 365 * n}[unit]
        try:
            return now - timedelta(days=days)
        except OverflowError:
            raise ValueError(f"relative date {text!r} is out of range") from None
    return parse_datetime(text)


def to_db(dt: datetime) -> str:
    """Aware datetime -> storage text ``YYYY-MM-DD HH:MM:SS.ffffff`` (UTC)."""
    d = dt.astimezone(UTC)
    return "%04d-%02d-%02d %02d:%02d:%02d.%06d" % (d.year, d.month, d.day, d.hour, d.minute, d.second, d.microsecond)


def from_db(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)


def us_to_db(us: int) -> str:
    """Epoch microseconds -> storage text (fast path used by the bulk generator)."""
    sec, micro = divmod(us, 1_000_000)
    t = time.gmtime(sec)
    return "%04d-%02d-%02d %02d:%02d:%02d.%06d" % (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, micro)


def dt_to_us(dt: datetime) -> int:
    delta = dt.astimezone(UTC) - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def us_to_dt(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def db_to_iso_z(text: str) -> str:
    """Storage text -> ``2024-06-01T00:00:01.123000Z`` (HogQL results, DRF datetimes)."""
    return text[:10] + "T" + text[11:] + "Z"


def db_to_iso_offset(text: str) -> str:
    """Storage text -> ``2024-06-01T00:00:01.123000+00:00`` (legacy events list)."""
    return text[:10] + "T" + text[11:] + "+00:00"


def iso_z(dt: datetime) -> str:
    """Aware datetime -> DRF style ``2024-05-01T12:00:00.123456Z``."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def iso_z_seconds(dt: datetime) -> str:
    """Aware datetime -> ``2024-06-01T09:00:00Z`` (second precision, as in several § 3 examples)."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
