"""The planner's information model against DeLong's test on simulated rows, and the proof by simulation of the
plan's error rates (the fast mode of ``make plan-proof``: 1,000 experiments per scenario, every one peeking weekly
for twice the plan's looks, as the DAG keeps running)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps
from typer.testing import CliRunner

from shadowgate.cli import app
from shadowgate.evaluation.planning import plan_experiment, simulate_experiments, weekly_information
from shadowgate.evaluation.stats import delong_test

# The README's worked size: 4,500 decisions a week, 90 % approved, 5 % of them default (≈ 200 defaults a week).
SIZE = {"decisions_per_week": 4_500.0, "default_rate": 0.05, "approval_rate": 0.9, "champion_auc": 0.78}
PLAN = {"margin": 0.01, "mde": 0.01, "alpha": 0.025, "power": 0.8, "max_looks": 26, "correlation": 0.85}


def test_the_weekly_variance_is_what_delong_measures_on_binormal_rows() -> None:
    rho, auc_c, auc_t, n_pos, n_neg = 0.8, 0.78, 0.80, 400, 4_000
    info = weekly_information(
        decisions_per_week=n_pos + n_neg,
        default_rate=n_pos / (n_pos + n_neg),
        champion_auc=auc_c,
        challenger_auc=auc_t,
        correlation=rho,
    )
    rng = np.random.default_rng(3)
    mu_c, mu_t = (math.sqrt(2) * sps.norm.ppf(a) for a in (auc_c, auc_t))
    cov = [[1.0, rho], [rho, 1.0]]
    differences, variances = [], []
    y = np.r_[np.ones(n_pos), np.zeros(n_neg)]
    for _ in range(300):
        pos = rng.multivariate_normal([mu_c, mu_t], cov, size=n_pos)
        neg = rng.multivariate_normal([0.0, 0.0], cov, size=n_neg)
        scores = np.vstack([pos, neg])
        result = delong_test(y, scores[:, 1], scores[:, 0])
        differences.append(result.difference)
        variances.append(result.se**2)
    expected = info.variance(n_pos, n_neg)
    # 300 replicates: the sample variance is within ~8 % (one sd) of the truth; DeLong's estimate averages closer.
    assert np.var(differences, ddof=1) == pytest.approx(expected, rel=0.25)
    assert np.mean(variances) == pytest.approx(expected, rel=0.05)
    assert np.mean(differences) == pytest.approx(auc_t - auc_c, abs=3 * math.sqrt(expected / 300))


def test_information_grows_with_defaults_and_with_the_models_correlation() -> None:
    low = weekly_information(**SIZE, challenger_auc=0.8, correlation=0.5)  # type: ignore[arg-type]
    high = weekly_information(**SIZE, challenger_auc=0.8, correlation=0.95)  # type: ignore[arg-type]
    bigger = weekly_information(**{**SIZE, "decisions_per_week": 9_000.0}, challenger_auc=0.8, correlation=0.5)  # type: ignore[arg-type]
    assert high.information > 3 * low.information
    assert bigger.information == pytest.approx(2 * low.information, rel=1e-9)


def test_the_plan_holds_its_error_rates_on_simulated_experiments() -> None:
    """Issue 13, item 3, fast mode: each rate over 1,000 experiments with its Monte Carlo error."""
    summary = plan_experiment(**SIZE, **PLAN)  # type: ignore[arg-type]
    rates = simulate_experiments(summary.plan, summary.info, experiments=1_000, seed=20261207)
    print({k: v for k, v in vars(rates).items() if k != "scenarios"})
    alpha = summary.plan.alpha
    assert rates.experiments == 1_000 and rates.weeks_simulated == 52
    assert rates.aa_superior_rate <= alpha + rates.aa_superior_mc_error
    assert rates.twin_superior_rate <= alpha
    # At the edge of H0 the rate is α itself (a little below: the futility stops are non-binding).
    assert rates.margin_superior_rate <= alpha + 2 * rates.margin_superior_mc_error
    assert rates.h1_power >= summary.plan.power - 2 * rates.h1_power_mc_error
    assert rates.futility_rate > 0.9
    assert rates.h1_weeks_vs_fixed < 0.8
    assert rates.aa_mean_weeks < rates.h1_mean_weeks < rates.fixed_horizon_weeks
    # No experiment is left undecided: every plan ends within its 26 looks, long before the 52 simulated weeks.
    assert all(s["undecided"] == 0 for s in rates.scenarios)


def test_plan_experiment_prints_the_looks_and_writes_the_rates(tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    result = CliRunner().invoke(
        app,
        [
            "plan-experiment",
            "--decisions-per-week",
            "4500",
            "--default-rate",
            "0.05",
            "--champion-auc",
            "0.78",
            "--margin",
            "0.01",
            "--mde",
            "0.01",
            "--simulate",
            "40",
            "--seed",
            "1",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "the plan ends by week 9 of data (calendar week 22)" in result.output
    figures = json.loads(out.read_text())
    for key in ("aa_superior_rate", "twin_superior_rate", "h1_power", "futility_rate", "h1_weeks_vs_fixed"):
        assert 0.0 <= figures[key] <= 1.0 or key == "h1_weeks_vs_fixed"
    assert figures["experiments"] == 40
    assert figures["weeks_to_end"] == 9 and figures["fixed_horizon_weeks"] == 8
    assert len(figures["looks"]) == 9


def test_a_plan_too_long_for_its_looks_says_so() -> None:
    summary = plan_experiment(**{**SIZE, "decisions_per_week": 500.0}, **{**PLAN, "max_looks": 6})  # type: ignore[arg-type]
    assert summary.weeks_to_end == 6
    assert not summary.reaches_max_information


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--margin", "-1", "--margin"),
        ("--mde", "0.7", "--mde"),
        ("--default-rate", "0", "--default-rate"),
        ("--champion-auc", "0.3", "--champion-auc"),
    ],
)
def test_plan_experiment_refuses_bad_input_with_the_option_named(option: str, value: str, message: str) -> None:
    base = {"--decisions-per-week": "4500", "--default-rate": "0.05", "--champion-auc": "0.78", option: value}
    result = CliRunner().invoke(app, ["plan-experiment", *[x for kv in base.items() for x in kv]])
    assert result.exit_code == 2  # a usage error, not a traceback
    assert f"Invalid value for '{message}'" in result.output
    assert not isinstance(result.exception, ValueError)
