"""The decision service: one transaction in, one decision out, every model scored, every event logged.

Hot path (the caller waits): features → experiment assignment → the *deciding* model (the champion, or the
challenger for a canary's treatment arm) → decision policy → answer. No I/O.

Shadow path (nobody waits): the request is queued for a background worker that scores every other served model in
micro-batches (vectorised), compares their decisions with the served one, builds the :class:`PredictionEvent` and
hands it to the event log. A failing or slow shadow model costs the customer nothing: it is benched for a cool-down,
its score is recorded as ``error`` / ``skipped`` and counted. When the shadow queue is full the event is still logged,
with the shadow scores marked ``skipped``.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import orjson

from shadowgate.features import FEATURE_NAMES, features_one
from shadowgate.registry import CHAMPION
from shadowgate.serving.assignment import Assignment
from shadowgate.serving.events import (
    PREDICTION,
    SCHEMA_VERSION,
    STREAM_ENCODING_VERSION,
    ScoreStatus,
    hash_customer_id,
    new_event_id,
)
from shadowgate.serving.experiments import ExperimentBook
from shadowgate.serving.metrics import ServingMetrics
from shadowgate.serving.models import ModelManager, ModelSnapshot, ServedModel
from shadowgate.serving.policies import DecisionContext, DecisionPolicy, PolicyDecision, decide

logger = logging.getLogger(__name__)

BENCH_COOLDOWN_S = 30.0
"""How long a shadow model that failed or blew its budget sits out."""

SHADOW_BATCH_WINDOW_S = 0.005
"""How long the shadow worker gathers requests after the first one before scoring them together."""

SHADOW_BATCH_MAX = 128
"""Largest shadow micro-batch."""

WALL_BUDGET_FACTOR = 50.0
"""A shadow model is over budget when its CPU time per row exceeds the budget, or its wall time this many times."""

ARM_MODEL_UNAVAILABLE = "ARM_MODEL_UNAVAILABLE"
"""Reason code: the experiment arm's model was not loaded, so the champion decided."""

COMPARISON_WINDOW = 10_000
"""Rolling window (requests) of ``/v1/shadow/comparison``."""


class EventSink(Protocol):
    def submit(self, stream: str, fields: dict[str, str], event_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Score:
    """One model's score of one request (the fields of :class:`shadowgate.serving.events.ModelScore`)."""

    alias: str
    model_version: str | None
    score: float | None
    latency_us: float
    status: ScoreStatus
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "alias": self.alias,
            "model_version": self.model_version,
            "score": self.score,
            "latency_us": round(self.latency_us, 2),
            "status": self.status,
            "error": self.error,
        }


@dataclass(frozen=True)
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


@dataclass
class _ShadowJob:
    request_id: str
    transaction: Mapping[str, Any]
    context: DecisionContext
    features: list[float]
    served_at: dt.datetime
    snapshot: ModelSnapshot
    decided: Score
    decision: PolicyDecision
    reason_codes: tuple[str, ...]
    assignments: list[Assignment]
    deciding: Assignment | None


@dataclass
class _Comparison:
    agree: collections.deque[bool] = field(default_factory=lambda: collections.deque(maxlen=COMPARISON_WINDOW))
    delta: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=COMPARISON_WINDOW))


class DecisionService:
    """Scores, decides and logs. Thread-safe for concurrent ``assess`` calls.

    Args:
        models: the model manager (alias → compiled model snapshot).
        experiments: returns the current experiment book (it may change at run time).
        policy: the decision policy.
        events: the event log.
        customer_salt: secret salt of the customer-id hash.
        predictions_stream: Redis Stream of prediction events.
        budget_ms: per-model scoring budget for shadow models.
        shadow_queue_size: bound of the shadow queue.
        metrics: Prometheus metrics.
    """

    def __init__(
        self,
        *,
        models: ModelManager,
        experiments: Callable[[], ExperimentBook],
        policy: DecisionPolicy,
        events: EventSink,
        customer_salt: str,
        predictions_stream: str,
        budget_ms: float,
        shadow_queue_size: int,
        metrics: ServingMetrics,
    ) -> None:
        self.models = models
        self.experiments = experiments
        self.policy = policy
        self.events = events
        self.customer_salt = customer_salt
        self.predictions_stream = predictions_stream
        self.budget_s = budget_ms / 1000.0
        self.metrics = metrics
        self._queue: queue.Queue[_ShadowJob | None] = queue.Queue(maxsize=shadow_queue_size)
        self._benched: dict[str, float] = {}
        self._comparison: dict[str, _Comparison] = collections.defaultdict(_Comparison)
        self._comparison_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._idle = threading.Event()
        self._idle.set()

    # ------------------------------------------------------------------------------------------------ hot path

    def assess(self, transaction: Mapping[str, Any], context: DecisionContext) -> Assessment:
        """Decide one transaction (a validated contract mapping; ``event_timestamp`` tz-aware)."""
        started = time.perf_counter()
        request_id = new_event_id()
        features = features_one(transaction)
        book = self.experiments()
        assignments = book.assign_all(
            customer_id=transaction.get("customer_id"), transaction_id=transaction["transaction_id"]
        )
        alias, deciding = book.serving_alias(assignments)
        snapshot = self.models.snapshot
        served = snapshot.get(alias) or snapshot.get(CHAMPION)
        decided = self._score_decider(served, features)
        decision = decide(score=decided.score, transaction=transaction, context=context, policy=self.policy)
        reasons = tuple(decision.reason_codes)
        if served is not None and served.alias != alias:
            # The arm's model is not loaded (alias unset or broken): the champion answered instead; say so, so that
            # the experiment analysis can exclude these requests rather than credit them to the arm.
            reasons = (*reasons, ARM_MODEL_UNAVAILABLE)
        arm = deciding.arm if deciding is not None else None
        assessment = Assessment(
            request_id=request_id,
            transaction_id=transaction["transaction_id"],
            decision=decision.decision,
            risk_score=decided.score,
            risk_level=decision.risk_level,
            reason_codes=reasons,
            model_alias=served.alias if served is not None and decided.score is not None else None,
            model_version=served.version if served is not None and decided.score is not None else None,
            experiment_id=deciding.experiment_id if deciding is not None else None,
            arm=arm,
            propensity=deciding.propensity if deciding is not None else None,
            policy_name=decision.policy_name,
            policy_version=decision.policy_version,
            fallback=decision.fallback,
        )
        m = self.metrics
        m.bind(m.decisions, decision.decision, arm or "none", assessment.model_alias or "fallback").inc()
        if decision.fallback:
            m.fallback.inc()
        job = _ShadowJob(
            request_id=request_id,
            transaction=transaction,
            context=context,
            features=features,
            served_at=dt.datetime.now(dt.UTC),
            snapshot=snapshot,
            decided=decided,
            decision=decision,
            reason_codes=reasons,
            assignments=assignments,
            deciding=deciding,
        )
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            # Shadow scoring cannot keep up: log the decision now, shadow scores marked skipped (never dropped).
            self._log([job], skipped_reason="shadow_queue_full")
        m.bind(m.request_latency, "assess").observe(time.perf_counter() - started)
        return assessment

    def _score_decider(self, served: ServedModel | None, features: list[float]) -> Score:
        if served is None:
            return Score(
                alias=CHAMPION,
                model_version=None,
                score=None,
                latency_us=0.0,
                status="skipped",
                error="no model loaded",
            )
        t0 = time.perf_counter()
        try:
            score = float(served.scorer.score_one(features))
        except Exception as error:  # a broken model falls back to the rule policy, never a 5xx
            self.metrics.bind(self.metrics.model_failures, served.alias, "error").inc()
            logger.exception("deciding model %s v%s failed", served.alias, served.version)
            return Score(
                alias=served.alias,
                model_version=served.version,
                score=None,
                latency_us=(time.perf_counter() - t0) * 1e6,
                status="error",
                error=str(error)[:200],
            )
        elapsed = time.perf_counter() - t0
        self.metrics.bind(self.metrics.model_latency, served.alias, "decider").observe(elapsed)
        return Score(
            alias=served.alias,
            model_version=served.version,
            score=score,
            latency_us=elapsed * 1e6,
            status="ok",
            error=None,
        )

    # ------------------------------------------------------------------------------------------------ shadow path

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="shadow-scorer", daemon=True)
            self._thread.start()

    def close(self, timeout_s: float = 10.0) -> None:
        """Score and log what is queued, then stop the worker."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout_s)
            self._thread = None

    def drain(self, timeout_s: float = 10.0) -> bool:
        """Wait until every queued request has been shadow-scored and logged (tests, shutdown)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.01)
        return False

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            jobs: list[_ShadowJob] = []
            stop = first is None
            if first is not None:
                jobs.append(first)
            # Shadow results need no low latency: gathering a micro-batch makes vectorised scoring ~10x cheaper per
            # row than one call per request.
            deadline = time.monotonic() + SHADOW_BATCH_WINDOW_S
            while not stop and len(jobs) < SHADOW_BATCH_MAX:
                remaining = deadline - time.monotonic()
                try:
                    item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                else:
                    jobs.append(item)
            try:
                if jobs:
                    self._log(jobs, skipped_reason=None)
            except Exception:  # the worker must survive anything
                logger.exception("shadow scoring failed for %d requests", len(jobs))
            finally:
                for _ in range(len(jobs) + (1 if stop else 0)):
                    self._queue.task_done()
                self.metrics.shadow_queue_depth.set(self._queue.qsize())
            if stop:
                return

    def _shadow_scores(self, jobs: Sequence[_ShadowJob], skipped_reason: str | None) -> list[list[Score]]:
        """Score every non-deciding model of each job's snapshot, vectorised per (snapshot, alias)."""
        out: list[list[Score]] = [[] for _ in jobs]
        by_snapshot: dict[int, list[int]] = collections.defaultdict(list)
        for i, job in enumerate(jobs):
            by_snapshot[id(job.snapshot)].append(i)
        now = time.monotonic()
        for indices in by_snapshot.values():
            snapshot = jobs[indices[0]].snapshot
            for alias, model in snapshot.models.items():
                # Every model except the one that decided (its score, or its error, is in the event already).
                rows = [i for i in indices if jobs[i].decided.alias != alias]
                if not rows:
                    continue
                reason = skipped_reason or ("benched" if self._benched.get(alias, 0.0) > now else None)
                if reason is not None:
                    self.metrics.bind(self.metrics.shadow_skipped, alias, reason).inc(len(rows))
                    for i in rows:
                        out[i].append(
                            Score(
                                alias=alias,
                                model_version=model.version,
                                score=None,
                                latency_us=0.0,
                                status="skipped",
                                error=reason,
                            )
                        )
                    continue
                matrix = np.asarray([jobs[i].features for i in rows], dtype=np.float64)
                status: ScoreStatus = "ok"
                error: str | None = None
                scores: np.ndarray | None = None
                t0 = time.perf_counter()
                cpu0 = time.thread_time()
                try:
                    scores = model.scorer.score_batch(matrix)
                except Exception as exc:  # a broken challenger is counted and benched, never raised
                    status, error = "error", f"{type(exc).__name__}: {exc}"[:200]
                per_row = (time.perf_counter() - t0) / len(rows)
                # CPU time of this thread is the fair measure (wall time also counts waiting for the GIL behind
                # request threads); wall time still counts when it is far over, so a model that blocks is caught.
                cpu_per_row = (time.thread_time() - cpu0) / len(rows)
                if status == "ok" and (cpu_per_row > self.budget_s or per_row > WALL_BUDGET_FACTOR * self.budget_s):
                    status = "timeout"
                    error = f"{max(cpu_per_row, per_row) * 1e3:.2f} ms per row, budget {self.budget_s * 1e3:g} ms"
                if status != "ok":
                    self._benched[alias] = now + BENCH_COOLDOWN_S
                    self.metrics.bind(self.metrics.model_failures, alias, status).inc(len(rows))
                    logger.warning("shadow %s v%s benched %.0f s: %s", alias, model.version, BENCH_COOLDOWN_S, error)
                else:
                    self.metrics.bind(self.metrics.model_latency, alias, "shadow").observe(per_row)
                for k, i in enumerate(rows):
                    score = float(scores[k]) if scores is not None and status == "ok" else None
                    out[i].append(
                        Score(
                            alias=alias,
                            model_version=model.version,
                            score=score,
                            latency_us=per_row * 1e6,
                            status=status,
                            error=error,
                        )
                    )
        return out

    def _compare(self, jobs: Sequence[_ShadowJob], shadow: Sequence[Sequence[Score]]) -> None:
        policy = self.policy
        counts: collections.Counter[tuple[str, bool]] = collections.Counter()
        pairs: list[tuple[str, bool, float]] = []
        for job, scores in zip(jobs, shadow, strict=True):
            served = job.decided.score
            if served is None:
                continue
            for s in scores:
                if s.score is None:
                    continue
                would = decide(score=s.score, transaction=job.transaction, context=job.context, policy=policy)
                agree = would.decision == job.decision.decision
                counts[(s.alias, agree)] += 1
                pairs.append((s.alias, agree, s.score - served))
        for (alias, agree), n in counts.items():
            self.metrics.bind(self.metrics.agreement, alias, "true" if agree else "false").inc(n)
        with self._comparison_lock:
            for alias, agree, delta in pairs:
                c = self._comparison[alias]
                c.agree.append(agree)
                c.delta.append(delta)

    def _log(self, jobs: Sequence[_ShadowJob], skipped_reason: str | None) -> None:
        shadow = self._shadow_scores(jobs, skipped_reason)
        self._compare(jobs, shadow)
        for job, extra in zip(jobs, shadow, strict=True):
            self.events.submit(self.predictions_stream, self._event_fields(job, [job.decided, *extra]), job.request_id)

    def _event_fields(self, job: _ShadowJob, scores: list[Score]) -> dict[str, str]:
        """The stream entry of the request's :class:`~shadowgate.serving.events.PredictionEvent`.

        Built as plain data and serialised with orjson — five times cheaper than constructing the pydantic model for
        every request; the API tests parse every logged event back through ``from_stream_fields`` (the schema).
        """
        tx = job.transaction
        deciding = job.deciding
        decided = job.decided
        inputs = {k: v for k, v in tx.items() if k != "customer_id"}
        inputs["event_timestamp"] = tx["event_timestamp"].isoformat()
        payload = {
            "schema_version": SCHEMA_VERSION,
            "event_id": job.request_id,
            "transaction_id": tx["transaction_id"],
            "customer_id_hash": hash_customer_id(tx["customer_id"], salt=self.customer_salt),
            "merchant_id": tx["merchant_id"],
            "event_timestamp": tx["event_timestamp"],
            "served_at": job.served_at,
            "features": dict(zip(FEATURE_NAMES, job.features, strict=True)),
            "inputs": inputs,
            "scores": [s.as_dict() for s in scores],
            "served_by": f"{decided.alias}@v{decided.model_version}" if decided.score is not None else "fallback",
            "score": decided.score,
            "decision": job.decision.decision.value,
            "risk_level": str(job.decision.risk_level),
            "reason_codes": list(job.reason_codes),
            "experiment_id": deciding.experiment_id if deciding is not None else None,
            "arm": deciding.arm if deciding is not None else None,
            "propensity": deciding.propensity if deciding is not None else None,
            "assignments": [
                {
                    "experiment_id": a.experiment_id,
                    "experiment_version": str(a.experiment_version),
                    "arm": a.arm,
                    "propensity": a.propensity,
                    "mode": a.mode,
                }
                for a in job.assignments
            ],
            "policy_name": job.decision.policy_name,
            "policy_version": str(job.decision.policy_version),
        }
        return {
            "v": STREAM_ENCODING_VERSION,
            "id": job.request_id,
            "kind": PREDICTION,
            "payload": orjson.dumps(payload).decode(),
        }

    # ------------------------------------------------------------------------------------------------ reporting

    def comparison(self) -> dict[str, dict[str, float | int | None]]:
        """Rolling agreement and score deltas of every shadow model against the served decision."""
        out: dict[str, dict[str, float | int | None]] = {}
        with self._comparison_lock:
            for alias, c in self._comparison.items():
                n = len(c.agree)
                deltas = np.asarray(c.delta, dtype=np.float64)
                out[alias] = {
                    "requests": n,
                    "agreement": (sum(c.agree) / n) if n else None,
                    "mean_score_delta": float(deltas.mean()) if n else None,
                    "mean_abs_score_delta": float(np.abs(deltas).mean()) if n else None,
                    "p95_abs_score_delta": float(np.quantile(np.abs(deltas), 0.95)) if n else None,
                }
        return out

    def benched(self) -> dict[str, float]:
        now = time.monotonic()
        return {alias: until - now for alias, until in self._benched.items() if until > now}
