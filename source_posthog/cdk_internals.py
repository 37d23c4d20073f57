"""The one module that relies on how airbyte-cdk works inside (tested by unit_tests/test_cdk_contract.py).

At a million events, the CDK's generic output path (serialize each record through its dataclass
serializer, decode, buffer as text, encode again) costs a measurable share of the CPU
(BENCHMARKS.md, "Profile"). `read` therefore writes RECORD lines straight from the record dict as
UTF-8 bytes, in the exact shape the CDK writes them; every other message, and every other
command, goes through the CDK unchanged. What this leans on, each pinned by a contract test:

1. `AirbyteEntrypoint.run`'s `read` branch: `read_lines` repeats its steps (log level, request
   cache dir, config → queued messages → catalog → state → `read`, queued messages at the end).
2. `airbyte_cdk.logger.PRINT_BUFFER`: the buffer the CDK's log handler writes to. Records are
   written to stdout around it, so it is flushed first and logs stay in order; its `lock` is
   held while records are written, so a log line from another thread cannot split a line.
3. The CDK's RECORD wire shape (`record_line`): its serializer drops null top-level `data`
   fields and orders keys `stream, data, emitted_at, namespace?`.
4. `HashableStreamDescriptor` as the key of the record counter that `handle_record_counts`
   turns into `sourceStats.recordCount` on every STATE message.
5. The CDK's retry loop (`airbyte_cdk.sources.streams.http.rate_limiting`) sleeps the backoff plus
   one second, and logs "UserDefinedBackoffException: Rate limit exceeded (HTTP 500). Retrying
   in 6 seconds." for every retry, a 5xx or a reset as much as a 429. Our backoff strategy logs
   the real cause and the real wait (`RETRY_EXTRA_SECONDS` included); `install_log_filters`
   drops the CDK's line, and strips stack traces from config errors (the message says the fix).
6. How `Stream.read` checkpoints a stream whose `get_cursor()` is a `Cursor` and whose slices
   are `StreamSlice`s (streams/base.py: one slice per project): it reads the slices in order and,
   after each, emits the cursor's state if it changed (`CursorBasedCheckpointReader`), whether the
   stream is incremental or not; and it passes on, unchanged, a STATE message that `read_records`
   yields (the per-page checkpoint). `ProjectStatesCursor` is that cursor.
7. `FULL_REFRESH_COMPLETE_STATE`: the state the CDK's resumable full refresh wrote when a read
   completed (and `NO_CURSOR_STATE`, what it writes for a stream without state), read in states of
   earlier releases.
8. `AbstractSource.read` ends a sync in which a stream failed by raising one summary error typed
   `config_error`, whatever the streams' own errors were (`source.py` re-types it).
9. `AbstractSource.read` logs "Finished syncing <stream>" after every stream, and "Finished syncing
   <source>" after the sync (`TruthfulLogs` drops the first kind).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from functools import lru_cache
from typing import Any, DefaultDict, Iterable, Iterator, List, Optional

import orjson
from airbyte_cdk.entrypoint import AirbyteEntrypoint
from airbyte_cdk.logger import PRINT_BUFFER, is_platform_debug_log_enabled
from airbyte_cdk.models import AirbyteMessage, AirbyteRecordMessage, FailureType, Type
from airbyte_cdk.sources import Source
from airbyte_cdk.sources.connector_state_manager import HashableStreamDescriptor
from airbyte_cdk.sources.streams.checkpoint import Cursor
from airbyte_cdk.sources.streams.checkpoint.checkpoint_reader import FULL_REFRESH_COMPLETE_STATE
from airbyte_cdk.sources.types import Record, StreamSlice
from airbyte_cdk.utils.constants import ENV_REQUEST_CACHE_PATH
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

FLUSH_BYTES = 1 << 20
FULL_REFRESH_COMPLETE = dict(FULL_REFRESH_COMPLETE_STATE)  # (7)
NO_CURSOR_STATE = {"__ab_no_cursor_state_message": True}  # (7) FullRefreshCheckpointReader's final state
CDK_STREAM_FINISHED = "Finished syncing "  # (9) AbstractSource.read, after each stream and after the sync
CDK_SUMMARY_PREFIX = "During the sync, the following streams did not sync successfully"  # (8)
RETRY_MODULE = "airbyte_cdk.sources.streams.http.rate_limiting"
RETRY_EXTRA_SECONDS = 1  # (5) rate_limiting.py: `sleep_time = retry_after + 1`
CDK_RETRY_LINE = "UserDefinedBackoffException: Rate limit exceeded"


class TruthfulLogs(logging.Filter):
    """(5) No misleading CDK retry line; no stack trace beside a config error's message; (9) no
    "Finished syncing <stream>" after each stream, which reads as if the sync had ended (each
    stream's summary line says it, per project: streams/base.py)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "airbyte" and record.module == RETRY_MODULE.rsplit(".", 1)[1] and str(record.msg).startswith(CDK_RETRY_LINE):
            return False
        if record.module == "abstract_source" and str(record.msg).startswith(CDK_STREAM_FINISHED) and not str(record.msg).endswith("SourcePosthog"):
            return False
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, AirbyteTracedException) and error.failure_type == FailureType.config_error:
            record.exc_info = None
            record.exc_text = None
        return True


def install_log_filters() -> None:
    """On the "airbyte" logger (its own records) and on the root handlers the CDK logs through."""
    logger = logging.getLogger("airbyte")
    for target in (logger, *logger.handlers, *logging.getLogger().handlers):
        if not any(isinstance(existing, TruthfulLogs) for existing in target.filters):
            target.addFilter(TruthfulLogs())


class LeanReadEntrypoint(AirbyteEntrypoint):
    @staticmethod
    def handle_record_counts(message: AirbyteMessage, stream_message_count: DefaultDict[HashableStreamDescriptor, float]) -> AirbyteMessage:
        # The CDK builds a new stream descriptor for every record to count it; one per stream will do.
        if message.type == Type.RECORD:
            stream_message_count[descriptor(message.record.stream, message.record.namespace)] += 1.0
            return message
        return AirbyteEntrypoint.handle_record_counts(message, stream_message_count)

    def read_lines(self, parsed_args: argparse.Namespace) -> Iterator[bytes]:
        """`read`, as the CDK's `run` does it (1), yielding encoded lines."""
        if getattr(parsed_args, "debug", False) or is_platform_debug_log_enabled():
            self.logger.setLevel(logging.DEBUG)
            logging.getLogger("airbyte").setLevel(logging.DEBUG)
            self.logger.debug("Debug logs enabled")
        else:
            self.logger.setLevel(logging.INFO)
        source_spec = self.source.spec(self.logger)
        with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as temp_dir:
            os.environ[ENV_REQUEST_CACHE_PATH] = temp_dir
            try:
                config = self.source.configure(self.source.read_config(parsed_args.config), temp_dir)
                yield from map(message_line, queued_messages(self.source))
                catalog = self.source.read_catalog(parsed_args.catalog)
                state = self.source.read_state(parsed_args.state)
                yield from map(message_line, self.read(source_spec, config, catalog, state))
            finally:
                yield from map(message_line, queued_messages(self.source))


def queued_messages(source: Source) -> Iterable[AirbyteMessage]:
    repository = getattr(source, "message_repository", None)
    return repository.consume_queue() if repository else ()


@lru_cache(maxsize=None)
def descriptor(name: str, namespace: Optional[str]) -> HashableStreamDescriptor:
    return HashableStreamDescriptor(name=name, namespace=namespace)


def message_line(message: AirbyteMessage) -> bytes:
    record = message.record
    if message.type == Type.RECORD and record.meta is None and record.file_reference is None:
        return record_line(record)
    return f"{AirbyteEntrypoint.airbyte_message_to_string(message)}\n".encode()


def record_line(record: AirbyteRecordMessage) -> bytes:
    """What the CDK writes for a record (3)."""
    data = record.data
    if None in data.values():
        data = {key: value for key, value in data.items() if value is not None}
    body = {"stream": record.stream, "data": data, "emitted_at": record.emitted_at}
    if record.namespace is not None:
        body["namespace"] = record.namespace
    return orjson.dumps({"type": "RECORD", "record": body}, option=orjson.OPT_APPEND_NEWLINE)


def launch(entrypoint: LeanReadEntrypoint, args: List[str]) -> None:
    parsed_args = entrypoint.parse_args(args)
    with PRINT_BUFFER:  # (2)
        if parsed_args.command == "read":
            write_lines(entrypoint.read_lines(parsed_args))
        else:
            for message in entrypoint.run(parsed_args):
                PRINT_BUFFER.write(f"{message}\n")


def write_lines(lines: Iterator[bytes]) -> None:
    """Buffered binary writes; logs are flushed first so they reach stdout in between (2)."""
    out = sys.__stdout__.buffer
    pending: List[bytes] = []
    size = 0

    def flush() -> None:
        nonlocal size
        # The buffer's own lock: a log line written from another thread (the events stream's
        # second query lane) must not land in the middle of these bytes (2).
        with PRINT_BUFFER.lock:
            PRINT_BUFFER.flush()
            out.write(b"".join(pending))
            out.flush()
        pending.clear()
        size = 0

    try:
        for line in lines:
            pending.append(line)
            size += len(line)
            if size >= FLUSH_BYTES or not line.startswith(b'{"type":"RECORD"'):
                flush()  # every STATE leaves at once: it is the checkpoint a resume starts from
    finally:
        flush()


class ProjectStatesCursor(Cursor):
    """(6) The CDK's checkpoint reader reads a stream's state through this: the stream's own state,
    every project's (`state.ProjectStates`). Records are not observed: each stream moves its own
    state as it reads, and checkpoints after every page itself; so after a project the CDK emits
    the state only if no STATE message has carried it yet (None: nothing to emit)."""

    def __init__(self, states: "Any") -> None:
        self.states = states

    def set_initial_state(self, stream_state: Any) -> None:
        pass  # the stream's `state` setter loads it (streams/base.py)

    def observe(self, stream_slice: StreamSlice, record: Record) -> None:
        pass

    def close_slice(self, stream_slice: StreamSlice, *args: Any) -> None:
        pass

    def get_stream_state(self) -> Any:
        return self.states.as_state() if self.states.unsent else None

    def should_be_synced(self, record: Record) -> bool:
        return True

    def select_state(self, stream_slice: Optional[StreamSlice] = None) -> Optional[Any]:
        return None
