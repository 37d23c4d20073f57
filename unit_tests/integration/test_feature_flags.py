"""feature_flags: a counted DRF list (`{"count", "next", "previous", "results"}`), full refresh."""

from unit_tests.integration.counted_list import CountedListContract


class TestFeatureFlagsFullRefresh(CountedListContract):
    stream = "feature_flags"
    scope = "feature_flag:read"
