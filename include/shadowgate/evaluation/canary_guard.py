"""The canary guard: each canary arm against the champion arm of the same allocation period, on signals that do not
wait for defaults, and the staged rollout that raises a canary's share only while they hold. Pure: no I/O.

Signals (treatment arm against control arm, the decisions of the current allocation period in the window):

* **errors**: the share of decisions without a usable model score (the fallback served them);
* **latency**: the p99 scoring latency of the model that served the treatment arm;
* **approval rate**: the two arms' approval rates;
* **score distribution**: PSI between the arms' served scores (20 equal bins on [0, 1], merged to hold 5 % of the
  control arm each): a model stuck on one value, or scoring on a broken feature, moves it far; it breaches beyond
  ``max_score_psi`` and beyond what two samples of the arms' sizes differ by at ``alpha`` (χ² bound);
* **split**: customers per arm against the designed share (the sample-ratio test: the randomisation unit is the
  customer);
* **early label**: once enough early labels exist, the early default rate among the approved.

A rate difference breaches only when it is beyond its bound **and** significant at ``alpha`` (a small one: the guard
looks every hour, so each look must be hard to fool by chance). Too few decisions in either arm: nothing is judged.

The rollout: a stage (one treatment share; every share change is a new allocation period, so the statistics never mix
stages) advances to the next only after it has run ``hold_hours``, enough decisions were judged, and every signal of
the whole stage passes; a breach stops the arm instead (the guard never advances past a breach).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats as sps

from shadowgate.decisioning.experiments import config_resource, read_yaml, validate_config
from shadowgate.evaluation.stats import srm_test

SHIPPED_CANARY = "canary.yaml"
SCORE_BINS = 20


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GuardThresholds(_Strict):
    window_hours: float = Field(gt=0)
    min_decisions_per_arm: int = Field(ge=1)
    alpha: float = Field(gt=0, lt=0.5)
    max_error_rate_increase: float = Field(ge=0, le=1)
    max_p99_latency_ms: float = Field(gt=0)
    max_approval_rate_change: float = Field(gt=0, le=1)
    max_score_psi: float = Field(gt=0)
    srm_p_min: float = Field(gt=0, lt=1)
    max_early_default_rate_increase: float = Field(ge=0, le=1)
    min_early_labels_per_arm: int = Field(ge=1)


class Rollout(_Strict):
    stages: tuple[float, ...] = Field(min_length=1)
    hold_hours: float = Field(gt=0)

    def model_post_init(self, _: object) -> None:
        if any(not 0 < s < 1 for s in self.stages) or list(self.stages) != sorted(set(self.stages)):
            raise ValueError("stages must be increasing treatment shares strictly between 0 and 1")

    def next_stage(self, share: float) -> float | None:
        """The share after ``share`` (None: the last stage, or a share off the plan)."""
        for i, s in enumerate(self.stages):
            if math.isclose(s, share, abs_tol=1e-9):
                return self.stages[i + 1] if i + 1 < len(self.stages) else None
        return None


class CanaryConfig(_Strict):
    version: int = Field(ge=1)
    description: str = ""
    guard: GuardThresholds
    rollouts: dict[str, Rollout] = Field(default_factory=dict)

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(), sort_keys=True).encode()).hexdigest()[:16]


def load_canary_config(path: Path | str | None = None) -> CanaryConfig:
    """The guard's config from a YAML file, or the shipped ``canary.yaml``."""
    source = config_resource(SHIPPED_CANARY) if path is None else Path(path)
    return validate_config(CanaryConfig, read_yaml(source), source=str(source))


@dataclass(frozen=True)
class ArmWindow:
    """One arm's decisions in the judged window (one allocation period)."""

    decisions: int
    customers: int
    approved: int
    fallbacks: int
    """Decisions no model score served (the fallback policy decided)."""
    p99_latency_ms: float | None
    score_counts: tuple[int, ...] = ()
    """Served scores per bin (:data:`SCORE_BINS` equal bins on [0, 1])."""
    early_labels: int = 0
    early_defaults: int = 0


class Action(StrEnum):
    STOP = "stop"
    ADVANCE = "advance"
    HOLD = "hold"
    NOT_JUDGED = "not_judged"


@dataclass(frozen=True)
class Signal:
    name: str
    value: float | None
    threshold: float
    breached: bool
    reason: str


@dataclass(frozen=True)
class GuardVerdict:
    action: Action
    signals: tuple[Signal, ...]
    summary: str
    next_share: float | None = None
    breaches: tuple[str, ...] = field(default_factory=tuple)


def _two_proportions(x1: int, n1: int, x2: int, n2: int) -> float:
    """Two-sided p-value of p1 ≠ p2: Fisher's exact test (a canary's first hour holds few events: three errors in
    200 decisions must not look like a spike, which the normal approximation would say); 1.0 when undefined."""
    if min(n1, n2) == 0:
        return 1.0
    return float(sps.fisher_exact([[x1, n1 - x1], [x2, n2 - x2]]).pvalue)


def _merged_bins(control: np.ndarray, *, min_share: float = 0.05) -> list[slice]:
    """Adjacent bins merged left to right until each holds at least ``min_share`` of the control arm's scores (the
    last merged into its neighbour when short): PSI on near-empty bins is noise, not signal."""
    total = control.sum()
    groups, start, mass = [], 0, 0.0
    for i, count in enumerate(control):
        mass += count
        if mass >= min_share * total:
            groups.append(slice(start, i + 1))
            start, mass = i + 1, 0.0
    if start < len(control):
        if groups:
            groups[-1] = slice(groups[-1].start, len(control))
        else:
            groups.append(slice(0, len(control)))
    return groups


def score_psi(control: Sequence[int], treatment: Sequence[int], *, floor: float = 1e-4) -> float | None:
    """PSI between two binned score distributions, on the bins merged to hold at least 5 % of the control arm each
    (empty bins floored, so a collapsed distribution is finite)."""
    c, t = np.asarray(control, dtype=float), np.asarray(treatment, dtype=float)
    if c.sum() == 0 or t.sum() == 0 or c.shape != t.shape:
        return None
    groups = _merged_bins(c)
    c = np.array([c[g].sum() for g in groups])
    t = np.array([t[g].sum() for g in groups])
    pc, pt = np.maximum(c / c.sum(), floor), np.maximum(t / t.sum(), floor)
    return float(np.sum((pt - pc) * np.log(pt / pc)))


def psi_noise_bound(control: Sequence[int], treatment: Sequence[int], *, alpha: float) -> float:
    """The PSI two samples of these sizes from one distribution exceed with probability ``alpha``: PSI is about
    χ²(bins − 1)·(1/n₁ + 1/n₂) under no difference."""
    c = np.asarray(control, dtype=float)
    n1, n2 = float(c.sum()), float(np.sum(treatment))
    if n1 == 0 or n2 == 0:
        return math.inf
    bins = len(_merged_bins(c))
    return float(sps.chi2.ppf(1 - alpha, max(bins - 1, 1)) * (1 / n1 + 1 / n2))


def judge(control: ArmWindow, treatment: ArmWindow, *, share: float, guard: GuardThresholds) -> tuple[Signal, ...]:
    """Every signal of the treatment arm against the control arm (see the module); empty when not judged."""
    if min(control.decisions, treatment.decisions) < guard.min_decisions_per_arm:
        return ()
    signals = []
    err_c, err_t = control.fallbacks / control.decisions, treatment.fallbacks / treatment.decisions
    p_err = _two_proportions(treatment.fallbacks, treatment.decisions, control.fallbacks, control.decisions)
    breached = err_t - err_c > guard.max_error_rate_increase and p_err < guard.alpha
    signals.append(
        Signal(
            "errors",
            err_t - err_c,
            guard.max_error_rate_increase,
            breached,
            f"decisions without a model score: treatment {err_t:.2%}, control {err_c:.2%} (p = {p_err:.2g})",
        )
    )
    latency = treatment.p99_latency_ms
    signals.append(
        Signal(
            "latency",
            latency,
            guard.max_p99_latency_ms,
            latency is not None and latency > guard.max_p99_latency_ms,
            "treatment p99 scoring latency "
            + ("not logged" if latency is None else f"{latency:.2f} ms (budget {guard.max_p99_latency_ms:g} ms)"),
        )
    )
    app_c, app_t = control.approved / control.decisions, treatment.approved / treatment.decisions
    p_app = _two_proportions(treatment.approved, treatment.decisions, control.approved, control.decisions)
    breached = abs(app_t - app_c) > guard.max_approval_rate_change and p_app < guard.alpha
    signals.append(
        Signal(
            "approval_rate",
            app_t - app_c,
            guard.max_approval_rate_change,
            breached,
            f"approval rate: treatment {app_t:.1%}, control {app_c:.1%} (p = {p_app:.2g})",
        )
    )
    psi = score_psi(control.score_counts, treatment.score_counts)
    bound = max(guard.max_score_psi, psi_noise_bound(control.score_counts, treatment.score_counts, alpha=guard.alpha))
    signals.append(
        Signal(
            "score_distribution",
            psi,
            bound,
            psi is not None and psi > bound,
            "served scores: "
            + ("none" if psi is None else f"PSI {psi:.3f} between the arms (beyond chance and the bound: {bound:.3f})"),
        )
    )
    if 0 < share < 1 and control.customers + treatment.customers > 0:
        srm = srm_test([control.customers, treatment.customers], [1 - share, share], threshold=guard.srm_p_min)
        signals.append(
            Signal(
                "split",
                srm.p_value,
                guard.srm_p_min,
                srm.p_value < guard.srm_p_min,
                f"customers {control.customers:,} control / {treatment.customers:,} treatment for a designed "
                f"{share:.0%} (p = {srm.p_value:.2g})",
            )
        )
    if min(control.early_labels, treatment.early_labels) >= guard.min_early_labels_per_arm:
        rate_c = control.early_defaults / control.early_labels
        rate_t = treatment.early_defaults / treatment.early_labels
        p_early = _two_proportions(
            treatment.early_defaults, treatment.early_labels, control.early_defaults, control.early_labels
        )
        breached = rate_t - rate_c > guard.max_early_default_rate_increase and p_early < guard.alpha
        signals.append(
            Signal(
                "early_label",
                rate_t - rate_c,
                guard.max_early_default_rate_increase,
                breached,
                f"early default rate among the approved: treatment {rate_t:.2%}, control {rate_c:.2%} "
                f"(p = {p_early:.2g})",
            )
        )
    return tuple(signals)


def decide(
    recent: tuple[Signal, ...],
    stage: tuple[Signal, ...],
    *,
    share: float,
    stage_hours: float,
    rollout: Rollout | None,
) -> GuardVerdict:
    """The guard's action: stop on a breach in the recent window or over the whole stage; advance when the stage has
    held ``hold_hours`` and every signal of the whole stage passes; else hold (or not judged: too few decisions)."""
    breaches = tuple(f"{s.name}: {s.reason}" for s in (*recent, *stage) if s.breached)
    signals = recent or stage
    if breaches:
        return GuardVerdict(Action.STOP, signals, "STOPPED — " + "; ".join(dict.fromkeys(breaches)), breaches=breaches)
    if not recent and not stage:
        return GuardVerdict(Action.NOT_JUDGED, (), "too few decisions in an arm to judge yet")
    following = rollout.next_stage(share) if rollout is not None else None
    if following is not None and stage and rollout is not None and stage_hours >= rollout.hold_hours:
        return GuardVerdict(
            Action.ADVANCE,
            stage,
            f"stage {share:.0%} held every signal for {stage_hours:.0f} h (≥ {rollout.hold_hours:g} h): "
            f"advance to {following:.0%}",
            next_share=following,
        )
    if following is not None and rollout is not None:
        why = f"stage {share:.0%} holds; {stage_hours:.1f} h of {rollout.hold_hours:g} h before {following:.0%}"
    else:
        why = f"holds at {share:.0%}" + (" (the last stage)" if rollout is not None else "")
    return GuardVerdict(Action.HOLD, signals, why)
