"""``python -m tools.emulator.probe``: what the emulator answers for the HogQL facts of issue #17.

Starts an in-process emulator (a small dataset, project 3 opted into sessions v3) and prints one line
per fact: the request, then the emulator's actual status and body (the API key is never printed).
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone

import orjson
import requests

from .config import EmulatorConfig
from .keys import PROJECT_ID, SECOND_PROJECT_ID
from .server import EmulatorServer

CH_FIRST, CH_SECOND = "ffffffff-0000-0000-0000-000000000000", "00000000-0000-0000-ffff-000000000000"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.emulator.probe", description=__doc__)
    parser.add_argument("--data-dir", default=None, help="the emulator's dataset cache (default: .emulator-cache)")
    args = parser.parse_args(argv)
    config = EmulatorConfig(events=400, seed=1, base_time=datetime(2026, 11, 1, tzinfo=timezone.utc),
                            data_dir=args.data_dir, project_sessions_table_versions={SECOND_PROJECT_ID: "v3"})
    with EmulatorServer(config) as emu:
        emu.move_events(SECOND_PROJECT_ID)  # half of the events (and so sessions) to the v3 project
        emu.add_events([{"uuid": u, "event": "probe", "timestamp": "2026-10-30T12:00:00Z"} for u in (CH_SECOND, CH_FIRST)])
        session = requests.Session()

        def ask(label: str, query: str, project: int = PROJECT_ID) -> None:
            response = session.post(f"{emu.url}/api/projects/{project}/query/", timeout=60,
                                    json={"query": {"kind": "HogQLQuery", "query": query}, "refresh": "blocking"},
                                    headers={"Authorization": f"Bearer {emu.api_key}"})
            body = response.json()
            shown = body if response.status_code != 200 else {"columns": body["columns"], "results": body["results"]}
            print(f"{label}: POST /api/projects/{project}/query/ {query!r} -> {response.status_code} "
                  f"{orjson.dumps(shown).decode()}")

        ask("bad query", "SELEC uuid FROM events")
        ask("ORDER BY uuid", f"SELECT uuid FROM events WHERE uuid IN ('{CH_SECOND}', '{CH_FIRST}') ORDER BY uuid")
        v3_only = "SELECT session_id, `$has_autocapture` FROM sessions ORDER BY `$start_timestamp` LIMIT 1"
        ask("v3 field, v2 project (the default)", v3_only)
        ask("v3 field, v3 project", v3_only, SECOND_PROJECT_ID)
        ask("max_inserted_at", "SELECT session_id, max_inserted_at FROM sessions ORDER BY `$start_timestamp` LIMIT 1")
        parsers = sorted({entry.get("parser") for entry in emu.requests() if entry["path"].endswith("/query/")})
        from unit_tests.support.posthog_parser import hogql_parser
        print(f"parser: every query above was parsed by {', '.join(map(str, parsers))} "
              f"({hogql_parser.__file__}), per the emulator's request log")
    return 0


if __name__ == "__main__":
    sys.exit(main())
