"""Decision and outcome events: stream encoding round trips, malformed entries are refused by reason, hashing."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from typing import Any

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shadowgate.events import (
    SCHEMA_VERSION,
    ArmAssignment,
    MalformedEventError,
    MalformedReason,
    ModelScore,
    OutcomeEvent,
    PredictionEvent,
    from_stream_fields,
    hash_customer_id,
    outcome_event_id,
    to_stream_fields,
)
from tests.strategies import transactions

SALT = "test-salt-not-a-secret"
T0 = dt.datetime(2026, 3, 2, 14, 5, tzinfo=dt.UTC)


def _prediction(**overrides: Any) -> PredictionEvent:
    values: dict[str, Any] = {
        "transaction_id": "tx_000001",
        "customer_id_hash": hash_customer_id("cus_000042", salt=SALT),
        "merchant_id": "mer_0042",
        "event_timestamp": T0,
        "served_at": T0 + dt.timedelta(milliseconds=3),
        "features": {"log_amount": 4.87, "utilisation": 0.17},
        "inputs": {"transaction_id": "tx_000001", "amount": 129.99, "event_timestamp": T0, "channel": "web"},
        "scores": [
            ModelScore(alias="champion", model_version="3", score=0.031, latency_us=41.5),
            ModelScore(alias="challenger", model_version="7", score=None, latency_us=0.0, status="skipped"),
        ],
        "served_by": "champion@3",
        "score": 0.031,
        "decision": "approve",
        "risk_level": "low",
        "reason_codes": [],
        "experiment_id": "exp_gbm",
        "arm": "champion",
        "propensity": 0.9,
        "assignments": [
            ArmAssignment(experiment_id="exp_gbm", experiment_version="2", arm="champion", propensity=0.9, mode="live")
        ],
        "policy_name": "threshold",
        "policy_version": "1",
    }
    return PredictionEvent(**{**values, **overrides})


def _outcome(**overrides: Any) -> OutcomeEvent:
    values: dict[str, Any] = {
        "transaction_id": "tx_000001",
        "event_type": "instalment_paid",
        "event_timestamp": T0 + dt.timedelta(days=14),
        "instalment_number": 2,
        "amount": 32.5,
        "received_at": T0 + dt.timedelta(days=14, seconds=1),
    }
    return OutcomeEvent(**{**values, **overrides})


# ----------------------------------------------------------------------------------------------- round trips


def test_prediction_round_trip() -> None:
    event = _prediction()
    fields = to_stream_fields(event)
    assert set(fields) == {"v", "id", "kind", "payload"}
    assert all(isinstance(v, str) for v in fields.values())
    assert fields["kind"] == "prediction" and fields["id"] == event.event_id and fields["v"] == "1"
    compact = json.dumps(json.loads(fields["payload"]), separators=(",", ":"), ensure_ascii=False)
    assert fields["payload"] == compact
    assert from_stream_fields(fields) == event


def test_outcome_round_trip_and_bytes_from_redis() -> None:
    event = _outcome()
    fields = to_stream_fields(event)
    assert fields["kind"] == "outcome"
    as_bytes = {k.encode(): v.encode() for k, v in fields.items()}  # what redis-py returns without decoding
    assert from_stream_fields(as_bytes) == event


def test_event_ids_are_uuid4_hex_and_unique() -> None:
    ids = {_prediction().event_id for _ in range(200)}
    assert len(ids) == 200
    assert all(re.fullmatch("[0-9a-f]{32}", i) for i in ids)


def test_inputs_never_hold_the_raw_customer_id() -> None:
    with pytest.raises(pydantic.ValidationError, match="customer_id"):
        _prediction(inputs={"customer_id": "cus_000042", "amount": 1.0})


def test_datetimes_in_inputs_are_stored_as_iso_strings() -> None:
    event = _prediction()
    assert event.inputs["event_timestamp"] == T0.isoformat()


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(pydantic.ValidationError):
        _prediction(event_timestamp=dt.datetime(2026, 3, 2, 14, 5))
    with pytest.raises(pydantic.ValidationError):
        _outcome(event_timestamp=dt.datetime(2026, 3, 2, 14, 5))


def test_events_are_frozen() -> None:
    event = _prediction()
    with pytest.raises(pydantic.ValidationError):
        event.score = 0.5  # type: ignore[misc]


def test_non_finite_feature_values_survive_the_round_trip() -> None:
    event = _prediction(features={"a": math.inf, "b": -math.inf})
    assert from_stream_fields(to_stream_fields(event)).features == {"a": math.inf, "b": -math.inf}


# ------------------------------------------------------------------------------------------------ outcomes


@pytest.mark.parametrize(
    ("given_type", "stored"),
    [
        ("repayment", "instalment_paid"),
        ("missed_instalment", "instalment_late"),
        ("instalment_paid", "instalment_paid"),
        ("instalment_late", "instalment_late"),
        ("default", "default"),
    ],
)
def test_outcome_type_aliases(given_type: str, stored: str) -> None:
    event = _outcome(event_type=given_type)
    assert event.event_type == stored
    assert from_stream_fields(to_stream_fields(event)).event_type == stored  # type: ignore[union-attr]


def test_unknown_outcome_type_is_refused() -> None:
    with pytest.raises(pydantic.ValidationError):
        _outcome(event_type="chargeback")


def test_instalment_events_need_an_instalment_number_defaults_do_not() -> None:
    with pytest.raises(pydantic.ValidationError, match="instalment_number"):
        _outcome(event_type="instalment_late", instalment_number=None)
    assert _outcome(event_type="default", instalment_number=None).instalment_number is None
    with pytest.raises(pydantic.ValidationError):
        _outcome(instalment_number=0)
    with pytest.raises(pydantic.ValidationError):
        _outcome(amount=-1.0)


def test_outcome_event_id_is_deterministic_and_alias_blind() -> None:
    a = outcome_event_id("tx_1", "repayment", 2)
    assert a == outcome_event_id("tx_1", "instalment_paid", 2)
    assert a != outcome_event_id("tx_1", "instalment_paid", 3)
    assert a != outcome_event_id("tx_2", "instalment_paid", 2)
    assert outcome_event_id("tx_1", "default", None) != outcome_event_id("tx_1", "default", 1)
    assert _outcome(event_id=a).event_id == a


def test_an_idempotency_key_is_hashed_with_the_outcome_it_reports() -> None:
    keyed = outcome_event_id("tx_1", "repayment", 2, idempotency_key="k-1")
    assert keyed == outcome_event_id("tx_1", "instalment_paid", 2, idempotency_key="k-1")
    assert len(keyed) == 32 and int(keyed, 16) >= 0
    others = {
        outcome_event_id("tx_1", "instalment_paid", 2),  # no key
        outcome_event_id("tx_1", "instalment_paid", 2, idempotency_key="k-2"),
        outcome_event_id("tx_2", "instalment_paid", 2, idempotency_key="k-1"),  # another transaction, same key
        outcome_event_id("tx_1", "instalment_late", 2, idempotency_key="k-1"),
        outcome_event_id("tx_1", "instalment_paid", 3, idempotency_key="k-1"),
    }
    assert keyed not in others and len(others) == 5


# ----------------------------------------------------------------------------------------------- malformed


def _good_fields() -> dict[str, str]:
    return to_stream_fields(_prediction())


def _with_payload(change: Any) -> dict[str, str]:
    fields = _good_fields()
    payload = json.loads(fields["payload"])
    change(payload)
    return {**fields, "payload": json.dumps(payload)}


MALFORMED: dict[MalformedReason, Any] = {
    MalformedReason.NOT_UTF8: lambda: {**{k.encode(): v.encode() for k, v in _good_fields().items()}, b"v": b"\xff"},
    MalformedReason.MISSING_ENVELOPE: lambda: {k: v for k, v in _good_fields().items() if k != "kind"},
    MalformedReason.UNSUPPORTED_ENCODING: lambda: {**_good_fields(), "v": "2"},
    MalformedReason.UNKNOWN_KIND: lambda: {**_good_fields(), "kind": "refund"},
    MalformedReason.INVALID_JSON: lambda: {**_good_fields(), "payload": '{"schema_version": 1, '},
    MalformedReason.NOT_AN_OBJECT: lambda: {**_good_fields(), "payload": "[1, 2]"},
    MalformedReason.MISSING_SCHEMA_VERSION: lambda: _with_payload(lambda p: p.pop("schema_version")),
    MalformedReason.INVALID_SCHEMA_VERSION: lambda: _with_payload(lambda p: p.update(schema_version="1")),
    MalformedReason.FUTURE_SCHEMA_VERSION: lambda: _with_payload(lambda p: p.update(schema_version=SCHEMA_VERSION + 1)),
    MalformedReason.MISSING_FIELD: lambda: _with_payload(lambda p: p.pop("decision")),
    MalformedReason.INVALID_FIELD: lambda: _with_payload(lambda p: p.update(score="high")),
    MalformedReason.ID_MISMATCH: lambda: {**_good_fields(), "id": "0" * 32},
}


@pytest.mark.parametrize("reason", list(MalformedReason))
def test_each_malformation_has_its_own_reason(reason: MalformedReason) -> None:
    assert reason in MALFORMED, f"no test case for {reason}"
    with pytest.raises(MalformedEventError) as caught:
        from_stream_fields(MALFORMED[reason]())
    assert caught.value.reason is reason
    assert str(caught.value).startswith(reason.value)


@pytest.mark.parametrize(
    "change",
    [
        lambda p: p.update(decision="maybe"),
        lambda p: p.update(event_timestamp="2026-03-02T14:05:00"),  # naive
        lambda p: p.update(features={"a": "x"}),
        lambda p: p.update(unexpected=1),
        lambda p: p.update(schema_version=True),
    ],
)
def test_wrong_types_and_unknown_fields_are_malformed(change: Any) -> None:
    with pytest.raises(MalformedEventError) as caught:
        from_stream_fields(_with_payload(change))
    assert caught.value.reason in {MalformedReason.INVALID_FIELD, MalformedReason.INVALID_SCHEMA_VERSION}


def test_malformed_event_error_is_a_value_error_with_detail() -> None:
    with pytest.raises(ValueError, match="decision"):
        from_stream_fields(MALFORMED[MalformedReason.MISSING_FIELD]())


# -------------------------------------------------------------------------------------------------- hashing


def test_customer_hash_is_stable_salted_and_not_the_id() -> None:
    h = hash_customer_id("cus_000042", salt=SALT)
    assert h == hash_customer_id("cus_000042", salt=pydantic.SecretStr(SALT))
    assert re.fullmatch("[0-9a-f]{32}", h)
    assert "cus_000042" not in h
    assert h != hash_customer_id("cus_000042", salt=SALT + "x")
    assert h != hash_customer_id("cus_000043", salt=SALT)


def test_customer_hash_needs_a_salt() -> None:
    with pytest.raises(ValueError, match="salt"):
        hash_customer_id("cus_000042", salt="")


# ------------------------------------------------------------------------------------------------ property

_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)
_finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
_aware = st.datetimes(
    min_value=dt.datetime(2020, 1, 1),
    max_value=dt.datetime(2035, 1, 1),
    timezones=st.sampled_from(
        [dt.UTC, dt.timezone(dt.timedelta(hours=5, minutes=30)), dt.timezone(-dt.timedelta(hours=8))]
    ),
)
_scores = st.builds(
    ModelScore,
    alias=_text,
    model_version=_text,
    score=st.none() | st.floats(0, 1),
    latency_us=st.floats(0, 1e7),
    status=st.sampled_from(["ok", "error", "timeout", "skipped"]),
    error=st.none() | _text,
)
_assignments = st.builds(
    ArmAssignment,
    experiment_id=_text,
    experiment_version=_text,
    arm=_text,
    propensity=st.floats(0, 1),
    mode=_text,
)


@st.composite
def _predictions(draw: st.DrawFn) -> PredictionEvent:
    raw = dict(draw(transactions()))
    raw.pop("customer_id")
    return PredictionEvent(
        transaction_id=raw["transaction_id"],
        customer_id_hash=hash_customer_id(draw(_text), salt=SALT),
        merchant_id=raw["merchant_id"],
        event_timestamp=raw["event_timestamp"],
        served_at=draw(_aware),
        features=draw(st.dictionaries(_text, _finite, max_size=6)),
        inputs=raw,
        scores=draw(st.lists(_scores, max_size=3)),
        served_by=draw(st.sampled_from(["champion@3", "fallback"])),
        score=draw(st.none() | st.floats(0, 1)),
        decision=draw(st.sampled_from(["approve", "deny", "manual_review"])),
        risk_level=draw(_text),
        reason_codes=draw(st.lists(_text, max_size=3)),
        experiment_id=draw(st.none() | _text),
        arm=draw(st.none() | _text),
        propensity=draw(st.none() | st.floats(0, 1)),
        assignments=draw(st.lists(_assignments, max_size=2)),
        policy_name=draw(_text),
        policy_version=draw(_text),
    )


_outcomes = st.builds(
    OutcomeEvent,
    transaction_id=_text,
    event_type=st.sampled_from(["instalment_paid", "instalment_late", "default", "repayment", "missed_instalment"]),
    event_timestamp=_aware,
    instalment_number=st.integers(1, 6),
    amount=st.none() | st.floats(0, 1e6),
    received_at=_aware,
)


@settings(max_examples=200, deadline=None)
@given(event=_predictions() | _outcomes)
def test_stream_encoding_round_trips(event: PredictionEvent | OutcomeEvent) -> None:
    fields = to_stream_fields(event)
    decoded = from_stream_fields(fields)
    assert decoded == event
    assert type(decoded) is type(event)
    assert to_stream_fields(decoded) == fields  # stable: encoding the decoded event gives the same bytes


def test_an_outcome_without_a_stated_delivery_is_written_and_read_as_before_and_arrives_when_received() -> None:
    from shadowgate.events import from_stream_fields, to_stream_fields
    from shadowgate.events.outcome import arrival

    received = T0 + dt.timedelta(days=20)
    known = {"transaction_id": "tx_1", "event_type": "instalment_late", "instalment_number": 2}
    live = OutcomeEvent(event_id="e1", event_timestamp=T0, received_at=received, **known)  # type: ignore[arg-type]
    payload = json.loads(to_stream_fields(live)["payload"])
    assert "delivered_at" not in payload  # the payload of the previous code, key for key
    # A payload the previous code wrote (no key) reads back with no stated delivery.
    assert from_stream_fields(to_stream_fields(live)) == live and arrival(live) == received
    replayed = live.model_copy(update={"delivered_at": T0 + dt.timedelta(hours=2)})
    back = from_stream_fields(to_stream_fields(replayed))
    assert isinstance(back, OutcomeEvent) and back.delivered_at == T0 + dt.timedelta(hours=2)
    assert arrival(back) == T0 + dt.timedelta(hours=2)
    # A stated delivery is never later than the receipt.
    assert arrival(live.model_copy(update={"delivered_at": received + dt.timedelta(days=1)})) == received
