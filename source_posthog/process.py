"""Process tuning, in one place an operator can see and override: one malloc arena.

The events read receives its HTTP answers on lane threads (streams/query_lanes.py) and decodes
them on the main thread. glibc gives each thread its own malloc arena, and a page's ~40 MB freed
in one arena is not reused by another, so peak memory grows by about a page per thread: measured
at 1M events, 242 → 200 MB with one lane and 273 → 230 MB with two (BENCHMARKS.md). glibc reads
`MALLOC_ARENA_MAX` from the environment at start; the Docker image sets `MALLOC_ARENA_MAX=1`, and
for a shell or PyAirbyte run without it the command asks glibc for the same (`mallopt`) before any
thread starts. Set `MALLOC_ARENA_MAX` yourself (any value) and it is left as you set it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import Optional

M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)
ARENA_ENV = "MALLOC_ARENA_MAX"


def one_malloc_arena() -> Optional[str]:
    """What was done, for the log: None where the C library is not glibc (nothing changes)."""
    if os.environ.get(ARENA_ENV):
        return f"{ARENA_ENV}={os.environ[ARENA_ENV]} from the environment"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return f"one malloc arena (mallopt; set {ARENA_ENV} to choose)" if libc.mallopt(M_ARENA_MAX, 1) else None
    except (OSError, AttributeError):
        return None
