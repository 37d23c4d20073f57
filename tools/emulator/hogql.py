"""A HogQL subset: tokenizer, parser and translator to parameterized SQLite SQL.

Grammar (keywords case-insensitive, column names case-sensitive as in ClickHouse)::

    SELECT item [AS alias] [, ...] FROM events|persons|sessions [WHERE expr] [GROUP BY bucket [, ...]]
        [ORDER BY key [ASC|DESC] [, ...]] [LIMIT n] [OFFSET n]
    item    := * | column | table.column | count() | count(*) | now() | bucket
    bucket  := toStartOfMinute(col) | toStartOfHour(col) | toStartOfDay(col)
             | toStartOfInterval(col, INTERVAL n SECOND|MINUTE|HOUR|DAY)   -- col: a DateTime column
    key     := column | alias | bucket | count()      -- GROUP BY: buckets (or their aliases) only
    expr    := expr OR expr | expr AND expr | NOT expr | ( expr ) | comparison
    comparison := operand (= | == | != | <> | < | <= | > | >=) operand | operand [NOT] IN (literal, ...)
    operand := column | literal | (operand, operand, ...)            -- tuples compare row-wise
    literal := number | 'string' | true | false | null | {placeholder}
             | toDateTime('...'[, tz]) | toDateTime64('...', precision[, tz]) | toUUID('...') | now()

String literals follow HogQL escaping: ``\\'``, ``\\\\``, ``\\n`` ... and doubled ``''``.
User text never reaches SQL text: every literal becomes a ``?`` parameter.

PostHog facts emulated (posthog-api.md § 4.2, hogql/constants.py, hogql/printer.py):
- no LIMIT → 100 rows, fetched as 101 to compute ``hasMore``;
- an explicit LIMIT is silently capped at 50,000 (MAX_SELECT_RETURNED_ROWS);
- OFFSET is refused for personal API key queries (stricter than documented; posthog-api.md § 4.3 [3rd]);
- HogQL's ``toDateTime(str)`` is ``parseDateTime64BestEffortOrNull(str, 6, tz)``: microseconds kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from . import timeutil as tu

DEFAULT_LIMIT = 100  # DEFAULT_RETURNED_ROWS
MAX_LIMIT = 50_000  # MAX_SELECT_RETURNED_ROWS

DT64 = "DateTime64(6, 'UTC')"
TABLES: dict[str, dict[str, str]] = {
    "events": {"uuid": "UUID", "event": "String", "properties": "String", "timestamp": DT64,
               "distinct_id": "String", "elements_chain": "String", "created_at": DT64, "person_id": "UUID"},
    # PostHog's persons (posthog/hogql/database/schema/persons.py: id, created_at, properties, is_identified;
    # last_seen_at in newer versions, nullable) and person_distinct_ids (person_distinct_ids.py:
    # distinct_id, person_id). team_id is implicit here, as for events.
    "persons": {"id": "UUID", "created_at": DT64, "properties": "String", "is_identified": "Bool", "last_seen_at": DT64},
    "person_distinct_ids": {"distinct_id": "String", "person_id": "UUID"},
    # PostHog's sessions v3 (posthog/hogql/database/schema/sessions_v3.py), computed here from the
    # visible events grouped by their `$session_id` property (SESSIONS_SQL below).
    "sessions": {"session_id": "String", "distinct_id": "String", "$start_timestamp": DT64, "$end_timestamp": DT64,
                 "$entry_current_url": "String", "$entry_pathname": "String", "$end_current_url": "String",
                 "$end_pathname": "String", "$entry_referring_domain": "String", "$entry_utm_source": "String",
                 "$entry_utm_campaign": "String", "$entry_utm_medium": "String", "$entry_utm_term": "String",
                 "$entry_utm_content": "String", "$num_uniq_urls": "UInt64", "$pageview_count": "UInt64",
                 "$autocapture_count": "UInt64", "$screen_count": "UInt64", "$session_duration": "Int64",
                 "$is_bounce": "Bool", "$channel_type": "String"},
}
# PostHog widens a `$start_timestamp` bound by 3 days (SESSION_BUFFER_DAYS) when it pushes it into
# the raw sessions scan (posthog/hogql/database/schema/util/where_clause_extractor.py). Sessions last
# at most 24 h, so the events within one day of the bounds are all a session in range can have: the
# emulator widens by one day (same results, a third of the scan).
SESSION_BUFFER_DAYS = 1
BOUNCE_RATE_DURATION_SECONDS = 10  # DEFAULT_BOUNCE_RATE_DURATION_SECONDS (sessions_v1.py)


def sessions_sql(event_filter: str = "") -> str:
    """The `sessions` rows as SQLite over `events`: one row per `$session_id`, aggregated like
    sessions v3 (start/end = min/max timestamp, entry/end URL, path and referrer = the first/last
    event's, counts of `$pageview`/`$autocapture`/`$screen`, distinct URLs, duration in whole
    seconds, bounce, channel). `event_filter` (`AND ...` on the events) carries team, visibility
    and the pushed-down range. `$channel_type` follows PostHog's default rules for the referrers
    the generator uses; UTM values come from `utm_*` event properties (the generated events have
    none: null). The first and last event are found by (timestamp, uuid) and read by uuid, so
    only two properties are parsed per event."""
    def first(key: str) -> str:
        return f"json_extract(f.properties, '$.{key}')"

    def last(key: str) -> str:
        return f"json_extract(l.properties, '$.{key}')"

    seconds = "CAST(strftime('%s', substr({}, 1, 19)) AS INTEGER)"
    return f"""SELECT *,
        CASE WHEN pages = 0 THEN NULL
             ELSE NOT (pages > 1 OR "$autocapture_count" > 0 OR "$session_duration" >= {BOUNCE_RATE_DURATION_SECONDS}) END AS "$is_bounce",
        CASE WHEN "$entry_utm_source" IS NOT NULL THEN 'Unknown'
             WHEN "$entry_referring_domain" = '$direct' THEN 'Direct'
             WHEN "$entry_referring_domain" LIKE '%google.%' THEN 'Organic Search'
             WHEN "$entry_referring_domain" IN ('t.co', 'x.com', 'twitter.com', 'facebook.com') THEN 'Organic Social'
             WHEN "$entry_referring_domain" IS NOT NULL THEN 'Referral'
             ELSE 'Unknown' END AS "$channel_type"
    FROM (SELECT g.team_id AS team_id, g.sid AS session_id, l.distinct_id AS distinct_id,
                 g.lo AS "$start_timestamp", g.hi AS "$end_timestamp",
                 {first('"$current_url"')} AS "$entry_current_url", {first('"$pathname"')} AS "$entry_pathname",
                 {last('"$current_url"')} AS "$end_current_url", {last('"$pathname"')} AS "$end_pathname",
                 {first('"$referring_domain"')} AS "$entry_referring_domain",
                 {first('utm_source')} AS "$entry_utm_source", {first('utm_campaign')} AS "$entry_utm_campaign",
                 {first('utm_medium')} AS "$entry_utm_medium", {first('utm_term')} AS "$entry_utm_term",
                 {first('utm_content')} AS "$entry_utm_content",
                 g.urls AS "$num_uniq_urls", g.pageviews AS "$pageview_count", g.autocaptures AS "$autocapture_count",
                 g.screens AS "$screen_count", {seconds.format('g.hi')} - {seconds.format('g.lo')} AS "$session_duration",
                 g.pageviews + g.screens AS pages
          FROM (SELECT team_id, sid, min(timestamp) AS lo, max(timestamp) AS hi,
                       min(timestamp || ' ' || uuid) AS first_key, max(timestamp || ' ' || uuid) AS last_key,
                       count(DISTINCT url) AS urls, sum(event = '$pageview') AS pageviews,
                       sum(event = '$autocapture') AS autocaptures, sum(event = '$screen') AS screens
                FROM (SELECT team_id, uuid, event, timestamp,
                             json_extract(properties, '$."$session_id"') AS sid,
                             json_extract(properties, '$."$current_url"') AS url
                      FROM events WHERE 1 = 1{event_filter})
                WHERE sid IS NOT NULL AND sid <> '' GROUP BY team_id, sid) AS g
          JOIN events AS f ON f.uuid = substr(g.first_key, 28)
          JOIN events AS l ON l.uuid = substr(g.last_key, 28))"""
OFFSET_REFUSED = ("OFFSET is not supported for queries made with a personal API key. "
                  "Use keyset pagination (WHERE on the ORDER BY columns) instead.")

KEYWORDS = {"select", "from", "where", "order", "by", "asc", "desc", "limit", "offset", "and", "or", "not", "in",
            "true", "false", "null", "group", "having", "join", "union", "distinct", "as", "settings", "with",
            "nulls", "first", "last", "prewhere", "sample", "array", "left", "inner", "cross", "full"}
_UNSUPPORTED_CLAUSES = {"having": "HAVING", "join": "JOIN", "union": "UNION",
                        "distinct": "DISTINCT", "as": "aliases (AS)", "settings": "SETTINGS", "with": "WITH",
                        "nulls": "NULLS FIRST/LAST", "prewhere": "PREWHERE", "sample": "SAMPLE",
                        "array": "ARRAY JOIN", "left": "JOIN", "inner": "JOIN", "cross": "JOIN", "full": "JOIN"}
_BUCKETS = {"tostartofminute": ("toStartOfMinute", 60), "tostartofhour": ("toStartOfHour", 3600),
            "tostartofday": ("toStartOfDay", 86_400), "tostartofinterval": ("toStartOfInterval", 0)}
_INTERVAL_UNITS = {"second": (1, 60), "minute": (60, 60), "hour": (3600, 24), "day": (86_400, 1)}
_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "b": "\b", "f": "\f", "a": "\a", "v": "\v",
            "\\": "\\", "'": "'", '"': '"', "`": "`"}


class HogQLError(Exception):
    """A query PostHog would refuse: 400 ``validation_error`` with ``code`` syntax_error or invalid_input."""

    def __init__(self, detail: str, code: str = "invalid_input"):
        super().__init__(detail)
        self.detail = detail
        self.code = code


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------


@dataclass
class Token:
    kind: str  # ident | qident | number | string | op | punct | eof
    value: Any
    pos: int


def _where(text: str, pos: int) -> str:
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return f"line {line}, column {col}"


def _syntax(text: str, pos: int, msg: str) -> HogQLError:
    return HogQLError(f"Syntax error at {_where(text, pos)}: {msg}", "syntax_error")


def _read_quoted(text: str, i: int, quote: str) -> tuple[str, int]:
    """Read a quoted string/identifier starting at text[i] == quote; returns (value, index after)."""
    out = []
    j = i + 1
    n = len(text)
    while j < n:
        c = text[j]
        if c == "\\":
            if j + 1 >= n:
                break
            nxt = text[j + 1]
            out.append(_ESCAPES.get(nxt, "\\" + nxt))
            j += 2
        elif c == quote:
            if j + 1 < n and text[j + 1] == quote:  # doubled quote
                out.append(quote)
                j += 2
            else:
                return "".join(out), j + 1
        else:
            out.append(c)
            j += 1
    raise _syntax(text, i, "unterminated quoted string")


def tokenize(text: str, values: dict[str, Any] | None = None) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif text.startswith("--", i):
            j = text.find("\n", i)
            i = n if j < 0 else j + 1
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            if j < 0:
                raise _syntax(text, i, "unterminated comment")
            i = j + 2
        elif c == "'":
            value, j = _read_quoted(text, i, "'")
            tokens.append(Token("string", value, i))
            i = j
        elif c in "`\"":
            value, j = _read_quoted(text, i, c)
            tokens.append(Token("qident", value, i))
            i = j
        elif c.isdigit() or (c == "." and i + 1 < n and text[i + 1].isdigit()):
            m = re.compile(r"\d*\.?\d*(?:[eE][+-]?\d+)?").match(text, i)
            raw = m.group(0)
            j = m.end()
            if j < n and (text[j].isalpha() or text[j] == "_"):
                raise _syntax(text, i, f"unexpected token {text[i:j + 1]!r}")
            value: Any = float(raw) if any(ch in raw for ch in ".eE") else int(raw)
            tokens.append(Token("number", value, i))
            i = j
        elif c.isalpha() or c in "_$":
            m = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*").match(text, i)
            tokens.append(Token("ident", m.group(0), i))
            i = m.end()
        elif c == "{":
            m = re.compile(r"\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}").match(text, i)
            if not m:
                raise _syntax(text, i, "malformed placeholder")
            tokens.append(_placeholder(text, i, m.group(1), values))
            i = m.end()
        elif text.startswith(("==", "!=", "<>", "<=", ">="), i):
            tokens.append(Token("op", text[i:i + 2], i))
            i += 2
        elif c in "=<>":
            tokens.append(Token("op", c, i))
            i += 1
        elif c in "(),.*":
            tokens.append(Token("punct", c, i))
            i += 1
        elif c == ";":
            raise _syntax(text, i, "';' is not allowed: send exactly one SELECT statement")
        else:
            raise _syntax(text, i, f"unexpected character {c!r}")
    tokens.append(Token("eof", None, n))
    return tokens


def _placeholder(text: str, pos: int, name: str, values: dict[str, Any] | None) -> Token:
    """``{name}`` placeholders are filled from the HogQLQuery ``values`` as typed literals."""
    if not values or name not in values:
        raise HogQLError(f"Placeholder {{{name}}} is not available in this context: no value named '{name}' was given")
    v = values[name]
    if isinstance(v, bool):
        return Token("ident", "true" if v else "false", pos)
    if v is None:
        return Token("ident", "null", pos)
    if isinstance(v, (int, float)):
        return Token("number", v, pos)
    if isinstance(v, str):
        return Token("string", v, pos)
    raise HogQLError(f"Placeholder {{{name}}} has an unsupported value type: {type(v).__name__}")


# --------------------------------------------------------------------------------------------
# AST
# --------------------------------------------------------------------------------------------


@dataclass
class Column:
    name: str
    pos: int
    qualifier: str | None = None  # "events" in events.timestamp


@dataclass
class Literal:
    value: Any
    type: str  # string | int | float | bool | null | datetime | uuid


@dataclass
class Call:
    name: str  # count | now  (select list only)


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
    op: str
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
# Parser
# --------------------------------------------------------------------------------------------


class Parser:
    def __init__(self, text: str, values: dict[str, Any] | None = None):
        self.text = text
        self.tokens = tokenize(text, values)
        self.i = 0
        self.table: str | None = None

    # token helpers
    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def _advance(self) -> Token:
        t = self.tokens[self.i]
        self.i += 1
        return t

    def _is_kw(self, word: str, offset: int = 0) -> bool:
        t = self.tokens[min(self.i + offset, len(self.tokens) - 1)]
        return t.kind == "ident" and t.value.lower() == word

    def _expect_kw(self, word: str) -> None:
        if not self._is_kw(word):
            raise self._unexpected(f"expected {word.upper()}")
        self.i += 1

    def _is_punct(self, p: str) -> bool:
        return self.tok.kind == "punct" and self.tok.value == p

    def _expect_punct(self, p: str) -> None:
        if not self._is_punct(p):
            raise self._unexpected(f"expected '{p}'")
        self.i += 1

    def _unexpected(self, msg: str) -> HogQLError:
        t = self.tok
        shown = "end of query" if t.kind == "eof" else repr(str(t.value))
        return _syntax(self.text, t.pos, f"{msg}, got {shown}")

    def _check_unsupported(self) -> None:
        t = self.tok
        if t.kind == "ident" and t.value.lower() in _UNSUPPORTED_CLAUSES:
            raise HogQLError(f"{_UNSUPPORTED_CLAUSES[t.value.lower()]} is not supported by this HogQL emulator "
                             f"(at {_where(self.text, t.pos)})")

    # grammar
    def parse(self) -> Select:
        self._expect_kw("select")
        self._check_unsupported()
        items, aliases = [self._select_item()], [self._alias()]
        while self._is_punct(","):
            self.i += 1
            items.append(self._select_item())
            aliases.append(self._alias())
        self._check_unsupported()
        self._expect_kw("from")
        t = self._advance()
        if t.kind not in ("ident", "qident") or (t.kind == "ident" and t.value.lower() in KEYWORDS):
            raise _syntax(self.text, t.pos, "expected a table name")
        if self._is_punct("(") or self._is_punct("."):
            raise HogQLError(f"Unknown table `{t.value}`.")
        if t.value not in TABLES:
            raise HogQLError(f"Unknown table `{t.value}`.")
        self.table = t.value
        self._check_unsupported()
        if self.tok.kind in ("ident", "qident") and not self._is_kw("where") and not self._is_kw("order") \
                and not self._is_kw("limit") and not self._is_kw("offset") and not self._is_kw("group"):
            raise HogQLError(f"Table aliases are not supported by this HogQL emulator (at {_where(self.text, self.tok.pos)})")
        select = Select(items, self.table, aliases=aliases)
        if self._is_kw("where"):
            self.i += 1
            select.where = self._expr()
        if self._is_kw("group"):
            self.i += 1
            self._expect_kw("by")
            select.group_by = [self._key()]
            while self._is_punct(","):
                self.i += 1
                select.group_by.append(self._key())
        self._check_unsupported()
        if self._is_kw("order"):
            self.i += 1
            self._expect_kw("by")
            select.order_by.append(self._order_item())
            while self._is_punct(","):
                self.i += 1
                select.order_by.append(self._order_item())
        self._check_unsupported()
        if self._is_kw("limit"):
            self.i += 1
            select.limit = self._int_value("LIMIT")
            if self._is_punct(","):  # LIMIT offset, count
                raise HogQLError(OFFSET_REFUSED)
            self._check_unsupported()
            if self._is_kw("by"):
                raise HogQLError("LIMIT BY is not supported by this HogQL emulator")
        if self._is_kw("offset"):
            raise HogQLError(OFFSET_REFUSED)
        self._check_unsupported()
        if self.tok.kind != "eof":
            raise self._unexpected("expected end of query")
        return select

    def _int_value(self, clause: str) -> int:
        t = self._advance()
        if t.kind != "number" or not isinstance(t.value, int) or isinstance(t.value, bool):
            raise _syntax(self.text, t.pos, f"{clause} expects a non-negative integer")
        return t.value

    def _select_item(self):
        if self._is_punct("*"):
            self.i += 1
            return "*"
        t = self.tok
        if t.kind == "ident" and self.tokens[self.i + 1].kind == "punct" and self.tokens[self.i + 1].value == "(":
            name = t.value.lower()
            self.i += 2
            if name == "count":
                if self._is_punct("*"):
                    self.i += 1
                self._expect_punct(")")
                return Call("count")
            if name == "now":
                self._expect_punct(")")
                return Call("now")
            if name in _BUCKETS:
                return self._bucket(t)
            raise HogQLError(f"Function '{t.value}' is not supported in SELECT by this HogQL emulator "
                             "(supported: columns, count(), now(), toStartOfMinute/Hour/Day/Interval)")
        return self._column()

    def _alias(self) -> str | None:
        if not self._is_kw("as"):
            return None
        self.i += 1
        t = self._advance()
        if t.kind == "ident" and t.value.lower() in KEYWORDS:
            raise _syntax(self.text, t.pos, f"unexpected keyword {t.value.upper()}: expected an alias")
        if t.kind not in ("ident", "qident"):
            raise _syntax(self.text, t.pos, "expected an alias after AS")
        return t.value

    def _bucket(self, name_tok: Token) -> Bucket:
        """After ``name(``: a DateTime column [, INTERVAL n UNIT] ``)``."""
        name = name_tok.value.lower()
        canonical, seconds = _BUCKETS[name]
        col = self._column()
        if name == "tostartofinterval":
            self._expect_punct(",")
            if not self._is_kw("interval"):
                raise self._unexpected("toStartOfInterval() expects INTERVAL n UNIT as its second argument")
            self.i += 1
            n = self._int_value("INTERVAL")
            unit_tok = self._advance()
            unit = str(unit_tok.value).lower() if unit_tok.kind == "ident" else ""
            unit = unit[:-1] if unit.endswith("s") else unit
            if unit not in _INTERVAL_UNITS:
                raise _syntax(self.text, unit_tok.pos, "expected SECOND, MINUTE, HOUR or DAY after INTERVAL n")
            per, whole = _INTERVAL_UNITS[unit]
            if n <= 0 or whole % n:
                raise HogQLError(f"toStartOfInterval(..., INTERVAL {n} {unit.upper()}) is not supported by this "
                                 f"HogQL emulator: n must divide {whole} (use toStartOfDay for days)")
            seconds = n * per
            text = f"toStartOfInterval({col.name}, toInterval{unit.capitalize()}({n}))"
        else:
            text = f"{canonical}({col.name})"
        if self._is_punct(","):
            raise HogQLError(f"{canonical}() with a timezone argument is not supported by this HogQL emulator")
        self._expect_punct(")")
        return Bucket(canonical, col, seconds, text)

    def _key(self):
        """A GROUP BY / ORDER BY key: a bucket, count(), or a column / alias name."""
        t = self.tok
        if t.kind == "ident" and self.tokens[self.i + 1].kind == "punct" and self.tokens[self.i + 1].value == "(":
            name = t.value.lower()
            self.i += 2
            if name in _BUCKETS:
                return self._bucket(t)
            if name == "count":
                if self._is_punct("*"):
                    self.i += 1
                self._expect_punct(")")
                return Call("count")
            raise HogQLError(f"Function '{t.value}' is not supported in GROUP BY / ORDER BY by this HogQL emulator")
        return self._column()

    def _column(self) -> Column:
        t = self._advance()
        if t.kind == "ident" and t.value.lower() in KEYWORDS:
            raise _syntax(self.text, t.pos, f"unexpected keyword {t.value.upper()}")
        if t.kind not in ("ident", "qident"):
            raise _syntax(self.text, t.pos, "expected a column name")
        if not self._is_punct("."):
            return Column(t.value, t.pos)
        self.i += 1
        f = self._advance()
        if f.kind not in ("ident", "qident"):
            raise _syntax(self.text, f.pos, "expected a field name after '.'")
        if t.value not in TABLES:
            raise HogQLError(f"Property and nested field access ({t.value}.{f.value}) is not supported by this "
                             "HogQL emulator: select the whole column")
        if self._is_punct("."):
            raise HogQLError(f"Property and nested field access ({t.value}.{f.value}.…) is not supported by this "
                             "HogQL emulator: select the whole column")
        return Column(f.value, f.pos, t.value)

    def _order_item(self):
        col = self._key()
        desc = False
        if self._is_kw("asc"):
            self.i += 1
        elif self._is_kw("desc"):
            self.i += 1
            desc = True
        return col, desc

    def _expr(self):
        items = [self._and()]
        while self._is_kw("or"):
            self.i += 1
            items.append(self._and())
        return items[0] if len(items) == 1 else BoolOp("OR", items)

    def _and(self):
        items = [self._not()]
        while self._is_kw("and"):
            self.i += 1
            items.append(self._not())
        return items[0] if len(items) == 1 else BoolOp("AND", items)

    def _not(self):
        if self._is_kw("not"):
            self.i += 1
            return Not(self._not())
        return self._comparison()

    def _comparison(self):
        if self._is_punct("("):
            # either a parenthesized condition or a tuple / parenthesized operand
            save = self.i
            self.i += 1
            inner = self._expr()
            if self._is_punct(","):
                self.i = save
                left = self._operand()
            else:
                self._expect_punct(")")
                if self.tok.kind == "op" or self._is_kw("in") or (self._is_kw("not") and self._is_kw("in", 1)):
                    left = inner
                else:
                    return inner
        else:
            left = self._operand()
        if self.tok.kind == "op":
            op = self._advance().value
            right = self._operand()
            return Compare({"==": "=", "<>": "!="}.get(op, op), left, right)
        negated = False
        if self._is_kw("not") and self._is_kw("in", 1):
            self.i += 1
            negated = True
        if self._is_kw("in"):
            self.i += 1
            self._expect_punct("(")
            items = [self._operand()]
            while self._is_punct(","):
                self.i += 1
                items.append(self._operand())
            self._expect_punct(")")
            return InList(left, items, negated)
        return left  # a bare operand: must be boolean (checked by the translator)

    def _operand(self):
        t = self.tok
        if self._is_punct("("):
            self.i += 1
            items = [self._operand()]
            while self._is_punct(","):
                self.i += 1
                items.append(self._operand())
            self._expect_punct(")")
            return items[0] if len(items) == 1 else TupleExpr(items)
        if t.kind == "number":
            self.i += 1
            return Literal(t.value, "float" if isinstance(t.value, float) else "int")
        if t.kind == "string":
            self.i += 1
            return Literal(t.value, "string")
        if t.kind == "ident":
            low = t.value.lower()
            if low in ("true", "false"):
                self.i += 1
                return Literal(low == "true", "bool")
            if low == "null":
                self.i += 1
                return Literal(None, "null")
            nxt = self.tokens[self.i + 1]
            if nxt.kind == "punct" and nxt.value == "(":
                return self._function()
        return self._column()

    def _function(self) -> Literal:
        t = self._advance()
        name = t.value
        self._expect_punct("(")
        args = []
        if not self._is_punct(")"):
            args.append(self._operand())
            while self._is_punct(","):
                self.i += 1
                args.append(self._operand())
        self._expect_punct(")")
        return evaluate_function(name, args)


# --------------------------------------------------------------------------------------------
# Constant functions
# --------------------------------------------------------------------------------------------


def _tz(arg) -> Any:
    if not isinstance(arg, Literal) or arg.type != "string":
        raise HogQLError("The timezone argument must be a string literal such as 'UTC'")
    if arg.value == "UTC":
        return tu.UTC
    try:
        return ZoneInfo(arg.value)
    except (ZoneInfoNotFoundError, ValueError):
        raise HogQLError(f"Unknown timezone '{arg.value}'") from None


def _in_range(dt: datetime, shown: Any) -> datetime:
    """DateTime64 covers 1900-01-01 .. 2299-12-31."""
    if not 1900 <= dt.year <= 2299:
        raise HogQLError(f"Date-time {shown!r} is outside the DateTime64 range (1900-01-01 .. 2299-12-31)")
    return dt


def _parse_dt_literal(arg, fname: str, tz=None) -> datetime:
    if isinstance(arg, Literal) and arg.type == "datetime":
        return arg.value
    if isinstance(arg, Literal) and arg.type == "int":
        try:
            return _in_range(tu.us_to_dt(arg.value * 1_000_000), arg.value)
        except (OverflowError, ValueError):
            raise HogQLError(f"{fname}(): {arg.value} is outside the DateTime64 range") from None
    if not isinstance(arg, Literal) or arg.type != "string":
        raise HogQLError(f"{fname}() expects a string literal as its first argument")
    try:
        return _in_range(tu.parse_datetime(arg.value, tz), arg.value)
    except (ValueError, OverflowError):
        raise HogQLError(f"{fname}(): cannot parse '{arg.value}' as a date-time "
                         "(expected 'YYYY-MM-DD HH:MM:SS[.ffffff]')") from None


def evaluate_function(name: str, args: list) -> Literal:
    """Constant functions allowed in WHERE: toDateTime, toDateTime64, toUUID, now()."""
    low = name.lower()
    if low == "now":
        if args:
            raise HogQLError("now() takes no arguments")
        return Literal(tu.utcnow(), "datetime")
    if low == "todatetime":
        if not 1 <= len(args) <= 2:
            raise HogQLError("toDateTime() takes 1 or 2 arguments")
        tz = _tz(args[1]) if len(args) == 2 else None
        return Literal(_parse_dt_literal(args[0], "toDateTime", tz), "datetime")
    if low == "todatetime64":
        if not 2 <= len(args) <= 3:
            raise HogQLError("toDateTime64() takes 2 or 3 arguments: (value, precision[, timezone])")
        p = args[1]
        if not isinstance(p, Literal) or p.type != "int" or not 0 <= p.value <= 9:
            raise HogQLError("toDateTime64(): precision must be an integer literal between 0 and 9")
        tz = _tz(args[2]) if len(args) == 3 else None
        dt = _parse_dt_literal(args[0], "toDateTime64", tz)
        if p.value < 6:  # DateTime64(p) keeps only p fractional digits
            step = 10 ** (6 - p.value)
            dt = dt.replace(microsecond=dt.microsecond - dt.microsecond % step)
        return Literal(dt, "datetime")
    if low == "touuid":
        if len(args) != 1 or not isinstance(args[0], Literal) or args[0].type != "string":
            raise HogQLError("toUUID() expects one string literal")
        return Literal(_uuid_value(args[0].value), "uuid")
    raise HogQLError(f"Function '{name}' is not supported in WHERE by this HogQL emulator "
                     "(supported: toDateTime, toDateTime64, toUUID, now)")


def _uuid_value(text: str) -> str:
    if not _UUID_RE.match(text):
        raise HogQLError(f"Cannot parse UUID from string '{text}'")
    return text.lower()


# --------------------------------------------------------------------------------------------
# Translator
# --------------------------------------------------------------------------------------------


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


class Translator:
    def __init__(self, select: Select, tz_offset_seconds: int = 0):
        self.s = select
        self.schema = TABLES[select.table]
        self.params: list = []
        self.tz_offset = tz_offset_seconds  # the project zone's fixed UTC offset: hour and day buckets start there

    def column(self, col: Column) -> tuple[str, str]:
        """(sql, category) of a column; unknown names are HogQL resolution errors."""
        if col.qualifier is not None and col.qualifier != self.s.table:
            raise HogQLError(f"Unable to resolve field: {col.qualifier}")
        if col.name not in self.schema:
            raise HogQLError(f"Unable to resolve field: {col.name}")
        sql = col.name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", col.name) else '"' + col.name.replace('"', '""') + '"'
        return sql, _category(self.schema[col.name])

    def literal(self, lit: Literal, target: str | None) -> str:
        """Bind a literal, coerced to the category of the column it is compared with."""
        if lit.type == "null":
            return "NULL"
        value = lit.value
        kind = lit.type
        if target == "datetime":
            if kind == "string":
                try:
                    value = _in_range(tu.parse_datetime(value), value)
                except (ValueError, OverflowError):
                    raise HogQLError(f"Cannot parse '{lit.value}' as DateTime64") from None
                kind = "datetime"
            if kind != "datetime":
                raise HogQLError(f"Cannot compare DateTime64(6, 'UTC') with a {kind} value: "
                                 "use toDateTime64('YYYY-MM-DD HH:MM:SS.ffffff', 6, 'UTC')")
        elif target == "uuid":
            if kind == "string":
                value, kind = _uuid_value(value), "uuid"
            if kind != "uuid":
                raise HogQLError(f"Cannot compare UUID with a {kind} value")
        elif target == "string":
            if kind != "string":
                raise HogQLError(f"There is no supertype for types String and {kind}: compare strings with '...' literals")
        elif target == "bool":
            if kind == "int" and value in (0, 1):
                value, kind = bool(value), "bool"
            if kind != "bool":
                raise HogQLError(f"Cannot compare Bool with a {kind} value")
        if kind == "int" and not -(2 ** 63) <= value < 2 ** 63:
            raise HogQLError(f"Integer literal {value} is out of the Int64 range")
        if kind == "datetime":
            self.params.append(tu.to_db(value))
        elif kind == "bool":
            self.params.append(1 if value else 0)
        else:
            self.params.append(value)
        return "?"

    def _side(self, node, other) -> tuple[str, str | None]:
        if isinstance(node, Column):
            return self.column(node)
        if isinstance(node, Literal):
            target = self.column(other)[1] if isinstance(other, Column) else None
            if target is None and isinstance(other, Literal) and other.type != node.type \
                    and {node.type, other.type} - {"int", "float", "null"}:
                raise HogQLError(f"Cannot compare a {node.type} value with a {other.type} value")
            return self.literal(node, target), node.type
        if isinstance(node, TupleExpr):
            raise HogQLError("Tuples can only be compared with tuples of the same length")
        raise HogQLError("Expected a column or a literal in a comparison")

    def compare(self, node: Compare) -> str:
        left, right = node.left, node.right
        if isinstance(left, TupleExpr) or isinstance(right, TupleExpr):
            if not (isinstance(left, TupleExpr) and isinstance(right, TupleExpr)) or len(left.items) != len(right.items):
                raise HogQLError("Tuples can only be compared with tuples of the same length")
            lparts, rparts = [], []
            for a, b in zip(left.items, right.items):
                l_sql, r_sql = self._pair(a, b)
                lparts.append(l_sql)
                rparts.append(r_sql)
            return f"({', '.join(lparts)}) {node.op} ({', '.join(rparts)})"
        l_sql, r_sql = self._pair(left, right)
        return f"{l_sql} {node.op} {r_sql}"

    def _pair(self, a, b) -> tuple[str, str]:
        if isinstance(a, (BoolOp, Not, Compare, InList)) or isinstance(b, (BoolOp, Not, Compare, InList)):
            raise HogQLError("Comparisons cannot be nested inside comparisons")
        if isinstance(a, Column) and isinstance(b, Column):
            (sa, ca), (sb, cb) = self.column(a), self.column(b)
            if ca != cb:
                raise HogQLError(f"Cannot compare column {a.name} ({self.schema[a.name]}) with column {b.name} ({self.schema[b.name]})")
            return sa, sb
        sa, _ = self._side(a, b)
        sb, _ = self._side(b, a)
        return sa, sb

    def condition(self, node) -> str:
        if isinstance(node, BoolOp):
            return "(" + f" {node.op} ".join(self.condition(x) for x in node.items) + ")"
        if isinstance(node, Not):
            return f"(NOT {self.condition(node.expr)})"
        if isinstance(node, Compare):
            return "(" + self.compare(node) + ")"
        if isinstance(node, InList):
            if not isinstance(node.left, Column):
                raise HogQLError("IN needs a column on its left side")
            col_sql, cat = self.column(node.left)
            parts = []
            for item in node.items:
                if not isinstance(item, Literal):
                    raise HogQLError("IN (...) accepts literals only")
                parts.append(self.literal(item, cat))
            return f"({col_sql} {'NOT IN' if node.negated else 'IN'} ({', '.join(parts)}))"
        if isinstance(node, Column):
            sql, cat = self.column(node)
            if cat != "bool":
                raise HogQLError(f"WHERE needs a condition, but column {node.name} is {self.schema[node.name]}")
            return f"({sql} <> 0)"
        if isinstance(node, Literal) and node.type == "bool":
            return "1" if node.value else "0"
        raise HogQLError("WHERE needs a condition (a comparison), not a bare value")

    # -- buckets, aliases and keys --------------------------------------------------------

    def bucket_key(self, b: Bucket) -> str:
        """SQLite text ``YYYY-MM-DD HH:MM:SS`` of the bucket start (sortable, groupable)."""
        sql, cat = self.column(b.column)
        if cat != "datetime":
            raise HogQLError(f"Illegal type {self.schema[b.column.name]} of argument of function {b.func}: "
                             "a DateTime is expected")
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

    def _resolve_key(self, key, aliases: dict):
        """A GROUP BY / ORDER BY key → the select item it names (aliases first), or itself."""
        if isinstance(key, Column) and key.qualifier is None and key.name in aliases:
            return aliases[key.name]
        return key

    def compile(self, team_id: int, text: str, visibility: tuple[str, list] = ("", [])) -> Compiled:
        s = self.s
        select_sql, columns, types, bool_cols = [], [], [], []
        items, names = [], []
        for item, alias in zip(s.items, s.aliases or [None] * len(s.items)):
            if item == "*":
                items.extend(Column(name, 0) for name in self.schema)
                names.extend([None] * len(self.schema))
            else:
                items.append(item)
                names.append(alias)
        aliases = {a: it for it, a in zip(items, names) if a is not None}
        has_agg = any(isinstance(x, Call) and x.name == "count" for x in items)
        group_keys = None
        if s.group_by is not None:
            group_keys = []
            for key in s.group_by:
                target = self._resolve_key(key, aliases)
                if isinstance(target, Call):
                    raise HogQLError("Aggregate function count() is found in GROUP BY in query")
                if not isinstance(target, Bucket):
                    raise HogQLError("GROUP BY is supported only on time buckets (toStartOfMinute/Hour/Day/Interval "
                                     "of a DateTime column, or their aliases) by this HogQL emulator")
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
                    raise HogQLError(f"Column `{alias or item.text}` is not under an aggregate function and not in "
                                     "GROUP BY keys")
                key = self.bucket_key(item)
                name = alias or item.text
                select_sql.append(f"substr({key}, 1, 10) || 'T' || substr({key}, 12) || 'Z'")
                columns.append(name)
                types.append([name, "DateTime('UTC')"])
            else:
                sql, cat = self.column(item)
                if aggregate:
                    raise HogQLError(f"Column `{item.name}` is not under an aggregate function and not in GROUP BY keys")
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
            target = self._resolve_key(key, aliases)
            if isinstance(target, Call) and target.name == "count":
                if not aggregate:
                    raise HogQLError("count() in ORDER BY needs an aggregate query")
                sql = "count(*)"
            elif isinstance(target, Call):
                raise HogQLError("ORDER BY now() is not supported by this HogQL emulator")
            elif isinstance(target, Bucket):
                if aggregate and not any(target.same(k) for k in group_keys or []):
                    raise HogQLError(f"Column `{target.text}` is not under an aggregate function and not in GROUP BY keys")
                sql = self.bucket_key(target)
            else:
                sql, _ = self.column(target)
                if aggregate:
                    raise HogQLError(f"Column `{target.name}` is not under an aggregate function and not in GROUP BY keys")
            order_parts.append(f"{sql} {'DESC' if desc else 'ASC'}")
        explicit = s.limit is not None
        limit = min(s.limit, MAX_LIMIT) if explicit else DEFAULT_LIMIT
        sql = f"SELECT {', '.join(select_sql)} FROM {s.table} WHERE team_id = ?"
        params = select_params + [team_id]
        ts_bounds = self.timestamp_bounds()
        if s.table == "sessions":  # a derived table over the visible events of the team
            lo, hi = self.timestamp_bounds("$start_timestamp")
            buffer = timedelta(days=SESSION_BUFFER_DAYS)
            lo = tu.to_db(tu.from_db(lo) - buffer) if lo else None
            hi = tu.to_db(tu.from_db(hi) + buffer) if hi else None
            event_filter = " AND team_id = ?" + visibility[0] + (" AND timestamp >= ?" if lo else "") + (" AND timestamp <= ?" if hi else "")
            sql = f"SELECT {', '.join(select_sql)} FROM ({sessions_sql(event_filter)}) AS sessions WHERE team_id = ?"
            params = select_params + [team_id, *visibility[1], *([lo] if lo else []), *([hi] if hi else []), team_id]
            ts_bounds = (lo, hi)
        if visibility[0] and s.table == "events":
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
        return Compiled(sql, params, columns, types, bool_cols, limit, explicit, hogql, s.table,
                        ts_bounds, self.read_columns(items, aliases))

    # -- what the query reads (for the cost model, posthog-api.md § 11.2) -------------------

    def read_columns(self, items: list, aliases: dict) -> list[str]:
        """The table columns the query reads (ClickHouse is columnar: only these are read)."""
        cols: set[str] = set()

        def add(node) -> None:
            if isinstance(node, Column):
                if node.qualifier is None and node.name in aliases:
                    add(aliases[node.name])
                elif node.name in self.schema:
                    cols.add(node.name)
            elif isinstance(node, Bucket):
                add(node.column)
            elif isinstance(node, (BoolOp,)):
                for x in node.items:
                    add(x)
            elif isinstance(node, Not):
                add(node.expr)
            elif isinstance(node, Compare):
                add(node.left)
                add(node.right)
            elif isinstance(node, InList):
                add(node.left)
            elif isinstance(node, TupleExpr):
                for x in node.items:
                    add(x)

        for it in items:
            add(it)
        add(self.s.where)
        for key, _ in self.s.order_by:
            add(key)
        for key in self.s.group_by or []:
            add(key)
        return sorted(cols)

    def timestamp_bounds(self, column: str = "timestamp") -> tuple[str | None, str | None]:
        """The tightest ``timestamp`` range [lo, hi] implied by the top-level AND of WHERE (storage text,
        both inclusive): ClickHouse's primary key prunes on it, so it is the range a query reads.
        For ``sessions``, ``column="$start_timestamp"`` gives the range pushed into the events scan."""
        lo: str | None = None
        hi: str | None = None
        if self.s.table != {"timestamp": "events"}.get(column, "sessions") or self.s.where is None:
            return lo, hi
        conj = self.s.where.items if isinstance(self.s.where, BoolOp) and self.s.where.op == "AND" else [self.s.where]
        flip = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "=": "=", "!=": "!="}
        for node in conj:
            if not isinstance(node, Compare):
                continue
            left, op, right = node.left, node.op, node.right
            if isinstance(left, TupleExpr) and isinstance(right, TupleExpr) and left.items and right.items:
                left, right = left.items[0], right.items[0]
                op = {"<": "<=", ">": ">="}.get(op, op)  # (ts, uuid) > (X, U) → ts >= X
            if isinstance(right, Column) and not isinstance(left, Column):
                left, right, op = right, left, flip[op]
            if not (isinstance(left, Column) and left.name == column and isinstance(right, Literal)):
                continue
            try:
                if right.type == "datetime":
                    value = tu.to_db(right.value)
                elif right.type == "string":
                    value = tu.to_db(tu.parse_datetime(right.value))
                else:
                    continue
            except (ValueError, OverflowError):
                continue
            lo, hi = narrow(lo, hi, op, value)
        return lo, hi


def narrow(lo: str | None, hi: str | None, op: str, value: str) -> tuple[str | None, str | None]:
    """The inclusive range [lo, hi] tightened by one `column <op> value` of a top-level AND."""
    if op in (">", ">=", "=") and (lo is None or value > lo):
        lo = value
    if op in ("<", "<=", "=") and (hi is None or value < hi):
        hi = value
    return lo, hi


def compile_query(text: str, team_id: int, values: dict[str, Any] | None = None,
                  visibility: tuple[str, list] = ("", []), tz_offset_seconds: int = 0) -> Compiled:
    """Parse and translate a HogQL query; raises HogQLError for anything PostHog would refuse.

    ``visibility`` is an extra SQL predicate (and its parameters) ANDed into queries over ``events``:
    the rows not yet visible (posthog-api.md § 11.1) are left out. ``tz_offset_seconds``: the
    project's zone, where hour and day buckets start (the caller renders DateTimes in it)."""
    if not isinstance(text, str) or not text.strip():
        raise HogQLError("The query is empty: send a SELECT statement in query.query")
    try:
        select = Parser(text, values).parse()
        return Translator(select, tz_offset_seconds).compile(team_id, text, visibility)
    except RecursionError:
        raise HogQLError("The query nests too deeply") from None


def key_bounds(text: str, values: dict[str, Any] | None, column: str) -> tuple[str | None, str | None]:
    """The [lo, hi] range of ``column`` implied by the top-level AND of the query's WHERE (inclusive,
    literals as stored): for ``persons``, PostHog pushes a WHERE on ``id`` into ``raw_persons``
    (WhereClauseExtractor in posthog/hogql/database/schema/persons.py), whose ClickHouse table is
    ORDER BY (team_id, id), so it is the range a keyset page reads."""
    select = Parser(text, values).parse()
    where = select.where
    lo: str | None = None
    hi: str | None = None
    if where is None:
        return lo, hi
    conj = where.items if isinstance(where, BoolOp) and where.op == "AND" else [where]
    flip = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "=": "=", "!=": "!="}
    for node in conj:
        if not isinstance(node, Compare):
            continue
        left, op, right = node.left, node.op, node.right
        if isinstance(right, Column) and not isinstance(left, Column):
            left, right, op = right, left, flip[op]
        if not (isinstance(left, Column) and left.name == column and isinstance(right, Literal)) or right.value is None:
            continue
        value = str(right.value).lower() if right.type in ("uuid", "string") else None
        if value is None:
            continue
        lo, hi = narrow(lo, hi, op, value)
    return lo, hi
