"""A canary's two arms, compared without the biases of counting decisions or approved purchases only.

A canary assigns *customers* (sticky hashing), so what is randomised is the customer, and two things follow:

* **the sample-ratio check counts customers**, not decisions: a repeat customer's purchases all fall in one arm, so
  counting them inflates the chi-square (ten purchases of one customer are one draw, not ten). And the split it is
  checked against is the one in force: every share change starts a new *allocation period* (the experiment's
  config version), and each period is checked on its own against its own share; the week's flag is the smallest
  period p-value, Bonferroni-adjusted for the number of periods (:func:`canary_srm`);
* **the arms are compared per applicant**: an arm that approves fewer customers has fewer defaults among those it
  approved without being any better — its defaults went to the applicants it turned away. So the arms' figures are
  per applicant: approval rate, defaults per applicant and realised loss per applicant (the amount of the defaulted
  purchases / applicants), and the default rate among the approved only as a description. Each figure is a ratio of
  per-customer sums, its standard error the cluster-robust (linearised) one, so repeat customers count once
  (:func:`arm_comparison`). Periods are compared separately and combined with fixed weights — each period's share of
  the week's applicants — so a share raised mid-week, which changes who is in which arm from then on, does not mix
  the periods' populations into the arms unevenly.

Labelled outcomes exist only for approved decisions, hence the decision counts come from every decision of the week
and the defaults and losses from its matured labels (``queries/arm_counts.sql``): an applicant who was not approved
contributes no default and no loss.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from shadowgate.evaluation.stats import srm_test

ARMS = ("control", "treatment")


@dataclass(frozen=True)
class PeriodSRM:
    """The sample-ratio check of one allocation period."""

    experiment_version: str
    treatment_share: float
    customers_control: int
    customers_treatment: int
    p_value: float


@dataclass(frozen=True)
class CanarySRM:
    """The week's sample-ratio check over its allocation periods."""

    periods: tuple[PeriodSRM, ...]
    p_value: float
    """The smallest period p-value times the number of periods (Bonferroni), at most 1."""
    flagged: bool


def canary_srm(rows: Sequence[Mapping[str, object]], *, threshold: float = 0.001) -> CanarySRM | None:
    """Sample-ratio check of a canary's customers per allocation period.

    Args:
        rows: one per (period, arm, customer) with ``experiment_version``, ``treatment_share`` and ``arm``
            (``queries/arm_counts``).
        threshold: flag below this adjusted p-value.

    Returns:
        None when no period has both a share strictly between 0 and 1 and a customer.
    """
    counts: dict[tuple[str, float], dict[str, int]] = {}
    for r in rows:
        key = (str(r["experiment_version"]), float(r["treatment_share"]))  # type: ignore[arg-type]
        arms = counts.setdefault(key, dict.fromkeys(ARMS, 0))
        arms[str(r["arm"])] = arms.get(str(r["arm"]), 0) + 1
    periods = []
    for (version, share), arms in sorted(counts.items()):
        observed = [arms["control"], arms["treatment"]]
        if not 0 < share < 1 or sum(observed) == 0:
            continue
        p = srm_test(observed, [1 - share, share], threshold=threshold).p_value
        periods.append(PeriodSRM(version, share, observed[0], observed[1], p))
    if not periods:
        return None
    adjusted = min(1.0, min(p.p_value for p in periods) * len(periods))
    return CanarySRM(periods=tuple(periods), p_value=adjusted, flagged=adjusted < threshold)


@dataclass(frozen=True)
class ArmFigures:
    """One arm's week: counts and per-applicant figures."""

    customers: int
    applicants: int
    approved: int
    labelled: int
    defaults: int
    loss: float
    approval_rate: float
    defaults_per_applicant: float
    loss_per_applicant: float
    default_rate_approved: float
    """Defaults among the labelled approved purchases: a description, never the comparison."""


@dataclass(frozen=True)
class Difference:
    """treatment − control of one per-applicant figure, periods combined with fixed weights."""

    estimate: float
    se: float
    """Cluster-robust (customers) standard error."""
    p_value: float
    """Two-sided z-test of no difference."""


@dataclass(frozen=True)
class ArmComparison:
    """A canary's arms per applicant."""

    control: ArmFigures
    treatment: ArmFigures
    approval_rate: Difference
    defaults_per_applicant: Difference
    loss_per_applicant: Difference
    periods: int

    @property
    def treatment_better(self) -> bool:
        """Treatment loses significantly less per applicant (two-sided 5 %) without approving significantly
        fewer applicants: a stricter arm that only turns customers away does not qualify."""
        lower_loss = self.loss_per_applicant.estimate < 0 and self.loss_per_applicant.p_value < 0.05
        fewer_approved = self.approval_rate.estimate < 0 and self.approval_rate.p_value < 0.05
        return lower_loss and not fewer_approved


_FIGURES = ("approved", "defaults", "loss")


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> tuple[float, float]:
    """Σ numerator / Σ denominator over clusters and its cluster-robust (linearised) variance."""
    total = float(denominator.sum())
    ratio = float(numerator.sum()) / total
    k = numerator.size
    if k < 2:
        return ratio, math.nan
    residual = numerator - ratio * denominator
    return ratio, float(residual @ residual) * k / (k - 1) / total**2


def _difference(estimate: float, variance: float) -> Difference:
    se = math.sqrt(variance) if variance > 0 else math.nan
    p = float(2 * sps.norm.sf(abs(estimate) / se)) if math.isfinite(se) else math.nan
    return Difference(estimate=estimate, se=se, p_value=p)


def _arm(columns: Mapping[str, np.ndarray], rows: np.ndarray) -> ArmFigures:
    s = {name: float(columns[name][rows].sum()) for name in ("applicants", "approved", "labelled", "defaults", "loss")}
    applicants = s["applicants"]
    return ArmFigures(
        customers=int(rows.sum()),
        applicants=int(applicants),
        approved=int(s["approved"]),
        labelled=int(s["labelled"]),
        defaults=int(s["defaults"]),
        loss=s["loss"],
        approval_rate=s["approved"] / applicants if applicants else math.nan,
        defaults_per_applicant=s["defaults"] / applicants if applicants else math.nan,
        loss_per_applicant=s["loss"] / applicants if applicants else math.nan,
        default_rate_approved=s["defaults"] / s["labelled"] if s["labelled"] else math.nan,
    )


def arm_comparison(rows: Sequence[Mapping[str, object]]) -> ArmComparison | None:
    """The arms per applicant, periods combined with weights fixed by their share of the week's applicants.

    Args:
        rows: one per (period, arm, customer) with ``experiment_version``, ``arm``, ``applicants``, ``approved``,
            ``defaults`` and ``loss`` (``queries/arm_counts``; ``labelled`` too, for the description).

    Returns:
        None when either arm has no applicant.
    """
    if not rows:
        return None
    columns = {
        name: np.array([float(r[name] or 0) for r in rows])  # type: ignore[arg-type]
        for name in ("applicants", "approved", "labelled", "defaults", "loss")
    }
    arm = np.array([str(r["arm"]) for r in rows])
    period = np.array([str(r["experiment_version"]) for r in rows])
    control, treatment = _arm(columns, arm == "control"), _arm(columns, arm == "treatment")
    if control.applicants == 0 or treatment.applicants == 0:
        return None
    estimates = dict.fromkeys(_FIGURES, 0.0)
    variances = dict.fromkeys(_FIGURES, 0.0)
    total = control.applicants + treatment.applicants
    used = 0
    for p in sorted(set(period)):
        in_period = period == p
        arms = [in_period & (arm == name) for name in ARMS]
        if not all(columns["applicants"][rows_].sum() > 0 for rows_ in arms):
            continue  # a period with one arm only (share 0 or 1) says nothing about the difference
        used += 1
        weight = float(columns["applicants"][in_period].sum()) / total
        for figure in _FIGURES:
            (r_c, v_c), (r_t, v_t) = (_ratio(columns[figure][r], columns["applicants"][r]) for r in arms)
            estimates[figure] += weight * (r_t - r_c)
            variances[figure] += weight**2 * (v_c + v_t)
    if used == 0:
        return None
    # The weights of the periods used add up to less than 1 when a period had one arm only: rescale.
    covered = sum(
        float(columns["applicants"][period == p].sum())
        for p in set(period)
        if all(columns["applicants"][(period == p) & (arm == name)].sum() > 0 for name in ARMS)
    )
    scale = total / covered
    return ArmComparison(
        control=control,
        treatment=treatment,
        approval_rate=_difference(estimates["approved"] * scale, variances["approved"] * scale**2),
        defaults_per_applicant=_difference(estimates["defaults"] * scale, variances["defaults"] * scale**2),
        loss_per_applicant=_difference(estimates["loss"] * scale, variances["loss"] * scale**2),
        periods=used,
    )
