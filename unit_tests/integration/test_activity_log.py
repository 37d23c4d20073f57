"""activity_log: newest first in DRF cursor pages, incremental on `created_at` (issue #19)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Optional
from urllib.parse import parse_qs, urlsplit

from airbyte_cdk.models import FailureType, SyncMode

from unit_tests.builders import ConfigBuilder
from unit_tests.reader import config_errors, final_state, read_stream, records

URL = "https://us.posthog.com/api/projects/2/activity_log/"
T0 = datetime(2025, 5, 1, tzinfo=timezone.utc)


def iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entry(n: int, created: datetime, scope: str = "FeatureFlag") -> Dict[str, Any]:
    return {"id": f"0190f6a2-0000-7000-8000-{n:012x}", "user": {"id": 1, "email": "a@example.com"}, "activity": "updated", "item_id": str(n),
            "scope": scope, "detail": {"name": f"flag {n}", "changes": [{"type": scope, "field": "active", "before": False, "after": True}]},
            "created_at": iso(created), "was_impersonated": False, "is_system": False}


class CursorPagedLog:
    """PostHog's CursorPagination on (-created_at, -id): the cursor travels in `next`."""

    def __init__(self, entries: List[Dict[str, Any]], page_size: int = 3) -> None:
        self.entries = sorted(entries, key=lambda e: (e["created_at"], e["id"]), reverse=True)
        self.page_size = page_size
        self.pages_served = 0

    def __call__(self, request: Any, context: Any) -> Dict[str, Any]:
        params = {k: v[0] for k, v in parse_qs(urlsplit(request.url).query).items()}
        start = int(params.get("cursor", 0))
        page = self.entries[start:start + self.page_size]
        self.pages_served += 1
        more = start + self.page_size < len(self.entries)
        return {"next": f"{URL}?cursor={start + self.page_size}&page_size={params.get('page_size')}" if more else None, "previous": None, "results": page}


def sync(requests_mock: Any, log: CursorPagedLog, state: Optional[Dict[str, Any]] = None, anchor: str = "2025-01-01") -> Any:
    requests_mock.get(URL, json=log)
    return read_stream("activity_log", SyncMode.incremental, ConfigBuilder().with_anchor_date(anchor).build(), state=state)


def test_given_a_first_sync_then_the_whole_log_is_delivered_newest_first_with_detail_an_object(requests_mock: Any) -> None:
    log = CursorPagedLog([entry(n, T0 + timedelta(days=n)) for n in range(10)])

    output = sync(requests_mock, log, anchor="2025-05-05")  # the log's history is read whole, before anchor_date too

    assert [r["item_id"] for r in records(output)] == [str(n) for n in range(9, -1, -1)]
    assert isinstance(records(output)[0]["detail"], dict)
    assert final_state(output) == {"created_at": iso(T0 + timedelta(days=9)), "project_id": 2}
    assert log.pages_served == 4


def test_given_a_cursor_then_only_the_pages_down_to_it_are_read_and_ties_are_delivered_again(requests_mock: Any) -> None:
    cursor = T0 + timedelta(days=7)
    log = CursorPagedLog([entry(n, T0 + timedelta(days=n)) for n in range(10)] + [entry(77, cursor, scope="Insight")])

    output = sync(requests_mock, log, state={"created_at": iso(cursor), "project_id": 2})

    assert [r["item_id"] for r in records(output)] == ["9", "8", "77", "7"]  # every scope; 7 and 77 tie with the cursor
    assert log.pages_served == 2


def test_given_a_key_without_activity_log_read_then_the_error_names_the_scope(requests_mock: Any) -> None:
    requests_mock.get(URL, status_code=403, json={"type": "authentication_error", "code": "permission_denied", "detail": "API key missing required scope 'activity_log:read'", "attr": None})

    output = read_stream("activity_log", SyncMode.incremental, expecting_exception=True)

    (error, *_) = config_errors(output)
    assert error.failure_type == FailureType.config_error and "'activity_log:read'" in error.message
