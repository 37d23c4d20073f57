"""PostHog's own HogQL parser (PyPI ``hogql-parser``, the C++/ANTLR parser PostHog runs), loaded in
one place for its two users: the emulator (`tools/emulator/hogql.py` evaluates every query from the
AST this returns) and the unit tests (every query the connector builds must parse:
`unit_tests/support/hogql_parser.py`). It lives here because the unit tests may not load the emulator.

``hogql_parser`` imports ``posthog.hogql.errors`` when it loads (it raises those exception classes
from ``parse_select``). This module is the one place that provides it: the real module when a
PostHog checkout is importable, otherwise a stub of the classes in ``posthog/hogql/errors.py``
(``BaseHogQLError`` → ``ExposedHogQLError`` → ``SyntaxError`` / ``QueryError``, and the internal
ones). A ``posthog`` package that is importable (PostHog's Python SDK has that name too) is left
as it is: only the missing ``posthog.hogql`` modules are added to ``sys.modules``.

The emulator uses only ``parse_select_json``: the AST as JSON, or on failure a JSON object
``{"error": true, "type": "SyntaxError" | "NotImplementedError" | ..., "message", "start", "end"}``.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import re
import sys
import types
from dataclasses import dataclass
from typing import Any, Optional

import orjson


class _BaseHogQLError(Exception):
    """posthog.hogql.errors.BaseHogQLError: a message and an optional [start, end) position."""

    def __init__(self, message: str, *, start: Optional[int] = None, end: Optional[int] = None,
                 node: Any = None, fix: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.start = start
        self.end = end
        self.fix = fix


def _errors_stub() -> types.ModuleType:
    module = types.ModuleType("posthog.hogql.errors")
    module.__doc__ = "Stub of PostHog's posthog/hogql/errors.py for the hogql_parser extension."
    base = type("BaseHogQLError", (_BaseHogQLError,), {"__module__": module.__name__})
    exposed = type("ExposedHogQLError", (base,), {"__module__": module.__name__, "code_name": "hogql_error"})
    internal = type("InternalHogQLError", (base,), {"__module__": module.__name__})
    classes = {
        "BaseHogQLError": base, "ExposedHogQLError": exposed, "InternalHogQLError": internal,
        "SyntaxError": type("SyntaxError", (exposed,), {"__module__": module.__name__, "code_name": "hogql_syntax_error"}),
        "QueryError": type("QueryError", (exposed,), {"__module__": module.__name__, "code_name": "hogql_query_error"}),
        **{name: type(name, (internal,), {"__module__": module.__name__})
           for name in ("NotImplementedError", "ParsingError", "ImpossibleASTError", "ResolutionError")},
    }
    for name, cls in classes.items():
        setattr(module, name, cls)
    return module


def _provide_errors_module() -> None:
    """Make ``import posthog.hogql.errors`` work without replacing anything importable."""
    try:
        importlib.import_module("posthog.hogql.errors")
        return
    except ImportError:
        pass
    try:
        parent = importlib.import_module("posthog")
    except ImportError:
        parent = types.ModuleType("posthog")
        parent.__path__ = []  # a namespace-like package holding only the stub below
        sys.modules["posthog"] = parent
    hogql = sys.modules.get("posthog.hogql")
    if hogql is None:
        hogql = types.ModuleType("posthog.hogql")
        hogql.__path__ = []
        sys.modules["posthog.hogql"] = hogql
    errors = _errors_stub()
    sys.modules["posthog.hogql.errors"] = errors
    hogql.errors = errors


_provide_errors_module()
import hogql_parser  # noqa: E402  (needs posthog.hogql.errors, provided above)

PARSER = f"hogql-parser {importlib.metadata.version('hogql-parser')}"  # what the request log names


@dataclass
class ParseFailure(Exception):
    """What ``parse_select_json`` answered instead of an AST: the exception class PostHog's parser
    raises (``SyntaxError`` for input that is not HogQL; ``NotImplementedError`` / ``ParsingError``
    for grammar PostHog does not translate) and its message."""

    type: str
    message: str
    start: Optional[int] = None
    end: Optional[int] = None

    def __str__(self) -> str:
        return self.message


def parse_select(text: str) -> dict:
    """The JSON AST of one SELECT statement (``SelectQuery`` or ``SelectSetQuery``), as PostHog's
    parser builds it; raises :class:`ParseFailure` where PostHog's parser raises.

    PostHog's parser needs 10-30 ms for a keyset page query (ANTLR prediction over nested calls and
    parentheses), and a sync sends the same query with other literals over and over. So the text
    is parsed once per *shape* (its string literals replaced by markers) and the literals, unquoted
    by the parser's own ``parse_string_literal_text``, are put back into that AST. Anything the shape
    path cannot vouch for (comments, template strings, a marker that is not a plain Constant, a shape
    that does not parse) is parsed as written, so errors always quote the text itself. Node positions
    (``start``/``end``) are the shape's; nothing here uses them."""
    shaped = _shape(text)
    if shaped is not None:
        shape, literals = shaped
        raw = _shape_ast(shape)
        if raw is not None:
            tree = orjson.loads(raw)
            try:
                values = [hogql_parser.parse_string_literal_text(literal) for literal in literals]
            except Exception:  # the parser's own SyntaxError for a literal it cannot unquote
                values = None
            if values is not None and _restore(tree, values):
                return tree
    return _parse_as_written(text)


def _parse_as_written(text: str) -> dict:
    result = orjson.loads(hogql_parser.parse_select_json(text))
    if isinstance(result, dict) and result.get("error"):
        start, end = result.get("start") or {}, result.get("end") or {}
        raise ParseFailure(str(result.get("type")), str(result.get("message")), start.get("offset"), end.get("offset"))
    return result


_MARK = "__emu_literal_"
_MARK_RE = re.compile(rf"^{_MARK}(\d+)__$")


def _shape(text: str) -> tuple[str, list[str]] | None:
    """``text`` with its i-th string literal replaced by ``'__emu_literal_i__'``, and the literals as
    written; None where the text holds anything but plain literals, quoted identifiers and code."""
    out: list[str] = []
    literals: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "'":
            if i and (text[i - 1].isalnum() or text[i - 1] == "_"):
                return None  # f'...' template strings and other prefixed literals
            j = i + 1
            while j < n and text[j] != "'":
                j += 2 if text[j] == "\\" else 1
            while j + 1 < n and text[j] == "'" and text[j + 1] == "'":  # a doubled quote inside the literal
                j += 2
                while j < n and text[j] != "'":
                    j += 2 if text[j] == "\\" else 1
            if j >= n:
                return None  # unterminated: the parser reports it on the text as written
            out.append(f"'{_MARK}{len(literals)}__'")
            literals.append(text[i:j + 1])
            i = j + 1
        elif c in "`\"":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            if j >= n:
                return None
            out.append(text[i:j + 1])
            i = j + 1
        elif text.startswith(("--", "/*", "#"), i) or text.startswith(_MARK, i):
            return None
        else:
            out.append(c)
            i += 1
    return "".join(out), literals


@functools.lru_cache(maxsize=2048)
def _shape_ast(shape: str) -> bytes | None:
    raw = hogql_parser.parse_select_json(shape)
    result = orjson.loads(raw)
    return None if isinstance(result, dict) and result.get("error") else raw.encode()


def _restore(tree: Any, values: list[str]) -> bool:
    """Put each literal back where its marker is: True when every marker is exactly one Constant."""
    seen = [0] * len(values)
    ok = True

    def walk(node: Any) -> None:
        nonlocal ok
        if isinstance(node, list):
            for x in node:
                walk(x)
        elif isinstance(node, dict):
            value = node.get("value")
            if node.get("node") == "Constant" and isinstance(value, str) and (m := _MARK_RE.match(value)):
                index = int(m.group(1))
                if index < len(values):
                    seen[index] += 1
                    node["value"] = values[index]
                    return
            for key, child in node.items():
                if isinstance(child, str) and _MARK in child:
                    ok = False
                walk(child)
        elif isinstance(node, str) and _MARK in node:
            ok = False

    walk(tree)
    return ok and all(count == 1 for count in seen)
