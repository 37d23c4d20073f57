"""Run the connector the way the platform does (`read` through the entrypoint) and inspect the output."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional

from airbyte_cdk.models import AirbyteMessageSerializer, AirbyteStateMessage, FailureType, SyncMode
from airbyte_cdk.test.catalog_builder import CatalogBuilder
from airbyte_cdk.test.entrypoint_wrapper import EntrypointOutput, read
from airbyte_cdk.test.state_builder import StateBuilder

from source_posthog.source import SourcePosthog
from unit_tests.builders import ConfigBuilder


def read_stream(
    stream: str,
    sync_mode: SyncMode = SyncMode.full_refresh,
    config: Optional[Mapping[str, Any]] = None,
    state: Optional[Mapping[str, Any]] = None,
    expecting_exception: bool = False,
) -> EntrypointOutput:
    catalog = CatalogBuilder().with_stream(stream, sync_mode).build()
    state_messages: Optional[List[AirbyteStateMessage]] = (
        StateBuilder().with_stream_state(stream, dict(state)).build() if state is not None else None
    )
    return read(
        SourcePosthog(),
        dict(config) if config is not None else ConfigBuilder().build(),
        catalog,
        state_messages,
        expecting_exception=expecting_exception,
    )


def records(output: EntrypointOutput, project_id: int = 2) -> List[Dict[str, Any]]:
    """The records as PostHog's API shaped them: each must carry the `project_id` it was read
    from (the connector adds it, source_posthog/projects.py), which is checked and taken off."""
    data = [message.record.data for message in output.records]
    wrong = [record.get("project_id") for record in data if record.get("project_id") != project_id]
    assert not wrong, f"records must carry project_id {project_id}, some carry {wrong[:3]}"
    return [{key: value for key, value in record.items() if key != "project_id"} for record in data]


def composite_states(output: EntrypointOutput) -> List[Dict[str, Any]]:
    """Every STATE the stream emitted, as plain dicts, in order: `{"<project_id>": state}`."""
    return [_blob(message.state.stream.stream_state) for message in output.state_messages]


def states(output: EntrypointOutput, project_id: int = 2) -> List[Dict[str, Any]]:
    """One project's part of every STATE the stream emitted, in order. Each STATE is the stream's
    whole state, every project's (`{"<project_id>": state}`): checked here."""
    found = []
    for state in composite_states(output):
        assert set(state) and all(key.isdigit() for key in state), f"a STATE must be keyed by project id, got {sorted(state)}"
        found.append(state[str(project_id)])
    return found


def final_state(output: EntrypointOutput, project_id: int = 2) -> Dict[str, Any]:
    return states(output, project_id)[-1]


def _blob(blob: Any) -> Dict[str, Any]:
    return json.loads(json.dumps(blob.__dict__, default=lambda value: value.__dict__))


def errors(output: EntrypointOutput) -> List[Any]:
    """The TRACE error payloads (message, internal_message, failure_type, stack_trace)."""
    return [message.trace.error for message in output.errors]


def the_error(output: EntrypointOutput) -> Any:
    """The single error a failed sync must report (the CDK may add a summary error naming the stream)."""
    found = errors(output)
    assert found, "expected the sync to fail with a TRACE error"
    return found[0]


def config_errors(output: EntrypointOutput) -> List[Any]:
    return [error for error in errors(output) if error.failure_type == FailureType.config_error]


def everything_emitted(output: EntrypointOutput) -> str:
    """All messages (records, state, logs, traces, statuses) as one JSON text, for leak scans."""
    lines = [json.dumps(AirbyteMessageSerializer.dump(message), default=str) for message in output.get_message_iterator()]
    return "\n".join(lines)


def as_emitted(items: Any) -> Any:
    """What a record looks like on the wire: the CDK's serializer (omit_none) drops top-level null fields."""
    if isinstance(items, list):
        return [as_emitted(item) for item in items]
    return {key: value for key, value in items.items() if value is not None}


def run_check(config: Mapping[str, Any]) -> EntrypointOutput:
    """`source-posthog check --config ...` through the entrypoint, as the platform runs it."""
    import tempfile
    from pathlib import Path

    from airbyte_cdk.test.entrypoint_wrapper import _run_command, make_file

    with tempfile.TemporaryDirectory() as directory:
        path = make_file(Path(directory) / "config.json", dict(config))
        return _run_command(SourcePosthog(), ["check", "--config", path])


def connection_status(output: EntrypointOutput) -> Any:
    (message,) = output.connection_status_messages
    return message.connectionStatus
