"""SourcePosthog: validate the config and state, check access, declare the streams."""

from __future__ import annotations

import json
import logging
from typing import Any, Dict, Iterator, List, Mapping, MutableMapping, Optional, Tuple

import orjson
import requests
from airbyte_cdk.models import (
    AirbyteCatalog,
    AirbyteConnectionStatus,
    AirbyteMessage,
    AirbyteStateMessage,
    ConfiguredAirbyteCatalog,
    Status,
)
from airbyte_cdk.sources import AbstractSource
from airbyte_cdk.sources.streams import Stream
from airbyte_cdk.utils.airbyte_secrets_utils import filter_secrets

from source_posthog import settings
from source_posthog.cdk_internals import install_log_filters
from source_posthog.config import ConfigError, PostHogConfig, parse_config, validate_against_spec
from source_posthog.http import ClientError, PostHogClient, RetriesExhausted, build_api_budget
from source_posthog.api import envelopes, scopes
from source_posthog.projects import ProjectsRead, blob_to_dict, split_state, state_message
from source_posthog.state import StateError
from source_posthog.streams import STREAM_CLASSES


class SourcePosthog(AbstractSource):
    def __init__(self) -> None:
        super().__init__()
        self._budget: Optional[Any] = None  # one request budget for the connection, every project
        install_log_filters()

    # -- config and state files: a bad file is a config error that says what to do ------------
    @staticmethod
    def read_config(config_path: str) -> MutableMapping[str, Any]:
        config = _read_json(config_path, "config")
        if not isinstance(config, dict):
            raise ConfigError("config", f"the file {config_path} holds a JSON {type(config).__name__}, not an object.", _FILE_FIXES["config"])
        return config

    def read_state(self, state_path: str) -> List[AirbyteStateMessage]:
        if state_path:
            _read_json(state_path, "state")  # a clear message for a file that is not JSON
        try:
            return super().read_state(state_path)
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            raise StateError("state file", f"{state_path} is not a list of Airbyte state messages ({type(error).__name__})")

    def check(self, logger: logging.Logger, config: Mapping[str, Any]) -> AirbyteConnectionStatus:
        # The CDK would repr() the reason, wrapping it in quotes; ours is already a sentence.
        succeeded, reason = self.check_connection(logger, config)
        if succeeded:
            return AirbyteConnectionStatus(status=Status.SUCCEEDED)
        return AirbyteConnectionStatus(status=Status.FAILED, message=filter_secrets(str(reason)))

    def check_connection(self, logger: logging.Logger, config: Mapping[str, Any]) -> Tuple[bool, Optional[Any]]:
        """Reads the configured project once, with the same HTTP policy as a sync: proves host, key and project."""
        try:
            validate_against_spec(config, self.spec(logger).connectionSpecification)
            posthog = parse_config(config)
        except ConfigError as error:
            return False, error.message
        unreadable = []
        for project in posthog.project_ids:
            one = posthog.for_project(project)
            client = PostHogClient("projects", "project:read", one.api_key, project, one.base_url, None, min(one.request_timeout_seconds, 30))
            try:
                client.get(one.project_url)
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

    @staticmethod
    def _granted_scopes(posthog: PostHogConfig) -> Optional[List[str]]:
        """The key's scopes as PostHog describes the key itself (one request, no scope needed);
        None where the server cannot say (older or self-hosted versions): then one probe per stream."""
        client = PostHogClient("scopes", "", posthog.api_key, posthog.project_id, posthog.base_url, None, min(posthog.request_timeout_seconds, 30))
        try:
            _, body = client.get(f"{posthog.base_url}{scopes.CURRENT_KEY_PATH}")
            return scopes.granted_scopes(orjson.loads(body))
        except (ClientError, RetriesExhausted, orjson.JSONDecodeError):
            return None

    def discover(self, logger: logging.Logger, config: Mapping[str, Any]) -> AirbyteCatalog:
        unreadable = self.unreadable_streams(config)
        for stream, message in unreadable.items():
            logger.warning(f"Stream {stream} is left out of the catalog: {message}")
        return AirbyteCatalog(streams=[stream.as_airbyte_stream() for stream in self.streams(config) if stream.name not in unreadable])

    def streams(self, config: Mapping[str, Any]) -> List[Stream]:
        validate_against_spec(config, self.spec(logging.getLogger("airbyte")).connectionSpecification)
        posthog = parse_config(config)
        if self._budget is None:
            self._budget = build_api_budget()  # one budget: every stream and project shares PostHog's per-key limits
        return [stream_class(posthog, self._budget) for stream_class in STREAM_CLASSES]

    # -- several projects (projects.py) -------------------------------------------------------
    def projects_to_read(self, posthog: PostHogConfig, logger: logging.Logger) -> List[int]:
        """`project_id`, then `additional_project_ids`, then (with `all_projects`) every project
        the key lists, looked up at every sync so that new projects are picked up."""
        projects = list(posthog.project_ids)
        if posthog.all_projects:
            projects += [project for project in self._listed_projects(posthog, logger) if project not in projects]
        return projects

    def _listed_projects(self, posthog: PostHogConfig, logger: logging.Logger) -> List[int]:
        client = PostHogClient("projects", "project:read", posthog.api_key, posthog.project_id, posthog.base_url, self._budget, posthog.request_timeout_seconds)
        url: Optional[str] = f"{posthog.api_url}projects/?limit=100"
        listed: List[int] = []
        while url:
            try:
                response, body = client.get(url)
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

    @staticmethod
    def _project_config(config: Mapping[str, Any], project: int) -> Dict[str, Any]:
        return {**config, "project_id": project}

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
        projects = self.projects_to_read(posthog, logger)
        incoming = self._states_by_project(state or [], posthog.project_id)
        # Every project's state is judged before any stream starts (a corrupt one fails the sync here).
        trusted: Dict[str, Dict[int, Dict[str, Any]]] = {}
        for project in projects:
            messages = [state_message(name, by_project[project]) for name, by_project in incoming.items() if project in by_project]
            for message in self._own_state(self._project_config(config, project), catalog, messages):
                trusted.setdefault(message.stream.stream_descriptor.name, {})[project] = blob_to_dict(message.stream.stream_state) or {}
        for name, by_project in incoming.items():  # unconfigured projects: ProjectsRead drops them, saying so
            trusted.setdefault(name, {}).update({project: value for project, value in by_project.items() if project not in projects})
        run = ProjectsRead(projects, catalog, trusted, logger, posthog.anchor_date.to_iso8601_string())
        yield from run.run(lambda project, one, messages: super(SourcePosthog, self).read(logger, self._project_config(config, project), one, messages))

    @staticmethod
    def _states_by_project(state: List[AirbyteStateMessage], primary_project: int) -> Dict[str, Dict[int, Dict[str, Any]]]:
        by_stream: Dict[str, Dict[int, Dict[str, Any]]] = {}
        for message in state:
            stream_state = getattr(message, "stream", None)
            if stream_state is None or stream_state.stream_state is None:
                continue
            by_stream[stream_state.stream_descriptor.name] = split_state(blob_to_dict(stream_state.stream_state), primary_project)
        return by_stream

    def _own_state(self, config: Mapping[str, Any], catalog: ConfiguredAirbyteCatalog, state: List[AirbyteStateMessage]) -> List[AirbyteStateMessage]:
        """The incoming state this sync may trust, decided before the first request.

        Each configured stream judges its own state (`PostHogStream.incoming_state`): a corrupt
        one, or a cursor in the future, fails the sync here with a config error, not halfway
        through it; a completed full refresh, or a state written for another project, is dropped
        with a log line, so that stream starts from its first page (or anchor_date).
        """
        streams = {stream.name: stream for stream in self.streams(config)}
        configured = {configured.stream.name for configured in catalog.streams}
        kept = []
        for message in state:
            stream_state = getattr(message, "stream", None)
            name = stream_state.stream_descriptor.name if stream_state else None
            if name in configured and name in streams and stream_state.stream_state is not None:
                value = stream_state.stream_state
                if not streams[name].incoming_state(value if isinstance(value, dict) else dict(vars(value))):
                    continue
            kept.append(message)
        return kept


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
