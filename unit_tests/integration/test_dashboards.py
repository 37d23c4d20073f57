"""dashboards: a counted DRF list (`{"count", "next", "previous", "results"}`), full refresh; PostHog
leaves out deleted dashboards (docs/posthog-api.md § 14.3)."""

from unit_tests.integration.counted_list import CountedListContract


class TestDashboardsFullRefresh(CountedListContract):
    stream = "dashboards"
    scope = "dashboard:read"
