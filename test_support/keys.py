"""Primary keys as set members: the emulator's ground truth sends composite keys as JSON lists,
records give tuples."""

from typing import Any


def hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value
