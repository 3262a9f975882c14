"""Metrics against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shadowgate.evaluation.metrics import BinaryMetrics, binary_metrics


def test_hand_computed_example() -> None:
    # 2 defaults, 3 payers. Pairs (default, payer) ranked correctly: 0.9>all 3, 0.4>0.3 and 0.4>0.2 but 0.4<0.6
    # → 5 of 6 pairs → AUC 5/6.
    y = np.array([1, 1, 0, 0, 0])
    p = np.array([0.9, 0.4, 0.6, 0.3, 0.2])
    m = binary_metrics(y, p)
    assert m.auc == pytest.approx(5 / 6)
    assert m.gini == pytest.approx(2 / 3)
    # KS: the largest TPR−FPR over thresholds: at 0.4 → TPR 1, FPR 1/3 → 2/3.
    assert m.ks == pytest.approx(2 / 3)
    assert m.brier == pytest.approx(((0.1**2) + (0.6**2) + (0.6**2) + (0.3**2) + (0.2**2)) / 5)
    expected_log_loss = -(math.log(0.9) + math.log(0.4) + math.log(0.4) + math.log(0.7) + math.log(0.8)) / 5
    assert m.log_loss == pytest.approx(expected_log_loss)
    assert (m.n, m.n_defaults, m.default_rate) == (5, 2, 0.4)


def test_perfect_and_reversed_rankings() -> None:
    y = np.array([0, 0, 1, 1])
    assert binary_metrics(y, np.array([0.1, 0.2, 0.8, 0.9])).auc == 1.0
    assert binary_metrics(y, np.array([0.9, 0.8, 0.2, 0.1])).auc == 0.0


def test_single_class_is_an_error() -> None:
    with pytest.raises(ValueError, match="both outcomes"):
        binary_metrics(np.zeros(5), np.linspace(0, 1, 5))


def test_round_trip_through_a_dict() -> None:
    m = binary_metrics(np.array([1, 0, 0, 1]), np.array([0.7, 0.2, 0.4, 0.3]))
    assert BinaryMetrics.from_dict(m.as_dict()) == m
