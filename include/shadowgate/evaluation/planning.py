"""How long until we can know: the information a comparison gathers per week, the weeks to each look, and the error
rates of the plan measured by simulating experiments whose truth is known.

A lender asks this before starting an experiment. The answer depends on the statistic's own information: the
variance of a week's paired ΔAUC, which falls with the defaults and repaid purchases labelled that week and with the
correlation of the two models' scores (two models that rank alike differ little, and their difference is known
precisely). It is computed for the binormal model (each model's score is normal within each outcome class, equal
variances, the two models' scores correlated within class) from DeLong's structural components, so it is the
variance DeLong's test estimates at that size.

The simulation runs the plan exactly as ``weekly_performance`` does: every week one cohort's (ΔAUC, SE) arrives, the
look is taken with :class:`~shadowgate.evaluation.sequential.SequentialTest`, and the experiment goes on week after
week past its plan (the weekly DAG keeps running; no week after the verdict is another look). A week's ΔAUC is drawn
from its sampling distribution N(Δ, V) and its estimated SE with the spread of a variance estimated from that week's
defaults (V·χ²_ν/ν, ν = defaults − 1); the defaults of a week are Poisson. The pipeline test runs the same plan through
the real weekly pipeline on simulated rows and checks that it takes the same looks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace

import numpy as np
from scipy import stats as sps

from shadowgate.evaluation.sequential import (
    Look,
    SequentialPlan,
    SequentialTest,
    design_plan,
    run_looks,
    usable,
)

__all__ = [
    "ExperimentRates",
    "PlanSummary",
    "WeeklyInformation",
    "plan_experiment",
    "simulate_experiments",
    "weekly_information",
]

_QUADRATURE_NODES = 48


@dataclass(frozen=True)
class WeeklyInformation:
    """What one cohort week contributes to a comparison."""

    defaults: float
    """Expected defaults labelled per week (matured, approved purchases)."""
    repaid: float
    champion_auc: float
    challenger_auc: float
    correlation: float
    """Within-class correlation of the two models' (probit) scores."""
    variance_per_default: float
    """Var(ΔAUC)·defaults from the defaults' structural components."""
    variance_per_repaid: float
    """Var(ΔAUC)·repaid from the repaid purchases' structural components."""

    def variance(self, defaults: float, repaid: float) -> float:
        """Var of a week's ΔAUC with that many defaults and repaid purchases."""
        return self.variance_per_default / defaults + self.variance_per_repaid / repaid

    def for_difference(self, difference: float) -> WeeklyInformation:
        """The same week with a challenger ``difference`` above the champion."""
        challenger = min(self.champion_auc + difference, 0.999)
        per_default, per_repaid = _structural_variances(self.champion_auc, challenger, self.correlation)
        return replace(
            self, challenger_auc=challenger, variance_per_default=per_default, variance_per_repaid=per_repaid
        )

    @property
    def se(self) -> float:
        return math.sqrt(self.variance(self.defaults, self.repaid))

    @property
    def information(self) -> float:
        """1/Var of an average week's ΔAUC."""
        return 1.0 / self.variance(self.defaults, self.repaid)


def _structural_variances(champion_auc: float, challenger_auc: float, correlation: float) -> tuple[float, float]:
    """Var over defaults of V10(challenger) − V10(champion), and over repaid of V01(challenger) − V01(champion).

    Binormal, unit variances: repaid scores ~ N(0, 1), defaults' ~ N(μ, 1) with μ = √2·Φ⁻¹(AUC); for a default
    with score x, V10 = P(repaid score < x) = Φ(x); for a repaid purchase with score y, V01 = P(default score > y)
    = Φ(μ − y).
    The two models' scores are correlated ``correlation`` within class. Expectations by Gauss–Hermite quadrature.
    """
    mu_c = math.sqrt(2.0) * float(sps.norm.ppf(champion_auc))
    mu_t = math.sqrt(2.0) * float(sps.norm.ppf(challenger_auc))
    nodes, weights = np.polynomial.hermite_e.hermegauss(_QUADRATURE_NODES)
    weights = weights / weights.sum()
    z1, z2 = np.meshgrid(nodes, nodes, indexing="ij")
    w = np.outer(weights, weights)
    other = correlation * z1 + math.sqrt(max(1.0 - correlation**2, 0.0)) * z2

    def var(values: np.ndarray) -> float:
        mean = float((w * values).sum())
        return float((w * (values - mean) ** 2).sum())

    defaults = sps.norm.cdf(mu_t + other) - sps.norm.cdf(mu_c + z1)
    repaid = sps.norm.cdf(mu_t - other) - sps.norm.cdf(mu_c - z1)
    return var(defaults), var(repaid)


def weekly_information(
    *,
    decisions_per_week: float,
    default_rate: float,
    champion_auc: float,
    challenger_auc: float,
    correlation: float,
    approval_rate: float = 1.0,
) -> WeeklyInformation:
    """A week's contribution to a comparison of two models on the same approved, labelled purchases.

    Args:
        decisions_per_week: decisions the API makes per week.
        default_rate: share of the approved purchases that default (the label's rate).
        champion_auc: the champion's AUC on approved purchases.
        challenger_auc: the challenger's (champion + the difference of interest).
        correlation: within-class correlation of the two models' scores.
        approval_rate: share of decisions approved (only those get a label).
    """
    if decisions_per_week <= 0 or not 0 < default_rate < 1 or not 0 < approval_rate <= 1:
        raise ValueError("need decisions_per_week > 0, 0 < default_rate < 1 and 0 < approval_rate <= 1")
    if not 0.5 <= champion_auc < 1 or not 0.5 <= challenger_auc < 1 or not -1 < correlation < 1:
        raise ValueError("AUCs must lie in [0.5, 1) and the correlation in (-1, 1)")
    labelled = decisions_per_week * approval_rate
    per_default, per_repaid = _structural_variances(champion_auc, challenger_auc, correlation)
    return WeeklyInformation(
        defaults=labelled * default_rate,
        repaid=labelled * (1.0 - default_rate),
        champion_auc=champion_auc,
        challenger_auc=challenger_auc,
        correlation=correlation,
        variance_per_default=per_default,
        variance_per_repaid=per_repaid,
    )


# ------------------------------------------------------------------------------------------------ simulation


@dataclass(frozen=True)
class ScenarioResult:
    """What a set of simulated experiments with one true ΔAUC concluded."""

    true_difference: float
    experiments: int
    superior: int
    futile: int
    not_shown: int
    undecided: int
    """Experiments still running after the simulated weeks (a plan longer than the simulation)."""
    mean_weeks_to_verdict: float
    """Cohort weeks of data until the verdict, over the experiments that reached one."""

    def rate(self, count: int) -> float:
        return count / self.experiments

    def mc_error(self, count: int) -> float:
        """Monte Carlo standard error of ``rate(count)``."""
        p = self.rate(count)
        return math.sqrt(max(p * (1.0 - p), 1.0 / self.experiments) / self.experiments)


def _weeks(
    rng: np.random.Generator, info: WeeklyInformation, true_difference: float, weeks: int
) -> Iterator[tuple[float, float]]:
    for _ in range(weeks):
        defaults = int(rng.poisson(info.defaults))
        repaid = int(rng.poisson(info.repaid))
        if defaults < 2 or repaid < 2:
            yield math.nan, math.nan  # DeLong's variance needs two of each: the week adds no look
            continue
        variance = info.variance(defaults, repaid)
        difference = float(rng.normal(true_difference, math.sqrt(variance)))
        dof = defaults - 1
        se = math.sqrt(variance * float(rng.chisquare(dof)) / dof)
        yield difference, se


def simulate_scenario(
    plan: SequentialPlan,
    info: WeeklyInformation,
    *,
    true_difference: float,
    experiments: int,
    weeks: int,
    seed: int,
) -> ScenarioResult:
    """Run ``experiments`` experiments of ``weeks`` weekly looks each, as the weekly DAG does, on a world whose
    ΔAUC is ``true_difference``."""
    rng = np.random.default_rng(seed)
    counts = {"superior": 0, "futile": 0, "not_shown": 0, "continue": 0}
    weeks_to_verdict: list[int] = []
    for _ in range(experiments):
        series = list(_weeks(rng, info, true_difference, weeks))
        looks = run_looks(plan, series)
        last = looks[-1] if looks else None
        verdict = last.verdict if last is not None else "continue"
        counts[verdict] += 1
        if last is not None and last.final:
            weeks_to_verdict.append(_week_of_look(series, last))
    return ScenarioResult(
        true_difference=true_difference,
        experiments=experiments,
        superior=counts["superior"],
        futile=counts["futile"],
        not_shown=counts["not_shown"],
        undecided=counts["continue"],
        mean_weeks_to_verdict=float(np.mean(weeks_to_verdict)) if weeks_to_verdict else math.nan,
    )


def _week_of_look(series: list[tuple[float, float]], look: Look) -> int:
    """The cohort week (1-based) on which look number ``look.look`` was taken (weeks without a usable SE skipped)."""
    looks = 0
    for week, (d, se) in enumerate(series, start=1):
        if usable(d, se):
            looks += 1
            if looks == look.look:
                return week
    raise ValueError("look beyond the series")


@dataclass(frozen=True)
class ExperimentRates:
    """The simulated operating characteristics of one plan at one size (the ``--json`` of plan-experiment)."""

    experiments: int
    weeks_simulated: int
    aa_superior_rate: float
    aa_superior_mc_error: float
    twin_superior_rate: float
    """True ΔAUC = δ/2: a near twin, whose gain is not worth a change."""
    twin_superior_mc_error: float
    margin_superior_rate: float
    """True ΔAUC = δ: the edge of H0, where the rate should be α."""
    margin_superior_mc_error: float
    h1_power: float
    """True ΔAUC = δ + MDE: superior within the plan."""
    h1_power_mc_error: float
    futility_rate: float
    """True ΔAUC = 0: stopped early for futility (before the plan's last look)."""
    futility_mc_error: float
    h1_mean_weeks: float
    aa_mean_weeks: float
    fixed_horizon_weeks: int
    """Weeks a single test at the end with the same α and power needs."""
    h1_weeks_vs_fixed: float
    """h1_mean_weeks / fixed_horizon_weeks (the reason to look weekly: below 1)."""
    scenarios: list[dict[str, float]] = field(default_factory=list)


def simulate_experiments(
    plan: SequentialPlan, info: WeeklyInformation, *, experiments: int, weeks: int | None = None, seed: int = 0
) -> ExperimentRates:
    """The plan's error rates and duration on simulated worlds: A/A, a near twin (δ/2), the margin (δ), H1 (δ + MDE).

    Args:
        plan: the comparison plan.
        info: what a week contributes; its champion AUC is used, the challenger's is set per scenario.
        experiments: simulated experiments per scenario.
        weeks: weeks each experiment runs (default: twice the plan's looks, so the peeking goes on past its end).
        seed: scenario k uses ``seed + k``.
    """
    horizon = weeks if weeks is not None else 2 * plan.max_looks
    truths = {"aa": 0.0, "twin": plan.margin / 2.0, "margin": plan.margin, "h1": plan.margin + plan.mde}
    results: dict[str, ScenarioResult] = {}
    for k, (name, truth) in enumerate(truths.items()):
        scaled = info.for_difference(truth)
        results[name] = simulate_scenario(
            plan, scaled, true_difference=truth, experiments=experiments, weeks=horizon, seed=seed + k
        )
    fixed_weeks = math.ceil(plan.fixed_information / info.information)
    aa, twin, margin, h1 = results["aa"], results["twin"], results["margin"], results["h1"]
    return ExperimentRates(
        experiments=experiments,
        weeks_simulated=horizon,
        aa_superior_rate=aa.rate(aa.superior),
        aa_superior_mc_error=aa.mc_error(aa.superior),
        twin_superior_rate=twin.rate(twin.superior),
        twin_superior_mc_error=twin.mc_error(twin.superior),
        margin_superior_rate=margin.rate(margin.superior),
        margin_superior_mc_error=margin.mc_error(margin.superior),
        h1_power=h1.rate(h1.superior),
        h1_power_mc_error=h1.mc_error(h1.superior),
        futility_rate=aa.rate(aa.futile),
        futility_mc_error=aa.mc_error(aa.futile),
        h1_mean_weeks=h1.mean_weeks_to_verdict,
        aa_mean_weeks=aa.mean_weeks_to_verdict,
        fixed_horizon_weeks=fixed_weeks,
        h1_weeks_vs_fixed=h1.mean_weeks_to_verdict / fixed_weeks,
        scenarios=[{"name": n, **asdict(r)} for n, r in results.items()],  # type: ignore[dict-item]
    )


# ------------------------------------------------------------------------------------------------ the planner


@dataclass(frozen=True)
class PlanSummary:
    """What ``shadowgate plan-experiment`` prints."""

    plan: SequentialPlan
    info: WeeklyInformation
    label_delay_days: int
    looks: list[dict[str, float]]
    """Expected looks at the average week's information: week of data, calendar week (with the label delay),
    information fraction, efficacy and futility boundaries on z and on the ΔAUC scale."""
    weeks_to_end: int
    """Weeks of data until the plan's last look (information reached or the maximum number of looks)."""
    fixed_horizon_weeks: int
    reaches_max_information: bool
    """False: the maximum number of looks comes first, the plan ends short of its information and its power is lower
    than planned."""


def plan_experiment(
    *,
    decisions_per_week: float,
    default_rate: float,
    champion_auc: float,
    margin: float,
    mde: float,
    alpha: float,
    power: float,
    max_looks: int,
    correlation: float,
    approval_rate: float = 1.0,
    comparisons: int = 1,
    futility: bool = True,
    label_delay_days: int = 90,
) -> PlanSummary:
    """The plan and its expected looks for an experiment of the given size (see the CLI's ``plan-experiment``)."""
    plan = design_plan(
        margin=margin,
        mde=mde,
        alpha=alpha,
        power=power,
        max_looks=max_looks,
        futility=futility,
        comparisons=comparisons,
    )
    info = weekly_information(
        decisions_per_week=decisions_per_week,
        default_rate=default_rate,
        champion_auc=champion_auc,
        challenger_auc=min(champion_auc + margin + mde, 0.999),
        correlation=correlation,
        approval_rate=approval_rate,
    )
    test = SequentialTest(plan)
    looks = []
    week = 0
    while not test.ended:
        week += 1
        information = week * info.information
        efficacy, futility_bound, _ = test.bounds(information)
        se = 1.0 / math.sqrt(information)
        looks.append(
            {
                "look": test.looks,
                "data_weeks": week,
                "calendar_weeks": week + math.ceil(label_delay_days / 7),
                "information_fraction": information / plan.max_information,
                "efficacy_z": efficacy,
                "futility_z": futility_bound,
                # The combined ΔAUC the boundaries correspond to at this information.
                "superior_if_delta_at_least": plan.margin + efficacy * se,
                "futile_if_delta_below": plan.margin + futility_bound * se if math.isfinite(futility_bound) else -1.0,
            }
        )
    return PlanSummary(
        plan=plan,
        info=info,
        label_delay_days=label_delay_days,
        looks=looks,
        weeks_to_end=week,
        fixed_horizon_weeks=math.ceil(plan.fixed_information / info.information),
        reaches_max_information=week * info.information >= plan.max_information,
    )
