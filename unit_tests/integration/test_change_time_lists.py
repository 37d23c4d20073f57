"""insights, experiments and feature_flags read by change time (issue #19, streams/base.py
`ChangeTimeList`): an incremental sync reads only the newest-first page when the changes fit in
it, new and edited items alike, and the cursor never passes a change made during the read."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Optional
from urllib.parse import parse_qs, urlsplit

import pytest
from airbyte_cdk.models import SyncMode

from unit_tests.builders import ConfigBuilder, record
from unit_tests.reader import final_state, read_stream, records

BASE = "https://us.posthog.com/api/projects/2"
T0 = datetime(2025, 5, 1, tzinfo=timezone.utc)


def iso(value: Optional[datetime]) -> Optional[str]:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if value else None


class ChangeTimeListFake:
    """A counted DRF list as PostHog serves these three: `order` straight into ORDER BY (Postgres:
    descending puts NULLs first; no tiebreak), the default order stable by id, `archived` passes,
    insights' `date_from` strict on last_modified_at, limit/offset paging."""

    def __init__(self, stream: str, change_field: str, items: List[Dict[str, Any]]) -> None:
        self.stream, self.change_field, self.items = stream, change_field, items
        self.requests: List[Dict[str, str]] = []
        self.before_full_read: Optional[Any] = None  # called on the first request without `order`

    def register(self, requests_mock: Any) -> "ChangeTimeListFake":
        requests_mock.get(f"{BASE}/{self.stream}/", json=self)
        return self

    def __call__(self, request: Any, context: Any) -> Dict[str, Any]:
        params = {key: values[0] for key, values in parse_qs(urlsplit(request.url).query).items()}
        self.requests.append(params)
        if "order" not in params and self.before_full_read is not None:
            hook, self.before_full_read = self.before_full_read, None
            hook(self)
        items = list(self.items)
        if "archived" in params:
            items = [i for i in items if i.get("archived", False) == (params["archived"] == "true")]
        elif self.stream == "feature_flags":
            items = [i for i in items if not i.get("archived")]
        if "date_from" in params:
            since = datetime.fromisoformat(params["date_from"].replace("Z", "+00:00"))
            items = [i for i in items if datetime.fromisoformat(i["last_modified_at"].replace("Z", "+00:00")) > since]
        order = params.get("order")
        if order:
            field = order.lstrip("-")
            nulls = [i for i in items if i.get(field) is None]
            rest = sorted((i for i in items if i.get(field) is not None), key=lambda i: i[field], reverse=order.startswith("-"))
            items = nulls + rest if order.startswith("-") else rest + nulls
        else:
            items = sorted(items, key=lambda i: i["id"])
        limit, offset = int(params.get("limit", 100)), int(params.get("offset", 0))
        page = items[offset:offset + limit]
        more = offset + limit < len(items)
        next_url = f"{BASE}/{self.stream}/?" + "&".join(f"{k}={v}" for k, v in {**params, "offset": offset + limit}.items()) if more else None
        return {"count": len(items), "next": next_url, "previous": None, "results": page}

    def full_reads(self) -> int:
        return len([r for r in self.requests if "order" not in r])


def insight(n: int, modified: datetime) -> Dict[str, Any]:
    return record("insights", id=n, short_id=f"s{n}", name=f"Insight {n}", created_at=iso(T0), last_modified_at=iso(modified))


def sync(stream: str, state: Optional[Dict[str, Any]] = None) -> Any:
    return read_stream(stream, SyncMode.incremental, ConfigBuilder().with_anchor_date("2025-01-01").build(), state=state)


class TestInsightsIncremental:
    def test_given_a_first_sync_then_everything_is_read_in_the_stable_order_and_the_cursor_is_the_newest_change(self, requests_mock: Any) -> None:
        fake = ChangeTimeListFake("insights", "last_modified_at", [insight(n, T0 + timedelta(hours=n)) for n in range(1, 6)]).register(requests_mock)

        output = sync("insights")

        assert sorted(r["id"] for r in records(output)) == [1, 2, 3, 4, 5]
        assert final_state(output) == {"last_modified_at": iso(T0 + timedelta(hours=5)), "project_id": 2}
        assert fake.requests[0]["order"] == "-last_modified_at" and fake.full_reads() == 1 and fake.requests[1]["basic"] == "true"

    def test_given_changes_since_the_cursor_then_one_newest_first_page_delivers_them_ties_included(self, requests_mock: Any) -> None:
        cursor = T0 + timedelta(hours=3)
        items = [insight(n, T0 + timedelta(hours=n)) for n in range(1, 6)] + [insight(9, cursor)]  # 9 ties with the cursor
        fake = ChangeTimeListFake("insights", "last_modified_at", items).register(requests_mock)

        output = sync("insights", state={"last_modified_at": iso(cursor), "project_id": 2})

        assert sorted(r["id"] for r in records(output)) == [3, 4, 5, 9]
        assert len(fake.requests) == 1 and fake.requests[0]["date_from"] == iso(cursor - timedelta(seconds=1))
        assert final_state(output)["last_modified_at"] == iso(T0 + timedelta(hours=5))

    def test_given_an_insight_edited_during_a_first_sync_then_the_cursor_stays_before_it_and_the_next_sync_reads_it(self, requests_mock: Any) -> None:
        fake = ChangeTimeListFake("insights", "last_modified_at", [insight(n, T0 + timedelta(hours=n)) for n in range(1, 4)]).register(requests_mock)
        edited_at = T0 + timedelta(hours=10)

        def edit(fake: ChangeTimeListFake) -> None:  # after the newest-first page, before the full read
            fake.items = [insight(1, edited_at) if i["id"] == 1 else i for i in fake.items]

        fake.before_full_read = edit
        first = sync("insights")
        second = sync("insights", state=final_state(first))

        assert final_state(first)["last_modified_at"] == iso(T0 + timedelta(hours=3)), "the newest change seen before the read"
        assert [r["id"] for r in records(second) if r["last_modified_at"] == iso(edited_at)] == [1]


def flag(n: int, created: datetime, updated: Optional[datetime], archived: bool = False) -> Dict[str, Any]:
    return record("feature_flags", id=n, key=f"flag-{n}", created_at=iso(created), updated_at=iso(updated), archived=archived)


class TestFeatureFlags:
    def test_given_active_and_archived_flags_when_read_in_full_then_both_passes_are_read(self, requests_mock: Any) -> None:
        ChangeTimeListFake("feature_flags", "updated_at", [flag(1, T0, None), flag(2, T0, T0, archived=True)]).register(requests_mock)

        output = read_stream("feature_flags")

        assert sorted(r["id"] for r in records(output)) == [1, 2]

    def test_given_new_never_edited_and_edited_flags_since_the_cursor_then_exactly_those_are_delivered(self, requests_mock: Any) -> None:
        cursor = T0 + timedelta(days=10)
        items = [
            flag(1, T0, None),                                   # old, never edited: no
            flag(2, T0, T0 + timedelta(days=2)),                 # edited before the cursor: no
            flag(3, T0, cursor + timedelta(hours=1)),            # edited since: yes
            flag(4, cursor + timedelta(hours=2), None),          # created since, never edited (updated_at null): yes
            flag(5, T0, cursor + timedelta(hours=3), archived=True),  # archived and edited since: yes
        ]
        fake = ChangeTimeListFake("feature_flags", "updated_at", items).register(requests_mock)

        output = sync("feature_flags", state={"updated_at": iso(cursor), "project_id": 2})

        assert sorted(r["id"] for r in records(output)) == [3, 4, 5]
        assert final_state(output)["updated_at"] == iso(cursor + timedelta(hours=3))
        assert fake.full_reads() == 0, "the changes fit in the newest-first pages: nothing else is read"


class TestExperimentsIncremental:
    def test_given_experiments_changed_in_both_passes_then_both_are_delivered_and_nothing_else(self, requests_mock: Any) -> None:
        cursor = T0 + timedelta(days=5)
        items = [record("experiments", id=n, archived=n % 2 == 0, updated_at=iso(T0 + timedelta(days=n)), created_at=iso(T0)) for n in range(1, 9)]
        ChangeTimeListFake("experiments", "updated_at", items).register(requests_mock)

        output = sync("experiments", state={"updated_at": iso(cursor), "project_id": 2})

        assert sorted(r["id"] for r in records(output)) == [5, 6, 7, 8]


@pytest.mark.parametrize("stream", ["insights", "experiments", "feature_flags"])
def test_every_change_time_stream_offers_incremental_on_its_change_field(stream: str) -> None:
    from source_posthog.source import SourcePosthog

    streams = {s.name: s for s in SourcePosthog().streams(ConfigBuilder().build())}
    airbyte_stream = streams[stream].as_airbyte_stream()
    field = {"insights": "last_modified_at", "experiments": "updated_at", "feature_flags": "updated_at"}[stream]
    assert SyncMode.incremental in airbyte_stream.supported_sync_modes and airbyte_stream.default_cursor_field == [field]
