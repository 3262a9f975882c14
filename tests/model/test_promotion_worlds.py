"""Item 3 of the promotion gate, in the suite's fast mode: the weekly comparison and the gate run as the DAGs run
them (``shadowgate.bench.promotion``: the pipeline's own ``compare``, the plan's looks every week, the gate's pooled
evidence and ``decide`` with the shipped files) on worlds whose truth is known, and the canary guard on broken and
healthy canaries. ``make promotion-proof`` runs the same at full size (2,000 experiments per world, 20,000 guard runs
per scenario) and prints the README's tables.

Stated rates: a challenger better by δ + MDE is promoted within the plan's looks in ≥ 80 % (the plan's power); a
worse one never; a twin (the same recipe retrained) in ≤ 2.5 % of ≥ 400 experiments; a broken canary is stopped by
the run one guard interval after it broke, a healthy one almost never.
"""

from __future__ import annotations

import math

from shadowgate.bench.promotion import WORLDS, canary_proof, simulate_world

BETTER, TWIN, WORSE, MARGIN = WORLDS


def _report(rates) -> None:  # type: ignore[no-untyped-def]
    print(
        f"\n{rates.world}: promoted {rates.promoted} of {rates.experiments} = {rates.promoted_rate:.2%} "
        f"± {rates.promoted_mc_error:.2%} (95 % {rates.promoted_low_95:.2%}–{rates.promoted_high_95:.2%}), "
        f"retired {rates.retired}, weeks to promotion {rates.mean_weeks_to_promotion}"
    )


def test_a_better_challenger_is_promoted_within_the_plans_looks() -> None:
    rates = simulate_world(BETTER, experiments=100, seed=11)
    _report(rates)
    # The plan's power is 0.8; the other gates must not hold a truly better challenger back.
    assert rates.promoted_rate >= 0.80 - 2 * max(rates.promoted_mc_error, math.sqrt(0.8 * 0.2 / 100))
    assert rates.promoted + rates.retired + rates.undecided == 100
    assert rates.gates_failed_when_superior == {}
    assert rates.mean_weeks_to_promotion is not None and rates.mean_weeks_to_promotion < 9  # the plan's horizon


def test_a_twin_or_a_worse_challenger_is_not_promoted() -> None:
    twin = simulate_world(TWIN, experiments=400, seed=12)
    _report(twin)
    assert twin.promoted_rate <= 0.025 and twin.promoted_high_95 <= 0.025
    worse = simulate_world(WORSE, experiments=200, seed=13)
    _report(worse)
    assert worse.promoted == 0 and worse.retired == 200


def test_a_broken_canary_is_stopped_within_one_guard_interval_and_a_healthy_one_is_not() -> None:
    rates = {r.scenario: r for r in canary_proof(runs=1_000, seed=14)}
    for r in rates.values():
        print(f"\ncanary {r.scenario}: stopped {r.stopped} of {r.runs} (95 % {r.low_95:.3%}–{r.high_95:.3%})")
    assert rates["healthy"].stopped <= 2
    for broken in ("errors", "approval collapse"):
        assert rates[f"{broken}: the run one interval later"].stopped == 1_000
        assert rates[f"{broken}: first run after the break"].stopped_rate >= 0.75
