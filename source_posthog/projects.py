"""Several PostHog projects in one connection (`project_id`, `additional_project_ids`, `all_projects`).

Every stream reads one project at a time (its config's `project_id`). A sync reads each configured
stream for each project in turn, through the CDK's own `read`, and this module adapts what comes
out of it, in one place:

- each RECORD gets `project_id` (an integer), also with one project, so tables of several
  connections can be unioned;
- with several projects, each STATE becomes the stream's per-project state, `{"<project_id>":
  <that project's state>}`: the projects not read yet keep the state they came in with, so a kill
  at any moment leaves a state every project resumes from. With one project the state keeps its
  single-project shape (which names its `project_id`), as in the first release. Both shapes are
  read: adding a project keeps the first one's state, removing one drops its state (with a log
  line), and the official connector's events state (`{"<project_id>": {"timestamp": …}}`, the same
  shape) is accepted for every configured project it names;
- a stream's status is STARTED once, before its first project, and COMPLETE (or INCOMPLETE) once,
  after its last;
- a project whose part fails (a 403 or 404 naming the project, retries exhausted, …) does not stop
  the others: they still sync and checkpoint, and the sync then fails naming what did not sync.

Streams run one after another and projects one after another, with one request budget for the
whole connection: at most two requests are in flight whatever the number of projects.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from airbyte_cdk.models import (
    AirbyteMessage,
    AirbyteStateBlob,
    AirbyteStateMessage,
    AirbyteStateType,
    AirbyteStreamState,
    AirbyteStreamStatus,
    ConfiguredAirbyteCatalog,
    FailureType,
    StreamDescriptor,
    TraceType,
    Type,
)
from airbyte_cdk.utils.stream_status_utils import as_airbyte_message
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

PROJECT_FIELD = "project_id"


def blob_to_dict(value: Any) -> Optional[Dict[str, Any]]:
    if value is None:
        return None
    return dict(value) if isinstance(value, Mapping) else dict(vars(value))


def is_per_project(value: Mapping[str, Any]) -> bool:
    """`{"2": {...}, "3": {...}}`: this connector's per-project state, or the official connector's events state."""
    return bool(value) and all(isinstance(key, str) and key.isdigit() and isinstance(item, Mapping) for key, item in value.items())


def split_state(value: Optional[Mapping[str, Any]], primary_project: int) -> Dict[int, Dict[str, Any]]:
    """A stream's incoming state → each project's own state.

    A state of the single-project form (this connector before several projects, or a full-refresh
    checkpoint) belongs to the project it names in `project_id`, else to `project_id` of the config:
    the stream then judges it as before (`PostHogStream.owns`, `incoming_state`)."""
    if not value:
        return {}
    if is_per_project(value):
        return {int(key): dict(item) for key, item in value.items()}
    written_for = value.get(PROJECT_FIELD)
    return {written_for if isinstance(written_for, int) and not isinstance(written_for, bool) else primary_project: dict(value)}


@dataclass
class StreamStates:
    """The per-project states of one stream during a sync: what came in, updated as projects checkpoint."""

    states: Dict[int, Dict[str, Any]] = field(default_factory=dict)
    per_project: bool = True

    def update(self, project_id: int, state: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
        if state is not None:
            self.states[project_id] = dict(state)
        if not self.per_project:
            return dict(self.states.get(project_id, {}))
        return {str(project): value for project, value in self.states.items()}


def state_message(stream: str, project_state: Mapping[str, Any]) -> AirbyteStateMessage:
    return AirbyteStateMessage(
        type=AirbyteStateType.STREAM,
        stream=AirbyteStreamState(stream_descriptor=StreamDescriptor(name=stream), stream_state=AirbyteStateBlob(dict(project_state))),
    )


@dataclass
class ProjectsRead:
    """One sync over several projects; see the module's docstring."""

    projects: Sequence[int]
    catalog: ConfiguredAirbyteCatalog
    incoming: Mapping[str, Dict[int, Dict[str, Any]]]  # stream → project → state
    logger: logging.Logger
    anchor: str = ""
    failures: List[Tuple[str, int, str]] = field(default_factory=list)  # (stream, project, message)

    def run(self, read_one: Any) -> Iterator[AirbyteMessage]:
        """`read_one(project_id, configured_catalog, state_messages)` is the CDK's read of one
        stream for one project."""
        for configured in self.catalog.streams:
            name = configured.stream.name
            states = StreamStates({project: state for project, state in self.incoming.get(name, {}).items() if project in self.projects}, len(self.projects) > 1)
            dropped = sorted(set(self.incoming.get(name, {})) - set(self.projects))
            if dropped:
                self.logger.warning(
                    f"Stream {name}: the state written for project {', '.join(map(str, dropped))} is dropped: this connection does not read "
                    f"that project (it reads {', '.join(map(str, self.projects))}). A project without a state of its own is read from the "
                    f"start (from anchor_date {self.anchor} where the stream is incremental)."
                )
            started = running = False
            failed = False
            for project in self.projects:
                one = ConfiguredAirbyteCatalog(streams=[configured])
                incoming = states.states.get(project)
                state = [state_message(name, incoming)] if incoming is not None else []
                try:
                    for message in read_one(project, one, state):
                        if message.type == Type.RECORD:
                            message.record.data[PROJECT_FIELD] = project
                        elif message.type == Type.STATE and message.state.stream is not None:
                            composite = states.update(project, blob_to_dict(message.state.stream.stream_state))
                            message.state.stream.stream_state = AirbyteStateBlob(composite)
                        elif message.type == Type.TRACE and message.trace.type == TraceType.STREAM_STATUS:
                            status = message.trace.stream_status.status
                            if status == AirbyteStreamStatus.STARTED and not started:
                                started = True
                            elif status == AirbyteStreamStatus.RUNNING and not running:
                                running = True
                            else:
                                if status == AirbyteStreamStatus.INCOMPLETE:
                                    failed = True
                                continue  # COMPLETE/INCOMPLETE once, after the last project
                        yield message
                except AirbyteTracedException as error:  # the CDK's summary after a failed stream
                    failed = True
                    self.failures.append((name, project, error.message or ""))
                    continue
            yield as_airbyte_message(configured.stream, AirbyteStreamStatus.INCOMPLETE if failed else AirbyteStreamStatus.COMPLETE)
        if self.failures:
            parts = ", ".join(f"{stream} (project {project})" for stream, project, _ in self.failures)
            message = (
                f"During the sync, the following streams did not sync successfully: {parts}. The other projects and streams synced and checkpointed; "
                "the errors above say what to fix, and the next sync resumes from the last state."
            )
            raise AirbyteTracedException(message=message, internal_message=message, failure_type=FailureType.config_error)

