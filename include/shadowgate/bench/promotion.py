"""The promotion gate's error rates on simulated worlds whose truth is known (``make promotion-proof``; the suite
runs a smaller size in ``tests/model/test_promotion_worlds.py``).

Each experiment runs the procedure as ``weekly_performance`` → ``promote_challenger`` run it, week after week:

* a cohort week of labelled decisions is drawn (the binormal model: within each class the two models' latent scores
  are bivariate normal with correlation ρ, the class means set by each model's true AUC; the scores are the
  calibrated posterior probabilities of that model, so Brier and the policy cut-offs mean what they mean in
  production);
* the week's paired comparison is the pipeline's own :func:`~shadowgate.pipelines.performance.compare` (DeLong
  clustered by customer, the Brier bootstrap, McNemar), and each model's approvals and expected loss at the shipped
  policy's cut-off are summed as ``queries/applicant_policy`` sums them;
* the plan's looks are :func:`~shadowgate.evaluation.sequential.run_looks` over the weekly pairs, the plan designed
  from the shipped evaluation settings (as ``comparison_plan`` records it);
* the gate's evidence is pooled as :func:`~shadowgate.pipelines.promotion.comparison_evidence` pools it (the same
  helpers), and :func:`~shadowgate.promotion.decide` with the shipped ``gates.yaml`` decides, every week: promote,
  retire (futile / not shown), or wait for the next week.

What it skips is the warehouse round trip (writing and reading ``model_metrics``), which
``tests/integration/test_promote_challengers.py`` and ``tests/dags/test_promote_challenger.py`` run for real and
``tests/integration/test_plan_through_pipeline.py`` shows takes the same looks.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from shadowgate.config import EvaluationSettings
from shadowgate.decisioning.policies import load_policy
from shadowgate.evaluation.canary_guard import SCORE_BINS, ArmWindow, judge, load_canary_config
from shadowgate.evaluation.canary_guard import Action as GuardAction
from shadowgate.evaluation.canary_guard import decide as guard_decide
from shadowgate.evaluation.sequential import SequentialPlan, design_plan, run_looks
from shadowgate.pipelines.performance import (
    Cohort,
    EvaluationPlan,
    ModelKey,
    cohort_week,
    compare,
)
from shadowgate.pipelines.promotion import PolicyFigures, business_changes, pool_brier
from shadowgate.promotion import Action, Evidence, GateConfig, decide, load_gates

CHAMPION = ModelKey("champion", "1")
CHALLENGER = ModelKey("challenger", "2")
POLICY = "conservative"


@dataclass(frozen=True)
class World:
    """One scenario: the true AUCs and how alike the two models rank."""

    name: str
    champion_auc: float
    challenger_auc: float
    correlation: float
    rows_per_week: float = 4_050.0
    """Labelled (approved, matured) decisions a week: 4,500 decisions, 90 % approved."""
    default_rate: float = 0.05
    customers_share: float = 0.8
    """Distinct customers per row: repeat customers within a week (the tests cluster by customer)."""

    @property
    def true_difference(self) -> float:
        return self.challenger_auc - self.champion_auc


@dataclass(frozen=True)
class WorldRates:
    world: str
    true_difference: float
    experiments: int
    promoted: int
    retired: int
    undecided: int
    promoted_rate: float
    promoted_mc_error: float
    """The binomial standard error of the rate."""
    promoted_low_95: float
    promoted_high_95: float
    """Clopper–Pearson interval of the rate."""
    mean_weeks_to_promotion: float | None
    mean_weeks_to_decision: float
    gates_failed_when_superior: dict[str, int]
    """Gates other than the comparison that held back a challenger the plan called superior (how often)."""


def _mean_shift(auc: float) -> float:
    return math.sqrt(2.0) * float(sps.norm.ppf(auc))


def _week(
    rng: np.random.Generator, world: World
) -> tuple[np.ndarray, dict[ModelKey, np.ndarray], np.ndarray, np.ndarray]:
    n = int(rng.poisson(world.rows_per_week))
    y = (rng.random(n) < world.default_rate).astype(np.int8)
    rho = world.correlation
    first = rng.normal(size=n)
    second = rho * first + math.sqrt(1 - rho**2) * rng.normal(size=n)
    prior = math.log(world.default_rate / (1 - world.default_rate))
    scores = {}
    for key, latent, auc in ((CHAMPION, first, world.champion_auc), (CHALLENGER, second, world.challenger_auc)):
        mu = _mean_shift(auc)
        x = latent + mu * y
        scores[key] = 1.0 / (1.0 + np.exp(-(prior + mu * x - mu**2 / 2)))  # the calibrated posterior
    customers = rng.integers(0, max(1, int(n * world.customers_share)), size=n)
    amounts = rng.lognormal(5.3, 0.8, size=n)
    return y, scores, customers, amounts


def _cohort(start: dt.date, y: np.ndarray, scores: dict[ModelKey, np.ndarray], customers: np.ndarray) -> Cohort:
    week = cohort_week(start, "final", as_of=dt.datetime.combine(start, dt.time(), dt.UTC) + dt.timedelta(days=97))
    return Cohort(week=week, y=y, scores=scores, frame=pd.DataFrame(), rows_total=int(y.size), customers=customers)


def run_experiment(
    rng: np.random.Generator,
    world: World,
    *,
    plan: SequentialPlan,
    evaluation: EvaluationPlan,
    gates: GateConfig,
    max_weeks: int,
) -> tuple[Action, int, tuple[str, ...]]:
    """One experiment, week by week until the gate promotes or retires (or ``max_weeks``): (action, weeks, the gates
    other than the comparison that failed at a superior verdict)."""
    thresholds = load_policy(POLICY).thresholds
    series: list[tuple[float, float]] = []
    brier: list[dict[str, float]] = []
    totals = PolicyFigures(0, 0, 0, 0.0, 0.0, 0.0, 0.0)
    start = dt.date(2026, 1, 5)
    held_back: tuple[str, ...] = ()
    for k in range(max_weeks):
        week_start = start + dt.timedelta(weeks=k)
        y, scores, customers, amounts = _week(rng, world)
        cohort = _cohort(week_start, y, scores, customers)
        c = compare(cohort, CHAMPION, CHALLENGER, experiment_id="proof", thresholds=thresholds, plan=evaluation)
        series.append((c.auc_difference, c.auc_difference_se))
        looks = run_looks(plan, series)  # the plan never ended before this week: the gate acts on its last look
        brier.append(
            {
                "brier_difference": c.brier_difference,
                "brier_difference_ci_low": c.brier_difference_ci[0],
                "brier_difference_ci_high": c.brier_difference_ci[1],
            }
        )
        # Every applicant (here every row: none is selected away), summed as queries/applicant_policy sums them.
        t, ch = scores[CHALLENGER], scores[CHAMPION]
        by_t, by_c = t < thresholds.medium, ch < thresholds.medium
        totals += PolicyFigures(
            int(y.size), int(by_t.sum()), int(by_c.sum()),
            float(np.sum((t * amounts)[by_t])), float(np.sum((t * amounts)[by_c])),
            float(np.sum((ch * amounts)[by_t])), float(np.sum((ch * amounts)[by_c])),
        )  # fmt: skip
        if not looks:
            continue
        last = looks[-1]
        verdict = last.verdict
        brier_estimate = pool_brier(brier, estimate=True)
        approval, loss, _ = business_changes(
            {POLICY: totals}, priced_by_challenger=brier_estimate is None or brier_estimate <= 0
        )
        evidence = Evidence(
            challenger=CHALLENGER.name,
            champion=CHAMPION.name,
            plan_verdict=verdict,
            look=last.look,
            brier_difference_high=pool_brier(brier),
            approval_rate_change=approval,
            expected_loss_change=loss,
            latency_p99_ms=1.0,  # the simulated models have no latency: the latency gate is tested on logs
        )
        decision = decide(evidence, gates)
        if verdict == "superior" and decision.action is not Action.PROMOTE:
            held_back = tuple(g.gate for g in decision.gates if not g.passed and g.gate != "comparison")
        if decision.action in (Action.PROMOTE, Action.RETIRE):
            return decision.action, k + 1, held_back
        if last.final:  # superior, but another gate holds it: the gate waits; the proof counts it as not promoted
            return Action.WAIT, k + 1, held_back
    return Action.WAIT, max_weeks, held_back


def simulate_world(
    world: World,
    *,
    experiments: int,
    seed: int,
    max_weeks: int = 52,
    settings: EvaluationSettings | None = None,
    gates: GateConfig | None = None,
) -> WorldRates:
    settings = settings or EvaluationSettings()
    gates = gates or load_gates()
    plan = design_plan(
        margin=settings.auc_margin,
        mde=settings.minimum_detectable_auc_difference,
        alpha=settings.alpha,
        power=settings.power,
        max_looks=settings.max_looks,
        futility=settings.futility,
    )
    evaluation = EvaluationPlan(settings=settings, early_maturity_days=17, maturity_days=90)
    rng = np.random.default_rng(seed)
    promoted = retired = undecided = 0
    to_promotion: list[int] = []
    to_decision: list[int] = []
    held: dict[str, int] = {}
    for _ in range(experiments):
        action, weeks, held_back = run_experiment(
            rng, world, plan=plan, evaluation=evaluation, gates=gates, max_weeks=max_weeks
        )
        to_decision.append(weeks)
        for g in held_back:
            held[g] = held.get(g, 0) + 1
        if action is Action.PROMOTE:
            promoted += 1
            to_promotion.append(weeks)
        elif action is Action.RETIRE:
            retired += 1
        else:
            undecided += 1
    rate = promoted / experiments
    low, high = clopper_pearson(promoted, experiments)
    return WorldRates(
        world=world.name,
        true_difference=round(world.true_difference, 6),
        experiments=experiments,
        promoted=promoted,
        retired=retired,
        undecided=undecided,
        promoted_rate=rate,
        promoted_mc_error=math.sqrt(rate * (1 - rate) / experiments),
        promoted_low_95=low,
        promoted_high_95=high,
        mean_weeks_to_promotion=float(np.mean(to_promotion)) if to_promotion else None,
        mean_weeks_to_decision=float(np.mean(to_decision)),
        gates_failed_when_superior=held,
    )


WORLDS = (
    World("better (dAUC = margin + MDE)", champion_auc=0.78, challenger_auc=0.80, correlation=0.85),
    World("twin (same recipe retrained)", champion_auc=0.78, challenger_auc=0.78, correlation=0.95),
    World("worse (dAUC = -0.02)", champion_auc=0.78, challenger_auc=0.76, correlation=0.85),
    World("at the margin (dAUC = 0.01)", champion_auc=0.78, challenger_auc=0.79, correlation=0.85),
)


def promotion_proof(
    *, experiments: int, seed: int, canary_runs: int = 2_000, worlds: tuple[World, ...] = WORLDS
) -> dict[str, Any]:
    """Every world's rates and the canary guard's (JSON-able), with the seconds it took."""
    started = time.perf_counter()
    rates = [asdict(simulate_world(w, experiments=experiments, seed=seed + i)) for i, w in enumerate(worlds)]
    canary = [asdict(r) for r in canary_proof(runs=canary_runs, seed=seed)]
    return {
        "experiments_per_world": experiments,
        "seed": seed,
        "worlds": rates,
        "canary": canary,
        "seconds": round(time.perf_counter() - started, 1),
    }


# ------------------------------------------------------------------------------------------------ the canary guard


@dataclass(frozen=True)
class CanaryRates:
    scenario: str
    runs: int
    stopped: int
    stopped_rate: float
    mc_error: float
    low_95: float
    high_95: float
    """Clopper–Pearson interval of the rate (0 of N stops: at most 3.7/N or so)."""


def _arm(rng: np.random.Generator, n: int, *, fallback: float, approve: float, scores: tuple[float, float] | None,
         latency_ms: float) -> ArmWindow:  # fmt: skip
    counts = [0] * SCORE_BINS
    if scores is None:
        counts[-1] = n  # stuck at 0.99
    else:
        drawn = rng.beta(scores[0], scores[1], size=n)
        binned = np.minimum((drawn * SCORE_BINS).astype(int), SCORE_BINS - 1)
        counts = [int(c) for c in np.bincount(binned, minlength=SCORE_BINS)]
    return ArmWindow(
        decisions=n,
        customers=n,
        approved=int(rng.binomial(n, approve)),
        fallbacks=int(rng.binomial(n, fallback)),
        p99_latency_ms=latency_ms,
        score_counts=tuple(int(c) for c in counts),
    )


def canary_proof(*, runs: int, seed: int, decisions_per_hour: int = 4_000, share: float = 0.05) -> list[CanaryRates]:
    """The guard's stop rate per run (one hour of decisions, the shipped thresholds) on a healthy canary and on two
    broken ones, the break starting at a uniform instant of the hour before the run (so the first run after it sees
    on average half an hour of broken decisions) and, for the run after, a whole broken hour."""
    config = load_canary_config()
    rng = np.random.default_rng(seed)
    healthy_t = {"fallback": 0.001, "approve": 0.60, "scores": (2.1, 12.0), "latency_ms": 1.5}
    healthy_c = {"fallback": 0.001, "approve": 0.60, "scores": (2.0, 12.0), "latency_ms": 1.0}
    broken = {
        "errors": {**healthy_t, "fallback": 1.0},
        "approval collapse": {**healthy_t, "approve": 0.0, "scores": None},
    }
    out = []
    scenarios: list[tuple[str, dict[str, Any] | None, str]] = [("healthy", None, "first")]
    scenarios += [(f"{name}: first run after the break", b, "first") for name, b in broken.items()]
    scenarios += [(f"{name}: the run one interval later", b, "second") for name, b in broken.items()]
    for name, bad, which in scenarios:
        stopped = 0
        for _ in range(runs):
            n = int(rng.poisson(decisions_per_hour))
            n_t = int(rng.binomial(n, share))
            control = _arm(rng, n - n_t, **healthy_c)  # type: ignore[arg-type]
            if bad is None:
                treatment = _arm(rng, n_t, **healthy_t)  # type: ignore[arg-type]
            else:
                broken_part = rng.uniform(0, 1) if which == "first" else 1.0
                n_bad = round(n_t * broken_part)
                good, faulty = _arm(rng, n_t - n_bad, **healthy_t), _arm(rng, n_bad, **bad)  # type: ignore[arg-type]
                treatment = ArmWindow(
                    decisions=good.decisions + faulty.decisions,
                    customers=good.customers + faulty.customers,
                    approved=good.approved + faulty.approved,
                    fallbacks=good.fallbacks + faulty.fallbacks,
                    p99_latency_ms=1.5,
                    score_counts=tuple(a + b for a, b in zip(good.score_counts, faulty.score_counts, strict=True)),
                )
            signals = judge(control, treatment, share=share, guard=config.guard)
            verdict = guard_decide(signals, (), share=share, stage_hours=1.0, rollout=None)
            stopped += verdict.action is GuardAction.STOP
        rate = stopped / runs
        low, high = clopper_pearson(stopped, runs)
        out.append(CanaryRates(name, runs, stopped, rate, math.sqrt(rate * (1 - rate) / runs), low, high))
    return out


def clopper_pearson(count: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The exact binomial interval of ``count`` of ``n``."""
    tail = (1 - level) / 2
    low = 0.0 if count == 0 else float(sps.beta.ppf(tail, count, n - count + 1))
    high = 1.0 if count == n else float(sps.beta.ppf(1 - tail, count + 1, n - count))
    return low, high


def render(result: dict[str, Any]) -> str:
    """The proof's figures as the README's tables."""
    lines = [
        f"{result['experiments_per_world']:,} experiments per world, seed {result['seed']}, {result['seconds']} s",
        "",
        "| world (true ΔAUC) | promoted | ± MC error | 95 % interval | retired | weeks to promotion |",
        "|---|---|---|---|---|---|",
    ]
    for w in result["worlds"]:
        weeks = "-" if w["mean_weeks_to_promotion"] is None else f"{w['mean_weeks_to_promotion']:.2f}"
        lines.append(
            f"| {w['world']} | {100 * w['promoted_rate']:.2f} % ({w['promoted']} of {w['experiments']:,}) | "
            f"{100 * w['promoted_mc_error']:.2f} % | "
            f"{100 * w['promoted_low_95']:.2f}–{100 * w['promoted_high_95']:.2f} % | {w['retired']:,} | {weeks} |"
        )
    lines += ["", "| canary scenario | stopped | 95 % interval |", "|---|---|---|"]
    for c in result["canary"]:
        lines.append(
            f"| {c['scenario']} | {100 * c['stopped_rate']:.2f} % ({c['stopped']:,} of {c['runs']:,}) | "
            f"{100 * c['low_95']:.3f}–{100 * c['high_95']:.3f} % |"
        )
    return "\n".join(lines)
