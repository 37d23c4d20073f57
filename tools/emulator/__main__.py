"""CLI: ``python -m tools.emulator [options]``.

Prints exactly one line ``READY http://127.0.0.1:PORT`` on stdout once it serves, then nothing
else on stdout; stops on SIGTERM/SIGINT (removing its private working copy of the data).
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Sequence

from . import conditions as cond
from . import timeutil as tu
from .config import EmulatorConfig
from .exports import ExportSettings
from .faults import FaultConfig
from .server import EmulatorServer


def _int_or_none(text: str) -> int | None:
    return None if text.lower() in ("none", "null", "off", "") else int(text)


def _float_or_none(text: str) -> float | None:
    return None if text.lower() in ("none", "null", "off", "") else float(text)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.emulator", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = a free port")
    p.add_argument("--events", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--base-time", default=None, help="dataset 'now' (ISO, UTC); default: the current minute")
    p.add_argument("--span-days", type=float, default=30.0)
    p.add_argument("--persons", type=int, default=None, help="persons of project 2 (default: events / 20, at least 50)")
    p.add_argument("--heavy-persons", type=int, default=0, help="persons with many distinct ids")
    p.add_argument("--heavy-distinct-ids", type=int, default=5000, help="extra distinct ids of the first heavy person (k-th: / (k+1))")
    p.add_argument("--legacy-page-cap", type=_int_or_none, default=1000, help="GET /events/ limit cap or 'none'")
    p.add_argument("--legacy-max-offset", type=_int_or_none, default=50_000, help="GET /events/ max offset or 'none'")
    p.add_argument("--rate-limits", action="store_true", help="enforce PostHog's rate limits")
    p.add_argument("--rate-scale", type=float, default=1.0, help="divide every limit window by this")
    p.add_argument("--faults", default="", help='e.g. "500=0.05,502=0.02,429=0.03,reset=0.01,truncate=0.01,slow=0.01"')
    p.add_argument("--fault-seed", type=int, default=0)
    p.add_argument("--slow-seconds", type=float, default=5.0)
    p.add_argument("--query-queue-timeout", type=float, default=None, help="default 1 (30 with --realistic)")
    p.add_argument("--query-latency", type=float, default=0.0)
    p.add_argument("--data-dir", default=None)
    g = p.add_argument_group("operating conditions (README 'Operating conditions'; all off by default)")
    g.add_argument("--realistic", action="store_true", help="switch every condition below on (PostHog's values)")
    g.add_argument("--visibility-delay", type=float, default=None, help="events queryable at created_at + this (s)")
    g.add_argument("--query-cost-model", action="store_true", default=None,
                   help="sleep each query's modeled execution time; enforce the execution limit")
    g.add_argument("--query-time-scale", type=float, default=1.0, help="multiply every modeled sleep by this")
    g.add_argument("--query-overhead", type=float, default=cond.DEFAULT_OVERHEAD_SECONDS)
    g.add_argument("--query-seconds-per-row", type=float, default=cond.DEFAULT_SECONDS_PER_ROW)
    g.add_argument("--query-seconds-per-byte", type=float, default=cond.DEFAULT_SECONDS_PER_BYTE)
    g.add_argument("--query-max-execution-seconds", type=_float_or_none, default=cond.DEFAULT_MAX_EXECUTION_SECONDS)
    g.add_argument("--query-concurrency-limit", action="store_true", default=None,
                   help="queue queries beyond --query-concurrency per project even without --rate-limits")
    g.add_argument("--query-concurrency", type=int, default=cond.DEFAULT_CONCURRENCY)
    g.add_argument("--query-budget-bytes-per-hour", type=float, default=None, help="read budget refill; 0 = off")
    g.add_argument("--query-budget-capacity-bytes", type=float, default=None, help="default: 24 h of refill")
    p.add_argument("--exports", default="", help='file-download exports, e.g. "time_scale=0.01,link_ttl_seconds=60" '
                   "(README 'File-download exports')")
    p.add_argument("--no-key-introspection", dest="key_introspection", action="store_false",
                   help="404 on /api/personal_api_keys/@current/, as older PostHog versions")
    p.add_argument("--sessions-table-version", choices=("auto", "v2", "v3"), default="auto",
                   help="every project's HogQL sessions table (auto = v2, PostHog's default)")
    p.add_argument("--project-sessions-table-version", action="append", default=[], metavar="PROJECT=VERSION",
                   help="one project's sessions table, e.g. 3=v3 (repeatable)")
    return p.parse_args(argv)


def config_from_args(a: argparse.Namespace) -> EmulatorConfig:
    return EmulatorConfig(
        events=a.events, seed=a.seed, base_time=tu.parse_datetime(a.base_time) if a.base_time else None,
        events_span_days=a.span_days, persons=a.persons, heavy_persons=a.heavy_persons,
        heavy_distinct_ids=a.heavy_distinct_ids, legacy_events_page_cap=a.legacy_page_cap,
        legacy_events_max_offset=a.legacy_max_offset, rate_limits=a.rate_limits, rate_scale=a.rate_scale,
        faults=FaultConfig.parse(a.faults, a.fault_seed, a.slow_seconds), data_dir=a.data_dir,
        query_queue_timeout=a.query_queue_timeout, query_latency=a.query_latency, realistic=a.realistic,
        visibility_delay_seconds=a.visibility_delay, query_cost_model=a.query_cost_model,
        query_time_scale=a.query_time_scale, query_overhead_seconds=a.query_overhead,
        query_seconds_per_row=a.query_seconds_per_row, query_seconds_per_byte=a.query_seconds_per_byte,
        query_max_execution_seconds=a.query_max_execution_seconds, query_concurrency_limit=a.query_concurrency_limit,
        query_concurrency=a.query_concurrency, query_budget_bytes_per_hour=a.query_budget_bytes_per_hour,
        query_budget_capacity_bytes=a.query_budget_capacity_bytes, key_introspection=a.key_introspection,
        exports=ExportSettings.parse(a.exports),
        sessions_table_version=a.sessions_table_version,
        project_sessions_table_versions=dict(_project_version(x) for x in a.project_sessions_table_version))


def _project_version(text: str) -> tuple[int, str]:
    project, _, version = text.partition("=")
    return int(project), version.strip()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    server = EmulatorServer(config_from_args(args), host=args.host, port=args.port)

    def _stop(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    server.start()
    try:
        sys.stdout.write(f"READY {server.url}\n")
        sys.stdout.flush()
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
