"""The retry-sleep recorder: sleeping retries are patched out of every test.

It replaces `time.sleep` (where a test patches it) and sorts each call by the module that made it:
- the CDK's retry loop (`airbyte_cdk.sources.streams.http.rate_limiting`): `backoffs`, i.e. the
  connector's backoff plus the CDK's extra second;
- the shared `HttpAPIBudget` (`airbyte_cdk.sources.streams.call_rate`): `budget_waits`;
- anyone else: `other`.
No recorded sleep waits for real: each moves the test's clock instead (`advance`), so a 120 s
Retry-After costs nothing and a moving-window budget still sees time pass. `real_sleep` is
called for `other` sleeps where a test wants those to happen (threads polling a server).
"""

from __future__ import annotations

import sys
from typing import Callable, List, Optional

BACKOFF_MODULE = "airbyte_cdk.sources.streams.http.rate_limiting"
BUDGET_MODULE = "airbyte_cdk.sources.streams.call_rate"


def _caller_module() -> str:
    frame = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__", "").startswith(("unittest.mock", __name__)):
        frame = frame.f_back
    return frame.f_globals.get("__name__", "") if frame is not None else ""


class SleepRecorder:
    def __init__(self, advance: Optional[Callable[[float], None]] = None, real_sleep: Optional[Callable[[float], None]] = None) -> None:
        self.advance = advance
        self.real_sleep = real_sleep
        self.backoffs: List[float] = []
        self.budget_waits: List[float] = []
        self.other: List[float] = []

    def __call__(self, seconds: float) -> None:
        caller = _caller_module()
        if caller == BACKOFF_MODULE:
            self.backoffs.append(seconds)
        elif caller == BUDGET_MODULE:
            self.budget_waits.append(seconds)
            # The budget measures its windows in whole milliseconds; a real clock would have moved
            # on while it computed a 0 ms wait, a frozen one must be moved by hand.
            seconds = max(seconds, 0.001)
        else:
            if seconds:
                self.other.append(seconds)
            if self.real_sleep is not None:
                self.real_sleep(seconds)
                return
        if self.advance is not None and seconds and seconds > 0:
            self.advance(seconds)
