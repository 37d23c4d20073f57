"""session_recordings: `{"results", "has_next", "version"}` with offset paging, incremental on start_time.

PostHog's list defaults `date_from` to three days back, so it is always sent: the anchor_date on a
first sync, the cursor (or the earliest still-ongoing recording) afterwards.
"""

from __future__ import annotations

from typing import Any, Dict, List

from airbyte_cdk.models import FailureType, SyncMode
from airbyte_cdk.test.mock_http import HttpMocker

from unit_tests.builders import PROJECT_ID, PostHogRequest, PostHogResponse, record
from unit_tests.reader import as_emitted, config_errors, final_state, read_stream, records

LIMIT = 200
ANCHOR = "2025-05-01T00:00:00Z"


def recordings_request(date_from: str, offset: int = 0) -> Any:
    request = PostHogRequest.session_recordings().with_limit(LIMIT).with_date_from(date_from).with_order("start_time", "ASC")
    return (request.with_offset(offset) if offset else request).build()


def recording(n: int, start_time: str, ongoing: bool = False, duration: int = 300) -> Dict[str, Any]:
    return record("session_recordings", id=f"0190f6a2-aaaa-7bbb-8ccc-{n:012d}", start_time=start_time, ongoing=ongoing, recording_duration=duration)


def page(items: List[Dict[str, Any]], has_next: bool) -> Any:
    return PostHogResponse.page("session_recordings").with_records(items).with_has_next(has_next).build()


def ids(output: Any) -> List[str]:
    return [item["id"] for item in records(output)]


class TestSessionRecordingsFullRefresh:
    def test_when_read_then_date_from_is_the_anchor_date_and_pages_follow_has_next_by_offset(self, http_mocker: HttpMocker) -> None:
        first_page = [recording(n, f"2025-05-02T00:{n // 60:02d}:{n % 60:02d}Z") for n in range(LIMIT)]
        second_page = [recording(1000 + n, f"2025-05-03T00:00:{n:02d}Z") for n in range(3)]
        first, second = recordings_request(ANCHOR), recordings_request(ANCHOR, offset=LIMIT)
        http_mocker.get(first, page(first_page, has_next=True))
        http_mocker.get(second, page(second_page, has_next=False))

        output = read_stream("session_recordings", SyncMode.full_refresh)

        assert records(output) == as_emitted(first_page + second_page)
        http_mocker.assert_number_of_calls(first, 1)
        http_mocker.assert_number_of_calls(second, 1)

    def test_given_a_state_when_read_full_refresh_then_date_from_is_still_the_anchor_date(self, http_mocker: HttpMocker) -> None:
        request = recordings_request(ANCHOR)
        http_mocker.get(request, page([recording(1, "2025-05-02T00:00:00Z")], has_next=False))

        output = read_stream("session_recordings", SyncMode.full_refresh, state={"start_time": "2025-05-20T00:00:00.000000Z", "ongoing": {}})

        assert len(records(output)) == 1
        http_mocker.assert_number_of_calls(request, 1)

    def test_given_has_next_with_empty_page_when_read_then_paging_stops(self, http_mocker: HttpMocker) -> None:
        request = recordings_request(ANCHOR)
        http_mocker.get(request, page([], has_next=True))

        output = read_stream("session_recordings", SyncMode.full_refresh)

        assert records(output) == []
        http_mocker.assert_number_of_calls(request, 1)

    def test_given_key_without_scope_when_read_then_config_error_naming_the_scope(self, http_mocker: HttpMocker) -> None:
        request = recordings_request(ANCHOR)
        http_mocker.get(request, PostHogResponse.forbidden_scope("session_recording:read").build())

        output = read_stream("session_recordings", expecting_exception=True)

        (error, *_) = config_errors(output)
        assert error.failure_type == FailureType.config_error and "'session_recording:read'" in error.message
        http_mocker.assert_number_of_calls(request, 1)


class TestSessionRecordingsIncremental:
    def test_given_no_state_when_read_then_date_from_is_anchor_date_and_state_is_max_start_time(self, http_mocker: HttpMocker) -> None:
        items = [recording(1, "2025-05-02T10:00:00Z"), recording(2, "2025-05-30T08:30:00.250000Z"), recording(3, "2025-05-10T00:00:00Z")]
        request = recordings_request(ANCHOR)
        http_mocker.get(request, page(items, has_next=False))

        output = read_stream("session_recordings", SyncMode.incremental)

        assert records(output) == as_emitted(items)
        # `recent`: the ids seen inside the lookback before the cursor (6 h), to spot late arrivals next time
        assert final_state(output) == {"start_time": "2025-05-30T08:30:00.250000Z", "ongoing": {}, "recent": [items[1]["id"]], "project_id": PROJECT_ID}
        http_mocker.assert_number_of_calls(request, 1)

    def test_given_state_when_read_then_date_from_is_the_lookback_before_cursor_and_only_unseen_recordings(self, http_mocker: HttpMocker) -> None:
        seen = recording(1, "2025-05-19T23:00:00Z")
        at_cursor = recording(4, "2025-05-20T00:00:00Z")
        newer = recording(2, "2025-05-21T00:00:00Z")
        request = recordings_request("2025-05-19T18:00:00Z")  # cursor minus the 6 h lookback
        http_mocker.get(request, page([seen, at_cursor, newer], has_next=False))
        state = {"start_time": "2025-05-20T00:00:00.000000Z", "ongoing": {}, "recent": [seen["id"], at_cursor["id"]]}

        output = read_stream("session_recordings", SyncMode.incremental, state=state)

        assert ids(output) == [newer["id"]]
        assert final_state(output) == {"start_time": "2025-05-21T00:00:00.000000Z", "ongoing": {}, "recent": [newer["id"]], "project_id": PROJECT_ID}

    def test_given_recording_that_appeared_after_the_cursor_passed_its_start_when_read_then_it_is_emitted_once(self, http_mocker: HttpMocker) -> None:
        seen = recording(1, "2025-05-20T00:00:00Z")
        appeared_late = recording(3, "2025-05-19T22:00:00Z")  # started before the cursor, listed only now
        request = recordings_request("2025-05-19T18:00:00Z")
        http_mocker.get(request, page([appeared_late, seen], has_next=False))
        state = {"start_time": "2025-05-20T00:00:00.000000Z", "ongoing": {}, "recent": [seen["id"]]}

        first = read_stream("session_recordings", SyncMode.incremental, state=state)
        assert ids(first) == [appeared_late["id"]]

        second = read_stream("session_recordings", SyncMode.incremental, state=final_state(first))
        assert ids(second) == []

    def test_given_ongoing_recording_when_next_sync_then_it_is_read_again_and_emitted_updated(self, http_mocker: HttpMocker) -> None:
        growing = recording(1, "2025-05-20T10:00:00Z", ongoing=True, duration=60)
        finished = recording(2, "2025-05-20T11:00:00Z")
        first_sync = recordings_request(ANCHOR)
        http_mocker.get(first_sync, page([growing, finished], has_next=False))

        first = read_stream("session_recordings", SyncMode.incremental)
        first_state = final_state(first)
        assert first_state == {
            "start_time": "2025-05-20T11:00:00.000000Z",
            "ongoing": {growing["id"]: "2025-05-20T10:00:00.000000Z"},
            "recent": [growing["id"], finished["id"]],
            "project_id": PROJECT_ID,
        }

        grown = {**growing, "ongoing": False, "recording_duration": 900}
        newer = recording(3, "2025-05-21T00:00:00Z")
        second_sync = recordings_request("2025-05-20T05:00:00Z")  # cursor minus the lookback (before the ongoing one)
        http_mocker.get(second_sync, page([grown, finished, newer], has_next=False))

        second = read_stream("session_recordings", SyncMode.incremental, state=first_state)

        assert records(second) == as_emitted([grown, newer])  # `finished` was complete and already delivered
        assert final_state(second) == {"start_time": "2025-05-21T00:00:00.000000Z", "ongoing": {}, "recent": [newer["id"]], "project_id": PROJECT_ID}
        http_mocker.assert_number_of_calls(second_sync, 1)

    def test_given_recording_still_ongoing_when_next_sync_then_it_stays_tracked(self, http_mocker: HttpMocker) -> None:
        growing = recording(1, "2025-05-20T10:00:00Z", ongoing=True, duration=600)
        request = recordings_request("2025-05-20T04:00:00Z")
        http_mocker.get(request, page([growing], has_next=False))
        state = {"start_time": "2025-05-20T10:00:00.000000Z", "ongoing": {growing["id"]: "2025-05-20T10:00:00.000000Z"}, "recent": [growing["id"]]}

        output = read_stream("session_recordings", SyncMode.incremental, state=state)

        assert ids(output) == [growing["id"]]
        assert final_state(output) == {**state, "project_id": PROJECT_ID}

    def test_given_ongoing_recording_older_than_two_days_before_cursor_when_read_then_it_is_no_longer_followed(self, http_mocker: HttpMocker) -> None:
        stale_id = "0190f6a2-aaaa-7bbb-8ccc-000000000777"
        request = recordings_request("2025-05-19T18:00:00Z")  # not from the stale recording's start
        http_mocker.get(request, page([recording(5, "2025-05-20T06:00:00Z")], has_next=False))
        state = {"start_time": "2025-05-20T00:00:00.000000Z", "ongoing": {stale_id: "2025-05-10T00:00:00.000000Z"}}

        output = read_stream("session_recordings", SyncMode.incremental, state=state)

        assert len(records(output)) == 1
        http_mocker.assert_number_of_calls(request, 1)

    def test_given_corrupt_state_when_read_then_config_error_that_says_how_to_fix(self, http_mocker: HttpMocker) -> None:
        output = read_stream(
            "session_recordings", SyncMode.incremental, state={"start_time": "yesterday'; DROP TABLE", "ongoing": {}}, expecting_exception=True
        )

        (error, *_) = config_errors(output)
        assert "session_recordings" in error.message and "reset" in error.message
