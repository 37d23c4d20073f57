"""HTTP server: routing, auth, errors, rate limits, faults, request log and the control API.

Request pipeline for ``/api/...`` (the order DRF/PostHog apply, posthog-api.md § 1.2–1.4, § 5):

1. a seeded fault is decided first (never for ``/_emulator/``);
2. the URL is routed (unknown paths → 404 ``Not found.``; trailing slash optional);
3. authentication: ``Authorization: Bearer``, ``?personal_api_key=`` or a JSON body field (401);
4. the project: ``@current`` or an integer (404 ``Project not found.`` / ``Not found.``);
5. permissions: project-scoped keys only on project-based views, the key's projects, the scope (403);
6. throttles per key and endpoint class (429 + Retry-After);
7. the method (405), then the handler.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qsl, urlsplit

import orjson

from . import endpoints as ep
from . import exports
from .client import ControlClient
from .conditions import QueryGovernor
from .http_base import QuietHandler
from .config import EmulatorConfig
from .data import DataParams, Store
from .endpoints import ApiError, Ctx, Result
from .faults import BODY_429, BODY_500, BODY_502, FaultConfig, FaultInjector
from .keys import KEYS, KEYS_BY_VALUE, ORGANIZATION_ID, PROJECT_ID, RESOURCE_SCOPES, SUBRESOURCE_SCOPES, ApiKey
from .ratelimit import RateLimiter, Throttled

JSON = "application/json"


@dataclass(frozen=True)
class Resource:
    endpoint_class: str  # crud | analytics | query
    list_handler: Callable[[Ctx], Result] | None
    detail_handler: Callable[[Ctx, str], Result] | None
    environment_alias: bool  # also served under /api/environments/{id}/
    method: str = "GET"


RESOURCES: dict[str, Resource] = {
    "persons": Resource("analytics", ep.persons_list, ep.person_detail, True),
    "events": Resource("analytics", ep.events_list, ep.event_detail, True),
    "insights": Resource("analytics", ep.insights_list, ep.resource_detail("insights"), True),
    "session_recordings": Resource("analytics", ep.session_recordings_list, ep.resource_detail("session_recordings"), True),
    "query": Resource("query", ep.query, None, True, method="POST"),
    "cohorts": Resource("crud", ep.cohorts_list, ep.resource_detail("cohorts"), False),
    "feature_flags": Resource("crud", ep.feature_flags_list, ep.resource_detail("feature_flags"), False),
    "annotations": Resource("crud", ep.annotations_list, ep.resource_detail("annotations"), False),
    "actions": Resource("crud", ep.actions_list, ep.resource_detail("actions"), False),
    "event_definitions": Resource("crud", ep.event_definitions_list, ep.resource_detail("event_definitions"), False),
    "property_definitions": Resource("crud", ep.property_definitions_list, ep.resource_detail("property_definitions"), False),
    "groups_types": Resource("crud", ep.group_types_list, None, False),
    "groups": Resource("crud", ep.groups_list, None, False),
    "dashboards": Resource("crud", ep.dashboards_list, ep.resource_detail("dashboards"), True),
    "experiments": Resource("crud", ep.experiments_list, ep.resource_detail("experiments"), False),
    "surveys": Resource("crud", ep.surveys_list, ep.resource_detail("surveys"), False),
    "activity_log": Resource("crud", ep.activity_log_list, None, False),
}


@dataclass
class Route:
    view: str  # projects_list | org_projects | project_detail | list | detail
    endpoint_class: str
    scope: str
    project_ref: str | None = None
    resource: str | None = None
    item_id: str | None = None
    org_ref: str | None = None


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict[str, str]
    rows: int | None = None
    endpoint_class: str | None = None
    key_name: str | None = None
    extra: dict | None = None


def _json(obj: Any) -> bytes:
    return orjson.dumps(obj)


def route(path: str, method: str = "GET") -> Route:
    """Resolve a path to a view; raise 404 for anything PostHog does not serve."""
    segs = [s for s in path.split("/") if s]
    if len(segs) < 2 or segs[0] != "api":
        raise ep.not_found()
    if segs[1] == "personal_api_keys" and segs[2:] == ["@current"]:
        return Route("current_key", "crud", "")
    if segs[1] == "projects" and len(segs) == 2:
        return Route("projects_list", "crud", RESOURCE_SCOPES["projects"])
    if segs[1] == "organizations" and len(segs) == 4 and segs[3] == "projects":
        return Route("org_projects", "crud", RESOURCE_SCOPES["projects"], org_ref=segs[2])
    if segs[1] in ("projects", "environments") and len(segs) >= 3:
        ref = segs[2]
        if len(segs) == 3:
            return Route("project_detail", "crud", RESOURCE_SCOPES["projects"], project_ref=ref)
        name = segs[3]
        if name == exports.RESOURCE and segs[1] == "projects":  # file-download batch exports (exports.py)
            return Route("exports", "crud", exports.required_scope(segs[4:], method), ref, name, "/".join(segs[4:]))
        res = RESOURCES.get(name)
        if res is None or (segs[1] == "environments" and not res.environment_alias):
            raise ep.not_found()
        if len(segs) == 4:
            return Route("list", res.endpoint_class, RESOURCE_SCOPES[name], ref, name)
        if len(segs) == 5 and res.detail_handler is not None:
            return Route("detail", res.endpoint_class, RESOURCE_SCOPES[name], ref, name, segs[4])
        if len(segs) == 6 and (name, segs[5]) in SUBRESOURCE_SCOPES:  # e.g. cohorts/{id}/persons/
            return Route(f"{name}_{segs[5]}", res.endpoint_class, " ".join(SUBRESOURCE_SCOPES[(name, segs[5])]),
                         ref, name, segs[4])
    raise ep.not_found()


class Emulator:
    """The emulated PostHog application (independent of the HTTP transport)."""

    def __init__(self, config: EmulatorConfig):
        self.config = config
        params = DataParams(config.events, config.seed, config.resolved_base_time(), float(config.events_span_days),
                            config.persons, config.heavy_persons, config.heavy_distinct_ids)
        self.store = Store(params, config.data_dir)
        self.limiter = RateLimiter(config.rate_limits, config.rate_scale)
        self.governor = QueryGovernor(config.query_conditions(), lambda: self.limiter.enabled)
        self.store.visibility_delay = float(config.visibility_delay_seconds or 0)
        self.store.default_sessions_table_version = config.sessions_table_version
        self.store.project_sessions_table_versions = dict(config.project_sessions_table_versions)
        self.faults = FaultInjector(config.faults)
        self.exports = exports.ExportManager(self.store, config.exports)
        self._log: list[dict] = []
        self._log_lock = threading.Lock()

    def close(self) -> None:
        self.exports.close()
        self.store.close()

    # -- request log ----------------------------------------------------------------------

    def record(self, entry: dict) -> None:
        with self._log_lock:
            self._log.append(entry)

    def requests(self) -> list[dict]:
        with self._log_lock:
            return list(self._log)

    def clear_requests(self) -> None:
        with self._log_lock:
            self._log.clear()

    # -- auth -------------------------------------------------------------------------------

    @staticmethod
    def authenticate(headers, params: dict[str, str], body: Any) -> ApiKey:
        """PersonalAPIKeyAuthentication (posthog/auth.py): header, then query string, then body."""
        token, source = None, None
        auth = headers.get("Authorization")
        if auth:
            parts = auth.split(None, 1)
            if len(parts) == 2 and parts[0].lower() == "bearer" and parts[1].strip():
                token, source = parts[1].strip(), "Authorization header"
        if token is None and params.get("personal_api_key"):
            token, source = params["personal_api_key"], "query string"
        if token is None and isinstance(body, dict) and isinstance(body.get("personal_api_key"), str):
            token, source = body["personal_api_key"], "body"
        if token is None:
            raise ApiError(401, "authentication_error", "not_authenticated",
                           "Authentication credentials were not provided.",
                           headers={"WWW-Authenticate": 'Bearer realm="api"'})
        key = KEYS_BY_VALUE.get(token)
        if key is None:
            raise ApiError(401, "authentication_error", "authentication_failed",
                           f"Personal API key found in request {source} is invalid.",
                           headers={"WWW-Authenticate": 'Bearer realm="api"'})
        return key

    def resolve_project(self, ref: str) -> int:
        """``@current`` → the user's current project; integers must exist."""
        if ref == "@current":
            return PROJECT_ID
        try:
            pid = int(ref)
        except ValueError:
            raise ep.not_found("Project not found.") from None
        if pid not in self.store.resources.projects:
            raise ep.not_found()
        return pid

    # -- dispatch ---------------------------------------------------------------------------

    def handle(self, method: str, path: str, raw_query: str, headers, body_bytes: bytes, host: str) -> Response:
        extra: dict = {}
        key: ApiKey | None = None
        r: Route | None = None
        try:
            r = route(path, method)
            params = dict(parse_qsl(raw_query, keep_blank_values=True))
            body = None
            if body_bytes:
                try:
                    body = orjson.loads(body_bytes)
                except orjson.JSONDecodeError as e:
                    if method == "POST":
                        raise ep.validation_error(f"JSON parse error - {e}", None, code="parse_error") from None
            key = self.authenticate(headers, params, body)
            project_id = None
            if r.view == "current_key":
                if not self.config.key_introspection:  # older PostHog versions have no @current key view
                    raise ep.not_found()
            elif r.view in ("projects_list", "org_projects"):
                if r.org_ref is not None and r.org_ref not in ("@current", ORGANIZATION_ID):
                    raise ep.not_found()
                if key.scoped_teams is not None:
                    raise ApiError(403, "authentication_error", "permission_denied",
                                   "API keys with scoped projects are only supported on project-based views.")
            else:
                project_id = self.resolve_project(r.project_ref)
                if not key.can_access_project(project_id):
                    raise ApiError(403, "authentication_error", "permission_denied",
                                   f"API key does not have access to the requested project: ID {project_id}.")
            for scope in r.scope.split():  # every required scope, the first missing one named
                if not key.has_scope(scope):
                    raise ApiError(403, "authentication_error", "permission_denied",
                                   f"API key missing required scope '{scope}'")
            try:
                self.limiter.check(key.value, r.endpoint_class)
            except Throttled as t:
                raise ApiError(429, "throttled_error", "throttled", t.detail,
                               headers={"Retry-After": str(t.wait)}) from None
            allowed = RESOURCES[r.resource].method if r.view == "list" else "GET"
            if method != allowed and r.view != "exports":  # exports.py answers its own 405s
                raise ApiError(405, "invalid_request", "method_not_allowed", f'Method "{method}" not allowed.')
            ctx = Ctx(self.store, project_id or PROJECT_ID, key, f"http://{host}", path, raw_query, params, body,
                      self.limiter, self.config.legacy_events_page_cap, self.config.legacy_events_max_offset,
                      self.config.query_latency, extra, self.governor)
            if r.view in ("projects_list", "org_projects"):
                visible = [pid for pid in self.store.resources.projects if key.can_access_project(pid)]
                result = ep.projects_list(ctx, visible)
            elif r.view == "project_detail":
                result = ep.project_detail(ctx)
            elif r.view == "current_key":
                result = ep.current_key(ctx)
            elif r.view == "exports":
                result = self.exports.handle(ctx, method, r.item_id or "")
            elif r.view == "list":
                result = RESOURCES[r.resource].list_handler(ctx)
            elif r.view == "cohorts_persons":
                result = ep.cohort_persons(ctx, r.item_id)
            else:
                result = RESOURCES[r.resource].detail_handler(ctx, r.item_id)
            payload = result.raw if result.raw is not None else _json(result.body)
            return Response(result.status, payload, {"Content-Type": JSON, **(result.headers or {})}, result.rows,
                            r.endpoint_class, key.name, extra)
        except Throttled as t:  # the query concurrency limit: no Retry-After
            err = ApiError(429, "throttled_error", "throttled", t.detail)
            return Response(err.status, _json(err.body), {"Content-Type": JSON}, None,
                            r.endpoint_class if r else None, key.name if key else None, extra)
        except ApiError as err:
            return Response(err.status, _json(err.body), {"Content-Type": JSON, **err.headers}, None,
                            r.endpoint_class if r else None, key.name if key else None, extra)
        except Exception as exc:  # an emulator bug: answer like PostHog's 500, and say what broke in the log
            extra["error"] = f"{type(exc).__name__}: {exc}"
            return Response(500, BODY_500, {"Content-Type": JSON}, None, r.endpoint_class if r else None,
                            key.name if key else None, extra)

    # -- control API ------------------------------------------------------------------------

    def control(self, method: str, path: str, raw_query: str, body_bytes: bytes) -> tuple[int, Any]:
        """``/_emulator/...``: unauthenticated, never faulted, never rate limited, not logged."""
        name = path.rstrip("/").split("/", 2)[-1] if path.count("/") >= 2 else ""
        params = dict(parse_qsl(raw_query))
        body = orjson.loads(body_bytes) if body_bytes else {}
        if name == "exports" or name.startswith("exports/"):  # runs, outcomes, links, object store (exports.py)
            return self.exports.control(method, name[len("exports"):], body)
        if name == "health" and method == "GET":
            return 200, {"status": "ok", "events": self.store.event_count(), "generated": self.store.generated,
                         "load_seconds": round(self.store.load_seconds, 3),
                         "base_time": self.store.params.base_time.isoformat()}
        if name == "ground_truth" and method == "GET":
            stream = params.get("stream")
            if stream and stream not in Store.STREAMS:
                return 400, {"error": f"unknown stream {stream!r}; known: {', '.join(Store.STREAMS)}"}
            visible = params.get("visible", "all")
            if visible not in ("all", "now"):
                return 400, {"error": "visible must be 'all' (every row, the default) or 'now' (queryable now)"}
            project = int(params.get("project_id") or PROJECT_ID)
            return 200, self.store.ground_truth(stream, project_id=project, visible_only=visible == "now")
        if name == "mutate" and method == "POST":
            return 200, self.store.mutate(**body)
        if name == "move_events" and method == "POST":
            return 200, {"moved": self.store.move_events(int(body["to_project"]), int(body.get("every", 2)))}
        if name == "events" and method == "POST":
            rows = body.get("events") if isinstance(body, dict) else body
            delay = body.get("visibility_delay_seconds") if isinstance(body, dict) else None
            team = body.get("project_id") if isinstance(body, dict) and body.get("project_id") else PROJECT_ID
            return 200, {"uuids": self.store.add_events(rows, team_id=int(team), visibility_delay_seconds=delay)}
        if name == "visibility" and method == "GET":
            return 200, {"delay_seconds": self.store.visibility_delay}
        if name == "visibility" and method == "POST":
            delay = float(body.get("delay_seconds", 0))
            if delay < 0:
                return 400, {"error": "delay_seconds must be >= 0"}
            self.store.visibility_delay = delay
            return 200, {"delay_seconds": delay}
        if name == "conditions" and method == "GET":
            return 200, self.governor.conditions.to_dict()
        if name == "conditions" and method == "POST":
            if body.pop("reset_budget", False):
                self.governor.reset_budget()
            return 200, self.governor.configure(**body).to_dict()
        if name == "query_stats" and method == "GET":
            return 200, self.governor.stats()
        if name == "query_stats" and method == "DELETE":
            self.governor.reset_stats()
            return 200, {"reset": True}
        if name == "requests" and method == "GET":
            return 200, self.requests()
        if name == "requests" and method == "DELETE":
            self.clear_requests()
            return 200, {"cleared": True}
        if name == "faults" and method == "POST":
            self.faults.configure(FaultConfig(**body))
            return 200, self.faults.config.to_dict()
        if name == "rate_limits" and method == "POST":
            self.limiter.configure(body.get("enabled", True), body.get("scale"))
            return 200, {"enabled": self.limiter.enabled, "scale": self.limiter.scale}
        if name == "config" and method == "GET":
            c = self.config
            return 200, {"events": c.events, "seed": c.seed, "base_time": self.store.params.base_time.isoformat(),
                         "events_span_days": c.events_span_days, "legacy_events_page_cap": c.legacy_events_page_cap,
                         "legacy_events_max_offset": c.legacy_events_max_offset, "rate_limits": self.limiter.enabled,
                         "rate_scale": self.limiter.scale, "faults": self.faults.config.to_dict(),
                         "data_path": str(self.store.base_path), "realistic": c.realistic,
                         "visibility_delay_seconds": self.store.visibility_delay,
                         "sessions_table_version": self.store.default_sessions_table_version,
                         "project_sessions_table_versions": {str(p): v for p, v in self.store.project_sessions_table_versions.items()},
                         "query_conditions": self.governor.conditions.to_dict(),
                         "exports": self.exports.settings.to_dict()}
        return 404, {"error": f"unknown control endpoint {method} {path}"}


# ------------------------------------------------------------------------------------------------
# HTTP transport
# ------------------------------------------------------------------------------------------------


class _Handler(QuietHandler):
    server_version = "PostHogEmulator/1.0"
    server: "_HTTPServer"

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status: int, body: bytes, headers: dict[str, str], truncate: bool = False) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        if not truncate and len(body) <= 65536:  # one write for small responses
            self._headers_buffer.append(b"\r\n" + body)
            self.flush_headers()
            return
        self.end_headers()
        if truncate:  # full Content-Length announced, about half the body sent, then the socket closes
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self.wfile.write(body)

    def _reset(self) -> None:
        """Close the connection without any response (TCP RST)."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()
            self.connection.close()
        except OSError:
            pass

    def _serve(self, method: str) -> None:
        app = self.server.app
        t0 = time.time()
        split = urlsplit(self.path)
        path, raw_query = split.path, split.query
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return
        try:
            if path == "/_emulator" or path.startswith("/_emulator/"):
                try:
                    status, obj = app.control(method, path, raw_query, body)
                except (TypeError, ValueError, KeyError) as e:
                    status, obj = 400, {"error": f"{type(e).__name__}: {e}"}
                self._send(status, _json(obj), {"Content-Type": JSON})
                return
            fault = app.faults.decide()
            entry = {"t": t0, "method": method, "path": path, "query": dict(parse_qsl(raw_query, keep_blank_values=True)),
                     "status": None, "fault": fault, "endpoint_class": None, "rows": None}
            try:
                entry["endpoint_class"] = route(path).endpoint_class
            except ApiError:
                pass
            if fault == "reset":
                app.record(entry)
                self._reset()
                return
            if fault in ("500", "502", "429"):
                entry["status"] = int(fault)
                app.record(entry)
                if fault == "500":
                    self._send(500, BODY_500, {"Content-Type": JSON})
                elif fault == "502":
                    self._send(502, BODY_502, {"Content-Type": "text/html"})
                else:
                    self._send(429, BODY_429, {"Content-Type": JSON, "Retry-After": "1"})
                return
            if fault == "slow":
                time.sleep(app.faults.config.slow_seconds)
            host = self.headers.get("Host") or "%s:%d" % self.server.server_address[:2]
            resp = app.handle(method, path, raw_query, self.headers, body, host)
            entry.update(status=resp.status, endpoint_class=resp.endpoint_class or entry["endpoint_class"],
                         rows=resp.rows, key=resp.key_name, duration=round(time.time() - t0, 6))
            if resp.extra:
                entry.update(resp.extra)
            app.record(entry)
            self._send(resp.status, resp.body, resp.headers, truncate=fault == "truncate")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    app: Emulator

    def handle_error(self, request, client_address) -> None:  # quiet: clients may vanish mid-response
        pass


class EmulatorServer(ControlClient):
    """The emulator in-process: a background thread serving on 127.0.0.1 (free port by default)."""

    def __init__(self, config: EmulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0):
        super().__init__()
        self.config = config or EmulatorConfig()
        self.host = host
        self.port = port
        self.app: Emulator | None = None
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> "EmulatorServer":
        self.app = Emulator(self.config)
        self._httpd = _HTTPServer((self.host, self.port), _Handler)
        self._httpd.app = self.app
        self.port = self._httpd.server_address[1]
        self.url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="posthog-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self.app is not None:
            self.app.close()
            self.app = None

    def serve_forever(self) -> None:
        """Block until interrupted (used by the CLI)."""
        assert self._thread is not None
        while self._thread.is_alive():
            self._thread.join(0.5)

    def __enter__(self) -> "EmulatorServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


__all__ = ["Emulator", "EmulatorServer", "KEYS", "PROJECT_ID"]
