from source_posthog.source import SourcePosthog

__all__ = ["SourcePosthog"]
