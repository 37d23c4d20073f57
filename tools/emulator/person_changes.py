"""Person versions, deletions and merges: what ClickHouse's ``person`` / ``person_distinct_id2`` keep.

PostHog facts emulated (posthog-api.md § 20.3; each checked in PostHog's source):

- Every write of a person is a new ``person`` row with a higher ``version``; ClickHouse keeps the
  latest version (ReplacingMergeTree; HogQL reads it with ``argMax(..., version)``). An update
  (``$set``) is ``version + 1`` (``UPDATE posthog_person SET ... version = COALESCE(version, 0)::numeric
  + 1``, nodejs ``person-repository`` / ``db.ts`` ``updatePerson``).
- A deletion writes the person with ``is_deleted = 1`` and ``version + 100`` (``posthog/models/person/
  util.py`` ``_delete_person``: "Version + 100 ensures delete takes precedence over normal updates";
  nodejs ``deletePerson``, its test: ``version: person.version + 100``), and each of its distinct ids
  with ``is_deleted = 1``, ``version + 100``, still pointing at the deleted person
  (``_delete_ch_distinct_id``).
- A merge (``$identify`` / ``$create_alias`` of two existing persons, nodejs ``mergePeople``) keeps
  ``mergeInto``: its properties become ``{...other.properties, ...mergeInto.properties}`` (the
  survivor's win), its ``created_at`` the older of the two, ``is_identified`` true, ``version + 1``;
  the other person's distinct ids move to it (``UPDATE posthog_persondistinctid SET person_id = $1,
  version = COALESCE(version, 0)::numeric + 1``, ``moveDistinctIds``); the other person is deleted
  (``version + 100``, ``is_deleted = 1``).
- ``_timestamp`` (the Kafka time of the row, ClickHouse ``DateTime``: whole seconds) is the change
  time PostHog's persons batch export windows on (``sql/persons.py``). HogQL ``persons`` and
  ``person_distinct_ids`` hide deleted rows (``argmax_select(..., deleted_field="is_deleted")`` in
  ``posthog/hogql/database/schema/person_distinct_ids.py``; ``persons.py`` likewise).

How the emulator stores it. The ``persons`` and ``person_distinct_ids`` tables stay what HogQL and the
REST persons list show: the current, non-deleted state (a deleted person's rows are removed from them,
a moved distinct id points at its new person). Beside them, two tables written only by mutations hold
the latest ClickHouse row of every person / distinct id that ever changed, with its ``version``,
``is_deleted`` and ``_timestamp``:

- ``person_versions`` (team_id, id, created_at, properties, is_identified, version, is_deleted, _timestamp)
- ``distinct_id_versions`` (team_id, distinct_id, person_id, version, is_deleted, _timestamp)

A row that never changed has ``version`` 0, ``is_deleted`` 0 and ``_timestamp`` = its person's
``created_at`` truncated to the second (the generator writes each person once). So the cached dataset
is untouched, and neither HogQL nor the REST handlers need a predicate: they read the current state.
The tables exist only in the private working copy, created by the first person mutation.
"""

from __future__ import annotations

import random
import sqlite3
from typing import Any

import orjson

from . import timeutil as tu

SCHEMA = """
CREATE TABLE IF NOT EXISTS person_versions (
    team_id INTEGER NOT NULL, id TEXT NOT NULL PRIMARY KEY, created_at TEXT NOT NULL, properties TEXT NOT NULL,
    is_identified INTEGER NOT NULL, version INTEGER NOT NULL, is_deleted INTEGER NOT NULL, _timestamp TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS person_versions_ts ON person_versions(team_id, _timestamp);
CREATE TABLE IF NOT EXISTS distinct_id_versions (
    team_id INTEGER NOT NULL, distinct_id TEXT NOT NULL, person_id TEXT NOT NULL, version INTEGER NOT NULL,
    is_deleted INTEGER NOT NULL, _timestamp TEXT NOT NULL, PRIMARY KEY (team_id, distinct_id));
CREATE INDEX IF NOT EXISTS distinct_id_versions_ts ON distinct_id_versions(team_id, _timestamp);
CREATE INDEX IF NOT EXISTS distinct_id_versions_person ON distinct_id_versions(team_id, person_id);
"""

_UPSERT_PERSON = ("INSERT INTO person_versions VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET "
                  "created_at=excluded.created_at, properties=excluded.properties, is_identified=excluded.is_identified, "
                  "version=excluded.version, is_deleted=excluded.is_deleted, _timestamp=excluded._timestamp")
_UPSERT_DISTINCT_ID = ("INSERT INTO distinct_id_versions VALUES (?,?,?,?,?,?) ON CONFLICT(team_id, distinct_id) DO UPDATE "
                       "SET person_id=excluded.person_id, version=excluded.version, is_deleted=excluded.is_deleted, "
                       "_timestamp=excluded._timestamp")


def kafka_second(text: str) -> str:
    """A storage timestamp truncated to the whole second: ClickHouse's ``_timestamp DateTime``."""
    return text[:19] + ".000000"


def has_tables(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='person_versions'").fetchone() is not None


def _person_version(w: sqlite3.Connection, team_id: int, pid: str) -> tuple[int, int]:
    row = w.execute("SELECT version, is_deleted FROM person_versions WHERE id=? AND team_id=?", (pid, team_id)).fetchone()
    return (row[0], row[1]) if row else (0, 0)


def _distinct_ids_of(w: sqlite3.Connection, team_id: int, pid: str) -> list[tuple[str, int]]:
    """(distinct_id, current version) of every distinct id that points at ``pid`` now."""
    versions = dict(w.execute("SELECT distinct_id, version FROM distinct_id_versions WHERE team_id=? AND person_id=? "
                              "AND is_deleted=0", (team_id, pid)).fetchall())
    current = [r[0] for r in w.execute("SELECT distinct_id FROM person_distinct_ids WHERE team_id=? AND person_id=? "
                                       "ORDER BY distinct_id", (team_id, pid))]
    return [(d, versions.get(d, 0)) for d in current]


def _materialize_distinct_ids(w: sqlite3.Connection, team_id: int, pid: str, created_at: str) -> None:
    """Write the never-changed distinct-id rows of ``pid`` with their implicit version 0 and
    ``_timestamp`` (the person's original created_at), before a merge changes that created_at."""
    w.execute("INSERT OR IGNORE INTO distinct_id_versions SELECT team_id, distinct_id, person_id, 0, 0, ? "
              "FROM person_distinct_ids WHERE team_id=? AND person_id=?", (kafka_second(created_at), team_id, pid))


def apply(w: sqlite3.Connection, rng: random.Random, team_id: int, now: str, merge_persons: int | list = 0,
          delete_persons: int | list = 0, update_persons: int | list = 0) -> dict[str, Any]:
    """Change persons of ``team_id`` at ``now`` (storage text) on the writable connection ``w``
    (the caller holds the store's write lock and commits). Each argument is a count (persons chosen by
    the seeded ``rng`` among the current ones, never twice) or explicit ids: ``merge_persons=[[into,
    from], ...]``, ``delete_persons=[id, ...]``, ``update_persons=[id, ...]``. Returns exactly what changed."""
    w.executescript(SCHEMA)
    ts = kafka_second(now)
    ids = [r[0] for r in w.execute("SELECT id FROM persons WHERE team_id=? ORDER BY pk", (team_id,))]
    explicit = {str(p) for arg in (delete_persons, update_persons) if isinstance(arg, list) for p in arg}
    explicit |= {str(p) for pair in (merge_persons if isinstance(merge_persons, list) else []) for p in pair}
    unknown = explicit - set(ids)
    if unknown:
        raise ValueError(f"not current persons of project {team_id}: {sorted(unknown)}")
    pool = [p for p in ids if p not in explicit]

    def count(arg: int | list, per: int = 1) -> int:
        return 0 if isinstance(arg, list) else per * int(arg)

    wanted = count(merge_persons, 2) + count(delete_persons) + count(update_persons)
    if wanted > len(pool):
        raise ValueError(f"{wanted} persons needed for this mutation, the project has {len(pool)} more")
    chosen = iter(rng.sample(pool, wanted))
    pairs = ([(str(a), str(b)) for a, b in merge_persons] if isinstance(merge_persons, list)
             else [(next(chosen), next(chosen)) for _ in range(int(merge_persons))])
    deleted = [str(p) for p in delete_persons] if isinstance(delete_persons, list) else [next(chosen) for _ in range(int(delete_persons))]
    updated = [str(p) for p in update_persons] if isinstance(update_persons, list) else [next(chosen) for _ in range(int(update_persons))]
    everyone = [p for pair in pairs for p in pair] + deleted + updated
    if len(set(everyone)) != len(everyone):
        raise ValueError("a person can take part in one change of a mutation only")
    out: dict[str, Any] = {"updated": [], "merged": [], "deleted": [], "merged_away": [], "moved_distinct_ids": {},
                           "deleted_distinct_ids": [], "versions": {}, "distinct_id_versions": {},
                           "changed_at": tu.db_to_iso_z(ts)}

    def person(pid: str) -> tuple:
        return w.execute("SELECT created_at, properties, is_identified, distinct_ids FROM persons WHERE id=? AND team_id=?",
                         (pid, team_id)).fetchone()

    for pid in updated:  # a $set: version + 1, new properties
        created, props, identified, _ = person(pid)
        version = _person_version(w, team_id, pid)[0] + 1
        new_props = orjson.loads(props)
        new_props["plan"] = {"free": "pro", "pro": "enterprise"}.get(new_props.get("plan"), "free")
        new_props["emulator_mutation"] = ts[:19]
        text = orjson.dumps(new_props).decode()
        w.execute("UPDATE persons SET properties=? WHERE id=? AND team_id=?", (text, pid, team_id))
        w.execute(_UPSERT_PERSON, (team_id, pid, created, text, identified, version, 0, ts))
        out["updated"].append(pid)
        out["versions"][pid] = version

    for into, other in pairs:  # nodejs mergePeople: keep `into`, move `other`'s distinct ids, delete `other`
        i_created, i_props, _, i_dids = person(into)
        o_created, o_props, o_identified, o_dids = person(other)
        _materialize_distinct_ids(w, team_id, into, i_created)
        merged_props = {**orjson.loads(o_props), **orjson.loads(i_props)}
        created = min(i_created, o_created)
        version = _person_version(w, team_id, into)[0] + 1
        text = orjson.dumps(merged_props).decode()
        all_dids = orjson.loads(i_dids) + orjson.loads(o_dids)
        w.execute("UPDATE persons SET properties=?, created_at=?, is_identified=1, distinct_ids=? WHERE id=? AND team_id=?",
                  (text, created, orjson.dumps(all_dids).decode(), into, team_id))
        w.execute(_UPSERT_PERSON, (team_id, into, created, text, 1, version, 0, ts))
        moved = []
        for did, d_version in _distinct_ids_of(w, team_id, other):
            w.execute(_UPSERT_DISTINCT_ID, (team_id, did, into, d_version + 1, 0, ts))
            out["distinct_id_versions"][did] = d_version + 1
            moved.append(did)
        w.execute("UPDATE person_distinct_ids SET person_id=? WHERE team_id=? AND person_id=?", (into, team_id, other))
        o_version = _person_version(w, team_id, other)[0] + 100
        w.execute(_UPSERT_PERSON, (team_id, other, o_created, o_props, o_identified, o_version, 1, ts))
        w.execute("DELETE FROM persons WHERE id=? AND team_id=?", (other, team_id))
        out["merged"].append({"into": into, "from": other, "moved_distinct_ids": moved})
        out["merged_away"].append(other)
        out["moved_distinct_ids"].update({d: into for d in moved})
        out["versions"][into] = version
        out["versions"][other] = o_version

    for pid in deleted:  # posthog/models/person/util.py delete_person: person and distinct ids, version + 100
        created, props, identified, _ = person(pid)
        for did, d_version in _distinct_ids_of(w, team_id, pid):
            w.execute(_UPSERT_DISTINCT_ID, (team_id, did, pid, d_version + 100, 1, ts))
            out["distinct_id_versions"][did] = d_version + 100
            out["deleted_distinct_ids"].append(did)
        w.execute("DELETE FROM person_distinct_ids WHERE team_id=? AND person_id=?", (team_id, pid))
        version = _person_version(w, team_id, pid)[0] + 100
        w.execute(_UPSERT_PERSON, (team_id, pid, created, props, identified, version, 1, ts))
        w.execute("DELETE FROM persons WHERE id=? AND team_id=?", (pid, team_id))
        out["deleted"].append(pid)
        out["versions"][pid] = version
    return out
