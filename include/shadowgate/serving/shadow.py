"""The shadow side of every decision: the other models' scores, the comparison, the metrics and the logged event.

The request path (:mod:`shadowgate.serving.service`) decides and hands one compact *frame* per request to
:func:`encode_prediction`; nothing else happens while the customer waits. The frames travel to the shadow process
(:mod:`shadowgate.serving.sidecar`), where a :class:`ShadowWorker` scores every other served model in micro-batches
(vectorised), compares their decisions with the served one, updates the Prometheus metrics and builds the
:class:`~shadowgate.events.PredictionEvent` for the event log.

A failing or slow shadow model costs the customer nothing: it is benched for a cool-down, its score is recorded as
``error`` / ``timeout`` / ``skipped`` and counted. When the worker falls too far behind (a request waited more than
:data:`MAX_LAG_S` for it) it sheds shadow scoring for that batch — the event is still logged, its shadow scores
marked ``skipped`` with the reason ``shadow_backlog`` and counted.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import orjson

from shadowgate.decisioning.policies import DecisionContext, DecisionPolicy, PolicyDecision, decide
from shadowgate.events import (
    PREDICTION,
    SCHEMA_VERSION,
    STREAM_ENCODING_VERSION,
    ScoreStatus,
    hash_customer_id,
)
from shadowgate.features import FEATURE_SET
from shadowgate.serving.assignment import Assignment
from shadowgate.serving.metrics import ServingMetrics
from shadowgate.serving.models import ModelSnapshot

logger = logging.getLogger(__name__)

BENCH_COOLDOWN_S = 30.0
"""How long a shadow model that failed or blew its budget sits out."""

WALL_BUDGET_FACTOR = 50.0
"""A shadow model is over budget when its CPU time per row exceeds the budget, or its wall time this many times."""

MAX_LAG_S = 2.0
"""A request that waited longer than this for shadow scoring is logged without it (``skipped``: ``shadow_backlog``)."""

COMPARISON_WINDOW = 10_000
"""Rolling window (requests) of ``/v1/shadow/comparison``."""

SNAPSHOTS_KEPT = 4
"""Model generations the worker keeps (frames name the generation that decided them)."""


class EventSink(Protocol):
    def submit(self, stream: str, fields: dict[str, str], event_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Score:
    """One model's score of one request (the fields of :class:`shadowgate.events.ModelScore`)."""

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


# ------------------------------------------------------------------------------------------------ frames

FRAME_VERSION = 2
"""Version of the journal frames this code writes. 1 (no ``v`` key): the transaction with the raw customer id, hashed
by the shadow process. 2: the customer id hashed by the API process before the frame is journaled (``cid``); the
transaction without it."""

FRAME_VERSIONS = (1, 2)
"""Every frame version this code reads: a journal written by the previous release is read after an upgrade."""


def frame_version(frame: Mapping[str, Any]) -> int:
    """A frame's version (1 when it has none).

    Raises:
        ValueError: a version this code does not read (written by a newer release).
    """
    version = frame.get("v", 1)
    if version not in FRAME_VERSIONS:
        raise ValueError(f"frame version {version!r} is not one this release reads ({FRAME_VERSIONS})")
    return int(version)


def encode_prediction(
    *,
    request_id: str,
    transaction: Mapping[str, Any],
    customer_id_hash: str,
    context: DecisionContext,
    features: Sequence[float],
    generation: int,
    decided: Score,
    decision: PolicyDecision,
    reason_codes: Sequence[str],
    assignments: Sequence[Assignment],
    deciding: Assignment | None,
    latency_s: float,
) -> bytes:
    """One request's frame for the shadow worker: everything the event needs, as JSON (a few µs with orjson).

    ``served_at`` and the queueing clock are taken here. The raw customer id is not in it: the frame is written to the
    journal on disk, so it carries the id's keyed hash (``customer_id_hash``) and the transaction without the id.
    """
    return orjson.dumps(
        {
            "v": FRAME_VERSION,
            "k": "p",
            "rid": request_id,
            "t": time.monotonic(),
            "at": time.time(),
            "gen": generation,
            "cid": customer_id_hash,
            "tx": {k: v for k, v in transaction.items() if k != "customer_id"},
            "ctx": [context.regulatory_flags, context.is_vip],
            "f": features,
            "d": [
                decided.alias,
                decided.model_version,
                decided.score,
                decided.latency_us,
                decided.status,
                decided.error,
            ],
            "dec": [
                decision.decision.value,
                str(decision.risk_level),
                decision.policy_name,
                str(decision.policy_version),
                decision.fallback,
            ],
            "rc": reason_codes,
            "as": [
                {
                    "experiment_id": a.experiment_id,
                    "experiment_version": str(a.experiment_version),
                    "arm": a.arm,
                    "propensity": a.propensity,
                    "mode": a.mode,
                }
                for a in assignments
            ],
            "di": None if deciding is None else [deciding.experiment_id, deciding.arm, deciding.propensity],
            "lat": latency_s,
        }
    )


@dataclass(slots=True)
class ShadowJob:
    """One decoded prediction frame."""

    request_id: str
    queued_at: float
    served_at: float
    generation: int
    transaction: dict[str, Any]
    context: DecisionContext
    features: list[float]
    decided: Score
    decision: str
    risk_level: str
    policy_name: str
    policy_version: str
    fallback: bool
    reason_codes: list[str]
    assignments: list[dict[str, Any]]
    deciding: list[Any] | None
    latency_s: float
    customer_id_hash: str | None = None
    """From a version-2 frame; a version-1 frame's transaction holds the raw id instead (hashed by the worker)."""

    @classmethod
    def from_frame(cls, frame: Mapping[str, Any]) -> ShadowJob:
        """Decode a prediction frame of any version in :data:`FRAME_VERSIONS`.

        Raises:
            ValueError, KeyError, TypeError, IndexError: not a frame this code reads (it is dead-lettered).
        """
        version = frame_version(frame)
        cid = frame["cid"] if version >= 2 else None
        if version == 1 and not isinstance(frame["tx"].get("customer_id"), str):
            raise KeyError("customer_id")
        if cid is not None and not isinstance(cid, str):
            raise TypeError("cid is not a string")
        d = frame["d"]
        dec = frame["dec"]
        flags, is_vip = frame["ctx"]
        return cls(
            request_id=frame["rid"],
            queued_at=frame["t"],
            served_at=frame["at"],
            generation=frame["gen"],
            transaction=frame["tx"],
            context=DecisionContext(regulatory_flags=tuple(flags), is_vip=is_vip),
            features=frame["f"],
            decided=Score(alias=d[0], model_version=d[1], score=d[2], latency_us=d[3], status=d[4], error=d[5]),
            decision=dec[0],
            risk_level=dec[1],
            policy_name=dec[2],
            policy_version=dec[3],
            fallback=dec[4],
            reason_codes=frame["rc"],
            assignments=frame["as"],
            deciding=frame["di"],
            latency_s=frame["lat"],
            customer_id_hash=cid,
        )

    @property
    def served_by(self) -> str | None:
        """The alias whose score decided, or None (fallback policy)."""
        return self.decided.alias if self.decided.score is not None else None


def _matrix(rows: Sequence[Sequence[float | None]]) -> np.ndarray:
    """Feature rows as a float matrix; JSON carries NaN/inf as null, which becomes NaN (the missing-value path)."""
    try:
        return np.asarray(rows, dtype=np.float64)
    except TypeError:
        return np.asarray([[math.nan if v is None else v for v in row] for row in rows], dtype=np.float64)


# ------------------------------------------------------------------------------------------------ worker


@dataclass
class _Comparison:
    agree: collections.deque[bool] = field(default_factory=lambda: collections.deque(maxlen=COMPARISON_WINDOW))
    delta: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=COMPARISON_WINDOW))


class ShadowWorker:
    """Scores, compares, counts and logs batches of decided requests (single-threaded: the shadow process's loop).

    Args:
        policy: the decision policy (the same as the request path's, for the would-be decisions).
        events: the event log.
        customer_salt: secret salt of the customer-id hash.
        predictions_stream: Redis Stream of prediction events.
        budget_ms: per-model scoring budget (CPU time per row).
        metrics: Prometheus metrics.
    """

    def __init__(
        self,
        *,
        policy: DecisionPolicy,
        events: EventSink,
        customer_salt: str,
        predictions_stream: str,
        budget_ms: float,
        metrics: ServingMetrics,
    ) -> None:
        self.policy = policy
        self.events = events
        self.customer_salt = customer_salt
        self.predictions_stream = predictions_stream
        self.budget_s = budget_ms / 1000.0
        self.metrics = metrics
        self.processed = 0
        self._snapshots: collections.OrderedDict[int, ModelSnapshot] = collections.OrderedDict()
        self._benched: dict[str, float] = {}
        self._comparison: dict[str, _Comparison] = collections.defaultdict(_Comparison)
        self._lock = threading.Lock()  # comparison and bench are read by the reporting thread

    # ------------------------------------------------------------------------------------------------ models

    def set_models(self, snapshot: ModelSnapshot) -> None:
        """Make a model generation available (frames of that generation are scored with it)."""
        self._snapshots[snapshot.generation] = snapshot
        while len(self._snapshots) > SNAPSHOTS_KEPT:
            self._snapshots.popitem(last=False)

    def _snapshot(self, generation: int) -> ModelSnapshot | None:
        found = self._snapshots.get(generation)
        if found is None and self._snapshots:
            # Unknown (older than the kept ones): score with the newest; the event records the versions used.
            found = next(reversed(self._snapshots.values()))
        return found

    def bench(self, aliases: Sequence[str], seconds: float, reason: str) -> None:
        """Bench ``aliases`` for ``seconds`` (a replaced shadow process benches the challengers after a stall)."""
        until = time.monotonic() + seconds
        with self._lock:
            for alias in aliases:
                self._benched[alias] = until
        if aliases:
            logger.warning("shadow models %s benched %.0f s: %s", ", ".join(aliases), seconds, reason)

    # ------------------------------------------------------------------------------------------------ batches

    def process(self, jobs: Sequence[ShadowJob]) -> None:
        """Count, shadow-score, compare and log ``jobs`` (in order)."""
        if not jobs:
            return
        self._count_decisions(jobs)
        lag = time.monotonic() - jobs[0].queued_at
        self.metrics.shadow_lag.set(lag)
        shadow = self._shadow_scores(jobs, "shadow_backlog" if lag > MAX_LAG_S else None)
        self._compare(jobs, shadow)
        for job, extra in zip(jobs, shadow, strict=True):
            self.events.submit(self.predictions_stream, self.event_fields(job, [job.decided, *extra]), job.request_id)
        self.processed += len(jobs)

    def _count_decisions(self, jobs: Sequence[ShadowJob]) -> None:
        m = self.metrics
        for job in jobs:
            arm = job.deciding[1] if job.deciding is not None else "none"
            m.bind(m.decisions, job.decision, arm, job.served_by or "fallback").inc()
            m.bind(m.request_latency, "assess").observe(job.latency_s)
            if job.fallback:
                m.fallback.inc()
            decided = job.decided
            if decided.status == "ok":
                m.bind(m.model_latency, decided.alias, "decider").observe(decided.latency_us / 1e6)
            elif decided.status == "error":
                m.bind(m.model_failures, decided.alias, "error").inc()

    def _shadow_scores(self, jobs: Sequence[ShadowJob], skipped_reason: str | None) -> list[list[Score]]:
        """Score every non-deciding model of each job's generation, vectorised per (generation, alias)."""
        out: list[list[Score]] = [[] for _ in jobs]
        by_generation: dict[int, list[int]] = collections.defaultdict(list)
        for i, job in enumerate(jobs):
            by_generation[job.generation].append(i)
        now = time.monotonic()
        for generation, indices in by_generation.items():
            snapshot = self._snapshot(generation)
            if snapshot is None:
                continue
            for alias, model in snapshot.models.items():
                # Every model except the one that decided (its score, or its error, is in the event already).
                rows = [i for i in indices if jobs[i].decided.alias != alias]
                if not rows:
                    continue
                reason = skipped_reason or ("benched" if self._benched.get(alias, 0.0) > now else None)
                if reason is not None:
                    self.metrics.bind(self.metrics.shadow_skipped, alias, reason).inc(len(rows))
                    skipped = Score(alias, model.version, None, 0.0, "skipped", reason)
                    for i in rows:
                        out[i].append(skipped)
                    continue
                scores = self._score(alias, model, [jobs[i].features for i in rows], now)
                for i, score in zip(rows, scores, strict=True):
                    out[i].append(score)
        return out

    def _score(self, alias: str, model: Any, rows: list[list[float]], now: float) -> list[Score]:
        status: ScoreStatus = "ok"
        error: str | None = None
        scores: np.ndarray | None = None
        matrix = _matrix(rows)
        t0 = time.perf_counter()
        cpu0 = time.thread_time()
        try:
            scores = model.scorer.score_batch(matrix)
        except Exception as exc:  # a broken challenger is counted and benched, never raised
            status, error = "error", f"{type(exc).__name__}: {exc}"[:200]
        per_row = (time.perf_counter() - t0) / len(rows)
        # CPU time of this thread is the fair measure (wall time also counts being descheduled on a busy machine);
        # wall time still counts when it is far over, so a model that blocks is caught.
        cpu_per_row = (time.thread_time() - cpu0) / len(rows)
        if status == "ok" and (cpu_per_row > self.budget_s or per_row > WALL_BUDGET_FACTOR * self.budget_s):
            status = "timeout"
            error = f"{max(cpu_per_row, per_row) * 1e3:.2f} ms per row, budget {self.budget_s * 1e3:g} ms"
        if status != "ok":
            with self._lock:
                self._benched[alias] = now + BENCH_COOLDOWN_S
            self.metrics.bind(self.metrics.model_failures, alias, status).inc(len(rows))
            logger.warning("shadow %s v%s benched %.0f s: %s", alias, model.version, BENCH_COOLDOWN_S, error)
            return [Score(alias, model.version, None, per_row * 1e6, status, error) for _ in rows]
        self.metrics.bind(self.metrics.model_latency, alias, "shadow").observe(per_row)
        assert scores is not None
        return [Score(alias, model.version, s, per_row * 1e6, "ok", None) for s in scores.tolist()]

    def _compare(self, jobs: Sequence[ShadowJob], shadow: Sequence[Sequence[Score]]) -> None:
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
                agree = would.decision.value == job.decision
                counts[(s.alias, agree)] += 1
                pairs.append((s.alias, agree, s.score - served))
        for (alias, agree), n in counts.items():
            self.metrics.bind(self.metrics.agreement, alias, "true" if agree else "false").inc(n)
        with self._lock:
            for alias, agree, delta in pairs:
                c = self._comparison[alias]
                c.agree.append(agree)
                c.delta.append(delta)

    def event_fields(self, job: ShadowJob, scores: list[Score]) -> dict[str, str]:
        """The stream entry of the request's :class:`~shadowgate.events.PredictionEvent`.

        Built as plain data and serialised with orjson — five times cheaper than constructing the pydantic model for
        every request; the API tests parse every logged event back through ``from_stream_fields`` (the schema).
        """
        tx = job.transaction
        deciding = job.deciding
        decided = job.decided
        payload = {
            "schema_version": SCHEMA_VERSION,
            "event_id": job.request_id,
            "transaction_id": tx["transaction_id"],
            "customer_id_hash": job.customer_id_hash
            if job.customer_id_hash is not None
            else hash_customer_id(tx["customer_id"], salt=self.customer_salt),
            "merchant_id": tx["merchant_id"],
            "event_timestamp": tx["event_timestamp"],
            "served_at": _utc_iso(job.served_at),
            # As an array of the current feature set (a third of the bytes of the named object); readers name it.
            "features": job.features,
            "feature_set": FEATURE_SET,
            "inputs": {k: v for k, v in tx.items() if k != "customer_id"},
            "scores": [s.as_dict() for s in scores],
            "served_by": f"{decided.alias}@v{decided.model_version}" if decided.score is not None else "fallback",
            "score": decided.score,
            "decision": job.decision,
            "risk_level": job.risk_level,
            "reason_codes": job.reason_codes,
            "experiment_id": deciding[0] if deciding is not None else None,
            "arm": deciding[1] if deciding is not None else None,
            "propensity": deciding[2] if deciding is not None else None,
            "assignments": job.assignments,
            "policy_name": job.policy_name,
            "policy_version": job.policy_version,
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
        with self._lock:
            windows = {alias: (list(c.agree), list(c.delta)) for alias, c in self._comparison.items()}
        for alias, (agree, delta) in windows.items():
            n = len(agree)
            deltas = np.asarray(delta, dtype=np.float64)
            out[alias] = {
                "requests": n,
                "agreement": (sum(agree) / n) if n else None,
                "mean_score_delta": float(deltas.mean()) if n else None,
                "mean_abs_score_delta": float(np.abs(deltas).mean()) if n else None,
                "p95_abs_score_delta": float(np.quantile(np.abs(deltas), 0.95)) if n else None,
            }
        return out

    def benched(self) -> dict[str, float]:
        """Alias → seconds left on the bench."""
        now = time.monotonic()
        with self._lock:
            return {alias: until - now for alias, until in self._benched.items() if until > now}


def _utc_iso(epoch_s: float) -> str:
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC).isoformat()
