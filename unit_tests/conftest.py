"""Shared fixtures: frozen time, recorded (never real) sleeps, fast pacing, configs, an HTTP mocker.

- Time is frozen at `builders.NOW`. Every `time.sleep` is replaced: it advances the frozen clock
  by the requested duration instead of waiting, so a 120 s Retry-After costs nothing and the
  moving-window budget still sees time pass.
- `sleeps` lists the backoff waits the CDK's retry loop asked for (the calls made from
  `airbyte_cdk.sources.streams.http.rate_limiting`, i.e. the connector's backoff + the CDK's
  extra second); `budget_waits` lists the pacing waits of the shared `HttpAPIBudget`.
- The mocked transport behaves like requests' real `HTTPAdapter`: a response's `.request` is the
  `PreparedRequest` that was sent (requests_mock hands back a fresh proxy per call), and a
  connection error or timeout raised while sending carries that request. The connector's retry
  counters rely on both, as they may in production.
- `SOURCE_POSTHOG_RATE_LIMIT_SCALE=1000` shrinks every pacing window, so pacing never waits
  for real.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List
from unittest import mock

import pytest
import requests
import requests_mock.adapter
from airbyte_cdk.test.mock_http import HttpMocker
import freezegun
from freezegun import freeze_time

from source_posthog import seams
from unit_tests.support.cdk_seams import validate_all_matchers_called
from unit_tests.support.sleeps import BACKOFF_MODULE, SleepRecorder
from unit_tests.builders import NOW, ConfigBuilder

freezegun.configure(extend_ignore_list=["_pytest", "pytest_timeout"])  # keep pytest's own clocks real



@pytest.fixture(autouse=True)
def _fast_pacing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(seams.RATE_LIMIT_SCALE_ENV, "1000")


@pytest.fixture(autouse=True)
def _faithful_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    original_send = requests_mock.adapter.Adapter.send

    def send(self: Any, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        try:
            response = original_send(self, request, **kwargs)
        except (requests.ConnectionError, requests.Timeout) as error:
            # HTTPAdapter.send raises these with `request=request`.
            if error.request is None and not isinstance(error, requests_mock.exceptions.NoMockAddress):
                error.request = request
            raise
        response.request = request  # HTTPAdapter.build_response: `response.request = req`
        return response

    monkeypatch.setattr(requests_mock.adapter.Adapter, "send", send)


@pytest.fixture(autouse=True)
def frozen_time() -> Iterator[Any]:
    with freeze_time(NOW) as frozen:
        yield frozen


@pytest.fixture(autouse=True)
def sleep_recorder(frozen_time: Any) -> Iterator[SleepRecorder]:
    recorder = SleepRecorder(advance=frozen_time.tick)
    with mock.patch(f"{BACKOFF_MODULE}.time.sleep", side_effect=recorder):
        yield recorder


@pytest.fixture
def sleeps(sleep_recorder: SleepRecorder) -> List[float]:
    """The backoff waits of the retry loop, in seconds, in order."""
    return sleep_recorder.backoffs


@pytest.fixture
def budget_waits(sleep_recorder: SleepRecorder) -> List[float]:
    return sleep_recorder.budget_waits


@pytest.fixture
def config() -> Dict[str, Any]:
    return ConfigBuilder().build()


@pytest.fixture
def http_mocker() -> Iterator[HttpMocker]:
    """An entered `HttpMocker`; at teardown every mocked request must have been called."""
    mocker = HttpMocker()
    with mocker:
        yield mocker
    validate_all_matchers_called(mocker)
