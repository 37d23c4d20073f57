"""Deterministic dataset, SQLite store, ground truth and mutations.

Everything here is a pure function of ``(seed, events, base_time, span_days)`` until a mutation is
applied. Events and persons live in SQLite (cached on disk, keyed by those parameters, so a second
start is instant); the smaller CRUD resources live in memory (see ``resources.py``).

Shape of the data (posthog-api.md § 3.2, § 3.3, § 4.2):
- events: ``uuid`` (UUIDv7-like), ``event``, ``timestamp`` (microseconds, UTC), ``distinct_id``,
  ``properties`` (JSON text, ~30 keys, ~1 KB, stored and served as a string), ``elements_chain``,
  ``person_id``, ``created_at`` (ingestion time; ~1 % of events arrive hours to days late);
  ~10 % of events share their exact timestamp with others (bursts of 2..50);
- persons: ``id == uuid`` (the ActorsQuery serializer), ``distinct_ids``, properties, ``created_at``
  (milliseconds: ClickHouse's ``person.created_at`` is ``DateTime64`` = ``DateTime64(3)``,
  posthog/models/person/sql.py);
- cohort membership of project 2's cohorts: ``raw_cohort_people`` (ClickHouse ``cohortpeople``: person,
  cohort, version, sign), ``cohort_versions`` (each non-static, non-deleted cohort's current version,
  which PostHog keeps in Postgres) and ``static_cohort_people`` (``person_static_cohort``).

UUIDs are stored as their lowercase text; wherever one is compared or sorted it is in ClickHouse's
order (:func:`uuid_order_sql`), with expression indexes so keyset pages stay index scans.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import sqlite3
import threading
import time
import urllib.parse
import uuid as uuid_mod
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterator

import orjson

from . import person_changes
from . import timeutil as tu
from .keys import PROJECT_ID, SECOND_PROJECT_ID
from .resources import Resources

SCHEMA_VERSION = 6  # 4: ClickHouse UUID order indexes, millisecond persons.created_at, cohort membership; 5: events.session_id;
# 6: persons' ids derived from their first distinct id, as PostHog's ingestion does
MAX_CACHED_FILES = 6
_BATCH = 10_000


def uuid_order_sql(expr: str) -> str:
    """SQL for the ClickHouse order of a UUID stored as lowercase text: ClickHouse compares ``UUID``
    values by their second half first (ordered, ``ffffffff-0000-0000-0000-000000000000`` comes before
    ``00000000-0000-0000-ffff-000000000000``; measured on ClickHouse 26.9), so the key is the last 16
    hex digits, then the first 16. Indexes below use the same expression."""
    return (f"(substr({expr}, 20, 4) || substr({expr}, 25, 12) || substr({expr}, 1, 8) || substr({expr}, 10, 4) "
            f"|| substr({expr}, 15, 4))")


def uuid_order_key(text: str) -> str:
    """:func:`uuid_order_sql` of one lowercase UUID text, in Python."""
    return text[19:23] + text[24:36] + text[0:8] + text[9:13] + text[14:18]


SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE events (
    team_id INTEGER NOT NULL,
    uuid TEXT NOT NULL,
    event TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    distinct_id TEXT NOT NULL,
    properties TEXT NOT NULL,
    elements_chain TEXT NOT NULL,
    person_id TEXT,
    created_at TEXT NOT NULL,
    -- PostHog materializes `$session_id` as a column of its events table (HogQL `events.$session_id`);
    -- here too, so the sessions aggregation reads no JSON
    session_id TEXT GENERATED ALWAYS AS (json_extract(properties, '$."$session_id"')) STORED
);
CREATE TABLE persons (
    team_id INTEGER NOT NULL,
    id TEXT NOT NULL PRIMARY KEY,
    pk INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    properties TEXT NOT NULL,
    is_identified INTEGER NOT NULL,
    distinct_ids TEXT NOT NULL,
    last_seen_at TEXT
);
CREATE TABLE person_distinct_ids (
    team_id INTEGER NOT NULL,
    distinct_id TEXT NOT NULL,
    person_id TEXT NOT NULL
);
CREATE TABLE raw_cohort_people (
    team_id INTEGER NOT NULL,
    cohort_id INTEGER NOT NULL,
    person_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    sign INTEGER NOT NULL
);
CREATE TABLE cohort_versions (
    team_id INTEGER NOT NULL,
    cohort_id INTEGER NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (team_id, cohort_id)
);
CREATE TABLE static_cohort_people (
    team_id INTEGER NOT NULL,
    cohort_id INTEGER NOT NULL,
    person_id TEXT NOT NULL
);
"""
# HogQL `person_distinct_ids` (distinct_id → person_id; posthog/hogql/database/schema/person_distinct_ids.py).
# PostHog's ClickHouse table `person_distinct_id2` is ORDER BY (team_id, distinct_id) (posthog/models/person/sql.py),
# so a filter on person_id cannot prune it: the cost model charges every row of the team (conditions.py).
INDEXES = f"""
CREATE UNIQUE INDEX events_uuid ON events(uuid);
CREATE INDEX events_timestamp_uuid ON events(team_id, timestamp, {uuid_order_sql('uuid')});
CREATE INDEX events_created_at ON events(team_id, created_at);
CREATE INDEX persons_created_at ON persons(team_id, created_at, {uuid_order_sql('id')});
CREATE INDEX persons_id_order ON persons(team_id, {uuid_order_sql('id')});
CREATE INDEX person_distinct_ids_person ON person_distinct_ids(team_id, {uuid_order_sql('person_id')}, distinct_id);
CREATE INDEX raw_cohort_people_version ON raw_cohort_people(team_id, cohort_id, version, {uuid_order_sql('person_id')});
CREATE INDEX static_cohort_people_order ON static_cohort_people(team_id, cohort_id, {uuid_order_sql('person_id')});
"""
# HogQL's cohort_people: the distinct rows of `cohortpeople` at each cohort's current version (PostHog reads
# the (id, version) of the non-static, non-deleted cohorts from Postgres; here `cohort_versions`).
COHORT_PEOPLE_SQL = ("SELECT DISTINCT r.team_id AS team_id, r.cohort_id AS cohort_id, r.person_id AS person_id "
                     "FROM raw_cohort_people AS r JOIN cohort_versions AS v ON v.team_id = r.team_id "
                     "AND v.cohort_id = r.cohort_id AND v.version = r.version")
# Every current member of the team's cohorts: what cohort_people and static_cohort_people serve (team_id twice).
COHORT_MEMBERS_SQL = (f"SELECT cohort_id, person_id FROM ({COHORT_PEOPLE_SQL}) WHERE team_id = ? "
                      "UNION SELECT cohort_id, person_id FROM static_cohort_people WHERE team_id = ?")
EVENT_COLUMNS = "team_id, uuid, event, timestamp, distinct_id, properties, elements_chain, person_id, created_at"
_INSERT_EVENTS = f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)"
_INSERT_EVENTS_VISIBLE = f"INSERT INTO events ({EVENT_COLUMNS}, visible_at) VALUES (?,?,?,?,?,?,?,?,?,?)"

# --------------------------------------------------------------------------------------------
# Parameters and cache location
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataParams:
    """The parameters the generated data is a pure function of."""

    events: int
    seed: int
    base_time: datetime  # aware, UTC
    span_days: float
    persons: int | None = None  # persons of project 2 (None: persons_count(events))
    heavy_persons: int = 0  # persons given many distinct ids (the k-th: heavy_distinct_ids // (k + 1) more)
    heavy_distinct_ids: int = 5000

    def cache_name(self) -> str:
        ident = f"v{SCHEMA_VERSION}|{self.events}|{self.seed}|{tu.to_db(self.base_time)}|{self.span_days!r}"
        if self.persons is not None or self.heavy_persons:  # defaults keep their cache names
            ident += f"|persons={self.persons}|heavy={self.heavy_persons}x{self.heavy_distinct_ids}"
        return "posthog-emu-" + hashlib.sha1(ident.encode()).hexdigest()[:20] + ".sqlite"


def default_data_dir() -> Path:
    """``<repo>/.emulator-cache/`` (the repository root is two levels above this package)."""
    return Path(__file__).resolve().parents[2] / ".emulator-cache"


# --------------------------------------------------------------------------------------------
# Building blocks of realistic events
# --------------------------------------------------------------------------------------------

EVENT_WEIGHTS = (
    ("$pageview", 40), ("$autocapture", 22), ("$pageleave", 10), ("$identify", 3), ("$web_vitals", 5),
    ("$rageclick", 1), ("signed_up", 2), ("added_to_cart", 4), ("purchase_completed", 3),
    ("feature_used", 6), ("search_performed", 4),
)
_EVENT_TABLE = [name for name, w in EVENT_WEIGHTS for _ in range(w)]  # 100 slots

PATHS = (
    "/", "/pricing", "/features", "/blog", "/blog/launch-week", "/blog/how-we-scale", "/docs", "/docs/api",
    "/docs/getting-started", "/signup", "/login", "/dashboard", "/dashboard/insights", "/settings",
    "/settings/billing", "/settings/team", "/projects", "/projects/new", "/checkout", "/checkout/confirm",
    "/cart", "/search", "/products/widget-pro", "/products/widget-lite", "/about", "/careers", "/contact",
    "/integrations", "/changelog", "/status", "/support", "/account", "/invite", "/onboarding/1",
    "/onboarding/2", "/onboarding/3", "/reports", "/reports/weekly", "/notifications", "/help",
)
_ENV = (  # (os, os_version, browser, browser_version, device, screen w, screen h, user agent)
    ("Mac OS X", "14.5.0", "Chrome", 126, "Desktop", 1728, 1117,
     "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"),
    ("Windows", "10.0", "Chrome", 125, "Desktop", 1920, 1080,
     "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/125.0.0.0 Safari/537.36"),
    ("Windows", "10.0", "Edge", 126, "Desktop", 1536, 864,
     "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36 Edg/126.0.0.0"),
    ("Mac OS X", "14.4.1", "Safari", 17, "Desktop", 1440, 900,
     "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Safari/605.1.15"),
    ("iOS", "17.5.1", "Mobile Safari", 17, "Mobile", 390, 844,
     "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"),
    ("Android", "14.0.0", "Chrome", 126, "Mobile", 412, 915,
     "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Mobile Safari/537.36"),
    ("Linux", "", "Firefox", 127, "Desktop", 2560, 1440,
     "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0"),
    ("Windows", "10.0", "Firefox", 126, "Desktop", 1366, 768,
     "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:126.0) Gecko/20100101 Firefox/126.0"),
)
_GEO = (
    ("US", "San Francisco", "America/Los_Angeles", "en-US"), ("US", "New York", "America/New_York", "en-US"),
    ("GB", "London", "Europe/London", "en-GB"), ("DE", "Berlin", "Europe/Berlin", "de-DE"),
    ("FR", "Paris", "Europe/Paris", "fr-FR"), ("BR", "São Paulo", "America/Sao_Paulo", "pt-BR"),
    ("IN", "Bengaluru", "Asia/Kolkata", "en-IN"), ("JP", "Tokyo", "Asia/Tokyo", "ja-JP"),
)
_REFERRERS = (("$direct", "$direct"), ("https://www.google.com/", "www.google.com"),
              ("https://news.ycombinator.com/", "news.ycombinator.com"), ("https://t.co/", "t.co"))
ELEMENT_CHAINS = (
    'button.btn.btn-primary:attr__class="btn btn-primary"nth-child="2"nth-of-type="1"text="Sign up";'
    'div.hero:attr__class="hero"nth-child="1"nth-of-type="1";body:nth-child="2"nth-of-type="1"',
    'a.nav-link:attr__class="nav-link"attr__href="/pricing"href="/pricing"nth-child="3"nth-of-type="3"text="Pricing";'
    'nav.navbar:attr__class="navbar"nth-child="1"nth-of-type="1";body:nth-child="2"nth-of-type="1"',
    'span:nth-child="1"nth-of-type="1"text="Add to cart";button.add-to-cart:attr__class="add-to-cart"'
    'attr__data-sku="WDG-PRO"nth-child="4"nth-of-type="2";div.product:attr__class="product"nth-child="2"nth-of-type="2"',
    'input#search:attr__id="search"attr__type="text"nth-child="1"nth-of-type="1";form.search-form:'
    'attr__class="search-form"nth-child="2"nth-of-type="1"',
    'a:attr__href="/docs/api"href="/docs/api"nth-child="5"nth-of-type="5"text="API reference";ul.sidebar:'
    'attr__class="sidebar"nth-child="1"nth-of-type="1";aside:nth-child="1"nth-of-type="1"',
    'button:nth-child="1"nth-of-type="1"text="Save changes";form#settings:attr__id="settings"nth-child="2"nth-of-type="1"',
)
_EXTRA_PROPS = {
    "$autocapture": {"$event_type": "click", "$ce_version": 1, "$el_text": "Sign up"},
    "$rageclick": {"$event_type": "click", "$ce_version": 1},
    "$pageleave": {"$prev_pageview_duration": "@@N@@", "$prev_pageview_max_scroll_percentage": 0.82},
    "$identify": {"$anon_distinct_id": "@@D@@", "$set": {"email_verified": True, "plan": "pro"}},
    "$web_vitals": {"$web_vitals_LCP_value": "@@N@@", "$web_vitals_CLS_value": 0.02, "$web_vitals_FCP_value": 812.4},
    "signed_up": {"plan": "free", "source": "landing_page", "referral_code": None},
    "added_to_cart": {"sku": "WDG-PRO", "quantity": 2, "price": "@@N@@", "currency": "USD"},
    "purchase_completed": {"order_id": "@@I@@", "revenue": "@@N@@", "currency": "USD", "items": 3, "coupon": None},
    "feature_used": {"feature": "insights_export", "duration_ms": "@@N@@", "is_first_time": False},
    "search_performed": {"query_length": 12, "results_count": "@@N@@", "filters_applied": True},
}
_STRING_SLOTS = ("U", "P", "S", "W", "I", "X", "D")  # inside JSON quotes
_NUMBER_SLOTS = ("T", "N")  # bare JSON numbers


def _build_templates(seed: int) -> dict[str, list[str]]:
    """Per event name, 16 JSON templates (environment x geo) with ``%(slot)s`` placeholders."""
    rng = random.Random(f"{seed}/templates")
    templates: dict[str, list[str]] = {}
    for name, _ in EVENT_WEIGHTS:
        variants = []
        for v in range(16):
            os_name, os_ver, browser, bver, device, sw, sh, ua = _ENV[v % len(_ENV)]
            cc, city, tz, lang = _GEO[(v * 3 + len(name)) % len(_GEO)]
            ref, refdom = _REFERRERS[(v + len(name)) % len(_REFERRERS)]
            props: dict[str, Any] = {
                "$os": os_name, "$os_version": os_ver, "$browser": browser, "$browser_version": bver,
                "$device_type": device, "$raw_user_agent": ua, "$browser_language": lang,
                "$current_url": "@@U@@", "$host": "app.example.com", "$pathname": "@@P@@",
                "$screen_height": sh, "$screen_width": sw, "$viewport_height": sh - 120, "$viewport_width": sw,
                "$lib": "web", "$lib_version": "1.139.2", "$insert_id": "@@I@@", "$time": "@@T@@",
                "distinct_id": "@@X@@", "$device_id": "@@D@@", "$session_id": "@@S@@", "$window_id": "@@W@@",
                "$referrer": ref, "$referring_domain": refdom, "$geoip_country_code": cc,
                "$geoip_city_name": city, "$geoip_time_zone": tz, "$timezone": tz,
                "token": "phc_emu2Defaultprojecttoken0000000000000000",
                "$is_identified": rng.random() < 0.6, "$process_person_profile": True,
                "$feature_flags": {"new-checkout": v % 2 == 0, "pricing-test": ("control", "test")[v % 2]},
                "$active_feature_flags": ["new-checkout"] if v % 2 == 0 else [],
            }
            props.update(_EXTRA_PROPS.get(name, {}))
            text = orjson.dumps(props).decode().replace("%", "%%")
            for slot in _STRING_SLOTS:
                text = text.replace(f"@@{slot}@@", f"%({slot})s")
            for slot in _NUMBER_SLOTS:
                text = text.replace(f'"@@{slot}@@"', f"%({slot})s")
            variants.append(text)
        templates[name] = variants
    return templates


# PostHog's PERSON_UUIDV5_NAMESPACE (the plugin-server's `uuidFromDistinctId`, and its Python twin
# beside `MissingPerson`): a person created by ingestion has id uuid5(namespace, "team:distinct_id").
PERSON_UUIDV5_NAMESPACE = uuid_mod.UUID("932979b4-65c3-4424-8467-0b66ec27bc22")


def person_uuid(team_id: int, distinct_id: str) -> str:
    """The id PostHog's ingestion gives a person first seen with ``distinct_id`` (``uuidFromDistinctId``)."""
    return str(uuid_mod.uuid5(PERSON_UUIDV5_NAMESPACE, f"{team_id}:{distinct_id}"))


def uuid7_text(ms: int, rand74: int) -> str:
    """A UUIDv7-shaped string: 48-bit millisecond timestamp, version 7, variant 10, 74 random bits."""
    ra, rb = rand74 >> 62, rand74 & ((1 << 62) - 1)
    return "%08x-%04x-7%03x-%04x-%012x" % (ms >> 16, ms & 0xFFFF, ra, 0x8000 | (rb >> 48), rb & 0xFFFFFFFFFFFF)


class EventFactory:
    """Builds event rows ``(team_id, uuid, event, timestamp, distinct_id, properties, elements_chain,
    person_id, created_at)`` from a timestamp, using precomputed property templates."""

    def __init__(self, seed: int, persons: list[tuple[str, list[str]]]):
        self.templates = _build_templates(seed)
        self.persons = persons  # (person uuid, distinct_ids)
        self.seen: set[str] = set()

    def row(self, rng: random.Random, team_id: int, ts_us: int, created_us: int) -> tuple:
        rnd = rng.random
        person_uuid, dids = self.persons[int(len(self.persons) * rnd() * rnd())]
        name = _EVENT_TABLE[int(rnd() * 100)]
        if len(dids) > 1 and (name == "$identify" or rnd() < 0.7):
            distinct_id = dids[0]
        else:
            distinct_id = dids[-1]
        ms = ts_us // 1000
        uid = uuid7_text(ms, rng.getrandbits(74))
        while uid in self.seen:
            uid = uuid7_text(ms, rng.getrandbits(74))
        self.seen.add(uid)
        pidx = int(person_uuid[-6:], 16)
        bucket_ms = (ts_us // 1_800_000_000) * 1_800_000
        path = PATHS[int(rnd() * len(PATHS))]
        tmpl = self.templates[name][int(rnd() * 16)]
        props = tmpl % {
            "U": "https://app.example.com" + path,
            "P": path,
            "S": "%08x-%04x-7%03x-8%03x-%012x" % (bucket_ms >> 16, bucket_ms & 0xFFFF, pidx & 0xFFF, pidx >> 12 & 0xFFF, pidx),
            "W": "%08x-%04x-7%03x-9%03x-%012x" % (bucket_ms >> 16, bucket_ms & 0xFFFF, pidx & 0xFFF, pidx >> 12 & 0xFFF, pidx),
            "I": uid[24:] + uid[9:13],
            "X": distinct_id,
            "D": dids[-1],
            "T": ts_us / 1e6,
            "N": round(rnd() * 500, 2),
        }
        chain = ELEMENT_CHAINS[int(rnd() * len(ELEMENT_CHAINS))] if name in ("$autocapture", "$rageclick") else ""
        return (team_id, uid, name, tu.us_to_db(ts_us), distinct_id, props, chain, person_uuid, tu.us_to_db(created_us))


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------


def _tie_bursts(rng: random.Random, n: int, lo_us: int, hi_us: int) -> list[int]:
    """n timestamps in [lo, hi]; ~10 % of them in bursts of 2..50 sharing one exact timestamp."""
    out: list[int] = []
    in_bursts = round(n * 0.10) if n >= 20 else min(n, 4)
    while in_bursts >= 2:
        k = rng.randint(2, min(50, in_bursts))
        if in_bursts - k == 1:
            k += 1 if k < 50 else -1
        t = rng.randint(lo_us, hi_us)
        out.extend([t] * k)
        in_bursts -= k
    out.extend(rng.randint(lo_us, hi_us) for _ in range(n - len(out)))
    out.sort()
    return out


def _person_rows(rng: random.Random, team_id: int, n: int, first_pk: int, base_us: int, span_us: int) -> list[tuple]:
    """Person rows; ``created_at`` spread before and across the events span, ~10 % sharing a created_at,
    in milliseconds as ClickHouse stores it (``created_at DateTime64``, posthog/models/person/sql.py)."""
    rows = []
    lo = base_us - span_us - 90 * 86_400_000_000
    hi = base_us - 3_600_000_000
    created = _tie_bursts(rng, n, lo, hi)
    rng.shuffle(created)
    prefix = "user" if team_id == PROJECT_ID else f"p{team_id}_user"
    seen: set[str] = set()
    for i, c_us in enumerate(created):
        rng.getrandbits(74)  # drawn as before ids were derived, so the rest of the dataset is unchanged
        device = uuid7_text(c_us // 1000 - 1, rng.getrandbits(74))
        while device in seen:
            device = uuid7_text(c_us // 1000 - 1, rng.getrandbits(74))
        seen.add(device)
        # The person was created by its first (anonymous) event, so its id is PostHog's ingestion's
        # uuidFromDistinctId(team, device) (see person_uuid); identifying adds the user's id later.
        pid = person_uuid(team_id, device)
        identified = rng.random() < 0.6
        env = _ENV[rng.randrange(len(_ENV))]
        geo = _GEO[rng.randrange(len(_GEO))]
        props: dict[str, Any] = {
            "$initial_browser": env[2], "$initial_os": env[0], "$initial_device_type": env[4],
            "$initial_referring_domain": _REFERRERS[rng.randrange(len(_REFERRERS))][1],
            "$initial_current_url": "https://app.example.com" + PATHS[rng.randrange(len(PATHS))],
            "$geoip_country_code": geo[0], "$geoip_city_name": geo[1],
            "plan": ("free", "pro", "enterprise")[rng.randrange(3)],
            "signup_count": rng.randint(0, 5), "is_beta_tester": rng.random() < 0.2,
        }
        if identified:
            dids = [f"{prefix}_{i}", device]
            props = {"email": f"{prefix}{i}@example.com", "name": f"User {i}", **props}
        else:
            dids = [device]
        last_seen = min(base_us, c_us + rng.randint(0, 40 * 86_400_000_000))
        rows.append((team_id, pid, first_pk + i, tu.us_to_db(c_us - c_us % 1000), orjson.dumps(props).decode(),
                     int(identified), orjson.dumps(dids).decode(), tu.us_to_db(last_seen)))
    return rows


def persons_count(events: int) -> int:
    """≈ events / 20, at least 50."""
    return max(50, events // 20)


def with_many_distinct_ids(rows: list[tuple], seed: int, heavy: int, distinct_ids: int) -> list[tuple]:
    """``heavy`` persons spread over the list get more distinct ids (the k-th: ``distinct_ids // (k + 1)``
    aliases), kept between the first and the last one (what the events use)."""
    if heavy <= 0 or not rows:
        return rows
    rng = random.Random(f"{seed}/persons/many-distinct-ids")
    out = list(rows)
    for k in range(min(heavy, len(rows))):
        at = (k * len(rows)) // heavy + rng.randrange(max(1, len(rows) // heavy))
        at = min(at, len(rows) - 1)
        row = out[at]
        dids = orjson.loads(row[6])
        aliases = [f"alias_{row[1]}_{j:06d}" for j in range(max(1, distinct_ids // (k + 1)))]
        out[at] = (*row[:6], orjson.dumps([dids[0], *aliases, *dids[1:]] if len(dids) > 1 else [*aliases, dids[0]]).decode(), row[7])
    return out


def distinct_id_rows(person_rows: list[tuple]) -> Iterator[tuple]:
    """(team_id, distinct_id, person_id) for every distinct id of every person row."""
    for row in person_rows:
        for did in orjson.loads(row[6]):
            yield (row[0], did, row[1])


COHORT_MAX_MEMBERS = 60  # members of one generated cohort at most (each draws 0..this many persons)


def cohort_membership_rows(seed: int, cohorts: list, person_ids: list[str]) -> tuple[list, list, list]:
    """Membership of project 2's cohorts (``Resources`` entries), a pure function of the seed:
    ``(raw_cohort_people rows, cohort_versions rows, static_cohort_people rows)``.

    A dynamic cohort's members are the ``cohortpeople`` rows of its current version (sign 1); most
    also keep rows of their previous calculation (a version behind, partly other persons), which
    PostHog's ``cohort_people`` does not return (schema/cohort_people.py filters on each cohort's
    (id, version) from Postgres). A deleted dynamic cohort keeps its rows but has no current version
    (``Cohort.objects.filter(deleted=False)``). A static cohort's members are ``person_static_cohort``
    rows; a deleted static cohort has none."""
    rng = random.Random(f"{seed}/cohort_membership")
    raw: list[tuple] = []
    versions: list[tuple] = []
    static: list[tuple] = []
    for entry in sorted((e for e in cohorts if e.team_id == PROJECT_ID), key=lambda e: e.item["id"]):
        cid = entry.item["id"]
        members = rng.sample(person_ids, rng.randint(0, min(COHORT_MAX_MEMBERS, len(person_ids))))
        if entry.item["is_static"]:
            if not entry.hidden:
                static.extend((PROJECT_ID, cid, pid) for pid in members)
            continue
        version = rng.randint(1, 6)
        if version > 1:
            previous = dict.fromkeys(members[: len(members) // 2] + rng.sample(person_ids, min(3, len(person_ids))))
            raw.extend((PROJECT_ID, cid, pid, version - 1, 1) for pid in previous)
        raw.extend((PROJECT_ID, cid, pid, version, 1) for pid in members)
        if not entry.hidden:
            versions.append((PROJECT_ID, cid, version))
    return raw, versions, static


def build_database(path: Path, params: DataParams) -> None:
    """Generate the SQLite file for ``params`` (atomically: temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    if tmp.exists():
        tmp.unlink()
    conn = sqlite3.connect(tmp)
    try:
        conn.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-262144;" + SCHEMA)
        base_us = tu.dt_to_us(params.base_time)
        span_us = int(params.span_days * 86_400_000_000)
        rng = random.Random(f"{params.seed}/persons")
        count = params.persons if params.persons is not None else persons_count(params.events)
        p2 = _person_rows(rng, PROJECT_ID, count, 1, base_us, span_us)
        p3 = _person_rows(rng, SECOND_PROJECT_ID, 5, len(p2) + 1, base_us, span_us)
        stored = with_many_distinct_ids(p2, params.seed, params.heavy_persons, params.heavy_distinct_ids)
        conn.executemany("INSERT INTO persons VALUES (?,?,?,?,?,?,?,?)", stored + p3)
        conn.executemany("INSERT INTO person_distinct_ids VALUES (?,?,?)", distinct_id_rows(stored + p3))
        del stored
        raw_members, versions, static_members = cohort_membership_rows(
            params.seed, Resources(params.seed, params.base_time, params.span_days, {}).rows["cohorts"],
            [r[1] for r in p2])
        conn.executemany("INSERT INTO raw_cohort_people VALUES (?,?,?,?,?)", raw_members)
        conn.executemany("INSERT INTO cohort_versions VALUES (?,?,?)", versions)
        conn.executemany("INSERT INTO static_cohort_people VALUES (?,?,?)", static_members)

        # The events use each person's first and last distinct id, as without the extra aliases.
        factory = EventFactory(params.seed, [(r[1], orjson.loads(r[6])) for r in p2])
        rng = random.Random(f"{params.seed}/events")
        stamps = _tie_bursts(rng, params.events, base_us - span_us, base_us - 20 * 60_000_000)
        batch: list[tuple] = []
        rnd = rng.random
        for ts in stamps:
            if rnd() < 0.01:  # ~1 % ingested hours to days after their timestamp
                created = ts + rng.randint(3_600_000_000, 3 * 86_400_000_000)
            else:
                created = ts + int(rnd() * 5_000_000)
            batch.append(factory.row(rng, PROJECT_ID, ts, max(ts, min(created, base_us))))
            if len(batch) >= _BATCH:
                conn.executemany("INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?)", batch)
                batch.clear()
        if batch:
            conn.executemany("INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?)", batch)
        meta = {"schema": str(SCHEMA_VERSION), "events": str(params.events), "seed": str(params.seed),
                "base_time": tu.to_db(params.base_time), "span_days": repr(params.span_days),
                "next_person_pk": str(len(p2) + len(p3) + 1)}
        conn.executemany("INSERT INTO meta VALUES (?,?)", meta.items())
        conn.commit()
        conn.executescript(INDEXES + "PRAGMA analysis_limit=1000; ANALYZE;")
        conn.commit()
        conn.execute("PRAGMA journal_mode=DELETE")
    finally:
        conn.close()
    os.replace(tmp, path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _prune_cache(data_dir: Path, keep: Path) -> None:
    """Keep the cache bounded: datasets beyond the MAX_CACHED_FILES most recently used ones are
    removed once unused for an hour; working copies and links of dead processes are removed."""
    now = time.time()
    files = sorted(data_dir.glob("posthog-emu-*.sqlite"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in files[MAX_CACHED_FILES:]:
        try:
            if old != keep and now - old.stat().st_mtime > 3600:
                old.unlink()
        except OSError:
            pass
    for work in [*data_dir.glob("work-*.sqlite*"), *data_dir.glob("inuse-*.sqlite")]:
        try:
            pid = int(work.name.split("-")[1])
        except (IndexError, ValueError):
            continue
        if not _pid_alive(pid):
            try:
                work.unlink()
            except OSError:
                pass


# --------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------


def _plus_seconds(stored: str | None, seconds: float) -> str | None:
    return None if stored is None else tu.to_db(tu.from_db(stored) + timedelta(seconds=seconds))


def _url_parts(url: str | None) -> urllib.parse.SplitResult | None:
    try:
        return urllib.parse.urlsplit(url) if isinstance(url, str) else None
    except ValueError:
        return None


def _url_path(url: str | None) -> str | None:
    """ClickHouse ``path()``: the path without query string or fragment."""
    parts = _url_parts(url)
    return None if parts is None else parts.path


def _url_domain(url: str | None) -> str | None:
    """ClickHouse ``domain()``: the host, without user info or port."""
    parts = _url_parts(url)
    return None if parts is None else parts.netloc.rsplit("@", 1)[-1].split(":", 1)[0]


def _uuid7_time(text: str | None) -> str | None:
    """The millisecond timestamp a UUIDv7 carries in its first 48 bits (a v3 ``session_timestamp``)."""
    try:
        return tu.us_to_db(int(text[:8] + text[9:13], 16) * 1000)
    except (TypeError, ValueError):
        return None


def add_sql_functions(conn: sqlite3.Connection) -> None:
    """The emulator's SQL functions on one connection (``emu_plus_seconds`` for ingestion times, and
    ``emu_url_path`` / ``emu_url_domain`` / ``emu_uuid7_time`` for the sessions table)."""
    conn.create_function("emu_plus_seconds", 2, _plus_seconds, deterministic=True)
    conn.create_function("emu_url_path", 1, _url_path, deterministic=True)
    conn.create_function("emu_url_domain", 1, _url_domain, deterministic=True)
    conn.create_function("emu_uuid7_time", 1, _uuid7_time, deterministic=True)


class Store:
    """SQLite-backed events/persons plus in-memory resources, with copy-on-write mutations.

    The cached file is opened read-only (``immutable=1``). The first mutation copies it to a
    private working file (removed on :meth:`close`), so the cache always holds pristine data.
    """

    def __init__(self, params: DataParams, data_dir: Path | str | None = None):
        self.params = params
        self.data_dir = Path(data_dir) if data_dir else default_data_dir()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.base_path = self.data_dir / params.cache_name()
        self.generated = False
        t0 = time.monotonic()
        if not self.base_path.exists():
            build_database(self.base_path, params)
            self.generated = True
        self.load_seconds = time.monotonic() - t0
        os.utime(self.base_path)
        self._touched = time.monotonic()
        _prune_cache(self.data_dir, self.base_path)
        # A private hard link keeps the cached file readable even if another emulator prunes it.
        self._link: Path | None = self.data_dir / f"inuse-{os.getpid()}-{uuid_mod.uuid4().hex[:8]}.sqlite"
        try:
            os.link(self.base_path, self._link)
            self._path = self._link
        except OSError:
            self._link = None
            self._path = self.base_path
        self._read_only = True
        self._generation = 0
        self._pool: list[tuple[int, sqlite3.Connection]] = []
        self._pool_lock = threading.Lock()
        self.write_lock = threading.RLock()
        self._writer: sqlite3.Connection | None = None
        self._work_path: Path | None = None
        self._mutations = 0
        # Visibility (posthog-api.md § 11.1): a row is queryable from created_at + delay. ``visibility_delay``
        # is the run-wide delay; a batch can carry its own (stored as ``visible_at``, a column that only the
        # private working copy ever gets, so the cached dataset is untouched).
        self.visibility_delay = 0.0
        self._has_visible_col = False
        # Each project's `sessionTableVersion` team modifier (PostHog keeps it in team.modifiers):
        # "auto" (what a project that did not opt in has; it serves v2), "v2" or "v3".
        self.default_sessions_table_version = "auto"
        self.project_sessions_table_versions: dict[int, str] = {}
        with self.read() as conn:
            self._next_person_pk = int(conn.execute("SELECT value FROM meta WHERE key='next_person_pk'").fetchone()[0])
            sample = {
                team: [self._person_summary(r) for r in conn.execute(
                    "SELECT id, pk, created_at, properties, distinct_ids FROM persons WHERE team_id=? ORDER BY pk LIMIT 300",
                    (team,))]
                for team in (PROJECT_ID, SECOND_PROJECT_ID)
            }
        self.resources = Resources(params.seed, params.base_time, params.span_days, sample)
        self._persons_cache: list[tuple[str, list[str]]] | None = None

    # -- connections ------------------------------------------------------------------------

    @staticmethod
    def _open(path: Path, read_only: bool) -> sqlite3.Connection:
        if read_only:  # the pristine cache: immutable, no locking
            uri = f"file:{urllib.parse.quote(str(path))}?mode=ro&immutable=1"
            conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        else:  # the private working copy (WAL): readers see each committed mutation
            conn = sqlite3.connect(path, check_same_thread=False, timeout=30)
            conn.execute("PRAGMA query_only=1")
        conn.execute("PRAGMA cache_size=-65536")
        add_sql_functions(conn)
        return conn

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A pooled read connection on the current data."""
        with self._pool_lock:
            gen, path, read_only = self._generation, self._path, self._read_only
            conn = None
            while self._pool:
                g, c = self._pool.pop()
                if g == gen:
                    conn = c
                    break
                c.close()
        if conn is None:
            conn = self._open(path, read_only)
        if time.monotonic() - self._touched > 600:  # mark the cached file as in use (see _prune_cache)
            self._touched = time.monotonic()
            try:
                os.utime(self.base_path)
            except OSError:
                pass
        try:
            yield conn
        finally:
            with self._pool_lock:
                if gen == self._generation and len(self._pool) < 16:
                    self._pool.append((gen, conn))
                    conn = None
            if conn is not None:
                conn.close()

    def _writable(self) -> sqlite3.Connection:
        """Copy-on-write: the first write copies the cached file to a private working file."""
        with self.write_lock:
            if self._writer is None:
                work = self.data_dir / f"work-{os.getpid()}-{uuid_mod.uuid4().hex[:8]}.sqlite"
                shutil.copyfile(self._path, work)  # sendfile(2) on Linux
                self._work_path = work
                writer = sqlite3.connect(work, check_same_thread=False, timeout=30)
                writer.execute("PRAGMA journal_mode=WAL")
                writer.execute("PRAGMA synchronous=OFF")
                add_sql_functions(writer)
                self._writer = writer
                with self._pool_lock:
                    self._path = work
                    self._read_only = False
                    self._generation += 1
            return self._writer

    def close(self) -> None:
        with self._pool_lock:
            for _, c in self._pool:
                c.close()
            self._pool.clear()
            self._generation += 1
        with self.write_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            if self._work_path is not None:
                for suffix in ("", "-wal", "-shm"):
                    try:
                        os.unlink(str(self._work_path) + suffix)
                    except OSError:
                        pass
                self._work_path = None
            if self._link is not None:
                try:
                    os.unlink(self._link)
                except OSError:
                    pass
                self._link = None

    # -- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _person_summary(row: tuple) -> dict:
        pid, pk, created, props, dids = row
        return {"uuid": pid, "pk": pk, "created_at": created, "properties": orjson.loads(props),
                "distinct_ids": orjson.loads(dids)}

    def _persons_for_events(self) -> list[tuple[str, list[str]]]:
        if self._persons_cache is None:
            with self.read() as conn:
                self._persons_cache = [
                    (pid, orjson.loads(dids)) for pid, dids in conn.execute(
                        "SELECT id, distinct_ids FROM persons WHERE team_id=? ORDER BY pk", (PROJECT_ID,))
                ]
        return self._persons_cache

    def visibility_clause(self, now: datetime | None = None) -> tuple[str, list]:
        """`` AND <predicate>`` keeping only the events visible at ``now`` (real time), with its
        parameters; ``("", [])`` when every row is visible (no delay anywhere: the default).

        Row visible ⇔ visible_at ≤ now, where visible_at = the batch's stored value, else
        created_at + the run-wide delay. ``+created_at`` keeps SQLite on the timestamp index."""
        delay = float(self.visibility_delay or 0)
        if delay <= 0 and not self._has_visible_col:
            return "", []
        now = now or tu.utcnow()
        if not self._has_visible_col:
            return " AND +created_at <= ?", [tu.to_db(now - timedelta(seconds=delay))]
        if delay <= 0:
            return " AND (visible_at IS NULL OR visible_at <= ?)", [tu.to_db(now)]
        return (" AND (CASE WHEN visible_at IS NULL THEN +created_at <= ? ELSE visible_at <= ? END)",
                [tu.to_db(now - timedelta(seconds=delay)), tu.to_db(now)])

    def sessions_table_version(self, project_id: int) -> str:
        """The project's ``sessionTableVersion`` modifier: ``auto`` (v2) unless it opted into another."""
        return self.project_sessions_table_versions.get(project_id, self.default_sessions_table_version)

    def ingestion_time_sql(self, table: str = "") -> str:
        """SQL for an event's ingestion time: the moment it became queryable here (``visible_at``),
        i.e. ``created_at`` plus the visibility delay that applies to it (the batch's own, stored in
        ``visible_at``, else the current run-wide one; with no delay, ``created_at``). It stands for
        ClickHouse's ``inserted_at``, which sessions' ``max_inserted_at`` and PostHog's exports window
        by. ``table``: the alias the events table has in the query (default: none). An event is
        visible exactly when this is ≤ now (:meth:`visibility_clause` is that predicate, written so
        that SQLite keeps its timestamp index)."""
        prefix = f"{table}." if table else ""
        delay = float(self.visibility_delay or 0)
        shifted = f"emu_plus_seconds({prefix}created_at, {delay!r})" if delay > 0 else f"{prefix}created_at"
        return f"COALESCE({prefix}visible_at, {shifted})" if self._has_visible_col else shifted

    def _ensure_visible_col(self, w: sqlite3.Connection) -> None:
        if not self._has_visible_col:
            w.execute("ALTER TABLE events ADD COLUMN visible_at TEXT")
            w.commit()
            self._has_visible_col = True

    def _insert_events(self, w: sqlite3.Connection, rows: list[tuple], delay: float | None) -> None:
        """Insert 9-column event tuples; with a batch ``delay`` each row becomes visible at created_at + delay."""
        if delay is None:
            w.executemany(_INSERT_EVENTS, rows)
        else:
            self._ensure_visible_col(w)
            step = timedelta(seconds=float(delay))
            w.executemany(_INSERT_EVENTS_VISIBLE, [(*r, tu.to_db(tu.from_db(r[8]) + step)) for r in rows])
        w.commit()

    def _count_in_range(self, table: str, column: str, team_id: int, lo: str | None, hi: str | None) -> int:
        sql, args = f"SELECT count(*) FROM {table} WHERE team_id = ?", [team_id]
        if lo is not None:
            sql += f" AND {column} >= ?"
            args.append(lo)
        if hi is not None:
            sql += f" AND {column} <= ?"
            args.append(hi)
        with self.read() as conn:
            return conn.execute(sql, args).fetchone()[0]

    def count_events_in_range(self, team_id: int, lo: str | None, hi: str | None) -> int:
        """Rows of ``team_id`` with lo ≤ timestamp ≤ hi (storage text; None = unbounded), via the index."""
        return self._count_in_range("events", "timestamp", team_id, lo, hi)

    def count_persons(self, team_id: int, lo: str | None = None, hi: str | None = None) -> int:
        """Persons of ``team_id`` whose id's order key (:func:`uuid_order_key`) is in [lo, hi] (None =
        unbounded): the range of ClickHouse's ``person`` table (ORDER BY (team_id, id)) a WHERE on
        ``id`` prunes to."""
        return self._count_in_range("persons", uuid_order_sql("id"), team_id, lo, hi)

    def count_cohort_rows(self, team_id: int, static: bool) -> int:
        """Rows of ClickHouse's ``person_static_cohort`` (static) or ``cohortpeople`` (every version)
        of the team: what a query over ``static_cohort_people`` / ``cohort_people`` reads."""
        table = "static_cohort_people" if static else "raw_cohort_people"
        with self.read() as conn:
            return conn.execute(f"SELECT count(*) FROM {table} WHERE team_id = ?", (team_id,)).fetchone()[0]

    def count_person_distinct_ids(self, team_id: int) -> int:
        with self.read() as conn:
            return conn.execute("SELECT count(*) FROM person_distinct_ids WHERE team_id = ?", (team_id,)).fetchone()[0]

    def person_records(self, project_id: int = PROJECT_ID) -> list[dict]:
        """Every person of the project as the connector's persons stream emits it (ground truth of
        the fields, not only the ids): distinct ids sorted; persons in HogQL's ``ORDER BY id`` order."""
        with self.read() as conn:
            rows = conn.execute("SELECT id, created_at, properties, is_identified, distinct_ids, last_seen_at FROM persons "
                                f"WHERE team_id = ? ORDER BY {uuid_order_sql('id')}", (project_id,)).fetchall()
        return [{"id": pid, "uuid": pid, "distinct_ids": sorted(orjson.loads(dids)), "properties": orjson.loads(props),
                 "is_identified": bool(identified), "created_at": tu.db_to_iso_z(created),
                 "last_seen_at": tu.db_to_iso_z(last_seen) if last_seen else None}
                for pid, created, props, identified, dids, last_seen in rows]

    def cohort_member_clause(self, project_id: int, cohort_id: int) -> tuple[str, list]:
        """The SQL condition on ``persons`` (`` AND ...``, parameters): members of the cohort, from the
        same tables HogQL's ``cohort_people`` and ``static_cohort_people`` serve."""
        return (f" AND id IN (SELECT person_id FROM ({COHORT_MEMBERS_SQL}) WHERE cohort_id = ?)",
                [project_id, project_id, cohort_id])

    def cohort_members(self, project_id: int, cohort_id: int) -> list[str]:
        """Person ids of cohort ``cohort_id`` in ``project_id``, PostHog's cohort persons order
        (``created_at DESC, id DESC``, posthog/queries/person_query.py)."""
        clause, args = self.cohort_member_clause(project_id, cohort_id)
        with self.read() as conn:
            return [r[0] for r in conn.execute(f"SELECT id FROM persons WHERE team_id = ?{clause} "
                                               "ORDER BY created_at DESC, id DESC", [project_id, *args])]

    def event_count(self, team_id: int = PROJECT_ID) -> int:
        with self.read() as conn:
            return conn.execute("SELECT count(*) FROM events WHERE team_id=?", (team_id,)).fetchone()[0]

    # -- ground truth ---------------------------------------------------------------------

    STREAMS = ("events", "persons", "projects", "cohorts", "feature_flags", "insights", "annotations", "actions",
               "session_recordings", "event_definitions", "property_definitions", "group_types", "groups",
               "dashboards", "experiments", "surveys", "sessions", "activity_log", "cohort_membership")

    def ground_truth(self, stream: str | None = None, project_id: int = PROJECT_ID, visible_only: bool = False) -> Any:
        """Primary keys of everything the all_access key can read in ``project_id``. Events: every row
        (the default), or with ``visible_only`` only those a query can see now (§ 11.1)."""
        if stream is None:
            return {s: self.ground_truth(s, project_id, visible_only) for s in self.STREAMS}
        if stream not in self.STREAMS:
            raise KeyError(stream)
        if stream == "events":
            vis, vis_args = self.visibility_clause() if visible_only else ("", [])
            with self.read() as conn:
                return [r[0] for r in conn.execute(
                    f"SELECT uuid FROM events WHERE team_id=?{vis} ORDER BY timestamp, {uuid_order_sql('uuid')}",
                    [project_id, *vis_args])]
        if stream == "sessions":  # session ids, oldest start first (from the events, as hogql.sessions_sql)
            vis, vis_args = self.visibility_clause() if visible_only else ("", [])
            with self.read() as conn:
                return [r[0] for r in conn.execute(
                    f"SELECT sid FROM (SELECT {self._SESSION_OF_EVENT} AS sid, timestamp FROM events WHERE team_id=?{vis}) "
                    "WHERE sid IS NOT NULL AND sid <> '' GROUP BY sid ORDER BY min(timestamp), sid", [project_id, *vis_args])]
        if stream == "persons":  # the persons list's order (an ActorsQuery: ClickHouse's UUID order on ties)
            with self.read() as conn:
                return [r[0] for r in conn.execute(
                    f"SELECT id FROM persons WHERE team_id=? ORDER BY created_at DESC, {uuid_order_sql('id')} DESC",
                    (project_id,))]
        if stream == "cohort_membership":  # [cohort_id, person_id] of cohort_people and static_cohort_people
            with self.read() as conn:
                return [list(r) for r in conn.execute(
                    f"SELECT cohort_id, person_id FROM ({COHORT_MEMBERS_SQL}) ORDER BY cohort_id, "
                    f"{uuid_order_sql('person_id')}", (project_id, project_id))]
        return self.resources.ground_truth(stream, project_id)

    # -- mutations ------------------------------------------------------------------------

    def move_events(self, to_project: int, every: int = 2) -> int:
        """Move every `every`-th event of PROJECT_ID (by row order) to `to_project`: two projects
        of like data, for the several-projects benchmark. Returns how many moved."""
        with self.write_lock:
            w = self._writable()
            moved = w.execute("UPDATE events SET team_id=? WHERE team_id=? AND rowid % ? = 0", (to_project, PROJECT_ID, every)).rowcount
            w.commit()
            return moved

    def add_events(self, rows: list[dict], team_id: int = PROJECT_ID,
                   visibility_delay_seconds: float | None = None) -> list[str]:
        """Insert explicit event rows (tests use this to build ties and edge cases). With
        ``visibility_delay_seconds`` the rows become queryable only at created_at + that delay."""
        now = tu.utcnow()
        persons = self._persons_for_events()
        tuples = []
        for r in rows:
            ts = tu.parse_datetime(str(r["timestamp"]))
            created = tu.parse_datetime(str(r["created_at"])) if r.get("created_at") else now
            uid = str(r.get("uuid") or uuid7_text(tu.dt_to_us(ts) // 1000, random.getrandbits(74))).lower()
            str(uuid_mod.UUID(uid))  # validates
            props = r.get("properties", {})
            props_text = props if isinstance(props, str) else orjson.dumps(props).decode()
            person_id = r.get("person_id") or persons[0][0]
            distinct_id = r.get("distinct_id") or persons[0][1][-1]
            tuples.append((team_id, uid, str(r.get("event", "$pageview")), tu.to_db(ts), str(distinct_id), props_text,
                           str(r.get("elements_chain", "")), str(person_id), tu.to_db(created)))
        with self.write_lock:
            self._insert_events(self._writable(), tuples, visibility_delay_seconds)
        return [t[1] for t in tuples]

    def mutate(self, new_events: int = 0, late_events: int = 0, late_events_max_age_days: float = 3,
               new_annotations: int = 0, updated_annotations: int = 0, new_session_recordings: int = 0,
               grow_ongoing_recordings: bool = False, new_persons: int = 0,
               visibility_delay_seconds: float | None = None, new_sessions: int = 0,
               grow_ongoing_sessions: bool = False, merge_persons: int | list = 0, delete_persons: int | list = 0,
               update_persons: int | list = 0, added_cohort_members: int = 0, removed_cohort_members: int = 0,
               **resource_changes: int) -> dict:
        """Change the world between two syncs, in real time ("now").

        - new events: timestamps after the current max timestamp and ≤ now − 5 min, created_at = now;
        - late events: timestamp in [now − late_events_max_age_days, max timestamp − 1 h], created_at = now;
        - annotations: new ones, and updated ones (content changed, updated_at = now);
        - session recordings: new ones, and ongoing ones that grow (later end_time, start_time unchanged);
        - persons: new ones with created_at = now;
        - sessions (computed from the events' ``$session_id``): ``new_sessions`` new ones of 2 events each in
          the last 10 minutes, and ``grow_ongoing_sessions`` adds 2 ``$pageview`` events to each of the (up to
          3) sessions whose last event is less than 30 min old (PostHog's inactivity timeout), after that
          event. ``result["sessions"]`` lists every session the mutation changed (new and late events too):
          ``new``, ``updated``, ``by_late_events`` (changed by an event ingested more than 30 min after its
          timestamp: a session a settle-window reader cannot be asked to see again) and ``final``
          (id → ``$start_timestamp``, ``$end_timestamp``, ``events`` after the mutation);
        - ``visibility_delay_seconds``: the new and late events become queryable only at created_at + this
          (default: the run-wide delay, see :meth:`visibility_clause`);
        - persons (``person_changes.py``, PostHog's versions): ``merge_persons`` pairs merged (the second's
          distinct ids move to the first, version + 1; the second deleted, version + 100), ``delete_persons``
          deleted (person and distinct ids, version + 100), ``update_persons`` updated (version + 1); each a
          count or explicit ids (``merge_persons=[[into, from]]``, ``delete_persons=[id]``, ``update_persons=[id]``);
          ``result["persons"]`` lists them (``merged``, ``deleted``, ``updated``, ``moved_distinct_ids``, ...).
        - ``resource_changes``: ``updated_insights``, ``new_insights``, ``updated_experiments``,
          ``new_experiments``, ``updated_feature_flags``, ``new_feature_flags``, ``new_activity_log``
          (``Resources.mutate_changes``: the change times move to now, one activity-log entry each);
          ``result`` then has ``insights``/``experiments``/``feature_flags`` ``{"new", "updated"}`` and
          ``activity_log`` ``{"new"}``.
        - cohort membership: ``added_cohort_members`` new (cohort, person) pairs and ``removed_cohort_members``
          removed ones over project 2's non-deleted cohorts (:meth:`_change_cohort_members`);
          ``result["cohort_membership"]`` = ``{"added": [[cohort_id, person_id], ...], "removed": [...]}``.
        """
        with self.write_lock:
            self._mutations += 1
            rng = random.Random(f"{self.params.seed}/mutation/{self._mutations}")
            now = tu.utcnow()
            now_us = tu.dt_to_us(now)
            result: dict[str, Any] = {"events": {"new": [], "late": []}, "annotations": {"new": [], "updated": []},
                                      "session_recordings": {"new": [], "updated": []}, "persons": {"new": []}}
            touches_sessions = bool(new_events or late_events or new_sessions or grow_ongoing_sessions)
            sessions_before = self._session_summary() if touches_sessions else {}
            session_events: list[str] = []
            if new_sessions or grow_ongoing_sessions:
                session_events = self._add_session_events(
                    random.Random(f"{self.params.seed}/mutation/{self._mutations}/sessions"),
                    new_sessions, grow_ongoing_sessions, now_us, visibility_delay_seconds)
            if new_persons:
                result["persons"]["new"] = self._add_persons(rng, new_persons, now_us)
            if merge_persons or delete_persons or update_persons:
                result["persons"].update(self._change_persons(merge_persons, delete_persons, update_persons, now_us))
            if added_cohort_members or removed_cohort_members:
                result["cohort_membership"] = self._change_cohort_members(
                    random.Random(f"{self.params.seed}/mutation/{self._mutations}/cohorts"),
                    added_cohort_members, removed_cohort_members)
            if new_events or late_events:
                self._add_generated_events(rng, new_events, late_events, late_events_max_age_days, now_us, result,
                                           visibility_delay_seconds)
            if new_annotations or updated_annotations:
                result["annotations"] = self.resources.mutate_annotations(rng, now, new_annotations, updated_annotations)
            if resource_changes:  # REST resources read by change time, and the activity log (own RNG)
                result.update(self.resources.mutate_changes(
                    random.Random(f"{self.params.seed}/mutation/{self._mutations}/resources"), now, **resource_changes))
            if new_session_recordings or grow_ongoing_recordings:
                result["session_recordings"] = self.resources.mutate_recordings(
                    rng, now, new_session_recordings, grow_ongoing_recordings)
            result["events"]["new"] = result["events"]["new"] + session_events  # new events too
            if touches_sessions:
                result["sessions"] = self._session_changes(sessions_before, self._session_summary(), now_us)
            return result

    # -- sessions (the HogQL `sessions` table is computed from the events, hogql.sessions_sql) --

    _SESSION_OF_EVENT = "session_id"  # the stored `$session_id` column

    def _session_summary(self, team_id: int = PROJECT_ID) -> dict[str, tuple]:
        """session id → (start, end, event count) over every stored event."""
        with self.read() as conn:
            return {sid: (lo, hi, n) for sid, lo, hi, n in conn.execute(
                f"SELECT sid, min(timestamp), max(timestamp), count(*) FROM (SELECT {self._SESSION_OF_EVENT} AS sid, "
                "timestamp FROM events WHERE team_id = ?) WHERE sid IS NOT NULL AND sid <> '' GROUP BY sid", (team_id,))}

    def _session_changes(self, before: dict, after: dict, now_us: int) -> dict:
        created = tu.us_to_db(now_us)
        with self.read() as conn:  # this mutation's rows that arrived more than 30 min after their timestamp
            late = {r[0] for r in conn.execute(
                f"SELECT DISTINCT {self._SESSION_OF_EVENT} FROM events WHERE team_id = ? AND created_at = ? "
                "AND (julianday(created_at) - julianday(timestamp)) * 86400 > 1800", (PROJECT_ID, created))}
        changed = [sid for sid in after if before.get(sid) != after[sid]]
        return {"new": sorted(s for s in changed if s not in before and s not in late),
                "updated": sorted(s for s in changed if s in before and s not in late),
                "by_late_events": sorted(s for s in changed if s in late),
                "final": {s: {"$start_timestamp": tu.db_to_iso_z(after[s][0]), "$end_timestamp": tu.db_to_iso_z(after[s][1]),
                              "events": after[s][2]} for s in changed}}

    def _add_session_events(self, rng: random.Random, new_sessions: int, grow: bool, now_us: int,
                            delay: float | None) -> list[str]:
        rows: list[tuple] = []
        created = tu.us_to_db(now_us)
        ongoing_after = tu.us_to_db(now_us - 30 * 60_000_000)
        with self.read() as conn:
            ongoing = conn.execute(
                f"SELECT sid, max(timestamp) FROM (SELECT {self._SESSION_OF_EVENT} AS sid, timestamp FROM events "
                "WHERE team_id = ? AND timestamp > ?) WHERE sid IS NOT NULL AND sid <> '' GROUP BY sid "
                "ORDER BY max(timestamp) DESC, sid LIMIT 3", (PROJECT_ID, ongoing_after)).fetchall() if grow else []
            for sid, end in ongoing:  # continue from the session's last event: same person, device, window
                last = conn.execute(
                    f"SELECT distinct_id, properties, person_id FROM events WHERE team_id = ? AND timestamp = ? "
                    f"AND {self._SESSION_OF_EVENT} = ? ORDER BY uuid DESC LIMIT 1", (PROJECT_ID, end, sid)).fetchone()
                end_us = tu.dt_to_us(tu.from_db(end))
                for ts in sorted(rng.randint(end_us + 1, max(end_us + 2, now_us - 1_000_000)) for _ in range(2)):
                    rows.append(self._session_event(rng, last[0], last[1], last[2], sid, ts, created))
        persons = self._persons_for_events()
        for _ in range(new_sessions):
            person_id, dids = persons[rng.randrange(len(persons))]
            start_us = now_us - rng.randint(2 * 60_000_000, 10 * 60_000_000)
            sid = uuid7_text(start_us // 1000, rng.getrandbits(74))
            props = orjson.dumps({"$session_id": sid, "$current_url": "https://app.example.com/", "$pathname": "/",
                                  "$referring_domain": "$direct", "$lib": "web"}).decode()
            for ts in (start_us, start_us + rng.randint(1_000_000, 60_000_000)):
                rows.append(self._session_event(rng, dids[-1], props, person_id, sid, ts, created))
        if rows:
            self._insert_events(self._writable(), rows, delay)
        return [r[1] for r in rows]

    @staticmethod
    def _session_event(rng: random.Random, distinct_id: str, properties: str, person_id: str, sid: str, ts_us: int,
                       created: str) -> tuple:
        path = PATHS[rng.randrange(len(PATHS))]
        props = orjson.loads(properties)
        props.update({"$session_id": sid, "$current_url": "https://app.example.com" + path, "$pathname": path})
        uid = uuid7_text(ts_us // 1000, rng.getrandbits(74))
        return (PROJECT_ID, uid, "$pageview", tu.us_to_db(ts_us), distinct_id, orjson.dumps(props).decode(), "",
                person_id, created)

    def _change_cohort_members(self, rng: random.Random, added: int, removed: int) -> dict:
        """Add and remove members of project 2's cohorts, as PostHog does: a static cohort's rows are
        inserted into / deleted from ``person_static_cohort``; a dynamic cohort is recalculated, i.e.
        its new member set is written as the next version and that version becomes current (the old
        version's rows stay in ``cohortpeople``, unserved). Added members are existing persons."""
        static_ids = {e.item["id"] for e in self.resources.entries("cohorts", PROJECT_ID) if e.item["is_static"]}
        with self.read() as conn:
            versions = dict(conn.execute("SELECT cohort_id, version FROM cohort_versions WHERE team_id = ?", (PROJECT_ID,)))
            members: dict[int, set[str]] = {cid: set() for cid in sorted(static_ids | set(versions))}
            for cid, pid in conn.execute(COHORT_MEMBERS_SQL, (PROJECT_ID, PROJECT_ID)):
                members.setdefault(cid, set()).add(pid)
            people = [r[0] for r in conn.execute("SELECT id FROM persons WHERE team_id = ? ORDER BY pk", (PROJECT_ID,))]
        cohorts = sorted(members)
        gone = rng.sample(sorted([cid, pid] for cid in cohorts for pid in members[cid]),
                          min(removed, sum(len(m) for m in members.values())))
        for cid, pid in gone:
            members[cid].discard(pid)
        new: list[list] = []
        for _ in range(added * 20):  # draws that hit a current member are redrawn
            if len(new) == added or not cohorts or not people:
                break
            cid, pid = rng.choice(cohorts), rng.choice(people)
            if pid not in members[cid]:
                members[cid].add(pid)
                new.append([cid, pid])
        touched = {cid for cid, _ in gone + new}
        w = self._writable()
        w.executemany("DELETE FROM static_cohort_people WHERE team_id = ? AND cohort_id = ? AND person_id = ?",
                      [(PROJECT_ID, cid, pid) for cid, pid in gone if cid in static_ids])
        w.executemany("INSERT INTO static_cohort_people VALUES (?,?,?)",
                      [(PROJECT_ID, cid, pid) for cid, pid in new if cid in static_ids])
        for cid in sorted(touched - static_ids):
            version = versions[cid] + 1
            w.executemany("INSERT INTO raw_cohort_people VALUES (?,?,?,?,1)",
                          [(PROJECT_ID, cid, pid, version) for pid in sorted(members[cid])])
            w.execute("UPDATE cohort_versions SET version = ? WHERE team_id = ? AND cohort_id = ?", (version, PROJECT_ID, cid))
        w.commit()
        return {"added": sorted(new), "removed": sorted(gone)}

    def _add_persons(self, rng: random.Random, n: int, now_us: int) -> list[str]:
        rows = _person_rows(rng, PROJECT_ID, n, self._next_person_pk, now_us, 0)
        created = tu.us_to_db(now_us - now_us % 1000)  # milliseconds, as ClickHouse's person.created_at
        # distinct ids are unique per project: the generator's "user_{i}" would repeat the first persons' ids
        rows = [(r[0], r[1], r[2], created, r[4], r[5], orjson.dumps([d.replace("user_", f"user_m{r[2]}_", 1)
                 if d.startswith("user_") else d for d in orjson.loads(r[6])]).decode(), created) for r in rows]
        self._next_person_pk += n
        w = self._writable()
        w.executemany("INSERT INTO persons VALUES (?,?,?,?,?,?,?,?)", rows)
        w.executemany("INSERT INTO person_distinct_ids VALUES (?,?,?)", distinct_id_rows(rows))
        w.execute("UPDATE meta SET value=? WHERE key='next_person_pk'", (str(self._next_person_pk),))
        w.commit()
        self._persons_cache = None
        return [r[1] for r in rows]

    def _change_persons(self, merge: int | list, delete: int | list, update: int | list, now_us: int) -> dict:
        """Merges, deletions and updates of project 2's persons (``person_changes.apply``)."""
        rng = random.Random(f"{self.params.seed}/mutation/{self._mutations}/persons")
        w = self._writable()
        changes = person_changes.apply(w, rng, PROJECT_ID, tu.us_to_db(now_us), merge, delete, update)
        w.commit()
        self._persons_cache = None
        return changes

    def _add_generated_events(self, rng, new_events, late_events, max_age_days, now_us, result, delay=None) -> None:
        with self.read() as conn:
            max_ts = conn.execute("SELECT max(timestamp) FROM events WHERE team_id=?", (PROJECT_ID,)).fetchone()[0]
        max_us = tu.dt_to_us(tu.from_db(max_ts)) if max_ts else now_us - 86_400_000_000
        factory = EventFactory(self.params.seed + 7919 * self._mutations, self._persons_for_events())
        rows = []
        hi = now_us - 5 * 60_000_000
        lo = max_us + 1
        if hi <= lo:  # the dataset's "now" is ahead of real time: just follow the max timestamp
            hi = lo + 1000 * max(1, new_events)
        for ts in sorted(rng.randint(lo, hi) for _ in range(new_events)):
            rows.append(factory.row(rng, PROJECT_ID, ts, now_us))
        late_hi = max_us - 3_600_000_000
        late_lo = now_us - int(max_age_days * 86_400_000_000)
        if late_lo > late_hi:
            late_lo = late_hi - int(max_age_days * 86_400_000_000)
        late_rows = [factory.row(rng, PROJECT_ID, rng.randint(late_lo, late_hi), now_us) for _ in range(late_events)]
        self._insert_events(self._writable(), rows + late_rows, delay)
        result["events"]["new"] = [r[1] for r in rows]
        result["events"]["late"] = [r[1] for r in late_rows]
