"""Which comparisons a week gets, and the sample-ratio check of a canary (the warehouse faked: one query's rows)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from shadowgate.decisioning.experiments import load_book
from shadowgate.pipelines.performance import (
    Cohort,
    Comparison,
    ComparisonPlan,
    ModelKey,
    _with_srm,
    cohort_week,
    plans_for,
    plans_from_book,
)

WEEK = cohort_week(dt.date(2026, 1, 12), "final", as_of=dt.datetime(2026, 4, 20, tzinfo=dt.UTC))


def _cohort(*aliases: str) -> Cohort:
    scores = {ModelKey(a, str(i + 1)): np.array([0.1, 0.2]) for i, a in enumerate(aliases)}
    return Cohort(week=WEEK, y=np.array([0, 1]), scores=scores, frame=pd.DataFrame(), rows_total=2)


def test_every_challenger_is_compared_with_the_champion_once() -> None:
    canary = ComparisonPlan(experiment_id="canary-b", treatment_alias="challenger-b", mode="canary")
    chosen = plans_for(_cohort("champion", "challenger", "challenger-b", "challenger-c"), [canary])
    assert [(p.experiment_id, p.treatment_alias, p.mode) for p in chosen] == [
        ("canary-b", "challenger-b", "canary"),
        ("champion-vs-challenger", "challenger", "shadow"),
        ("champion-vs-challenger-c", "challenger-c", "shadow"),
    ]
    # An experiment whose models did not score the week is not evaluated; without a champion nothing is.
    assert plans_for(_cohort("champion"), [canary]) == []
    assert plans_for(_cohort("challenger", "challenger-b"), []) == []


def test_the_shipped_book_gives_the_experiments_that_ran() -> None:
    plans = plans_from_book(load_book().experiments)
    # The shipped canary is a draft (never ran): only the shadow experiment is evaluated under its own name.
    assert [(p.experiment_id, p.control_alias, p.treatment_alias, p.mode) for p in plans] == [
        ("shadow-challenger", "champion", "challenger", "shadow")
    ]
    assert plans[0].started_at == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


class _Rows:
    """The one query the SRM check runs, answered from a list."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.asked: list[tuple[str, Mapping[str, Any]]] = []

    def run(self, name: str, params: Mapping[str, Any] | None = None, **values: str) -> pa.Table:
        self.asked.append((name, dict(params or {})))
        return pa.Table.from_pylist(self.rows)


def _comparison() -> Comparison:
    nan = float("nan")
    return Comparison(
        experiment_id="canary-b", control="champion@1", treatment="challenger-b@3", n=10, n_positive=2,
        auc_control=0.7, auc_treatment=0.72, auc_difference=0.02, delong_z=1.0, delong_p_value=0.3,
        auc_difference_ci=(nan, nan), brier_difference=0.0, brier_difference_ci=(nan, nan), mcnemar_statistic=0.0,
        mcnemar_p_value=1.0, decisions_disagree=0,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("control", "treatment", "flagged"),
    [
        (9_000, 1_000, False),  # exactly the configured 10 %
        (9_100, 900, True),  # 9 %: chi-square 11.1, p ≈ 0.0009 < 0.001
        (9_050, 950, False),  # 9.5 %: chi-square 2.8, p ≈ 0.09
    ],
)
def test_a_canarys_arms_are_checked_against_its_share(control: int, treatment: int, flagged: bool) -> None:
    canary = ComparisonPlan(
        experiment_id="canary-b", treatment_alias="challenger-b", mode="canary", treatment_share=0.1
    )
    rows = [
        {"experiment_id": "canary-b", "arm": "control", "decisions": control},
        {"experiment_id": "canary-b", "arm": "treatment", "decisions": treatment},
        {"experiment_id": "other", "arm": "treatment", "decisions": 5_000},  # another experiment's arms
    ]
    warehouse = _Rows(rows)
    checked = _with_srm(warehouse, _comparison(), canary, WEEK)  # type: ignore[arg-type]
    assert checked.srm_flagged is flagged
    expected_chi2 = (control - 9_000) ** 2 / 9_000 + (treatment - 1_000) ** 2 / 1_000
    from scipy.stats import chi2

    assert checked.srm_p_value == pytest.approx(chi2.sf(expected_chi2, 1))
    assert warehouse.asked == [
        ("queries/arm_counts", {"cohort_start": dt.datetime(2026, 1, 12, tzinfo=dt.UTC),
                                "cohort_end": dt.datetime(2026, 1, 19, tzinfo=dt.UTC)})
    ]  # fmt: skip


def test_a_canarys_arms_default_rates_are_compared_unpaired() -> None:
    from statsmodels.stats.proportion import proportions_ztest

    from shadowgate.config import EvaluationSettings
    from shadowgate.decisioning.policies import Thresholds
    from shadowgate.pipelines.performance import EvaluationPlan, evaluate_week

    rng = np.random.default_rng(4)
    n = 4_000
    arm = np.where(rng.random(n) < 0.1, "treatment", "control")
    y = (rng.random(n) < np.where(arm == "treatment", 0.04, 0.07)).astype(np.int8)  # the challenger approves better
    scores = {
        ModelKey("champion", "1"): np.clip(0.05 + 0.2 * y + rng.normal(0, 0.05, n), 0.001, 0.999),
        ModelKey("challenger-b", "3"): np.clip(0.05 + 0.25 * y + rng.normal(0, 0.05, n), 0.001, 0.999),
    }
    frame = pd.DataFrame(
        {
            "policy_name": "conservative", "experiment_id": "canary-b", "arm": arm, "amount": 100.0,
            "customer_type": "new", "merchant_category": "home", "amount_band": "100-500", "channel": "web",
        }
    )  # fmt: skip
    cohort = Cohort(week=WEEK, y=y, scores=scores, frame=frame, rows_total=n)
    canary = ComparisonPlan(
        experiment_id="canary-b", treatment_alias="challenger-b", mode="canary", treatment_share=0.1
    )
    plan = EvaluationPlan(settings=EvaluationSettings(bootstrap_resamples=20), early_maturity_days=17, maturity_days=90)
    [c] = evaluate_week(
        cohort, plans=[canary], policies={"conservative": Thresholds(high=0.5, medium=0.25)}, plan=plan
    ).comparisons
    treated, control = arm == "treatment", arm == "control"
    assert c.arm_default_rate_treatment == pytest.approx(y[treated].mean())
    assert c.arm_default_rate_control == pytest.approx(y[control].mean())
    _, p_value = proportions_ztest([y[treated].sum(), y[control].sum()], [treated.sum(), control.sum()])
    assert c.arm_default_rate_p_value == pytest.approx(p_value)
    # A shadow comparison has no arms of its own: nothing is computed.
    shadow = ComparisonPlan(experiment_id="canary-b", treatment_alias="challenger-b")
    [s] = evaluate_week(
        cohort, plans=[shadow], policies={"conservative": Thresholds(high=0.5, medium=0.25)}, plan=plan
    ).comparisons
    assert (s.arm_default_rate_control, s.arm_default_rate_p_value) == (None, None)
