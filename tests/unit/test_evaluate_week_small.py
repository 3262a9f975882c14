"""A cohort week too small for DeLong (one default) is evaluated without a comparison instead of failing the run:
found by the walk-through test, where the first early-label week of a small replay had a single default."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from shadowgate.config import EvaluationSettings
from shadowgate.decisioning.policies import load_policy
from shadowgate.pipelines.performance import (
    Cohort,
    ComparisonPlan,
    EvaluationPlan,
    ModelKey,
    cohort_week,
    evaluate_week,
)


def _cohort(defaults: int, n: int = 40) -> Cohort:
    rng = np.random.default_rng(7)
    y = np.zeros(n, dtype=np.int8)
    y[:defaults] = 1
    frame = pd.DataFrame(
        {
            "policy_name": "conservative",
            "experiment_id": None,
            "arm": None,
            "amount": 100.0,
            "customer_type": "returning",
            "merchant_category": "electronics",
            "amount_band": "100-500",
            "channel": "web",
        },
        index=range(n),
    )
    return Cohort(
        week=cohort_week(dt.date(2026, 7, 6), "early", as_of=dt.datetime(2026, 8, 3, tzinfo=dt.UTC)),
        y=y,
        scores={ModelKey("champion", "1"): rng.random(n), ModelKey("challenger", "2"): rng.random(n)},
        frame=frame,
        rows_total=n,
        customers=np.arange(n),
    )


@pytest.mark.parametrize(("defaults", "compared"), [(0, 0), (1, 0), (2, 1), (38, 1), (39, 0)])
def test_a_comparison_needs_two_defaults_and_two_repaid(defaults: int, compared: int) -> None:
    plan = EvaluationPlan(settings=EvaluationSettings(), early_maturity_days=17, maturity_days=90)
    evaluation = evaluate_week(
        _cohort(defaults),
        plans=[ComparisonPlan(experiment_id="champion-vs-challenger", treatment_alias="challenger")],
        policies={"conservative": load_policy("conservative").thresholds},
        plan=plan,
    )
    assert len(evaluation.comparisons) == compared
    assert set(evaluation.models) == {"champion@1", "challenger@2"}  # the models' own figures are still there
