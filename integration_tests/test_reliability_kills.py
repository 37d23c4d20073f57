"""SIGKILLs at random moments (issue "Reliability" 2): the last STATE always resumes to completion.

The real `source-posthog read` runs as a subprocess and is killed (SIGKILL, no cleanup) once it
has printed a seeded random number of bytes. Each kill is followed by a resume from the last
STATE of every stream (as the platform resumes an interrupted attempt: every stream's checkpoint,
`incremental_only=False`). A sync that completes ends its chain; the next chain is a fresh sync.
Over every chain, the union of delivered records must be exactly the ground truth.
"""

from __future__ import annotations

import math
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import orjson

from integration_tests.conftest import SUBPROCESS_ENV, assert_union_is_truth, error_messages
from tools.connector import ALL_STREAMS, SyncResult, run_sync, write_state

KILLS = 20
WORKERS = 2  # two chains run at once against the same emulator
SEED = 20240601
EVENTS = 10_000


@dataclass
class Kill:
    after_bytes: int
    stream: Optional[str]  # the stream whose output was last printed when the process died


@dataclass
class Chain:
    runs: List[SyncResult] = field(default_factory=list)
    kills: List[Kill] = field(default_factory=list)


def stream_at_kill(stdout: bytes) -> Optional[str]:
    for line in reversed(stdout.splitlines()[:-1]):  # the last line may be cut
        if line.startswith(b'{"type":"RECORD"') or line.startswith(b'{"type":"STATE"'):
            message = orjson.loads(line)
            if message["type"] == "RECORD":
                return message["record"]["stream"]
            return message["state"]["stream"]["stream_descriptor"]["name"]
    return None


def kill_point(rng: random.Random, full_sync_bytes: int) -> int:
    """Half uniform over a whole sync's output (mostly events), half log-uniform (the small streams
    printed first get their share of kills)."""
    if rng.random() < 0.5:
        return rng.randint(1, full_sync_bytes)
    return int(math.exp(rng.uniform(math.log(1_000), math.log(full_sync_bytes))))


def run_chains(kills: int, seed: int, directory: Path, config: Path, catalog: Path, full_sync_bytes: int) -> List[Chain]:
    """Fresh syncs, each killed and resumed until it completes, until `kills` kills happened."""
    rng = random.Random(seed)
    chains: List[Chain] = []
    killed = 0
    while killed < kills:
        chain = Chain()
        chains.append(chain)
        states: Dict[str, Mapping[str, Any]] = {}
        while True:
            state = write_state(directory, states, name=f"state_{len(chains)}_{len(chain.runs)}.json") if states else None
            threshold = kill_point(rng, full_sync_bytes) if killed < kills else None
            result = run_sync(config, catalog, state=state, kill_after_bytes=threshold, env=SUBPROCESS_ENV)
            chain.runs.append(result)
            states.update(result.states)  # a stream without a new STATE keeps its last one
            if not result.killed:
                assert result.returncode == 0, error_messages(result)
                break
            killed += 1
            chain.kills.append(Kill(threshold, stream_at_kill(result.stdout)))
    return chains


def test_given_20_sigkills_at_random_moments_across_syncs_of_all_streams_when_each_resumes_from_the_last_state_then_the_union_is_the_ground_truth(
    start_emulator: Any, workspace: Any, tmp_path: Path
) -> None:
    emulator = start_emulator(events=EVENTS, seed=5)
    files = workspace(emulator)
    config, catalog = files.config(events_page_size=1000), files.catalog(ALL_STREAMS)
    truth = emulator.ground_truth()
    baseline = run_sync(config, catalog, env=SUBPROCESS_ENV)  # sizes the random kill points
    assert baseline.returncode == 0, error_messages(baseline)
    assert_union_is_truth([baseline], truth)

    share = [KILLS // WORKERS + (1 if worker < KILLS % WORKERS else 0) for worker in range(WORKERS)]
    with ThreadPoolExecutor(WORKERS) as pool:
        futures = []
        for worker, kills in enumerate(share):
            directory = tmp_path / f"worker{worker}"
            directory.mkdir()
            futures.append(pool.submit(run_chains, kills, SEED + worker, directory, config, catalog, len(baseline.stdout)))
        chains = [chain for future in futures for chain in future.result()]

    all_kills = [kill for chain in chains for kill in chain.kills]
    assert len(all_kills) == KILLS
    for number, chain in enumerate(chains):
        try:
            assert_union_is_truth(chain.runs, truth)
        except AssertionError as error:
            raise AssertionError(f"chain {number} (kills {chain.kills}): {error}") from None
    killed_in = {kill.stream for kill in all_kills}
    assert len(killed_in) >= 4, f"the kills should land in several streams, got {sorted(map(str, killed_in))}"
