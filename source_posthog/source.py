"""SourcePosthog: validate the config and state, check access, declare the streams."""

from __future__ import annotations

import json
import logging
from typing import Any, Dict, Iterator, List, Mapping, MutableMapping, Optional, Tuple

import requests
from airbyte_cdk.models import (
    AirbyteCatalog,
    AirbyteConnectionStatus,
    AirbyteMessage,
    AirbyteStateBlob,
    AirbyteStateMessage,
    AirbyteStateType,
    AirbyteStreamState,
    ConfiguredAirbyteCatalog,
    FailureType,
    Status,
    StreamDescriptor,
    TraceType,
    Type,
)
from airbyte_cdk.sources import AbstractSource
from airbyte_cdk.sources.streams import Stream
from airbyte_cdk.sources.streams.call_rate import APIBudget
from airbyte_cdk.utils.airbyte_secrets_utils import filter_secrets
from airbyte_cdk.utils.traced_exception import AirbyteTracedException
from airbyte_cdk.sources.utils.casing import camel_to_snake

from source_posthog import settings
from source_posthog.api import envelopes, exports, scopes
from source_posthog.cdk_internals import CDK_SUMMARY_PREFIX, install_log_filters
from source_posthog.config import ConfigError, PostHogConfig, config_warnings, parse_config, validate_against_spec
from source_posthog.http import ClientError, Clients, RetriesExhausted, build_api_budget, key_scopes
from source_posthog.state import StateError, blob_to_dict, split_by_project, stream_states_of
from source_posthog.streams import STREAM_CLASSES
from source_posthog.progress import sync_summary
from source_posthog.streams.base import PostHogStream, SyncContext, most_actionable


class SourcePosthog(AbstractSource):
    def __init__(self) -> None:
        super().__init__()
        self._budget: Optional[APIBudget] = None  # one request budget for the connection, every project
        self._sync: Optional[SyncContext] = None  # a read's: its projects (listed once) and what each stream read
        install_log_filters()

    # -- config and state files: a bad file is a config error that says what to do ------------
    @staticmethod
    def read_config(config_path: str) -> MutableMapping[str, Any]:
        config = _read_json(config_path, "config")
        if not isinstance(config, dict):
            raise ConfigError("config", f"the file {config_path} holds a JSON {type(config).__name__}, not an object.", _FILE_FIXES["config"])
        return config

    def read_state(self, state_path: str) -> List[AirbyteStateMessage]:
        """Every shape a client passes (`state.stream_states_of`), as STREAM messages; nothing ignored silently."""
        if not state_path:
            return []
        logger = logging.getLogger("airbyte")
        states = stream_states_of(_read_json(state_path, "state"), state_path, known_stream_names(), logger.warning, logger.info)
        return [state_message(name, value) if isinstance(value, Mapping) or value is None else _raw_state_message(name, value) for name, value in states.items()]

    # -- the one client factory: every client gets the connection's budget ---------------------
    def clients(self, posthog: PostHogConfig) -> Clients:
        if self._budget is None:
            self._budget = build_api_budget()  # PostHog's limits are per key: every stream and project shares them
        return Clients(posthog, self._budget)

    # -- check ------------------------------------------------------------------------------------
    def check(self, logger: logging.Logger, config: Mapping[str, Any]) -> AirbyteConnectionStatus:
        # The CDK would repr() the reason, wrapping it in quotes; ours is already a sentence.
        succeeded, reason = self.check_connection(logger, config)
        if succeeded:
            return AirbyteConnectionStatus(status=Status.SUCCEEDED)
        return AirbyteConnectionStatus(status=Status.FAILED, message=filter_secrets(str(reason)))

    def check_connection(self, logger: logging.Logger, config: Mapping[str, Any]) -> Tuple[bool, Optional[Any]]:
        """Reads each configured project once, with the same HTTP policy as a sync: proves host, key and project."""
        try:
            validate_against_spec(config, self.spec(logger).connectionSpecification)
            posthog = parse_config(config)
        except ConfigError as error:
            return False, error.message
        self._warn_about_fields(config, logger)
        clients = self.clients(posthog)
        unreadable = []
        for project in posthog.project_ids:
            client = clients.client("projects", "project:read", project, read_timeout_seconds=min(posthog.request_timeout_seconds, 30))
            try:
                client.get(f"{posthog.base_url}/api/projects/{project}/")
            except ClientError as error:
                unreadable.append(error.message if len(posthog.project_ids) == 1 else f"Project {project}: {error.message}")
            except RetriesExhausted as error:
                if isinstance(error.last_failure, requests.ConnectionError):
                    return False, (
                        f"Could not reach PostHog at {posthog.base_url} ({type(error.last_failure).__name__}, "
                        f"{settings.SERVER_ERROR_MAX_RETRIES} retries). Check 'host': us.posthog.com for US Cloud, "
                        f"eu.posthog.com for EU Cloud, or your self-hosted address."
                    )
                unreadable.append(error.message if len(posthog.project_ids) == 1 else f"Project {project}: {error.message}")
        if unreadable:
            return False, " ".join(unreadable)
        if posthog.all_projects:
            listed = self._listed_projects(posthog, logger)
            logger.info(f"all_projects: the key lists {len(listed)} project(s): {', '.join(map(str, listed)) or 'none'}.")
        for stream, message in self.unreadable_streams(config).items():
            logger.warning(f"Stream {stream} cannot be synced with this key and is left out of discover: {message}")
        if posthog.exports:
            granted = self._granted_scopes(posthog)
            if granted is not None and not scopes.covers(granted, exports.WRITE_SCOPE):
                logger.warning(
                    f"export_mode file_download: the API key lacks the '{exports.WRITE_SCOPE}' scope (it has: {', '.join(granted)}), so a sync "
                    f"reads events, persons and sessions over HogQL instead. Give the key '{exports.WRITE_SCOPE}' to read them through PostHog's exports."
                )
        return True, None

    def unreadable_streams(self, config: Mapping[str, Any]) -> Dict[str, str]:
        """stream → why the key cannot read it (the scope it lacks), one cheap request per stream.

        A missing scope must not block setting up a connection: check still succeeds, discover
        leaves the stream out, and a sync never meets it unless the catalog asks for it.
        """
        streams = self.streams(config)
        granted = self._granted_scopes(parse_config(config))
        if granted is not None:
            return {
                stream.name: f"the API key lacks the {' or the '.join(repr(scope) for scope in stream.accepted_scopes)} scope (it has: {', '.join(granted)}). "
                f"Give the personal API key the '{stream.scope}' scope to sync {stream.name}."
                for stream in streams
                if not any(scopes.covers(granted, scope) for scope in stream.accepted_scopes)
            }
        missing: Dict[str, str] = {}
        for stream in streams:
            try:
                message = stream.missing_scope()
            except RetriesExhausted as error:
                logging.getLogger("airbyte").warning(f"Stream {stream.name}: its scope could not be verified ({error.message}); it is kept.")
                continue
            if message:
                missing[stream.name] = message
        return missing

    def _granted_scopes(self, posthog: PostHogConfig) -> Optional[List[str]]:
        """The key's scopes as PostHog describes the key itself (one request, no scope needed);
        None where the server cannot say (older or self-hosted versions): then one probe per stream."""
        client = self.clients(posthog).client("scopes", "", posthog.project_id, read_timeout_seconds=min(posthog.request_timeout_seconds, 30))
        return key_scopes(client, posthog.base_url)

    def _warn_about_fields(self, config: Mapping[str, Any], logger: logging.Logger) -> None:
        known = self.spec(logger).connectionSpecification.get("properties", {})
        for note in config_warnings(config, known):
            logger.warning(note)

    # -- discover and streams --------------------------------------------------------------------
    def discover(self, logger: logging.Logger, config: Mapping[str, Any]) -> AirbyteCatalog:
        unreadable = self.unreadable_streams(config)
        for stream, message in unreadable.items():
            logger.warning(f"Stream {stream} is left out of the catalog: {message}")
        return AirbyteCatalog(streams=[stream.as_airbyte_stream() for stream in self.streams(config) if stream.name not in unreadable])

    def streams(self, config: Mapping[str, Any]) -> List[Stream]:
        validate_against_spec(config, self.spec(logging.getLogger("airbyte")).connectionSpecification)
        posthog = parse_config(config)
        sync = self._sync if self._sync is not None and self._sync.config == posthog else SyncContext(posthog, self.clients(posthog), posthog.project_ids)
        return [stream_class(sync) for stream_class in STREAM_CLASSES]

    # -- several projects -------------------------------------------------------------------------
    def projects_to_read(self, posthog: PostHogConfig, logger: logging.Logger) -> Tuple[int, ...]:
        """`project_id`, then `additional_project_ids`, then (with `all_projects`) every project
        the key lists, looked up at every sync so that new projects are picked up."""
        projects = list(posthog.project_ids)
        if posthog.all_projects:
            projects += [project for project in self._listed_projects(posthog, logger) if project not in projects]
        return tuple(projects)

    def _listed_projects(self, posthog: PostHogConfig, logger: logging.Logger) -> List[int]:
        client = self.clients(posthog).client("projects", "project:read", posthog.project_id)
        url: Optional[str] = f"{posthog.api_url}projects/?limit=100"
        listed: List[int] = []
        while url:
            try:
                _, body = client.get(url)
            except ClientError as error:
                if error.status == 403:  # a key scoped to projects cannot list them
                    logger.warning(f"all_projects: the API key cannot list projects ({error.message}); reading the configured projects only.")
                    return listed
                raise
            page = envelopes.decode_body(body)
            listed += [item["id"] for item in page["results"] if isinstance(item.get("id"), int)]
            path = envelopes.next_path(page)
            url = f"{posthog.base_url}{path}" if path else None
        return listed

    # -- read -------------------------------------------------------------------------------------
    def read(
        self,
        logger: logging.Logger,
        config: Mapping[str, Any],
        catalog: ConfiguredAirbyteCatalog,
        state: Optional[List[AirbyteStateMessage]] = None,
    ) -> Iterator[AirbyteMessage]:
        install_log_filters()  # the CDK configured its log handlers by now
        validate_against_spec(config, self.spec(logger).connectionSpecification)
        posthog = parse_config(config)
        self._warn_about_fields(config, logger)
        self._sync = SyncContext(posthog, self.clients(posthog), self.projects_to_read(posthog, logger))  # this sync's, for every stream
        trusted = self._trusted_states(config, catalog, state or [], logger)
        failure_types: List[Optional[FailureType]] = []
        try:
            for message in super().read(logger, config, catalog, trusted):
                if message.type == Type.TRACE and message.trace.type == TraceType.ERROR:
                    failure_types.append(message.trace.error.failure_type)
                yield message
        except AirbyteTracedException as error:
            # (cdk_internals 8) The CDK ends a failed sync with a summary typed config_error, whatever
            # failed; a sync that will succeed on retry must not tell the platform the user must act.
            if error.failure_type == FailureType.config_error and (error.message or "").startswith(CDK_SUMMARY_PREFIX) and failure_types:
                raise AirbyteTracedException(message=error.message, internal_message=error.internal_message, failure_type=most_actionable(failure_types)) from None
            raise
        finally:
            for line in sync_summary(self._sync.reads):
                logger.info(line)

    def _trusted_states(
        self, config: Mapping[str, Any], catalog: ConfiguredAirbyteCatalog, state: List[AirbyteStateMessage], logger: logging.Logger
    ) -> List[AirbyteStateMessage]:
        """The incoming state this sync may trust, decided before the first request.

        Each stream's state, in any shape any release wrote, is split into each project's own
        (`state.split_by_project`). Every project this sync reads has its part judged by its stream
        (`PostHogStream.trusted_state`): a corrupt one, or a cursor in the future, fails the sync
        here with a config error, not halfway through it; a completed full refresh, or a state
        written for another project, is dropped with a log line, so that project starts from its
        first page (or anchor_date). Projects not read this sync keep their state as it was."""
        streams: Dict[str, PostHogStream] = {stream.name: stream for stream in self.streams(config)}  # type: ignore[misc]
        configured = {configured.stream.name for configured in catalog.streams}
        first = parse_config(config).project_id
        kept = []
        for message in state:
            stream_state = getattr(message, "stream", None)
            name = stream_state.stream_descriptor.name if stream_state else None
            if name in streams and name not in configured:
                logger.warning(f"The state holds a state for stream '{name}', which this sync's catalog does not select; it is not used.")
            if name not in configured or name not in streams or stream_state.stream_state is None:
                kept.append(message)
                continue
            if isinstance(stream_state.stream_state, (list, str, int, float, bool)):
                raise StateError(name, f"expected an object, got {type(stream_state.stream_state).__name__}")
            by_project = split_by_project(blob_to_dict(stream_state.stream_state), first)
            judged = {}
            for project, value in by_project.items():
                if project in self._sync.projects:
                    trusted = streams[name].trusted_state(project, value)
                    if trusted is not None:
                        judged[project] = trusted
                else:
                    judged[project] = value  # not read this sync: kept for when it is again
                    logger.warning(
                        f"Stream {name}: the state holds a state written for project {project}, which this sync does not read "
                        f"(it reads {', '.join(map(str, self._sync.projects))}); it is kept, unchanged, for when that project is read again."
                    )
            kept.append(state_message(name, {str(project): value for project, value in judged.items()}))
        return kept


def known_stream_names() -> set:
    return {camel_to_snake(stream_class.__name__) for stream_class in STREAM_CLASSES}


def _raw_state_message(stream: str, value: Any) -> AirbyteStateMessage:
    """A stream state that is not an object: kept as it came, so that its stream refuses it by name."""
    message = state_message(stream, {})
    message.stream.stream_state = value  # type: ignore[union-attr]
    return message


def state_message(stream: str, value: Optional[Mapping[str, Any]]) -> AirbyteStateMessage:
    return AirbyteStateMessage(
        type=AirbyteStateType.STREAM,
        stream=AirbyteStreamState(stream_descriptor=StreamDescriptor(name=stream), stream_state=AirbyteStateBlob(dict(value or {}))),
    )


_FILE_FIXES = {
    "config": "Write the config as a JSON object, e.g. {\"api_key\": \"phx_…\", \"project_id\": 12345}.",
    "state": "Pass the state this connector wrote (a JSON list of Airbyte state messages), or reset the connection's state.",
}


def _read_json(path: str, what: str) -> Any:
    try:
        with open(path, "r", encoding="utf-8") as file:
            return json.load(file)
    except OSError as error:
        raise ConfigError(what, f"the file {path} cannot be read ({error.strerror}).", _FILE_FIXES[what])
    except (ValueError, UnicodeDecodeError) as error:
        raise ConfigError(what, f"the file {path} is not valid JSON ({error}).", _FILE_FIXES[what])
