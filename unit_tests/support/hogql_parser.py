"""PostHog's own HogQL parser (`hogql-parser` on PyPI, the C++ parser PostHog runs), loaded once.

On import the extension looks up exception classes in `posthog.hogql.errors` (PostHog's monorepo
module); the JSON functions used here never raise them, so a stub module is enough. The stub is
added only where no real `posthog.hogql.errors` exists, and never replaces a `posthog` package that
is installed (PostHog's Python SDK is also called `posthog`). Used by the unit tests (every query
the connector builds must parse) and by the emulator (every query it is sent is parsed first).
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import types
from typing import Any, Dict, Optional

ERRORS_MODULE = "posthog.hogql.errors"
EXCEPTIONS = ("BaseHogQLError", "ExposedHogQLError", "InternalHogQLError", "SyntaxError", "ResolutionError", "QueryError", "NotImplementedError", "ParsingError", "ImpossibleASTError")


def _stub_errors_module() -> None:
    if ERRORS_MODULE in sys.modules:
        return
    try:
        if importlib.util.find_spec(ERRORS_MODULE) is not None:
            return  # PostHog's own code is importable: use it
    except ModuleNotFoundError:
        pass

    class BaseHogQLError(Exception):
        def __init__(self, message: str = "", *, start: Any = None, end: Any = None, node: Any = None, **kwargs: Any) -> None:
            super().__init__(message)
            self.message, self.start, self.end = message, start, end

    errors = types.ModuleType(ERRORS_MODULE)
    errors.BaseHogQLError = BaseHogQLError  # type: ignore[attr-defined]
    for name in EXCEPTIONS[1:]:
        setattr(errors, name, type(name, (BaseHogQLError,), {}))
    for name in ("posthog", "posthog.hogql"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules[ERRORS_MODULE] = errors


_stub_errors_module()
import hogql_parser  # noqa: E402  (after the stub it needs)


def parse_select(text: str) -> Dict[str, Any]:
    """PostHog's AST of one SELECT as JSON, or `{"error": true, "type", "message", "start", "end"}`."""
    return json.loads(hogql_parser.parse_select_json(text))


# PostHog's parser takes ~50 ms for an events page query (ANTLR), and the fakes see thousands of
# queries that differ only in their literals: each shape is parsed once, the first time it is seen,
# with its real literals. A literal that breaks the quoting changes the shape, so it is parsed too.
LITERALS = re.compile(r"'(?:[^'\\]|\\.)*'|\b\d+(?:\.\d+)?\b")
_SHAPES: Dict[str, Optional[str]] = {}


def parse_error(text: str) -> Optional[str]:
    """PostHog's parse error for `text`, or None when it parses as one SELECT."""
    shape = LITERALS.sub("?", text)
    if shape not in _SHAPES:
        tree = parse_select(text)
        if tree.get("error"):
            _SHAPES[shape] = f"{tree.get('type')}: {tree.get('message')}"
        else:
            _SHAPES[shape] = None if tree.get("node") in ("SelectQuery", "SelectSetQuery") else f"not a SELECT ({tree.get('node')})"
    return _SHAPES[shape]
