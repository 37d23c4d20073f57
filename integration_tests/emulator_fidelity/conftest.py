"""Fixtures of the emulator's fidelity tests: a dataset cache per module and fresh servers."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from tools.emulator import EmulatorConfig, EmulatorServer

BASE = datetime.now(timezone.utc).replace(second=0, microsecond=0)  # the datasets' "now"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("emulator-cache")


@pytest.fixture
def make_emu(data_dir):
    """Fresh servers for tests that mutate data, inject faults or enable limits."""
    started = []

    def make(**kw):
        kw.setdefault("events", 400)
        kw.setdefault("seed", 5)
        kw.setdefault("base_time", BASE)
        kw.setdefault("data_dir", data_dir)
        server = EmulatorServer(EmulatorConfig(**kw)).start()
        started.append(server)
        return server

    yield make
    for s in started:
        s.stop()
