"""Reading incoming state: a corrupt or foreign state is a config error that says what to do."""

from __future__ import annotations

from typing import Any, Mapping, Optional

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
