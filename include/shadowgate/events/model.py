"""Schema-versioned decision and outcome events, and their encoding as Redis Stream entries.

Every decision the API takes is recorded as one :class:`PredictionEvent` (what was asked, what every model said,
what was decided and why); every repayment signal that arrives later is one :class:`OutcomeEvent`. Both are frozen
pydantic models carrying :data:`SCHEMA_VERSION`, so readers (the warehouse uploader, the evaluation jobs) can refuse
events written by a newer producer instead of misreading them.

A stream entry is a flat map of strings (:func:`to_stream_fields`): a small envelope (encoding version, event id,
kind) plus the event as compact JSON. :func:`from_stream_fields` decodes it and raises :class:`MalformedEventError`
with a machine-readable :class:`MalformedReason` for anything it cannot trust, so bad entries can be quarantined by
reason rather than crash a consumer.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import random
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, Literal

import pydantic
from pydantic import AwareDatetime, Field, SecretStr

SCHEMA_VERSION = 2
"""Version of the event payload schema. Bump it on any change a reader of the previous version would misread.

1. The first.
2. A prediction's ``features`` may be an array in the order of the feature set named by ``feature_set`` (what the
   service writes: the named object was two thirds of the bytes of an event). Version 1 payloads still read."""

ARRAY_FEATURES_SINCE = 2
"""First payload schema version whose prediction events may carry their features as an array."""

STREAM_ENCODING_VERSION = "1"
"""Version of the stream-entry envelope (the ``v`` field), independent of the payload schema."""

EVENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
"""Event ids become part of Redis keys (the dedup marker); keep them short and free of spaces and braces."""

CUSTOMER_HASH_HEX_CHARS = 32
"""Length of :func:`hash_customer_id` output: 128 bits is plenty to avoid collisions among customers."""

PREDICTION = "prediction"
OUTCOME = "outcome"

EventId = Annotated[str, Field(pattern=EVENT_ID_PATTERN)]
UnitInterval = Annotated[float, Field(ge=0.0, le=1.0)]

OutcomeType = Literal["instalment_paid", "instalment_late", "default"]
Decision = Literal["approve", "deny", "manual_review"]
ScoreStatus = Literal["ok", "error", "timeout", "skipped"]

OUTCOME_TYPE_ALIASES: dict[str, OutcomeType] = {
    "repayment": "instalment_paid",
    "missed_instalment": "instalment_late",
}
"""Names other producers use for the simulator's outcome types; normalised on input."""


_IDS = random.Random(int.from_bytes(os.urandom(32), "big"))


def new_event_id() -> str:
    """A fresh random 128-bit event id (32 hex characters); for predictions also the prediction / request id.

    Drawn from a generator seeded once per process from the OS entropy pool, not from ``uuid4``: ``uuid4`` reads
    ``os.urandom`` on every call, a system call that measured ~50 µs here — more than the whole decision. The ids are
    identifiers, not secrets; 128 random bits make a collision between any two of them negligible.
    """
    return f"{_IDS.getrandbits(128):032x}"


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class _Frozen(pydantic.BaseModel):
    # extra="forbid": a field this version does not know means the producer is newer or broken; either way the
    # reader must not silently drop it. Non-finite floats are written as strings so nothing is lost in JSON.
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="strings")


class ModelScore(_Frozen):
    """What one model (champion, challenger, …) said about one transaction."""

    alias: str
    """Registry alias the model was loaded by (``champion``, ``challenger``, …)."""

    model_version: str | None
    """Registry version of the model behind the alias at scoring time (None: no model was loaded)."""

    score: float | None
    """Predicted default probability; ``None`` when the model did not produce one (see ``status``)."""

    latency_us: float = Field(ge=0.0)
    """Wall time spent scoring, in microseconds."""

    status: ScoreStatus = "ok"
    """``ok``, or why there is no usable score."""

    error: str | None = None
    """Short error description when ``status`` is ``error`` or ``timeout``."""


class ArmAssignment(_Frozen):
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


class PredictionEvent(_Frozen):
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

    served_at: AwareDatetime = Field(default_factory=_utc_now)
    """When the decision was taken."""

    features: dict[str, float]
    """The engineered features exactly as the models saw them. On the wire either this object or, with
    ``feature_set``, an array in that set's order (read back into this object)."""

    feature_set: str | None = None
    """Id of the feature set (:data:`~shadowgate.features.FEATURE_SETS`) the features are, in its order: required
    with the array form; filled in when the named features are exactly the current set."""

    inputs: dict[str, Any]
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
        from shadowgate.features import FEATURE_NAMES, FEATURE_SET, FEATURE_SETS

        features = data.get("features")
        if isinstance(features, Mapping) and data.get("feature_set") is None and tuple(features) == FEATURE_NAMES:
            return {**data, "feature_set": FEATURE_SET}
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
        if "customer_id" in value:
            raise ValueError("inputs must not contain the raw customer_id (log customer_id_hash instead)")
        return value


class OutcomeEvent(_Frozen):
    """One repayment signal about a purchase, arriving days or weeks after the decision."""

    schema_version: int = Field(default=SCHEMA_VERSION, ge=1, le=SCHEMA_VERSION)
    """Payload schema version (:data:`SCHEMA_VERSION` when written by this code)."""

    event_id: EventId = Field(default_factory=new_event_id)
    """Unique id of the event; use :func:`outcome_event_id` so a re-delivered signal keeps its id."""

    transaction_id: str
    """Id of the purchase the signal is about."""

    event_type: OutcomeType
    """``instalment_paid``, ``instalment_late`` or ``default`` (``repayment`` and ``missed_instalment`` accepted)."""

    event_timestamp: AwareDatetime
    """When the signal became known."""

    instalment_number: int | None = Field(default=None, ge=1)
    """Which instalment (1-based); required for instalment events, the first missed one for defaults."""

    amount: float | None = Field(default=None, ge=0.0)
    """Money concerned (instalment paid or late, or balance written off)."""

    received_at: AwareDatetime = Field(default_factory=_utc_now)
    """When shadowgate received the signal."""

    @pydantic.field_validator("event_type", mode="before")
    @classmethod
    def _normalise_type(cls, value: Any) -> Any:
        return OUTCOME_TYPE_ALIASES.get(value, value) if isinstance(value, str) else value

    @pydantic.model_validator(mode="after")
    def _instalment_events_name_their_instalment(self) -> OutcomeEvent:
        if self.event_type != "default" and self.instalment_number is None:
            raise ValueError(f"instalment_number is required for {self.event_type} events")
        return self


Event = PredictionEvent | OutcomeEvent


def outcome_event_id(
    transaction_id: str, event_type: str, instalment_number: int | None, *, idempotency_key: str | None = None
) -> str:
    """A deterministic id for an outcome signal, so a re-delivered signal is deduplicated downstream.

    (transaction, type, instalment) is unique in the simulator's event log: an instalment is late at most once and
    paid at most once, and a purchase defaults at most once. A producer that can report two signals with the same
    triple (two partial payments of one instalment) sends an ``idempotency_key`` per signal; it is hashed together
    with the triple, so one producer's key cannot swallow another transaction's (or another type's) signal.
    Aliases (``repayment`` / ``instalment_paid``) give the same id.
    """
    normalised = OUTCOME_TYPE_ALIASES.get(event_type, event_type)
    key = f"{transaction_id}\x1f{normalised}\x1f{instalment_number if instalment_number is not None else ''}"
    if idempotency_key is not None:
        # The prefix keeps "no key" and every key apart even for a key that is the empty string.
        key += f"\x1fkey:{idempotency_key}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


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


class MalformedReason(StrEnum):
    """Why a stream entry could not be decoded; the warehouse uploader quarantines by this reason."""

    NOT_UTF8 = "not_utf8"
    MISSING_ENVELOPE = "missing_envelope"
    UNSUPPORTED_ENCODING = "unsupported_encoding"
    UNKNOWN_KIND = "unknown_kind"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_SCHEMA_VERSION = "missing_schema_version"
    INVALID_SCHEMA_VERSION = "invalid_schema_version"
    FUTURE_SCHEMA_VERSION = "future_schema_version"
    MISSING_FIELD = "missing_field"
    INVALID_FIELD = "invalid_field"
    ID_MISMATCH = "id_mismatch"


class MalformedEventError(ValueError):
    """A stream entry that is not a valid event of a schema version this code understands.

    Attributes:
        reason: what is wrong, machine-readable.
        detail: human-readable specifics (the offending field, the parser message).
    """

    def __init__(self, reason: MalformedReason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail


def to_stream_fields(event: Event) -> dict[str, str]:
    """The stream entry of an event: ``{"v", "id", "kind", "payload"}``, all strings, payload compact JSON.

    A prediction whose features are exactly the current feature set, in order, is written with them as an array
    tagged with the set's id (as the service writes it); other features keep the named object.
    """
    from shadowgate.features import FEATURE_NAMES, FEATURE_SET

    kind = PREDICTION if isinstance(event, PredictionEvent) else OUTCOME
    # pydantic writes compact JSON (no spaces) and handles datetimes and non-finite floats itself.
    payload = event.model_dump_json()
    if (
        isinstance(event, PredictionEvent)
        and event.schema_version >= ARRAY_FEATURES_SINCE
        and tuple(event.features) == FEATURE_NAMES
    ):
        data = json.loads(payload)
        data["feature_set"], data["features"] = FEATURE_SET, list(data["features"].values())
        payload = json.dumps(data, separators=(",", ":"), allow_nan=False)
    return {"v": STREAM_ENCODING_VERSION, "id": event.event_id, "kind": kind, "payload": payload}


def _text(value: str | bytes) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedEventError(MalformedReason.NOT_UTF8, str(exc)) from exc
    return value


def from_stream_fields(fields: Mapping[str, str] | Mapping[bytes, bytes] | Mapping[Any, Any]) -> Event:
    """Decode a stream entry written by :func:`to_stream_fields` (str or bytes keys and values, as redis-py gives).

    Raises:
        MalformedEventError: with a distinct :class:`MalformedReason` for each kind of problem.
    """
    entry = {_text(k): _text(v) for k, v in fields.items()}
    missing = [name for name in ("v", "id", "kind", "payload") if name not in entry]
    if missing:
        raise MalformedEventError(MalformedReason.MISSING_ENVELOPE, f"missing {', '.join(missing)}")
    if entry["v"] != STREAM_ENCODING_VERSION:
        raise MalformedEventError(MalformedReason.UNSUPPORTED_ENCODING, f"v={entry['v']!r}")
    model: type[PredictionEvent] | type[OutcomeEvent]
    if entry["kind"] == PREDICTION:
        model = PredictionEvent
    elif entry["kind"] == OUTCOME:
        model = OutcomeEvent
    else:
        raise MalformedEventError(MalformedReason.UNKNOWN_KIND, f"kind={entry['kind']!r}")
    try:
        payload = json.loads(entry["payload"])
    except ValueError as exc:
        raise MalformedEventError(MalformedReason.INVALID_JSON, str(exc)) from exc
    if not isinstance(payload, dict):
        raise MalformedEventError(MalformedReason.NOT_AN_OBJECT, type(payload).__name__)
    _check_schema_version(payload)
    try:
        event = model.model_validate(payload)
    except pydantic.ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        reason = (
            MalformedReason.MISSING_FIELD
            if any(err["type"] == "missing" for err in errors)
            else MalformedReason.INVALID_FIELD
        )
        where = "; ".join(f"{'.'.join(map(str, err['loc'])) or '<event>'}: {err['msg']}" for err in errors[:5])
        raise MalformedEventError(reason, where) from exc
    if event.event_id != entry["id"]:
        raise MalformedEventError(MalformedReason.ID_MISMATCH, f"envelope {entry['id']!r} != {event.event_id!r}")
    return event


def _check_schema_version(payload: dict[str, Any]) -> None:
    if "schema_version" not in payload:
        raise MalformedEventError(MalformedReason.MISSING_SCHEMA_VERSION)
    version = payload["schema_version"]
    # bool is an int in Python; a JSON true is not a version.
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise MalformedEventError(MalformedReason.INVALID_SCHEMA_VERSION, repr(version))
    if version > SCHEMA_VERSION:
        raise MalformedEventError(
            MalformedReason.FUTURE_SCHEMA_VERSION, f"{version} > {SCHEMA_VERSION} (written by a newer producer)"
        )


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


EXAMPLE_SERVED_AT = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)
