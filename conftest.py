"""Repository-wide guard (issue "Reliability" 5): no test's output may contain an API key.

After every test, what it printed (file descriptors 1 and 2 through `capfd`, or `capsys` when
the test uses that itself) and what it logged (`caplog`, setup and call) is scanned for every
personal API key the tests use (the unit tests' key, and the emulator's keys in
integration_tests, `api_keys_in_use`), in every form (`unit_tests/support/secrets.py`). Output a test reads itself with `readouterr()` is scanned as it is
read. Subprocess output never reaches these file descriptors (`tools/connector.py` `run_sync` pipes it):
`run_sync` scans the child's stdout and stderr itself.
"""

from __future__ import annotations

import logging
from typing import Any, Iterator, List

import pytest

from unit_tests.support.secrets import known_secrets, leaked

@pytest.fixture(scope="session")
def api_keys_in_use() -> List[str]:
    """The keys the tests of a tree use beyond the unit tests' own (integration_tests adds the emulator's)."""
    return []


@pytest.fixture(autouse=True)
def _no_api_key_in_output(request: pytest.FixtureRequest, api_keys_in_use: List[str]) -> Iterator[None]:
    secrets = known_secrets(*api_keys_in_use)

    def _leaks(text: str) -> List[str]:
        return leaked(text, secrets)

    capture: Any = request.getfixturevalue("capsys" if "capsys" in request.fixturenames else "capfd")
    caplog: pytest.LogCaptureFixture = request.getfixturevalue("caplog")
    found: List[str] = []
    read = capture.readouterr

    def scanned_readouterr() -> Any:
        captured = read()
        found.extend(_leaks(captured.out + captured.err))
        return captured

    capture.readouterr = scanned_readouterr
    yield
    captured = read()  # pytest has already kept it for its report
    found.extend(_leaks(captured.out + captured.err))
    formatter = logging.Formatter()
    for when in ("setup", "call"):
        for record in caplog.get_records(when):
            found.extend(_leaks(formatter.format(record)))
    if found:
        pytest.fail(f"an API key appeared in the test's output or logs: {sorted(set(found))}", pytrace=False)
