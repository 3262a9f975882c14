"""Stream entries for the uploader tests: valid events as the service writes them, and malformed ones."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from typing import Any

from shadowgate.events import (
    EXAMPLE_SERVED_AT,
    OutcomeEvent,
    PredictionEvent,
    example_prediction_event,
    to_stream_fields,
)
from shadowgate.features import FEATURE_NAMES, FEATURE_SETS

SERVED_AT = EXAMPLE_SERVED_AT

OLDER_SET = "fs-test-older"
"""A second feature set, as one still in the stream after the features changed: other names, another order."""

OLDER_ONLY = ("legacy_bureau_score", "channel=fax", "legacy_flag")
"""Its names the current set does not have."""

OLDER_NAMES = tuple(reversed([n for n in FEATURE_NAMES if n not in ("hour_sin", "hour_cos")])) + OLDER_ONLY
"""Its names: the current set's in reverse order, without two of them, and three of its own (one more name)."""


@contextlib.contextmanager
def older_set_known() -> Iterator[None]:
    """:data:`OLDER_SET` registered in :data:`~shadowgate.features.FEATURE_SETS` for the duration (usable inside a
    hypothesis test, where a function-scoped monkeypatch is not)."""
    FEATURE_SETS[OLDER_SET] = OLDER_NAMES
    try:
        yield
    finally:
        del FEATURE_SETS[OLDER_SET]


def older_features(i: int) -> dict[str, float]:
    """Transaction ``i``'s features in :data:`OLDER_SET`: the shared names hold the current values, the set's own
    names ``i + 0.25``, ``i + 0.5``, ``i + 0.75``."""
    current = prediction(i).features
    own = {name: i + 0.25 * (k + 1) for k, name in enumerate(OLDER_ONLY)}
    return {name: own[name] if name in own else current[name] for name in OLDER_NAMES}


def prediction(i: int, **inputs: Any) -> PredictionEvent:
    return example_prediction_event(i, **inputs)


def prediction_fields(i: int, **inputs: Any) -> dict[str, str]:
    return to_stream_fields(prediction(i, **inputs))


def older_prediction_fields(i: int) -> dict[str, str]:
    """Transaction ``i``'s event of :data:`OLDER_SET` (its features an array in that set's order); needs
    :func:`older_set_known`."""
    event = prediction(i).model_dump()
    return to_stream_fields(PredictionEvent(**{**event, "features": older_features(i), "feature_set": OLDER_SET}))


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
