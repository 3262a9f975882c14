"""Frames and the shadow worker: what the request path hands over is what gets logged (unit: an in-memory sink)."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shadowgate.contract import example_transaction, request_model
from shadowgate.decisioning.policies import DecisionContext, decide, load_policy
from shadowgate.events import SCHEMA_VERSION, PredictionEvent, from_stream_fields, hash_customer_id
from shadowgate.features import FEATURE_NAMES, FEATURE_SET, features_one
from shadowgate.serving import shadow
from shadowgate.serving.assignment import Assignment
from shadowgate.serving.metrics import ServingMetrics
from shadowgate.serving.models import ModelSnapshot, ServedModel
from shadowgate.serving.shadow import Score, ShadowJob, ShadowWorker, encode_prediction

POLICY = load_policy("conservative")


class _Sink:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, str], str]] = []

    def submit(self, stream: str, fields: dict[str, str], event_id: str) -> None:
        self.events.append((stream, fields, event_id))


class _Constant:
    """A compiled model that scores every row ``value``."""

    family = "constant"
    n_features = len(FEATURE_NAMES)

    def __init__(self, value: float) -> None:
        self.value = value

    def score_one(self, x: Any) -> float:
        return self.value

    def score_batch(self, x: np.ndarray) -> np.ndarray:
        return np.full(x.shape[0], self.value)


def _tx(i: int = 1, **changes: Any) -> dict[str, Any]:
    raw = {**example_transaction(), "transaction_id": f"tx_{i}", "customer_id": f"cus_{i}", **changes}
    return dict(request_model().model_validate(raw).model_dump())


def _snapshot(generation: int = 1, **scores: float) -> ModelSnapshot:
    models = {alias: ServedModel(alias, str(v), _Constant(score), "registry") for v, (alias, score) in
              enumerate(scores.items(), start=1)}  # fmt: skip
    return ModelSnapshot("m", models, generation, dt.datetime.now(dt.UTC))


def _frame(tx: dict[str, Any], score: float | None, *, flags: tuple[str, ...] = (), canary: bool = False) -> bytes:
    context = DecisionContext(regulatory_flags=flags)
    decision = decide(score=score, transaction=tx, context=context, policy=POLICY)
    assignment = Assignment(
        experiment_id="exp-1", experiment_version=3, arm="treatment" if canary else "control",
        propensity=0.25 if canary else 1.0, unit_id=tx["customer_id"], unit_kind="customer",
        mode="canary" if canary else "shadow", bucket=0.1,
    )  # fmt: skip
    decided = (
        Score("champion", "1", score, 3.5, "ok") if score is not None else Score("champion", None, None, 0.0, "skipped")
    )
    return encode_prediction(
        request_id="a" * 32,
        transaction=tx,
        customer_id_hash=hash_customer_id(tx["customer_id"], salt="salt"),
        context=context,
        features=features_one(tx),
        generation=1,
        decided=decided,
        decision=decision,
        reason_codes=decision.reason_codes,
        assignments=[assignment],
        deciding=assignment,
        latency_s=2e-4,
    )


def _worker(sink: _Sink) -> ShadowWorker:
    return ShadowWorker(
        policy=POLICY,
        events=sink,
        customer_salt="salt",
        predictions_stream="s",
        budget_ms=5.0,
        metrics=ServingMetrics(),
    )


def test_a_frame_becomes_the_event_the_schema_accepts() -> None:
    tx = _tx(7)
    sink = _Sink()
    worker = _worker(sink)
    worker.set_models(_snapshot(champion=0.1, challenger=0.9))
    worker.process([ShadowJob.from_frame(orjson.loads(_frame(tx, 0.1, flags=("PEP",), canary=True)))])
    [(stream, fields, event_id)] = sink.events
    event = from_stream_fields(fields)
    assert isinstance(event, PredictionEvent)
    assert (stream, event_id, event.event_id) == ("s", "a" * 32, "a" * 32)
    assert event.customer_id_hash == hash_customer_id("cus_7", salt="salt")
    assert "cus_7" not in fields["payload"]  # the raw id never reaches the log
    assert event.features == dict(zip(FEATURE_NAMES, features_one(tx), strict=True))
    assert event.event_timestamp == tx["event_timestamp"]
    assert [(s.alias, s.score, s.status) for s in event.scores] == [("champion", 0.1, "ok"), ("challenger", 0.9, "ok")]
    assert (event.experiment_id, event.arm, event.propensity) == ("exp-1", "treatment", 0.25)
    assert event.served_by == "champion@v1"
    assert "REGULATORY_FLAG_PEP" in event.reason_codes
    assert worker.processed == 1
    # On the wire: the features as an array of the current feature set, schema v2.
    payload = orjson.loads(fields["payload"])
    assert (payload["schema_version"], payload["feature_set"]) == (SCHEMA_VERSION, FEATURE_SET)
    assert payload["features"] == features_one(tx)


def test_the_uploader_fast_path_vouches_for_what_the_shadow_process_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    from shadowgate.pipelines import stream_decode
    from shadowgate.storage.redis_streams import Entry

    sink = _Sink()
    worker = _worker(sink)
    worker.set_models(_snapshot(champion=0.1, challenger=0.9))
    worker.process([ShadowJob.from_frame(orjson.loads(_frame(_tx(i), 0.1))) for i in range(5)])

    def no_strict(*args: object, **kwargs: object) -> None:
        raise AssertionError("an event the service wrote took the strict path")

    monkeypatch.setattr(stream_decode, "decode_strict", no_strict)
    entries = [Entry(f"{i + 1}-0", fields) for i, (_, fields, _) in enumerate(sink.events)]
    decoded = stream_decode.decode("s", "prediction", entries, dt.datetime.now(dt.UTC))
    assert decoded.table("prediction_logs").num_rows == 5 and decoded.quarantine == []


def test_agreement_counts_the_shadow_models_would_be_decisions() -> None:
    sink = _Sink()
    worker = _worker(sink)
    worker.set_models(_snapshot(champion=0.1, low=0.05, high=0.95))
    worker.process([ShadowJob.from_frame(orjson.loads(_frame(_tx(i), 0.1))) for i in range(10)])
    window = worker.comparison()
    assert window["low"]["agreement"] == 1.0 and window["high"]["agreement"] == 0.0
    assert window["high"]["mean_score_delta"] == pytest.approx(0.85)
    assert window["low"]["requests"] == 10


def test_a_lagging_batch_is_logged_with_its_shadow_scores_shed(monkeypatch: pytest.MonkeyPatch) -> None:
    sink = _Sink()
    worker = _worker(sink)
    worker.set_models(_snapshot(champion=0.1, challenger=0.9))
    job = ShadowJob.from_frame(orjson.loads(_frame(_tx(), 0.1)))
    job.queued_at -= shadow.MAX_LAG_S + 1
    worker.process([job])
    event = from_stream_fields(sink.events[0][1])
    assert isinstance(event, PredictionEvent)
    assert [(s.alias, s.status, s.error) for s in event.scores][1] == ("challenger", "skipped", "shadow_backlog")


def test_a_fallback_decision_has_no_shadow_comparison() -> None:
    sink = _Sink()
    worker = _worker(sink)
    worker.set_models(_snapshot(challenger=0.9))
    worker.process([ShadowJob.from_frame(orjson.loads(_frame(_tx(), None)))])
    event = from_stream_fields(sink.events[0][1])
    assert isinstance(event, PredictionEvent)
    assert event.served_by == "fallback" and event.score is None
    assert worker.comparison() == {}


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.one_of(st.none(), st.floats(allow_nan=False, width=64)), min_size=3, max_size=3),
                min_size=1, max_size=5))  # fmt: skip
def test_null_features_come_back_as_nan(rows: list[list[float | None]]) -> None:
    matrix = shadow._matrix(rows)
    assert matrix.shape == (len(rows), 3)
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            assert math.isnan(matrix[r, c]) if value is None else matrix[r, c] == value
