"""annotations: incremental on `updated_at`, filtered on the client (PostHog has no such filter).

The list is ordered `-date_marker`, not by `updated_at`, so the whole list is read every sync and
the cursor moves only once all of it has been read.
"""

from __future__ import annotations

from typing import Any, Dict, List

from airbyte_cdk.models import SyncMode
from airbyte_cdk.test.mock_http import HttpMocker

from unit_tests.builders import PROJECT_ID, PostHogRequest, PostHogResponse, record
from unit_tests.reader import as_emitted, final_state, read_stream, records, states

LIMIT = 1000
NEXT = f"https://us.posthog.com/api/projects/2/annotations/?limit={LIMIT}&offset={LIMIT}"


def annotation(annotation_id: int, updated_at: Any, date_marker: str = "2025-05-01T09:00:00Z") -> Dict[str, Any]:
    return record("annotations", id=annotation_id, updated_at=updated_at, date_marker=date_marker)


# Ordered by -date_marker as PostHog does; updated_at is in no particular order.
PAGE_ONE = [
    annotation(1, "2025-05-03T00:00:00.000000Z", "2025-05-30T00:00:00Z"),
    annotation(2, "2025-05-10T12:00:00.000000Z", "2025-05-20T00:00:00Z"),
]
PAGE_TWO = [
    annotation(3, "2025-05-07T00:00:00.000000Z", "2025-05-10T00:00:00Z"),
    annotation(4, "2025-04-01T00:00:00.000000Z", "2025-04-01T00:00:00Z"),
]


def serve(http_mocker: HttpMocker, first: List[Dict[str, Any]], second: List[Dict[str, Any]]) -> Any:
    request_one = PostHogRequest.annotations().with_limit(LIMIT).build()
    request_two = PostHogRequest.from_next_url(NEXT).build()
    http_mocker.get(request_one, PostHogResponse.page("annotations").with_records(first).with_count(len(first) + len(second)).with_next(NEXT).build())
    http_mocker.get(request_two, PostHogResponse.page("annotations").with_records(second).with_count(len(first) + len(second)).build())
    return request_one, request_two


class TestAnnotationsFullRefresh:
    def test_when_read_full_refresh_then_every_annotation_is_emitted(self, http_mocker: HttpMocker) -> None:
        request_one, request_two = serve(http_mocker, PAGE_ONE, PAGE_TWO)

        output = read_stream("annotations", SyncMode.full_refresh)

        assert records(output) == as_emitted(PAGE_ONE + PAGE_TWO)
        http_mocker.assert_number_of_calls(request_one, 1)
        http_mocker.assert_number_of_calls(request_two, 1)

    def test_given_a_state_when_read_full_refresh_then_the_state_is_ignored(self, http_mocker: HttpMocker) -> None:
        serve(http_mocker, PAGE_ONE, PAGE_TWO)

        output = read_stream("annotations", SyncMode.full_refresh, state={"updated_at": "2025-05-09T00:00:00.000000Z", "project_id": PROJECT_ID})

        assert len(records(output)) == 4


class TestAnnotationsIncremental:
    def test_given_no_state_when_read_then_every_annotation_is_emitted_and_state_is_max_updated_at(self, http_mocker: HttpMocker) -> None:
        serve(http_mocker, PAGE_ONE, PAGE_TWO)

        output = read_stream("annotations", SyncMode.incremental)

        assert records(output) == as_emitted(PAGE_ONE + PAGE_TWO)
        assert final_state(output) == {"updated_at": "2025-05-10T12:00:00.000000Z", "project_id": PROJECT_ID}

    def test_given_state_when_read_then_only_annotations_updated_after_it(self, http_mocker: HttpMocker) -> None:
        serve(http_mocker, PAGE_ONE, PAGE_TWO)

        output = read_stream("annotations", SyncMode.incremental, state={"updated_at": "2025-05-07T00:00:00.000000Z", "project_id": PROJECT_ID})

        # id 3 was updated exactly at the cursor: it was delivered by the sync that wrote this state.
        assert [item["id"] for item in records(output)] == [2]
        assert final_state(output) == {"updated_at": "2025-05-10T12:00:00.000000Z", "project_id": PROJECT_ID}

    def test_given_nothing_newer_when_read_then_no_records_and_state_is_kept(self, http_mocker: HttpMocker) -> None:
        serve(http_mocker, PAGE_ONE, PAGE_TWO)

        output = read_stream("annotations", SyncMode.incremental, state={"updated_at": "2025-05-10T12:00:00.000000Z", "project_id": PROJECT_ID})

        assert records(output) == []
        assert final_state(output) == {"updated_at": "2025-05-10T12:00:00.000000Z", "project_id": PROJECT_ID}

    def test_when_read_then_the_cursor_moves_only_after_the_whole_list(self, http_mocker: HttpMocker) -> None:
        # Page one holds the newest updated_at; checkpointing it before page two would skip id 3 after a crash.
        serve(http_mocker, PAGE_ONE, PAGE_TWO)

        output = read_stream("annotations", SyncMode.incremental, state={"updated_at": "2025-05-05T00:00:00.000000Z", "project_id": PROJECT_ID})

        assert [item["id"] for item in records(output)] == [2, 3]
        assert all(state == {"updated_at": "2025-05-10T12:00:00.000000Z", "project_id": PROJECT_ID} for state in states(output))
        message_types = [message.type.value for message in output.records_and_state_messages]
        assert message_types == ["RECORD", "RECORD", "STATE"]

    def test_given_annotation_never_updated_when_read_then_created_at_is_its_cursor(self, http_mocker: HttpMocker) -> None:
        never_updated = record("annotations", id=9, updated_at=None, created_at="2025-05-20T00:00:00.000000Z")
        http_mocker.get(PostHogRequest.annotations().with_limit(LIMIT).build(), PostHogResponse.page("annotations").with_records([never_updated]).build())

        output = read_stream("annotations", SyncMode.incremental, state={"updated_at": "2025-05-10T00:00:00.000000Z", "project_id": PROJECT_ID})

        assert [item["id"] for item in records(output)] == [9]
        assert final_state(output) == {"updated_at": "2025-05-20T00:00:00.000000Z", "project_id": PROJECT_ID}

    def test_given_state_with_offset_when_read_then_it_is_compared_in_utc(self, http_mocker: HttpMocker) -> None:
        serve(http_mocker, PAGE_ONE, PAGE_TWO)

        # 2025-05-07T02:00:00+02:00 == 2025-05-07T00:00:00Z
        output = read_stream("annotations", SyncMode.incremental, state={"updated_at": "2025-05-07T02:00:00+02:00", "project_id": PROJECT_ID})

        assert [item["id"] for item in records(output)] == [2]
