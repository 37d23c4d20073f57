"""cohorts: a counted DRF list (`{"count", "next", "previous", "results"}`), full refresh."""

from unit_tests.integration.counted_list import CountedListContract


class TestCohortsFullRefresh(CountedListContract):
    stream = "cohorts"
    scope = "cohort:read"
