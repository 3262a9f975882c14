"""The prediction event: one decision — the request as served, every model's score, and what decided the outcome."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

import pydantic
from pydantic import AwareDatetime, Field, SecretStr

from shadowgate.events.base import (
    ARRAY_FEATURES_SINCE,
    SCHEMA_VERSION,
    ContractInputs,
    EventId,
    FeatureVector,
    FrozenEvent,
    UnitInterval,
    new_event_id,
    utc_now,
)

CUSTOMER_HASH_HEX_CHARS = 32
"""Length of :func:`hash_customer_id` output: 128 bits is plenty to avoid collisions among customers."""

Decision = Literal["approve", "deny", "manual_review"]
ScoreStatus = Literal["ok", "error", "timeout", "skipped"]

LOGGED_INPUTS = ContractInputs(excluded=("customer_id",))
"""What a prediction logs of the transaction: every contract field but the raw customer id (its keyed hash is
logged instead)."""


class ModelScore(FrozenEvent):
    """What one model (champion, challenger, …) said about one transaction."""

    alias: str
    """Registry alias the model was loaded by (``champion``, ``challenger``, …)."""

    model_version: str | None = None
    """Registry version of the model behind the alias at scoring time (None: no model was loaded)."""

    score: float | None = None
    """Predicted default probability; ``None`` when the model did not produce one (see ``status``)."""
    # model_version and score default to None: in a batch parsed by Arrow a missing key and a null are the same
    # thing, so the fast decoder can only agree with this model if the model does not tell them apart either.

    latency_us: float = Field(ge=0.0)
    """Wall time spent scoring, in microseconds."""

    status: ScoreStatus = "ok"
    """``ok``, or why there is no usable score."""

    error: str | None = None
    """Short error description when ``status`` is ``error`` or ``timeout``."""


class ArmAssignment(FrozenEvent):
    """The arm one experiment put this request in."""

    experiment_id: str
    """Id of the experiment."""

    experiment_version: str
    """Version of the experiment's configuration (arms and weights) that made the assignment."""

    arm: str
    """Name of the arm the request was assigned to."""

    propensity: UnitInterval
    """Probability of being assigned to this arm (needed for unbiased off-policy estimates)."""

    mode: str
    """How the arm was used (for example ``shadow`` or ``live``)."""


def known_feature_set(names: Iterable[str]) -> str | None:
    """Id of the first known feature set (the current one first) whose names are exactly ``names``, in any order."""
    from shadowgate.features import FEATURE_SET, FEATURE_SETS

    wanted = tuple(names)
    for set_id in (FEATURE_SET, *FEATURE_SETS):
        known = FEATURE_SETS.get(set_id, ())
        if known == wanted or (len(known) == len(wanted) and set(known) == set(wanted)):
            return set_id
    return None


class PredictionEvent(FrozenEvent):
    """One decision: the request as served, every model's score, and what decided the outcome."""

    schema_version: int = Field(default=SCHEMA_VERSION, ge=1, le=SCHEMA_VERSION)
    """Payload schema version (:data:`SCHEMA_VERSION` when written by this code)."""

    event_id: EventId = Field(default_factory=new_event_id)
    """Unique id of the event (32 hex characters); also the prediction id returned to the caller."""

    transaction_id: str
    """Id of the purchase (joins outcomes to predictions)."""

    customer_id_hash: str
    """Keyed hash of the customer id (:func:`hash_customer_id`); the raw id is never logged."""

    merchant_id: str
    """Id of the merchant."""

    event_timestamp: AwareDatetime
    """When the purchase was attempted (from the request)."""

    served_at: AwareDatetime = Field(default_factory=utc_now)
    """When the decision was taken."""

    features: Annotated[dict[str, float], FeatureVector(set_field="feature_set")]
    """The engineered features exactly as the models saw them. On the wire either this object or, with
    ``feature_set``, an array in that set's order (read back into this object)."""

    feature_set: str | None = None
    """Id of the feature set (:data:`~shadowgate.features.FEATURE_SETS`) the features are: required with the array
    form; filled in when the named features are exactly the names of a known set."""

    inputs: Annotated[dict[str, Any], LOGGED_INPUTS]
    """The raw contract fields of the request except ``customer_id`` (datetimes stored as ISO strings)."""

    scores: list[ModelScore]
    """Every model that was asked, in the order they were asked."""

    served_by: str
    """Which model decided: ``alias@version``, or ``fallback`` when no model score was usable."""

    score: float | None
    """The score the decision was taken on; ``None`` when the fallback rule decided without one."""

    decision: Decision
    """What the customer was told."""

    risk_level: str
    """Risk band the policy put the score in."""

    reason_codes: list[str] = Field(default_factory=list)
    """Why the policy decided as it did (adverse-action reasons for denials)."""

    experiment_id: str | None = None
    """Experiment that chose the serving arm, if any."""

    arm: str | None = None
    """Serving arm of that experiment."""

    propensity: UnitInterval | None = None
    """Probability that the serving arm was chosen."""

    assignments: list[ArmAssignment] = Field(default_factory=list)
    """Every experiment's assignment for this request (including shadow ones)."""

    policy_name: str
    """Name of the decision policy that turned the score into a decision."""

    policy_version: str
    """Version of that policy."""

    @pydantic.model_validator(mode="before")
    @classmethod
    def _named_features(cls, data: Any) -> Any:
        # The array form: values in the order of a known feature set, named here (an unknown set is refused).
        # The named form gets the id of the set its names are, if any (so both forms read back equal).
        if not isinstance(data, Mapping):
            return data
        from shadowgate.features import FEATURE_SETS

        features = data.get("features")
        if isinstance(features, Mapping) and data.get("feature_set") is None:
            set_id = known_feature_set(features)
            return data if set_id is None else {**data, "feature_set": set_id}
        if not isinstance(features, list):
            return data

        version = data.get("schema_version", SCHEMA_VERSION)
        if isinstance(version, int) and version < ARRAY_FEATURES_SINCE:
            raise ValueError(f"features as an array need schema_version >= {ARRAY_FEATURES_SINCE}")
        names = FEATURE_SETS.get(data.get("feature_set"))  # type: ignore[arg-type]
        if names is None:
            raise ValueError(f"features as an array of an unknown feature_set {data.get('feature_set')!r}")
        values = data["features"]
        if len(values) != len(names):
            raise ValueError(f"features: {len(values)} values, feature set {data['feature_set']} has {len(names)}")
        return {**data, "features": dict(zip(names, values, strict=True))}

    @pydantic.field_validator("inputs", mode="before")
    @classmethod
    def _json_typed_inputs(cls, value: Any) -> Any:
        # Datetimes become ISO strings right away so an event compares equal to itself after a JSON round trip.
        if isinstance(value, Mapping):
            return {k: v.isoformat() if isinstance(v, dt.datetime | dt.date) else v for k, v in value.items()}
        return value

    @pydantic.field_validator("inputs")
    @classmethod
    def _no_raw_customer_id(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in LOGGED_INPUTS.excluded:
            if name in value:
                raise ValueError(f"inputs must not contain the raw {name} (log customer_id_hash instead)")
        return value


def hash_customer_id(customer_id: str, *, salt: str | SecretStr) -> str:
    """Keyed hash of a customer id: HMAC-SHA256 with a secret salt, hex, truncated to 32 characters.

    A plain hash of an id from a small, guessable space can be reversed by enumeration; the secret key prevents
    that while keeping the hash stable, so a customer's events still join up.

    Args:
        customer_id: the raw id from the request.
        salt: the secret key (from settings); must not be empty.

    Raises:
        ValueError: if the salt is empty.
    """
    key = salt.get_secret_value() if isinstance(salt, SecretStr) else salt
    if not key:
        raise ValueError("hash_customer_id needs a non-empty secret salt")
    digest = hmac.new(key.encode(), customer_id.encode(), hashlib.sha256).hexdigest()
    return digest[:CUSTOMER_HASH_HEX_CHARS]


EXAMPLE_SERVED_AT = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)


def example_prediction_event(i: int, **inputs: Any) -> PredictionEvent:
    """A valid prediction event for transaction ``i`` of the contract's example (docs, tests and benchmarks)."""
    from shadowgate.contract import example_transaction, request_model
    from shadowgate.features import FEATURE_NAMES, features_one

    tx = (
        request_model()
        .model_validate(
            {**example_transaction(), "transaction_id": f"tx_{i:07d}", "customer_id": f"cus_{i % 97}", **inputs}
        )
        .model_dump()
    )
    return PredictionEvent(
        event_id=f"{i:032x}",
        transaction_id=tx["transaction_id"],
        customer_id_hash=hash_customer_id(tx["customer_id"], salt="example"),
        merchant_id=tx["merchant_id"],
        event_timestamp=tx["event_timestamp"],
        served_at=EXAMPLE_SERVED_AT + dt.timedelta(seconds=i),
        features=dict(zip(FEATURE_NAMES, features_one(tx), strict=True)),
        inputs={k: v for k, v in tx.items() if k not in LOGGED_INPUTS.excluded},
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
