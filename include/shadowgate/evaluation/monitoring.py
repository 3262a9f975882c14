"""Is a model still doing what it did? Its weekly figures against its **own first evaluated weeks** (pure).

The weekly evaluation can only measure a model on the approved, matured purchases of a cohort week, under one label.
Its validation AUC from training was measured on every applicant (and on the final label only): the champion's own
cut-off removes the applicants it ranks riskiest, so the approved-only AUC is lower by construction (the README's
measured 0.846 → 0.779) and a comparison with it fires every week in a stable world. Like is compared with like here:
the baseline is the same model version's figures on its first ``k`` evaluated cohort weeks, on the same population
and the same label.

Two questions, each answered only when the change is both **material** (a relative bound) and **significant**
(at least ``min_z`` standard errors, with the baseline's own uncertainty and any week-to-week dispersion beyond the
sampling error the baseline weeks show):

* :func:`auc_drop` — does it rank worse? ``drop = AUC_baseline − AUC_week``; the baseline AUC is the inverse-variance
  mean of its weeks, each week's standard error DeLong's.
* :func:`default_rise` — do more purchases default than it predicts? The observed-to-expected ratio
  ``O/E = defaults / Σ PD`` of the week against the baseline weeks' pooled ratio (Poisson errors). A concept shock —
  defaults rising in a segment whose features did not change — moves this, not the ranking (see the README's measured
  figures).

The dispersion factor ``φ = max(1, √(χ² / (k − 1)))`` of the baseline weeks around their mean widens both standard
errors: repeat customers and the week-to-week mix make weekly figures vary more than one week's sampling error says.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shadowgate.evaluation.performance import ModelPerformance


@dataclass(frozen=True)
class WeekFigures:
    """What the checks need of one model on one cohort week.

    Attributes:
        auc: on the week's population (NaN with one class).
        auc_se: DeLong's standard error of ``auc``.
        n: rows.
        n_positive: defaults (observed).
        expected: ``Σ PD`` over the rows (the defaults the model predicts).
    """

    auc: float
    auc_se: float
    n: int
    n_positive: int
    expected: float

    @classmethod
    def of(cls, performance: ModelPerformance) -> WeekFigures:
        return cls(
            auc=performance.auc,
            auc_se=performance.auc_se,
            n=performance.n,
            n_positive=performance.n_positive,
            expected=performance.mean_score * performance.n,
        )


@dataclass(frozen=True)
class Baseline:
    """A model's figures pooled over its first evaluated weeks.

    Attributes:
        weeks: how many weeks it pools.
        auc: the inverse-variance weighted mean of their AUCs.
        auc_se: its standard error (``1 / √Σ w``), before dispersion.
        auc_dispersion: φ of the weeks' AUCs around ``auc`` (≥ 1).
        observed: defaults over the weeks.
        expected: ``Σ PD`` over the weeks.
        ratio_dispersion: φ of the weeks' defaults around ``expected × observed / expected`` (≥ 1).
    """

    weeks: int
    auc: float
    auc_se: float
    auc_dispersion: float
    observed: int
    expected: float
    ratio_dispersion: float

    @property
    def ratio(self) -> float:
        """Observed over expected defaults (the model's calibration-in-the-large on its first weeks)."""
        return self.observed / self.expected if self.expected > 0 else math.nan


def _dispersion(chi_square: float, weeks: int) -> float:
    return max(1.0, math.sqrt(chi_square / (weeks - 1))) if weeks > 1 else 1.0


def baseline(weeks: Sequence[WeekFigures]) -> Baseline | None:
    """The baseline of ``weeks`` (the model's first evaluated weeks, in order); None when no week has a usable AUC."""
    usable = [w for w in weeks if math.isfinite(w.auc) and math.isfinite(w.auc_se) and w.auc_se > 0]
    if not usable:
        return None
    aucs = np.array([w.auc for w in usable])
    weights = np.array([1.0 / w.auc_se**2 for w in usable])
    auc = float(np.dot(weights, aucs) / weights.sum())
    observed = sum(w.n_positive for w in weeks)
    expected = float(sum(w.expected for w in weeks))
    ratio = observed / expected if expected > 0 else math.nan
    chi_ratio = sum((w.n_positive - w.expected * ratio) ** 2 / (w.expected * ratio) for w in weeks if w.expected > 0)
    return Baseline(
        weeks=len(weeks),
        auc=auc,
        auc_se=float(1.0 / math.sqrt(weights.sum())),
        auc_dispersion=_dispersion(float(np.dot(weights, (aucs - auc) ** 2)), len(usable)),
        observed=observed,
        expected=expected,
        ratio_dispersion=_dispersion(chi_ratio, len(weeks)) if math.isfinite(ratio) and ratio > 0 else 1.0,
    )


@dataclass(frozen=True)
class ChangeTest:
    """One week against the baseline.

    Attributes:
        value: the week's figure (AUC, or O/E).
        reference: the baseline's.
        change: the relative change in the alerting direction (``drop / reference`` for the AUC, the O/E rise).
        se: the standard error of ``change`` (dispersion included).
        z: ``change / se``.
        fires: ``change > relative`` and ``z ≥ min_z``.
    """

    value: float
    reference: float
    change: float
    se: float
    z: float
    fires: bool
    cleared: bool
    """Gone for good: the change is within half the relative bound or under half of ``min_z`` standard errors (an
    alert raised earlier is resolved only then, so a figure hovering at the bound does not flap)."""


def _test(value: float, reference: float, change: float, se: float, *, relative: float, min_z: float) -> ChangeTest:
    z = change / se if se > 0 else (math.inf if change > 0 else 0.0)
    finite = math.isfinite(change)
    fires = bool(finite and change > relative and z >= min_z)
    cleared = not (finite and change > relative / 2 and z >= min_z / 2)
    return ChangeTest(value=value, reference=reference, change=change, se=se, z=z, fires=fires, cleared=cleared)


def auc_drop(week: WeekFigures, base: Baseline, *, relative: float, min_z: float) -> ChangeTest | None:
    """Does the week's AUC fall more than ``relative`` (a fraction) and ``min_z`` standard errors below the
    baseline's? None when the week's AUC is undefined (one class)."""
    if not (math.isfinite(week.auc) and math.isfinite(week.auc_se)):
        return None
    se = base.auc_dispersion * math.sqrt(week.auc_se**2 + base.auc_se**2) / base.auc
    change = (base.auc - week.auc) / base.auc
    return _test(week.auc, base.auc, change, se, relative=relative, min_z=min_z)


def default_rise(week: WeekFigures, base: Baseline, *, relative: float, min_z: float) -> ChangeTest | None:
    """Do the week's defaults exceed what the model predicts by more than ``relative`` (a fraction) and ``min_z``
    standard errors, beyond its calibration on the baseline weeks? None without a prediction to compare with."""
    if week.expected <= 0 or not math.isfinite(base.ratio) or base.observed == 0:
        return None
    ratio = week.n_positive / week.expected
    change = ratio / base.ratio - 1.0
    # Poisson errors of the week's defaults (expected E × baseline ratio) and of the baseline's.
    se = base.ratio_dispersion * math.sqrt(1.0 / (week.expected * base.ratio) + 1.0 / base.observed)
    return _test(ratio, base.ratio, change, se, relative=relative, min_z=min_z)
