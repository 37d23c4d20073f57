"""The tests' only touches of airbyte-cdk internals, each named for what it checks.
unit_tests/test_cdk_contract.py fails if one of them stops existing after a CDK upgrade."""

from __future__ import annotations

from typing import Any, List, Tuple

from airbyte_cdk.sources.streams.call_rate import APIBudget, MovingWindowCallRatePolicy
from airbyte_cdk.test.mock_http import HttpMocker


def validate_all_matchers_called(mocker: HttpMocker) -> None:
    """What `@HttpMocker()` as a decorator checks after a test; the fixture form must ask for it."""
    mocker._validate_all_matchers_called()


def budget_used_by(client: Any) -> APIBudget:
    """The budget a PostHogClient's CDK HttpClient really paces with."""
    return client.http._api_budget


def rates_of(policy: MovingWindowCallRatePolicy) -> List[Tuple[int, int]]:
    """(window in ms, calls) of each rate of a moving-window policy."""
    return sorted((rate.interval, rate.limit) for rate in policy._bucket.rates)


SEAMS: Tuple[Any, ...] = (validate_all_matchers_called, budget_used_by, rates_of)
