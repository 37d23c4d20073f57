"""The raw baseline of the benchmark: the client-side floor of an events export.

Plain HTTP (`http.client`, one keep-alive connection), the same HogQL keyset queries as the
connector's `events` stream (`source_posthog/hogql.py`: `(timestamp, uuid)` ascending, an explicit
LIMIT, `created_at <=` the sync's upper bound, never OFFSET), each page parsed with orjson and printed
as Airbyte RECORD lines with `properties` parsed to an object and timestamps in UTC ISO-8601 — what
the connector emits — plus one STATE line per page. No CDK, no pacing, no retries, no schema work: it
is what any client must spend at the least, so the connector's CPU is measured against it.

It imports nothing from `source_posthog` (that would load airbyte-cdk and count its import time).

    python -m tools.bench.benchmark_raw --url http://127.0.0.1:PORT --api-key phx_... \
        --project-id 2 --start 2026-10-01T00:00:00Z [--page-size 25000] [--lag-seconds 1]
"""

from __future__ import annotations

import argparse
import http.client
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Optional, Tuple
from urllib.parse import urlsplit

import orjson

COLUMNS = ("uuid", "event", "timestamp", "distinct_id", "properties", "elements_chain", "person_id", "created_at")


def _quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\r", "\\r").replace("\0", "\\0")
    return f"'{escaped}'"


def _dt(value: datetime) -> str:
    return f"toDateTime64({_quote(value.astimezone(timezone.utc).strftime('%Y-%m-%d %H:%M:%S.%f'))}, 6, 'UTC')"


def page_query(start: datetime, end: datetime, after_uuid: Optional[str], ingested_through: datetime, limit: int) -> str:
    """The connector's main-pass page query (hogql.events_page_query with `after` and `ingested_through`)."""
    conditions = [f"timestamp >= {_dt(start)}", f"timestamp < {_dt(end)}"]
    if after_uuid is not None:
        at = _dt(start)
        conditions.append(f"(timestamp > {at} OR (timestamp = {at} AND uuid > toUUID({_quote(str(uuid.UUID(after_uuid)))})))")
    conditions.append(f"created_at <= {_dt(ingested_through)}")
    return (
        f"SELECT {', '.join(COLUMNS)} FROM events WHERE {' AND '.join(conditions)} "
        f"ORDER BY timestamp ASC, uuid ASC LIMIT {int(limit)}"
    )


def parse_ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(timezone.utc)


def utc_iso(value: str) -> str:
    if len(value) == 27 and value[-1] == "Z" and value[10] == "T":
        return value
    return parse_ts(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _state(state: dict) -> bytes:
    return (b'{"type":"STATE","state":{"type":"STREAM","stream":{"stream_descriptor":{"name":"events"},"stream_state":'
            + orjson.dumps(state) + b"}}}\n")


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--project-id", type=int, required=True)
    parser.add_argument("--start", required=True, help="ISO date-time where the export starts (the connector's anchor_date)")
    parser.add_argument("--page-size", type=int, default=25_000)
    parser.add_argument("--lag-seconds", type=float, default=1.0)
    args = parser.parse_args(argv)

    split = urlsplit(args.url)
    conn = http.client.HTTPConnection(split.hostname, split.port or 80, timeout=300)
    path = f"{split.path.rstrip('/')}/api/projects/{args.project_id}/query/"
    headers = {"Authorization": f"Bearer {args.api_key}", "Content-Type": "application/json"}
    out = open(sys.stdout.fileno(), "wb", buffering=1 << 20, closefd=False)

    upper = datetime.now(timezone.utc) - timedelta(seconds=args.lag_seconds)
    position: Tuple[datetime, Optional[str]] = (parse_ts(args.start), None)
    records = requests = 0
    while True:
        body = orjson.dumps({"query": {"kind": "HogQLQuery", "query": page_query(position[0], upper, position[1], upper, args.page_size)},
                             "name": "benchmark_raw_events", "refresh": "blocking"})
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        payload = response.read()
        requests += 1
        if response.status != 200:
            sys.stderr.write(f"HTTP {response.status} from {path}: {payload[:500]!r}\n")
            return 1
        result = orjson.loads(payload)
        del payload
        columns = result["columns"]
        rows = result["results"]
        emitted_at = int(time.time() * 1000)
        write, dumps = out.write, orjson.dumps
        for row in rows:
            data = dict(zip(columns, row))
            properties = data.get("properties")
            data["properties"] = orjson.loads(properties) if properties else {}
            data["timestamp"] = utc_iso(data["timestamp"])
            if data.get("created_at"):
                data["created_at"] = utc_iso(data["created_at"])
            write(dumps({"type": "RECORD", "record": {"stream": "events", "data": data, "emitted_at": emitted_at}}, option=orjson.OPT_APPEND_NEWLINE))
        records += len(rows)
        if len(rows) < args.page_size and not result.get("hasMore"):
            write(_state({"timestamp": upper.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}))
            break
        last = rows[-1]
        position = (parse_ts(last[columns.index("timestamp")]), str(last[columns.index("uuid")]))
        write(_state({"timestamp": position[0].strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "uuid": position[1]}))
        del result, rows
    out.flush()
    sys.stderr.write(f"raw baseline: {records} records in {requests} requests\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
