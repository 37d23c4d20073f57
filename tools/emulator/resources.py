"""In-memory CRUD resources of the emulated PostHog organization (deterministic from the seed).

Each resource has every field of the examples in posthog-api.md § 3 (3.1 projects, 3.4 cohorts,
3.5 feature_flags, 3.6 insights, 3.7 annotations, 3.8 actions, 3.9 session_recordings,
3.10 event_definitions, 3.11 property_definitions) and of § 14 (groups_types, groups, dashboards,
experiments, surveys: their list serializers' fields). Project 2 holds enough rows that every
paginated resource needs more than one page at its default limit; project 3 holds a handful.
Deleted rows exist but are never listed (PostHog excludes them).
"""

from __future__ import annotations

import random
import string
import threading
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from . import timeutil as tu
from .keys import EMPTY_PROJECT_ID, KOLKATA_PROJECT_ID, ORGANIZATION_ID, PROJECT_ID, SECOND_PROJECT_ID

PROJECTS = (PROJECT_ID, SECOND_PROJECT_ID, KOLKATA_PROJECT_ID, EMPTY_PROJECT_ID)
TIMEZONES = {KOLKATA_PROJECT_ID: "Asia/Kolkata"}  # the others: UTC

USERS = (
    {"id": 1, "uuid": "0190f3c0-1111-7000-8000-000000000001", "distinct_id": "cUzv8mQ1jane0000000000000000000001",
     "first_name": "Jane", "last_name": "Doe", "email": "jane@example.com", "is_email_verified": True,
     "hedgehog_config": None, "role_at_organization": "engineering"},
    {"id": 2, "uuid": "0190f3c0-2222-7000-8000-000000000002", "distinct_id": "cUzv8mQ1omar0000000000000000000002",
     "first_name": "Omar", "last_name": "Haddad", "email": "omar@example.com", "is_email_verified": True,
     "hedgehog_config": None, "role_at_organization": "product"},
    {"id": 3, "uuid": "0190f3c0-3333-7000-8000-000000000003", "distinct_id": "cUzv8mQ1mei00000000000000000000003",
     "first_name": "Mei", "last_name": "Chen", "email": "mei@example.com", "is_email_verified": False,
     "hedgehog_config": None, "role_at_organization": "data"},
)

# Sizes per project: (visible rows in project 2, deleted rows in project 2, rows in project 3)
SIZES = {
    "cohorts": (250, 4, 5),
    "feature_flags": (230, 3, 5),
    "insights": (240, 5, 5),
    "annotations": (1100, 5, 5),
    "actions": (60, 2, 4),
    "event_definitions": (150, 0, 6),
    # § 14: hidden rows are deleted or unlisted dashboards, deleted experiments, product-tour surveys
    "dashboards": (30, 4, 4),
    "experiments": (25, 3, 3),
    "surveys": (15, 2, 3),
}
#: § 14.1/14.2: group types per project and how many groups each holds (project 2 needs pages of 100).
GROUP_TYPES = {PROJECT_ID: (("company", "companies", 180), ("project", "projects", 130), ("team", "teams", 60)),
               SECOND_PROJECT_ID: (("organization", "organizations", 4),)}
GROUPS_PAGE_SIZE = 100  # fixed by PostHog (list_groups), no `limit` parameter
PROPERTY_DEFINITION_SIZES = {"event": (160, 3), "person": (120, 3), "session": (110, 3), "group": (105, 3)}
RECORDINGS_RECENT, RECORDINGS_ONGOING, RECORDINGS_OLD, RECORDINGS_P3 = 90, 15, 210, 4
#: ActivityLog ``scope`` of each kind the activity log describes (posthog/models/activity_logging/activity_log.py).
ACTIVITY_SCOPES = {"feature_flags": "FeatureFlag", "insights": "Insight", "experiments": "Experiment",
                   "cohorts": "Cohort", "dashboards": "Dashboard"}
ACTIVITY_PAGE = 100  # ActivityLogPagination's page size (posthog/api/advanced_activity_logs/viewset.py)


def activity_order(entry: "Entry") -> tuple:
    """The ascending key of ActivityLogPagination's ordering (``created_at``, ``id``); its default is the reverse."""
    return entry.extra["created"], entry.item["id"]

_WORDS = ("signup", "checkout", "billing", "pricing", "onboarding", "dashboard", "export", "search", "invite",
          "settings", "mobile", "beta", "trial", "churn", "retention", "activation", "referral", "upgrade",
          "feedback", "webhook", "insights", "cohort", "funnel", "session", "survey", "experiment")


@dataclass
class Entry:
    """One stored row: its project, its public JSON item, whether lists hide it, and sort/filter keys."""

    team_id: int
    item: dict
    hidden: bool = False
    extra: dict = field(default_factory=dict)


def _uuid(rng: random.Random, when: datetime) -> str:
    ms = tu.dt_to_us(when) // 1000
    r = rng.getrandbits(74)
    ra, rb = r >> 62, r & ((1 << 62) - 1)
    return "%08x-%04x-7%03x-%04x-%012x" % (ms >> 16, ms & 0xFFFF, ra, 0x8000 | (rb >> 48), rb & 0xFFFFFFFFFFFF)


def _user(rng: random.Random) -> dict:
    return dict(USERS[rng.randrange(len(USERS))])


class Resources:
    """All non-event, non-person resources, keyed by kind; thread-safe for mutations."""

    def __init__(self, seed: int, base_time: datetime, span_days: float, persons: dict[int, list[dict]]):
        self.seed = seed
        self.base = base_time
        self.span_days = span_days
        self.persons = persons
        self.lock = threading.RLock()
        self.rows: dict[str, list[Entry]] = {}
        self._ids: dict[str, int] = {}
        self._extra_rngs: dict[str, random.Random] = {}
        self._last_change: dict[str, datetime] = {}  # the change time of the row built before (ties)
        self.projects = {pid: self._project(pid) for pid in PROJECTS}
        for kind, builder in (("cohorts", self._cohort), ("feature_flags", self._feature_flag),
                              ("insights", self._insight), ("annotations", self._annotation),
                              ("actions", self._action), ("event_definitions", self._event_definition)):
            self.rows[kind] = self._build(kind, builder)
        self.rows["property_definitions"] = self._property_definitions()
        self.rows["session_recordings"] = self._recordings()
        # § 14 resources: each kind draws from its own seeded RNG, so the rows above are unchanged.
        for kind, builder in (("dashboards", self._dashboard), ("experiments", self._experiment),
                              ("surveys", self._survey)):
            self.rows[kind] = self._build(kind, builder)
        self.rows["group_types"], self.rows["groups"] = self._groups()
        self.rows["activity_log"] = self._activity_log()  # last: it describes the rows above

    # -- generic --------------------------------------------------------------------------

    def _extra(self, kind: str) -> random.Random:
        """The RNG of the fields added after a kind's first version: the older fields keep their values."""
        if kind not in self._extra_rngs:
            self._extra_rngs[kind] = random.Random(f"{self.seed}/{kind}/fields-2")
        return self._extra_rngs[kind]

    def _next_id(self, kind: str) -> int:
        self._ids[kind] = self._ids.get(kind, 0) + 1
        return self._ids[kind]

    def _created(self, rng: random.Random, prev: list[datetime]) -> datetime:
        """A created_at within the last ~400 days; ~5 % repeat the previous one exactly (ties)."""
        if prev and rng.random() < 0.05:
            return prev[-1]
        return self.base - timedelta(days=1 + rng.random() * 400, microseconds=rng.randrange(1_000_000))

    def _build(self, kind: str, builder) -> list[Entry]:
        visible, deleted, p3 = SIZES[kind]
        rng = random.Random(f"{self.seed}/{kind}")
        out: list[Entry] = []
        prev: list[datetime] = []
        for team, n, hidden in ((PROJECT_ID, visible, False), (PROJECT_ID, deleted, True), (SECOND_PROJECT_ID, p3, False)):
            for i in range(n):
                created = self._created(rng, prev)
                prev.append(created)
                entry = builder(rng, self._next_id(kind), team, created, hidden, len(out))
                out.append(entry)
        return out

    # -- projects (§ 3.1) -------------------------------------------------------------------

    def _project(self, pid: int) -> dict:
        names = {PROJECT_ID: "Default project", SECOND_PROJECT_ID: "Second project", KOLKATA_PROJECT_ID: "Kolkata project",
                 EMPTY_PROJECT_ID: "Empty project"}
        created = self.base - timedelta(days=500 - 40 * (pid - PROJECT_ID))
        return {
            "id": pid, "uuid": f"0190f3c1-{pid:04x}-7000-8000-00000000000{pid}", "organization": ORGANIZATION_ID,
            "api_token": f"phc_emu{pid}{names[pid].replace(' ', '')[:14].ljust(14, '0')}token0000000000000000",
            "name": names[pid], "completed_snippet_onboarding": True,
            "has_completed_onboarding_for": {"product_analytics": True, "session_replay": pid == PROJECT_ID},
            "ingested_event": pid == PROJECT_ID, "is_demo": False, "timezone": TIMEZONES.get(pid, "UTC"), "access_control": False,
            "_detail": self._project_detail_fields(pid, created),
        }

    @staticmethod
    def _project_detail_fields(pid: int, created: datetime) -> dict:
        """The fields ProjectBackwardCompatSerializer (posthog/api/project.py) sends beyond the list's
        ProjectBackwardCompatBasicSerializer: the Team-compatible settings, PostHog's defaults for a
        project that changed few of them (nullable settings null, as PostHog sends them); the secret
        tokens are null (this key's user is no admin), ``group_types`` is filled in at read time."""
        main = pid == PROJECT_ID
        return {
            "product_description": None, "created_at": tu.iso_z(created), "effective_membership_level": 8,
            "has_group_types": False, "group_types": [], "live_events_token": f"phe_emu{pid}livetoken",
            "updated_at": tu.iso_z(created + timedelta(days=30)), "app_urls": ["https://app.example.com"],
            "anonymize_ips": False,
            "test_account_filters": [{"key": "email", "type": "person", "value": "@example.com", "operator": "not_icontains"}],
            "test_account_filters_default_checked": False, "path_cleaning_filters": [], "data_attributes": ["data-attr"],
            "person_display_name_properties": ["email", "name"], "correlation_config": {},
            "autocapture_opt_out": False, "autocapture_exceptions_opt_in": None, "autocapture_web_vitals_opt_in": None,
            "autocapture_web_vitals_allowed_metrics": None, "autocapture_exceptions_errors_to_ignore": None,
            "capture_console_log_opt_in": True, "capture_performance_opt_in": True, "session_recording_opt_in": main,
            "session_recording_sample_rate": "1.00" if main else None,
            "session_recording_minimum_duration_milliseconds": None, "session_recording_linked_flag": None,
            "session_recording_network_payload_capture_config": None, "session_recording_masking_config": None,
            "session_recording_url_trigger_config": [], "session_recording_url_blocklist_config": [],
            "session_recording_event_trigger_config": [], "session_recording_trigger_match_type_config": None,
            "session_recording_trigger_groups": None, "session_recording_retention_period": "30d",
            "session_replay_config": {"record_canvas": False} if main else None, "survey_config": None,
            "week_start_day": None, "primary_dashboard": 5 if main else None, "live_events_columns": None,
            "recording_domains": [], "person_on_events_querying_enabled": True, "inject_web_apps": False,
            "extra_settings": None, "modifiers": None,
            "default_modifiers": {"personsOnEventsMode": "person_id_override_properties_on_events",
                                  "sessionTableVersion": "auto"},
            "surveys_opt_in": None, "heatmaps_opt_in": None, "product_intents": [], "flags_persistence_default": False,
            "secret_api_token": None, "secret_api_token_backup": None, "receive_org_level_activity_logs": False,
            "business_model": None, "conversations_enabled": None, "conversations_settings": None, "logs_settings": None,
            "proactive_tasks_enabled": None, "available_setup_task_ids": ["ingest_first_event", "create_first_insight"],
            "is_pending_deletion": False, "project_id": pid, "user_access_level": "admin",
            "managed_viewsets": {"revenue_analytics": False},
            "revenue_analytics_config": {"base_currency": "USD", "events": [], "goals": [], "filter_test_accounts": False},
            "marketing_analytics_config": {"sources_map": {}}, "customer_analytics_config": {},
            "workflows_config": {}, "base_currency": "USD", "capture_dead_clicks": False,
            "cookieless_server_hash_mode": 0, "human_friendly_comparison_periods": False,
            "feature_flag_confirmation_enabled": False, "feature_flag_confirmation_message": None,
            "default_evaluation_contexts_enabled": False, "require_evaluation_contexts": False,
            "default_data_theme": None, "onboarding_tasks": None, "web_analytics_pre_aggregated_tables_enabled": None,
            "event_retention_months": None, "events_retention_enforced": False,
        }

    def project_list_item(self, pid: int) -> dict:
        """``GET /api/projects/``: ProjectBackwardCompatBasicSerializer (posthog/api/shared.py)."""
        return {k: v for k, v in self.projects[pid].items() if k != "_detail"}

    def project_detail(self, pid: int) -> dict:
        """``GET /api/projects/{id}/``: every field of ProjectBackwardCompatSerializer (posthog/api/project.py,
        tools/emulator/serializer_fields.json), ``group_types``/``has_group_types`` from the project's
        group type mappings."""
        p = self.projects[pid]
        group_types = [e.item for e in self.ordered("group_types", pid)]
        return {**{k: v for k, v in p.items() if k != "_detail"}, **p["_detail"],
                "group_types": group_types, "has_group_types": bool(group_types)}

    # -- cohorts (§ 3.4) ------------------------------------------------------------------

    def _cohort(self, rng, cid, team, created, hidden, n) -> Entry:
        static = rng.random() < 0.25
        last_calc = None if static else created + timedelta(days=rng.random() * 30)
        item = {
            "id": cid, "name": f"{rng.choice(_WORDS).title()} {rng.choice(('users', 'power users', 'churn risk', 'trialists', 'buyers'))} #{cid}",
            "description": rng.choice(("", "Users who did the thing in the last 30 days", "Imported from CSV")),
            "deleted": hidden,
            "groups": [] if static else [{"properties": [{"key": "plan", "type": "person", "value": ["pro"], "operator": "exact"}]}],
            "filters": {"properties": {"type": "OR", "values": [] if static else [
                {"type": "AND", "values": [{"key": "plan", "type": "person", "value": ["pro"], "operator": "exact"}]}]}},
            "query": None, "is_calculating": rng.random() < 0.05, "is_static": static,
            "cohort_type": "static" if static else None, "created_by": _user(rng),
            "created_at": tu.iso_z(created), "last_calculation": tu.iso_z(last_calc) if last_calc else None,
            "errors_calculating": 1 if rng.random() < 0.03 else 0, "count": rng.randint(0, 50_000), "experiment_set": [],
        }
        return Entry(team, item, hidden, {"created_at": created})

    # -- feature flags (§ 3.5) ------------------------------------------------------------

    def _feature_flag(self, rng, fid, team, created, hidden, n) -> Entry:
        """FeatureFlagSerializer (products/feature_flags/backend/api/feature_flag.py): ``updated_at``
        is null until a flag is first edited (then ``version`` > 1, ``last_modified_by`` set); ~5 % of
        the edited flags share their ``updated_at`` with the flag before (bulk edits: ties); deleted
        and archived flags are left out of the list unless asked (``archived``)."""
        rollout = rng.choice((0, 10, 25, 50, 100, None))
        multivariate = rng.random() < 0.2
        edited = rng.random() < 0.7
        updated = created + timedelta(days=rng.random() * 60) if edited else None
        active = rng.random() < 0.8
        x = self._extra("feature_flags")  # the fields added later draw from their own RNG
        if updated is not None:
            if updated > self.base:
                updated = self.base - timedelta(seconds=x.randrange(1, 3600), microseconds=x.randrange(1_000_000))
            prev = self._last_change.get("feature_flags")
            if prev is not None and prev > created and x.random() < 0.05:
                updated = prev  # edited in the same bulk update as the flag before
            self._last_change["feature_flags"] = updated
        called = self.base - timedelta(hours=x.random() * 48) if active and x.random() < 0.6 else None
        archived = not active and not hidden and x.random() < 0.15  # archived flags must be disabled
        item = {
            "id": fid, "name": f"{rng.choice(_WORDS).title()} rollout", "key": f"{rng.choice(_WORDS)}-{fid}",
            "filters": {"groups": [{"properties": [], "rollout_percentage": rollout}],
                        "multivariate": {"variants": [{"key": "control", "rollout_percentage": 50},
                                                      {"key": "test", "rollout_percentage": 50}]} if multivariate else None,
                        "payloads": {}},
            "deleted": hidden, "active": active, "archived": archived, "created_by": _user(rng),
            "created_at": tu.iso_z(created), "updated_at": tu.iso_z(updated) if updated else None,
            "version": max(2, rng.randint(1, 9)) if edited else 1, "last_modified_by": _user(rng) if edited else None,
            "ensure_experience_continuity": rng.random() < 0.1, "experiment_set": [], "experiment_set_metadata": [],
            "surveys": [], "features": [], "rollback_conditions": None, "performed_rollback": False,
            "can_edit": True, "tags": [], "evaluation_contexts": [],
        }
        runtime = rng.choice(("all", "server", "client"))
        item.update({
            "usage_dashboard": 30 + fid, "analytics_dashboards": [], "has_enriched_analytics": False,
            "user_access_level": "editor", "is_remote_configuration": False, "has_encrypted_payloads": False,
            "status": "archived" if archived else ("active" if active else "stale"), "evaluation_runtime": runtime,
            "bucketing_identifier": x.choice(("distinct_id", "distinct_id", "device_id", None))
            if not item["ensure_experience_continuity"] else "distinct_id",
            "last_called_at": tu.iso_z(called) if called else None, "is_used_in_replay_settings": False,
        })
        return Entry(team, item, hidden, {"created_at": created, "updated_at": updated, "archived": archived})

    # -- insights (§ 3.6) -----------------------------------------------------------------

    def _insight(self, rng, iid, team, created, hidden, n) -> Entry:
        """InsightSerializer (posthog/api/insight.py; the list's ``basic=true`` is InsightBasicSerializer,
        a subset). ``last_modified_at`` moves only on material edits (Insight.MATERIAL_INSIGHT_FIELDS),
        ``updated_at`` on every save: ~20 % were never edited (``last_modified_at == created_at``),
        ~5 % share ``last_modified_at`` with the insight before (ties), some were saved again later
        without a material change (``updated_at`` > ``last_modified_at``)."""
        modified = created + timedelta(days=rng.random() * 90)
        if modified > self.base:
            modified = self.base - timedelta(minutes=rng.randrange(1, 600))
        x = self._extra("insights")
        r = x.random()
        prev = self._last_change.get("insights")
        if r < 0.2 or modified < created:
            modified = created
        elif r < 0.25 and prev is not None and created <= prev <= self.base:
            modified = prev  # one bulk edit moved both
        self._last_change["insights"] = modified
        updated = modified
        if x.random() < 0.15:
            updated = min(self.base, modified + timedelta(hours=x.random() * 48))
        viewed = min(self.base, updated + timedelta(days=x.random() * 10)) if x.random() < 0.6 else None
        event = rng.choice(("$pageview", "signed_up", "purchase_completed", "$autocapture", "feature_used"))
        item = {
            "id": iid, "short_id": "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(8)),
            "name": f"{rng.choice(('Weekly', 'Daily', 'Monthly'))} {event.strip('$')} #{iid}" if rng.random() < 0.8 else None,
            "derived_name": f"{event} count", "filters": {},
            "query": {"kind": "InsightVizNode", "source": {"kind": rng.choice(("TrendsQuery", "FunnelsQuery")),
                                                           "series": [{"kind": "EventsNode", "event": event}]}},
            "order": rng.randrange(10) if rng.random() < 0.2 else None, "deleted": hidden,
            "dashboards": [5] if rng.random() < 0.3 else [], "dashboard_tiles": [],
            "last_refresh": None, "cache_target_age": None, "next_allowed_client_refresh": None,
            "result": None, "hasMore": None, "columns": None, "created_at": tu.iso_z(created),
            "created_by": _user(rng), "description": rng.choice(("", "Tracks the main funnel")),
            "updated_at": tu.iso_z(updated), "tags": [], "favorited": rng.random() < 0.1, "saved": x.random() < 0.95,
            "refreshing": False, "last_modified_at": tu.iso_z(modified), "last_modified_by": _user(rng),
            "is_sample": False, "effective_restriction_level": 21, "effective_privilege_level": 37,
            "user_access_level": "editor", "timezone": "UTC", "is_cached": False, "query_status": None, "hogql": None,
            "types": None, "resolved_date_range": None, "alerts": [],
            "last_viewed_at": tu.iso_z(viewed) if viewed else None,
        }
        if item["dashboards"]:
            item["dashboard_tiles"] = [{"id": 1000 + iid, "dashboard_id": 5, "deleted": False}]
        return Entry(team, item, hidden, {"created_at": created, "last_modified_at": modified, "updated_at": updated})

    # -- annotations (§ 3.7) --------------------------------------------------------------

    def _annotation(self, rng, aid, team, created, hidden, n) -> Entry:
        marker = created.replace(microsecond=0) - timedelta(minutes=rng.randrange(0, 120))
        scope = "project"
        r = rng.random()
        if team == SECOND_PROJECT_ID and n % 2 == 0:
            scope = "organization"  # org-scoped annotations show in every project of the organization
        elif r < 0.15:
            scope = "dashboard_item"
        elif r < 0.2:
            scope = "organization"
        elif r < 0.25:
            scope = "recording"
        updated = created + timedelta(days=rng.random() * 20) if rng.random() < 0.3 else created
        if updated > self.base:
            updated = self.base
        item = {
            "id": aid, "content": f"{rng.choice(('Deployed', 'Launched', 'Rolled back', 'Incident:', 'Campaign'))} {rng.choice(_WORDS)} v{aid % 10}.{aid % 7}",
            "date_marker": tu.iso_z_seconds(marker), "creation_type": rng.choice(("USR", "USR", "GIT")),
            "dashboard_item": 100 + aid if scope == "dashboard_item" else None,
            "dashboard_id": None, "dashboard_name": None,
            "insight_short_id": f"ins{aid:05d}" if scope == "dashboard_item" else None,
            "insight_name": "Weekly signups" if scope == "dashboard_item" else None,
            "insight_derived_name": "signed_up count" if scope == "dashboard_item" else None,
            "created_by": _user(rng), "created_at": tu.iso_z(created), "updated_at": tu.iso_z(updated),
            "deleted": hidden, "scope": scope, "emoji": None, "hidden_in_user_interface": False, "tags": [],
        }
        return Entry(team, item, hidden, {"date_marker": marker, "updated_at": updated})

    # -- actions (§ 3.8) ------------------------------------------------------------------

    def _action(self, rng, aid, team, created, hidden, n) -> Entry:
        calc = None if rng.random() < 0.1 else created + timedelta(days=rng.random() * 30)
        if calc and calc > self.base:
            calc = self.base
        item = {
            "id": aid, "name": f"{rng.choice(_WORDS).title()} {rng.choice(('clicked', 'completed', 'viewed'))} #{aid}",
            "description": "", "tags": [], "post_to_slack": False, "slack_message_format": "",
            "steps": [{"event": rng.choice(("$autocapture", "$pageview")), "text": rng.choice(("Sign up", None)),
                       "url": rng.choice((None, "/pricing")), "url_matching": "contains", "selector": None,
                       "properties": None}],
            "created_at": tu.iso_z(created), "created_by": _user(rng), "deleted": hidden,
            "is_calculating": False, "last_calculated_at": tu.iso_z_seconds(calc) if calc else None,
            "team_id": team, "is_action": True, "bytecode_error": None, "pinned_at": None,
            "creation_context": None, "user_access_level": "editor",
        }
        return Entry(team, item, hidden, {"last_calculated_at": calc})

    # -- event definitions (§ 3.10) -------------------------------------------------------

    def _event_definition(self, rng, did, team, created, hidden, n) -> Entry:
        """EnterpriseEventDefinitionSerializer (ee/api/ee_event_definition.py, what PostHog Cloud
        serves): the event fields plus the action fields (is_action, action_id, is_calculating,
        last_calculated_at, created_by), ``default_columns`` always a list."""
        from .data import EVENT_WEIGHTS  # local import: data imports this module

        known = [name for name, _ in EVENT_WEIGHTS]
        idx = n if team == PROJECT_ID else n - SIZES["event_definitions"][0]
        if team == PROJECT_ID and idx < len(known):
            name = known[idx]
            last_seen = self.base - timedelta(minutes=rng.randrange(20, 600))
        else:
            name = f"{rng.choice(_WORDS)} {rng.choice(('clicked', 'completed', 'viewed', 'opened', 'failed'))} {idx}"
            last_seen = None if rng.random() < 0.05 else self.base - timedelta(days=rng.random() * 200)
        item = {
            "id": _uuid(rng, created), "name": name, "owner": None, "description": None, "tags": [],
            "created_at": tu.iso_z_seconds(created), "last_seen_at": tu.iso_z_seconds(last_seen) if last_seen else None,
            "last_updated_at": tu.iso_z_seconds(last_seen or created), "updated_at": tu.iso_z_seconds(created),
            "updated_by": None, "verified": False, "verified_at": None, "verified_by": None, "hidden": False,
            "is_action": False, "post_to_slack": False, "is_calculating": False, "action_id": None,
            "last_calculated_at": None, "created_by": None, "default_columns": [],
        }
        return Entry(team, item, hidden, {"last_seen_at": last_seen})

    # -- property definitions (§ 3.11) ----------------------------------------------------

    def _property_names(self, ptype: str, n: int) -> list[str]:
        base = {
            "event": ["$browser", "$browser_version", "$os", "$os_version", "$device_type", "$current_url", "$host",
                      "$pathname", "$referrer", "$referring_domain", "$screen_height", "$screen_width", "$lib",
                      "$lib_version", "$session_id", "$window_id", "$insert_id", "$time", "$device_id",
                      "$geoip_country_code", "$geoip_city_name", "$geoip_time_zone", "$feature_flags", "plan", "sku",
                      "quantity", "price", "currency", "revenue", "order_id", "feature", "duration_ms"],
            "person": ["email", "name", "plan", "signup_count", "is_beta_tester", "$initial_browser", "$initial_os",
                       "$initial_device_type", "$initial_referring_domain", "$initial_current_url",
                       "$geoip_country_code", "$geoip_city_name"],
            "session": ["$session_duration", "$entry_current_url", "$entry_pathname", "$exit_current_url",
                        "$channel_type", "$pageview_count", "$autocapture_count", "$is_bounce", "$start_timestamp",
                        "$end_timestamp", "$entry_referring_domain", "$entry_utm_source"],
            "group": ["name", "industry", "employee_count", "plan", "created_at", "mrr", "country", "is_paying"],
        }[ptype]
        names = list(base)
        i = 0
        while len(names) < n:
            names.append(f"{_WORDS[i % len(_WORDS)]}_{ptype}_prop_{i}")
            i += 1
        return names[:n]

    @staticmethod
    def _property_type(name: str) -> str | None:
        lowered = name.lower()
        if any(w in lowered for w in ("count", "height", "width", "quantity", "price", "revenue", "duration", "mrr", "employee")):
            return "Numeric"
        if lowered.startswith("is_") or lowered.startswith("$is_") or lowered.endswith("_tester"):
            return "Boolean"
        if "timestamp" in lowered or lowered in ("$time", "created_at"):
            return "DateTime"
        if "feature_flags" in lowered:
            return None
        return "String"

    def _property_definitions(self) -> list[Entry]:
        rng = random.Random(f"{self.seed}/property_definitions")
        out: list[Entry] = []
        for ptype, (n2, n3) in PROPERTY_DEFINITION_SIZES.items():
            for team, n in ((PROJECT_ID, n2), (SECOND_PROJECT_ID, n3)):
                for name in self._property_names(ptype, n):
                    created = self.base - timedelta(days=1 + rng.random() * 300)
                    ptype_value = self._property_type(name)
                    item = {
                        "id": _uuid(rng, created), "name": name, "is_numerical": ptype_value == "Numeric",
                        "property_type": ptype_value, "tags": [], "is_seen_on_filtered_events": None,
                        "description": None, "updated_at": tu.iso_z_seconds(created), "updated_by": None,
                        "verified": False, "verified_at": None, "verified_by": None, "hidden": False,
                    }
                    out.append(Entry(team, item, False, {"type": ptype, "group_type_index": 0 if ptype == "group" else None}))
        return out

    # -- session recordings (§ 3.9) -------------------------------------------------------

    def _recording(self, rng: random.Random, team: int, start: datetime, duration: int, ongoing: bool) -> Entry:
        """SessionRecordingSerializer (posthog/session_recordings/session_recording_api.py): ``person``
        is MinimalPersonSerializer (with ``last_seen_at``); newer versions send ``snapshot_library``
        and ``external_references`` where older ones sent ``storage``."""
        people = self.persons.get(team) or [{"uuid": _uuid(rng, start), "pk": 0, "distinct_ids": ["anonymous"],
                                             "properties": {}, "created_at": tu.to_db(start)}]
        person = people[rng.randrange(len(people))]
        active = int(duration * (0.2 + rng.random() * 0.6))
        expiry = start + timedelta(days=30)
        item = {
            "id": _uuid(rng, start), "distinct_id": person["distinct_ids"][0], "viewed": rng.random() < 0.3,
            "viewers": [], "recording_duration": duration, "active_seconds": active,
            "inactive_seconds": duration - active, "start_time": tu.iso_z_seconds(start),
            "end_time": tu.iso_z_seconds(start + timedelta(seconds=duration)),
            "click_count": rng.randint(0, 80), "keypress_count": rng.randint(0, 200),
            "mouse_activity_count": rng.randint(0, 900), "console_log_count": rng.randint(0, 20),
            "console_warn_count": rng.randint(0, 5), "console_error_count": rng.randint(0, 3),
            "start_url": "https://app.example.com" + rng.choice(("/", "/pricing", "/dashboard", "/signup", "/docs")),
            "person": {"id": person["pk"], "name": person["properties"].get("email", person["distinct_ids"][0]),
                       "distinct_ids": person["distinct_ids"], "properties": person["properties"],
                       "created_at": tu.db_to_iso_z(person["created_at"]), "uuid": person["uuid"], "last_seen_at": None},
            "retention_period_days": 30, "expiry_time": tu.iso_z_seconds(expiry),
            "recording_ttl": max(0, (expiry - self.base).days), "snapshot_source": "web", "snapshot_library": "web",
            "ongoing": ongoing, "activity_score": round(rng.random(), 2), "external_references": [],
        }
        return Entry(team, item, False, {"start": start.replace(microsecond=0)})

    def _recordings(self) -> list[Entry]:
        rng = random.Random(f"{self.seed}/session_recordings")
        out: list[Entry] = []
        for i in range(RECORDINGS_RECENT):  # start_time within the last 2 days of base_time
            ongoing = i < RECORDINGS_ONGOING
            if ongoing:
                start = self.base - timedelta(minutes=rng.randrange(3, 90))
                duration = int((self.base - start).total_seconds()) - rng.randrange(0, 60)
            else:
                start = self.base - timedelta(days=rng.random() * 2)
                duration = rng.randrange(5, 3600)
                start = min(start, self.base - timedelta(seconds=duration + 60))
            out.append(self._recording(rng, PROJECT_ID, start, duration, ongoing))
        for _ in range(RECORDINGS_OLD):  # across the events span
            start = self.base - timedelta(days=2 + rng.random() * max(0.0, self.span_days - 2))
            out.append(self._recording(rng, PROJECT_ID, start, rng.randrange(5, 3600), False))
        for _ in range(RECORDINGS_P3):
            start = self.base - timedelta(days=rng.random() * 2.5)
            out.append(self._recording(rng, SECOND_PROJECT_ID, start, rng.randrange(5, 600), False))
        return out

    # -- groups (§ 14.1, § 14.2) ------------------------------------------------------------

    def _groups(self) -> tuple[list[Entry], list[Entry]]:
        rng = random.Random(f"{self.seed}/groups")
        types: list[Entry] = []
        groups: list[Entry] = []
        for team, kinds in GROUP_TYPES.items():
            for index, (singular, plural, count) in enumerate(kinds):
                created = self.base - timedelta(days=420 - 10 * index, microseconds=rng.randrange(1_000_000))
                types.append(Entry(team, {
                    "group_type": singular, "group_type_index": index,
                    "name_singular": singular.title() if index == 0 else None, "name_plural": plural,
                    "detail_dashboard": None, "default_columns": ["name", "plan"] if index == 0 else None,
                    "created_at": tu.iso_z(created),
                }, False, {"group_type_index": index}))
                prev: list[datetime] = []
                for i in range(count):
                    when = self._created(rng, prev)
                    when = when.replace(microsecond=when.microsecond // 1000 * 1000)  # groups.created_at: milliseconds
                    prev.append(when)
                    key = f"{rng.choice(_WORDS)}-{singular[:3]}-{i:04d}" if singular != "company" else \
                        f"{rng.choice(_WORDS)}{i}.example.com"
                    props = {"name": f"{key.split('.')[0].title()} {singular}", "plan": rng.choice(("free", "pro", "enterprise")),
                             "employee_count": rng.randint(1, 5000), "industry": rng.choice(("saas", "retail", "fintech", "media")),
                             "is_paying": rng.random() < 0.4}
                    if rng.random() < 0.3:
                        props["mrr"] = round(rng.random() * 10_000, 2)
                    groups.append(Entry(team, {"group_type_index": index, "group_key": key, "group_properties": props,
                                               "created_at": tu.iso_z(when)},
                                        False, {"group_type_index": index, "created_us": tu.dt_to_us(when)}))
        return types, groups

    # -- dashboards (§ 14.3) ----------------------------------------------------------------

    def _dashboard(self, rng, did, team, created, hidden, n) -> Entry:
        unlisted = hidden and n % 4 == 0  # PostHog's list also leaves out creation_mode="unlisted"
        accessed = created + timedelta(days=rng.random() * 30) if rng.random() < 0.8 else None
        if accessed and accessed > self.base:
            accessed = self.base - timedelta(minutes=rng.randrange(1, 600))
        restricted = rng.random() < 0.1
        item = {
            "id": did, "name": f"{rng.choice(_WORDS).title()} {rng.choice(('overview', 'KPIs', 'funnel', 'health', 'weekly'))} #{did}",
            "description": rng.choice(("", "The numbers the team looks at every Monday")),
            "pinned": rng.random() < 0.2, "created_at": tu.iso_z(created), "created_by": _user(rng),
            "last_accessed_at": tu.iso_z(accessed) if accessed else None, "last_viewed_at": None,
            "folder": "Unfiled/Dashboards", "search_match_type": None,
            "is_shared": rng.random() < 0.1, "deleted": hidden and not unlisted,
            "creation_mode": "unlisted" if unlisted else rng.choice(("default", "default", "template", "duplicate")),
            "tags": rng.choice(([], [], ["marketing"], ["product", "weekly"])),
            "restriction_level": 37 if restricted else 21, "effective_restriction_level": 37 if restricted else 21,
            "effective_privilege_level": 37, "user_access_level": "editor",
            "access_control_version": "v1" if restricted else "v2",
            "last_refresh": tu.iso_z(accessed) if accessed else None, "team_id": team,
        }
        return Entry(team, item, hidden, {"created_at": created})

    # -- experiments (§ 14.4) ---------------------------------------------------------------

    def _experiment(self, rng, eid, team, created, hidden, n) -> Entry:
        started = created + timedelta(days=rng.random() * 5) if rng.random() < 0.8 else None
        if started and started > self.base:
            started = None
        ended = started + timedelta(days=7 + rng.random() * 21) if started and rng.random() < 0.5 else None
        if ended and ended > self.base:
            ended = None
        updated = max(d for d in (created, started, ended) if d)
        x = self._extra("experiments")  # the change-time realism added later draws from its own RNG
        if x.random() < 0.4:  # edited after its last launch/stop (description, metrics, ...)
            updated = min(self.base, updated + timedelta(days=x.random() * 10, microseconds=x.randrange(1_000_000)))
        prev = self._last_change.get("experiments")
        if prev is not None and updated < prev <= self.base and x.random() < 0.08:
            updated = prev  # saved in the same instant as the experiment before (ties)
        self._last_change["experiments"] = updated
        archived = n % 4 == 3  # PostHog lists these only with archived=true
        status = "draft" if not started else ("stopped" if ended else "running")
        flag_key = f"{rng.choice(_WORDS)}-experiment-{eid}"
        flag = {"id": 5000 + eid, "team_id": team, "name": f"Feature flag for experiment #{eid}", "key": flag_key,
                "filters": {"groups": [{"properties": [], "rollout_percentage": 100}],
                            "multivariate": {"variants": [{"key": "control", "rollout_percentage": 50},
                                                          {"key": "test", "rollout_percentage": 50}]}, "payloads": {}},
                "deleted": False, "active": status == "running", "ensure_experience_continuity": False,
                "version": 1, "evaluation_runtime": "all", "bucketing_identifier": "distinct_id",
                "evaluation_contexts": []}  # MinimalFeatureFlagSerializer (feature_flag.py)
        item = {
            "id": eid, "name": f"{rng.choice(_WORDS).title()} test #{eid}",
            "description": rng.choice(("", "Does the new layout lift conversion?")),
            "start_date": tu.iso_z(started) if started else None, "end_date": tu.iso_z(ended) if ended else None,
            "feature_flag_key": flag_key, "feature_flag": flag, "holdout": None, "exposure_cohort": None,
            "parameters": {"feature_flag_variants": [{"key": "control", "rollout_percentage": 50, "split_percent": 50},
                                                     {"key": "test", "rollout_percentage": 50, "split_percent": 50}],
                           "rollout_percentage": 100},
            "running_time_calculation": None, "excluded_variants": [], "archived": archived, "deleted": hidden,
            "created_by": _user(rng), "created_at": tu.iso_z(created), "updated_at": tu.iso_z(updated),
            "type": rng.choice(("product", "web")),
            "conclusion": rng.choice(("won", "lost", "inconclusive")) if ended else None,
            "conclusion_comment": None, "status": status, "is_legacy": rng.random() < 0.2, "user_access_level": "editor",
        }
        return Entry(team, item, hidden, {"created_at": created, "archived": archived, "updated_at": updated})

    # -- surveys (§ 14.5) -------------------------------------------------------------------

    def _survey(self, rng, _sid, team, created, hidden, n) -> Entry:
        sid = _uuid(rng, created)  # surveys have UUID ids
        started = created + timedelta(hours=rng.random() * 48) if rng.random() < 0.8 else None
        if started and started > self.base:
            started = None
        kind = rng.choice(("popover", "popover", "widget", "api", "external_survey"))
        item = {
            "id": sid, "name": f"{rng.choice(_WORDS).title()} feedback #{n}", "description": rng.choice(("", "NPS after onboarding")),
            "type": kind, "schedule": rng.choice(("once", "recurring", "always")), "linked_flag": None,
            "linked_flag_id": None, "linked_insight_id": None, "targeting_flag": None, "internal_targeting_flag": None,
            "questions": [{"id": _uuid(rng, created), "type": "rating", "question": "How likely are you to recommend us?",
                           "display": "number", "scale": 10, "lowerBoundLabel": "Unlikely", "upperBoundLabel": "Very likely"},
                          {"id": _uuid(rng, created), "type": "open", "question": "What could we do better?", "optional": True}],
            "conditions": {"url": "/dashboard", "urlMatchType": "icontains"} if kind == "popover" else None,
            "appearance": {"backgroundColor": "#eeeded", "submitButtonText": "Submit"} if kind != "api" else None,
            "created_at": tu.iso_z(created), "created_by": _user(rng),
            "start_date": tu.iso_z(started) if started else None, "end_date": None,
            "archived": n % 5 == 4,  # archived surveys stay in the list
            "responses_limit": rng.choice((None, 100, 500)),
            "feature_flag_keys": [{"key": "linked_flag_key", "value": None}, {"key": "targeting_flag_key", "value": None},
                                  {"key": "internal_targeting_flag_key", "value": None},
                                  {"key": "internal_response_sampling_flag_key", "value": None}],
            "iteration_count": None, "iteration_frequency_days": None, "iteration_start_dates": [],
            "current_iteration": None, "current_iteration_start_date": None, "response_sampling_start_date": None,
            "response_sampling_interval_type": None, "response_sampling_interval": None,
            "response_sampling_limit": None, "response_sampling_daily_limits": None,
            "enable_partial_responses": rng.random() < 0.3, "user_access_level": "editor",
        }
        return Entry(team, item, hidden, {"created_at": created})  # hidden: a product-tour survey

    # -- activity log (posthog/api/advanced_activity_logs/viewset.py) ------------------------

    def _activity_log(self) -> list[Entry]:
        """ActivityLog rows (posthog/models/activity_logging/activity_log.py) for the flags,
        insights, experiments, cohorts and dashboards of projects 2 and 3: ``created`` at each row's
        creation, ``updated`` at its change time (``updated_at``/``last_modified_at``), ``deleted``
        for the deleted ones; ``detail`` is PostHog's Detail dataclass as JSON (name, short_id, type,
        changes, trigger, context). In each project the rows at the edges of PostHog's pages of 100
        (``-created_at, -id``) share their ``created_at`` (three rows at the second edge), so cursor
        paging has to use its offset there. Built after every other kind, from its own RNG."""
        rng = random.Random(f"{self.seed}/activity_log")
        out: list[Entry] = []
        for kind in ACTIVITY_SCOPES:
            for e in self.rows[kind]:
                out += self._activities_of(rng, kind, e)
        for team in (PROJECT_ID, SECOND_PROJECT_ID):
            rows = sorted((a for a in out if a.team_id == team), key=activity_order, reverse=True)
            for edge in range(ACTIVITY_PAGE, len(rows), ACTIVITY_PAGE):
                tied = rows[edge:edge + (2 if edge == 2 * ACTIVITY_PAGE else 1)]
                for a in tied:
                    self._set_activity_time(a, rows[edge - 1].extra["created"])
        return out

    @staticmethod
    def _set_activity_time(entry: Entry, when: datetime) -> None:
        entry.extra["created"] = when
        entry.item = {**entry.item, "created_at": tu.iso_z(when)}

    def _activity(self, rng: random.Random, kind: str, team: int, item_id: Any, activity: str, when: datetime,
                  user: dict | None, name: str | None, changes: list | None, short_id: str | None = None) -> Entry:
        system = user is None
        item = {
            "id": _uuid(rng, when), "user": user, "unread": False, "team_id": team, "organization_id": ORGANIZATION_ID,
            "was_impersonated": False if not system else None, "is_system": system,
            "client": None if system else rng.choice((None, None, "posthog-js", "mcp")),
            "ip_address": None if system else f"192.0.2.{rng.randrange(1, 255)}",
            "activity": activity, "item_id": str(item_id), "scope": ACTIVITY_SCOPES[kind],
            "detail": {"name": name, "short_id": short_id, "type": None, "changes": changes, "trigger": None,
                       "context": None},
            "created_at": tu.iso_z(when),
        }
        return Entry(team, item, False, {"created": when, "kind": kind})

    def _activities_of(self, rng: random.Random, kind: str, e: Entry) -> list[Entry]:
        item, team = e.item, e.team_id
        scope = ACTIVITY_SCOPES[kind]
        name = item.get("key") if kind == "feature_flags" else (item.get("name") or item.get("derived_name"))
        short_id = item.get("short_id")
        created = e.extra.get("created_at") or tu.parse_datetime(item["created_at"])
        after = lambda t: min(self.base, t + timedelta(microseconds=rng.randrange(1_000, 900_000)))  # noqa: E731
        out = [self._activity(rng, kind, team, item["id"], "created", after(created), item.get("created_by"), name,
                              None, short_id)]
        changed = {"feature_flags": e.extra.get("updated_at"), "insights": e.extra.get("last_modified_at"),
                   "experiments": e.extra.get("updated_at")}.get(kind)
        if kind in ("cohorts", "dashboards") and rng.random() < 0.3:
            changed = min(self.base, created + timedelta(days=rng.random() * 20))
        last = created
        if changed is not None and changed > created:
            field_, before, now_ = {
                "feature_flags": ("filters", {"groups": [{"properties": [], "rollout_percentage": 10}]}, item.get("filters")),
                "insights": ("query", None, item.get("query")),
                "experiments": ("description", "", item.get("description")),
                "cohorts": ("filters", None, item.get("filters")),
                "dashboards": ("pinned", not item.get("pinned"), item.get("pinned")),
            }[kind]
            user = item.get("last_modified_by") or item.get("created_by")
            if rng.random() < 0.02:
                user = None  # done by PostHog itself (is_system)
            out.append(self._activity(rng, kind, team, item["id"], "updated", after(changed), user, name,
                                      [{"type": scope, "action": "changed", "field": field_, "before": before,
                                        "after": now_}], short_id))
            last = changed
        if e.hidden and (kind != "dashboards" or item.get("deleted")):
            gone = min(self.base, last + timedelta(hours=1 + rng.random() * 200))
            out.append(self._activity(rng, kind, team, item["id"], "deleted", after(gone), item.get("created_by"), name,
                                      [{"type": scope, "action": "changed", "field": "deleted", "before": False,
                                        "after": True}], short_id))
        return out

    # -- reading ----------------------------------------------------------------------------

    def entries(self, kind: str, project_id: int) -> list[Entry]:
        """Visible rows of ``kind`` for ``project_id`` (annotations: plus organization-scoped ones)."""
        with self.lock:
            rows = self.rows[kind]
            if kind == "annotations":
                return [e for e in rows if not e.hidden and (e.team_id == project_id or e.item["scope"] == "organization")]
            return [e for e in rows if not e.hidden and e.team_id == project_id]

    def ordered(self, kind: str, project_id: int) -> list[Entry]:
        """Rows in PostHog's default list order for the resource (quick table, § 3.12)."""
        rows = self.entries(kind, project_id)
        if kind in ("cohorts", "feature_flags"):  # -created_at
            rows.sort(key=lambda e: (e.extra["created_at"], e.item["id"]), reverse=True)
        elif kind == "insights":  # model ordering "order" (NULLS LAST), then id
            rows.sort(key=lambda e: (e.item["order"] is None, e.item["order"] or 0, e.item["id"]))
        elif kind == "annotations":  # -date_marker
            rows.sort(key=lambda e: (e.extra["date_marker"], e.item["id"]), reverse=True)
        elif kind == "actions":  # -last_calculated_at (NULLS FIRST under DESC), name
            rows.sort(key=lambda e: e.item["name"])
            rows.sort(key=lambda e: (e.extra["last_calculated_at"] is None, e.extra["last_calculated_at"] or self.base),
                      reverse=True)
        elif kind == "event_definitions":  # last_seen_at::date DESC (NULLS FIRST), name ASC
            rows.sort(key=lambda e: e.item["name"])
            rows.sort(key=lambda e: (e.extra["last_seen_at"] is None,
                                     e.extra["last_seen_at"].date() if e.extra["last_seen_at"] else date.min),
                      reverse=True)
        elif kind == "property_definitions":  # is_seen_on_filtered_events DESC (all null), name ASC
            rows.sort(key=lambda e: e.item["name"])
        elif kind == "session_recordings":
            rows.sort(key=lambda e: (e.extra["start"], e.item["id"]), reverse=True)
        elif kind == "dashboards":  # -pinned, name
            rows.sort(key=lambda e: (not e.item["pinned"], e.item["name"]))
        elif kind in ("experiments", "surveys"):  # -created_at (surveys: PostHog's order not found, § 14.5)
            rows.sort(key=lambda e: (e.extra["created_at"], str(e.item["id"])), reverse=True)
        elif kind == "activity_log":  # -created_at, -id (ActivityLogPagination)
            rows.sort(key=activity_order, reverse=True)
        elif kind == "group_types":
            rows.sort(key=lambda e: e.extra["group_type_index"])
        elif kind == "groups":  # group_type_index, then created_at DESC, key DESC (list_groups)
            rows.sort(key=lambda e: (e.extra["created_us"], e.item["group_key"]), reverse=True)
            rows.sort(key=lambda e: e.extra["group_type_index"])
        return rows

    def ground_truth(self, stream: str, project_id: int) -> list:
        if stream == "projects":  # the project read: the connector emits each project it reads once
            return [project_id] if project_id in self.projects else []
        if stream == "property_definitions":
            return [[e.extra["type"], e.item["id"]] for e in self.ordered(stream, project_id)]
        if stream == "group_types":
            return [e.item["group_type_index"] for e in self.ordered(stream, project_id)]
        if stream == "groups":
            return [[e.item["group_type_index"], e.item["group_key"]] for e in self.ordered(stream, project_id)]
        # feature_flags: archived flags too (the key reads them with `archived=true`), as experiments do.
        return [e.item["id"] for e in self.ordered(stream, project_id)]

    def find(self, kind: str, project_id: int, item_id: str) -> dict | None:
        for e in self.entries(kind, project_id):
            if str(e.item["id"]) == item_id:
                return e.item
        return None

    # -- mutations ------------------------------------------------------------------------

    def mutate_annotations(self, rng: random.Random, now: datetime, new: int, updated: int) -> dict:
        """New annotations, and existing ones whose content changed (updated_at = now)."""
        with self.lock:
            rows = self.rows["annotations"]
            candidates = [e for e in rows if not e.hidden and e.team_id == PROJECT_ID]
            changed = rng.sample(candidates, min(updated, len(candidates)))
            for e in changed:
                e.item = {**e.item, "content": e.item["content"] + " (edited)", "updated_at": tu.iso_z(now)}
                e.extra["updated_at"] = now
            added = []
            for _ in range(new):
                created = now - timedelta(microseconds=rng.randrange(1_000_000))
                entry = self._annotation(rng, self._next_id("annotations"), PROJECT_ID, created, False, len(rows))
                marker = now.replace(microsecond=0) - timedelta(minutes=rng.randrange(0, 60))
                entry.item.update({"date_marker": tu.iso_z_seconds(marker), "scope": "project",
                                   "created_at": tu.iso_z(now), "updated_at": tu.iso_z(now),
                                   "dashboard_item": None, "insight_short_id": None, "insight_name": None,
                                   "insight_derived_name": None})
                entry.extra.update({"date_marker": marker, "updated_at": now})
                rows.append(entry)
                added.append(entry.item["id"])
            return {"new": added, "updated": [e.item["id"] for e in changed]}

    #: ``mutate(...)`` arguments of :meth:`mutate_changes` (the resources read by change time).
    CHANGE_KINDS = ("insights", "experiments", "feature_flags")

    def mutate_changes(self, rng: random.Random, now: datetime, updated_insights: int = 0, new_insights: int = 0,
                       updated_experiments: int = 0, new_experiments: int = 0, updated_feature_flags: int = 0,
                       new_feature_flags: int = 0, new_activity_log: int = 0) -> dict:
        """Edits and creations in project 2 at real time "now", each with its activity-log entry.

        - an edited insight gets ``last_modified_at = updated_at`` = its edit time (and a new name);
          an experiment ``updated_at`` (and a new description); a flag ``updated_at``, ``version`` + 1,
          ``last_modified_by`` (and a new rollout); archived flags are not edited;
        - a new one is created at its creation time, never edited (insight ``last_modified_at`` =
          ``created_at``, flag ``updated_at`` null, experiment a draft);
        - each change time is ``now`` minus under a second; the edits of one call share one instant
          two by two (ties), the activity-log entry is 1 ms later;
        - ``new_activity_log`` adds that many more entries (dashboard and cohort updates), two of them
          with the same ``created_at``.

        Returns ``{kind: {"new": [ids], "updated": [ids]}}`` and ``{"activity_log": {"new": [ids]}}``."""
        asked = {"insights": (new_insights, updated_insights), "experiments": (new_experiments, updated_experiments),
                 "feature_flags": (new_feature_flags, updated_feature_flags)}
        with self.lock:
            result: dict[str, dict] = {kind: {"new": [], "updated": []} for kind in self.CHANGE_KINDS}
            logged: list[Entry] = []
            for kind, (new, updated) in asked.items():
                rows = self.rows[kind]
                candidates = [e for e in rows if not e.hidden and e.team_id == PROJECT_ID and not e.extra.get("archived")]
                instant = None
                for i, e in enumerate(rng.sample(candidates, min(updated, len(candidates)))):
                    if i % 2 == 0:
                        instant = now - timedelta(microseconds=rng.randrange(1, 1_000_000))
                    logged.append(self._edit(rng, kind, e, instant))
                    result[kind]["updated"].append(e.item["id"])
                builder = {"insights": self._insight, "experiments": self._experiment,
                           "feature_flags": self._feature_flag}[kind]
                for _ in range(new):
                    created = now - timedelta(microseconds=rng.randrange(1, 1_000_000))
                    entry = builder(rng, self._next_id(kind), PROJECT_ID, created, False, len(rows))
                    self._as_new(kind, entry, created)
                    rows.append(entry)
                    logged.append(self._activity(rng, kind, PROJECT_ID, entry.item["id"], "created",
                                                 created + timedelta(milliseconds=1), entry.item["created_by"],
                                                 self._display_name(kind, entry.item), None, entry.item.get("short_id")))
                    result[kind]["new"].append(entry.item["id"])
            extra = [e for kind in ("dashboards", "cohorts") for e in self.rows[kind] if not e.hidden and e.team_id == PROJECT_ID]
            shared = now - timedelta(microseconds=rng.randrange(1, 1_000_000))
            for i, e in enumerate(rng.sample(extra, min(new_activity_log, len(extra)))):
                kind = "dashboards" if e in self.rows["dashboards"] else "cohorts"
                when = shared if i < 2 else now - timedelta(microseconds=rng.randrange(1, 1_000_000))
                field_ = "pinned" if kind == "dashboards" else "name"
                logged.append(self._activity(rng, kind, PROJECT_ID, e.item["id"], "updated", when, _user(rng),
                                             e.item.get("name"), [{"type": ACTIVITY_SCOPES[kind], "action": "changed",
                                                                   "field": field_, "before": None,
                                                                   "after": e.item.get(field_)}]))
            self.rows["activity_log"].extend(logged)
            result["activity_log"] = {"new": [a.item["id"] for a in sorted(logged, key=activity_order, reverse=True)]}
            return result

    @staticmethod
    def _display_name(kind: str, item: dict) -> str | None:
        return item.get("key") if kind == "feature_flags" else (item.get("name") or item.get("derived_name"))

    def _edit(self, rng: random.Random, kind: str, e: Entry, when: datetime) -> Entry:
        """One edit of ``e`` at ``when`` (its new change time) and the activity-log entry that records it."""
        user = _user(rng)
        if kind == "insights":
            before = e.item["name"]
            e.item = {**e.item, "name": f"{before or e.item['derived_name']} (edited)", "last_modified_at": tu.iso_z(when),
                      "updated_at": tu.iso_z(when), "last_modified_by": user}
            e.extra.update(last_modified_at=when, updated_at=when)
            change = {"field": "name", "before": before, "after": e.item["name"]}
        elif kind == "experiments":
            before = e.item["description"]
            e.item = {**e.item, "description": (before or "") + " (edited)", "updated_at": tu.iso_z(when)}
            e.extra["updated_at"] = when
            change = {"field": "description", "before": before, "after": e.item["description"]}
        else:
            before = e.item["filters"]
            groups = [{**g, "rollout_percentage": rng.choice((5, 20, 40, 60, 80))} for g in before["groups"]]
            e.item = {**e.item, "filters": {**before, "groups": groups}, "updated_at": tu.iso_z(when),
                      "version": (e.item["version"] or 1) + 1, "last_modified_by": user}
            e.extra["updated_at"] = when
            change = {"field": "filters", "before": before, "after": e.item["filters"]}
        return self._activity(rng, kind, PROJECT_ID, e.item["id"], "updated", when + timedelta(milliseconds=1), user,
                              self._display_name(kind, e.item),
                              [{"type": ACTIVITY_SCOPES[kind], "action": "changed", **change}], e.item.get("short_id"))

    def _as_new(self, kind: str, entry: Entry, created: datetime) -> None:
        """A row just created: its change time is its creation time."""
        stamp = tu.iso_z(created)
        if kind == "insights":
            entry.item.update(created_at=stamp, updated_at=stamp, last_modified_at=stamp, last_viewed_at=None)
            entry.extra.update(created_at=created, updated_at=created, last_modified_at=created)
        elif kind == "experiments":
            entry.item.update(created_at=stamp, updated_at=stamp, start_date=None, end_date=None, status="draft",
                              conclusion=None, archived=False)
            entry.extra.update(created_at=created, updated_at=created, archived=False)
        else:
            entry.item.update(created_at=stamp, updated_at=None, version=1, last_modified_by=None, active=True,
                              archived=False, status="active", last_called_at=None)
            entry.extra.update(created_at=created, updated_at=None, archived=False)

    def mutate_recordings(self, rng: random.Random, now: datetime, new: int, grow: bool) -> dict:
        """New recordings, and ongoing ones that grew (later end_time, longer duration, same start_time)."""
        with self.lock:
            rows = self.rows["session_recordings"]
            grown = []
            if grow:
                for e in rows:
                    if e.team_id == PROJECT_ID and e.item["ongoing"]:
                        start = e.extra["start"]
                        duration = max(e.item["recording_duration"] + 1, int((now - start).total_seconds()))
                        extra_active = (duration - e.item["recording_duration"]) // 2
                        e.item = {**e.item, "recording_duration": duration,
                                  "active_seconds": e.item["active_seconds"] + extra_active,
                                  "inactive_seconds": duration - e.item["active_seconds"] - extra_active,
                                  "end_time": tu.iso_z_seconds(start + timedelta(seconds=duration)),
                                  "click_count": e.item["click_count"] + rng.randint(1, 20)}
                        grown.append(e.item["id"])
            added = []
            for i in range(new):
                start = now - timedelta(minutes=rng.randrange(2, 120))
                ongoing = i % 2 == 0
                duration = int((now - start).total_seconds()) if ongoing else rng.randrange(5, 60)
                entry = self._recording(rng, PROJECT_ID, start, duration, ongoing)
                rows.append(entry)
                added.append(entry.item["id"])
            return {"new": added, "updated": grown}
