"""Stream entries for the uploader tests: valid events as the service writes them, and malformed ones."""

from __future__ import annotations

import datetime as dt
from typing import Any

from shadowgate.contract import example_transaction, request_model
from shadowgate.features import FEATURE_NAMES, features_one
from shadowgate.serving.events import (
    ModelScore,
    OutcomeEvent,
    PredictionEvent,
    hash_customer_id,
    to_stream_fields,
)

SERVED_AT = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)


def prediction(i: int, **inputs: Any) -> PredictionEvent:
    tx = (
        request_model()
        .model_validate(
            {**example_transaction(), "transaction_id": f"tx_{i:07d}", "customer_id": f"cus_{i % 97}", **inputs}
        )
        .model_dump()
    )
    features = features_one(tx)
    return PredictionEvent(
        event_id=f"{i:032x}",
        transaction_id=tx["transaction_id"],
        customer_id_hash=hash_customer_id(tx["customer_id"], salt="salt"),
        merchant_id=tx["merchant_id"],
        event_timestamp=tx["event_timestamp"],
        served_at=SERVED_AT + dt.timedelta(seconds=i),
        features=dict(zip(FEATURE_NAMES, features, strict=True)),
        inputs={k: v for k, v in tx.items() if k != "customer_id"},
        scores=[
            ModelScore(alias="champion", model_version="1", score=0.1, latency_us=2.0),
            ModelScore(alias="challenger", model_version="2", score=0.2, latency_us=20.0),
        ],
        served_by="champion@v1",
        score=0.1,
        decision="approve",
        risk_level="low",
        policy_name="conservative",
        policy_version="1",
    )


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
