"""Named constants: page sizes, windows, limits and timeouts, each with the PostHog fact behind it.

Everything that is a tuning knob lives here, so stream code reads as behaviour, not numbers.
"""

from datetime import timedelta

DEFAULT_HOST = "us.posthog.com"
DEFAULT_ANCHOR_AGE = timedelta(days=365)

# -- Page sizes ---------------------------------------------------------------------------------
# DRF LimitOffsetPagination has no max_limit in PostHog, so counted lists take large pages.
LIST_PAGE_SIZE = 1000
# Persons are built from an ActorsQuery: deep offsets are slow, so stay at <= 1000 (docs/posthog-api.md 3.2).
# This is the REST list's page: the fallback for a key without `query:read`.
PERSONS_PAGE_SIZE = 1000
# Persons through HogQL (streams/persons.py): keyset pages on `id` of this many persons (~0.5 KB each,
# PostHog caps an explicit LIMIT at 50,000), then their distinct ids in requests of up to this many
# rows (a person can have thousands; a page of persons has ~1.6 per person).
PERSONS_QUERY_PAGE_SIZE = 25_000
PERSONS_DISTINCT_IDS_PAGE_SIZE = 50_000
# Cohort membership pairs are two ids (~50 bytes): pages at PostHog's cap on returned rows.
COHORT_MEMBERS_PAGE_SIZE = 50_000
# Session recordings default to 50 a page; the list is a ClickHouse query, keep pages moderate.
RECORDINGS_PAGE_SIZE = 200

# -- Events (HogQL) -----------------------------------------------------------------------------
# An explicit LIMIT is silently capped at 50,000 by PostHog (posthog/hogql/constants.py).
EVENTS_PAGE_SIZE_DEFAULT = 25_000
EVENTS_PAGE_SIZE_MAX = 50_000
EVENTS_PAGE_SIZE_MIN = 1_000
# Events reach ClickHouse a little after PostHog stamps their `created_at`; never read the last
# minutes, so the ingestion watermark never passes an event that is not yet visible
# (emulator runs shorten it: seams.py).
EVENTS_INGESTION_LAG = timedelta(seconds=120)
# PostHog stamps `created_at` before the row reaches ClickHouse: seconds normally, 20+ minutes in
# incidents, hours on some self-hosted instances (docs/posthog-api.md § 11.1). Events that become
# queryable up to this long after their `created_at` are delivered (per-minute counts in state).
EVENTS_VISIBILITY_TOLERANCE_MINUTES_DEFAULT = 30
EVENTS_VISIBILITY_TOLERANCE_MINUTES_MAX = 24 * 60
# PostHog runs at most 3 API queries at once per project (docs/posthog-api.md § 11.2); the product
# contract allows 2 in flight: the page being read, and the next window's first page.
EVENTS_QUERIES_IN_FLIGHT_MAX = 2
# Late events (offline mobile clients): re-swept on every incremental sync over this horizon.
EVENTS_LOOKBACK_WINDOW_DAYS_DEFAULT = 7
EVENTS_LOOKBACK_WINDOW_DAYS_MAX = 90

# -- Session recordings --------------------------------------------------------------------------
# The recordings list defaults date_from to -3d, so it is always sent explicitly.
# Ongoing recordings grow after they are first seen: incremental syncs re-read from the
# earliest recording that was still ongoing (kept in state, capped).
RECORDINGS_MAX_TRACKED_ONGOING = 1000
# A recording can appear in the list after a later one has moved the cursor past its start:
# each sync re-reads this far before the cursor and emits the recordings it had not seen.
RECORDINGS_LOOKBACK = timedelta(hours=6)
RECORDINGS_MAX_TRACKED_RECENT = 20_000
# A recording still `ongoing` two days after it started is not followed any more.
RECORDINGS_ONGOING_MAX_AGE = timedelta(days=2)

# -- Sessions (HogQL `sessions` table, read by ingestion time: streams/sessions.py) -------------------
# Session rows are ~1 KB of scalars: moderate pages keep each page's aggregation fast.
SESSIONS_PAGE_SIZE = 10_000

# -- HTTP -------------------------------------------------------------------------------------
CONNECT_TIMEOUT_SECONDS = 10
READ_TIMEOUT_SECONDS_DEFAULT = 120
REQUESTS_PER_SECOND = 3
# 429: exponential backoff, honouring Retry-After; 5xx/connection errors/timeouts: linear.
RATE_LIMIT_MAX_RETRIES = 5
RATE_LIMIT_BACKOFF_BASE_SECONDS = 5
RATE_LIMIT_MAX_WAIT_SECONDS = 3600
# PostHog's hourly read budget for API queries (posthog/api_queries_budget.py) answers 429
# api_queries_budget_exceeded with a Retry-After that can be most of an hour: waits up to this
# long are waited out; a longer one ends the sync with a transient error naming when to run again.
QUERY_BUDGET_MAX_WAIT_SECONDS = 900
SERVER_ERROR_MAX_RETRIES = 3
SERVER_ERROR_BACKOFF_STEP_SECONDS = 5
# PostHog's published per-key limits (posthog/rate_limit.py), per endpoint class:
# (per minute, per hour).
RATE_LIMITS = {
    "crud": (480, 4800),
    "analytics": (240, 1200),
    "query": (240, 2400),
}

# -- File-download exports (export_mode file_download: source_posthog/api/exports.py) ----------------
# PostHog refuses an interval longer than a week (FILE_DOWNLOAD_MAX_RANGE, docs/posthog-api.md § 20.4).
EXPORT_WINDOW_MAX = timedelta(days=7)
# PostHog runs at most 20 file-download exports at once per team (its docs' figure for
# BATCH_EXPORT_MAX_CONCURRENT_ON_DEMAND_PER_TEAM); a 21st answers 429 too_many_concurrent_file_downloads.
# One stream keeps at most this many in flight, leaving the rest to the team's other users.
EXPORT_RUNS_IN_FLIGHT = 5
# A run is Starting for seconds, waits a minute past its interval's end, then queries and uploads.
EXPORT_POLL_SECONDS = 5.0
# A run that ends FailedRetryable, TimedOut, Terminated or Cancelled is started again, at most this
# many times per window, before the sync stops (resumably) naming the status.
EXPORT_RUN_MAX_ATTEMPTS = 3
# Files of at most this size (MiB, compressed); PostHog's default is 1024.
EXPORT_FILE_MAX_SIZE_MB = 256
# A fetch from the object store that fails (a reset, a 5xx, an expired link) is retried through a
# new link from PostHog at most this many times per file.
EXPORT_DOWNLOAD_MAX_ATTEMPTS = 4
# Persons are grouped per person across a run's files (one line per distinct id, in no order):
# up to this many lines in memory, beyond that in hash buckets on disk.
EXPORT_PERSONS_LINES_IN_MEMORY = 25_000
