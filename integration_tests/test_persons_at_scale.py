"""Issue #13 "Persons at scale": the real `source-posthog read` of persons against the emulator.

60,000 persons, eight of them with 7,500 to 60,000 distinct ids (one person alone fills more than
one 50,000-row distinct-id request). Read through HogQL keyset pages, the records must equal the
emulator's ground truth field by field (distinct ids, properties, timestamps); read with a key
without `query:read`, the REST list must deliver the same records, and say why it was used.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping

import pytest

from tools.connector import run_sync, write_catalog, write_config
from tools.emulator import KEYS, EmulatorConfig, EmulatorServer
from tools.emulator.data import uuid_order_key
from source_posthog import settings
from source_posthog.api.timestamps import to_utc_iso

PERSONS = 60_000
ENV = {"SOURCE_POSTHOG_RATE_LIMIT_SCALE": "1000"}


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    config = EmulatorConfig(events=2_000, seed=13, base_time=datetime(2026, 11, 1, tzinfo=timezone.utc), persons=PERSONS,
                            heavy_persons=8, heavy_distinct_ids=60_000)
    with EmulatorServer(config) as server:
        yield server


def comparable(record: Mapping[str, Any]) -> Dict[str, Any]:
    """A person as both sides can state it: distinct ids as a sorted list, timestamps UTC ISO-8601."""
    out = {key: value for key, value in record.items() if key != "project_id" and value is not None}
    out["distinct_ids"] = sorted(out["distinct_ids"])
    for name in ("created_at", "last_seen_at"):
        if name in out:
            out[name] = to_utc_iso(out[name])
    return out


def truth(emulator: EmulatorServer) -> List[Dict[str, Any]]:
    return sorted((comparable(person) for person in emulator.app.store.person_records()), key=lambda p: p["id"])


def read_persons(emulator: EmulatorServer, directory: Path, api_key: str) -> Any:
    config = write_config(directory, emulator.url, api_key, emulator.project_id)
    catalog = write_catalog(directory, ["persons"], incremental=False)
    emulator.clear_requests()
    result = run_sync(config, catalog, env=ENV, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def test_given_60000_persons_some_with_thousands_of_distinct_ids_when_read_through_hogql_then_every_record_equals_the_ground_truth(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    expected = truth(emulator)
    assert len(expected) == PERSONS and max(len(p["distinct_ids"]) for p in expected) > settings.PERSONS_DISTINCT_IDS_PAGE_SIZE

    result = read_persons(emulator, tmp_path, emulator.api_key)

    delivered = [comparable(record) for record in result.records["persons"]]
    assert len(delivered) == len({p["id"] for p in delivered}), "a person was emitted twice"
    assert sorted(delivered, key=lambda p: p["id"]) == expected
    queries = [entry.get("hogql") or "" for entry in emulator.requests() if entry["path"].endswith("/query/")]
    persons_pages = [q for q in queries if " FROM persons" in q and "count()" not in q]
    distinct_id_requests = [q for q in queries if " FROM person_distinct_ids" in q]
    assert len(persons_pages) == PERSONS // settings.PERSONS_QUERY_PAGE_SIZE + 1
    assert len([q for q in queries if q.startswith("SELECT count() AS persons FROM persons")]) == 1, "one count for the estimate"
    assert len(distinct_id_requests) > len(persons_pages)  # the heavy persons need more than one request per page
    assert not any("/persons/" in entry["path"] for entry in emulator.requests()), "the REST list was read"
    assert result.states["persons"] == {"2": {"__ab_full_refresh_sync_complete": True}}
    assert not any("REST list" in line for line in result.logs)


def test_given_a_key_without_query_read_when_read_then_the_rest_list_delivers_the_same_records_and_the_log_says_why(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    result = read_persons(emulator, tmp_path, KEYS["no_query"])

    delivered = sorted((comparable(record) for record in result.records["persons"]), key=lambda p: p["id"])
    assert delivered == truth(emulator)
    assert not any(entry["path"].endswith("/query/") for entry in emulator.requests())
    (line,) = [line for line in result.logs if "REST list" in line]
    assert "'query:read'" in line and "slower" in line


def test_the_emulators_cost_model_charges_a_keyset_page_the_persons_after_its_bound_and_a_distinct_id_request_the_whole_table(tmp_path: Path) -> None:
    import requests as http

    config = EmulatorConfig(events=200, seed=3, base_time=datetime(2026, 11, 1, tzinfo=timezone.utc), persons=500,
                            heavy_persons=1, heavy_distinct_ids=300, query_cost_model=True, query_time_scale=0.0)
    with EmulatorServer(config) as server:
        ids = sorted((person["id"] for person in server.app.store.person_records()), key=uuid_order_key)

        def query(text: str) -> Any:
            response = http.post(f"{server.url}/api/projects/2/query/", json={"query": {"kind": "HogQLQuery", "query": text}},
                                 headers={"Authorization": f"Bearer {server.api_key}"}, timeout=30)
            assert response.status_code == 200, response.text
            return response.json()

        query("SELECT id FROM persons ORDER BY id ASC LIMIT 10")
        page = query(f"SELECT id FROM persons WHERE id > toUUID('{ids[399]}') ORDER BY id ASC LIMIT 10")
        query(f"SELECT person_id, distinct_id FROM person_distinct_ids WHERE person_id <= toUUID('{ids[9]}') ORDER BY person_id ASC, distinct_id ASC LIMIT 10")
        scanned = [entry["rows_scanned"] for entry in server.requests() if entry["path"].endswith("/query/")]

        assert [row[0] for row in page["results"]] == ids[400:410]
        distinct_ids = sum(len(person["distinct_ids"]) for person in server.app.store.person_records())
        assert scanned == [500, 101, distinct_ids]  # the bound itself is counted (>=): one row of slack


@pytest.mark.parametrize("introspection", [True, False], ids=["posthog-describes-the-key", "older-posthog-one-probe-per-stream"])
def test_given_a_key_without_person_read_when_check_discover_and_read_then_persons_is_offered_and_read_through_hogql(
    tmp_path: Path, introspection: bool
) -> None:
    config = EmulatorConfig(events=300, seed=29, base_time=datetime(2026, 11, 1, tzinfo=timezone.utc), persons=700, key_introspection=introspection)
    with EmulatorServer(config) as server:
        path = write_config(tmp_path, server.url, KEYS["no_persons"], server.project_id)

        check = run_sync(path, command="check", env=ENV)
        discover = run_sync(path, command="discover", env=ENV)
        server.clear_requests()
        read = run_sync(path, write_catalog(tmp_path, ["persons"], incremental=False), env=ENV)

        assert not [line for line in check.logs if "cannot be synced" in line and "persons" in line]
        assert b'"name":"persons"' in discover.stdout.replace(b" ", b"")
        assert read.returncode == 0, read.stderr[-2000:]
        by_id = lambda people: sorted(people, key=lambda p: p["id"])  # noqa: E731
        assert by_id(comparable(r) for r in read.records["persons"]) == by_id(comparable(p) for p in server.app.store.person_records())
        assert not any("/persons/" in entry["path"] for entry in server.requests())


def test_given_a_sync_killed_after_its_first_page_when_run_again_with_its_state_then_it_resumes_after_the_checkpointed_id(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    from tools.connector import write_state

    config = write_config(tmp_path, emulator.url, emulator.api_key, emulator.project_id)
    catalog = write_catalog(tmp_path, ["persons"], incremental=False)
    expected = sorted(truth(emulator), key=lambda p: uuid_order_key(p["id"]))  # HogQL's ORDER BY id: ClickHouse's UUID order

    killed = run_sync(config, catalog, env=ENV, kill_after_bytes=25_000_000, timeout=300)  # inside the second page

    assert killed.killed
    checkpoint = killed.states["persons"]["2"]
    assert checkpoint == {"after": expected[settings.PERSONS_QUERY_PAGE_SIZE - 1]["id"], "project_id": emulator.project_id}
    emulator.clear_requests()
    resumed = run_sync(config, catalog, state=write_state(tmp_path, killed.states), env=ENV, timeout=300)

    assert resumed.returncode == 0, resumed.stderr[-2000:]
    again = [comparable(record) for record in resumed.records["persons"]]
    assert sorted(again, key=lambda p: uuid_order_key(p["id"])) == expected[settings.PERSONS_QUERY_PAGE_SIZE:]
    first_query = next(entry["hogql"] for entry in emulator.requests() if entry["path"].endswith("/query/"))
    assert f"WHERE id > toUUID('{checkpoint['after']}')" in first_query
    delivered = {p["id"] for p in again} | {record["id"] for record in killed.records.get("persons", [])}
    assert delivered == {p["id"] for p in expected}
