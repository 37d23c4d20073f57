"""The PostHog layer: what PostHog sends and what it means, with no Airbyte in it.

`envelopes` (response bodies and page tokens), `errors` (what a status means, retry schedules,
messages), `hogql` (query text with checked literals), `events_plan` (the events export as a
pure state machine), `timestamps`. Nothing here imports `airbyte_cdk` (a unit test checks it);
the Airbyte layer (`source_posthog/streams`, `http.py`, `source.py`) adapts these to the CDK.
"""
