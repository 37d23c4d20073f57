"""What `source_posthog/cdk_internals.py` assumes about airbyte-cdk, pinned so that a CDK upgrade
that changes it fails here instead of drifting (numbers refer to that module's docstring)."""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List

import pytest
from airbyte_cdk.entrypoint import AirbyteEntrypoint
from airbyte_cdk.logger import PRINT_BUFFER
from airbyte_cdk.models import (
    AirbyteCatalog,
    AirbyteConnectionStatus,
    AirbyteControlConnectorConfigMessage,
    AirbyteControlMessage,
    AirbyteErrorTraceMessage,
    AirbyteLogMessage,
    AirbyteMessage,
    AirbyteRecordMessage,
    AirbyteStateBlob,
    AirbyteStateMessage,
    AirbyteStateType,
    AirbyteStream,
    AirbyteStreamState,
    AirbyteTraceMessage,
    ConnectorSpecification,
    Level,
    OrchestratorType,
    Status,
    StreamDescriptor,
    SyncMode,
    TraceType,
    Type,
)
from airbyte_cdk.sources.connector_state_manager import HashableStreamDescriptor
from airbyte_cdk.test.catalog_builder import CatalogBuilder
from airbyte_cdk.test.mock_http import HttpMocker

from source_posthog import cdk_internals
from source_posthog.cdk_internals import LeanReadEntrypoint, message_line, record_line
from source_posthog.source import SourcePosthog
from unit_tests.builders import ConfigBuilder, PostHogRequest, PostHogResponse, numbered

STREAM_STATE = AirbyteStateMessage(
    type=AirbyteStateType.STREAM,
    stream=AirbyteStreamState(stream_descriptor=StreamDescriptor(name="events"), stream_state=AirbyteStateBlob({"timestamp": "2025-01-01T00:00:00.000000Z"})),
)
EVERY_MESSAGE_TYPE = [
    pytest.param(AirbyteMessage(type=Type.RECORD, record=AirbyteRecordMessage(stream="events", data={"uuid": "u", "n": None, "p": {"a": None}}, emitted_at=1)), id="record-with-nulls"),
    pytest.param(AirbyteMessage(type=Type.RECORD, record=AirbyteRecordMessage(stream="events", namespace="ns", data={"é": "ü", "x": [1, 2.5]}, emitted_at=2)), id="record-with-namespace-unicode"),
    pytest.param(AirbyteMessage(type=Type.STATE, state=STREAM_STATE), id="state"),
    pytest.param(AirbyteMessage(type=Type.LOG, log=AirbyteLogMessage(level=Level.INFO, message="hello")), id="log"),
    pytest.param(
        AirbyteMessage(type=Type.TRACE, trace=AirbyteTraceMessage(type=TraceType.ERROR, emitted_at=3.0, error=AirbyteErrorTraceMessage(message="m"))), id="trace"
    ),
    pytest.param(
        AirbyteMessage(
            type=Type.CONTROL,
            control=AirbyteControlMessage(type=OrchestratorType.CONNECTOR_CONFIG, emitted_at=4.0, connectorConfig=AirbyteControlConnectorConfigMessage(config={"a": 1})),
        ),
        id="control",
    ),
    pytest.param(AirbyteMessage(type=Type.SPEC, spec=ConnectorSpecification(connectionSpecification={"type": "object"})), id="spec"),
    pytest.param(AirbyteMessage(type=Type.CONNECTION_STATUS, connectionStatus=AirbyteConnectionStatus(status=Status.SUCCEEDED)), id="connection-status"),
    pytest.param(
        AirbyteMessage(type=Type.CATALOG, catalog=AirbyteCatalog(streams=[AirbyteStream(name="s", json_schema={}, supported_sync_modes=[SyncMode.full_refresh])])),
        id="catalog",
    ),
]


@pytest.mark.parametrize("message", EVERY_MESSAGE_TYPE)
def test_every_message_line_is_byte_for_byte_what_the_cdk_writes(message: AirbyteMessage) -> None:  # (3)
    assert message_line(message) == f"{AirbyteEntrypoint.airbyte_message_to_string(message)}\n".encode()


def test_the_record_fast_path_is_taken_for_plain_records() -> None:
    record = AirbyteRecordMessage(stream="events", data={"a": 1}, emitted_at=1)
    assert message_line(AirbyteMessage(type=Type.RECORD, record=record)) is not None
    assert record_line(record) == b'{"type":"RECORD","record":{"stream":"events","data":{"a":1},"emitted_at":1}}\n'


def test_record_counts_land_in_source_stats_of_the_next_state() -> None:  # (4)
    counts: Dict[HashableStreamDescriptor, float] = defaultdict(float)
    record = AirbyteMessage(type=Type.RECORD, record=AirbyteRecordMessage(stream="events", data={}, emitted_at=1))
    for _ in range(3):
        LeanReadEntrypoint.handle_record_counts(record, counts)
    state = LeanReadEntrypoint.handle_record_counts(AirbyteMessage(type=Type.STATE, state=STREAM_STATE.__class__(**vars(STREAM_STATE))), counts)
    assert state.state.sourceStats.recordCount == 3.0
    assert cdk_internals.descriptor("events", None) == HashableStreamDescriptor(name="events", namespace=None)


def test_print_buffer_is_the_buffer_the_cdk_log_handler_writes_through() -> None:  # (2)
    assert hasattr(PRINT_BUFFER, "flush") and hasattr(PRINT_BUFFER, "write")
    assert hasattr(PRINT_BUFFER, "__enter__") and hasattr(PRINT_BUFFER, "__exit__")
    with PRINT_BUFFER.lock:  # reentrant: write_lines flushes the buffer while holding it
        PRINT_BUFFER.flush()


def test_the_read_branch_of_the_cdks_run_still_has_the_steps_read_lines_repeats() -> None:  # (1)
    import inspect

    source = inspect.getsource(AirbyteEntrypoint.run)
    for step in ("ENV_REQUEST_CACHE_PATH", "read_config", "configure", "read_catalog", "read_state", "self.read(", "_emit_queued_messages"):
        assert step in source, f"AirbyteEntrypoint.run no longer does {step}: review cdk_internals.LeanReadEntrypoint.read_lines"
    assert "consume_queue" in inspect.getsource(AirbyteEntrypoint._emit_queued_messages)


def test_given_a_sync_when_read_through_our_path_then_every_line_equals_the_cdks_own_read(http_mocker: HttpMocker, tmp_path: Path) -> None:
    """The whole `read` output (records, states with sourceStats, stream statuses) of our lean path
    and of the CDK's `AirbyteEntrypoint.run`, for a two-page list with null fields."""
    first = PostHogRequest.cohorts().with_limit(1000).build()
    next_url = "https://us.posthog.com/api/projects/2/cohorts/?limit=1000&offset=1000"
    page_one = numbered("cohorts", 3, description=None)
    page_two = numbered("cohorts", 2, start=4)
    http_mocker.get(first, PostHogResponse.page("cohorts").with_records(page_one).with_next(next_url).build())
    http_mocker.get(PostHogRequest.from_next_url(next_url).build(), PostHogResponse.page("cohorts").with_records(page_two).build())
    config = tmp_path / "config.json"
    config.write_text(json.dumps(ConfigBuilder().build()))
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps(_catalog_json("cohorts")))
    args = argparse.Namespace(command="read", config=str(config), catalog=str(catalog), state=None, debug=False)

    ours = [line.decode() for line in LeanReadEntrypoint(SourcePosthog()).read_lines(args)]
    theirs = [f"{line}\n" for line in AirbyteEntrypoint(SourcePosthog()).run(args)]

    assert _without_times(ours) == _without_times(theirs)
    assert sum('"type":"RECORD"' in line for line in ours) == 5


def _catalog_json(stream: str) -> Dict[str, Any]:
    from airbyte_cdk.models import ConfiguredAirbyteCatalogSerializer

    return ConfiguredAirbyteCatalogSerializer.dump(CatalogBuilder().with_stream(stream, SyncMode.full_refresh).build())


def _without_times(lines: List[str]) -> List[Any]:
    """The lines as JSON with emitted_at and the log-only lines dropped (both paths log the same,
    but through the print buffer, not as yielded lines)."""
    out = []
    for line in lines:
        message = json.loads(line)
        for part in ("record", "trace"):
            if part in message:
                message[part].pop("emitted_at", None)
        out.append(message)
    return out


def test_the_tests_cdk_seams_still_reach_what_they_check(config: Any) -> None:
    from airbyte_cdk.test.mock_http import HttpMocker as Mocker

    from source_posthog.http import build_api_budget
    from unit_tests.support.cdk_seams import budget_used_by, rates_of, validate_all_matchers_called

    from source_posthog.streams.base import ProjectRead

    stream = SourcePosthog().streams(config)[0]
    assert budget_used_by(ProjectRead(stream, 2, incremental=False).client) is stream.sync.clients.budget
    import requests

    policy = build_api_budget().get_matching_policy(requests.Request("GET", "https://us.posthog.com/api/projects/").prepare())
    assert rates_of(policy)
    with Mocker() as mocker:
        validate_all_matchers_called(mocker)


def test_the_cdk_retry_loop_still_sleeps_backoff_plus_one_and_logs_the_line_we_replace() -> None:  # (5)
    import inspect

    from airbyte_cdk.sources.streams.http import rate_limiting

    assert rate_limiting.__name__ == cdk_internals.RETRY_MODULE
    source = inspect.getsource(rate_limiting.user_defined_backoff_handler)
    assert f"retry_after + {cdk_internals.RETRY_EXTRA_SECONDS}" in source
    assert cdk_internals.CDK_RETRY_LINE in source
    assert rate_limiting.logger.name == "airbyte"


# -- (6) how Stream.read checkpoints a stream read project by project ----------------------------------


class _ProjectsStream:
    """A minimal CDK stream read the way streams/base.py reads: one StreamSlice per project, state
    through a ProjectStatesCursor, a STATE message of its own after each project's page."""

    @staticmethod
    def build(incremental: bool, checkpoint_itself: bool) -> Any:
        from airbyte_cdk.sources.streams import CheckpointMixin, Stream
        from airbyte_cdk.sources.types import StreamSlice

        from source_posthog.cdk_internals import ProjectStatesCursor
        from source_posthog.state import ProjectStates

        class Projects(Stream, CheckpointMixin):
            primary_key = "id"
            cursor_field = "updated_at" if incremental else []

            def __init__(self) -> None:
                self.states = ProjectStates()
                self._cursor = ProjectStatesCursor(self.states)

            @property
            def state(self) -> Any:
                return self.states.as_state()

            @state.setter
            def state(self, value: Any) -> None:
                pass

            def get_cursor(self) -> Any:
                return self._cursor

            def get_json_schema(self) -> Any:
                return {"type": "object", "properties": {}}

            def stream_slices(self, **kwargs: Any) -> Any:
                yield from (StreamSlice(partition={"project_id": project}, cursor_slice={}) for project in (2, 3))

            def read_records(self, sync_mode: Any, cursor_field: Any = None, stream_slice: Any = None, stream_state: Any = None) -> Any:
                project = stream_slice["project_id"]
                yield AirbyteMessage(type=Type.RECORD, record=AirbyteRecordMessage(stream="projects", data={"id": project}, emitted_at=1))
                self.states.set(project, {"done": True})
                if checkpoint_itself:
                    self.states.unsent = False
                    yield AirbyteMessage(type=Type.STATE, state=AirbyteStateMessage(
                        type=AirbyteStateType.STREAM,
                        stream=AirbyteStreamState(stream_descriptor=StreamDescriptor(name="projects"), stream_state=AirbyteStateBlob({"mine": project})),
                    ))

        return Projects()


@pytest.mark.parametrize("incremental", [True, False], ids=["incremental", "full-refresh"])
@pytest.mark.parametrize("checkpoint_itself", [True, False], ids=["own-checkpoints", "cdk-checkpoints"])
def test_stream_read_takes_the_slices_in_order_passes_our_state_messages_and_emits_the_cursors_state_only_when_unsent(incremental: bool, checkpoint_itself: bool) -> None:  # (6)
    import logging

    from airbyte_cdk.models import ConfiguredAirbyteStream, DestinationSyncMode
    from airbyte_cdk.sources.connector_state_manager import ConnectorStateManager
    from airbyte_cdk.sources.utils.slice_logger import DebugSliceLogger
    from airbyte_cdk.sources.utils.schema_helpers import InternalConfig

    stream = _ProjectsStream.build(incremental, checkpoint_itself)
    configured = ConfiguredAirbyteStream(
        stream=AirbyteStream(name="projects", json_schema={}, supported_sync_modes=[SyncMode.full_refresh, SyncMode.incremental]),
        sync_mode=SyncMode.incremental if incremental else SyncMode.full_refresh,
        destination_sync_mode=DestinationSyncMode.append,
    )
    manager = ConnectorStateManager(state=[])

    out = list(stream.read(configured, logging.getLogger("test"), DebugSliceLogger(), {}, manager, InternalConfig()))

    kinds = [(message.type, message.record.data if message.type == Type.RECORD else vars(message.state.stream.stream_state)) for message in out]
    if checkpoint_itself:  # ours, unchanged, after each project; nothing more from the CDK
        assert kinds == [(Type.RECORD, {"id": 2}), (Type.STATE, {"mine": 2}), (Type.RECORD, {"id": 3}), (Type.STATE, {"mine": 3})]
    else:  # the cursor's state (every project's) after each project
        assert kinds == [
            (Type.RECORD, {"id": 2}), (Type.STATE, {"2": {"done": True}}),
            (Type.RECORD, {"id": 3}), (Type.STATE, {"2": {"done": True}, "3": {"done": True}}),
        ]


def test_the_completed_and_no_cursor_states_are_what_the_cdk_writes() -> None:  # (7)
    from airbyte_cdk.sources.streams.checkpoint import FullRefreshCheckpointReader

    reader = FullRefreshCheckpointReader([{}])
    while reader.next() is not None:
        pass
    assert reader.get_checkpoint() == cdk_internals.NO_CURSOR_STATE
    assert cdk_internals.FULL_REFRESH_COMPLETE == {"__ab_full_refresh_sync_complete": True}


def test_a_failed_sync_ends_with_one_summary_typed_config_error_whatever_failed() -> None:  # (8)
    import logging

    from airbyte_cdk.models import FailureType
    from airbyte_cdk.sources import AbstractSource
    from airbyte_cdk.sources.streams import Stream
    from airbyte_cdk.utils.traced_exception import AirbyteTracedException

    class Failing(Stream):
        primary_key = None

        def get_json_schema(self) -> Any:
            return {}

        def read_records(self, *args: Any, **kwargs: Any) -> Any:
            raise AirbyteTracedException(message="PostHog is down", failure_type=FailureType.transient_error)
            yield  # pragma: no cover

    class Source(AbstractSource):
        def check_connection(self, *args: Any) -> Any:
            return True, None

        def streams(self, config: Any) -> Any:
            return [Failing()]

    catalog = CatalogBuilder().with_stream("failing", SyncMode.full_refresh).build()
    with pytest.raises(AirbyteTracedException) as raised:
        list(Source().read(logging.getLogger("test"), {}, catalog, []))

    assert raised.value.failure_type == FailureType.config_error
    assert (raised.value.message or "").startswith(cdk_internals.CDK_SUMMARY_PREFIX)


def test_the_cdk_logs_finished_syncing_after_each_stream_and_after_the_sync() -> None:  # (9)
    import inspect

    from airbyte_cdk.sources import abstract_source

    source = inspect.getsource(abstract_source.AbstractSource.read)
    assert f'logger.info(f"{cdk_internals.CDK_STREAM_FINISHED}{{configured_stream.stream.name}}")' in source
    assert f'logger.info(f"{cdk_internals.CDK_STREAM_FINISHED}{{self.name}}")' in source


# -- what export_mode file_download relies on (public API, pinned all the same) ----------------------


def test_the_cdks_http_client_hands_back_a_302_it_was_told_is_success_without_following_it() -> None:
    """streams/exported.py: PostHog's export download answers 302 to a presigned URL on another host;
    the client (allow_redirects=False) must return it, so the Location is fetched without the key."""
    import requests_mock

    from source_posthog.config import parse_config
    from source_posthog.http import Clients, build_api_budget

    clients = Clients(parse_config({"api_key": "phx_abc", "project_id": 2, "host": "http://127.0.0.1:1"}), build_api_budget())
    url = "http://127.0.0.1:1/api/projects/2/file_download_batch_exports/r/download/f/"
    with requests_mock.Mocker() as mocker:
        mocker.get(url, status_code=302, headers={"Location": "https://store.example/key?X-Amz-Signature=s"})
        response, body = clients.client("events", "batch_export:read", 2, accepts_redirect=True).get(url)
    assert (response.status_code, response.headers["Location"], body) == (302, "https://store.example/key?X-Amz-Signature=s", b"")
    assert len(mocker.request_history) == 1, "not followed"


def test_a_stream_whose_cursor_field_is_a_property_is_discovered_incremental_only_when_it_names_one() -> None:
    """streams/persons.py: persons are incremental with export_mode file_download only."""
    source = SourcePosthog()
    for mode, modes in (("hogql", [SyncMode.full_refresh]), ("file_download", [SyncMode.full_refresh, SyncMode.incremental])):
        (persons,) = [stream for stream in source.streams({"api_key": "phx_abc", "project_id": 2, "export_mode": mode}) if stream.name == "persons"]
        airbyte_stream = persons.as_airbyte_stream()
        assert airbyte_stream.supported_sync_modes == modes
        assert airbyte_stream.default_cursor_field == (["changed_at"] if mode == "file_download" else None)
