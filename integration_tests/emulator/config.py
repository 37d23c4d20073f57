"""EmulatorConfig: everything that shapes the emulated PostHog (data, page caps, limits, faults)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from . import timeutil as tu
from .faults import FaultConfig


@dataclass
class EmulatorConfig:
    events: int = 10_000  # number of events in project PROJECT_ID
    seed: int = 1  # all data is a pure function of (seed, events, base_time, events_span_days)
    base_time: datetime | None = None  # dataset "now" (UTC); None → current time rounded down to the minute
    events_span_days: float = 30  # events spread over [base_time - span, base_time - 20 minutes]
    legacy_events_page_cap: int | None = 1000  # GET /events/ limit cap; None = honour any limit
    legacy_events_max_offset: int | None = 50_000  # offset above this → 400; None = unlimited
    rate_limits: bool = False  # enforce PostHog's rate limits and the query concurrency limit
    rate_scale: float = 1.0  # divide every limit window (and Retry-After) by this
    faults: FaultConfig = field(default_factory=FaultConfig)
    data_dir: str | Path | None = None  # SQLite cache; default <repo>/.emulator-cache/
    # Extras (not in PostHog's docs, knobs for tests and benchmarks):
    query_queue_timeout: float = 1.0  # how long a 4th concurrent query waits for a slot before its 429
    query_latency: float = 0.0  # artificial seconds per /query/ request, spent holding a concurrency slot

    def __post_init__(self) -> None:
        if self.events < 0:
            raise ValueError("events must be >= 0")
        if self.rate_scale <= 0:
            raise ValueError("rate_scale must be > 0")
        if self.faults is None:
            self.faults = FaultConfig()

    def resolved_base_time(self) -> datetime:
        """The dataset's "now": the given base_time (naive = UTC) or the current minute."""
        if self.base_time is None:
            return tu.utcnow().replace(second=0, microsecond=0)
        if self.base_time.tzinfo is None:
            return self.base_time.replace(tzinfo=tu.UTC)
        return self.base_time.astimezone(tu.UTC)

    def to_cli_args(self) -> list[str]:
        """The ``python -m integration_tests.emulator`` options that reproduce this config."""
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
        if self.rate_limits:
            args.append("--rate-limits")
        if self.faults.rates:
            args += ["--faults", self.faults.to_spec()]
        if self.data_dir is not None:
            args += ["--data-dir", str(self.data_dir)]
        return args
