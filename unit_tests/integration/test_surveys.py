"""surveys: a counted DRF list, full refresh; UUID ids; archived surveys are in the list (docs/posthog-api.md § 14.5)."""

from unit_tests.integration.counted_list import CountedListContract


class TestSurveysFullRefresh(CountedListContract):
    stream = "surveys"
    scope = "survey:read"
    id_format = "0190f7aa-1b2c-7d3e-8f40-{:012d}"
