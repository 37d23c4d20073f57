"""source-posthog: the Airbyte source connector for PostHog.

`SourcePosthog` is loaded on first use, so that importing the PostHog layer (`source_posthog.api`)
alone loads neither the CDK nor the streams (unit_tests/test_layout.py)."""

from typing import Any

__all__ = ["SourcePosthog"]


def __getattr__(name: str) -> Any:
    if name == "SourcePosthog":
        from source_posthog.source import SourcePosthog

        return SourcePosthog
    raise AttributeError(f"module 'source_posthog' has no attribute {name!r}")
