"""Fluent builders for configs, PostHog requests and PostHog responses.

Requests:   PostHogRequest.persons().with_limit(1000).build()
            PostHogRequest.from_next_url(next_url).build()
Responses:  PostHogResponse.page("persons").with_records([...]).with_next(url).build()
            PostHogResponse.error(429).with_retry_after(120).build()
Records:    record("persons", id="...", name="...")  (the template's first record, fields replaced)

Templates live in `unit_tests/resource/http/response/<name>.json`: one per endpoint, shaped as
`docs/posthog-api.md` § 3 documents, and the error bodies of § 1.4 (drf-exceptions-hog).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional
from urllib.parse import parse_qsl, urlsplit

from airbyte_cdk.test.mock_http import HttpRequest, HttpResponse
from airbyte_cdk.test.mock_http.request import ANY_QUERY_PARAMS

API_KEY = "phx_UnitTestSecretKeyDoNotLeak0123456789abcdef"
PROJECT_ID = 2
HOST = "us.posthog.com"
BASE_URL = f"https://{HOST}"
PROJECT_URL = f"{BASE_URL}/api/projects/{PROJECT_ID}"
NOW = "2025-06-01T12:00:00Z"
ANCHOR_DATE = "2025-05-01T00:00:00Z"

TEMPLATES = Path(__file__).parent / "resource" / "http" / "response"


def load_template(name: str) -> Dict[str, Any]:
    with open(TEMPLATES / f"{name}.json", encoding="utf-8") as template:
        return json.load(template)


def record(template: str, **fields: Any) -> Dict[str, Any]:
    """The first record of a list template, with `fields` replaced."""
    body = load_template(template)
    results = body if isinstance(body, list) else body["results"] if isinstance(body, dict) and "results" in body else [body]
    return {**copy.deepcopy(results[0]), **fields}


# -- config ------------------------------------------------------------------------------------


class ConfigBuilder:
    def __init__(self) -> None:
        self._config: Dict[str, Any] = {
            "api_key": API_KEY,
            "project_id": PROJECT_ID,
            "host": HOST,
            "anchor_date": ANCHOR_DATE,
        }

    def with_api_key(self, api_key: str) -> "ConfigBuilder":
        return self.with_field("api_key", api_key)

    def with_project_id(self, project_id: Any) -> "ConfigBuilder":
        return self.with_field("project_id", project_id)

    def with_host(self, host: Any) -> "ConfigBuilder":
        return self.with_field("host", host)

    def with_anchor_date(self, anchor_date: Any) -> "ConfigBuilder":
        return self.with_field("anchor_date", anchor_date)

    def with_events_page_size(self, page_size: int) -> "ConfigBuilder":
        return self.with_field("events_page_size", page_size)

    def with_events_lookback_window_days(self, days: int) -> "ConfigBuilder":
        return self.with_field("events_lookback_window_days", days)

    def with_field(self, key: str, value: Any) -> "ConfigBuilder":
        self._config[key] = value
        return self

    def without(self, key: str) -> "ConfigBuilder":
        self._config.pop(key, None)
        return self

    def build(self) -> Dict[str, Any]:
        return copy.deepcopy(self._config)


# -- requests ----------------------------------------------------------------------------------


class PostHogRequest:
    """An `HttpRequest` for one PostHog endpoint; every request must carry the Bearer key."""

    def __init__(self, url: str, method: str = "GET") -> None:
        self._url = url
        self._method = method
        self._params: Dict[str, Any] = {}
        self._any_params = False
        self._body: Optional[Mapping[str, Any]] = None
        self._api_key = API_KEY

    # endpoints
    @classmethod
    def projects(cls) -> "PostHogRequest":
        return cls(f"{BASE_URL}/api/projects/")

    @classmethod
    def project(cls, project_id: int = PROJECT_ID) -> "PostHogRequest":
        return cls(f"{BASE_URL}/api/projects/{project_id}/")

    @classmethod
    def resource(cls, name: str, project_id: int = PROJECT_ID) -> "PostHogRequest":
        return cls(f"{BASE_URL}/api/projects/{project_id}/{name}/")

    @classmethod
    def persons(cls) -> "PostHogRequest":
        return cls.resource("persons")

    @classmethod
    def cohorts(cls) -> "PostHogRequest":
        return cls.resource("cohorts")

    @classmethod
    def feature_flags(cls) -> "PostHogRequest":
        return cls.resource("feature_flags")

    @classmethod
    def insights(cls) -> "PostHogRequest":
        return cls.resource("insights")

    @classmethod
    def annotations(cls) -> "PostHogRequest":
        return cls.resource("annotations")

    @classmethod
    def actions(cls) -> "PostHogRequest":
        return cls.resource("actions")

    @classmethod
    def session_recordings(cls) -> "PostHogRequest":
        return cls.resource("session_recordings")

    @classmethod
    def event_definitions(cls) -> "PostHogRequest":
        return cls.resource("event_definitions")

    @classmethod
    def property_definitions(cls) -> "PostHogRequest":
        return cls.resource("property_definitions")

    @classmethod
    def query(cls) -> "PostHogRequest":
        return cls(f"{PROJECT_URL}/query/", method="POST")

    @classmethod
    def from_next_url(cls, next_url: str, base_url: str = BASE_URL) -> "PostHogRequest":
        """The request the connector must send for a `next` link: its path and query on the configured host."""
        parts = urlsplit(next_url)
        request = cls(f"{base_url}{parts.path}")
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            request._params[key] = value
        return request

    # parameters
    def with_limit(self, limit: int) -> "PostHogRequest":
        return self.with_param("limit", limit)

    def with_offset(self, offset: int) -> "PostHogRequest":
        return self.with_param("offset", offset)

    def with_type(self, kind: str) -> "PostHogRequest":
        return self.with_param("type", kind)

    def with_group_type_index(self, index: int) -> "PostHogRequest":
        return self.with_param("group_type_index", index)

    def with_basic(self) -> "PostHogRequest":
        return self.with_param("basic", "true")

    def with_date_from(self, date_from: str) -> "PostHogRequest":
        return self.with_param("date_from", date_from)

    def with_order(self, order: str, direction: str) -> "PostHogRequest":
        return self.with_param("order", order).with_param("order_direction", direction)

    def with_param(self, key: str, value: Any) -> "PostHogRequest":
        self._params[key] = str(value)
        return self

    def with_any_query_params(self) -> "PostHogRequest":
        self._any_params = True
        return self

    def with_body(self, body: Mapping[str, Any]) -> "PostHogRequest":
        self._body = body
        return self

    def with_api_key(self, api_key: str) -> "PostHogRequest":
        self._api_key = api_key
        return self

    def build(self) -> HttpRequest:
        query_params: Any = ANY_QUERY_PARAMS if self._any_params else (dict(self._params) or None)
        return HttpRequest(
            url=self._url,
            query_params=query_params,
            headers={"Authorization": f"Bearer {self._api_key}"},
            body=self._body,
        )


# -- responses ---------------------------------------------------------------------------------

ERROR_TEMPLATES = {
    400: "error_400_validation",
    401: "error_401_invalid_key",
    403: "error_403_project",
    404: "error_404",
    429: "error_429_throttled",
    500: "error_500",
    502: "error_500",
    503: "error_500",
}


class PostHogResponse:
    def __init__(self, body: Any, status_code: int = 200) -> None:
        self._body = body
        self._status_code = status_code
        self._headers: Dict[str, str] = {"Content-Type": "application/json"}
        self._raw: Optional[str] = None

    @classmethod
    def page(cls, template: str) -> "PostHogResponse":
        return cls(load_template(template))

    @classmethod
    def error(cls, status_code: int, template: Optional[str] = None) -> "PostHogResponse":
        return cls(load_template(template or ERROR_TEMPLATES[status_code]), status_code)

    @classmethod
    def forbidden_scope(cls, scope: str) -> "PostHogResponse":
        response = cls.error(403, "error_403_scope")
        response._body["detail"] = f"API key missing required scope '{scope}'"
        return response

    @classmethod
    def raw(cls, text: str, status_code: int, content_type: str = "text/html") -> "PostHogResponse":
        response = cls({}, status_code)
        response._raw = text
        response._headers["Content-Type"] = content_type
        return response

    def with_records(self, records: List[Mapping[str, Any]]) -> "PostHogResponse":
        self._body["results"] = [dict(item) for item in records]
        return self

    def with_next(self, next_url: Optional[str]) -> "PostHogResponse":
        self._body["next"] = next_url
        return self

    def with_count(self, count: int) -> "PostHogResponse":
        self._body["count"] = count
        return self

    def with_has_next(self, has_next: bool) -> "PostHogResponse":
        self._body["has_next"] = has_next
        return self

    def with_field(self, key: str, value: Any) -> "PostHogResponse":
        self._body[key] = value
        return self

    def without(self, key: str) -> "PostHogResponse":
        self._body.pop(key, None)
        return self

    def with_retry_after(self, seconds: int) -> "PostHogResponse":
        return self.with_header("Retry-After", str(seconds))

    def with_header(self, key: str, value: str) -> "PostHogResponse":
        self._headers[key] = value
        return self

    @property
    def body(self) -> Any:
        return self._body

    def build(self) -> HttpResponse:
        text = self._raw if self._raw is not None else json.dumps(self._body)
        return HttpResponse(body=text, status_code=self._status_code, headers=dict(self._headers))


def numbered(template: str, count: int, start: int = 1, id_format: Optional[str] = None, **fields: Any) -> List[Dict[str, Any]]:
    """`count` copies of a template record with distinct ids (`id_format.format(n)` or the number)."""
    return [record(template, id=(id_format.format(n) if id_format else n), **fields) for n in range(start, start + count)]


def person_uuid(n: int) -> str:
    """A person id whose ClickHouse order (second half first) is n's order, and whose text order is not."""
    from unit_tests.support.clickhouse import scrambled_half

    return f"{scrambled_half(n, 32):08x}-7c1d-7000-8000-{n:012x}"


# -- the scope probes of check and discover (one cheap request per stream) ------------------------

PROBED = {  # stream → (resource path under the project; the scope). Not projects: check itself reads the project.
    "cohorts": ("cohorts", "cohort:read"),
    "feature_flags": ("feature_flags", "feature_flag:read"),
    "insights": ("insights", "insight:read"),
    "annotations": ("annotations", "annotation:read"),
    "actions": ("actions", "action:read"),
    "event_definitions": ("event_definitions", "event_definition:read"),
    "property_definitions": ("property_definitions", "property_definition:read"),
    "group_types": ("groups_types", "group:read"),
    "groups": ("groups", "group:read"),
    "dashboards": ("dashboards", "dashboard:read"),
    "experiments": ("experiments", "experiment:read"),
    "surveys": ("surveys", "survey:read"),
    "activity_log": ("activity_log", "activity_log:read"),
    "persons": ("persons", "person:read"),
    "cohort_membership": ("query", "query:read"),
    "session_recordings": ("session_recordings", "session_recording:read"),
    "sessions": ("query", "query:read"),
    "events": ("query", "query:read"),
}


CURRENT_KEY = PostHogRequest(f"{BASE_URL}/api/personal_api_keys/@current/")


def mock_current_key(http_mocker: Any, scopes: List[str]) -> None:
    """PostHog describes the calling key itself (docs/posthog-api.md § 12)."""
    body = {"id": "0190aa00-0000-7000-8000-000000000001", "label": "airbyte", "value": None, "mask_value": "phx_...abcd", "scopes": scopes, "scoped_teams": [], "scoped_organizations": []}
    http_mocker.get(CURRENT_KEY.build(), PostHogResponse(body).build())


def mock_scope_probes(http_mocker: Any, refused: Optional[List[str]] = None) -> None:
    """A PostHog that cannot describe the key (404 on @current, as older versions): answer every
    stream's probe with an empty page, or a 403 for the scope of each stream in `refused`."""
    http_mocker.get(CURRENT_KEY.build(), PostHogResponse.error(404).build())
    for stream, (resource, scope) in PROBED.items():
        request = PostHogRequest.resource(resource).with_any_query_params()
        if stream == "persons":  # HogQL first (query:read); the REST list (person:read) only if that is refused
            refuse = stream in (refused or [])
            query = PostHogResponse.forbidden_scope("query:read") if refuse else PostHogResponse(load_template("query_events")).with_field("results", [])
            http_mocker.post(PostHogRequest.query().with_body(_persons_probe_body()).build(), query.build())
            if refuse:
                http_mocker.get(request.build(), PostHogResponse.forbidden_scope(scope).build())
            continue
        if stream in (refused or []):
            response = PostHogResponse.forbidden_scope(scope).build()
        elif stream in ("events", "sessions", "cohort_membership"):
            response = PostHogResponse(load_template("query_events")).with_field("results", []).build()
        elif stream == "session_recordings":
            response = PostHogResponse({"results": [], "has_next": False, "version": 4}).build()
        elif stream == "group_types":
            response = PostHogResponse([]).build()  # a bare array (docs/posthog-api.md § 14.1)
        elif stream in ("groups", "activity_log"):
            response = PostHogResponse({"next": None, "previous": None, "results": []}).build()
        else:
            response = PostHogResponse({"count": 0, "next": None, "previous": None, "results": []}).build()
        if stream in ("events", "sessions", "cohort_membership"):
            http_mocker.post(PostHogRequest.query().with_body(_probe_body_of(stream)).build(), response)
        else:
            http_mocker.get(request.build(), response)


EMPTY_EVERYTHING = {"count": 0, "next": None, "previous": None, "results": [], "has_next": False, "columns": ["uuid"], "types": []}


def readable_everywhere(requests_mock: Any, base_url: str) -> None:
    """requests_mock: every other GET/POST under `base_url` answers an empty page, so that check's
    scope probes pass. Register it first: later matchers take precedence."""
    import re

    for method in ("GET", "POST"):
        requests_mock.register_uri(method, re.compile(re.escape(base_url) + "/api/"), json=EMPTY_EVERYTHING)


def stream_of(stream_class: Any, config: Optional[Mapping[str, Any]] = None) -> Any:
    """A stream as a sync of `config` (default: the unit tests' config, project 2) builds it."""
    from source_posthog.config import parse_config
    from source_posthog.http import Clients, build_api_budget
    from source_posthog.streams.base import SyncContext

    posthog = parse_config(dict(config) if config is not None else ConfigBuilder().build())
    return stream_class(SyncContext(posthog, Clients(posthog, build_api_budget()), posthog.project_ids))


def probe_body(stream_class: Any) -> Mapping[str, Any]:
    """The JSON body of a stream's scope probe (it depends on the frozen clock only)."""
    from source_posthog.streams.base import ProjectRead

    stream = stream_of(stream_class)
    return stream.probe_request(ProjectRead(stream, stream.config.project_id, incremental=False))[3]


def _persons_probe_body() -> Mapping[str, Any]:
    from source_posthog.streams import Persons

    return probe_body(Persons)


def _events_probe_body() -> Mapping[str, Any]:
    from source_posthog.streams import Events

    return probe_body(Events)


def _sessions_probe_body() -> Mapping[str, Any]:
    from source_posthog.streams import Sessions

    return probe_body(Sessions)


def _probe_body_of(stream: str) -> Mapping[str, Any]:
    from source_posthog.streams import STREAM_CLASSES

    (stream_class,) = [cls for cls in STREAM_CLASSES if stream_of(cls).name == stream]
    return probe_body(stream_class)
