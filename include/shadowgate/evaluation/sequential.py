"""The comparison plan and its weekly looks: a group-sequential test that a challenger's AUC beats the champion's by
more than a margin.

A comparison is planned when its experiment starts and the plan is recorded; every weekly look then follows it:

* **hypothesis**: H0: ΔAUC ≤ δ against H1: ΔAUC ≥ δ + MDE (ΔAUC = challenger − champion on the identical matured
  requests). δ, the minimum meaningful margin, sits above what two retrains of one recipe differ by and above the
  selection bias of measuring on approved purchases only; the MDE is the further gain the plan is powered to find;
* **statistic**: each cohort week contributes DeLong's paired difference Δ̂_w with its standard error SE_w; the
  combined estimate is their inverse-variance mean, its *information* I = Σ 1/SE_w² (the statistic's own scale: it
  counts how precisely ΔAUC is known, whatever the two models' correlation), and z = (Δ̂ − δ)·√I;
* **looks**: one per cohort week with a usable SE, at information fraction t = I / I_max; the efficacy boundary comes
  from Lan–DeMets α-spending (O'Brien–Fleming type) at the fractions actually observed, the futility boundary from
  β-spending of the same type under H1 and is **non-binding** (ignoring it never raises the false-promotion rate:
  the efficacy boundaries are computed as if it did not exist);
* **end**: the plan ends at the first look with t ≥ 1 or at the maximum number of looks (that look spends all α, and
  its futility boundary equals its efficacy boundary), or earlier when a boundary is crossed. The verdict is then
  final — *superior*, *futile* (stopped early for futility) or *not_shown* (the plan ran out) — and later weeks are
  not looks;
* **maximum information** I_max: the information at which the plan, with ``max_looks`` equally spaced looks and both
  boundaries, has the stated power at ΔAUC = δ + MDE (the fixed-horizon ((z_α + z_β)/MDE)² times the inflation the
  looks cost). Several challengers compared with one champion share α equally (Bonferroni: α/m each).

The boundaries are computed on the Brownian-motion scale B(t) = Z(t)·√t, whose increments are independent
N(θ·Δt, Δt) (θ = 0 at the margin, θ = MDE·√I_max under H1), by recursive numerical integration of the sub-density of
B over the continuation region (Armitage, McPherson & Rowe 1969; Jennison & Turnbull 2000, ch. 19). A look is one
step of the recursion (:class:`SequentialTest`), so a whole experiment costs a few milliseconds and the simulations
that prove the error rates (:mod:`shadowgate.evaluation.planning`) run exactly this code, look by look.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from scipy import optimize, special
from scipy import stats as sps

__all__ = [
    "Look",
    "SequentialPlan",
    "SequentialTest",
    "Verdict",
    "design_plan",
    "fixed_horizon_information",
    "run_looks",
    "usable",
]

Verdict = Literal["continue", "superior", "futile", "not_shown", "monitoring"]
"""``continue``: the plan goes on; ``superior``: the efficacy boundary was crossed; ``futile``: the futility boundary
was crossed before the last look; ``not_shown``: the last look came without a crossing; ``monitoring``: a look at a
label the plan does not decide on (the early label), which never reaches a verdict."""
FINAL_VERDICTS: frozenset[str] = frozenset({"superior", "futile", "not_shown"})


@dataclass(frozen=True)
class SequentialPlan:
    """A comparison's plan, fixed when its experiment starts (its fields are what is recorded)."""

    margin: float
    """δ: H0 is ΔAUC ≤ δ (challenger − champion)."""
    mde: float
    """The gain beyond δ the plan is powered to find: H1 is ΔAUC ≥ δ + MDE."""
    alpha: float
    """One-sided level of this comparison (the experiment's α divided by ``comparisons``)."""
    power: float
    max_looks: int
    max_information: float
    """I_max, in 1/AUC² (Σ 1/SE² of the weekly differences) — the information at which the plan ends."""
    futility: bool = True
    comparisons: int = 1
    """Challengers compared with the same champion when the plan was made (α is split between them)."""
    label: str = "final"
    """The label whose looks decide; the other label's looks are monitoring only."""
    spending: str = "obrien_fleming"
    """Recorded for the audit: only O'Brien–Fleming-type spending (efficacy and futility) is implemented."""

    @property
    def drift(self) -> float:
        """θ under H1: the expected z at t = 1 when ΔAUC = δ + MDE."""
        return self.mde * math.sqrt(self.max_information)

    @property
    def fixed_information(self) -> float:
        """What a single test at the end with the same α and power would need."""
        return fixed_horizon_information(mde=self.mde, alpha=self.alpha, power=self.power)

    def describe(self) -> str:
        return (
            f"H0: ΔAUC ≤ {self.margin:g} vs H1: ΔAUC ≥ {self.margin + self.mde:g} (margin {self.margin:g}, MDE "
            f"{self.mde:g}), one-sided α {self.alpha:g}"
            + (f" (α/{self.comparisons} across {self.comparisons} challengers)" if self.comparisons > 1 else "")
            + f", power {self.power:g}, ≤ {self.max_looks} weekly looks on the {self.label} label, "
            f"O'Brien–Fleming spending{' with a non-binding futility bound' if self.futility else ''}, "
            f"maximum information {self.max_information:,.0f} (SE of ΔAUC at the end {self.max_information**-0.5:.4f})"
        )


@dataclass(frozen=True)
class Look:
    """One look of a plan: where the evidence stood and what the boundaries were."""

    look: int
    """1-based; the number of cohort weeks with a usable SE combined so far."""
    information: float
    fraction: float
    """information / max_information (may exceed 1 at the last look)."""
    estimate: float
    """Inverse-variance mean of the weekly ΔAUC so far."""
    se: float
    """1/√information."""
    z: float
    """(estimate − margin)/se."""
    efficacy_bound: float
    futility_bound: float
    """−inf when no futility boundary applies at this look."""
    verdict: Verdict
    final: bool
    """The plan ends at this look (a verdict was reached)."""


def usable(difference: float, se: float) -> bool:
    """A week adds a look only with a finite difference and a positive, finite standard error."""
    return math.isfinite(difference) and math.isfinite(se) and se > 0


def fixed_horizon_information(*, mde: float, alpha: float, power: float) -> float:
    """((z_α + z_β)/MDE)²: the information a one-look test of the same level and power needs."""
    return float(((sps.norm.isf(alpha) + sps.norm.ppf(power)) / mde) ** 2)


# ------------------------------------------------------------------------------------------------ spending


def _obf_spent(t: float, level: float) -> float:
    """O'Brien–Fleming-type Lan–DeMets spending of ``level`` at fraction t (≥ 1: all of it)."""
    if t >= 1.0:
        return level
    return float(2.0 * sps.norm.sf(sps.norm.isf(level / 2.0) / math.sqrt(t)))


# ------------------------------------------------------------------------------------------------ the recursion

_SD_SPAN = 8.0
"""Sub-densities are integrated over mean ± this many standard deviations: the mass beyond is ~1e-15."""
_MAX_SPACING = 0.05
_POINTS_PER_SD = 6.0


def _simpson(lo: float, hi: float, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    intervals = max(2, math.ceil((hi - lo) / spacing))
    intervals += intervals % 2
    x = np.linspace(lo, hi, intervals + 1)
    w = np.ones(intervals + 1)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    return x, w * (x[1] - x[0]) / 3.0


@dataclass
class _Density:
    """Sub-density of B at the latest look, restricted to its continuation region (lo, hi), kept as the Simpson
    masses of the look before plus the step into this one, so that the next step can choose its own grid."""

    points: np.ndarray
    mass: np.ndarray
    shift: float
    sd: float
    lo: float
    hi: float
    mean: float
    """Mean of B at this look ignoring the truncations (for the integration range)."""
    t: float

    @classmethod
    def start(cls) -> _Density:
        return cls(points=np.zeros(1), mass=np.ones(1), shift=0.0, sd=0.0, lo=-math.inf, hi=math.inf, mean=0.0, t=0.0)

    def quadrature(self, next_sd: float) -> tuple[np.ndarray, np.ndarray]:
        """Points and Simpson-weighted sub-density of B at this look, on a grid fine enough for a step of sd
        ``next_sd``."""
        if self.sd == 0.0:  # the start: B(0) = 0
            return self.points, self.mass
        spread = math.sqrt(self.t)
        lo = max(self.lo, self.mean - _SD_SPAN * spread)
        hi = min(self.hi, self.mean + _SD_SPAN * spread)
        if hi <= lo:
            return np.zeros(1), np.zeros(1)
        spacing = min(_MAX_SPACING, next_sd / _POINTS_PER_SD, self.sd / _POINTS_PER_SD)
        x, w = _simpson(lo, hi, spacing)
        z = (x[:, None] - self.points[None, :] - self.shift) / self.sd
        density = (np.exp(-0.5 * z * z) @ self.mass) / (self.sd * math.sqrt(2.0 * math.pi))
        return x, w * density


def _log_tail(x: np.ndarray, mass: np.ndarray, shift: float, sd: float, c: float, *, upper: bool) -> float:
    """log P(continued, B_next ≥ c) (``upper``) or log P(continued, B_next ≤ c), B_next = x + shift + sd·ε."""
    keep = mass > 0
    if not keep.any():
        return -math.inf
    arg = (c - x[keep] - shift) / sd
    log_tail = special.log_ndtr(-arg) if upper else special.log_ndtr(arg)
    terms = np.log(mass[keep]) + log_tail
    top = float(terms.max())
    if top == -math.inf:
        return top
    # By hand: scipy's logsumexp costs ~0.6 ms a call in array-API bookkeeping, and a boundary takes ~30 calls.
    return top + math.log(float(np.exp(terms - top).sum()))


def _solve(x: np.ndarray, mass: np.ndarray, shift: float, sd: float, target: float, *, upper: bool) -> float:
    """The c with P(continued, B_next beyond c) = target (above c when ``upper``, else below)."""
    log_target = math.log(target)
    center = float(np.dot(mass, x) / mass.sum()) + shift if mass.sum() > 0 else shift

    def excess(c: float) -> float:
        return _log_tail(x, mass, shift, sd, c, upper=upper) - log_target

    step = 10.0 * max(sd, 1.0)
    lo, hi = center - step, center + step
    # P(above c) falls with c; P(below c) rises with it.
    while (excess(hi) > 0.0) if upper else (excess(lo) > 0.0):
        lo, hi = (lo, hi + step) if upper else (lo - step, hi)
    while (excess(lo) < 0.0) if upper else (excess(hi) < 0.0):
        lo, hi = (lo - step, hi) if upper else (lo, hi + step)
    return float(optimize.brentq(excess, lo, hi, xtol=1e-10))


class SequentialTest:
    """The looks of one plan, added one at a time as information arrives (the boundaries of earlier looks never
    change: they depend on the fractions observed up to them only)."""

    def __init__(self, plan: SequentialPlan) -> None:
        self.plan = plan
        self._h0 = _Density.start()
        self._h1 = _Density.start()
        self._spent_alpha = 0.0
        self._spent_beta = 0.0
        self.looks = 0
        self.ended = False
        self._last_t = 0.0

    def bounds(self, information: float) -> tuple[float, float, bool]:
        """(efficacy z, futility z, final) of the next look, at cumulative ``information``; advances the recursion.

        Raises:
            ValueError: information not above the previous look's, or the plan has ended.
        """
        if self.ended:
            raise ValueError("the plan has ended: no look after its last")
        t = information / self.plan.max_information
        if not t > self._last_t:
            raise ValueError(f"information must grow from look to look ({t} after {self._last_t})")
        self.looks += 1
        final = t >= 1.0 or self.looks >= self.plan.max_looks
        dt = t - self._last_t
        sd = math.sqrt(dt)
        theta = self.plan.drift
        # Efficacy: α spent at this look, under H0 (B drifts 0), ignoring the futility boundary (non-binding).
        spent = self.plan.alpha if final else _obf_spent(t, self.plan.alpha)
        x0, m0 = self._h0.quadrature(sd)
        increment = spent - self._spent_alpha
        c = _solve(x0, m0, 0.0, sd, increment, upper=True) if increment > 0 else math.inf
        self._spent_alpha = spent
        # Futility: β spent at this look, under H1 (B drifts θ), within both earlier boundaries.
        x1, m1 = self._h1.quadrature(sd)
        d = -math.inf
        if final:
            d = c
        elif self.plan.futility:
            beta = 1.0 - self.plan.power
            spent_beta = _obf_spent(t, beta)
            if spent_beta > self._spent_beta and m1.sum() > 0:
                d = _solve(x1, m1, theta * dt, sd, spent_beta - self._spent_beta, upper=False)
            self._spent_beta = spent_beta
            if d >= c:  # the boundaries met: whatever z is, the plan decides here
                d, final = c, True
        mean0, mean1 = 0.0, theta * t
        self._h0 = _Density(x0, m0, 0.0, sd, -math.inf, c, mean0, t)
        self._h1 = _Density(x1, m1, theta * dt, sd, d, c, mean1, t)
        self._last_t = t
        self.ended = final
        root = math.sqrt(t)
        return c / root, (d / root if math.isfinite(d) else -math.inf), final

    @property
    def ran_out(self) -> bool:
        """The look just taken was the plan's last by its information or its number of looks (not by the futility
        boundary meeting the efficacy one early, which is a futility stop)."""
        return self._last_t >= 1.0 or self.looks >= self.plan.max_looks

    def power(self) -> float:
        """P(crossing efficacy at the look just added, after continuing through the earlier ones) under H1."""
        x, m = self._h1.points, self._h1.mass
        if m.sum() == 0 or not math.isfinite(self._h1.hi):
            return 0.0
        return math.exp(_log_tail(x, m, self._h1.shift, self._h1.sd, self._h1.hi, upper=True))


def _power_of(plan: SequentialPlan) -> float:
    """P(superior within the plan) under H1 with ``max_looks`` equally spaced looks ending at t = 1."""
    test = SequentialTest(plan)
    total = 0.0
    for k in range(1, plan.max_looks + 1):
        test.bounds(plan.max_information * k / plan.max_looks)
        total += test.power()
        if test.ended:
            break
    return total


def design_plan(
    *,
    margin: float,
    mde: float,
    alpha: float,
    power: float,
    max_looks: int,
    futility: bool = True,
    comparisons: int = 1,
    label: str = "final",
) -> SequentialPlan:
    """The plan with the smallest maximum information that has ``power`` at ΔAUC = margin + MDE.

    Args:
        margin: δ, the minimum meaningful AUC gain.
        mde: the gain beyond δ to be found with ``power``.
        alpha: one-sided level of the experiment (split across ``comparisons``).
        power: probability of *superior* at ΔAUC = δ + MDE.
        max_looks: weekly looks at most (the design assumes them equally spaced).
        futility: add the non-binding futility boundary (β-spending, O'Brien–Fleming type).
        comparisons: challengers compared with the same champion.
        label: the label whose looks decide.
    """
    if not 0.0 <= margin < 0.5 or not 0.0 < mde < 0.5:
        raise ValueError(f"need 0 <= margin < 0.5 and 0 < mde < 0.5, got {margin}, {mde}")
    if not 0.0 < alpha < 0.5 or not 0.5 < power < 1.0:
        raise ValueError(f"need 0 < alpha < 0.5 and 0.5 < power < 1, got {alpha}, {power}")
    if max_looks < 1 or comparisons < 1:
        raise ValueError("max_looks and comparisons must be at least 1")
    level = alpha / comparisons
    fixed = fixed_horizon_information(mde=mde, alpha=level, power=power)
    base = SequentialPlan(
        margin=margin,
        mde=mde,
        alpha=level,
        power=power,
        max_looks=max_looks,
        max_information=fixed,
        futility=futility,
        comparisons=comparisons,
        label=label,
    )
    if max_looks == 1:
        return base

    def shortfall(inflation: float) -> float:
        return _power_of(_with_information(base, fixed * inflation)) - power

    inflation = optimize.brentq(shortfall, 1.0, 2.0, xtol=1e-6)
    return _with_information(base, fixed * inflation)


def _with_information(plan: SequentialPlan, information: float) -> SequentialPlan:
    return replace(plan, max_information=float(information))


# ------------------------------------------------------------------------------------------------ a whole plan


def run_looks(plan: SequentialPlan, weeks: Iterable[tuple[float, float]]) -> list[Look]:
    """The looks the plan takes over weekly (ΔAUC, SE) pairs given in cohort-week order: one per week with a usable
    SE, until the verdict. Weeks after the plan's end are not looked at (the verdict stands).

    On a label the plan does not decide on, call with a plan whose ``label`` differs: see :func:`monitoring_look`.
    """
    test = SequentialTest(plan)
    weights = 0.0
    weighted = 0.0
    looks: list[Look] = []
    for difference, se in weeks:
        if not usable(difference, se):
            continue
        weights += 1.0 / se**2
        weighted += difference / se**2
        efficacy, futility_bound, final = test.bounds(weights)
        estimate = weighted / weights
        combined_se = 1.0 / math.sqrt(weights)
        z = (estimate - plan.margin) / combined_se
        verdict: Verdict = "continue"
        if z >= efficacy:
            verdict = "superior"
        elif final and test.ran_out:
            verdict = "not_shown"
        elif z < futility_bound:
            verdict = "futile"
        ended = verdict != "continue"
        looks.append(
            Look(
                look=test.looks,
                information=weights,
                fraction=weights / plan.max_information,
                estimate=estimate,
                se=combined_se,
                z=z,
                efficacy_bound=efficacy,
                futility_bound=futility_bound,
                verdict=verdict,
                final=ended,
            )
        )
        if ended:
            break
    return looks


def monitoring_look(plan: SequentialPlan, weeks: Iterable[tuple[float, float]]) -> Look | None:
    """The combined estimate and z of weeks on a label that does not decide (no boundary, no verdict)."""
    kept = [(d, se) for d, se in weeks if usable(d, se)]
    if not kept:
        return None
    weights = sum(1.0 / se**2 for _, se in kept)
    estimate = sum(d / se**2 for d, se in kept) / weights
    se = 1.0 / math.sqrt(weights)
    return Look(
        look=len(kept),
        information=weights,
        fraction=weights / plan.max_information,
        estimate=estimate,
        se=se,
        z=(estimate - plan.margin) / se,
        efficacy_bound=math.nan,
        futility_bound=math.nan,
        verdict="monitoring",
        final=False,
    )
