"""Stream entries for the uploader tests: valid events as the service writes them, and malformed ones."""

from __future__ import annotations

import datetime as dt
from typing import Any

from shadowgate.events import (
    EXAMPLE_SERVED_AT,
    OutcomeEvent,
    PredictionEvent,
    example_prediction_event,
    to_stream_fields,
)

SERVED_AT = EXAMPLE_SERVED_AT


def prediction(i: int, **inputs: Any) -> PredictionEvent:
    return example_prediction_event(i, **inputs)


def prediction_fields(i: int, **inputs: Any) -> dict[str, str]:
    return to_stream_fields(prediction(i, **inputs))


def outcome_fields(i: int) -> dict[str, str]:
    return to_stream_fields(
        OutcomeEvent(
            event_id=f"out{i:029x}",
            transaction_id=f"tx_{i:07d}",
            event_type="default" if i % 10 == 0 else "instalment_paid",
            event_timestamp=SERVED_AT + dt.timedelta(days=30, seconds=i),
            instalment_number=None if i % 10 == 0 else 1,
            amount=32.5,
        )
    )
