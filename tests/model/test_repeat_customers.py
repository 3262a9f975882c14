"""How much repeat customers matter to the weekly paired test on the simulator: the share of a week's purchases by a
customer who buys again that week, and DeLong's SE clustered by customer against the independent-rows one. The
README quotes these figures (``pytest tests/model/test_repeat_customers.py -s`` prints them)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from shadowgate.evaluation.stats import delong_test
from shadowgate.simulation import SimulationResult


def test_repeat_customers_are_common_but_barely_move_the_delong_se(world: Callable[..., SimulationResult]) -> None:
    w = world(transactions=100_000, customers=10_000, days=91, drift_start_day=60)  # the README's walk-through
    p = np.clip(w.labels["default_probability"].to_numpy(), 1e-4, 1 - 1e-4)
    y = w.labels["is_default"].to_numpy().astype(int)
    rng = np.random.default_rng(3)
    logit = np.log(p / (1 - p))
    # A sharper challenger and a noisier champion on the true risk (as tests/dags/test_weekly_performance.py).
    challenger, champion = logit + rng.normal(scale=0.3, size=p.size), logit + rng.normal(scale=0.9, size=p.size)
    customers = w.transactions["customer_id"].to_numpy()
    stamps = pd.DatetimeIndex(w.transactions["event_timestamp"]).tz_convert("UTC")
    week = (stamps - pd.Timestamp("2000-01-03", tz="UTC")).days // 7  # Monday-to-Monday weeks
    shares, ratios = [], []
    for k in np.unique(week)[1:-1]:  # whole weeks only
        rows = np.asarray(week == k)
        counts = pd.Series(customers[rows]).value_counts()
        shares.append(float((counts[counts > 1]).sum() / rows.sum()))
        naive = delong_test(y[rows], challenger[rows], champion[rows]).se
        clustered = delong_test(y[rows], challenger[rows], champion[rows], clusters=customers[rows]).se
        ratios.append(clustered / naive)
    print(
        f"\n{len(shares)} weeks: purchases by a repeat customer of the week {min(shares):.1%}–{max(shares):.1%} "
        f"(median {np.median(shares):.1%}); DeLong SE clustered / independent rows {min(ratios):.3f}–"
        f"{max(ratios):.3f} (median {np.median(ratios):.3f})"
    )
    assert np.median(shares) > 0.4  # repeat customers are the rule, not the exception
    assert max(abs(r - 1) for r in ratios) < 0.05  # yet ignoring them moves the SE by < 5 % on this world
