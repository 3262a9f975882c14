"""The decision service: one transaction in, one decision out; every model scored and every event logged elsewhere.

Hot path (the caller waits): features → experiment assignment → the *deciding* model (the champion, or the
challenger for a canary's treatment arm) → decision policy → answer, plus one small frame handed to the shadow
process (:mod:`shadowgate.serving.sidecar`). No I/O, no metric updates, no other model.

Everything else — scoring the other models in shadow, comparing their decisions, Prometheus counters, building and
logging the :class:`~shadowgate.events.PredictionEvent` — happens in the shadow process, from the frame.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from shadowgate.decisioning.experiments import ExperimentBook
from shadowgate.decisioning.policies import DecisionContext, DecisionPolicy, decide
from shadowgate.events import hash_customer_id, new_event_id
from shadowgate.features import features_one
from shadowgate.registry import CHAMPION
from shadowgate.serving.assignment import assign_all, serving_alias
from shadowgate.serving.models import ModelManager, ModelSnapshot, ServedModel
from shadowgate.serving.shadow import Score, encode_prediction

ARM_MODEL_UNAVAILABLE = "ARM_MODEL_UNAVAILABLE"
"""Reason code: the experiment arm's model was not loaded, so the champion decided."""


class FrameSink(Protocol):
    """Where decided requests go (the decision journal, read by the shadow process)."""

    def put(self, frame: bytes) -> Any:
        """Journal one frame; returns where it ends (to wait for its durability)."""

    def put_many(self, frames: Sequence[bytes]) -> Any:
        """Journal frames all or nothing; returns where the last ends."""

    def send_models(self, snapshot: ModelSnapshot) -> None: ...


@dataclass(slots=True)
class Assessment:
    """What the client gets back."""

    request_id: str
    transaction_id: str
    decision: str
    risk_score: float | None
    risk_level: str
    reason_codes: tuple[str, ...]
    model_alias: str | None
    model_version: str | None
    experiment_id: str | None
    arm: str | None
    propensity: float | None
    policy_name: str
    policy_version: int | str
    fallback: bool
    journaled: Any = field(default=None, compare=False)
    """Where the decision's frame ends in the journal (wait for it to be durable before answering)."""


class DecisionService:
    """Scores and decides. Thread-safe for concurrent ``assess`` calls.

    Args:
        models: the model manager (alias → compiled model snapshot).
        experiments: returns the current experiment book (it may change at run time).
        policy: the decision policy.
        shadow: the shadow process's queue (frames of decided requests; model generations).
        customer_salt: the secret key of customer-id hashes (the journal holds only the hash).
    """

    def __init__(
        self,
        *,
        models: ModelManager,
        experiments: Callable[[], ExperimentBook],
        policy: DecisionPolicy,
        shadow: FrameSink,
        customer_salt: str,
    ) -> None:
        self.customer_salt = customer_salt
        self.models = models
        self.experiments = experiments
        self.policy = policy
        self.shadow = shadow
        self._generation = -1

    def assess(self, transaction: Mapping[str, Any], context: DecisionContext) -> Assessment:
        """Decide one transaction (a validated contract mapping; ``event_timestamp`` tz-aware) and journal it.

        Raises:
            JournalFullError: the journal cannot take it; nothing was recorded (answer 503).
        """
        assessment, frame = self.decide(transaction, context)
        assessment.journaled = self.shadow.put(frame)
        return assessment

    def assess_many(self, items: Sequence[tuple[Mapping[str, Any], DecisionContext]]) -> list[Assessment]:
        """Decide every transaction, then journal them all in one write: every decision recorded, or none.

        Raises:
            JournalFullError: the journal cannot take them; none was recorded (answer 503).
        """
        decided = [self.decide(transaction, context) for transaction, context in items]
        end = self.shadow.put_many([frame for _, frame in decided])
        for assessment, _ in decided:
            assessment.journaled = end
        return [assessment for assessment, _ in decided]

    def decide(self, transaction: Mapping[str, Any], context: DecisionContext) -> tuple[Assessment, bytes]:
        """Decide one transaction; returns the answer and its journal frame (not yet journaled)."""
        started = time.perf_counter()
        request_id = new_event_id()
        features = features_one(transaction)
        book = self.experiments()
        assignments = assign_all(
            book, customer_id=transaction.get("customer_id"), transaction_id=transaction["transaction_id"]
        )
        alias, deciding = serving_alias(book, assignments)
        snapshot = self.models.snapshot
        if snapshot.generation != self._generation:
            # The shadow process learns a generation before the first frame decided with it (same ordered pipe).
            self.shadow.send_models(snapshot)
            self._generation = snapshot.generation
        served = snapshot.get(alias) or snapshot.get(CHAMPION)
        decided = _score(served, features)
        decision = decide(score=decided.score, transaction=transaction, context=context, policy=self.policy)
        reasons = decision.reason_codes
        if served is not None and served.alias != alias:
            # The arm's model is not loaded (alias unset or broken): the champion answered instead; say so, so that
            # the experiment analysis can exclude these requests rather than credit them to the arm.
            reasons = (*reasons, ARM_MODEL_UNAVAILABLE)
        answered = served is not None and decided.score is not None
        assessment = Assessment(
            request_id=request_id,
            transaction_id=transaction["transaction_id"],
            decision=decision.decision,
            risk_score=decided.score,
            risk_level=decision.risk_level,
            reason_codes=reasons,
            model_alias=served.alias if answered else None,  # type: ignore[union-attr]
            model_version=served.version if answered else None,  # type: ignore[union-attr]
            experiment_id=deciding.experiment_id if deciding is not None else None,
            arm=deciding.arm if deciding is not None else None,
            propensity=deciding.propensity if deciding is not None else None,
            policy_name=decision.policy_name,
            policy_version=decision.policy_version,
            fallback=decision.fallback,
        )
        frame = encode_prediction(
            request_id=request_id,
            transaction=transaction,
            customer_id_hash=hash_customer_id(transaction["customer_id"], salt=self.customer_salt),
            context=context,
            features=features,
            generation=snapshot.generation,
            decided=decided,
            decision=decision,
            reason_codes=reasons,
            assignments=assignments,
            deciding=deciding,
            latency_s=time.perf_counter() - started,
        )
        return assessment, frame


def _score(served: ServedModel | None, features: list[float]) -> Score:
    """The deciding model's score; a model that raises leaves the decision to the fallback policy (never a 5xx)."""
    if served is None:
        return Score(alias=CHAMPION, model_version=None, score=None, latency_us=0.0, status="skipped",
                     error="no model loaded")  # fmt: skip
    t0 = time.perf_counter()
    try:
        score = float(served.scorer.score_one(features))
    except Exception as error:
        return Score(
            alias=served.alias,
            model_version=served.version,
            score=None,
            latency_us=(time.perf_counter() - t0) * 1e6,
            status="error",
            error=f"{type(error).__name__}: {error}"[:200],
        )
    return Score(
        alias=served.alias,
        model_version=served.version,
        score=score,
        latency_us=(time.perf_counter() - t0) * 1e6,
        status="ok",
        error=None,
    )
