"""Seeded fault injection, decided per request before it is handled (never on /_emulator/).

Kinds:
- ``500``: PostHog's unhandled-exception body (drf-exceptions-hog ``server_error``);
- ``502``: a gateway's HTML page (what a load balancer sends when the app is down);
- ``429``: a DRF throttle body with ``Retry-After: 1``;
- ``reset``: the connection is closed (TCP RST) without any response;
- ``truncate``: status and headers with the FULL Content-Length, about half the body, then the
  socket is closed;
- ``slow``: the response is delayed by ``slow_seconds`` (default 5.0).

The sequence of decisions is a pure function of ``seed`` and the order of requests.
"""

from __future__ import annotations

import random
import threading
from dataclasses import asdict, dataclass, field

KINDS = ("500", "502", "429", "reset", "truncate", "slow")

BODY_500 = b'{"type":"server_error","code":"error","detail":"A server error occurred.","attr":null}'
BODY_502 = (b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
            b"<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n")
BODY_429 = (b'{"type":"throttled_error","code":"throttled",'
            b'"detail":"Request was throttled. Expected available in 1 second.","attr":null}')


@dataclass
class FaultConfig:
    """``FaultConfig(rates={"500": .05, "reset": .01}, seed=0, slow_seconds=5.0)``."""

    rates: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    slow_seconds: float = 5.0

    def __post_init__(self) -> None:
        self.rates = {str(k): float(v) for k, v in (self.rates or {}).items()}
        unknown = set(self.rates) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
        if any(v < 0 for v in self.rates.values()) or sum(self.rates.values()) > 1.0 + 1e-9:
            raise ValueError("fault rates must be >= 0 and sum to at most 1")

    @classmethod
    def parse(cls, spec: str | None, seed: int = 0, slow_seconds: float = 5.0) -> "FaultConfig":
        """``"500=0.05,502=0.02,429=0.03,reset=0.01,truncate=0.01,slow=0.01"`` → FaultConfig."""
        rates = {}
        for part in (spec or "").split(","):
            part = part.strip()
            if not part:
                continue
            kind, _, value = part.partition("=")
            rates[kind.strip()] = float(value)
        return cls(rates, seed, slow_seconds)

    def to_spec(self) -> str:
        return ",".join(f"{k}={v!r}" for k, v in self.rates.items())

    def to_dict(self) -> dict:
        return asdict(self)


class FaultInjector:
    def __init__(self, config: FaultConfig | None = None):
        self._lock = threading.Lock()
        self.configure(config or FaultConfig())

    def configure(self, config: FaultConfig) -> None:
        """Install a config and restart its seeded sequence."""
        with self._lock:
            self.config = config
            self._rng = random.Random(config.seed)

    def decide(self) -> str | None:
        """The fault for the next request, or None."""
        with self._lock:
            rates = self.config.rates
            if not any(rates.values()):
                return None
            r = self._rng.random()
            acc = 0.0
            for kind in KINDS:
                acc += rates.get(kind, 0.0)
                if r < acc:
                    return kind
            return None
