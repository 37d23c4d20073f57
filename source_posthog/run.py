"""The `source-posthog` command: the CDK's entrypoint, with our config messages and a lean
output path for `read`.

At a million events, the CDK's generic output path (serialize each record through its
dataclass serializer, decode, buffer as text, encode again) costs about as much CPU as reading
the events from PostHog (BENCHMARKS.md, "Profile"). `read` therefore writes RECORD lines
straight from the record dict as UTF-8 bytes, in the exact shape the CDK writes them; every
other message, and every other command, goes through the CDK unchanged.
"""

import argparse
import logging
import os
import sys
import tempfile
from functools import lru_cache
from typing import Any, DefaultDict, Iterator, List, Mapping, Optional

import orjson
from airbyte_cdk.entrypoint import AirbyteEntrypoint
from airbyte_cdk.logger import PRINT_BUFFER, is_platform_debug_log_enabled
from airbyte_cdk.models import AirbyteMessage, AirbyteRecordMessage, ConnectorSpecification, Type
from airbyte_cdk.sources.connector_state_manager import HashableStreamDescriptor
from airbyte_cdk.utils.constants import ENV_REQUEST_CACHE_PATH

from source_posthog.config import validate_against_spec
from source_posthog.source import SourcePosthog

FLUSH_BYTES = 1 << 20


class PostHogEntrypoint(AirbyteEntrypoint):
    @staticmethod
    def validate_connection(source_spec: ConnectorSpecification, config: Mapping[str, Any]) -> None:
        # The CDK's own check says "'my-project' is not of type 'integer'"; ours names the field
        # and the fix, and never echoes a secret.
        validate_against_spec(config, source_spec.connectionSpecification)

    @staticmethod
    def handle_record_counts(message: AirbyteMessage, stream_message_count: DefaultDict[HashableStreamDescriptor, float]) -> AirbyteMessage:
        # The CDK builds a new stream descriptor for every record to count it; one per stream will do.
        if message.type == Type.RECORD:
            stream_message_count[_descriptor(message.record.stream, message.record.namespace)] += 1.0
            return message
        return AirbyteEntrypoint.handle_record_counts(message, stream_message_count)

    def read_lines(self, parsed_args: argparse.Namespace) -> Iterator[bytes]:
        """`read`, as the CDK's `run` does it, yielding encoded lines."""
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
                yield from map(message_line, self._emit_queued_messages(self.source))
                catalog = self.source.read_catalog(parsed_args.catalog)
                state = self.source.read_state(parsed_args.state)
                yield from map(message_line, self.read(source_spec, config, catalog, state))
            finally:
                yield from map(message_line, self._emit_queued_messages(self.source))


@lru_cache(maxsize=None)
def _descriptor(name: str, namespace: Optional[str]) -> HashableStreamDescriptor:
    return HashableStreamDescriptor(name=name, namespace=namespace)


def message_line(message: AirbyteMessage) -> bytes:
    record = message.record
    if message.type == Type.RECORD and record.meta is None and record.file_reference is None:
        return record_line(record)
    return f"{AirbyteEntrypoint.airbyte_message_to_string(message)}\n".encode()


def record_line(record: AirbyteRecordMessage) -> bytes:
    """What the CDK writes for a record (its serializer drops null top-level data fields)."""
    data = record.data
    if None in data.values():
        data = {key: value for key, value in data.items() if value is not None}
    body = {"stream": record.stream, "data": data, "emitted_at": record.emitted_at}
    if record.namespace is not None:
        body = {"namespace": record.namespace, **body}
    return orjson.dumps({"type": "RECORD", "record": body}, option=orjson.OPT_APPEND_NEWLINE)


def run(args: Optional[List[str]] = None) -> None:
    entrypoint = PostHogEntrypoint(SourcePosthog())
    parsed_args = entrypoint.parse_args(sys.argv[1:] if args is None else args)
    with PRINT_BUFFER:  # the buffer the CDK's log handler writes to
        if parsed_args.command == "read":
            _write_lines(entrypoint.read_lines(parsed_args))
        else:
            for message in entrypoint.run(parsed_args):
                PRINT_BUFFER.write(f"{message}\n")


def _write_lines(lines: Iterator[bytes]) -> None:
    """Buffered binary writes; logs are flushed first so they reach stdout in between."""
    out = sys.__stdout__.buffer
    pending: List[bytes] = []
    size = 0

    def flush() -> None:
        nonlocal size
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


if __name__ == "__main__":
    run()
