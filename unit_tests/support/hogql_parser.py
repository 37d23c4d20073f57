"""Whether PostHog's own parser accepts a query: for the unit tests' fakes of `/query/` and
unit_tests/test_hogql_parses.py. The parser itself is loaded by `posthog_parser.py` (one home, with
the emulator), which also parses each query shape once (PostHog's parser takes 10-30 ms a query)."""

from __future__ import annotations

from typing import Any, Dict, Optional

from unit_tests.support.posthog_parser import ParseFailure
from unit_tests.support.posthog_parser import parse_select as _parse_select


def parse_select(text: str) -> Dict[str, Any]:
    """PostHog's AST of one SELECT as JSON, or `{"error": true, "type", "message"}`."""
    try:
        return _parse_select(text)
    except ParseFailure as failure:
        return {"error": True, "type": failure.type, "message": failure.message}


def parse_error(text: str) -> Optional[str]:
    """PostHog's parse error for `text`, or None when it parses as one SELECT."""
    tree = parse_select(text)
    if tree.get("error"):
        return f"{tree.get('type')}: {tree.get('message')}"
    return None if tree.get("node") in ("SelectQuery", "SelectSetQuery") else f"not a SELECT ({tree.get('node')})"
