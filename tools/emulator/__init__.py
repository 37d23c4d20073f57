"""A local PostHog API emulator for the source-posthog tests, demo and benchmarks.

It behaves like PostHog's private API in every respect that ``shared/posthog-api.md`` documents
(paths, envelopes, page caps, orders, strict bounds, error bodies, rate limits, HogQL results)
and can inject seeded faults.

    from tools.emulator import EmulatorConfig, EmulatorServer

    with EmulatorServer(EmulatorConfig(events=5_000)) as emu:
        ...  # point the connector at emu.url with emu.api_key and emu.project_id
"""

from .client import EmulatorProcess
from .config import EmulatorConfig
from .faults import FaultConfig
from .keys import KEYS, PROJECT_ID
from .server import EmulatorServer

__all__ = ["EmulatorConfig", "FaultConfig", "EmulatorServer", "EmulatorProcess", "KEYS", "PROJECT_ID"]
