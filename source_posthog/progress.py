"""How far a read is, for the Airbyte UI and the log; what it cost PostHog.

- `estimate_message`: a TRACE `ESTIMATE` (`AirbyteEstimateTraceMessage`, type STREAM) with the
  rows a stream will deliver, from the counts its plan already makes (events, sessions, persons);
  the platform draws its progress bar from it (docs/posthog-api.md § 20.6).
- `Progress`: one stream's read of one project. At each checkpoint it may log one line: when 30 s
  have passed since its last line, and when the read crosses a tenth of its estimate (estimates
  of at least `DECILE_MIN_ROWS` rows): the project, records, share of the estimate, rate, time left,
  and the requests, queries, retries and waits so far. At the end it logs the summary line.
- `sync_summary`: at the end of a sync, one line per project over every stream.
"""

from __future__ import annotations

import time
from typing import Dict, Iterable, List, Optional

from airbyte_cdk.models import AirbyteEstimateTraceMessage, AirbyteMessage, AirbyteTraceMessage, EstimateType, TraceType, Type

from source_posthog.http import Usage, plural

LINE_EVERY_SECONDS = 30
DECILE_MIN_ROWS = 10_000


def estimate_message(stream: str, rows: int) -> AirbyteMessage:
    return AirbyteMessage(
        type=Type.TRACE,
        trace=AirbyteTraceMessage(
            type=TraceType.ESTIMATE,
            emitted_at=time.time() * 1000,
            estimate=AirbyteEstimateTraceMessage(name=stream, type=EstimateType.STREAM, row_estimate=max(int(rows), 0)),
        ),
    )


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 120:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class Progress:
    def __init__(self, stream: str, project_id: int, usage: Usage, multi_project: bool = False, clock=time.monotonic) -> None:
        self.stream = stream
        self.project_id = project_id
        self.usage = usage
        self.clock = clock
        self.records = 0
        self.estimated_rows: Optional[int] = None
        self.started = clock()
        self._last_line = self.started
        self._last_decile = 0

    @property
    def where(self) -> str:
        return f"Stream {self.stream}, project {self.project_id}"

    def line(self) -> str:
        elapsed = max(self.clock() - self.started, 1e-6)
        rate = self.records / elapsed
        if self.estimated_rows:
            share = min(self.records / self.estimated_rows, 1.0)
            left = max(self.estimated_rows - self.records, 0)
            eta = f", about {duration(left / rate)} left" if rate > 0 and left / rate >= 1 else ""
            done = f"{self.records:,} of ~{self.estimated_rows:,} records ({share:.0%}), {rate:,.0f}/s{eta}"
        else:
            done = f"{self.records:,} records, {rate:,.0f}/s"
        return f"{self.where}: {done}; {self.usage.describe()} so far."

    def maybe_log(self, logger) -> None:
        now = self.clock()
        decile = int(10 * self.records / self.estimated_rows) if self.estimated_rows and self.estimated_rows >= DECILE_MIN_ROWS else 0
        if decile > self._last_decile and decile < 10 or now - self._last_line >= LINE_EVERY_SECONDS:
            self._last_decile = max(decile, self._last_decile)
            self._last_line = now
            logger.info(self.line())

    def summary(self, failed: bool = False) -> str:
        elapsed = self.clock() - self.started
        outcome = "failed after" if failed else "read"
        return f"{self.where}: {outcome} {plural(self.records, 'record')} in {duration(elapsed)}; {self.usage.describe()}."


def sync_summary(reads: Iterable["object"]) -> List[str]:
    """One line per project over every stream it read."""
    by_project: Dict[int, List] = {}
    for read in reads:
        by_project.setdefault(read.project_id, []).append(read)  # type: ignore[attr-defined]
    lines = []
    for project, parts in sorted(by_project.items()):
        usage = Usage()
        for part in parts:
            usage.add(part.usage)
        records = sum(part.progress.records for part in parts)
        streams = len({part.stream.name for part in parts})
        lines.append(f"Sync summary, project {project}: {records:,} records from {streams} stream{'s' if streams != 1 else ''}; {usage.describe()}.")
    return lines
