"""Reading incoming state: a corrupt or foreign state is a config error that says what to do."""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import pendulum
from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from source_posthog.api.timestamps import parse_timestamp


class StateError(AirbyteTracedException):
    def __init__(self, stream: str, problem: str):
        message = (
            f"State of stream '{stream}': {problem}. Fix: pass a state this connector wrote for '{stream}', "
            f"or reset the stream's state to sync it again from anchor_date."
        )
        super().__init__(message=message, internal_message=message, failure_type=FailureType.config_error)


def require_mapping(value: Any, stream: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise StateError(stream, f"expected an object, got {type(value).__name__}")
    return value


def state_timestamp(state: Mapping[str, Any], key: str, stream: str, required: bool = True) -> Optional[pendulum.DateTime]:
    state = require_mapping(state, stream)
    value = state.get(key)
    if value is None:
        if required:
            keys = ", ".join(sorted(state)) or "none"
            raise StateError(stream, f"has no '{key}' (keys: {keys})")
        return None
    if not isinstance(value, str):
        raise StateError(stream, f"'{key}' must be an ISO-8601 timestamp string, got {type(value).__name__}")
    try:
        return parse_timestamp(value)
    except (ValueError, pendulum.parsing.exceptions.ParserError):
        raise StateError(stream, f"'{key}' = {value[:40]!r} is not an ISO-8601 timestamp")


def not_in_future(stream: str, key: str, value: pendulum.DateTime) -> pendulum.DateTime:
    """A cursor after now would make the stream read nothing until that day: refuse it."""
    now = pendulum.now("UTC")
    if value > now:
        raise StateError(
            stream,
            f"'{key}' = {value.to_iso8601_string()} is in the future (now is {now.to_iso8601_string()}), so the stream "
            f"would read nothing until then; reset the {stream} stream",
        )
    return value


# -- one state shape: each project's own state, `{"<project_id>": state}` ----------------------


def blob_to_dict(value: Any) -> Optional[Dict[str, Any]]:
    """A state as the CDK hands it over (a dict, or its AirbyteStateBlob) as a plain dict."""
    if value is None:
        return None
    return dict(value) if isinstance(value, Mapping) else dict(vars(value))


def is_per_project(value: Mapping[str, Any]) -> bool:
    """`{"2": {...}, "3": {...}}`: this connector's state since 0.3.0 (and with several projects
    before it), and the official connector's events state."""
    return bool(value) and all(isinstance(key, str) and key.isdigit() and isinstance(item, Mapping) for key, item in value.items())


def split_by_project(value: Optional[Mapping[str, Any]], first_project: int) -> Dict[int, Dict[str, Any]]:
    """A stream's incoming state, in any shape this connector or the official one ever wrote,
    as each project's own state.

    - `{"<project_id>": state, ...}`: per project;
    - a single-project state (every earlier release with one project, the official connector's
      `{"timestamp": …}`, a full-refresh checkpoint): the project it names in `project_id`, else
      the connection's first project (`project_id` of the config), the only one it can have been
      written for. Each stream then judges it (`PostHogStream.trusted_state`)."""
    if not value:
        return {}
    if is_per_project(value):
        return {int(key): dict(item) for key, item in value.items()}
    written_for = value.get("project_id")
    owner = written_for if isinstance(written_for, int) and not isinstance(written_for, bool) else first_project
    return {owner: dict(value)}


class ProjectStates:
    """One stream's state during a sync: every project's own, keyed by project id. Projects not
    read this sync (not configured now, or missing from a listing) keep theirs."""

    def __init__(self, states: Optional[Mapping[int, Mapping[str, Any]]] = None) -> None:
        self.by_project: Dict[int, Dict[str, Any]] = {project: dict(state) for project, state in (states or {}).items()}
        self.unsent = True  # a change no STATE message has carried yet (the incoming state, at first)

    def get(self, project_id: int) -> Optional[Dict[str, Any]]:
        return self.by_project.get(project_id)

    def set(self, project_id: int, state: Mapping[str, Any]) -> None:
        self.by_project[project_id] = dict(state)
        self.unsent = True

    def as_state(self) -> Dict[str, Any]:
        return {str(project): state for project, state in sorted(self.by_project.items())}


# -- the state file: every shape a client may pass, none ignored silently ---------------------------


class StateFileError(AirbyteTracedException):
    def __init__(self, path: str, problem: str):
        message = (
            f"The state file {path}: {problem}. Fix: pass the state this connector wrote (a JSON list of Airbyte state messages, "
            f"each `{{\"type\": \"STREAM\", \"stream\": {{\"stream_descriptor\": {{\"name\": …}}, \"stream_state\": …}}}}`), or no state to sync from the start."
        )
        super().__init__(message=message, internal_message=message, failure_type=FailureType.config_error)


def stream_states_of(raw: Any, path: str, known_streams: Any, warn: Any, inform: Any) -> Dict[str, Any]:
    """stream name → its incoming state, from any shape a client passes:
    - a list of STREAM messages (the Airbyte protocol; what PyAirbyte and the platform pass);
    - a LEGACY message (`{"type": "LEGACY", "data": {stream: state}}`) or a bare object
      `{stream: state}` (Airbyte's legacy format): each stream's state is read from it;
    - a GLOBAL message: its per-stream states are read (this connector keeps no shared state).
    Empty (`[]`, `{}`) means no state: said in the log, as is every entry that names a stream this
    connector does not have. A file that is none of these is a config error saying what it holds."""
    found: Dict[str, Any] = {}

    def take(name: Any, value: Any, where: str) -> None:
        if not isinstance(name, str):
            raise StateFileError(path, f"{where} names no stream")
        if name not in known_streams:
            warn(f"The state holds a state for stream '{name}', which this connector does not have; it is not used.")
            return
        found[name] = value

    if isinstance(raw, dict):
        if not raw:
            inform("The state file holds an empty object: no stream has a state, so every stream syncs from the start.")
            return found
        inform("The state file holds a JSON object: it is read as Airbyte's legacy state, one state per stream name.")
        for name, value in raw.items():
            take(name, value, f"the key {name!r}")
        return found
    if not isinstance(raw, list):
        raise StateFileError(path, f"it holds a JSON {type(raw).__name__}, not a list of state messages")
    if not raw:
        inform("The state file holds an empty list: no stream has a state, so every stream syncs from the start.")
    for number, entry in enumerate(raw, 1):
        kind = entry.get("type") if isinstance(entry, dict) else None
        if kind == "STREAM" and isinstance(entry.get("stream"), dict):
            descriptor = entry["stream"].get("stream_descriptor")
            take(descriptor.get("name") if isinstance(descriptor, dict) else None, entry["stream"].get("stream_state"), f"entry {number}")
        elif kind == "LEGACY" and isinstance(entry.get("data"), dict):
            inform(f"Entry {number} of the state file is a LEGACY state message: its data is read as one state per stream name.")
            for name, value in entry["data"].items():
                take(name, value, f"the key {name!r} of entry {number}")
        elif kind == "GLOBAL" and isinstance(entry.get("global"), dict):
            inform(f"Entry {number} of the state file is a GLOBAL state message: its per-stream states are read (this connector keeps no shared state).")
            for stream_state in entry["global"].get("stream_states") or []:
                descriptor = stream_state.get("stream_descriptor") if isinstance(stream_state, dict) else None
                take(descriptor.get("name") if isinstance(descriptor, dict) else None, stream_state.get("stream_state"), f"a stream of entry {number}")
        else:
            raise StateFileError(path, f"entry {number} is not an Airbyte state message (type {kind!r})")
    return found
