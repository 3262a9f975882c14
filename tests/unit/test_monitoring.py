"""A model's weekly figures against its own first weeks: hand-computed baselines and both alerting bounds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shadowgate.evaluation.monitoring import Baseline, WeekFigures, auc_drop, baseline, default_rise
from shadowgate.evaluation.performance import model_performance


def _week(auc: float, se: float, *, defaults: int = 100, expected: float = 100.0) -> WeekFigures:
    return WeekFigures(auc=auc, auc_se=se, n=2_000, n_positive=defaults, expected=expected)


def test_the_baseline_is_the_inverse_variance_mean_with_its_dispersion() -> None:
    weeks = [_week(0.80, 0.01, defaults=90), _week(0.78, 0.02, defaults=110)]
    b = baseline(weeks)
    assert b is not None
    # weights 10,000 and 2,500: (0.8·10000 + 0.78·2500) / 12500
    assert b.auc == pytest.approx(0.796)
    assert b.auc_se == pytest.approx(1 / math.sqrt(12_500))
    # χ² = 10000·0.004² + 2500·0.016² = 0.16 + 0.64 = 0.8 on 1 df: within sampling error, φ = 1
    assert b.auc_dispersion == 1.0
    assert (b.observed, b.expected, b.ratio) == (200, 200.0, 1.0)
    # χ² of the defaults: (90 − 100)²/100 + (110 − 100)²/100 = 2 on 1 df: φ = √2
    assert b.ratio_dispersion == pytest.approx(math.sqrt(2))
    assert baseline([_week(math.nan, math.nan)]) is None


def test_weeks_that_vary_more_than_their_standard_errors_widen_the_bounds() -> None:
    b = baseline([_week(0.70, 0.01), _week(0.80, 0.01), _week(0.75, 0.01)])
    assert b is not None
    # χ² = (0.05² + 0.05²)/0.01² = 50 on 2 df: φ = 5
    assert b.auc_dispersion == pytest.approx(5.0)


BASE = Baseline(weeks=4, auc=0.80, auc_se=0.005, auc_dispersion=1.0, observed=400, expected=400.0, ratio_dispersion=1.0)


@pytest.mark.parametrize(
    ("auc", "se", "fires"),
    [
        (0.70, 0.010, True),  # 12.5 % below, z = 0.1 / √(0.01² + 0.005²) = 8.9
        (0.78, 0.002, False),  # z = 3.7 but only 2.5 % below: not material
        (0.70, 0.040, False),  # 12.5 % below but z = 2.4: not significant
        (0.85, 0.010, False),  # better
    ],
)
def test_an_auc_drop_must_be_material_and_significant(auc: float, se: float, fires: bool) -> None:
    test = auc_drop(_week(auc, se), BASE, relative=0.05, min_z=3.0)
    assert test is not None
    assert test.change == pytest.approx((0.80 - auc) / 0.80)
    assert test.z == pytest.approx((0.80 - auc) / math.hypot(se, 0.005))
    assert test.fires is fires
    assert auc_drop(_week(math.nan, math.nan), BASE, relative=0.05, min_z=3.0) is None


@pytest.mark.parametrize(("defaults", "fires"), [(100, False), (140, True), (133, False), (70, False)])
def test_a_default_rise_is_against_the_models_own_calibration(defaults: int, fires: bool) -> None:
    # The baseline: 400 defaults on 400 predicted; the week: 100 predicted (se 0.112: 133 is 33 % up but z = 2.95).
    test = default_rise(_week(0.8, 0.01, defaults=defaults), BASE, relative=0.15, min_z=3.0)
    assert test is not None
    assert test.change == pytest.approx(defaults / 100 - 1)
    assert test.se == pytest.approx(math.sqrt(1 / 100 + 1 / 400))
    assert test.fires is fires
    # A model that always under-predicts by half is not alerted for it: its baseline ratio says so.
    skewed = Baseline(**{**BASE.__dict__, "observed": 800})
    same = default_rise(_week(0.8, 0.01, defaults=200), skewed, relative=0.15, min_z=3.0)
    assert same is not None and same.change == pytest.approx(0.0) and not same.fires


def test_week_figures_of_a_model_performance() -> None:
    rng = np.random.default_rng(3)
    p = rng.uniform(0, 0.2, 500)
    y = (rng.random(500) < p).astype(int)
    m = model_performance(y, p)
    f = WeekFigures.of(m)
    assert (f.auc, f.auc_se, f.n, f.n_positive) == (m.auc, m.auc_se, 500, int(y.sum()))
    assert f.expected == pytest.approx(p.sum())


def test_a_change_clears_only_below_half_the_bounds() -> None:
    hovering = auc_drop(_week(0.77, 0.01), BASE, relative=0.05, min_z=3.0)  # 3.75 % below, z = 2.7
    assert hovering is not None and not hovering.fires and not hovering.cleared
    gone = auc_drop(_week(0.79, 0.01), BASE, relative=0.05, min_z=3.0)  # 1.25 % below
    assert gone is not None and gone.cleared
