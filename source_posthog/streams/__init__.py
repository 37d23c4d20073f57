from source_posthog.streams.activity_log import ActivityLog
from source_posthog.streams.annotations import Annotations
from source_posthog.streams.cohort_membership import CohortMembership
from source_posthog.streams.events import Events
from source_posthog.streams.groups import Groups, GroupTypes
from source_posthog.streams.persons import Persons
from source_posthog.streams.property_definitions import PropertyDefinitions
from source_posthog.streams.resources import (
    Actions,
    Cohorts,
    Dashboards,
    EventDefinitions,
    Experiments,
    FeatureFlags,
    Insights,
    Projects,
    Surveys,
)
from source_posthog.streams.session_recordings import SessionRecordings
from source_posthog.streams.sessions import Sessions

# The order of discover and of a sync: small configuration streams first, events last.
STREAM_CLASSES = (
    Projects,
    Cohorts,
    FeatureFlags,
    Insights,
    Annotations,
    Actions,
    EventDefinitions,
    PropertyDefinitions,
    GroupTypes,
    Groups,
    Dashboards,
    Experiments,
    Surveys,
    ActivityLog,
    Persons,
    CohortMembership,
    SessionRecordings,
    Sessions,
    Events,
)

__all__ = [cls.__name__ for cls in STREAM_CLASSES] + ["STREAM_CLASSES"]
