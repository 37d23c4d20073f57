"""The `source-posthog` command: the CDK's entrypoint with our config messages, the lean `read`
output path of `cdk_internals.py`, and the process tuning of `process.py`."""

import logging
import sys
from typing import Any, List, Mapping, Optional

from airbyte_cdk.models import ConnectorSpecification

from source_posthog.cdk_internals import LeanReadEntrypoint, launch
from source_posthog.config import validate_against_spec
from source_posthog.process import one_malloc_arena
from source_posthog.source import SourcePosthog


class PostHogEntrypoint(LeanReadEntrypoint):
    @staticmethod
    def validate_connection(source_spec: ConnectorSpecification, config: Mapping[str, Any]) -> None:
        # The CDK's own check says "'my-project' is not of type 'integer'"; ours names the field
        # and the fix, and never echoes a secret.
        validate_against_spec(config, source_spec.connectionSpecification)


def run(args: Optional[List[str]] = None) -> None:
    tuned = one_malloc_arena()  # before any thread starts (source_posthog/process.py)
    if tuned:
        logging.getLogger("airbyte").debug(f"Process: {tuned}.")
    launch(PostHogEntrypoint(SourcePosthog()), sys.argv[1:] if args is None else args)


if __name__ == "__main__":
    run()
