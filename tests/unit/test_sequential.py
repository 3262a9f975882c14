"""The comparison plan's looks: boundaries checked against the validated Lan–DeMets engine (itself checked against
rpact) and against Brownian motion simulated directly; the reproducibility properties the weekly DAG relies on."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shadowgate.evaluation.sequential import (
    SequentialPlan,
    SequentialTest,
    design_plan,
    fixed_horizon_information,
    monitoring_look,
    run_looks,
)
from shadowgate.evaluation.stats import group_sequential_bounds


def _plan(**overrides: object) -> SequentialPlan:
    fields: dict[str, object] = {
        "margin": 0.01,
        "mde": 0.01,
        "alpha": 0.025,
        "power": 0.8,
        "max_looks": 8,
        "max_information": 100_000.0,
        "futility": False,
    }
    fields.update(overrides)
    return SequentialPlan(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("fractions", [[0.25, 0.5, 0.75, 1.0], [0.1, 0.35, 0.4, 0.8, 1.0], [0.5, 1.0]])
def test_efficacy_bounds_equal_the_validated_lan_demets_bounds(fractions: list[float]) -> None:
    plan = _plan(max_looks=len(fractions))
    test = SequentialTest(plan)
    mine = [test.bounds(f * plan.max_information)[0] for f in fractions]
    reference = group_sequential_bounds(fractions, alpha=0.025).boundaries
    assert mine == pytest.approx(reference, abs=2e-5)
    assert test.ended


def _brownian_crossings(
    plan: SequentialPlan, fractions: list[float], theta: float, paths: int, seed: int
) -> tuple[float, float]:
    """P(efficacy crossed), P(futility crossed) of the plan's boundaries for B(t) simulated directly."""
    test = SequentialTest(plan)
    bounds = [test.bounds(f * plan.max_information) for f in fractions]
    rng = np.random.default_rng(seed)
    t = np.asarray(fractions)
    steps = rng.normal(theta * np.diff(t, prepend=0.0), np.sqrt(np.diff(t, prepend=0.0)), size=(paths, len(t)))
    z = np.cumsum(steps, axis=1) / np.sqrt(t)
    alive = np.ones(paths, dtype=bool)
    efficacy = futility = 0
    for k, (upper, lower, _) in enumerate(bounds):
        up = alive & (z[:, k] >= upper)
        down = alive & ~up & (z[:, k] < lower)
        efficacy += int(up.sum())
        futility += int(down.sum())
        alive &= ~(up | down)
    return efficacy / paths, futility / paths


def test_the_designed_plan_has_its_power_and_level_on_simulated_brownian_motion() -> None:
    plan = design_plan(margin=0.01, mde=0.01, alpha=0.025, power=0.8, max_looks=6, futility=True)
    fractions = [k / 6 for k in range(1, 7)]
    paths = 400_000
    power, _ = _brownian_crossings(plan, fractions, plan.drift, paths, seed=1)
    level, futile_h0 = _brownian_crossings(plan, fractions, 0.0, paths, seed=2)
    mc = math.sqrt(0.8 * 0.2 / paths)
    assert power == pytest.approx(0.8, abs=4 * mc)
    # The futility boundary is non-binding: with it, the level is below α (it stops some would-be crossings).
    assert level <= 0.025 + 4 * math.sqrt(0.025 * 0.975 / paths)
    assert futile_h0 > 0.5
    # Looks cost information: more than the one-look test's, and the O'Brien–Fleming premium is modest.
    assert 1.0 < plan.max_information / plan.fixed_information < 1.25


def test_without_futility_the_level_is_alpha_exactly() -> None:
    plan = _plan(max_looks=5)
    fractions = [0.2, 0.4, 0.6, 0.8, 1.0]
    paths = 400_000
    level, _ = _brownian_crossings(plan, fractions, 0.0, paths, seed=3)
    assert level == pytest.approx(0.025, abs=4 * math.sqrt(0.025 * 0.975 / paths))


def test_fixed_horizon_information_is_the_textbook_formula() -> None:
    # (z_0.975 + z_0.8)² / 0.01² = (1.959964 + 0.841621)² · 10⁴
    assert fixed_horizon_information(mde=0.01, alpha=0.025, power=0.8) == pytest.approx(78_488.9, rel=1e-4)


def test_the_last_look_spends_all_alpha_and_its_futility_bound_is_the_efficacy_bound() -> None:
    plan = _plan(max_looks=3, futility=True, mde=0.008)
    test = SequentialTest(plan)
    test.bounds(20_000)
    test.bounds(40_000)
    efficacy, futility, final = test.bounds(60_000)  # the third look: the maximum number, short of I_max
    assert final and efficacy == futility
    with pytest.raises(ValueError, match="ended"):
        test.bounds(80_000)


def test_information_must_grow() -> None:
    test = SequentialTest(_plan())
    test.bounds(10_000)
    with pytest.raises(ValueError, match="grow"):
        test.bounds(10_000)


def test_a_clear_winner_is_superior_at_the_first_look_and_later_weeks_are_not_looks() -> None:
    plan = _plan()
    weeks = [(0.05, 0.004)] * 5  # z = (0.05 - 0.01)/0.004 = 10
    looks = run_looks(plan, weeks)
    assert [look.verdict for look in looks] == ["superior"]
    assert looks[0].z == pytest.approx(10.0)


def test_a_plan_that_runs_out_is_not_shown() -> None:
    plan = _plan(max_looks=3)
    looks = run_looks(plan, [(0.012, 0.01)] * 6)
    assert [look.verdict for look in looks] == ["continue", "continue", "not_shown"]
    assert looks[-1].final


def test_futility_stops_a_hopeless_comparison_early() -> None:
    plan = design_plan(margin=0.01, mde=0.01, alpha=0.025, power=0.8, max_looks=10)
    se = 1 / math.sqrt(plan.max_information / 10)  # ten looks of equal information
    looks = run_looks(plan, [(-0.005, se)] * 10)
    assert looks[-1].verdict == "futile"
    assert len(looks) < 10


def test_weeks_without_a_usable_standard_error_add_no_look() -> None:
    looks = run_looks(_plan(), [(0.0, math.nan), (0.01, 0.01), (0.01, 0.0), (0.02, 0.01)])
    assert [look.look for look in looks] == [1, 2]
    assert looks[-1].estimate == pytest.approx(0.015)


weeks_strategy = st.lists(
    st.tuples(st.floats(-0.05, 0.08), st.floats(0.002, 0.03)),
    min_size=1,
    max_size=12,
)


@given(weeks=weeks_strategy, cut=st.integers(0, 12))
@settings(max_examples=60, deadline=None)
def test_a_look_never_changes_when_later_weeks_arrive(weeks: list[tuple[float, float]], cut: int) -> None:
    """What the weekly DAG relies on: the run of week k (weeks[:k]) takes exactly the first looks of any later run,
    and once a verdict is reached later weeks change nothing — so re-runs and out-of-order backfills agree."""
    plan = _plan(max_looks=6, futility=True, mde=0.012)
    full = run_looks(plan, weeks)
    prefix = run_looks(plan, weeks[:cut])
    assert prefix == full[: len(prefix)]
    if full and full[-1].final:
        assert run_looks(plan, [*weeks, (0.2, 0.001)]) == full


def test_the_early_label_only_monitors() -> None:
    look = monitoring_look(_plan(), [(0.03, 0.01), (0.01, 0.01)])
    assert look is not None
    assert look.verdict == "monitoring" and math.isnan(look.efficacy_bound)
    assert look.estimate == pytest.approx(0.02)
    assert monitoring_look(_plan(), [(math.nan, math.nan)]) is None


def test_alpha_is_split_across_challengers() -> None:
    one = design_plan(margin=0.01, mde=0.01, alpha=0.025, power=0.8, max_looks=4)
    two = design_plan(margin=0.01, mde=0.01, alpha=0.025, power=0.8, max_looks=4, comparisons=2)
    assert two.alpha == pytest.approx(0.0125)
    assert two.max_information > one.max_information
    assert "α/2" in two.describe()
