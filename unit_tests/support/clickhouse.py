"""ClickHouse's order of UUIDs, for the tests' fakes of PostHog (docs/posthog-api.md § 20.1).

ClickHouse compares UUIDs by their second half first: ordered,
`ffffffff-0000-0000-0000-000000000000` comes before `00000000-0000-0000-ffff-000000000000`.
`events.uuid`, `persons.id` and `person_distinct_ids.person_id` are UUIDs, so a fake that sorts
or compares them as text would hide a client that assumes text order."""

from __future__ import annotations

from typing import Tuple


def uuid_order(value: str) -> Tuple[str, str]:
    text = str(value).lower()
    return text[19:23] + text[24:], text[0:8] + text[9:13] + text[14:18]


def scrambled_half(n: int, bits: int) -> int:
    """A first half that varies with n out of order, so that text order differs from ClickHouse's."""
    return (n * 2654435761) & ((1 << bits) - 1)
