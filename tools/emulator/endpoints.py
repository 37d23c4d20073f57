"""Resource handlers: the JSON bodies, envelopes, filters, orders and page rules of each endpoint.

Every handler takes a :class:`Ctx` and returns a :class:`Result`; errors are raised as
:class:`ApiError` with PostHog's drf-exceptions-hog body (posthog-api.md § 1.4). The five
pagination conventions of posthog-api.md § 2 are implemented here:

1. DRF LimitOffsetPagination (count/next/previous/results; projects, cohorts, feature_flags,
   insights, event_definitions, property_definitions; annotations with default limit 1000);
2. the legacy events list ({next, results}, ``next`` rewrites before/after);
3. persons ({results, next, previous} + count with include_total; ``next`` on any full page);
4. session recordings ({results, has_next, version: 4});
5. actions ({results} only, unpaginated).
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
import uuid as uuid_mod
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import orjson

from . import conditions as cond
from . import hogql
from unit_tests.support import posthog_parser
from . import resources as resources_mod
from . import timeutil as tu
from .data import Store, uuid_order_sql
from .keys import ApiKey
from .ratelimit import RateLimiter

_MAX_INT = 2 ** 62  # larger page parameters are clamped (SQLite integers are 64-bit)
_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")


class ApiError(Exception):
    """An error response: ``{"type", "code", "detail", "attr"}`` (drf-exceptions-hog)."""

    def __init__(self, status: int, type_: str, code: str, detail: str, attr: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status = status
        self.body = {"type": type_, "code": code, "detail": detail, "attr": attr}
        self.headers = headers or {}


def not_found(detail: str = "Not found.") -> ApiError:
    return ApiError(404, "invalid_request", "not_found", detail)


def validation_error(detail: str, attr: str | None = None, code: str = "invalid_input") -> ApiError:
    return ApiError(400, "validation_error", code, detail, attr)


@dataclass
class Ctx:
    store: Store
    project_id: int
    key: ApiKey
    base_url: str  # "http://host:port" from the request's Host header
    path: str  # the request path as received
    raw_query: str  # the request query string as received
    params: dict[str, str]  # last value of each query parameter
    body: Any = None
    limiter: RateLimiter | None = None
    legacy_page_cap: int | None = 1000
    legacy_max_offset: int | None = 50_000
    query_latency: float = 0.0
    log: dict = field(default_factory=dict)  # extra request-log fields (e.g. the HogQL text)
    governor: Any = None  # conditions.QueryGovernor: cost model, concurrency queue, read budget

    def url(self) -> str:
        """``request.build_absolute_uri()``."""
        return self.base_url + self.path + (("?" + self.raw_query) if self.raw_query else "")


@dataclass
class Result:
    body: Any
    rows: int | None = None
    status: int = 200
    raw: bytes | None = None  # pre-serialized body (big HogQL pages)
    headers: dict | None = None  # extra response headers


# --------------------------------------------------------------------------------------------
# DRF helpers
# --------------------------------------------------------------------------------------------


def replace_query_param(url: str, key: str, val: Any) -> str:
    """rest_framework.utils.urls.replace_query_param: parameters re-encoded in sorted order."""
    scheme, netloc, path, query, fragment = urlsplit(url)
    qd = parse_qs(query, keep_blank_values=True)
    qd[str(key)] = [str(val)]
    return urlunsplit((scheme, netloc, path, urlencode(sorted(qd.items()), doseq=True), fragment))


def remove_query_param(url: str, key: str) -> str:
    scheme, netloc, path, query, fragment = urlsplit(url)
    qd = parse_qs(query, keep_blank_values=True)
    qd.pop(key, None)
    return urlunsplit((scheme, netloc, path, urlencode(sorted(qd.items()), doseq=True), fragment))


def _positive_int(value: str | None, strict: bool) -> int:
    ret = int(value)  # raises TypeError/ValueError
    if ret < 0 or (ret == 0 and strict):
        raise ValueError(value)
    return ret


def drf_limit_offset(ctx: Ctx, default_limit: int) -> tuple[int, int]:
    """LimitOffsetPagination.get_limit/get_offset: invalid values fall back to the defaults."""
    try:
        limit = _positive_int(ctx.params.get("limit"), strict=True)
    except (TypeError, ValueError):
        limit = default_limit
    try:
        offset = _positive_int(ctx.params.get("offset"), strict=False)
    except (TypeError, ValueError):
        offset = 0
    return min(limit, _MAX_INT), min(offset, _MAX_INT)


def drf_page(ctx: Ctx, items: list, default_limit: int = 100) -> Result:
    """DRF LimitOffsetPagination envelope (no max_limit: any limit is honoured)."""
    limit, offset = drf_limit_offset(ctx, default_limit)
    count = len(items)
    page = items[offset:offset + limit]
    url = ctx.url()
    nxt = None
    if offset + limit < count:
        nxt = replace_query_param(replace_query_param(url, "limit", limit), "offset", offset + limit)
    prev = None
    if offset > 0:
        u = replace_query_param(url, "limit", limit)
        prev = remove_query_param(u, "offset") if offset - limit <= 0 else replace_query_param(u, "offset", offset - limit)
    return Result({"count": count, "next": nxt, "previous": prev, "results": page}, len(page))


def _bool_param(value: str | None) -> bool | None:
    if value is None:
        return None
    return value.lower() in ("1", "true", "yes", "on")


def _date_param(ctx: Ctx, name: str) -> datetime | None:
    raw = ctx.params.get(name)
    if raw in (None, "", "all"):
        return None
    try:
        return tu.parse_relative_or_absolute(raw, tu.utcnow())
    except ValueError:
        raise validation_error(f"Invalid date: '{raw}'. Use an ISO date-time or a relative date like -7d.", name) from None


# --------------------------------------------------------------------------------------------
# Projects (§ 3.1)
# --------------------------------------------------------------------------------------------


def projects_list(ctx: Ctx, visible: list[int]) -> Result:
    res = ctx.store.resources
    return drf_page(ctx, [res.project_list_item(pid) for pid in sorted(visible)])


def project_detail(ctx: Ctx) -> Result:
    return Result(ctx.store.resources.project_detail(ctx.project_id), 1)


def current_key(ctx: Ctx) -> Result:
    """``GET /api/personal_api_keys/@current/``: the calling key itself, no scope needed
    (docs/posthog-api.md § 12; posthog/api/personal_api_key.py). ``value`` is never returned."""
    key = ctx.key
    return Result({
        "id": f"0190aa00-0000-7000-8000-{abs(hash(key.name)) % 10**12:012d}", "label": key.name, "value": None,
        "mask_value": f"phx_...{key.value[-4:]}", "created_at": "2024-01-01T00:00:00Z", "last_used_at": None,
        "user_id": 1, "scopes": list(key.scopes), "scoped_teams": list(key.scoped_teams or []),
        "scoped_organizations": [], "last_rolled_at": None,
    }, 1)


# --------------------------------------------------------------------------------------------
# Simple DRF resources (§ 3.4–3.8, 3.10, 3.11)
# --------------------------------------------------------------------------------------------


def _search(entries, ctx: Ctx, *fields_: str):
    term = ctx.params.get("search")
    if not term:
        return entries
    t = term.lower()
    return [e for e in entries if any(t in str(e.item.get(f) or "").lower() for f in fields_)]


def cohorts_list(ctx: Ctx) -> Result:
    """Ordered -created_at; deleted cohorts excluded; ``search``, ``type`` filters."""
    entries = _search(ctx.store.resources.ordered("cohorts", ctx.project_id), ctx, "name")
    kind = ctx.params.get("type")
    if kind in ("static", "dynamic"):
        entries = [e for e in entries if e.item["is_static"] == (kind == "static")]
    return drf_page(ctx, [e.item for e in entries])


#: Every field each list serializer sends (tools/emulator/serializer_fields.json, read from PostHog's source).
SERIALIZER_FIELDS: dict[str, dict] = orjson.loads((Path(__file__).with_name("serializer_fields.json")).read_bytes())["streams"]
_INSIGHT_BASIC_FIELDS = tuple(SERIALIZER_FIELDS["insights"]["fields"])  # InsightBasicSerializer (basic=true)
_INSIGHT_FIELDS = tuple(SERIALIZER_FIELDS["insights_full"]["fields"])  # InsightSerializer


def field_error() -> ApiError:
    """``queryset.order_by(<unknown field>)`` raises Django's FieldError, which no handler turns into a
    4xx: PostHog answers its plain 500 (drf-exceptions-hog ``server_error``)."""
    return ApiError(500, "server_error", "error", "A server error occurred.")


def _tie_key(ctx: Ctx, entry) -> bytes:
    """The order of rows that tie on a client-chosen ``order``: Postgres gives them none (no ``id``
    tiebreak in PostHog's ORDER BY), and a top-N sort can return them differently for another
    LIMIT/OFFSET. Here: an order that depends on the page asked for, so offset paging across a tie
    group can skip or repeat rows, as it can against PostHog."""
    limit, offset = drf_limit_offset(ctx, 100)
    return hashlib.blake2b(f"{limit}/{offset}/{entry.item['id']}".encode(), digest_size=8).digest()


def django_order(ctx: Ctx, entries: list, order: str, value_of: Callable[[Any], Any],
                 nulls_first: bool | None = None) -> list:
    """``queryset.order_by(order)`` on Postgres: ascending puts NULLs last, descending first (unless
    ``nulls_first`` says otherwise, as ``F(...).desc(nulls_last=True)`` does); ties as :func:`_tie_key`."""
    desc = order.startswith("-")
    nulls = sorted((e for e in entries if value_of(e) is None), key=lambda e: _tie_key(ctx, e))
    rest = sorted((e for e in entries if value_of(e) is not None), key=lambda e: _tie_key(ctx, e))
    rest.sort(key=value_of, reverse=desc)  # stable: rows that tie keep the page's own order
    first = desc if nulls_first is None else nulls_first
    return nulls + rest if first else rest + nulls


def _user_id(user: dict | None) -> int | None:
    return user["id"] if user else None


def _ts(item: dict, name: str) -> datetime | None:
    value = item.get(name)
    return tu.parse_datetime(value) if value else None


#: FeatureFlag model fields a client may pass as ``order`` (the value each sorts on).
_FLAG_ORDER_FIELDS: dict[str, Callable[[Any], Any]] = {
    "id": lambda e: e.item["id"], "key": lambda e: e.item["key"], "name": lambda e: e.item["name"],
    "created_at": lambda e: e.extra["created_at"], "updated_at": lambda e: e.extra["updated_at"],
    "active": lambda e: e.item["active"], "deleted": lambda e: e.item["deleted"],
    "archived": lambda e: e.item["archived"], "version": lambda e: e.item["version"],
    "last_called_at": lambda e: _ts(e.item, "last_called_at"), "evaluation_runtime": lambda e: e.item["evaluation_runtime"],
    "created_by": lambda e: _user_id(e.item["created_by"]), "last_modified_by": lambda e: _user_id(e.item["last_modified_by"]),
}


def feature_flags_list(ctx: Ctx) -> Result:
    """FeatureFlagViewSet (products/feature_flags/backend/api/feature_flag.py): deleted flags never
    listed; archived ones only when ``archived`` is passed (``exclude_archived_unless_requested``),
    ``archived=true|false`` then filters on it; ``active``, ``search`` filters; ``order`` goes straight
    into ``order_by`` (any model field, ``-`` for descending; an unknown one is Django's FieldError,
    a 500), default ``-created_at``. ``-updated_at`` puts never-edited flags (``updated_at`` null) first."""
    entries = _search(ctx.store.resources.ordered("feature_flags", ctx.project_id), ctx, "key", "name")
    if "archived" not in ctx.params:
        entries = [e for e in entries if not e.extra["archived"]]
    elif ctx.params["archived"].lower() in ("true", "false"):
        entries = [e for e in entries if e.extra["archived"] == (ctx.params["archived"].lower() == "true")]
    active = ctx.params.get("active")
    if active in ("true", "false"):
        entries = [e for e in entries if e.item["active"] == (active == "true")]
    order = ctx.params.get("order")
    if order:
        value_of = _FLAG_ORDER_FIELDS.get(order.removeprefix("-"))
        if value_of is None:
            raise field_error()
        entries = django_order(ctx, entries, order, value_of)
    return drf_page(ctx, [e.item for e in entries])


#: Insight model fields a client may pass as ``order`` (InsightViewSet.order_queryset).
_INSIGHT_ORDER_FIELDS: dict[str, Callable[[Any], Any]] = {
    "id": lambda e: e.item["id"], "short_id": lambda e: e.item["short_id"], "name": lambda e: e.item["name"],
    "derived_name": lambda e: e.item["derived_name"], "description": lambda e: e.item["description"],
    "order": lambda e: e.item["order"], "favorited": lambda e: e.item["favorited"], "saved": lambda e: e.item["saved"],
    "created_at": lambda e: e.extra["created_at"], "updated_at": lambda e: e.extra["updated_at"],
    "last_modified_at": lambda e: e.extra["last_modified_at"], "last_refresh": lambda e: _ts(e.item, "last_refresh"),
    "last_viewed_at": lambda e: _ts(e.item, "last_viewed_at"),
    "created_by": lambda e: _user_id(e.item["created_by"]), "last_modified_by": lambda e: _user_id(e.item["last_modified_by"]),
}


def insight_item(item: dict, basic: bool) -> dict:
    """InsightBasicSerializer (``basic=true``) or InsightSerializer: exactly their fields."""
    return {k: item[k] for k in (_INSIGHT_BASIC_FIELDS if basic else _INSIGHT_FIELDS)}


def insights_list(ctx: Ctx) -> Result:
    """InsightViewSet (posthog/api/insight.py): ``date_from``/``date_to`` strict on ``last_modified_at``
    (``relative_date_parse``: ISO or relative such as ``-7d``); ``order`` goes straight into
    ``order_by`` (any model field; an unknown one is a 500), ``last_viewed_at`` NULLS FIRST and
    ``-last_viewed_at`` NULLS LAST; without ``order`` the model field ``order``; ``basic`` payload."""
    entries = _search(ctx.store.resources.ordered("insights", ctx.project_id), ctx, "name", "derived_name")
    date_from, date_to = _date_param(ctx, "date_from"), _date_param(ctx, "date_to")
    if date_from:
        entries = [e for e in entries if e.extra["last_modified_at"] > date_from]
    if date_to:
        entries = [e for e in entries if e.extra["last_modified_at"] < date_to]
    if ctx.params.get("short_id"):
        entries = [e for e in entries if e.item["short_id"] == ctx.params["short_id"]]
    order = ctx.params.get("order")
    if order:
        value_of = _INSIGHT_ORDER_FIELDS.get(order.removeprefix("-"))
        if value_of is None:
            raise field_error()
        nulls_first = (not order.startswith("-")) if order.removeprefix("-") == "last_viewed_at" else None
        entries = django_order(ctx, entries, order, value_of, nulls_first)
    basic = bool(_bool_param(ctx.params.get("basic")))
    return drf_page(ctx, [insight_item(e.item, basic) for e in entries])


def annotations_list(ctx: Ctx) -> Result:
    """Default limit 1000, ordered -date_marker; ``date_from``/``date_to`` inclusive on date_marker."""
    entries = _search(ctx.store.resources.ordered("annotations", ctx.project_id), ctx, "content")
    date_from, date_to = _date_param(ctx, "date_from"), _date_param(ctx, "date_to")
    if date_from:
        entries = [e for e in entries if e.extra["date_marker"] >= date_from]
    if date_to:
        entries = [e for e in entries if e.extra["date_marker"] <= date_to]
    if ctx.params.get("scope"):
        entries = [e for e in entries if e.item["scope"] == ctx.params["scope"]]
    return drf_page(ctx, [e.item for e in entries], default_limit=1000)


def actions_list(ctx: Ctx) -> Result:
    """Unpaginated: every non-deleted action, ``{"results": [...]}``, -last_calculated_at, name."""
    items = [e.item for e in ctx.store.resources.ordered("actions", ctx.project_id)]
    return Result({"results": items}, len(items))


def event_definitions_list(ctx: Ctx) -> Result:
    """Ordered last_seen_at::date DESC, name; ``ordering``, ``search``, ``event_type`` filters."""
    entries = _search(ctx.store.resources.ordered("event_definitions", ctx.project_id), ctx, "name")
    event_type = ctx.params.get("event_type")
    if event_type == "event_custom":
        entries = [e for e in entries if not e.item["name"].startswith("$")]
    elif event_type == "event_posthog":
        entries = [e for e in entries if e.item["name"].startswith("$")]
    ordering = ctx.params.get("ordering")
    if ordering:
        field_ = ordering.lstrip("-")
        if field_ not in ("name", "last_seen_at"):
            raise validation_error(f"Invalid ordering '{ordering}'", "ordering")
        key = (lambda e: e.item["name"]) if field_ == "name" else (lambda e: e.item["last_seen_at"] or "")
        entries = sorted(entries, key=key, reverse=ordering.startswith("-"))
    return drf_page(ctx, [e.item for e in entries])


PROPERTY_TYPES = ("event", "person", "group", "session")


def property_definitions_list(ctx: Ctx) -> Result:
    """Filtered by ``type`` (default event; group needs ``group_type_index``), ordered by name."""
    ptype = ctx.params.get("type") or "event"
    if ptype not in PROPERTY_TYPES:
        raise validation_error(f'"{ptype}" is not a valid choice.', "type", code="invalid_choice")
    gti = None
    if ptype == "group":
        raw = ctx.params.get("group_type_index")
        try:
            gti = int(raw)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise validation_error("group_type_index must be provided for group properties (0-4)",
                                   "group_type_index") from None
    entries = ctx.store.resources.ordered("property_definitions", ctx.project_id)
    entries = [e for e in entries if e.extra["type"] == ptype and (ptype != "group" or e.extra["group_type_index"] == gti)]
    entries = _search(entries, ctx, "name")
    return drf_page(ctx, [e.item for e in entries])


# --------------------------------------------------------------------------------------------
# Groups, dashboards, experiments, surveys (§ 14)
# --------------------------------------------------------------------------------------------


def group_types_list(ctx: Ctx) -> Result:
    """Not paginated: a bare JSON array of the project's group types, by group_type_index (§ 14.1)."""
    items = [e.item for e in ctx.store.resources.ordered("group_types", ctx.project_id)]
    return Result(items, len(items))


def _groups_cursor(created_us: int, key: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"c": created_us, "k": key})).decode()


def _groups_cursor_position(raw: str | None) -> tuple[int, str] | None:
    """``_decode_groups_cursor``: an invalid or pre-``k`` cursor restarts from the first page."""
    if not raw:
        return None
    try:
        data = orjson.loads(base64.urlsafe_b64decode(raw))
        if "k" not in data:
            return None
        created_us = int(data.get("c", 0))
        if 0 < created_us < 1e15:  # milliseconds in older cursors
            created_us *= 1000
        return created_us, str(data.get("k", ""))
    except Exception:
        return None


def groups_list(ctx: Ctx) -> Result:
    """``group_type_index`` required (400 otherwise); ordered created_at DESC, key DESC; a fixed
    page of 100 (no ``limit``); forward-only keyset ``cursor`` in an absolute ``next``;
    ``previous`` always null; ``search`` and ``group_key`` filters (§ 14.2)."""
    raw = ctx.params.get("group_type_index")
    if not raw:
        raise validation_error("You must pass ?group_type_index= in this URL. To get a list of valid group types, "
                               "call /api/:project_id/groups_types/.", "group_type_index")
    try:
        index = int(raw)
    except ValueError:
        raise validation_error("A valid integer is required.", "group_type_index") from None
    entries = [e for e in ctx.store.resources.ordered("groups", ctx.project_id) if e.extra["group_type_index"] == index]
    if ctx.params.get("group_key"):
        term = ctx.params["group_key"].lower()
        entries = [e for e in entries if term in e.item["group_key"].lower()]
    search = ctx.params.get("search")
    if search:
        term = search.lower()
        entries = [e for e in entries if e.item["group_key"].lower() == term
                   or term in orjson.dumps(e.item["group_properties"]).decode().lower()]
    position = _groups_cursor_position(ctx.params.get("cursor"))
    if position is not None:
        c, k = position
        entries = [e for e in entries if e.extra["created_us"] < c or (e.extra["created_us"] == c and e.item["group_key"] < k)]
    page = entries[:resources_mod.GROUPS_PAGE_SIZE]
    nxt = None
    if len(entries) > len(page):
        last = page[-1]
        params: dict[str, Any] = {"group_type_index": index, "cursor": _groups_cursor(last.extra["created_us"], last.item["group_key"])}
        if search:
            params["search"] = search
        if ctx.params.get("group_key"):
            params["group_key"] = ctx.params["group_key"]
        nxt = f"{ctx.base_url}{ctx.path}?{urlencode(params)}"
    return Result({"next": nxt, "previous": None, "results": [e.item for e in page]}, len(page))


def dashboards_list(ctx: Ctx) -> Result:
    """Ordered -pinned, name; deleted and unlisted dashboards excluded; ``tags`` (repeatable) and
    ``exclude_generated`` filters (§ 14.3)."""
    entries = ctx.store.resources.ordered("dashboards", ctx.project_id)
    tags = [value for key, value in parse_qsl(ctx.raw_query) if key == "tags"]
    if tags:
        entries = [e for e in entries if set(tags) & set(e.item["tags"])]
    if ctx.params.get("exclude_generated") == "true":
        entries = [e for e in entries if not e.item["name"].startswith("Generated Dashboard: ")]
    return drf_page(ctx, [e.item for e in entries])


def experiments_list(ctx: Ctx) -> Result:
    """Ordered -created_at; deleted always excluded; archived excluded unless ``archived`` is
    given, and ``archived=true`` returns only the archived ones; ``search`` on name (§ 14.4).
    ``order`` from ExperimentService.EXPERIMENT_ORDER_ALLOWLIST
    (products/experiments/backend/experiment_service.py): created_at, created_by, updated_at, name,
    start_date, end_date, duration (end − start, or now − start while running; NULL for drafts) and
    status (draft < running < stopped), each also with ``-``; anything else is a 400
    ``Invalid order field: '…'``."""
    entries = ctx.store.resources.ordered("experiments", ctx.project_id)
    archived = ctx.params.get("archived")
    wanted = archived is not None and archived.lower() == "true"
    entries = [e for e in entries if e.extra["archived"] == wanted]
    entries = _search(entries, ctx, "name")
    order = ctx.params.get("order")
    if order:
        if order not in _EXPERIMENT_ORDERS:
            raise validation_error(f"Invalid order field: '{order}'", code="invalid")
        entries = django_order(ctx, entries, order, _EXPERIMENT_ORDER_VALUES[order.removeprefix("-")])
    return drf_page(ctx, [e.item for e in entries])


def _experiment_duration(e) -> timedelta | None:
    start, end = _ts(e.item, "start_date"), _ts(e.item, "end_date")
    if start is None:
        return None
    return (end or tu.utcnow()) - start


_EXPERIMENT_ORDER_VALUES: dict[str, Callable[[Any], Any]] = {
    "created_at": lambda e: e.extra["created_at"], "updated_at": lambda e: e.extra["updated_at"],
    "created_by": lambda e: _user_id(e.item["created_by"]), "name": lambda e: e.item["name"],
    "start_date": lambda e: _ts(e.item, "start_date"), "end_date": lambda e: _ts(e.item, "end_date"),
    "duration": _experiment_duration,
    "status": lambda e: 0 if e.item["start_date"] is None else (1 if e.item["end_date"] is None else 2),
}
_EXPERIMENT_ORDERS = {f"{sign}{name}" for sign in ("", "-") for name in _EXPERIMENT_ORDER_VALUES}


def surveys_list(ctx: Ctx) -> Result:
    """Archived surveys stay in the list, product-tour surveys are left out; ``search`` on
    name/description; ordered -created_at (PostHog's order is not in the source read, § 14.5)."""
    entries = _search(ctx.store.resources.ordered("surveys", ctx.project_id), ctx, "name", "description")
    return drf_page(ctx, [e.item for e in entries])


# --------------------------------------------------------------------------------------------
# Activity log (posthog/api/advanced_activity_logs/viewset.py, ActivityLogViewSet)
# --------------------------------------------------------------------------------------------

_CURSOR_OFFSET_CUTOFF = 1000  # rest_framework.pagination.CursorPagination.offset_cutoff


def _page_size(ctx: Ctx, default: int, maximum: int) -> int:
    """``get_page_size`` with ``page_size_query_param="page_size"``: capped at ``maximum``; a missing,
    zero or invalid value falls back to ``default``."""
    try:
        return min(_positive_int(ctx.params["page_size"], strict=True), maximum)
    except (KeyError, TypeError, ValueError):
        return default


def _position(when: datetime) -> str:
    """``CursorPagination._get_position_from_instance``: ``str()`` of the row's ``created_at``."""
    return str(when.astimezone(tu.UTC))


def _encode_cursor(ctx: Ctx, offset: int, reverse: bool, position: str | None) -> str:
    """``CursorPagination.encode_cursor``: base64 of ``o=&r=&p=``, put into the request URL."""
    tokens: dict[str, str] = {}
    if offset:
        tokens["o"] = str(offset)
    if reverse:
        tokens["r"] = "1"
    if position is not None:
        tokens["p"] = position
    encoded = base64.b64encode(urlencode(tokens, doseq=True).encode("ascii")).decode("ascii")
    return replace_query_param(ctx.url(), "cursor", encoded)


def _decode_cursor(ctx: Ctx) -> tuple[int, bool, str | None] | None:
    raw = ctx.params.get("cursor")
    if raw is None:
        return None
    try:
        tokens = parse_qs(base64.b64decode(raw.encode("ascii")).decode("ascii"), keep_blank_values=True)
        offset = min(_positive_int(tokens.get("o", ["0"])[0], strict=False), _CURSOR_OFFSET_CUTOFF)
        reverse = bool(int(tokens.get("r", ["0"])[0]))
        position = tokens.get("p", [None])[0]
        if position is not None:
            tu.parse_datetime(position)  # Django would fail on a position it cannot compare
    except (TypeError, ValueError, UnicodeError):
        raise not_found("Invalid cursor") from None
    return offset, reverse, position


def drf_cursor_page(ctx: Ctx, entries: list, ordering: tuple[str, str], page_size: int,
                    created: Callable[[Any], datetime], follow: bool = False) -> Result:
    """DRF ``CursorPagination.paginate_queryset``/``get_next_link``/``get_previous_link`` over
    ``entries`` (already filtered), ordered by ``ordering`` (``("-created_at", "-id")`` or
    ``("created_at", "id")``). The cursor holds the first ordering field only (``created_at``) plus an
    offset into the rows that share it; the filter on the position is strict. ``follow``
    (TailFollowingCursorPagination): an ascending last page still gets a ``next``."""
    desc = ordering[0].startswith("-")
    forward = sorted(entries, key=lambda e: (created(e), e.item["id"]), reverse=desc)
    cursor = _decode_cursor(ctx)
    offset, reverse, current = cursor if cursor else (0, False, None)
    rows = list(reversed(forward)) if reverse else forward
    if current is not None:
        pos = tu.parse_datetime(current)
        if reverse != desc:  # (cursor reversed) XOR (queryset reversed): created_at < position
            rows = [e for e in rows if created(e) < pos]
        else:
            rows = [e for e in rows if created(e) > pos]
    results = rows[offset:offset + page_size + 1]
    page = results[:page_size]
    following = _position(created(results[-1])) if len(results) > len(page) else None
    if reverse:
        page = list(reversed(page))
        has_next, has_previous = current is not None or offset > 0, following is not None
        next_position, previous_position = current, following
    else:
        has_next, has_previous = following is not None, current is not None or offset > 0
        next_position, previous_position = following, current
    positions = [_position(created(e)) for e in page]

    def next_link() -> str | None:
        if not has_next:
            if follow and not desc:  # TailFollowingCursorPagination.get_next_link
                if not page:
                    return _encode_cursor(ctx, offset, reverse, current) if cursor else None
                return _encode_cursor(ctx, 0, False, positions[-1])
            return None
        compare = positions[-1] if (page and cursor and reverse and offset) else next_position
        off, unique = 0, False
        position = None
        for position in reversed(positions):  # the last row whose position differs from the one after it
            if position != compare:
                unique = True
                break
            compare = position
            off += 1
        if page and not unique:
            if not has_previous:
                off, position = page_size, None
            elif reverse:
                off, position = 0, previous_position
            else:
                off, position = offset + page_size, previous_position
        if not page:
            position = next_position
        return _encode_cursor(ctx, off, False, position)

    def previous_link() -> str | None:
        if not has_previous:
            return None
        compare = positions[0] if (page and cursor and not reverse and offset) else previous_position
        off, unique = 0, False
        position = None
        for position in positions:
            if position != compare:
                unique = True
                break
            compare = position
            off += 1
        if page and not unique:
            if not has_next:
                off, position = page_size, None
            elif reverse:
                off, position = offset + page_size, next_position
            else:
                off, position = 0, next_position
        if not page:
            position = previous_position
        return _encode_cursor(ctx, off, True, position)

    return Result({"next": next_link(), "previous": previous_link(), "results": [e.item for e in page]}, len(page))


def _page_number_page(ctx: Ctx, entries: list, page_size: int) -> Result:
    """DRF ``PageNumberPagination`` (ActivityLogPagination with ``page``): ``{count, next, previous,
    results}``; a page past the end or not a number is 404 ``Invalid page.``"""
    count = len(entries)
    pages = max(1, -(-count // page_size))
    raw = ctx.params.get("page") or "1"
    try:
        number = pages if raw == "last" else int(raw)
    except ValueError:
        raise not_found("Invalid page.") from None
    if number < 1 or number > pages:
        raise not_found("Invalid page.")
    page = entries[(number - 1) * page_size:number * page_size]
    url = ctx.url()
    nxt = replace_query_param(url, "page", number + 1) if number < pages else None
    prev = None
    if number > 1:
        prev = remove_query_param(url, "page") if number - 1 == 1 else replace_query_param(url, "page", number - 1)
    return Result({"count": count, "next": nxt, "previous": prev, "results": [e.item for e in page]}, len(page))


def activity_log_list(ctx: Ctx) -> Result:
    """``GET /api/projects/{id}/activity_log/`` (ActivityLogViewSet, scope ``activity_log:read``):
    the project's entries; filters ``scope``, ``scopes`` (comma-separated), ``item_id`` (exact);
    ``ordering=created_at`` for oldest first (default ``-created_at``, ``id`` breaking ties);
    DRF cursor paging of 100 (``page_size`` up to 1000) with the cursor in ``next``/``previous``, or
    with ``page`` DRF page-number paging. ``follow=true`` keeps an ascending ``next`` alive."""
    entries = ctx.store.resources.entries("activity_log", ctx.project_id)
    if ctx.params.get("scope"):
        entries = [e for e in entries if e.item["scope"] == ctx.params["scope"]]
    if ctx.params.get("scopes"):
        wanted = set(ctx.params["scopes"].split(","))
        entries = [e for e in entries if e.item["scope"] in wanted]
    if ctx.params.get("item_id"):
        entries = [e for e in entries if e.item["item_id"] == ctx.params["item_id"]]
    ascending = ctx.params.get("ordering") == "created_at"
    ordering = ("created_at", "id") if ascending else ("-created_at", "-id")
    created = (lambda e: e.extra["created"])  # noqa: E731
    if ctx.params.get("page"):
        ordered = sorted(entries, key=lambda e: (created(e), e.item["id"]), reverse=not ascending)
        return _page_number_page(ctx, ordered, _page_size(ctx, 100, 1000))
    return drf_cursor_page(ctx, entries, ordering, _page_size(ctx, 100, 1000), created,
                           follow=ctx.params.get("follow") == "true")


def resource_detail(kind: str) -> Callable[[Ctx, str], Result]:
    def handler(ctx: Ctx, item_id: str) -> Result:
        item = ctx.store.resources.find(kind, ctx.project_id, item_id)
        if item is None:
            raise not_found()
        if kind == "insights":
            item = insight_item(item, bool(_bool_param(ctx.params.get("basic"))))
        return Result(item, 1)

    return handler


# --------------------------------------------------------------------------------------------
# Session recordings (§ 3.9)
# --------------------------------------------------------------------------------------------

_RECORDING_ORDERS = {"start_time": None, "duration": "recording_duration", "recording_duration": "recording_duration",
                     "active_seconds": "active_seconds", "inactive_seconds": "inactive_seconds",
                     "console_error_count": "console_error_count", "click_count": "click_count",
                     "keypress_count": "keypress_count", "mouse_activity_count": "mouse_activity_count",
                     "activity_score": "activity_score"}


def _int_param(ctx: Ctx, name: str, default: int, minimum: int = 0) -> int:
    raw = ctx.params.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise validation_error("A valid integer is required.", name, code="invalid") from None
    if value < minimum:
        raise validation_error(f"Ensure this value is greater than or equal to {minimum}.", name, code="min_value")
    if value > _MAX_INT:
        raise validation_error(f"Ensure this value is less than or equal to {_MAX_INT}.", name, code="max_value")
    return value


def session_recordings_list(ctx: Ctx) -> Result:
    """``date_from`` default ``-3d`` (relative to now), ``date_to``, ``limit`` 50, ``offset``,
    ``order`` (default start_time) and ``order_direction`` (default DESC); ``{results, has_next, version: 4}``."""
    if ctx.params.get("after"):
        raise validation_error("Cursor paging ('after') is not emulated; page with offset += limit while has_next.",
                               "after")
    now = tu.utcnow()
    raw_from = ctx.params.get("date_from") or "-3d"
    try:
        date_from = tu.parse_relative_or_absolute(raw_from, now)
    except ValueError:
        raise validation_error(f"Invalid date_from: '{raw_from}'", "date_from") from None
    date_to = _date_param(ctx, "date_to")
    limit = _int_param(ctx, "limit", 50, minimum=1)
    offset = _int_param(ctx, "offset", 0)
    order = ctx.params.get("order") or "start_time"
    if order not in _RECORDING_ORDERS:
        raise validation_error(f'"{order}" is not a valid choice.', "order", code="invalid_choice")
    direction = (ctx.params.get("order_direction") or "DESC").upper()
    if direction not in ("ASC", "DESC"):
        raise validation_error(f'"{direction}" is not a valid choice.', "order_direction", code="invalid_choice")
    entries = ctx.store.resources.entries("session_recordings", ctx.project_id)
    entries = [e for e in entries if e.extra["start"] >= date_from and (date_to is None or e.extra["start"] <= date_to)]
    person_uuid = ctx.params.get("person_uuid")
    if person_uuid:
        entries = [e for e in entries if e.item["person"]["uuid"] == person_uuid]
    if ctx.params.get("session_ids"):
        try:
            wanted = orjson.loads(ctx.params["session_ids"])
            if not isinstance(wanted, list):
                raise TypeError
            wanted = {str(w) for w in wanted}
        except (orjson.JSONDecodeError, TypeError):
            raise validation_error("session_ids must be a JSON list of session ids", "session_ids") from None
        entries = [e for e in entries if e.item["id"] in wanted]
    field_ = _RECORDING_ORDERS[order]
    key = (lambda e: (e.extra["start"], e.item["id"])) if field_ is None else (lambda e: (e.item[field_], e.item["id"]))
    entries.sort(key=key, reverse=direction == "DESC")
    page = entries[offset:offset + limit + 1]
    has_next = len(page) > limit
    items = [e.item for e in page[:limit]]
    return Result({"results": items, "has_next": has_next, "version": 4}, len(items))


# --------------------------------------------------------------------------------------------
# Persons (§ 3.2)
# --------------------------------------------------------------------------------------------

_PERSON_SQL = ("SELECT id, created_at, properties, is_identified, distinct_ids, last_seen_at FROM persons "
               "WHERE team_id = ?")


def _person_item(row) -> dict:
    pid, created, props, identified, dids, last_seen = row
    props_obj = orjson.loads(props)
    dids_obj = orjson.loads(dids)
    return {"type": "person", "id": pid, "uuid": pid, "name": props_obj.get("email") or dids_obj[0],
            "distinct_ids": dids_obj, "properties": props_obj, "is_identified": bool(identified),
            "created_at": tu.db_to_iso_z(created), "last_seen_at": tu.db_to_iso_z(last_seen) if last_seen else None,
            "matched_recordings": [], "value_at_data_point": None}


def persons_list(ctx: Ctx) -> Result:
    """Ordered created_at DESC, id DESC; ``next`` whenever a full page came back; ``count`` only
    with ``include_total=true``; filters ``distinct_id``, ``email``, ``search``."""
    limit, offset = drf_limit_offset(ctx, 100)
    where, args = "", [ctx.project_id]
    if ctx.params.get("distinct_id"):
        where += " AND EXISTS (SELECT 1 FROM json_each(persons.distinct_ids) WHERE value = ?)"
        args.append(ctx.params["distinct_id"])
    if ctx.params.get("email"):
        where += " AND json_extract(properties, '$.email') = ?"
        args.append(ctx.params["email"])
    if ctx.params.get("search"):
        where += " AND (instr(lower(properties), lower(?)) > 0 OR instr(lower(distinct_ids), lower(?)) > 0 OR id = ?)"
        args += [ctx.params["search"]] * 3
    with ctx.store.read() as conn:
        rows = conn.execute(f"{_PERSON_SQL}{where} ORDER BY created_at DESC, {uuid_order_sql('id')} DESC LIMIT ? OFFSET ?",
                            args + [limit, offset]).fetchall()
        total = conn.execute(f"SELECT count(*) FROM persons WHERE team_id = ?{where}", args).fetchone()[0] \
            if _bool_param(ctx.params.get("include_total")) else None
    url = ctx.url()
    nxt = replace_query_param(replace_query_param(url, "limit", limit), "offset", offset + limit) \
        if len(rows) == limit else None
    prev = None
    if offset > 0:
        prev = replace_query_param(replace_query_param(url, "limit", limit), "offset", max(0, offset - limit))
    body: dict[str, Any] = {"results": [_person_item(r) for r in rows], "next": nxt, "previous": prev}
    if total is not None:
        body["count"] = total
    return Result(body, len(rows))


def format_query_params_absolute_url(ctx: Ctx, offset: int | None) -> str:
    """``posthog.utils.format_query_params_absolute_url(request, offset)``: ``offset=N`` replaced in
    (or appended to) the absolute request URL, the rest untouched; an offset of 0 is falsy there, so
    the URL comes back unchanged (the ``previous`` of the second page is the second page again)."""
    url = ctx.url()
    if offset:
        if re.search(r"([&?]offset=)(\d+)", url):
            url = re.sub(r"([&?]offset=)(\d+)", lambda m: f"{m.group(1)}{offset}", url)
        else:
            url += ("&" if "?" in url else "?") + f"offset={offset}"
    return url


def cohort_persons(ctx: Ctx, cohort_id: str) -> Result:
    """``GET /api/projects/{id}/cohorts/{cohort_id}/persons/`` (CohortViewSet.persons,
    posthog/api/cohort.py; scopes ``cohort:read`` and ``person:read``): the cohort's persons
    (``Store.cohort_members``), ``limit`` (default 100) and ``offset`` from PostHog's Filter; a page
    is chosen ``created_at DESC, id DESC`` (PersonQuery) and served ``created_at DESC, uuid``
    (get_serialized_people, at most 10 distinct ids each). ``{"results", "next", "previous"}``:
    ``next`` whenever the page came back full, ``previous`` when ``offset - limit >= 0``, both from
    ``format_query_params_absolute_url``. A deleted cohort's persons are still served (only the
    list hides deleted cohorts); another project's cohort is a 404."""
    cohort = None
    if cohort_id.isdigit():
        cohort = next((e for e in ctx.store.resources.rows["cohorts"]
                       if e.team_id == ctx.project_id and e.item["id"] == int(cohort_id)), None)
    if cohort is None:
        raise not_found()
    limit = _int_param(ctx, "limit", 0) or 100  # `if not filter.limit: LIMIT 100`
    offset = _int_param(ctx, "offset", 0)
    clause, args = ctx.store.cohort_member_clause(ctx.project_id, cohort.item["id"])
    with ctx.store.read() as conn:
        rows = conn.execute(f"{_PERSON_SQL}{clause} ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
                            [ctx.project_id, *args, limit, offset]).fetchall()
    items = [_person_item(r) for r in sorted(rows, key=lambda r: r[0])]
    items.sort(key=lambda p: p["created_at"], reverse=True)  # created_at DESC, uuid (ascending) within
    for item in items:
        item["distinct_ids"] = item["distinct_ids"][:10]
    nxt = format_query_params_absolute_url(ctx, offset + limit) if len(rows) >= limit else None
    prev = format_query_params_absolute_url(ctx, offset - limit) if offset - limit >= 0 else None
    return Result({"results": items, "next": nxt, "previous": prev}, len(items))


def person_detail(ctx: Ctx, item_id: str) -> Result:
    with ctx.store.read() as conn:
        row = conn.execute(f"{_PERSON_SQL} AND id = ?", (ctx.project_id, item_id.lower())).fetchone()
    if row is None:
        raise not_found()
    return Result(_person_item(row), 1)


# --------------------------------------------------------------------------------------------
# Legacy events list (§ 3.3)
# --------------------------------------------------------------------------------------------

_ATTR_RE = re.compile(r'([A-Za-z_][\w\-]*)="((?:[^"\\]|\\.)*)"')
_ELEMENTS_CACHE: dict[str, list] = {}


def elements_from_chain(chain: str) -> list[dict]:
    """Parse an ``elements_chain`` into ElementSerializer dicts (text, tag_name, attr_class, ...)."""
    if not chain:
        return []
    cached = _ELEMENTS_CACHE.get(chain)
    if cached is not None:
        return cached
    out = []
    for order, part in enumerate(chain.split(";")):
        head, _, attrs_text = part.partition(":")
        tag, *classes = head.split(".")
        attrs = dict(_ATTR_RE.findall(attrs_text))
        out.append({
            "event": None, "text": attrs.get("text"), "tag_name": tag or None,
            "attr_class": classes or None, "href": attrs.get("href"), "attr_id": attrs.get("attr_id"),
            "nth_child": int(attrs["nth-child"]) if "nth-child" in attrs else None,
            "nth_of_type": int(attrs["nth-of-type"]) if "nth-of-type" in attrs else None,
            "attributes": {k: v for k, v in attrs.items() if k.startswith("attr__")}, "order": order,
        })
    if len(_ELEMENTS_CACHE) < 10_000:
        _ELEMENTS_CACHE[chain] = out
    return out


def _event_param_dt(ctx: Ctx, name: str) -> str | None:
    raw = ctx.params.get(name)
    if raw in (None, ""):
        return None
    try:
        return tu.to_db(tu.parse_datetime(raw))
    except ValueError:
        raise validation_error(f"Invalid {name}: '{raw}' is not an ISO-8601 timestamp", name) from None


def events_list(ctx: Ctx) -> Result:
    """``after``/``before`` strict (before defaults to now + 5 s), ``orderBy`` (default ["-timestamp"]),
    ``limit`` (default 100, capped at 1000), ``offset`` (refused above 50,000), no count; ``next`` only
    when more rows exist, with ``before`` (DESC) or ``after`` (ASC) set to the last row's timestamp
    (rows that share that timestamp are lost, as in PostHog)."""
    raw_order = ctx.params.get("orderBy")
    try:
        order_by = ["-timestamp"] if not raw_order else list(orderloads(raw_order))
    except (orjson.JSONDecodeError, TypeError):
        raise validation_error("orderBy must be a JSON list such as [\"-timestamp\"]", "orderBy") from None
    if not order_by or order_by[0] not in ("timestamp", "-timestamp"):
        raise validation_error(f"Unsupported orderBy {raw_order!r}: use [\"timestamp\"] or [\"-timestamp\"]", "orderBy")
    desc = order_by[0] == "-timestamp"
    limit = _int_param(ctx, "limit", 100, minimum=1)
    if ctx.legacy_page_cap is not None:
        limit = min(limit, ctx.legacy_page_cap)
    offset = _int_param(ctx, "offset", 0)
    if ctx.legacy_max_offset is not None and offset > ctx.legacy_max_offset:
        raise validation_error(f"offset must be less than or equal to {ctx.legacy_max_offset}. "
                               "Use the after/before parameters to page through events instead.", "offset")
    before = _event_param_dt(ctx, "before") or tu.to_db(tu.utcnow() + timedelta(seconds=5))
    after = _event_param_dt(ctx, "after")
    where, args = " AND timestamp < ?", [ctx.project_id, before]
    if after:
        where += " AND timestamp > ?"
        args.append(after)
    for name in ("event", "distinct_id", "person_id"):
        if ctx.params.get(name):
            where += f" AND {name} = ?"
            args.append(ctx.params[name])
    vis, vis_args = ctx.store.visibility_clause()
    where += vis
    args += vis_args
    direction = "DESC" if desc else "ASC"
    sql = (f"SELECT uuid, distinct_id, properties, event, timestamp, elements_chain, person_id FROM events "
           f"WHERE team_id = ?{where} ORDER BY timestamp {direction}, uuid {direction} LIMIT ? OFFSET ?")
    with ctx.store.read() as conn:
        rows = conn.execute(sql, args + [limit + 1, offset]).fetchall()
        persons = _persons_for_events(conn, ctx, rows) if _bool_param(ctx.params.get("include_person")) else {}
    page = rows[:limit]
    results = [{"id": r[0], "distinct_id": r[1], "properties": orjson.Fragment(r[2]), "event": r[3],
                "timestamp": tu.db_to_iso_offset(r[4]), "person": persons.get(r[6]),
                "elements": elements_from_chain(r[5]), "elements_chain": r[5]} for r in page]
    nxt = None
    if len(rows) > limit:
        params = dict(ctx.params)  # request.GET.dict(): other parameters (offset too) are kept
        params["before" if desc else "after"] = tu.db_to_iso_offset(page[-1][4])
        nxt = f"{ctx.base_url}{ctx.path}?{urlencode(params)}"
    return Result({"next": nxt, "results": results}, len(results))


def orderloads(raw: str):
    value = orjson.loads(raw)
    if not isinstance(value, list):
        raise TypeError("orderBy must be a list")
    return value


def _persons_for_events(conn, ctx: Ctx, rows) -> dict:
    ids = sorted({r[6] for r in rows if r[6]})
    out = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        q = f"SELECT id, is_identified, distinct_ids, properties FROM persons WHERE team_id = ? AND id IN ({','.join('?' * len(chunk))})"
        for pid, identified, dids, props in conn.execute(q, [ctx.project_id] + chunk):
            p = orjson.loads(props)
            out[pid] = {"is_identified": bool(identified), "distinct_ids": orjson.loads(dids)[:1],
                        "properties": {k: p[k] for k in ("email", "name", "username") if k in p}}
    return out


def event_detail(ctx: Ctx, item_id: str) -> Result:
    if not _UUID_RE.match(item_id):
        raise ApiError(400, "validation_error", "invalid", "Invalid UUID")
    vis, vis_args = ctx.store.visibility_clause()
    with ctx.store.read() as conn:
        r = conn.execute("SELECT uuid, distinct_id, properties, event, timestamp, elements_chain, person_id FROM events "
                         f"WHERE team_id = ? AND uuid = ?{vis}",
                         [ctx.project_id, str(uuid_mod.UUID(item_id)), *vis_args]).fetchone()
    if r is None:
        raise not_found(f"No events exist for event UUID {item_id}")
    return Result({"id": r[0], "distinct_id": r[1], "properties": orjson.Fragment(r[2]), "event": r[3],
                   "timestamp": tu.db_to_iso_offset(r[4]), "person": None, "elements": elements_from_chain(r[5]),
                   "elements_chain": r[5]}, 1)


# --------------------------------------------------------------------------------------------
# HogQL query (§ 4)
# --------------------------------------------------------------------------------------------

_REFRESH_OK = {None, True, False, "blocking", "force_blocking", "force_cache", "lazy_async"}
_MODIFIERS = {"personsOnEventsMode": "person_id_override_properties_on_events", "personsArgMaxVersion": "auto",
              "inCohortVia": "auto", "materializationMode": "legacy_null_as_null", "useMaterializedViews": True,
              "bounceRatePageViewMode": "count_pageviews", "sessionTableVersion": "auto"}


def _sessions_table_version(ctx: Ctx, modifiers: dict) -> tuple[str, str]:
    """(the ``sessionTableVersion`` modifier in effect, the sessions table served): the query's
    modifier, else the project's (team.modifiers), else ``auto``; ``auto`` serves v2
    (create_default_modifiers_for_team in posthog/hogql/modifiers.py; posthog/hogql/database/database.py)."""
    value = modifiers.get("sessionTableVersion")
    if value is None:
        value = ctx.store.sessions_table_version(ctx.project_id)
    if value not in ("auto", "v1", "v2", "v3"):
        raise validation_error(f"Input should be 'auto', 'v1', 'v2' or 'v3' (got {value!r})", "sessionTableVersion")
    if value == "v1":
        raise ApiError(400, "validation_error", hogql.NOT_SUPPORTED, "sessionTableVersion v1 is not supported by this emulator")
    return value, "v3" if value == "v3" else "v2"


def _project_zone(ctx: Ctx, q: dict) -> ZoneInfo | None:
    """The zone HogQL shows DateTimes in (posthog-api.md § 15): the project's, unless the query's
    ``modifiers.convertToProjectTimezone`` is false; None for UTC."""
    modifiers = q.get("modifiers") if isinstance(q.get("modifiers"), dict) else {}
    if modifiers.get("convertToProjectTimezone", True) is False:
        return None
    project = ctx.store.resources.projects.get(ctx.project_id) or {}
    name = project.get("timezone") or "UTC"
    return None if name == "UTC" else ZoneInfo(name)


def _offset_seconds(zone: ZoneInfo) -> int:
    """The emulator's zones have a fixed offset (no daylight saving): one offset for every instant."""
    return int(datetime.now(zone).utcoffset().total_seconds())


def _in_zone(rows: list, types: list, zone: ZoneInfo) -> tuple[list, list]:
    """DateTime cells rendered in ``zone`` with their offset (``2024-06-01T05:30:01.123000+05:30``:
    the less convenient of the wire formats § 15 leaves open), and ``types`` naming the zone."""
    columns = [i for i, (_, kind) in enumerate(types) if "DateTime" in kind]
    if not columns:
        return rows, types

    def shown(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        instant = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(zone)
        return instant.isoformat(timespec="microseconds" if "." in value else "seconds")

    rows = [tuple(shown(v) if i in columns else v for i, v in enumerate(r)) for r in rows]
    types = [[name, kind.replace("'UTC'", f"'{zone.key}'")] for name, kind in types]
    return rows, types


def query(ctx: Ctx) -> Result:
    """``POST /query/`` with a HogQLQuery: HogQLQueryResponse (§ 4.2), concurrency-limited per team."""
    body = ctx.body
    if not isinstance(body, dict):
        raise validation_error("The request body must be a JSON object with a 'query' key.", None, code="parse_error")
    q = body.get("query")
    if not isinstance(q, dict):
        raise validation_error("This field is required: 'query' must be an object such as "
                               "{\"kind\": \"HogQLQuery\", \"query\": \"SELECT ...\"}", "query", code="required")
    kind = q.get("kind")
    if kind != "HogQLQuery":
        raise validation_error(f"Query kind {kind!r} is not supported by this emulator: only HogQLQuery is.", "query")
    refresh = body.get("refresh")
    if refresh not in _REFRESH_OK:
        if refresh in ("async", "force_async", "async_except_on_cache_miss"):
            raise validation_error(f"refresh={refresh!r} (asynchronous queries) is not emulated: use 'blocking'.",
                                   "refresh")
        raise validation_error(f'"{refresh}" is not a valid choice.', "refresh", code="invalid_choice")
    text = q.get("query")
    ctx.log["hogql"] = text
    ctx.log["query_name"] = body.get("name")  # PostHog keeps it in its query log (log_comment)
    ctx.log["parser"] = posthog_parser.PARSER
    values = q.get("values")
    if values is not None and not isinstance(values, dict):
        raise validation_error("query.values must be an object", "values")
    if q.get("offset"):
        raise validation_error(hogql.OFFSET_REFUSED, "offset")
    modifiers = q.get("modifiers") if isinstance(q.get("modifiers"), dict) else {}
    session_modifier, sessions_version = _sessions_table_version(ctx, modifiers)
    try:
        zone = _project_zone(ctx, q)
        compiled = hogql.compile_query(text, ctx.project_id, values, ctx.store.visibility_clause(),
                                       tz_offset_seconds=_offset_seconds(zone) if zone else 0,
                                       sessions_version=sessions_version,
                                       ingestion_sql=ctx.store.ingestion_time_sql())
    except hogql.HogQLError as e:
        raise ApiError(e.status, "validation_error" if e.status == 400 else "server_error", e.code, e.detail) from None
    gov: cond.QueryGovernor | None = ctx.governor
    if gov is None:  # a bare Ctx (no server): the legacy behaviour
        gov = cond.QueryGovernor(cond.QueryConditions(), lambda: bool(ctx.limiter and ctx.limiter.enabled))
    try:  # the runner reads the balance before admitting the query (posthog/api_queries_budget.py)
        gov.check_budget(ctx.project_id)
    except cond.BudgetExceeded as b:
        raise ApiError(429, "throttled_error", cond.BUDGET_CODE, str(b),
                       headers={"Retry-After": str(b.wait),
                                "X-PostHog-Query-Budget-Remaining-Bytes": str(max(0, int(b.remaining)))}) from None
    headers: dict[str, str] = {}
    with gov.slot(ctx.project_id, ctx.log):
        t0 = time.monotonic()
        if ctx.query_latency:
            time.sleep(ctx.query_latency)
        with ctx.store.read() as conn:
            rows = conn.execute(compiled.sql, compiled.params).fetchall()
        has_more = False
        if not compiled.explicit_limit:
            has_more = len(rows) > compiled.limit
            rows = rows[:compiled.limit]
        if compiled.bool_columns:
            rows = [tuple(bool(v) if i in compiled.bool_columns and v is not None else v for i, v in enumerate(r))
                    for r in rows]
        types = compiled.types
        if zone:
            rows, types = _in_zone(rows, types, zone)
        cost = None
        if gov.needs_scan_count():
            if compiled.table in ("events", "sessions"):  # sessions: the events they are computed from
                scanned = ctx.store.count_events_in_range(ctx.project_id, *compiled.ts_bounds)
            elif compiled.table == "persons":  # the id range a WHERE on id prunes ClickHouse's person table to
                scanned = ctx.store.count_persons(ctx.project_id, *compiled.id_bounds)
            elif compiled.table == "person_distinct_ids":  # ORDER BY (team_id, distinct_id): no pruning on person_id
                scanned = ctx.store.count_person_distinct_ids(ctx.project_id)
            else:  # cohort_people (every version's rows) and static_cohort_people
                scanned = ctx.store.count_cohort_rows(ctx.project_id, static=compiled.table == "static_cohort_people")
            cost = gov.cost(compiled.table, compiled.read_columns, scanned, len(orjson.dumps(rows)))
            ctx.log.update(rows_scanned=cost.rows_scanned, bytes_read=cost.bytes_read,
                           bytes_returned=cost.bytes_returned, modeled_seconds=round(cost.modeled_seconds, 6))
            try:
                gov.spend(cost, t0)
            except cond.QueryTimeout as e:  # ClickHouse 159 TIMEOUT_EXCEEDED → ClickHouseQueryTimeOut (504)
                ctx.log["timed_out"] = True
                raise ApiError(504, "server_error", "error", str(e)) from None
            gov.record(rows_scanned=cost.rows_scanned, bytes_read=cost.bytes_read, bytes_returned=cost.bytes_returned)
        elapsed = time.monotonic() - t0
    gov.record(succeeded=1)
    if cost is not None and gov.budget_enabled():
        remaining = gov.debit(ctx.project_id, cost.bytes_read)
        headers["X-PostHog-Query-Bytes-Read"] = str(cost.bytes_read)
        if remaining is not None:
            headers["X-PostHog-Query-Budget-Remaining-Bytes"] = str(max(0, int(remaining)))
    now = tu.utcnow()
    cache_key = "cache_" + hashlib.sha256(f"{ctx.project_id}|{text}|{values}".encode()).hexdigest()[:32]
    response = {
        "cache_key": cache_key, "cache_target_age": None, "clickhouse": compiled.sql,
        "columns": compiled.columns, "error": None, "explain": None, "hasMore": has_more,
        "hogql": compiled.hogql, "is_cached": False, "last_refresh": tu.iso_z_seconds(now),
        "limit": compiled.limit, "metadata": None, "modifiers": {**_MODIFIERS, "sessionTableVersion": session_modifier},
        "next_allowed_client_refresh": tu.iso_z_seconds(now + timedelta(minutes=1)), "offset": 0,
        "query": text, "query_status": None, "results": rows, "timezone": zone.key if zone else "UTC",
        "timings": [{"k": "./parse_select", "t": 0.0002}, {"k": "./hogql_to_sqlite", "t": 0.0005},
                    {"k": "./execute", "t": round(elapsed, 6)},
                    {"k": ".", "t": round(elapsed + 0.001, 6)}],
        "types": types,
    }
    return Result(None, len(rows), raw=orjson.dumps(response), headers=headers or None)


class _null_context:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
