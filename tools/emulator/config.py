"""EmulatorConfig: everything that shapes the emulated PostHog (data, page caps, limits, faults)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from . import conditions as cond
from . import timeutil as tu
from .exports import ExportSettings
from .faults import FaultConfig


@dataclass
class EmulatorConfig:
    events: int = 10_000  # number of events in project PROJECT_ID
    seed: int = 1  # all data is a pure function of (seed, events, base_time, events_span_days)
    base_time: datetime | None = None  # dataset "now" (UTC); None → current time rounded down to the minute
    events_span_days: float = 30  # events spread over [base_time - span, base_time - 20 minutes]
    persons: int | None = None  # persons of project 2 (None: events / 20, at least 50)
    heavy_persons: int = 0  # persons with many distinct ids (the k-th gets heavy_distinct_ids // (k + 1) more)
    heavy_distinct_ids: int = 5000
    legacy_events_page_cap: int | None = 1000  # GET /events/ limit cap; None = honour any limit
    legacy_events_max_offset: int | None = 50_000  # offset above this → 400; None = unlimited
    rate_limits: bool = False  # enforce PostHog's rate limits and the query concurrency limit
    rate_scale: float = 1.0  # divide every limit window (and Retry-After) by this
    faults: FaultConfig = field(default_factory=FaultConfig)
    data_dir: str | Path | None = None  # SQLite cache; default <repo>/.emulator-cache/
    # Extras (not in PostHog's docs, knobs for tests and benchmarks):
    query_queue_timeout: float | None = None  # how long a 4th concurrent query waits for a slot before its 429
    #                                           (None: 1 s, or 30 s with realistic=True)
    query_latency: float = 0.0  # artificial seconds per /query/ request, spent holding a concurrency slot
    key_introspection: bool = True  # GET /api/personal_api_keys/@current/ (False: 404, as older PostHog versions)
    # HogQL `sessions`: every project's sessionTableVersion team modifier ("auto" = v2, PostHog's default;
    # "v2"; "v3"), and per-project exceptions {project_id: version} (README "HogQL").
    sessions_table_version: str = "auto"
    project_sessions_table_versions: dict[int, str] = field(default_factory=dict)
    # Operating conditions (README "Operating conditions", posthog-api.md § 11). All off by default;
    # realistic=True switches every one on (a field left at None takes the preset's value).
    realistic: bool = False
    visibility_delay_seconds: float | None = None  # rows queryable at created_at + this (None: 0, realistic 30)
    query_cost_model: bool | None = None  # sleep the modeled execution time; enforce the execution limit
    query_time_scale: float = 1.0  # multiplies every modeled sleep (e.g. 0.01 in tests)
    query_overhead_seconds: float = cond.DEFAULT_OVERHEAD_SECONDS
    query_seconds_per_row: float = cond.DEFAULT_SECONDS_PER_ROW  # per full-width row scanned
    query_seconds_per_byte: float = cond.DEFAULT_SECONDS_PER_BYTE  # per byte returned
    query_max_execution_seconds: float | None = cond.DEFAULT_MAX_EXECUTION_SECONDS  # of modeled time
    query_concurrency_limit: bool | None = None  # the 3-slot queue even without rate_limits
    query_concurrency: int = cond.DEFAULT_CONCURRENCY
    query_budget_bytes_per_hour: float | None = None  # read budget refill; 0/None = off (realistic 20 GB/h)
    query_budget_capacity_bytes: float | None = None  # None = 24 h of refill
    # File-download batch exports (exports.py, README "File-download exports"): timeline scale, waits,
    # link lifetime, per-team limit.
    exports: ExportSettings = field(default_factory=ExportSettings)

    def __post_init__(self) -> None:
        if self.events < 0:
            raise ValueError("events must be >= 0")
        if (self.persons is not None and self.persons < 1) or self.heavy_persons < 0 or self.heavy_distinct_ids < 1:
            raise ValueError("persons must be >= 1, heavy_persons >= 0 and heavy_distinct_ids >= 1")
        if self.rate_scale <= 0:
            raise ValueError("rate_scale must be > 0")
        for version in (self.sessions_table_version, *self.project_sessions_table_versions.values()):
            if version not in ("auto", "v2", "v3"):
                raise ValueError(f"a sessions table version is 'auto', 'v2' or 'v3', not {version!r}")
        self.project_sessions_table_versions = {int(k): v for k, v in self.project_sessions_table_versions.items()}
        if self.faults is None:
            self.faults = FaultConfig()
        if self.exports is None:
            self.exports = ExportSettings()
        real = bool(self.realistic)
        if self.query_queue_timeout is None:
            self.query_queue_timeout = cond.REALISTIC_QUEUE_TIMEOUT if real else 1.0
        if self.visibility_delay_seconds is None:
            self.visibility_delay_seconds = cond.REALISTIC_VISIBILITY_DELAY if real else 0.0
        if self.query_cost_model is None:
            self.query_cost_model = real
        if self.query_concurrency_limit is None:
            self.query_concurrency_limit = real
        if self.query_budget_bytes_per_hour is None:
            self.query_budget_bytes_per_hour = cond.REALISTIC_BUDGET_BYTES_PER_HOUR if real else 0.0
        if self.visibility_delay_seconds < 0:
            raise ValueError("visibility_delay_seconds must be >= 0")
        self.query_conditions().validate()

    def query_conditions(self) -> cond.QueryConditions:
        return cond.QueryConditions(
            cost_model=bool(self.query_cost_model), time_scale=float(self.query_time_scale),
            overhead_seconds=float(self.query_overhead_seconds), seconds_per_row=float(self.query_seconds_per_row),
            seconds_per_byte=float(self.query_seconds_per_byte), max_execution_seconds=self.query_max_execution_seconds,
            concurrency_limit=bool(self.query_concurrency_limit), concurrency=int(self.query_concurrency),
            queue_timeout=float(self.query_queue_timeout), budget_bytes_per_hour=float(self.query_budget_bytes_per_hour),
            budget_capacity_bytes=self.query_budget_capacity_bytes)

    def resolved_base_time(self) -> datetime:
        """The dataset's "now": the given base_time (naive = UTC) or the current minute."""
        if self.base_time is None:
            return tu.utcnow().replace(second=0, microsecond=0)
        if self.base_time.tzinfo is None:
            return self.base_time.replace(tzinfo=tu.UTC)
        return self.base_time.astimezone(tu.UTC)

    def to_cli_args(self) -> list[str]:
        """The ``python -m tools.emulator`` options that reproduce this config."""
        args = ["--events", str(self.events), "--seed", str(self.seed),
                "--span-days", repr(float(self.events_span_days)),
                "--legacy-page-cap", "none" if self.legacy_events_page_cap is None else str(self.legacy_events_page_cap),
                "--legacy-max-offset",
                "none" if self.legacy_events_max_offset is None else str(self.legacy_events_max_offset),
                "--rate-scale", repr(float(self.rate_scale)),
                "--fault-seed", str(self.faults.seed), "--slow-seconds", repr(float(self.faults.slow_seconds)),
                "--query-queue-timeout", repr(float(self.query_queue_timeout)),
                "--query-latency", repr(float(self.query_latency))]
        if self.base_time is not None:
            args += ["--base-time", self.resolved_base_time().isoformat()]
        if self.persons is not None:
            args += ["--persons", str(self.persons)]
        if self.heavy_persons:
            args += ["--heavy-persons", str(self.heavy_persons), "--heavy-distinct-ids", str(self.heavy_distinct_ids)]
        if self.rate_limits:
            args.append("--rate-limits")
        if not self.key_introspection:
            args.append("--no-key-introspection")
        if self.sessions_table_version != "auto":
            args += ["--sessions-table-version", self.sessions_table_version]
        for project, version in sorted(self.project_sessions_table_versions.items()):
            args += ["--project-sessions-table-version", f"{project}={version}"]
        if self.faults.rates:
            args += ["--faults", self.faults.to_spec()]
        if self.data_dir is not None:
            args += ["--data-dir", str(self.data_dir)]
        # operating conditions: resolved values (so --realistic is not needed), only when not the defaults
        if self.visibility_delay_seconds:
            args += ["--visibility-delay", repr(float(self.visibility_delay_seconds))]
        if self.query_cost_model:
            args.append("--query-cost-model")
        if self.query_concurrency_limit:
            args.append("--query-concurrency-limit")
        if self.query_budget_bytes_per_hour:
            args += ["--query-budget-bytes-per-hour", repr(float(self.query_budget_bytes_per_hour))]
        if self.query_budget_capacity_bytes is not None:
            args += ["--query-budget-capacity-bytes", repr(float(self.query_budget_capacity_bytes))]
        for flag, value, default in (
                ("--query-time-scale", self.query_time_scale, 1.0),
                ("--query-overhead", self.query_overhead_seconds, cond.DEFAULT_OVERHEAD_SECONDS),
                ("--query-seconds-per-row", self.query_seconds_per_row, cond.DEFAULT_SECONDS_PER_ROW),
                ("--query-seconds-per-byte", self.query_seconds_per_byte, cond.DEFAULT_SECONDS_PER_BYTE),
                ("--query-concurrency", self.query_concurrency, cond.DEFAULT_CONCURRENCY)):
            if value != default:
                args += [flag, repr(value)]
        if self.exports.to_spec():
            args += ["--exports", self.exports.to_spec()]
        if self.query_max_execution_seconds != cond.DEFAULT_MAX_EXECUTION_SECONDS:
            args += ["--query-max-execution-seconds", "none" if self.query_max_execution_seconds is None
                     else repr(float(self.query_max_execution_seconds))]
        return args
