"""Early performance estimates: the expected AUC equals the average AUC over labels drawn from the scores."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from shadowgate.evaluation.estimates import estimate, expected_auc


def _brute_force(s: np.ndarray, p: np.ndarray) -> float:
    num = den = 0.0
    for i in range(len(s)):
        for j in range(len(s)):
            if i == j:
                continue
            w = p[i] * (1 - p[j])
            den += w
            num += w * (1.0 if s[i] > s[j] else 0.5 if s[i] == s[j] else 0.0)
    return num / den


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.05, 0.1, 0.2, 0.5, 0.8]), st.floats(0.01, 0.99)), min_size=2, max_size=25))
def test_the_sorted_formula_equals_the_pairwise_definition_ties_included(rows: list[tuple[float, float]]) -> None:
    s = np.array([r[0] for r in rows])
    p = np.array([r[1] for r in rows])
    assert expected_auc(s, p) == pytest.approx(_brute_force(s, p), rel=1e-9, abs=1e-12)


def test_on_a_calibrated_model_the_estimate_matches_the_realised_figures() -> None:
    rng = np.random.default_rng(1)
    p = 1 / (1 + np.exp(-(-3.0 + 1.2 * rng.normal(size=100_000))))
    realised_auc, realised_rate = [], []
    for _ in range(40):
        y = rng.random(p.size) < p
        realised_auc.append(roc_auc_score(y, p))
        realised_rate.append(y.mean())
    est = estimate(p, draws=100, seed=3)
    assert est.auc == pytest.approx(np.mean(realised_auc), abs=0.002)
    assert est.default_rate == pytest.approx(np.mean(realised_rate), abs=0.0005)
    # The 95 % ranges hold the realised figures about 95 % of the time.
    inside = np.mean([est.auc_low <= a <= est.auc_high for a in realised_auc])
    assert inside >= 0.85
    assert est.default_rate_low < est.default_rate < est.default_rate_high


def test_a_subsample_for_the_ranges_keeps_their_width_for_the_full_size() -> None:
    rng = np.random.default_rng(2)
    p = 1 / (1 + np.exp(-(-3.0 + 1.2 * rng.normal(size=400_000))))
    full = estimate(p, draws=60, seed=1, max_rows=400_000)
    sub = estimate(p, draws=60, seed=1, max_rows=50_000)
    assert sub.auc == full.auc and sub.default_rate == full.default_rate  # points use every row
    assert (sub.auc_high - sub.auc_low) == pytest.approx(full.auc_high - full.auc_low, rel=0.35)


def test_empty_and_single_rows_give_no_auc() -> None:
    assert estimate(np.array([])).n == 0
    assert np.isnan(estimate(np.array([0.3])).auc)
