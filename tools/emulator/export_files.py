"""What a file-download export writes: the rows of each model, windowed by ingestion time, as
JSON lines, streamed from SQLite to files on disk (split by size, gzip per line).

PostHog facts emulated (each with the file it was read in, ``PostHog/posthog``):

- A file-download export is an S3 batch export into PostHog's own bucket
  (``products/batch_exports/backend/temporal/destinations/file_download_batch_export.py``), so the files
  are the S3 export's (``destinations/s3_batch_export.py``): JSON lines written by
  ``pipeline/transformer.py`` ``dump_record_batch`` (``orjson.dumps(record) + b"\\n"``), the JSON columns
  ``properties``, ``person_properties``, ``set``, ``set_once`` parsed into objects first
  (``json_columns``), ``_inserted_at`` kept (``include_inserted_at=True``).
- gzip: **each line is its own gzip member** (``gzip.compress(dump_dict(record))`` per record), so a
  file is a concatenation of gzip members (``gzip.decompress`` reads them all; a reader that stops at the
  first member sees one line).
- ``max_size_mb`` splits files: after writing a chunk (a line, compressed if asked), when the file's
  size before it plus the chunk exceeds the limit, the file ends (``JSONLStreamTransformer.iter``): a
  file may go over the limit by its last line; no empty file is written. The limit is in MiB.
- Keys: ``batch-exports/{batch_export_id}/{run_id}/{start}-{end}/{start}-{end}[-{n}].jsonl[.gz]``
  (``FILE_DOWNLOAD_PREFIX``; ``get_s3_key``: the ``-{n}`` suffix whenever ``max_file_size_mb is not
  None``, numbered from 0; ``start``/``end`` are ``datetime.isoformat()``, e.g. ``+00:00``).
- JSON lines + ``zstd``/``lz4``/``snappy`` (accepted by the API) raise ``ValueError("Unsupported
  compression: ...")`` in ``dump_record_batch`` once there is a row: the activity is retried forever
  (``NON_RETRYABLE_ERROR_TYPES = ()``), the run stays Running. :class:`UnsupportedCompression` models it.

Windows (``pipeline/internal_stage.py``, ``sql/events.py``, ``sql/persons.py``, ``sql/sessions.py``):

- events: ``inserted_at`` in ``[start, end)``; when ``data_interval_start`` is more than 8 days ago the
  query reads ``events`` instead of ``distributed_events_recent`` and also requires ``timestamp >=
  start - 7 days`` (``DEFAULT_TIMESTAMP_LOOKBACK_DAYS``) and ``timestamp < end + 1 day``
  (``pipeline/query_ranges.py`` ``use_distributed_events_recent_table``); ``include``/``exclude``
  filter on ``event``. The emulator's ``inserted_at`` is :func:`event_ingestion_time`.
- persons: persons whose latest row's ``_timestamp`` is in the window, distinct ids whose latest row's
  ``_timestamp`` is, and every distinct id of those persons; one line per distinct id, joined with the
  latest row of the person it points at now (a merged-away person therefore has no line of its own:
  its distinct ids appear under the survivor); ``_inserted_at`` is the distinct id's ``_timestamp``
  when only it is in the window, the person's when only that is, else the earlier of the two.
- sessions: ``_inserted_at = greatest(max_inserted_at, $end_timestamp)`` in ``[start, end)`` and
  ``$end_timestamp >= start - 3 days`` (``SESSIONS_LOOKBACK_DAYS``, "3 days catched almost all
  sessions"): a session whose events arrive more than 3 days after its end is not exported.

Row order is unspecified in PostHog (the stage is written by parallel partitions, ``PARTITION BY
rand()``); the emulator shuffles each batch of 2,000 rows it reads (events and persons) and orders
sessions by the random tail of their id: no file is sorted by time.
"""

from __future__ import annotations

import gzip
import os
import random
import sqlite3
import uuid as uuid_mod
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Iterator
from zoneinfo import ZoneInfo

import orjson

from . import hogql
from . import person_changes
from . import timeutil as tu

_FETCH = 2000
EVENTS_RECENT_DAYS = 8  # use_distributed_events_recent_table: data_interval_start within the last 8 days
TIMESTAMP_LOOKBACK_DAYS = 7  # DEFAULT_TIMESTAMP_LOOKBACK_DAYS (posthog/settings/batch_exports.py)
SESSIONS_LOOKBACK_DAYS = 3  # SESSIONS_LOOKBACK_DAYS (sql/sessions.py)
FILE_FORMAT_EXTENSIONS = {"Parquet": "parquet", "JSONLines": "jsonl"}  # s3_batch_export.py
COMPRESSION_EXTENSIONS = {"gzip": "gz", "snappy": "sz", "brotli": "br", "zstd": "zst", "lz4": "lz4"}

#: The columns of each model's lines, in PostHog's order.
EVENT_COLUMNS = ("uuid", "timestamp", "_inserted_at", "created_at", "event", "properties", "distinct_id",
                 "elements_chain", "person_properties", "person_id")  # s3_default_fields()
PERSON_COLUMNS = ("team_id", "distinct_id", "person_id", "properties", "person_distinct_id_version", "person_version",
                  "created_at", "_inserted_at", "is_deleted")  # EXPORT_TO_S3_FROM_PERSONS
CLICK_IDS = ("gclid", "fbclid", "gad_source")
LATER_CLICK_IDS = ("gclsrc", "dclid", "gbraid", "wbraid", "msclkid", "twclid", "li_fat_id", "mc_cid", "igshid",
                   "ttclid", "_kx", "irclid")
SESSION_COLUMNS = (  # SELECT_FROM_SESSIONS_HOGQL (sql/sessions.py)
    "session_id", "session_id_v7", "team_id", "distinct_id", "start_timestamp", "end_timestamp", "urls",
    "num_uniq_urls", "entry_current_url", "entry_pathname", "entry_hostname", "end_current_url", "end_pathname",
    "end_hostname", "entry_utm_source", "entry_utm_campaign", "entry_utm_medium", "entry_utm_term",
    "entry_utm_content", "entry_referring_domain", *(f"entry_{c}" for c in CLICK_IDS), "pageview_count",
    "autocapture_count", "screen_count", "channel_type", "session_duration", "duration", "is_bounce",
    "last_external_click_url", "page_screen_autocapture_count_up_to", "exit_current_url", "exit_pathname",
    "vitals_lcp", "_inserted_at", *(f"entry_{c}" for c in LATER_CLICK_IDS))


class UnsupportedCompression(Exception):
    """``dump_record_batch``: JSON lines support only gzip (and brotli, not emulated)."""


# ------------------------------------------------------------------------------------------------
# ingestion time
# ------------------------------------------------------------------------------------------------


@dataclass
class EventIngestionTime:
    """An events row's ingestion time as SQL: ``column`` (an expression, needs the function this
    object registered on its connection) and ``alternatives(lo, hi)``: predicates whose UNION is
    ``lo <= ingestion time < hi``, each able to use an index."""

    column: str
    delay: float
    has_visible_col: bool

    def alternatives(self, lo: str, hi: str) -> list[tuple[str, list]]:
        step = timedelta(seconds=self.delay)
        shifted = [tu.to_db(tu.from_db(lo) - step), tu.to_db(tu.from_db(hi) - step)] if self.delay else [lo, hi]
        if not self.has_visible_col:
            return [("created_at >= ? AND created_at < ?", shifted)]
        return [("+visible_at IS NULL AND created_at >= ? AND created_at < ?", shifted),
                ("visible_at >= ? AND visible_at < ?", [lo, hi])]


def event_ingestion_time(store, conn: sqlite3.Connection) -> EventIngestionTime:
    """The moment an event became queryable, which is what PostHog's ``inserted_at`` is
    (``COALESCE(inserted_at, _timestamp)`` in ``sql/events.py``; posthog-api.md § 11.1): in this
    emulator the row's ``visible_at`` when its batch had a delay, else ``created_at`` plus the
    run-wide visibility delay (``Store.visibility_clause``); with no delay, ``created_at``.

    The ingestion time of a row without a stored ``visible_at`` follows the run-wide delay: changing
    that delay moves it (as it moves the row's visibility). A row added with a past ``created_at`` and
    no delay was "ingested" in the past: exports of windows already run never see it (use a delay to
    stage late ingestion: ``add_events(rows, visibility_delay_seconds=...)``)."""
    delay = float(store.visibility_delay or 0)
    has_col = bool(store._has_visible_col)
    # The one definition of an event's ingestion time (Store.ingestion_time_sql), which the HogQL
    # sessions table's max_inserted_at uses too; `alternatives` are the same, written for the indexes.
    return EventIngestionTime(store.ingestion_time_sql(), delay, has_col)


# ------------------------------------------------------------------------------------------------
# value formats
# ------------------------------------------------------------------------------------------------


def iso_utc(text: str | None) -> str | None:
    """Storage text → what ``orjson.dumps`` writes for an aware UTC datetime (pyarrow ``to_pylist`` of a
    ClickHouse ``DateTime64(…, 'UTC')``): ``2024-06-01T12:00:00.123456+00:00``, no fraction when zero."""
    if text is None:
        return None
    frac = text[20:26]
    return text[:10] + "T" + text[11:19] + ("." + frac if frac and frac != "000000" else "") + "+00:00"


def iso_ms(text: str) -> str:
    """``person.created_at`` is ``DateTime64(3)``: milliseconds."""
    return iso_utc(text[:23] + "000")


def _zoned(text: str | None, zone: ZoneInfo | None) -> Any:
    if text is None or zone is None:
        return iso_utc(text)
    return tu.from_db(text).astimezone(zone)  # orjson writes it with the zone's offset


def _json_or_none(text: str | None) -> Any:
    if text is None or text == "":
        return None  # nullIf(properties, '')
    return orjson.loads(text)


# ------------------------------------------------------------------------------------------------
# rows of each model (generators: rows are fetched in batches and never all held)
# ------------------------------------------------------------------------------------------------


@dataclass
class Window:
    team_id: int
    start: str  # storage text, inclusive
    end: str  # storage text, exclusive
    include: list[str] | None = None
    exclude: list[str] | None = None
    now: datetime | None = None  # when the query runs (real time)


def _stream(conn: sqlite3.Connection, sql: str, params, shuffle: random.Random | None = None) -> Iterator[tuple]:
    """Rows in batches; with ``shuffle`` each batch is shuffled (an unspecified order without sorting)."""
    cur = conn.execute(sql, params)
    while True:
        rows = cur.fetchmany(_FETCH)
        if not rows:
            return
        if shuffle is not None:
            shuffle.shuffle(rows)
        yield from rows


def event_rows(store, conn: sqlite3.Connection, w: Window) -> Iterator[dict]:
    ing = event_ingestion_time(store, conn)
    now = w.now or tu.utcnow()
    extra, extra_params = "", []
    if tu.from_db(w.start) <= now - timedelta(days=EVENTS_RECENT_DAYS):  # the `events` table: a timestamp bound too
        extra = " AND timestamp >= ? AND timestamp < ?"
        extra_params = [tu.to_db(tu.from_db(w.start) - timedelta(days=TIMESTAMP_LOOKBACK_DAYS)),
                        tu.to_db(tu.from_db(w.end) + timedelta(days=1))]
    if w.include:
        extra += f" AND event IN ({', '.join('?' * len(w.include))})"
        extra_params += list(w.include)
    if w.exclude:
        extra += f" AND event NOT IN ({', '.join('?' * len(w.exclude))})"
        extra_params += list(w.exclude)
    parts, params = [], []
    for pred, pp in ing.alternatives(w.start, w.end):
        parts.append(f"SELECT uuid, timestamp, {ing.column} AS ingested, created_at, event, properties, distinct_id, "
                     f"elements_chain, person_id FROM events WHERE team_id = ? AND {pred}{extra}")
        params += [w.team_id, *pp, *extra_params]
    sql = " UNION ALL ".join(parts)
    for uid, ts, ingested, created, event, props, did, chain, pid in _stream(conn, sql, params, random.Random(w.start)):
        yield {"uuid": uid, "timestamp": iso_utc(ts), "_inserted_at": iso_utc(ingested), "created_at": iso_utc(created),
               "event": event, "properties": _json_or_none(props), "distinct_id": did, "elements_chain": chain,
               "person_properties": None, "person_id": pid}


def _persons_sql(has_versions: bool) -> str:
    """EXPORT_TO_S3_FROM_PERSONS over the emulator's tables (person_changes.py): ``pv``/``dv`` are the
    changed rows with their versions; a row not in them has version 0, is_deleted 0 and the
    ``_timestamp`` of its person's created_at (truncated to the second)."""
    if has_versions:
        pv = ("SELECT id, created_at, properties, version, is_deleted, _timestamp FROM person_versions "
              "WHERE team_id = :t")
        dv = "SELECT distinct_id, person_id, version, is_deleted, _timestamp FROM distinct_id_versions WHERE team_id = :t"
    else:
        pv = "SELECT NULL AS id, NULL AS created_at, NULL AS properties, 0 AS version, 0 AS is_deleted, NULL AS _timestamp WHERE 0"
        dv = "SELECT NULL AS distinct_id, NULL AS person_id, 0 AS version, 0 AS is_deleted, NULL AS _timestamp WHERE 0"
    trunc = "substr({}, 1, 19) || '.000000'"
    return f"""
WITH pv AS ({pv}), dv AS ({dv}),
created AS (SELECT id FROM persons WHERE team_id = :t AND created_at >= :cs AND created_at < :ce),
new_persons AS (SELECT id FROM pv WHERE _timestamp >= :s AND _timestamp < :e
                UNION SELECT id FROM created WHERE id NOT IN (SELECT id FROM pv)),
latest_d AS (
    SELECT distinct_id, person_id, version, _timestamp FROM dv
        WHERE (_timestamp >= :s AND _timestamp < :e) OR person_id IN new_persons
    UNION ALL
    SELECT d.distinct_id, d.person_id, 0, {trunc.format('p.created_at')} FROM person_distinct_ids d
        JOIN persons p ON p.id = d.person_id AND p.team_id = d.team_id
        WHERE d.team_id = :t AND (d.person_id IN created OR d.person_id IN new_persons)
          AND d.distinct_id NOT IN (SELECT distinct_id FROM dv)),
latest_p AS (
    SELECT id, created_at, properties, version, is_deleted, _timestamp FROM pv
    UNION ALL
    SELECT id, created_at, properties, 0, 0, {trunc.format('created_at')} FROM persons
        WHERE team_id = :t AND id NOT IN (SELECT id FROM pv))
SELECT d.distinct_id, d.person_id, p.properties, d.version, p.version, p.created_at, d._timestamp, p._timestamp,
       p.is_deleted
FROM latest_d d JOIN latest_p p ON p.id = d.person_id"""


def _ceil_second(text: str) -> str:
    """trunc(c) >= s ⇔ c >= ceil(s), for whole-second values (the persons' ``_timestamp``)."""
    if text[20:26] == "000000":
        return text
    return tu.to_db(tu.from_db(text[:19] + ".000000") + timedelta(seconds=1))


def person_rows(store, conn: sqlite3.Connection, w: Window) -> Iterator[dict]:
    has_versions = person_changes.has_tables(conn)
    args = {"t": w.team_id, "s": w.start, "e": w.end, "cs": _ceil_second(w.start), "ce": _ceil_second(w.end)}
    for did, pid, props, d_version, p_version, created, d_ts, p_ts, deleted in _stream(
            conn, _persons_sql(has_versions), args, random.Random(w.start)):
        d_in = w.start <= d_ts < w.end
        p_in = w.start <= p_ts < w.end
        inserted = d_ts if d_in and not p_in else p_ts if p_in and not d_in else min(d_ts, p_ts)
        yield {"team_id": w.team_id, "distinct_id": did, "person_id": pid, "properties": _json_or_none(props),
               "person_distinct_id_version": d_version, "person_version": p_version, "created_at": iso_ms(created),
               "_inserted_at": iso_utc(inserted), "is_deleted": bool(deleted)}


def _project_zone(store, team_id: int) -> ZoneInfo | None:
    """HogQL shows DateTimes in the project's time zone (the sessions model is a HogQL query)."""
    name = (store.resources.projects.get(team_id) or {}).get("timezone") or "UTC"
    return None if name == "UTC" else ZoneInfo(name)


SESSION_EXPORT_COLUMNS = [
    "session_id", "distinct_id", "$start_timestamp", "$end_timestamp", "$entry_current_url", "$entry_pathname", "$end_current_url",
    "$end_pathname", "$entry_referring_domain", "$entry_utm_source", "$entry_utm_campaign", "$entry_utm_medium", "$entry_utm_term",
    "$entry_utm_content", "$num_uniq_urls", "$pageview_count", "$autocapture_count", "$screen_count", "$session_duration",
    "$is_bounce", "$channel_type",
]


def session_rows(store, conn: sqlite3.Connection, w: Window) -> Iterator[dict]:
    """The sessions of the HogQL ``sessions`` table (the same aggregation: ``hogql.sessions_sql``) whose
    ``greatest(max_inserted_at, $end_timestamp)`` is in the window and ``$end_timestamp >= start - 3 days``;
    ``max_inserted_at`` is the latest :func:`event_ingestion_time` of the session's visible events."""
    ing = event_ingestion_time(store, conn)
    start = tu.from_db(w.start)
    lookback = tu.to_db(start - timedelta(days=SESSIONS_LOOKBACK_DAYS))
    scan_lo = tu.to_db(start - timedelta(days=SESSIONS_LOOKBACK_DAYS + hogql.SESSION_BUFFER_DAYS))
    sid = "session_id"  # the stored `$session_id` column (data.py)
    cand, cand_params = [], []
    for pred, pp in ing.alternatives(w.start, w.end):
        cand.append(f"SELECT {sid} FROM events WHERE team_id = ? AND timestamp >= ? AND {pred}")
        cand_params += [w.team_id, scan_lo, *pp]
    cand.append(f"SELECT {sid} FROM events WHERE team_id = ? AND timestamp >= ? AND timestamp < ?")
    cand_params += [w.team_id, w.start, w.end]
    vis, vis_params = store.visibility_clause(w.now)
    event_filter = f" AND team_id = ?{vis} AND timestamp >= ? AND {sid} IN (SELECT sid FROM cand)"
    filter_params = [w.team_id, *vis_params, scan_lo]
    visible_at = "visible_at" if ing.has_visible_col else "NULL AS visible_at"
    urls = "json_group_array(DISTINCT url) FILTER (WHERE url IS NOT NULL)"
    greatest = 'max(x.ingested, s."$end_timestamp")'
    sql = f"""WITH cand(sid) AS ({' UNION '.join(cand)})
SELECT s.session_id, s.distinct_id, s."$start_timestamp", s."$end_timestamp", s."$entry_current_url", s."$entry_pathname",
       s."$end_current_url", s."$end_pathname", s."$entry_referring_domain", s."$entry_utm_source", s."$entry_utm_campaign",
       s."$entry_utm_medium", s."$entry_utm_term", s."$entry_utm_content", s."$num_uniq_urls", s."$pageview_count",
       s."$autocapture_count", s."$screen_count", s."$session_duration", s."$is_bounce", s."$channel_type",
       x.urls, {greatest}, x.lcp, x.psa, f.properties, l.properties
FROM ({hogql.sessions_sql(SESSION_EXPORT_COLUMNS, "v2", event_filter, store.ingestion_time_sql())}) AS s
JOIN (SELECT sid, {urls} AS urls, max({ing.column}) AS ingested,
             min(timestamp || ' ' || uuid) AS fk, max(timestamp || ' ' || uuid) AS lk,
             min(CASE WHEN lcp IS NOT NULL THEN timestamp || ' ' || lcp END) AS lcp,
             sum(event IN ('$pageview', '$screen', '$autocapture')) AS psa
      FROM (SELECT uuid, event, timestamp, created_at, {visible_at}, {sid} AS sid,
                   json_extract(properties, '$."$current_url"') AS url,
                   json_extract(properties, '$."$web_vitals_LCP_value"') AS lcp
            FROM events WHERE 1 = 1{event_filter}) GROUP BY sid) AS x ON x.sid = s.session_id
JOIN events AS f ON f.uuid = substr(x.fk, 28)
JOIN events AS l ON l.uuid = substr(x.lk, 28)
WHERE {greatest} >= ? AND {greatest} < ? AND s."$end_timestamp" >= ? AND s."$end_timestamp" < ?
ORDER BY substr(s.session_id, 25)"""
    params = [*cand_params, *filter_params, *filter_params, w.start, w.end, lookback, w.end]
    zone = _project_zone(store, w.team_id)
    for r in _stream(conn, sql, params):
        (session_id, did, start_ts, end_ts, entry_url, entry_path, end_url, end_path, referring, utm_source, utm_campaign,
         utm_medium, utm_term, utm_content, uniq_urls, pageviews, autocaptures, screens, duration, bounce, channel,
         url_list, inserted, lcp, psa, first_props, last_props) = r
        first = orjson.loads(first_props) if first_props else {}
        last = orjson.loads(last_props) if last_props else {}
        try:
            v7 = str(uuid_mod.UUID(session_id))
        except (ValueError, TypeError, AttributeError):
            v7 = None
        lcp_value = None
        if lcp is not None:
            try:
                lcp_value = float(lcp[27:])
            except ValueError:
                lcp_value = None
        row = {"session_id": session_id, "session_id_v7": v7, "team_id": w.team_id, "distinct_id": did,
               "start_timestamp": _zoned(start_ts, zone), "end_timestamp": _zoned(end_ts, zone),
               "urls": orjson.loads(url_list) if url_list else [], "num_uniq_urls": uniq_urls,
               "entry_current_url": entry_url, "entry_pathname": entry_path, "entry_hostname": first.get("$host"),
               "end_current_url": end_url, "end_pathname": end_path, "end_hostname": last.get("$host"),
               "entry_utm_source": utm_source, "entry_utm_campaign": utm_campaign, "entry_utm_medium": utm_medium,
               "entry_utm_term": utm_term, "entry_utm_content": utm_content, "entry_referring_domain": referring}
        row.update({f"entry_{c}": first.get(c) for c in CLICK_IDS})
        row.update({"pageview_count": pageviews, "autocapture_count": autocaptures, "screen_count": screens,
                    "channel_type": channel, "session_duration": duration, "duration": duration,
                    "is_bounce": None if bounce is None else bool(bounce), "last_external_click_url": None,
                    "page_screen_autocapture_count_up_to": min(int(psa or 0), 2), "exit_current_url": end_url,
                    "exit_pathname": end_path, "vitals_lcp": lcp_value, "_inserted_at": _zoned(inserted, zone)})
        row.update({f"entry_{c}": first.get(c) for c in LATER_CLICK_IDS})
        yield row


MODELS: dict[str, Callable] = {"events": event_rows, "persons": person_rows, "sessions": session_rows}
COLUMNS = {"events": EVENT_COLUMNS, "persons": PERSON_COLUMNS, "sessions": SESSION_COLUMNS}


# ------------------------------------------------------------------------------------------------
# files
# ------------------------------------------------------------------------------------------------


@dataclass
class WrittenFile:
    index: int
    key: str
    path: Path
    size: int = 0
    rows: int = 0


@dataclass
class FileSpec:
    format: str = "JSONLines"
    compression: str | None = None
    max_size_mb: int | None = None

    def key(self, prefix: str, start: str, end: str, n: int) -> str:
        """``get_s3_key``: ``{prefix}/{start}-{end}[-{n}].{ext}[.{compression}]``."""
        name = f"{start}-{end}"
        if self.max_size_mb is not None:
            name += f"-{n}"
        name += "." + FILE_FORMAT_EXTENSIONS[self.format]
        if self.compression is not None:
            name += "." + COMPRESSION_EXTENSIONS[self.compression]
        return f"{prefix}/{name}"


@dataclass
class Writer:
    """Writes lines to files under ``directory``, gzip per line and split as ``JSONLStreamTransformer``."""

    directory: Path
    spec: FileSpec
    prefix: str
    start_iso: str
    end_iso: str
    files: list[WrittenFile] = field(default_factory=list)
    _current: WrittenFile | None = None
    _fh: Any = None

    def write(self, line: bytes) -> None:
        if self.spec.compression == "gzip":
            chunk = gzip.compress(line)
        elif self.spec.compression is None:
            chunk = line
        else:
            raise UnsupportedCompression(f"Unsupported compression: '{self.spec.compression}'")
        if self._current is None:
            n = len(self.files)
            self._current = WrittenFile(n, self.spec.key(self.prefix, self.start_iso, self.end_iso, n),
                                        self.directory / f"part-{n:05d}")
            self._fh = open(self._current.path, "wb")
        before = self._current.size
        self._fh.write(chunk)
        self._current.size += len(chunk)
        self._current.rows += 1
        limit = (self.spec.max_size_mb or 0) * 1024 * 1024
        if limit and before + len(chunk) > limit:
            self._finish()

    def _finish(self) -> None:
        if self._current is not None:
            self._fh.close()
            self.files.append(self._current)
            self._current, self._fh = None, None

    def close(self) -> list[WrittenFile]:
        self._finish()
        return self.files

    def abort(self) -> None:
        if self._fh is not None:
            self._fh.close()
        for f in [*self.files, *([self._current] if self._current else [])]:
            try:
                os.unlink(f.path)
            except OSError:
                pass
        self.files, self._current, self._fh = [], None, None


def write_export(store, model: str, window: Window, writer: Writer, should_stop: Callable[[], bool]) -> int:
    """Stream the model's rows into ``writer``; returns the number of rows (records_completed).
    Raises :class:`UnsupportedCompression` at the first row when the compression cannot be written."""
    rows = 0
    with store.read() as conn:
        for record in MODELS[model](store, conn, window):
            writer.write(orjson.dumps(record) + b"\n")
            rows += 1
            if rows % 1000 == 0 and should_stop():
                break
    return rows
