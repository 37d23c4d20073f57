"""The `source-posthog` command: the CDK's entrypoint with our config messages and the lean
`read` output path of `cdk_internals.py`."""

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


def run(args: Optional[List[str]] = None) -> None:
    launch(PostHogEntrypoint(SourcePosthog()), sys.argv[1:] if args is None else args)


if __name__ == "__main__":
    run()
