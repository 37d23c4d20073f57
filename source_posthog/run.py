import sys
from typing import List, Optional

from airbyte_cdk.entrypoint import AirbyteEntrypoint
from airbyte_cdk.logger import PRINT_BUFFER

from source_posthog.source import SourcePosthog


def run(args: Optional[List[str]] = None) -> None:
    """The CDK's `launch`, with one buffered write per message.

    `launch` prints each message with `print(message, end="")`, two writes through the CDK's
    `PrintBuffer`; at a million events a sync that is a measurable share of the CPU (BENCHMARKS.md).
    The buffer is the CDK's own, so log lines and records keep their order.
    """
    entrypoint = AirbyteEntrypoint(SourcePosthog())
    parsed_args = entrypoint.parse_args(sys.argv[1:] if args is None else args)
    with PRINT_BUFFER:  # the buffer the CDK's log handler writes to: one stream, one order
        write = PRINT_BUFFER.write
        for message in entrypoint.run(parsed_args):
            write(f"{message}\n")


if __name__ == "__main__":
    run()
