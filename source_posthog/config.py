"""Config parsing and validation: every error names the field and the fix.

The CDK validates the config against spec.yaml first (types, required keys); this module
checks what a JSON schema cannot: the host's form, the date's meaning, ranges.
"""

from __future__ import annotations

import html
import ipaddress
import json
import re
from dataclasses import dataclass, replace
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple
from urllib.parse import urlsplit

import pendulum
from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from source_posthog import settings
from source_posthog.secrets import register_api_key


class ConfigError(AirbyteTracedException):
    """A config value is wrong; the message names the field and how to fix it."""

    def __init__(self, field: str, problem: str, fix: str):
        message = f"Config field '{field}': {problem} {fix}"
        super().__init__(message=message, internal_message=message, failure_type=FailureType.config_error)
        self.field = field


@dataclass(frozen=True)
class PostHogConfig:
    api_key: str
    project_id: int
    base_url: str  # scheme://host[:port], no trailing slash
    anchor_date: pendulum.DateTime
    events_lookback_window_days: int
    events_page_size: int
    events_visibility_tolerance_minutes: int
    events_queries_in_flight: int
    request_timeout_seconds: int
    additional_project_ids: Tuple[int, ...] = ()
    all_projects: bool = False
    export_mode: str = "hogql"  # EXPORT_MODES: how events, persons and sessions are read

    @property
    def exports(self) -> bool:
        """events, persons and sessions are read through PostHog's file-download exports."""
        return self.export_mode == FILE_DOWNLOAD

    @property
    def project_ids(self) -> Tuple[int, ...]:
        """The configured projects, `project_id` first, each once (with `all_projects`, the sync
        adds every project the key can list)."""
        return tuple(dict.fromkeys((self.project_id, *self.additional_project_ids)))

    def for_project(self, project_id: int) -> "PostHogConfig":
        return replace(self, project_id=project_id)

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/"

    @property
    def project_url(self) -> str:
        return f"{self.base_url}/api/projects/{self.project_id}/"


# The official Airbyte connector's names for two of these fields (its spec: api_key, start_date,
# base_url, events_time_step). A config carried over from it is honoured, never silently ignored.
OFFICIAL_NAMES = {"start_date": "anchor_date", "base_url": "host"}
OFFICIAL_IGNORED = {
    "events_time_step": "this connector plans its event windows from the data itself ('events_page_size' sets the rows per query)",
}


def with_our_names(config: Mapping[str, Any]) -> Dict[str, Any]:
    """The config with the official connector's `start_date` / `base_url` read as `anchor_date` /
    `host`. Both names with different values is a config error naming both: which one wins would be
    a guess, and a wrong guess reads the wrong history or the wrong host."""
    ours = dict(config)
    for official, field in OFFICIAL_NAMES.items():
        value = config.get(official)
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        mine = config.get(field)
        if mine is None or (isinstance(mine, str) and not mine.strip()):
            ours[field] = value
        elif str(mine).strip() != str(value).strip():
            raise ConfigError(
                official,
                f"is the official connector's name for '{field}', and the config sets both, to {value!r} and {mine!r}.",
                f"Keep only '{field}' (this connector's name), with the value you mean.",
            )
    return ours


def config_warnings(config: Mapping[str, Any], known: Iterable[str]) -> List[str]:
    """One sentence per field this connector does not read (a field left over from an older
    version, or from the official connector, must not break a connection: it is named, not refused)."""
    known = set(known)
    notes = []
    for field in sorted(set(config) - known):
        if field in OFFICIAL_NAMES:
            notes.append(f"Config field '{field}' (the official connector's name) is read as '{OFFICIAL_NAMES[field]}'; rename it to '{OFFICIAL_NAMES[field]}'.")
        elif field in OFFICIAL_IGNORED:
            notes.append(f"Config field '{field}' is not used: {OFFICIAL_IGNORED[field]}. Remove it from the config.")
        else:
            notes.append(f"Config field '{field}' is not a field of this connector and is ignored. Known fields: {', '.join(sorted(known))}.")
    return notes


def parse_config(config: Mapping[str, Any], now: Optional[pendulum.DateTime] = None) -> PostHogConfig:
    now = now or pendulum.now("UTC")
    config = with_our_names(config)
    return PostHogConfig(
        api_key=_api_key(config.get("api_key")),
        project_id=_project_id(config.get("project_id")),
        base_url=parse_host(config.get("host"), _boolean(config, ALLOW_HTTP_FIELD)),
        anchor_date=parse_anchor_date(config.get("anchor_date"), now),
        events_lookback_window_days=_int_in_range(
            config,
            "events_lookback_window_days",
            settings.EVENTS_LOOKBACK_WINDOW_DAYS_DEFAULT,
            0,
            settings.EVENTS_LOOKBACK_WINDOW_DAYS_MAX,
        ),
        events_visibility_tolerance_minutes=_int_in_range(
            config,
            "events_visibility_tolerance_minutes",
            settings.EVENTS_VISIBILITY_TOLERANCE_MINUTES_DEFAULT,
            0,
            settings.EVENTS_VISIBILITY_TOLERANCE_MINUTES_MAX,
        ),
        events_queries_in_flight=_int_in_range(config, "events_queries_in_flight", settings.EVENTS_QUERIES_IN_FLIGHT_MAX, 1, settings.EVENTS_QUERIES_IN_FLIGHT_MAX),
        events_page_size=_int_in_range(
            config,
            "events_page_size",
            settings.EVENTS_PAGE_SIZE_DEFAULT,
            settings.EVENTS_PAGE_SIZE_MIN,
            settings.EVENTS_PAGE_SIZE_MAX,
        ),
        request_timeout_seconds=_int_in_range(
            config, "request_timeout_seconds", settings.READ_TIMEOUT_SECONDS_DEFAULT, 1, 900
        ),
        additional_project_ids=_additional_project_ids(config.get(ADDITIONAL_PROJECTS_FIELD)),
        all_projects=_boolean(config, ALL_PROJECTS_FIELD),
        export_mode=_export_mode(config.get(EXPORT_MODE_FIELD)),
    )


EXPORT_MODE_FIELD = "export_mode"
HOGQL, FILE_DOWNLOAD = "hogql", "file_download"
EXPORT_MODES = (HOGQL, FILE_DOWNLOAD)


def _export_mode(value: Any) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        return HOGQL
    mode = value.strip().lower() if isinstance(value, str) else value
    if mode not in EXPORT_MODES:
        raise ConfigError(
            EXPORT_MODE_FIELD,
            f"must be 'hogql' or 'file_download', got {value!r}.",
            "Leave it empty for 'hogql' (HogQL queries, today's path), or set 'file_download' to read events, persons and sessions "
            "through PostHog's file-download exports (billed per exported row; the key needs the batch_export:write scope).",
        )
    return mode


ADDITIONAL_PROJECTS_FIELD = "additional_project_ids"
ALL_PROJECTS_FIELD = "all_projects"


def _additional_project_ids(value: Any) -> Tuple[int, ...]:
    if value is None:
        return ()
    items: List[Any] = value if isinstance(value, list) else [value]
    ids = []
    for item in items:
        if isinstance(item, str) and item.strip().isdigit():
            item = int(item.strip())
        if isinstance(item, bool) or not isinstance(item, int) or item < 1:
            raise ConfigError(
                ADDITIONAL_PROJECTS_FIELD,
                f"must be a list of positive integers (project IDs), got {item!r} in it.",
                "List the other projects' IDs from their Project settings, e.g. [12346, 12347], or leave it empty.",
            )
        ids.append(item)
    return tuple(dict.fromkeys(ids))


def _api_key(value: Any) -> str:
    register_api_key(value)  # before anything can print it, in whatever form it came
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            "api_key",
            "is missing or empty.",
            "Create a personal API key in PostHog (Settings → User → Personal API keys) and paste it here.",
        )
    key = value.strip()
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", key):  # never echo it: a pasted key may be half a secret
        raise ConfigError(
            "api_key",
            "contains characters a PostHog personal API key never has (spaces, line breaks, quotes…).",
            "Copy the key again from Settings → User → Personal API keys; it looks like phx_ followed by letters and digits.",
        )
    if key.startswith("phc_"):
        raise ConfigError(
            "api_key",
            "is a project API key (phc_…), which only sends events.",
            "Use a personal API key (phx_…) from Settings → User → Personal API keys.",
        )
    return key


def _project_id(value: Any) -> int:
    if isinstance(value, bool):
        value = None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or value < 1:
        raise ConfigError(
            "project_id",
            f"must be a positive integer, got {value!r}.",
            "Copy the Project ID from PostHog's Project settings (the number in /project/<id>/).",
        )
    return value


def parse_host(value: Any, allow_private_http: bool = False) -> str:
    """`us.posthog.com`, `https://eu.posthog.com/`, `posthog.example.com/api` → base URL.

    Plain http is allowed for loopback addresses, and, once `allow_http_on_private_network` is
    set, for a PostHog on a private network (a private IP, a docker-compose service name, a
    `.internal`/`.local`/`.lan`/`.home.arpa` name). Never for a public address: the key would
    cross the internet unencrypted.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        value = settings.DEFAULT_HOST
    if not isinstance(value, str):
        raise ConfigError("host", f"must be a host name or URL, got {value!r}.", "For example us.posthog.com.")
    raw = value.strip()
    parts = urlsplit(raw if "://" in raw else f"https://{raw}")
    scheme, hostname = parts.scheme.lower(), (parts.hostname or "").lower()
    if scheme not in ("http", "https") or not hostname or parts.query or parts.fragment:
        raise ConfigError(
            "host",
            f"{raw!r} is not a host name or http(s) URL.",
            "Use us.posthog.com, eu.posthog.com, or your self-hosted domain such as https://posthog.example.com.",
        )
    try:
        port = parts.port
    except ValueError:
        raise ConfigError("host", f"{raw!r} has an invalid port.", "Use host[:port], e.g. posthog.example.com:8000.")
    if hostname.endswith(".i.posthog.com"):
        region = hostname.split(".")[0]
        right = f"{region}.posthog.com" if region in ("us", "eu") else "us.posthog.com or eu.posthog.com"
        raise ConfigError(
            "host",
            f"{hostname} is PostHog's ingestion host, which does not serve the API this connector reads.",
            f"Use {right} instead.",
        )
    if scheme == "http" and not _is_loopback(hostname) and not (allow_private_http and is_private_network_host(hostname)):
        if is_private_network_host(hostname):
            raise ConfigError(
                "host",
                f"plain http:// to {hostname} sends the API key unencrypted; it is allowed on a private network only when you say so.",
                f"Set '{ALLOW_HTTP_FIELD}' to true if {hostname} is a PostHog on your private network, or use https://{hostname}{f':{port}' if port else ''}.",
            )
        raise ConfigError(
            "host",
            f"plain http:// is not allowed for {hostname}, a public address: the API key would travel unencrypted "
            f"('{ALLOW_HTTP_FIELD}' covers private networks only).",
            f"Use https://{hostname}{f':{port}' if port else ''}.",
        )
    path = parts.path.rstrip("/")
    if path.endswith("/api"):
        path = path[: -len("/api")]
    netloc = hostname if port is None else f"{hostname}:{port}"
    if ":" in hostname:  # IPv6 literal
        netloc = f"[{hostname}]" if port is None else f"[{hostname}]:{port}"
    return f"{scheme}://{netloc}{path}"


ALLOW_HTTP_FIELD = "allow_http_on_private_network"
PRIVATE_SUFFIXES = (".internal", ".local", ".lan", ".home.arpa", ".localdomain")


def is_private_network_host(hostname: str) -> bool:
    """A private IP (10/8, 172.16/12, 192.168/16, fc00::/7, link-local), a single-label name (a
    docker-compose service such as `posthog-web`), or a name under a private-use suffix."""
    try:
        address = ipaddress.ip_address(hostname)
    except ValueError:
        return "." not in hostname or hostname.endswith(PRIVATE_SUFFIXES)
    return (address.is_private or address.is_link_local) and not address.is_unspecified


def _is_loopback(hostname: str) -> bool:
    if hostname == "localhost" or hostname.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def parse_anchor_date(value: Any, now: pendulum.DateTime) -> pendulum.DateTime:
    if value is None or (isinstance(value, str) and not value.strip()):
        return (now - settings.DEFAULT_ANCHOR_AGE).start_of("day")
    fix = "Use a UTC date such as 2025-01-01 or a date-time such as 2025-01-01T00:00:00Z."
    if not isinstance(value, str):
        raise ConfigError("anchor_date", f"must be a string, got {value!r}.", fix)
    try:
        parsed = pendulum.parse(value.strip(), tz="UTC")  # ISO 8601 only: 01/02/2025 is ambiguous
    except (ValueError, pendulum.parsing.exceptions.ParserError) as error:
        raise ConfigError("anchor_date", f"{value!r} is not a date ({error}).", fix)
    if not isinstance(parsed, pendulum.DateTime):
        if isinstance(parsed, pendulum.Date):
            parsed = pendulum.datetime(parsed.year, parsed.month, parsed.day, tz="UTC")
        else:
            raise ConfigError("anchor_date", f"{value!r} is not a date.", fix)
    parsed = parsed.in_timezone("UTC")
    if parsed > now:
        raise ConfigError(
            "anchor_date",
            f"{value!r} is in the future, so the incremental streams would read nothing.",
            f"Use a date before today ({now.to_date_string()}), or leave it empty for one year back.",
        )
    return parsed


def _boolean(config: Mapping[str, Any], field: str) -> bool:
    value = config.get(field, False)
    if not isinstance(value, bool):
        raise ConfigError(field, f"must be true or false, got {value!r}.", "Leave it empty for false.")
    return value


def _int_in_range(config: Mapping[str, Any], field: str, default: int, low: int, high: int) -> int:
    value = config.get(field)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(field, f"must be a whole number from {low} to {high}, got {value!r}.", f"Leave it empty for {default}.")
    return value


def plain_text(html_text: str) -> str:
    """A spec description (HTML for the Airbyte UI form) as plain text for a message."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", html_text)).split())


def validate_against_spec(config: Mapping[str, Any], schema: Mapping[str, Any]) -> None:
    """JSON-schema validation of the whole config, reported as the first field and its fix."""
    import jsonschema

    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(with_our_names(config)), key=lambda e: list(e.path))
    if not errors:
        return
    error = errors[0]
    properties = schema.get("properties", {})
    if error.validator == "required":
        field = error.message.split("'")[1]
        problem = "is required but missing."
    else:
        field = ".".join(str(part) for part in error.path) or "config"
        shown = "<secret>" if properties.get(field, {}).get("airbyte_secret") else repr(error.instance)[:60]
        problem = f"{shown} is invalid: {error.validator} {error.validator_value!r}." if error.validator != "type" else f"{shown} is not of type {error.validator_value}."
    spec = properties.get(field, {})
    example = spec.get("examples", [None])[0]
    fix = plain_text(spec.get("description", "")).split(". ")[0].strip().rstrip(".")
    if example is not None and not spec.get("airbyte_secret"):
        shown_example = json.dumps(example)  # as it is written in the JSON config: false, not False
        fix = f"Expected: {fix}. Example: {shown_example}." if fix else f"Example: {shown_example}."
    elif fix:
        fix = f"Expected: {fix}."
    raise ConfigError(field, problem, fix)
