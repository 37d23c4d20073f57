"""Personal API key scopes (docs/posthog-api.md § 1.3, § 12).

`GET /api/personal_api_keys/@current/` describes the calling key (it needs no scope): its
`scopes`, and the `scoped_teams` / `scoped_organizations` it is limited to (empty: no limit).
A `:write` scope implies `:read`, and `*` grants everything; a legacy key with no scopes is
reported as `["*"]`.
"""

from __future__ import annotations

from typing import Any, List, Mapping, Optional

CURRENT_KEY_PATH = "/api/personal_api_keys/@current/"


def granted_scopes(body: Any) -> Optional[List[str]]:
    """The key's scopes from the @current body, or None when the body does not describe them."""
    scopes = body.get("scopes") if isinstance(body, Mapping) else None
    if scopes is None:
        return None
    if not isinstance(scopes, list) or not all(isinstance(scope, str) for scope in scopes):
        return None
    return scopes or ["*"]


def covers(granted: List[str], needed: str) -> bool:
    if "*" in granted or needed in granted:
        return True
    resource, _, action = needed.partition(":")
    return action == "read" and f"{resource}:write" in granted
