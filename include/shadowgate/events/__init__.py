"""The event contract: every event shadowgate writes (prediction, outcome, deployment) and its versions.

Serving writes events and the pipelines read them; both depend on this package and not on each other. One module per
concern: :mod:`~shadowgate.events.base` (schema version, ids, the base model), one module per event
(:mod:`~shadowgate.events.prediction`, :mod:`~shadowgate.events.outcome`), :mod:`~shadowgate.events.envelope` (Redis
Stream entries and why one is malformed) and :mod:`~shadowgate.events.schemas` (everything derived from the models:
the payload and warehouse Arrow schemas, the warehouse DDL columns, the constraints the fast decoder checks; imported
on its own, as it needs pyarrow).
"""

from shadowgate.events.base import (
    ARRAY_FEATURES_SINCE,
    EVENT_ID_PATTERN,
    SCHEMA_VERSION,
    new_event_id,
)
from shadowgate.events.deployment import (
    DEPLOYMENT_ACTIONS,
    DEPLOYMENT_SCHEMA_VERSION,
    DeploymentAction,
    DeploymentEvent,
    deployment_event_id,
)
from shadowgate.events.envelope import (
    KINDS,
    OUTCOME,
    PREDICTION,
    STREAM_ENCODING_VERSION,
    Event,
    MalformedEventError,
    MalformedReason,
    from_stream_fields,
    to_stream_fields,
)
from shadowgate.events.outcome import OUTCOME_TYPE_ALIASES, OutcomeEvent, OutcomeType, outcome_event_id
from shadowgate.events.prediction import (
    EXAMPLE_SERVED_AT,
    ArmAssignment,
    Decision,
    ModelScore,
    PredictionEvent,
    ScoreStatus,
    example_prediction_event,
    hash_customer_id,
)

__all__ = [
    "ARRAY_FEATURES_SINCE",
    "DEPLOYMENT_ACTIONS",
    "DEPLOYMENT_SCHEMA_VERSION",
    "EVENT_ID_PATTERN",
    "EXAMPLE_SERVED_AT",
    "KINDS",
    "OUTCOME",
    "OUTCOME_TYPE_ALIASES",
    "PREDICTION",
    "SCHEMA_VERSION",
    "STREAM_ENCODING_VERSION",
    "ArmAssignment",
    "Decision",
    "DeploymentAction",
    "DeploymentEvent",
    "Event",
    "MalformedEventError",
    "MalformedReason",
    "ModelScore",
    "OutcomeEvent",
    "OutcomeType",
    "PredictionEvent",
    "ScoreStatus",
    "deployment_event_id",
    "example_prediction_event",
    "from_stream_fields",
    "hash_customer_id",
    "new_event_id",
    "outcome_event_id",
    "to_stream_fields",
]
