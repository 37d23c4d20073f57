"""PostHog's personal-API-key throttles (docs/posthog-api.md § 5).

- Moving windows per key and endpoint class (``posthog/rate_limit.py``, DRF SimpleRateThrottle):
  crud 480/min + 4800/h, analytics (persons, events, insights, session_recordings) 240/min + 1200/h,
  query 240/min + 2400/h. Every throttle of the class is checked; a throttle that allows the
  request records it even when another one refuses (DRF ``check_throttles``). The wait is
  DRF's ``remaining_duration / available_requests`` and the 429 carries ``Retry-After: ceil(wait)``.
- The query concurrency limit lives with the other query conditions in ``conditions.py``.
- ``scale`` divides every window (``rate_scale=60``: "per minute" becomes per second), which also
  divides the Retry-After values.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque

CLASS_LIMITS: dict[str, tuple[tuple[int, float], ...]] = {
    "crud": ((480, 60.0), (4800, 3600.0)),
    "analytics": ((240, 60.0), (1200, 3600.0)),
    "query": ((240, 60.0), (2400, 3600.0)),
}


class Throttled(Exception):
    """A 429 ``throttled`` error. ``wait`` is None for the concurrency limit (no Retry-After)."""

    def __init__(self, detail: str, wait: int | None):
        super().__init__(detail)
        self.detail = detail
        self.wait = wait


def throttle_detail(wait: int) -> str:
    """DRF's Throttled message (singular/plural as in rest_framework/exceptions.py)."""
    return f"Request was throttled. Expected available in {wait} second{'' if wait == 1 else 's'}."


class RateLimiter:
    def __init__(self, enabled: bool = False, scale: float = 1.0):
        self._lock = threading.Lock()
        self._history: dict[tuple[str, str, int], deque] = {}
        self.enabled = enabled
        self.scale = scale
        self.configure(enabled, scale)

    def configure(self, enabled: bool, scale: float | None = None) -> None:
        """Switch limits on/off and set the scale; clears the recorded history."""
        if scale is not None and scale <= 0:
            raise ValueError("rate scale must be > 0")
        with self._lock:
            self.enabled = bool(enabled)
            if scale is not None:
                self.scale = float(scale)
            self._history.clear()

    def check(self, key: str, endpoint_class: str) -> None:
        """Record one request; raise Throttled (with Retry-After seconds) when a window is full."""
        if not self.enabled:
            return
        now = time.monotonic()
        waits = []
        with self._lock:
            for idx, (num, duration) in enumerate(CLASS_LIMITS[endpoint_class]):
                duration = duration / self.scale
                hist = self._history.setdefault((key, endpoint_class, idx), deque())
                while hist and hist[0] <= now - duration:
                    hist.popleft()
                if len(hist) >= num:
                    remaining = duration - (now - hist[0])
                    available = num - len(hist) + 1
                    if available > 0:
                        waits.append(remaining / available)
                else:
                    hist.append(now)
        if waits:
            wait = max(1, math.ceil(max(waits)))
            raise Throttled(throttle_detail(wait), wait)
