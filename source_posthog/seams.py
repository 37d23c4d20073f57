"""Three knobs for runs against the bundled PostHog emulator only (the tests, the demo, the
benchmarks). Leave both unset against PostHog: each defaults to production behaviour.

- `SOURCE_POSTHOG_INGESTION_LAG_SECONDS` (default 120, `settings.EVENTS_INGESTION_LAG`): the events
  range ends this long before now. The emulator makes an event queryable the instant it is ingested
  unless told otherwise, so its runs use a second or two instead of waiting two minutes.
- `SOURCE_POSTHOG_RATE_LIMIT_SCALE` (default 1): every pacing window of the request budget is
  divided by it (http.build_api_budget), for runs against the emulator's scaled-down limits.
- `SOURCE_POSTHOG_EXPORT_POLL_SECONDS` (default 5, `settings.EXPORT_POLL_SECONDS`): the pause
  between two polls of a file-download export run, for the emulator's scaled-down run timeline.
"""

from __future__ import annotations

import os
from datetime import timedelta

from source_posthog import settings

INGESTION_LAG_ENV = "SOURCE_POSTHOG_INGESTION_LAG_SECONDS"
RATE_LIMIT_SCALE_ENV = "SOURCE_POSTHOG_RATE_LIMIT_SCALE"
EXPORT_POLL_ENV = "SOURCE_POSTHOG_EXPORT_POLL_SECONDS"


def events_ingestion_lag() -> timedelta:
    value = os.environ.get(INGESTION_LAG_ENV)
    try:
        return timedelta(seconds=float(value)) if value else settings.EVENTS_INGESTION_LAG
    except ValueError:
        return settings.EVENTS_INGESTION_LAG


def rate_limit_scale() -> float:
    try:
        return max(float(os.environ.get(RATE_LIMIT_SCALE_ENV, "1")), 1e-6)
    except ValueError:
        return 1.0


def export_poll_seconds() -> float:
    try:
        return max(float(os.environ.get(EXPORT_POLL_ENV) or settings.EXPORT_POLL_SECONDS), 0.0)
    except ValueError:
        return settings.EXPORT_POLL_SECONDS
