"""A canary's arms on simulated weeks whose truth is known: customers (not decisions) are randomised, some buy
many times, shares change mid-week, and a stricter arm looks better among the approved while losing as much per
applicant."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from shadowgate.evaluation.canary import arm_comparison, canary_srm
from shadowgate.evaluation.stats import srm_test, two_proportion_test


def _customers(rng: np.random.Generator, n: int, *, mean_purchases: float) -> np.ndarray:
    """Purchases per customer in a week: at least one, geometric (a few customers buy very often)."""
    return rng.geometric(1 / mean_purchases, size=n)


def test_repeat_customers_do_not_inflate_the_sample_ratio_check() -> None:
    # 300 weeks of 5,000 customers assigned 10 % / 90 % exactly as the service does (per customer), buying five
    # times a week on average. The split is right every week: a check should flag about 0.1 % of them.
    rng = np.random.default_rng(11)
    by_decisions, by_customers = 0, 0
    weeks = 300
    for _ in range(weeks):
        purchases = _customers(rng, 5_000, mean_purchases=5)
        treated = rng.random(purchases.size) < 0.1
        decisions = [int(purchases[~treated].sum()), int(purchases[treated].sum())]
        by_decisions += srm_test(decisions, [0.9, 0.1]).flagged
        rows = [
            {"experiment_version": "2", "treatment_share": 0.1, "arm": "treatment" if t else "control"} for t in treated
        ]
        srm = canary_srm(rows)
        assert srm is not None
        by_customers += srm.flagged
    # Counting decisions multiplies the chi-square by E[k²]/E[k] = 9: it flags about 27 % of correct splits.
    assert by_decisions / weeks > 0.15
    assert by_customers / weeks <= 0.01


def test_a_share_changed_mid_week_starts_a_period_checked_against_its_own_share() -> None:
    # Version 2 ran at 10 % for the first half of the week, version 3 at 30 % after: both splits exactly right.
    rows: list[dict[str, Any]] = []
    for version, share, n in (("2", 0.1, 6_000), ("3", 0.3, 6_000)):
        treated = round(n * share)
        rows += [{"experiment_version": version, "treatment_share": share, "arm": "treatment"}] * treated
        rows += [{"experiment_version": version, "treatment_share": share, "arm": "control"}] * (n - treated)
    srm = canary_srm(rows)
    assert srm is not None
    assert (len(srm.periods), srm.flagged, srm.p_value) == (2, False, 1.0)
    assert [(p.experiment_version, p.customers_treatment) for p in srm.periods] == [("2", 600), ("3", 1_800)]
    # The week pooled against the share in force at its end (30 %) would cry mismatch.
    assert srm_test([9_600, 2_400], [0.7, 0.3]).flagged
    # A real mismatch in one period is found (Bonferroni over the two).
    broken = [dict(r) for r in rows]
    for r in broken[:300]:  # 300 of version 2's treated customers logged as control
        r["arm"] = "control"
    srm = canary_srm(broken)
    assert srm is not None and srm.flagged and srm.periods[0].p_value * 2 == pytest.approx(srm.p_value)


def _week(
    rng: np.random.Generator, *, arm: str, customers: int, approve: float, default: float, amount: float
) -> list[dict[str, Any]]:
    """One arm's customers: purchases per customer geometric (mean 2), each approved with ``approve``, an approved
    one defaulting with the customer's own risk (mean ``default``: customers differ, so purchases of one customer
    are correlated), a default losing ``amount``."""
    purchases = _customers(rng, customers, mean_purchases=2)
    risk = np.clip(default * rng.gamma(2.0, 0.5, customers), 0, 1)
    approved = rng.binomial(purchases, approve)
    defaults = rng.binomial(approved, risk)
    return [
        {"experiment_version": "2", "treatment_share": 0.5, "arm": arm, "applicants": int(k), "approved": int(a),
         "labelled": int(a), "defaults": int(d), "loss": float(d * amount)}
        for k, a, d in zip(purchases, approved, defaults, strict=True)
    ]  # fmt: skip


def test_a_stricter_arm_with_fewer_defaults_among_approved_but_equal_loss_per_applicant_does_not_win() -> None:
    # Control approves 90 % and 5 % of those default (loss 100 each): 4.5 per applicant. The stricter treatment
    # approves 75 %, 4 % of those default, at 150 each: also 4.5 per applicant — it only turned customers away.
    rng = np.random.default_rng(5)
    weeks = 100
    approved_only_wins = loss_differs = treatment_wins = 0
    for _ in range(weeks):
        control = _week(rng, arm="control", customers=5_000, approve=0.9, default=0.05, amount=100.0)
        treatment = _week(rng, arm="treatment", customers=5_000, approve=0.75, default=0.04, amount=150.0)
        result = arm_comparison(control + treatment)
        assert result is not None
        among_approved = two_proportion_test(
            successes_a=result.treatment.defaults,
            n_a=result.treatment.labelled,
            successes_b=result.control.defaults,
            n_b=result.control.labelled,
        )
        approved_only_wins += among_approved.difference < 0 and among_approved.p_value < 0.05
        loss_differs += result.loss_per_applicant.p_value < 0.05
        treatment_wins += result.treatment_better
    # Among the approved the stricter arm "wins" most weeks; per applicant it never does, and the loss test keeps
    # its 5 % level (customers clustered) within Monte Carlo error.
    assert approved_only_wins / weeks >= 0.7
    assert treatment_wins == 0
    assert loss_differs / weeks <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / weeks)


def test_an_arm_truly_better_per_applicant_wins() -> None:
    rng = np.random.default_rng(6)
    control = _week(rng, arm="control", customers=5_000, approve=0.9, default=0.05, amount=100.0)
    treatment = _week(rng, arm="treatment", customers=5_000, approve=0.9, default=0.03, amount=100.0)
    result = arm_comparison(control + treatment)
    assert result is not None and result.treatment_better
    assert result.loss_per_applicant.estimate == pytest.approx(
        result.treatment.loss_per_applicant - result.control.loss_per_applicant
    )
    assert result.loss_per_applicant.estimate == pytest.approx(-0.9 * 0.02 * 100, abs=0.8)


def test_the_clustered_standard_error_of_a_per_applicant_figure_matches_its_spread_over_weeks() -> None:
    # Heavy repeat customers with their own risk: the SE each week reports ≈ the estimates' spread across weeks.
    rng = np.random.default_rng(8)
    estimates, ses = [], []
    for _ in range(200):
        control = _week(rng, arm="control", customers=2_000, approve=0.9, default=0.05, amount=100.0)
        treatment = _week(rng, arm="treatment", customers=2_000, approve=0.9, default=0.05, amount=100.0)
        result = arm_comparison(control + treatment)
        assert result is not None
        estimates.append(result.defaults_per_applicant.estimate)
        ses.append(result.defaults_per_applicant.se)
    assert float(np.mean(ses)) == pytest.approx(float(np.std(estimates, ddof=1)), rel=0.15)


def test_periods_are_combined_with_fixed_weights() -> None:
    # Period 2 (share 10 %) and period 3 (share 50 %): the treatment is 0.01 defaults per applicant better in
    # period 2 and 0.03 in period 3; the combined difference weighs them by their applicants (1 : 3).
    rows: list[dict[str, Any]] = []
    for version, share, customers, better in (("2", 0.1, 1_000, 1), ("3", 0.5, 3_000, 3)):
        for i in range(customers):
            arm = "treatment" if i < customers * share else "control"
            percent = 5 - (better if arm == "treatment" else 0)  # defaults per 100 applicants
            defaults = int(i % 100 < percent)
            rows.append(
                {"experiment_version": version, "treatment_share": share, "arm": arm, "applicants": 1,
                 "approved": 1, "labelled": 1, "defaults": defaults, "loss": 100.0 * defaults}
            )  # fmt: skip
    result = arm_comparison(rows)
    assert result is not None and result.periods == 2
    assert result.defaults_per_applicant.estimate == pytest.approx(0.25 * -0.01 + 0.75 * -0.03, abs=1e-12)
