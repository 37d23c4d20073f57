"""The CDK's standard source suite against the bundled emulator (acceptance-test-config.yml)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from airbyte_cdk.test.standard_tests import SourceTestSuiteBase

from tools.emulator import EmulatorConfig, EmulatorServer
from source_posthog import SourcePosthog, seams

REPO = Path(__file__).resolve().parent.parent
EMULATOR_PORT = 18976  # the port integration_tests/standard/*.json name


@pytest.fixture(scope="module", autouse=True)
def emulator() -> Iterator[EmulatorServer]:
    # Pacing is the connector's (3 requests/s in production); the emulator does not need it.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(seams.RATE_LIMIT_SCALE_ENV, "100")
        with EmulatorServer(EmulatorConfig(events=3_000, seed=3), port=EMULATOR_PORT) as server:
            yield server


class TestSourcePosthogStandardSuite(SourceTestSuiteBase):
    connector = SourcePosthog

    @classmethod
    def get_connector_root_dir(cls) -> Path:
        return REPO

