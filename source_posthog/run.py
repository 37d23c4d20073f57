import sys
from typing import Any, List, Mapping, Optional

from airbyte_cdk.entrypoint import AirbyteEntrypoint
from airbyte_cdk.logger import PRINT_BUFFER
from airbyte_cdk.models import ConnectorSpecification

from source_posthog.config import validate_against_spec
from source_posthog.source import SourcePosthog


class PostHogEntrypoint(AirbyteEntrypoint):
    @staticmethod
    def validate_connection(source_spec: ConnectorSpecification, config: Mapping[str, Any]) -> None:
        # The CDK's own check says "'my-project' is not of type 'integer'"; ours names the field
        # and the fix, and never echoes a secret.
        validate_against_spec(config, source_spec.connectionSpecification)


def run(args: Optional[List[str]] = None) -> None:
    """The CDK's `launch`, with our config messages and one buffered write per message.

    `launch` prints each message with `print(message, end="")`, two writes through the CDK's
    `PrintBuffer`; at a million events that is a measurable share of a sync's CPU
    (BENCHMARKS.md). The buffer is the CDK's own, so log lines and records keep their order.
    """
    entrypoint = PostHogEntrypoint(SourcePosthog())
    parsed_args = entrypoint.parse_args(sys.argv[1:] if args is None else args)
    with PRINT_BUFFER:  # the buffer the CDK's log handler writes to: one stream, one order
        write = PRINT_BUFFER.write
        for message in entrypoint.run(parsed_args):
            write(f"{message}\n")


if __name__ == "__main__":
    run()
