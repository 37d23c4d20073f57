import sys

from airbyte_cdk.entrypoint import launch

from source_posthog.source import SourcePosthog


def run() -> None:
    launch(SourcePosthog(), sys.argv[1:])


if __name__ == "__main__":
    run()
