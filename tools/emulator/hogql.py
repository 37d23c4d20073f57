"""HogQL: PostHog's own parser, then a translator of its AST to parameterized SQLite SQL.

Every query is parsed by ``hogql-parser`` (``posthog_parser``), the parser PostHog runs. What it
refuses is refused with PostHog's answer; what it accepts is converted from PostHog's JSON AST into
the small AST below, which the translator turns into SQLite. Whatever PostHog's parser accepts but
this emulator cannot evaluate (joins, subqueries, most functions...) is a 400 that says
"... is not supported by this emulator" (code ``emulator_not_supported``), never a silent answer.

Supported: ``SELECT item [AS alias], ... FROM <table> [WHERE ...] [GROUP BY bucket, ...]
[ORDER BY key [ASC|DESC], ...] [LIMIT n]`` over ``events``, ``persons``, ``person_distinct_ids``,
``sessions`` (v2 or v3), ``cohort_people`` and ``static_cohort_people``; items are columns,
``table.column``, ``*``, ``count()``, ``now()`` and the time buckets ``toStartOfMinute/Hour/Day(col)``
and ``toStartOfInterval(col, INTERVAL n SECOND|MINUTE|HOUR|DAY)``; WHERE takes AND, OR, NOT,
comparisons (also of tuples, row-wise), ``IN (...)``, ``IS [NOT] NULL`` and the constant functions
``toDateTime``, ``toDateTime64``, ``toUUID``, ``now()``; ``{name}`` placeholders come from the
query's ``values``. User text never reaches SQL text: every literal is a ``?`` parameter.

PostHog facts emulated, with their source in PostHog's repository:
- a parse error is ``ValidationError(str(e), "hogql_syntax_error")`` (``posthog/api/query.py``,
  ``SyntaxError.code_name`` in ``posthog/hogql/errors.py``); a ``QueryError`` (unresolvable field,
  unknown table, placeholder, OFFSET) has code ``hogql_query_error``; ClickHouse type errors keep
  the code names of ``wrap_clickhouse_query_error`` (``posthog/errors.py``); an internal parser
  error (``NotImplementedError``, e.g. ``SETTINGS``) is not caught there: a 500;
- placeholders: ``Unresolved placeholder: {x}`` without values, ``Placeholder {x} is not available
  in this context. You can use the following: ...`` (``posthog/hogql/placeholders.py``);
- OFFSET anywhere is refused for personal-API-key queries (``posthog/hogql/user_query_validator.py``);
- no LIMIT → 100 rows, fetched as 101 to compute ``hasMore``; an explicit LIMIT is capped at 50,000
  (``posthog/hogql/constants.py``, ``hogql_query_runner.py``);
- ``Unable to resolve field: <name>`` and ``Unknown table `<name>`.`` (``posthog/hogql/resolver.py``,
  ``posthog/hogql/database/database.py``);
- ClickHouse compares UUIDs by their second half first (``data.uuid_order_sql``);
- the ``sessions`` table is v2 unless the project (team modifiers) or the query's
  ``modifiers.sessionTableVersion`` chooses v3; ``auto`` is v2 (``posthog/hogql/modifiers.py``,
  ``posthog/hogql/database/database.py``); each version serves its own fields
  (``sessions_v2.py``, ``sessions_v3.py``); only ``$start_timestamp`` / ``$end_timestamp`` bounds
  are pushed into the scan, widened by 3 days (``schema/util/where_clause_extractor.py``);
- ``cohort_people``: the distinct (person_id, cohort_id) of each non-static, non-deleted cohort's
  current version (``schema/cohort_people.py``); ``static_cohort_people``: the rows of
  ``person_static_cohort`` (``schema/static_cohort_people.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from unit_tests.support import posthog_parser
from . import timeutil as tu
from .data import COHORT_PEOPLE_SQL, uuid_order_key, uuid_order_sql

DEFAULT_LIMIT = 100  # DEFAULT_RETURNED_ROWS
MAX_LIMIT = 50_000  # MAX_SELECT_RETURNED_ROWS
OFFSET_REFUSED = (  # OFFSET_NOT_ALLOWED_MESSAGE, posthog/hogql/user_query_validator.py
    "OFFSET is not supported on queries made with a personal API key. "
    "For pagination, use keyset pagination on the `timestamp` column, e.g. "
    "`WHERE timestamp > :last_seen_timestamp ORDER BY timestamp LIMIT N`. "
    "For bulk data extraction, use batch exports: https://posthog.com/docs/cdp/batch-exports"
)
SYNTAX_ERROR = "hogql_syntax_error"  # SyntaxError.code_name
QUERY_ERROR = "hogql_query_error"  # QueryError.code_name
NOT_SUPPORTED = "emulator_not_supported"  # the emulator's own: PostHog would have answered

DT64 = "DateTime64(6, 'UTC')"


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableSpec:
    """One HogQL table: the fields served (name → ClickHouse type), the names PostHog has but this
    emulator does not serve, and what ``*`` expands to."""

    name: str
    fields: dict[str, str]
    unserved: frozenset[str] = frozenset()
    asterisk: tuple[str, ...] | None = None  # None: `*` is not supported (too many PostHog fields)


EVENTS = TableSpec("events", {
    "uuid": "UUID", "event": "String", "properties": "String", "timestamp": DT64, "distinct_id": "String",
    "elements_chain": "String", "created_at": DT64, "person_id": "UUID", "team_id": "Int64"},
    # posthog/hogql/database/schema/events.py: joins and virtual fields the emulator does not compute
    frozenset({"$session_id", "$window_id", "person", "pdi", "poe", "goe_0", "goe_1", "goe_2", "goe_3", "goe_4",
               "$group_0", "$group_1", "$group_2", "$group_3", "$group_4", "session", "elements_chain_href",
               "elements_chain_texts", "elements_chain_ids", "elements_chain_elements", "event_person_id",
               "override", "override_person_id", "$ai_trace_id", "$ai_session_id", "$ai_is_error"}),
    ("uuid", "event", "properties", "timestamp", "distinct_id", "elements_chain", "created_at", "person_id"))
# persons.py (id, created_at, team_id, properties, is_identified, pdi; last_seen_at in newer versions);
# ClickHouse's person.created_at is `DateTime64` (= DateTime64(3): milliseconds, posthog/models/person/sql.py)
PERSONS = TableSpec("persons", {
    "id": "UUID", "created_at": "DateTime64(3, 'UTC')", "properties": "String", "is_identified": "Bool", "last_seen_at": DT64,
    "team_id": "Int64"}, frozenset({"pdi", "$virt_revenue", "$virt_revenue_last_30_days", "revenue_analytics"}),
    ("id", "created_at", "properties", "is_identified", "last_seen_at"))
# person_distinct_ids.py (distinct_id, person_id, team_id, person)
PERSON_DISTINCT_IDS = TableSpec("person_distinct_ids", {
    "distinct_id": "String", "person_id": "UUID", "team_id": "Int64"}, frozenset({"person"}),
    ("distinct_id", "person_id"))
# cohort_people.py / static_cohort_people.py: person_id, cohort_id, team_id and the `person` join; the
# ClickHouse column person_id is a UUID (cohortpeople, person_static_cohort), so it sorts as one.
COHORT_PEOPLE = TableSpec("cohort_people", {"person_id": "UUID", "cohort_id": "Int64", "team_id": "Int64"},
                          frozenset({"person"}), ("person_id", "cohort_id"))
STATIC_COHORT_PEOPLE = TableSpec("static_cohort_people", {"person_id": "UUID", "cohort_id": "Int64", "team_id": "Int64"},
                                 frozenset({"person"}), ("person_id", "cohort_id"))

# Sessions: the fields of PostHog's LAZY_SESSIONS_FIELDS in sessions_v2.py and sessions_v3.py.
_SESSION_COMMON = {
    "id": "String", "session_id": "String", "team_id": "Int64", "distinct_id": "String",
    "$start_timestamp": DT64, "$end_timestamp": DT64, "max_inserted_at": DT64, "$num_uniq_urls": "UInt64",
    "$entry_current_url": "String", "$entry_pathname": "String", "$entry_hostname": "String",
    "$end_current_url": "String", "$end_pathname": "String", "$end_hostname": "String",
    "$exit_current_url": "String", "$exit_pathname": "String", "$entry_referring_domain": "String",
    "$last_external_click_url": "String", "$entry_utm_source": "String", "$entry_utm_campaign": "String",
    "$entry_utm_medium": "String", "$entry_utm_term": "String", "$entry_utm_content": "String",
    "$entry_gclid": "String", "$entry_gad_source": "String", "$entry_fbclid": "String",
    "$pageview_count": "UInt64", "$autocapture_count": "UInt64", "$screen_count": "UInt64",
    "$channel_type": "String", "$session_duration": "Int64", "duration": "Int64", "$is_bounce": "Bool",
}
# sessions_v2.py: the other ad ids come from the first event's properties (initial_<id>)
SESSION_V2_AD_IDS = ("gclsrc", "dclid", "gbraid", "wbraid", "msclkid", "twclid", "li_fat_id", "mc_cid", "igshid",
                     "ttclid", "_kx", "irclid")
# sessions_v3.py: SESSION_V3_LOWER_TIER_AD_IDS (posthog/models/raw_sessions/sessions_v3.py)
SESSION_V3_AD_IDS = ("gclsrc", "dclid", "gbraid", "wbraid", "msclkid", "twclid", "li_fat_id", "mc_cid", "igshid",
                     "ttclid", "epik", "qclid", "sccid", "_kx", "irclid")
SESSIONS_V2 = TableSpec("sessions", {
    **_SESSION_COMMON, "$entry_referrer": "String", **{f"$entry_{ad}": "String" for ad in SESSION_V2_AD_IDS}},
    frozenset({"session_id_v7", "$urls", "$page_screen_autocapture_count_up_to", "$vitals_lcp"}))
SESSIONS_V3 = TableSpec("sessions", {
    **_SESSION_COMMON, "session_timestamp": DT64, "$entry_has_gclid": "Bool", "$entry_has_fbclid": "Bool",
    "$has_autocapture": "Bool", "$has_replay_events": "Bool",
    **{f"$entry_{ad}": "String" for ad in SESSION_V3_AD_IDS}, **{f"$entry_has_{ad}": "Bool" for ad in SESSION_V3_AD_IDS}},
    frozenset({"session_id_v7", "$urls", "$page_screen_count_up_to", "$entry_channel_type_properties"}))

TABLES = {spec.name: spec for spec in (EVENTS, PERSONS, PERSON_DISTINCT_IDS, COHORT_PEOPLE, STATIC_COHORT_PEOPLE)}
# Tables PostHog's database has (posthog/hogql/database/database.py) that this emulator does not serve.
UNSERVED_TABLES = frozenset({
    "groups", "raw_groups", "raw_persons", "raw_person_distinct_ids", "person_distinct_id_overrides",
    "raw_person_distinct_id_overrides", "person_overrides", "raw_sessions", "raw_sessions_v3", "raw_cohort_people",
    "session_replay_events", "raw_session_replay_events", "log_entries", "app_metrics", "numbers", "query_log",
    "heatmaps", "exchange_rate", "error_tracking_issue_fingerprint_overrides", "logs", "document_embeddings",
    "cohort_membership", "events_json", "system",
})

# PostHog widens a `$start_timestamp` / `$end_timestamp` bound by SESSION_BUFFER_DAYS when it pushes it
# into the raw sessions scan (where_clause_extractor.py); a filter on any other field is not pushed.
SESSION_BUFFER_DAYS = 3
BOUNCE_RATE_DURATION_SECONDS = 10  # DEFAULT_BOUNCE_RATE_DURATION_SECONDS (sessions_v1.py)

_BUCKETS = {"tostartofminute": ("toStartOfMinute", 60), "tostartofhour": ("toStartOfHour", 3600),
            "tostartofday": ("toStartOfDay", 86_400), "tostartofinterval": ("toStartOfInterval", 0)}
_INTERVAL_UNITS = {"second": (1, 60), "minute": (60, 60), "hour": (3600, 24), "day": (86_400, 1)}
_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class HogQLError(Exception):
    """A query PostHog would refuse (or the emulator cannot answer): ``status`` with a
    drf-exceptions-hog body of type ``validation_error`` (400) or ``server_error`` (500)."""

    def __init__(self, detail: str, code: str = QUERY_ERROR, status: int = 400):
        super().__init__(detail)
        self.detail = detail
        self.code = code
        self.status = status


def not_supported(what: str) -> HogQLError:
    return HogQLError(f"{what} is not supported by this emulator", NOT_SUPPORTED)


# --------------------------------------------------------------------------------------------
# The translator's AST
# --------------------------------------------------------------------------------------------


@dataclass
class Column:
    name: str
    qualifier: str | None = None  # "events" in events.timestamp


@dataclass
class Literal:
    value: Any
    type: str  # string | int | float | bool | null | datetime | uuid


@dataclass
class Call:
    name: str  # count | now  (select list and ORDER BY)


@dataclass
class Bucket:
    """toStartOfMinute/Hour/Day/Interval(column): a time bucket (sortable text key in SQLite)."""

    func: str  # canonical function name, e.g. toStartOfHour
    column: Column
    seconds: int  # bucket width
    text: str  # HogQL's printed form, the default column name

    def same(self, other) -> bool:
        return isinstance(other, Bucket) and (self.column.name, self.seconds) == (other.column.name, other.seconds)


@dataclass
class TupleExpr:
    items: list


@dataclass
class Compare:
    op: str  # = != < <= > >=
    left: Any
    right: Any


@dataclass
class InList:
    left: Any
    items: list
    negated: bool


@dataclass
class BoolOp:
    op: str  # AND | OR
    items: list


@dataclass
class Not:
    expr: Any


@dataclass
class Select:
    items: list  # Column | Call | Bucket | "*"
    table: str
    where: Any = None
    order_by: list = field(default_factory=list)  # (Column | Bucket | Call, desc: bool)
    limit: int | None = None
    aliases: list = field(default_factory=list)  # per item: alias or None
    group_by: list | None = None  # Column (alias) | Bucket


# --------------------------------------------------------------------------------------------
# PostHog's JSON AST → the translator's AST
# --------------------------------------------------------------------------------------------


def _fill_placeholders(node: Any, values: dict[str, Any] | None) -> Any:
    """``{name}`` → the query's value as a Constant (HogQLQueryRunner.to_query, placeholders.py)."""
    if isinstance(node, list):
        return [_fill_placeholders(x, values) for x in node]
    if not isinstance(node, dict):
        return node
    if node.get("node") == "Placeholder":
        expr = node.get("expr") or {}
        if expr.get("node") != "Field" or len(expr.get("chain") or []) != 1:
            raise HogQLError("Placeholder expressions are not yet supported")
        name = str(expr["chain"][0])
        if not values:
            raise HogQLError(f"Unresolved placeholder: {{{name}}}")
        if name not in values:
            raise HogQLError(f"Placeholder {{{name}}} is not available in this context. You can use the following: "
                             + ", ".join(str(v) for v in values))
        value = values[name]
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise not_supported(f"A placeholder value of type {type(value).__name__}")
        return {"node": "Constant", "value": value}
    return {k: _fill_placeholders(v, values) for k, v in node.items()}


def _refuse_offset(node: Any) -> None:
    """_OffsetDetectingVisitor: OFFSET on any SELECT (or set query), and LIMIT n BY ... OFFSET m."""
    if isinstance(node, list):
        for x in node:
            _refuse_offset(x)
        return
    if not isinstance(node, dict):
        return
    if node.get("node") in ("SelectQuery", "SelectSetQuery") and node.get("offset") is not None:
        raise HogQLError(OFFSET_REFUSED)
    if node.get("node") == "LimitByExpr" and node.get("offset_value") is not None:
        raise HogQLError(OFFSET_REFUSED)
    for value in node.values():
        _refuse_offset(value)


def _table(jf: dict, version: str) -> TableSpec:
    table = jf.get("table") or {}
    kind = table.get("node")
    if kind in ("SelectQuery", "SelectSetQuery"):
        raise not_supported("A subquery in FROM")
    if kind != "Field":
        raise not_supported(f"A table function or expression in FROM ({kind})")
    name = ".".join(str(x) for x in table.get("chain") or [])
    if name == "sessions":
        return SESSIONS_V3 if version == "v3" else SESSIONS_V2
    if name in TABLES:
        return TABLES[name]
    if name in UNSERVED_TABLES or name.startswith("system."):
        raise not_supported(f"The table `{name}`")
    raise HogQLError(f"Unknown table `{name}`.")


_UNSUPPORTED_CLAUSES = (("ctes", "WITH"), ("distinct", "SELECT DISTINCT"), ("array_join_op", "ARRAY JOIN"),
                        ("prewhere", "PREWHERE"), ("having", "HAVING"), ("limit_by", "LIMIT ... BY"),
                        ("limit_with_ties", "LIMIT ... WITH TIES"), ("window_exprs", "WINDOW"),
                        ("qualify", "QUALIFY"), ("settings", "SETTINGS"))


class _Converter:
    """Reads one SelectQuery of PostHog's JSON AST (``posthog/hogql/ast.py`` node names)."""

    def __init__(self, spec: TableSpec):
        self.spec = spec

    def select(self, q: dict) -> Select:
        for key, what in _UNSUPPORTED_CLAUSES:
            if q.get(key):
                raise not_supported(what)
        jf = q["select_from"]
        if jf.get("next_join"):
            raise not_supported("JOIN")
        if jf.get("alias"):
            raise not_supported("A table alias")
        if jf.get("sample"):
            raise not_supported("SAMPLE")
        if jf.get("table_final"):
            raise not_supported("FINAL")
        items, aliases = [], []
        for node in q.get("select") or []:
            alias = None
            if node.get("node") == "Alias":
                alias, node = str(node["alias"]), node["expr"]
            items.append(self.select_item(node))
            aliases.append(alias)
        select = Select(items, self.spec.name, aliases=aliases)
        if q.get("where") is not None:
            select.where = self.condition(q["where"])
        if q.get("group_by") is not None:
            select.group_by = [self.key(node, "GROUP BY") for node in q["group_by"]]
        for node in q.get("order_by") or []:
            select.order_by.append((self.key(node["expr"], "ORDER BY"), node.get("order") == "DESC"))
        if q.get("limit") is not None:
            limit = q["limit"]
            value = limit.get("value") if limit.get("node") == "Constant" else None
            if not isinstance(value, int) or isinstance(value, bool):
                raise not_supported("A LIMIT that is not an integer constant")
            if value < 0:
                raise not_supported("A negative LIMIT")
            select.limit = value
        return select

    # -- pieces ---------------------------------------------------------------------------

    def column(self, node: dict) -> Column:
        chain = [str(x) for x in node.get("chain") or []]
        if chain == ["*"]:
            raise not_supported("`*` here")
        if len(chain) >= 2 and chain[0] == self.spec.name:
            qualifier, chain = chain[0], chain[1:]
        else:
            qualifier = None
        if len(chain) == 1:
            return Column(chain[0], qualifier)
        if chain[0] in self.spec.fields or chain[0] in self.spec.unserved:
            raise not_supported(f"Property and nested field access ({'.'.join(chain)})")
        raise HogQLError(f"Unable to resolve field: {chain[0]}")

    def select_item(self, node: dict):
        kind = node.get("node")
        if kind == "Field" and node.get("chain") in (["*"], [self.spec.name, "*"]):
            return "*"
        if kind == "Field":
            return self.column(node)
        if kind == "Call":
            name = str(node["name"]).lower()
            if name == "count":
                return self.count(node)
            if name == "now" and not node.get("args"):
                return Call("now")
            if name in _BUCKETS:
                return self.bucket(node)
            raise not_supported(f"The function {node['name']}() in SELECT")
        raise not_supported(f"A {kind} in the select list")

    def count(self, node: dict) -> Call:
        args = node.get("args") or []
        if node.get("distinct") or node.get("params") or len(args) > 1 or \
                (args and not (args[0].get("node") == "Field" and args[0].get("chain") == ["*"])):
            raise not_supported("count() of an expression or count(DISTINCT ...)")
        return Call("count")

    def bucket(self, node: dict) -> Bucket:
        name = str(node["name"]).lower()
        canonical, seconds = _BUCKETS[name]
        args = node.get("args") or []
        if not args or args[0].get("node") != "Field":
            raise not_supported(f"{canonical}() of anything but a column")
        col = self.column(args[0])
        if name == "tostartofinterval":
            interval = args[1] if len(args) > 1 else {}
            unit_name = str(interval.get("name", "")).lower()
            unit = unit_name[len("tointerval"):] if unit_name.startswith("tointerval") else ""
            n_args = interval.get("args") or []
            n = n_args[0].get("value") if len(n_args) == 1 and n_args[0].get("node") == "Constant" else None
            if interval.get("node") != "Call" or unit not in _INTERVAL_UNITS or not isinstance(n, int):
                raise not_supported("toStartOfInterval() with anything but INTERVAL n SECOND|MINUTE|HOUR|DAY")
            per, whole = _INTERVAL_UNITS[unit]
            if n <= 0 or whole % n:
                raise not_supported(f"toStartOfInterval(..., INTERVAL {n} {unit.upper()}) with n not dividing {whole}")
            if len(args) > 2:
                raise not_supported(f"{canonical}() with a timezone argument")
            return Bucket(canonical, col, n * per, f"toStartOfInterval({col.name}, toInterval{unit.capitalize()}({n}))")
        if len(args) > 1:
            raise not_supported(f"{canonical}() with a timezone argument")
        return Bucket(canonical, col, seconds, f"{canonical}({col.name})")

    def key(self, node: dict, clause: str):
        """A GROUP BY / ORDER BY key: a bucket, count(), or a column / alias name."""
        kind = node.get("node")
        if kind == "Field":
            return self.column(node)
        if kind == "Call":
            name = str(node["name"]).lower()
            if name in _BUCKETS:
                return self.bucket(node)
            if name == "count":
                return self.count(node)
            raise not_supported(f"The function {node['name']}() in {clause}")
        if kind == "Constant":
            raise not_supported(f"{clause} by position")
        raise not_supported(f"A {kind} in {clause}")

    def condition(self, node: dict):
        kind = node.get("node")
        if kind == "And":
            return BoolOp("AND", [self.condition(x) for x in node["exprs"]])
        if kind == "Or":
            return BoolOp("OR", [self.condition(x) for x in node["exprs"]])
        if kind == "Not":
            return Not(self.condition(node["expr"]))
        if kind == "CompareOperation":
            return self.compare(node)
        if kind == "Field":
            return self.column(node)
        if kind == "Constant":
            return self.operand(node)
        if kind == "BetweenExpr":
            raise not_supported("BETWEEN")
        if kind == "Call":
            raise not_supported(f"The function {node['name']}() as a condition")
        raise not_supported(f"A {kind} in WHERE")

    def compare(self, node: dict):
        op = node["op"]
        if op in ("in", "not in"):
            right = node["right"]
            if right.get("node") in ("SelectQuery", "SelectSetQuery"):
                raise not_supported("IN (subquery)")
            items = right["exprs"] if right.get("node") == "Tuple" else [right]
            return InList(self.operand(node["left"]), [self.operand(x) for x in items], op == "not in")
        if op not in ("==", "!=", "<", "<=", ">", ">="):
            raise not_supported(f"The comparison operator {op.upper()}")
        return Compare("=" if op == "==" else op, self.operand(node["left"]), self.operand(node["right"]))

    def operand(self, node: dict):
        kind = node.get("node")
        if kind == "Field":
            return self.column(node)
        if kind == "Constant":
            return constant(node)
        if kind == "Tuple":
            return TupleExpr([self.operand(x) for x in node["exprs"]])
        if kind == "Call":
            args = [self.operand(x) for x in node.get("args") or []]
            if not all(isinstance(a, Literal) for a in args):
                raise not_supported(f"The function {node['name']}() of a column")
            return evaluate_function(str(node["name"]), args)
        if kind == "ArithmeticOperation":
            raise not_supported("Arithmetic (+, -, *, /, %)")
        if kind in ("SelectQuery", "SelectSetQuery"):
            raise not_supported("A subquery")
        if kind == "CompareOperation" or kind in ("And", "Or", "Not"):
            raise not_supported("A comparison inside a comparison")
        raise not_supported(f"A {kind} in a comparison")


def constant(node: dict) -> Literal:
    value = node.get("value")
    if node.get("value_type") == "number" and isinstance(value, str):  # beyond 64 bits, kept as text
        value = int(value) if value.lstrip("-").isdigit() else float(value)
    if value is None:
        return Literal(None, "null")
    if isinstance(value, bool):
        return Literal(value, "bool")
    if isinstance(value, int):
        return Literal(value, "int")
    if isinstance(value, float):
        return Literal(value, "float")
    if isinstance(value, str):
        return Literal(value, "string")
    raise not_supported(f"A constant of type {type(value).__name__}")


# --------------------------------------------------------------------------------------------
# Constant functions
# --------------------------------------------------------------------------------------------


def _tz(arg) -> Any:
    if not isinstance(arg, Literal) or arg.type != "string":
        raise not_supported("A timezone argument that is not a string literal")
    if arg.value == "UTC":
        return tu.UTC
    try:
        return ZoneInfo(arg.value)
    except (ZoneInfoNotFoundError, ValueError):
        raise HogQLError(f"Invalid time zone: {arg.value}", "bad_arguments") from None


def _in_range(dt: datetime, shown: Any) -> datetime:
    """DateTime64 covers 1900-01-01 .. 2299-12-31."""
    if not 1900 <= dt.year <= 2299:
        raise HogQLError(f"Date-time {shown!r} is outside the DateTime64 range (1900-01-01 .. 2299-12-31)",
                         "cannot_parse_datetime")
    return dt


def _parse_dt_literal(arg, fname: str, tz=None) -> datetime:
    if isinstance(arg, Literal) and arg.type == "datetime":
        return arg.value
    if isinstance(arg, Literal) and arg.type == "int":
        try:
            return _in_range(tu.us_to_dt(arg.value * 1_000_000), arg.value)
        except (OverflowError, ValueError):
            raise HogQLError(f"{fname}(): {arg.value} is outside the DateTime64 range", "cannot_parse_datetime") from None
    if not isinstance(arg, Literal) or arg.type != "string":
        raise not_supported(f"{fname}() of anything but a string or integer literal")
    try:
        return _in_range(tu.parse_datetime(arg.value, tz), arg.value)
    except (ValueError, OverflowError):
        raise HogQLError(f"Cannot parse '{arg.value}' as DateTime64 in {fname}() "
                         "(expected 'YYYY-MM-DD HH:MM:SS[.ffffff]')", "cannot_parse_datetime") from None


def evaluate_function(name: str, args: list) -> Literal:
    """Constant functions allowed in WHERE: toDateTime, toDateTime64, toUUID, now()."""
    low = name.lower()
    if low == "now":
        if args:
            raise HogQLError("Number of arguments for function now doesn't match: passed 1, should be 0",
                             "number_of_arguments_doesnt_match")
        return Literal(tu.utcnow(), "datetime")
    if low == "todatetime":
        if not 1 <= len(args) <= 2:
            raise HogQLError("toDateTime() takes 1 or 2 arguments", "number_of_arguments_doesnt_match")
        tz = _tz(args[1]) if len(args) == 2 else None
        return Literal(_parse_dt_literal(args[0], "toDateTime", tz), "datetime")
    if low == "todatetime64":
        if not 2 <= len(args) <= 3:
            raise HogQLError("toDateTime64() takes 2 or 3 arguments: (value, precision[, timezone])",
                             "number_of_arguments_doesnt_match")
        p = args[1]
        if not isinstance(p, Literal) or p.type != "int" or not 0 <= p.value <= 9:
            raise HogQLError("toDateTime64(): precision must be an integer literal between 0 and 9",
                             "illegal_type_of_argument")
        tz = _tz(args[2]) if len(args) == 3 else None
        dt = _parse_dt_literal(args[0], "toDateTime64", tz)
        if p.value < 6:  # DateTime64(p) keeps only p fractional digits
            step = 10 ** (6 - p.value)
            dt = dt.replace(microsecond=dt.microsecond - dt.microsecond % step)
        return Literal(dt, "datetime")
    if low == "touuid":
        if len(args) != 1 or not isinstance(args[0], Literal) or args[0].type != "string":
            raise not_supported("toUUID() of anything but one string literal")
        return Literal(_uuid_value(args[0].value), "uuid")
    raise not_supported(f"The function {name}() in WHERE (supported: toDateTime, toDateTime64, toUUID, now)")


def _uuid_value(text: str) -> str:
    if not _UUID_RE.match(text):
        raise HogQLError(f"Cannot parse uuid {text}: Cannot parse UUID from String", "cannot_parse_uuid")
    return text.lower()


# --------------------------------------------------------------------------------------------
# Sessions (computed from the visible events of the team)
# --------------------------------------------------------------------------------------------


def _first(key: str) -> str:
    return f"json_extract(f.properties, '$.\"{key}\"')"


def _duration_sql() -> str:
    seconds = "CAST(strftime('%s', substr({}, 1, 19)) AS INTEGER)"
    return f"({seconds.format('g.hi')} - {seconds.format('g.lo')})"  # dateDiff('second', start, end)


def _channel_sql() -> str:
    """PostHog's default channel rules for the referrers the generator uses (channel_type.py)."""
    ref = _first("$referring_domain")
    return (f"(CASE WHEN {_first('utm_source')} IS NOT NULL THEN 'Unknown' WHEN {ref} = '$direct' THEN 'Direct' "
            f"WHEN {ref} LIKE '%google.%' THEN 'Organic Search' "
            f"WHEN {ref} IN ('t.co', 'x.com', 'twitter.com', 'facebook.com') THEN 'Organic Social' "
            f"WHEN {ref} IS NOT NULL THEN 'Referral' ELSE 'Unknown' END)")


def _bounce_sql(version: str) -> str:
    """``$is_bounce``: null without pages; else not (more than one page, an autocapture, or 10 s).
    v2 counts pageviews (bounceRatePageViewMode count_pageviews, the default); v3 counts
    pageviews and screens (``$page_screen_count_up_to``) and ``$has_autocapture``."""
    pages = "g.pageviews" if version == "v2" else "(g.pageviews + g.screens)"
    return (f"(CASE WHEN {pages} = 0 THEN NULL ELSE NOT ({pages} > 1 OR g.autocaptures > 0 "
            f"OR {_duration_sql()} >= {BOUNCE_RATE_DURATION_SECONDS}) END)")


def session_column_sql(name: str, version: str) -> str:
    """One sessions field as SQLite over the per-session aggregate ``g`` and its first (``f``) and last
    (``l``) events, as sessions_v2.py / sessions_v3.py aggregate the raw sessions: start/end = min/max
    timestamp, ``max_inserted_at`` = the latest ingestion time, entry/end URL = the first/last
    event's, paths and hosts from those URLs (path(), domain()), counts of ``$pageview`` /
    ``$autocapture`` / ``$screen``, distinct URLs, duration in whole seconds, bounce and channel."""
    direct = {
        "id": "g.sid", "session_id": "g.sid", "team_id": "g.team_id", "distinct_id": "l.distinct_id",
        "$start_timestamp": "g.lo", "$end_timestamp": "g.hi", "max_inserted_at": "g.max_inserted_at",
        "$num_uniq_urls": "g.urls", "$entry_current_url": _first("$current_url"),
        "$entry_pathname": f"emu_url_path({_first('$current_url')})",
        "$entry_hostname": f"emu_url_domain({_first('$current_url')})",
        "$end_current_url": "json_extract(l.properties, '$.\"$current_url\"')",
        "$end_pathname": "emu_url_path(json_extract(l.properties, '$.\"$current_url\"'))",
        "$end_hostname": "emu_url_domain(json_extract(l.properties, '$.\"$current_url\"'))",
        "$entry_referring_domain": _first("$referring_domain"), "$entry_referrer": _first("$referrer"),
        "$last_external_click_url": "NULL",  # no $external_click events are generated
        "$pageview_count": "g.pageviews", "$autocapture_count": "g.autocaptures", "$screen_count": "g.screens",
        "$session_duration": _duration_sql(), "duration": _duration_sql(), "$is_bounce": _bounce_sql(version),
        "$channel_type": _channel_sql(), "session_timestamp": "emu_uuid7_time(g.sid)",
        "$has_autocapture": "(g.autocaptures > 0)",
        "$has_replay_events": "0",  # no generated recording belongs to an event session
    }
    direct["$exit_current_url"], direct["$exit_pathname"] = direct["$end_current_url"], direct["$end_pathname"]
    if name in direct:
        return direct[name]
    if name.startswith("$entry_has_"):
        return f"({_first(name[len('$entry_has_'):])} IS NOT NULL)"
    if name.startswith("$entry_utm_"):
        return _first(name[len("$entry_"):])
    if name.startswith("$entry_"):  # an ad id: the first event's property of that name
        return _first(name[len("$entry_"):])
    raise KeyError(name)


def sessions_sql(columns: list[str], version: str, event_filter: str, ingestion_sql: str) -> str:
    """The ``sessions`` rows (only ``columns``) as SQLite over ``events``: one row per ``$session_id``.
    ``event_filter`` (``AND ...`` on the events) carries team, visibility and the pushed-down range;
    ``ingestion_sql`` is an event's ingestion time (``Store.ingestion_time_sql``). The first and last
    event are found by (timestamp, uuid) and read by uuid, so only their properties are parsed."""
    exprs = {name: session_column_sql(name, version) for name in dict.fromkeys(["team_id", *columns])}
    select = ", ".join(f'{sql} AS "{name.replace(chr(34), chr(34) * 2)}"' for name, sql in exprs.items())
    joined = " ".join(exprs.values())
    joins = ("JOIN events AS f ON f.uuid = substr(g.first_key, 28) " if "f." in joined else "") + \
            ("JOIN events AS l ON l.uuid = substr(g.last_key, 28)" if "l." in joined else "")
    # Only the aggregates the columns use (a count per hour needs neither URLs nor first events).
    aggregates = {"lo": "min(timestamp)", "hi": "max(timestamp)", "max_inserted_at": "max(ingested)",
                  "first_key": "min(timestamp || ' ' || uuid)", "last_key": "max(timestamp || ' ' || uuid)",
                  "urls": "count(DISTINCT url)", "pageviews": "sum(event = '$pageview')",
                  "autocaptures": "sum(event = '$autocapture')", "screens": "sum(event = '$screen')"}
    used = {"lo", "hi"} | {name for name in aggregates if f"g.{name}" in joined}
    used |= {"first_key"} if "f." in joined else set()
    used |= {"last_key"} if "l." in joined else set()
    inner = ", ".join(f"{sql} AS {name}" for name, sql in aggregates.items() if name in used)
    extra = (f", {ingestion_sql} AS ingested" if "max_inserted_at" in used else "") + \
            (", json_extract(properties, '$.\"$current_url\"') AS url" if "urls" in used else "")
    return f"""SELECT {select}
          FROM (SELECT team_id, sid, {inner}
                FROM (SELECT team_id, uuid, event, timestamp{extra},
                             session_id AS sid
                      FROM events WHERE 1 = 1{event_filter})
                WHERE sid IS NOT NULL AND sid <> '' GROUP BY team_id, sid) AS g {joins}"""


# --------------------------------------------------------------------------------------------
# Translator
# --------------------------------------------------------------------------------------------


_KIND_TYPES = {"int": "Int64", "float": "Float64", "bool": "Bool", "string": "String", "uuid": "UUID",
               "datetime": DT64, "null": "Nullable(Nothing)"}  # a literal's type, as ClickHouse names it


def _category(ch_type: str) -> str:
    if ch_type.startswith("DateTime"):
        return "datetime"
    return {"UUID": "uuid", "String": "string", "Bool": "bool"}.get(ch_type, "number")


@dataclass
class Compiled:
    """A translated query: SQLite SQL + parameters, and what the response needs to know."""

    sql: str
    params: list
    columns: list[str]
    types: list[list[str]]
    bool_columns: list[int]
    limit: int  # rows returned at most
    explicit_limit: bool  # False → fetch limit + 1 to compute hasMore
    hogql: str
    table: str = "events"
    ts_bounds: tuple = (None, None)  # (lo, hi) storage text, inclusive: the timestamp range read
    read_columns: list = field(default_factory=list)  # the table columns the query reads
    id_bounds: tuple = (None, None)  # persons: the [lo, hi] range of id's order key a WHERE on id reads


_ORDERING = ("<", "<=", ">", ">=")


class Translator:
    def __init__(self, select: Select, spec: TableSpec, tz_offset_seconds: int = 0, sessions_version: str = "v2"):
        self.s = select
        self.spec = spec
        self.schema = spec.fields
        self.params: list = []
        self.tz_offset = tz_offset_seconds  # the project zone's fixed UTC offset: hour and day buckets start there
        self.sessions_version = sessions_version
        self.aliases: dict = {}

    def column(self, col: Column) -> tuple[str, str]:
        """(sql, category) of a column; unknown names are HogQL resolution errors."""
        if col.qualifier is None and col.name not in self.schema and col.name in self.aliases:
            target = self.aliases[col.name]
            if isinstance(target, Column):
                return self.column(target)
            raise not_supported(f"The alias {col.name} of an expression outside the select list")
        if col.name not in self.schema:
            if col.name in self.spec.unserved:
                raise not_supported(f"The field {col.name} of {self.spec.name}")
            raise HogQLError(f"Unable to resolve field: {col.name}")
        sql = col.name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", col.name) else '"' + col.name.replace('"', '""') + '"'
        return sql, _category(self.schema[col.name])

    def literal(self, lit: Literal, target: str | None, order_key: bool = False) -> str:
        """Bind a literal, coerced to the category of the column it is compared with (a UUID as its
        ClickHouse order key when ``order_key``)."""
        if lit.type == "null":
            return "NULL"
        value = lit.value
        kind = lit.type
        if target == "datetime":
            if kind == "string":
                try:
                    value = _in_range(tu.parse_datetime(value), value)
                except (ValueError, OverflowError):
                    raise HogQLError(f"Cannot parse '{lit.value}' as DateTime64", "cannot_parse_datetime") from None
                kind = "datetime"
            if kind != "datetime":
                raise HogQLError(f"Illegal types of arguments (DateTime64(6, 'UTC'), {_KIND_TYPES[kind]}) of a comparison: "
                                 "use toDateTime64('YYYY-MM-DD HH:MM:SS.ffffff', 6, 'UTC')", "illegal_type_of_argument")
        elif target == "uuid":
            if kind == "string":
                value, kind = _uuid_value(value), "uuid"
            if kind != "uuid":
                raise HogQLError(f"Illegal types of arguments (UUID, {_KIND_TYPES[kind]}) of a comparison", "illegal_type_of_argument")
        elif target == "string":
            if kind != "string":
                raise HogQLError(f"Illegal types of arguments (String, {_KIND_TYPES[kind]}) of a comparison: "
                                 "compare strings with '...' literals", "illegal_type_of_argument")
        elif target == "bool":
            if kind == "int" and value in (0, 1):
                value, kind = bool(value), "bool"
            if kind != "bool":
                raise HogQLError(f"Illegal types of arguments (Bool, {_KIND_TYPES[kind]}) of a comparison", "illegal_type_of_argument")
        if kind == "int" and not -(2 ** 63) <= value < 2 ** 63:
            raise HogQLError(f"Integer literal {value} is out of the Int64 range", "illegal_type_of_argument")
        if kind == "datetime":
            self.params.append(tu.to_db(value))
        elif kind == "bool":
            self.params.append(1 if value else 0)
        elif kind == "uuid" and order_key:
            self.params.append(uuid_order_key(value))
        else:
            self.params.append(value)
        return "?"

    def _side(self, node, other, order_key: bool) -> str:
        if isinstance(node, Column):
            sql, cat = self.column(node)
            return uuid_order_sql(sql) if order_key and cat == "uuid" else sql
        if isinstance(node, Literal):
            target = self.column(other)[1] if isinstance(other, Column) else None
            if target is None and isinstance(other, Literal) and other.type != node.type \
                    and {node.type, other.type} - {"int", "float", "null"}:
                raise HogQLError(f"Illegal types of arguments ({_KIND_TYPES[node.type]}, {_KIND_TYPES[other.type]}) of a comparison",
                                 "illegal_type_of_argument")
            return self.literal(node, target, order_key and target == "uuid")
        raise HogQLError("Tuples can only be compared with tuples of the same length", "illegal_type_of_argument")

    def _pair(self, a, b, op: str) -> tuple[str, str]:
        """Both sides of one comparison; UUIDs compared in ClickHouse's order for <, <=, >, >=."""
        if isinstance(a, Column) and isinstance(b, Column):
            (sa, ca), (sb, cb) = self.column(a), self.column(b)
            if ca != cb:
                raise HogQLError(f"Illegal types of arguments ({self.schema[a.name]}, {self.schema[b.name]}) of a "
                                 "comparison", "illegal_type_of_argument")
            if ca == "uuid" and op in _ORDERING:
                return uuid_order_sql(sa), uuid_order_sql(sb)
            return sa, sb
        if isinstance(a, TupleExpr) or isinstance(b, TupleExpr):
            raise HogQLError("Tuples can only be compared with tuples of the same length", "illegal_type_of_argument")
        key = op in _ORDERING
        sa = self._side(a, b, key)  # parameters are bound in the order the sides are written
        sb = self._side(b, a, key)
        return sa, sb

    def compare(self, node: Compare) -> str:
        left, right = node.left, node.right
        if isinstance(left, TupleExpr) or isinstance(right, TupleExpr):
            if not (isinstance(left, TupleExpr) and isinstance(right, TupleExpr)) or len(left.items) != len(right.items):
                raise HogQLError("Tuples can only be compared with tuples of the same length", "illegal_type_of_argument")
            lparts, rparts = [], []
            for a, b in zip(left.items, right.items):
                l_sql, r_sql = self._pair(a, b, node.op if node.op in _ORDERING else "=")
                lparts.append(l_sql)
                rparts.append(r_sql)
            return f"({', '.join(lparts)}) {node.op} ({', '.join(rparts)})"
        if isinstance(right, Literal) and right.type == "null" and node.op in ("=", "!="):  # x IS [NOT] NULL
            sql = self._side(left, right, False)
            return f"{sql} IS {'NOT ' if node.op == '!=' else ''}NULL"
        l_sql, r_sql = self._pair(left, right, node.op)
        return f"{l_sql} {node.op} {r_sql}"

    def condition(self, node) -> str:
        if isinstance(node, BoolOp):
            return "(" + f" {node.op} ".join(self.condition(x) for x in node.items) + ")"
        if isinstance(node, Not):
            return f"(NOT {self.condition(node.expr)})"
        if isinstance(node, Compare):
            return "(" + self.compare(node) + ")"
        if isinstance(node, InList):
            if not isinstance(node.left, Column):
                raise not_supported("IN with anything but a column on its left side")
            col_sql, cat = self.column(node.left)
            parts = []
            for item in node.items:
                if not isinstance(item, Literal):
                    raise not_supported("IN (...) of anything but literals")
                parts.append(self.literal(item, cat))
            return f"({col_sql} {'NOT IN' if node.negated else 'IN'} ({', '.join(parts)}))"
        if isinstance(node, Column):
            sql, cat = self.column(node)
            if cat != "bool":
                raise HogQLError(f"Illegal type {self.schema[node.name]} of column {node.name} for filter. "
                                 "Must be UInt8 or Nullable(UInt8).", "illegal_type_of_argument")
            return f"({sql} <> 0)"
        if isinstance(node, Literal) and node.type == "bool":
            return "1" if node.value else "0"
        raise HogQLError("WHERE needs a condition (a comparison), not a bare value", "illegal_type_of_argument")

    # -- buckets, aliases and keys --------------------------------------------------------

    def bucket_key(self, b: Bucket) -> str:
        """SQLite text ``YYYY-MM-DD HH:MM:SS`` of the bucket start (sortable, groupable)."""
        sql, cat = self.column(b.column)
        if cat != "datetime":
            raise HogQLError(f"Illegal type {self.schema[b.column.name]} of argument of function {b.func}. "
                             "Should be a date or a date with time", "illegal_type_of_argument")
        if b.seconds == 60 and self.tz_offset % 60 == 0:
            return f"(substr({sql}, 1, 16) || ':00')"
        if self.tz_offset:  # toStartOfHour/Day in the project's zone (posthog-api.md § 15): shift, floor, shift back
            off = int(self.tz_offset)
            return (f"strftime('%Y-%m-%d %H:%M:%S', ((CAST(strftime('%s', substr({sql}, 1, 19)) AS INTEGER) + {off}) / {b.seconds})"
                    f" * {b.seconds} - {off}, 'unixepoch')")
        if b.seconds == 3600:
            return f"(substr({sql}, 1, 13) || ':00:00')"
        if b.seconds == 86_400:
            return f"(substr({sql}, 1, 10) || ' 00:00:00')"
        return (f"strftime('%Y-%m-%d %H:%M:%S', (CAST(strftime('%s', substr({sql}, 1, 19)) AS INTEGER) / {b.seconds})"
                f" * {b.seconds}, 'unixepoch')")

    def _resolve_key(self, key):
        """A GROUP BY / ORDER BY key → the select item it names (aliases first), or itself."""
        if isinstance(key, Column) and key.qualifier is None and key.name in self.aliases:
            return self.aliases[key.name]
        return key

    def _not_aggregated(self, name: str) -> HogQLError:
        return HogQLError(f"Column `{name}` is not under aggregate function and not in GROUP BY keys", "not_an_aggregate")

    def compile(self, team_id: int, text: str, visibility: tuple[str, list], ingestion_sql: str) -> Compiled:
        s = self.s
        select_sql, columns, types, bool_cols = [], [], [], []
        items, names = [], []
        for item, alias in zip(s.items, s.aliases or [None] * len(s.items)):
            if item == "*":
                if self.spec.asterisk is None:
                    raise not_supported(f"SELECT * FROM {self.spec.name} (name the fields)")
                items.extend(Column(name) for name in self.spec.asterisk)
                names.extend([None] * len(self.spec.asterisk))
            else:
                items.append(item)
                names.append(alias)
        self.aliases = {a: it for it, a in zip(items, names) if a is not None}
        has_agg = any(isinstance(x, Call) and x.name == "count" for x in items)
        group_keys = None
        if s.group_by is not None:
            group_keys = []
            for key in s.group_by:
                target = self._resolve_key(key)
                if isinstance(target, Call):
                    raise HogQLError("Aggregate function count() is found in GROUP BY in query", "illegal_aggregation")
                if not isinstance(target, Bucket):
                    raise not_supported("GROUP BY anything but time buckets (toStartOfMinute/Hour/Day/Interval of a "
                                        "DateTime column, or their aliases)")
                group_keys.append(target)
        aggregate = has_agg or group_keys is not None
        for item, alias in zip(items, names):
            if isinstance(item, Call) and item.name == "count":
                name = alias or "count()"
                select_sql.append("count(*)")
                columns.append(name)
                types.append([name, "UInt64"])
            elif isinstance(item, Call) and item.name == "now":
                name = alias or "now()"
                select_sql.append("?")
                self.params.append(tu.iso_z_seconds(tu.utcnow()))
                columns.append(name)
                types.append([name, "DateTime('UTC')"])
            elif isinstance(item, Bucket):
                if aggregate and not any(item.same(k) for k in group_keys or []):
                    raise self._not_aggregated(alias or item.text)
                key = self.bucket_key(item)
                name = alias or item.text
                select_sql.append(f"substr({key}, 1, 10) || 'T' || substr({key}, 12) || 'Z'")
                columns.append(name)
                types.append([name, "DateTime('UTC')"])
            else:
                sql, cat = self.column(item)
                if aggregate:
                    raise self._not_aggregated(item.name)
                if cat == "datetime":
                    sql = f"substr({sql}, 1, 10) || 'T' || substr({sql}, 12) || 'Z'"
                if cat == "bool":
                    bool_cols.append(len(columns))
                name = alias or item.name
                select_sql.append(sql)
                columns.append(name)
                types.append([name, self.schema[item.name]])
        select_params = list(self.params)
        self.params = []
        where_sql = self.condition(s.where) if s.where is not None else None
        group_sql = [self.bucket_key(k) for k in group_keys] if group_keys else []
        order_parts = []
        for key, desc in s.order_by:
            target = self._resolve_key(key)
            if isinstance(target, Call) and target.name == "count":
                if not aggregate:
                    raise not_supported("count() in ORDER BY of a query that does not aggregate")
                sql = "count(*)"
            elif isinstance(target, Call):
                raise not_supported("ORDER BY now()")
            elif isinstance(target, Bucket):
                if aggregate and not any(target.same(k) for k in group_keys or []):
                    raise self._not_aggregated(target.text)
                sql = self.bucket_key(target)
            else:
                sql, cat = self.column(target)
                if aggregate:
                    raise self._not_aggregated(target.name)
                if cat == "uuid":
                    sql = uuid_order_sql(sql)
            order_parts.append(f"{sql} {'DESC' if desc else 'ASC'}")
        explicit = s.limit is not None
        limit = min(s.limit, MAX_LIMIT) if explicit else DEFAULT_LIMIT
        read = self.read_columns(items)
        ts_bounds = self.timestamp_bounds()
        source, source_params = self.spec.name, []
        if self.spec.name == "sessions":  # a derived table over the visible events of the team
            lo, hi = self.session_scan_bounds()
            buffer = timedelta(days=SESSION_BUFFER_DAYS)
            lo = tu.to_db(tu.from_db(lo) - buffer) if lo else None
            hi = tu.to_db(tu.from_db(hi) + buffer) if hi else None
            event_filter = " AND team_id = ?" + visibility[0] + (" AND timestamp >= ?" if lo else "") + \
                (" AND timestamp <= ?" if hi else "")
            source = f"({sessions_sql(read, self.sessions_version, event_filter, ingestion_sql)}) AS sessions"
            source_params = [team_id, *visibility[1], *([lo] if lo else []), *([hi] if hi else [])]
            ts_bounds = (lo, hi)
        elif self.spec.name == "cohort_people":
            source = f"({COHORT_PEOPLE_SQL}) AS cohort_people"
        sql = f"SELECT {', '.join(select_sql)} FROM {source} WHERE team_id = ?"
        params = select_params + source_params + [team_id]
        if visibility[0] and self.spec.name == "events":
            sql += visibility[0]
            params += list(visibility[1])
        if where_sql:
            sql += f" AND {where_sql}"
            params += self.params
        if group_sql:
            sql += " GROUP BY " + ", ".join(group_sql)
        if order_parts:
            sql += " ORDER BY " + ", ".join(order_parts)
        sql += " LIMIT ?"
        params.append(limit if explicit else limit + 1)
        hogql = text.strip()
        if not explicit:
            hogql += f" LIMIT {DEFAULT_LIMIT + 1}"
        elif s.limit > MAX_LIMIT:
            hogql = re.sub(r"(?i)\blimit\s+\d+\s*$", f"LIMIT {MAX_LIMIT}", hogql)
        return Compiled(sql, params, columns, types, bool_cols, limit, explicit, hogql, self.spec.name,
                        ts_bounds, read, self.id_bounds() if self.spec.name == "persons" else (None, None))

    # -- what the query reads (for the cost model, posthog-api.md § 11.2) -------------------

    def read_columns(self, items: list) -> list[str]:
        """The table columns the query reads (ClickHouse is columnar: only these are read)."""
        cols: set[str] = set()

        def add(node) -> None:
            if isinstance(node, Column):
                if node.qualifier is None and node.name not in self.schema and node.name in self.aliases:
                    add(self.aliases[node.name])
                elif node.name in self.schema:
                    cols.add(node.name)
            elif isinstance(node, Bucket):
                add(node.column)
            elif isinstance(node, (BoolOp, TupleExpr)):
                for x in node.items:
                    add(x)
            elif isinstance(node, Not):
                add(node.expr)
            elif isinstance(node, Compare):
                add(node.left)
                add(node.right)
            elif isinstance(node, InList):
                add(node.left)

        for it in items:
            add(it)
        add(self.s.where)
        for key, _ in self.s.order_by:
            add(key)
        for key in self.s.group_by or []:
            add(key)
        return sorted(cols)

    def _conjuncts(self) -> list:
        where = self.s.where
        if where is None:
            return []
        return where.items if isinstance(where, BoolOp) and where.op == "AND" else [where]

    _FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "=": "=", "!=": "!="}

    def timestamp_bounds(self) -> tuple[str | None, str | None]:
        """The tightest ``timestamp`` range [lo, hi] implied by the top-level AND of WHERE on
        ``events`` (storage text, both inclusive): ClickHouse's primary key prunes on it, so it is the
        range a query reads. A ``(timestamp, uuid) > (X, U)`` tuple bounds it by X."""
        lo: str | None = None
        hi: str | None = None
        if self.spec.name != "events":
            return lo, hi
        for node in self._conjuncts():
            if not isinstance(node, Compare):
                continue
            left, op, right = node.left, node.op, node.right
            if isinstance(left, TupleExpr) and isinstance(right, TupleExpr) and left.items and right.items:
                left, right = left.items[0], right.items[0]
                op = {"<": "<=", ">": ">="}.get(op, op)  # (ts, uuid) > (X, U) → ts >= X
            value = self._bound(left, op, right, ("timestamp",))
            if value is not None:
                lo, hi = narrow(lo, hi, *value)
        return lo, hi

    def session_scan_bounds(self) -> tuple[str | None, str | None]:
        """The range SessionMinTimestampWhereClauseExtractor pushes into the raw sessions scan: the
        top-level AND of plain comparisons of ``$start_timestamp`` or ``$end_timestamp`` with a
        constant (a tuple is not a simple timestamp expression; ``max_inserted_at`` is not pushed)."""
        lo: str | None = None
        hi: str | None = None
        for node in self._conjuncts():
            if isinstance(node, Compare):
                value = self._bound(node.left, node.op, node.right, ("$start_timestamp", "$end_timestamp"))
                if value is not None:
                    lo, hi = narrow(lo, hi, *value)
        return lo, hi

    def _bound(self, left, op: str, right, names: tuple[str, ...]) -> tuple[str, str] | None:
        if isinstance(right, Column) and not isinstance(left, Column):
            left, right, op = right, left, self._FLIP[op]
        if not (isinstance(left, Column) and left.name in names and isinstance(right, Literal)):
            return None
        try:
            if right.type == "datetime":
                return op, tu.to_db(right.value)
            if right.type == "string":
                return op, tu.to_db(tu.parse_datetime(right.value))
        except (ValueError, OverflowError):
            pass
        return None

    def id_bounds(self) -> tuple[str | None, str | None]:
        """The [lo, hi] range of ``id``'s order key implied by the top-level AND of WHERE: PostHog
        pushes a WHERE on ``id`` into ``raw_persons`` (WhereClauseExtractor in
        posthog/hogql/database/schema/persons.py), whose ClickHouse table is ORDER BY (team_id, id),
        so it is the range a keyset page reads."""
        lo: str | None = None
        hi: str | None = None
        for node in self._conjuncts():
            if not isinstance(node, Compare):
                continue
            left, op, right = node.left, node.op, node.right
            if isinstance(right, Column) and not isinstance(left, Column):
                left, right, op = right, left, self._FLIP[op]
            if not (isinstance(left, Column) and left.name == "id" and isinstance(right, Literal)) \
                    or right.type not in ("uuid", "string") or not _UUID_RE.match(str(right.value)):
                continue
            lo, hi = narrow(lo, hi, op, uuid_order_key(str(right.value).lower()))
        return lo, hi


def narrow(lo: str | None, hi: str | None, op: str, value: str) -> tuple[str | None, str | None]:
    """The inclusive range [lo, hi] tightened by one `column <op> value` of a top-level AND."""
    if op in (">", ">=", "=") and (lo is None or value > lo):
        lo = value
    if op in ("<", "<=", "=") and (hi is None or value < hi):
        hi = value
    return lo, hi


def parse(text: Any) -> dict:
    """PostHog's parser on the query text: its JSON AST, or PostHog's error for what it refuses (a
    ``SyntaxError`` → 400 ``hogql_syntax_error``; an internal parser error → 500)."""
    if not isinstance(text, str):
        raise HogQLError("query.query must be a string", "invalid_input")
    try:
        return posthog_parser.parse_select(text)
    except posthog_parser.ParseFailure as failure:
        if failure.type == "SyntaxError":
            raise HogQLError(failure.message, SYNTAX_ERROR) from None
        raise HogQLError("A server error occurred.", "error", status=500) from None


def compile_query(text: str, team_id: int, values: dict[str, Any] | None = None,
                  visibility: tuple[str, list] = ("", []), tz_offset_seconds: int = 0,
                  sessions_version: str = "v2", ingestion_sql: str = "created_at") -> Compiled:
    """Parse (PostHog's parser) and translate a HogQL query; raises HogQLError for anything PostHog
    would refuse, or the emulator cannot evaluate.

    ``visibility`` is an extra SQL predicate (and its parameters) ANDed into queries over ``events``:
    the rows not yet visible (posthog-api.md § 11.1) are left out. ``tz_offset_seconds``: the
    project's zone, where hour and day buckets start (the caller renders DateTimes in it).
    ``sessions_version``: the ``sessions`` table served (v2 or v3). ``ingestion_sql``: an event's
    ingestion time as SQL (``Store.ingestion_time_sql``), for ``max_inserted_at``."""
    tree = _fill_placeholders(parse(text), values)
    _refuse_offset(tree)
    if tree.get("node") == "SelectSetQuery":
        raise not_supported("UNION, INTERSECT and EXCEPT")
    if tree.get("select_from") is None:
        raise not_supported("SELECT without FROM")
    spec = _table(tree["select_from"], sessions_version)
    try:
        select = _Converter(spec).select(tree)
        return Translator(select, spec, tz_offset_seconds, sessions_version).compile(
            team_id, text, visibility, ingestion_sql)
    except RecursionError:
        raise not_supported("A query nested this deeply") from None
