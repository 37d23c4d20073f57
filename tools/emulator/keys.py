"""Personal API keys known to the emulator and the PostHog permission rules they follow.

PostHog facts emulated here (posthog-api.md § 1.3, § 1.4):
- a personal API key (``phx_...``) is sent as ``Authorization: Bearer <key>``, or as the
  ``personal_api_key`` query parameter / JSON body field (``posthog/auth.py``);
- keys carry scopes (``person:read``, ``query:read``, ...); ``*`` means everything and a
  ``:write`` scope implies ``:read`` (``posthog/scopes.py``, ``posthog/permissions.py``);
- a key can be limited to some projects (``scoped_teams``); such a key only works on
  project-based views.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The project that holds all the data (events, persons, ...). Project 3 is a small second project.
PROJECT_ID = 2
SECOND_PROJECT_ID = 3
#: Two more projects of the same organization, with no generated data (tests add events to them):
#: one in a time zone outside UTC, with a fixed offset of +05:30 (HogQL's DateTimes and hour buckets
#: are in the project's zone, posthog-api.md § 15), and one that stays empty.
KOLKATA_PROJECT_ID = 4
EMPTY_PROJECT_ID = 5
ORGANIZATION_ID = "0190f3bf-5a4e-7000-8a1b-4c2d3e4f5a6b"

#: Every read scope PostHog knows for the resources this connector reads.
READ_SCOPES = (
    "action:read",
    "activity_log:read",
    "annotation:read",
    "batch_export:read",
    "cohort:read",
    "dashboard:read",
    "event_definition:read",
    "experiment:read",
    "feature_flag:read",
    "group:read",
    "insight:read",
    "person:read",
    "project:read",
    "property_definition:read",
    "query:read",
    "session_recording:read",
    "survey:read",
)


@dataclass(frozen=True)
class ApiKey:
    """One personal API key: its name in :data:`KEYS`, its secret value, scopes and project scoping."""

    name: str
    value: str
    scopes: tuple[str, ...]
    scoped_teams: tuple[int, ...] | None = None  # None: every project of the user

    def has_scope(self, scope: str) -> bool:
        """APIScopePermission: ``*`` grants all; ``x:write`` implies ``x:read``."""
        if "*" in self.scopes or scope in self.scopes:
            return True
        if scope.endswith(":read"):
            return scope[: -len(":read")] + ":write" in self.scopes
        return False

    def can_access_project(self, project_id: int) -> bool:
        return self.scoped_teams is None or project_id in self.scoped_teams


_ALL_KEYS = (
    ApiKey("all_access", "phx_emu_all_access_9f8e7d6c5b4a39281706f5e4d3c2b1a0", ("*",)),
    ApiKey("project_scoped", "phx_emu_project_scoped_1a2b3c4d5e6f708192a3b4c5d6e7f8", ("*",), (PROJECT_ID,)),
    ApiKey("no_query", "phx_emu_no_query_0f1e2d3c4b5a69788796a5b4c3d2e1f0a9", tuple(s for s in READ_SCOPES if s != "query:read")),
    ApiKey("no_persons", "phx_emu_no_persons_5e4d3c2b1a0f9e8d7c6b5a4938271605", tuple(s for s in READ_SCOPES if s != "person:read")),
    ApiKey("no_recordings", "phx_emu_no_recordings_3b2a19f8e7d6c5b4a3928170f6e5d4c3", tuple(s for s in READ_SCOPES if s != "session_recording:read")),
    ApiKey("other_project", "phx_emu_other_project_7c6b5a49382716059f8e7d6c5b4a3921", ("*",), (999,)),
    # File-download exports (exports.py): batch_export:write creates and cancels, batch_export:read polls and downloads.
    ApiKey("no_batch_exports", "phx_emu_no_batch_exports_8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a",
           tuple(s for s in READ_SCOPES if s != "batch_export:read")),
    ApiKey("batch_exports_read", "phx_emu_batch_exports_read_2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b", ("batch_export:read",)),
    ApiKey("no_activity_log", "phx_emu_no_activity_log_5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b",
           tuple(s for s in READ_SCOPES if s != "activity_log:read")),
)

#: name -> secret key string (what tests and the connector config use).
KEYS: dict[str, str] = {k.name: k.value for k in _ALL_KEYS}

#: secret key string -> ApiKey (what the server authenticates against).
KEYS_BY_VALUE: dict[str, ApiKey] = {k.value: k for k in _ALL_KEYS}

#: Scope each resource requires (posthog-api.md § 1.3; the events list and /query/ need query:read).
RESOURCE_SCOPES: dict[str, str] = {
    "projects": "project:read",
    "organization_projects": "project:read",
    "persons": "person:read",
    "events": "query:read",
    "query": "query:read",
    "cohorts": "cohort:read",
    "feature_flags": "feature_flag:read",
    "insights": "insight:read",
    "annotations": "annotation:read",
    "actions": "action:read",
    "session_recordings": "session_recording:read",
    "event_definitions": "event_definition:read",
    "property_definitions": "property_definition:read",
    "groups_types": "group:read",  # posthog-api.md § 12.3
    "groups": "group:read",
    "dashboards": "dashboard:read",
    "experiments": "experiment:read",
    "surveys": "survey:read",
    "file_download_batch_exports": "batch_export:read",  # create and cancel: batch_export:write (exports.py)
    "activity_log": "activity_log:read",  # ActivityLogViewSet.scope_object (posthog/api/advanced_activity_logs/viewset.py)
}

#: Scopes of the nested views, each needed (APIScopePermission names the first one missing):
#: CohortViewSet.persons has ``required_scopes=["cohort:read", "person:read"]`` (posthog/api/cohort.py).
SUBRESOURCE_SCOPES: dict[tuple[str, str], tuple[str, ...]] = {
    ("cohorts", "persons"): ("cohort:read", "person:read"),
}
