"""event_definitions: a counted DRF list (`{"count", "next", "previous", "results"}`), full refresh."""

from unit_tests.integration.counted_list import CountedListContract


class TestEventDefinitionsFullRefresh(CountedListContract):
    stream = "event_definitions"
    scope = "event_definition:read"
    id_format = "0190aa00-1111-7222-8333-{:012d}"
