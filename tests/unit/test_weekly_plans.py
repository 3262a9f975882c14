"""Which comparisons a week gets, and the sample-ratio check of a canary (the warehouse faked: one query's rows)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd
import pytest

from shadowgate.decisioning.experiments import load_book
from shadowgate.pipelines.performance import (
    Cohort,
    Comparison,
    ComparisonPlan,
    ModelKey,
    _with_arm_rates,
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


def _comparison() -> Comparison:
    nan = float("nan")
    return Comparison(
        experiment_id="canary-b", control="champion@1", treatment="challenger-b@3", n=10, n_positive=2,
        auc_control=0.7, auc_treatment=0.72, auc_difference=0.02, delong_z=1.0, delong_p_value=0.3,
        auc_difference_ci=(nan, nan), brier_difference=0.0, brier_difference_ci=(nan, nan), mcnemar_statistic=0.0,
        mcnemar_p_value=1.0, decisions_disagree=0,
    )  # fmt: skip


def _customers(control: int, treatment: int, *, version: str = "2", share: float = 0.1) -> list[dict[str, Any]]:
    """``queries/arm_counts`` rows: one per customer of each arm in one allocation period, three purchases each."""
    return [
        {"experiment_version": version, "treatment_share": share, "arm": arm, "customer_id_hash": f"{arm}{i}",
         "applicants": 3, "approved": 3, "labelled": 3, "defaults": 0, "loss": 0.0}
        for arm, count in (("control", control), ("treatment", treatment))
        for i in range(count)
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("control", "treatment", "flagged"),
    [
        (9_000, 1_000, False),  # exactly the configured 10 %
        (9_100, 900, True),  # 9 %: chi-square 11.1, p ≈ 0.0009 < 0.001
        (9_050, 950, False),  # 9.5 %: chi-square 2.8, p ≈ 0.09
    ],
)
def test_a_canarys_customers_are_checked_against_its_share(control: int, treatment: int, flagged: bool) -> None:
    from scipy.stats import chi2

    # Customers, not their purchases (three each here, which would triple the chi-square).
    checked = _with_srm(_comparison(), _customers(control, treatment))
    assert (checked.srm_flagged, checked.srm_periods) == (flagged, 1)
    expected_chi2 = (control - 9_000) ** 2 / 9_000 + (treatment - 1_000) ** 2 / 1_000
    assert checked.srm_p_value == pytest.approx(chi2.sf(expected_chi2, 1))
    assert _with_srm(_comparison(), []).srm_p_value is None


def test_a_canarys_arms_are_compared_per_applicant() -> None:
    rows = _customers(900, 100)
    for r in rows:  # control approves all three purchases, one customer in ten defaults on one; treatment approves 2
        if r["arm"] == "treatment":
            r["approved"] = r["labelled"] = 2
        r["defaults"] = int(r["customer_id_hash"].endswith("0"))
        r["loss"] = 100.0 * r["defaults"]
    c = _with_arm_rates(_comparison(), rows)
    assert (c.arm_approval_rate_control, c.arm_approval_rate_treatment) == (1.0, pytest.approx(2 / 3))
    assert c.arm_default_rate_control == pytest.approx(90 / 2_700)
    assert c.arm_default_rate_treatment == pytest.approx(10 / 200)
    assert c.arm_loss_per_applicant_control == c.arm_loss_per_applicant_treatment == pytest.approx(100 / 30)
    assert c.arm_loss_per_applicant_difference == pytest.approx(0.0, abs=1e-12)
    assert c.arm_treatment_better is False
    assert _with_arm_rates(_comparison(), []).arm_loss_per_applicant_difference is None
