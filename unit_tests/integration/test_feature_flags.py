"""feature_flags: a counted DRF list read in two passes, active then archived (PostHog lists
archived flags only when `archived` is passed). Incremental reads: test_change_time_lists.py."""

from unit_tests.integration.counted_list import CountedListContract


class TestFeatureFlagsFullRefresh(CountedListContract):
    stream = "feature_flags"
    scope = "feature_flag:read"
    pass_params = ({"archived": "false"}, {"archived": "true"})

    # Not this stream's behaviour: feature_flags is incremental on updated_at (test_change_time_lists.py).
    test_given_incremental_requested_when_read_then_full_list_is_read = None  # type: ignore[assignment]
