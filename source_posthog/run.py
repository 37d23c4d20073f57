"""The `source-posthog` command: the CDK's entrypoint with our config messages and the lean
`read` output path of `cdk_internals.py`."""

import ctypes
import ctypes.util
import sys
from typing import Any, List, Mapping, Optional

from airbyte_cdk.models import ConnectorSpecification

from source_posthog.cdk_internals import LeanReadEntrypoint, launch
from source_posthog.config import validate_against_spec
from source_posthog.source import SourcePosthog


class PostHogEntrypoint(LeanReadEntrypoint):
    @staticmethod
    def validate_connection(source_spec: ConnectorSpecification, config: Mapping[str, Any]) -> None:
        # The CDK's own check says "'my-project' is not of type 'integer'"; ours names the field
        # and the fix, and never echoes a secret.
        validate_against_spec(config, source_spec.connectionSpecification)


M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)


def one_malloc_arena() -> bool:
    """Ask glibc for a single malloc arena, before any thread starts.

    The events stream reads its HTTP answers on lane threads (streams/events.py `Lanes`) and parses
    them on the main thread. glibc gives each thread its own arena, and a page's ~40 MB freed in one
    arena is not reused by another, so peak memory grows by about a page per thread: measured at
    1M events, 242 → 200 MB with one lane and 273 → 230 MB with two (BENCHMARKS.md). The same as
    `MALLOC_ARENA_MAX=1` in the environment, which a Docker image, a shell and PyAirbyte would each
    have to set. False where the C library is not glibc (nothing changes there)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_ARENA_MAX, 1))
    except (OSError, AttributeError):
        return False


def run(args: Optional[List[str]] = None) -> None:
    one_malloc_arena()
    launch(PostHogEntrypoint(SourcePosthog()), sys.argv[1:] if args is None else args)


if __name__ == "__main__":
    run()
