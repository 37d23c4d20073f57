"""Issue "Events": a killed `source-posthog read` of 100k events resumes from the last STATE it printed.

The events export checkpoints after every HogQL page, so a kill costs at most the page that was
being printed: those records are printed again by the resumed run, nothing else is, and nothing
is lost. Real subprocesses, SIGKILL after a seeded random number of bytes.
"""

from __future__ import annotations

import random
from typing import Any, List

from integration_tests.conftest import SUBPROCESS_ENV, duplicates, error_messages
from tools.connector import SyncResult, run_sync

EVENTS = 100_000
PAGE_SIZE = 10_000  # ten pages or more: every kill lands inside some page
KILLS = 5
SEED = 424242
# ~1.6 kB per event: kills after 0.1-25 MB leave at least 40 MB to print, so each one happens.
KILL_AFTER_BYTES = (100_000, 25_000_000)


def records_after_last_state(result: SyncResult) -> List[str]:
    """The events a killed run printed after its last STATE: delivered, but not checkpointed."""
    lines = result.stdout.splitlines()
    if not result.stdout.endswith(b"\n"):
        lines = lines[:-1]  # cut by the kill: never delivered
    tail: List[str] = []
    for line in lines:
        if line.startswith(b'{"type":"STATE"'):
            tail = []
        elif line.startswith(b'{"type":"RECORD"'):
            tail.append(line)
    return tail


def test_given_a_read_of_100k_events_killed_at_random_moments_when_each_run_resumes_from_the_last_state_it_printed_then_every_event_arrives_and_at_most_one_page_per_kill_repeats(
    start_emulator: Any, workspace: Any
) -> None:
    emulator = start_emulator(events=EVENTS, seed=11)
    files = workspace(emulator)
    config, catalog = files.config(events_page_size=PAGE_SIZE), files.catalog(["events"])
    rng = random.Random(SEED)
    runs: List[SyncResult] = []
    state = None

    while True:
        kill_after = rng.randint(*KILL_AFTER_BYTES) if len(runs) < KILLS else None
        result = run_sync(config, catalog, state=state, kill_after_bytes=kill_after, env=SUBPROCESS_ENV)
        runs.append(result)
        if not result.killed:
            break
        if "events" in result.states:  # the last STATE it printed; none printed: the previous one stands
            state = files.state({"events": result.states["events"]}, name=f"state_{len(runs)}.json")

    final = runs[-1]
    assert final.returncode == 0, error_messages(final)
    assert [run.killed for run in runs] == [True] * KILLS + [False]
    delivered = [uuid for run in runs for uuid in run.keys("events")]
    assert set(delivered) == set(emulator.ground_truth("events")), "every event must be delivered"
    tails = [len(records_after_last_state(run)) for run in runs[:-1]]
    assert all(tail <= PAGE_SIZE for tail in tails), f"uncheckpointed records per kill: {tails}"
    repeated = duplicates(delivered)
    assert len(repeated) <= KILLS * PAGE_SIZE
    assert len(repeated) == sum(tails), f"only the uncheckpointed records may repeat: {len(repeated)} repeated, tails {tails}"
