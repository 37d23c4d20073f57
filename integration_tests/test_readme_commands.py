"""The README's shell snippets, run as written against the emulator (issue #21, item 8).

The `python3 -c '…'` that builds a configured catalog from `discover`, and the one that keeps the
last STATE of each stream from a read's output, even a read a `kill -9` cut mid-line; the next
read from that state completes the data."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import List

from integration_tests.conftest import SUBPROCESS_ENV, assert_union_is_truth, error_messages
from tools.connector import REPO, SyncResult, parse_output, run_sync, write_config

SNIPPET = re.compile(r"python3 -c '(.*?)'\n", re.S)


def readme_snippets() -> List[str]:
    return SNIPPET.findall((REPO / "README.md").read_text())


def run_snippet(code: str, cwd: Path) -> None:
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_given_the_readme_snippets_when_run_as_written_then_the_catalog_and_the_resumed_state_work(start_emulator, tmp_path: Path) -> None:
    catalog_snippet, state_snippet = [code for code in readme_snippets() if "discover.jsonl" in code or "out.jsonl" in code]
    emulator = start_emulator(events=3_000, seed=51)
    config = write_config(tmp_path, emulator.url, emulator.api_key, emulator.project_id, anchor_date="2020-01-01")

    discover = run_sync(config, command="discover", env=SUBPROCESS_ENV)
    (tmp_path / "discover.jsonl").write_bytes(discover.stdout)
    run_snippet(catalog_snippet, tmp_path)
    catalog = json.loads((tmp_path / "catalog.json").read_text())
    modes = {item["stream"]["name"]: (item["sync_mode"], item["destination_sync_mode"]) for item in catalog["streams"]}
    assert modes["events"] == ("incremental", "append_dedup") and modes["cohorts"] == ("full_refresh", "overwrite")
    assert len(modes) == len(json.loads(next(line for line in discover.stdout.splitlines() if b'"CATALOG"' in line))["catalog"]["streams"])

    full = run_sync(config, tmp_path / "catalog.json", env=SUBPROCESS_ENV)
    assert full.returncode == 0, error_messages(full)
    # what a `kill -9` halfway leaves in out.jsonl: the output up to a line cut in half
    middle = full.stdout.index(b"\n", len(full.stdout) // 2) + 1
    cut = full.stdout[: middle + len(full.stdout[middle:].split(b"\n", 1)[0]) // 2]
    (tmp_path / "out.jsonl").write_bytes(cut)
    killed = parse_output(cut, SyncResult(returncode=-9, killed=True))
    run_snippet(state_snippet, tmp_path)
    states = json.loads((tmp_path / "state.json").read_text())
    assert states and all(state["type"] == "STREAM" for state in states)
    assert len(states) < len(modes), "the cut sync had not reached every stream"

    resumed = run_sync(config, tmp_path / "catalog.json", state=tmp_path / "state.json", env=SUBPROCESS_ENV)
    assert resumed.returncode == 0, error_messages(resumed)
    assert_union_is_truth([killed, resumed], emulator.ground_truth())
