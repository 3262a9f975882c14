"""Early performance estimates: what a model's own calibrated scores say its AUC and default rate on a day's
decisions will be, months before the labels can say it (confidence-based estimation, the idea of NannyML's CBPE).

If a model is calibrated on the population it scores, each decision defaults with probability ``p_i`` = its score.
Then:

* the **expected default rate** is ``mean(p)``;
* the **expected AUC** is the ratio of expected counts
  ``Σ_{i≠j} p_i (1 − p_j) [s_i > s_j] / (Σ_i p_i · Σ_j (1 − p_j) − Σ_i p_i (1 − p_i))``, where ties count ½;
* the **interval** is the 2.5–97.5 % range of the figure over labels drawn from those probabilities. It is the spread
  of the realised figure *if the model is right about itself*.

An estimate is not evidence. A model estimates itself from its own scores, so a model that is wrong in a way it
cannot see looks fine. A concept shift is exactly that: defaults rise where the features did not move, and the
estimate stays put. So an estimate never feeds the promotion gate. It is an early warning, shown beside the realised
figure once the labels mature, and the gap between the two is itself a signal. The estimation error on simulated
worlds is measured in ``tests/model/test_estimate_worlds.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Estimate:
    """One model's estimated figures on one population.

    Attributes:
        n: decisions estimated on.
        expected_defaults: ``Σ p``.
        default_rate / default_rate_low / default_rate_high: the expected rate and its 95 % range.
        auc / auc_low / auc_high: the expected AUC and its 95 % range (NaN on fewer than 2 rows).
    """

    n: int
    expected_defaults: float
    default_rate: float
    default_rate_low: float
    default_rate_high: float
    auc: float
    auc_low: float
    auc_high: float


def expected_auc(scores: np.ndarray, probabilities: np.ndarray | None = None) -> float:
    """The AUC expected when row ``i`` is a default with probability ``probabilities[i]`` (default: the score)."""
    s = np.asarray(scores, dtype=np.float64)
    p = s if probabilities is None else np.asarray(probabilities, dtype=np.float64)
    if len(s) < 2:
        return float("nan")
    order = np.argsort(s, kind="stable")
    s, p = s[order], p[order]
    q = 1.0 - p
    # Group tied scores: each row's negatives strictly below, plus half of its tie group's (itself excluded).
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    group = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(s)]))
    q_group = np.bincount(group, weights=q)
    below = np.r_[0.0, np.cumsum(q_group)[:-1]][group]
    tied = q_group[group] - q  # the tie group's other rows
    numerator = float(np.sum(p * (below + 0.5 * tied)))
    denominator = float(p.sum() * q.sum() - np.sum(p * q))
    return numerator / denominator if denominator > 0 else float("nan")


def _rank_auc(ranks: np.ndarray, y: np.ndarray) -> float:
    n1 = int(y.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def estimate(
    scores: np.ndarray, *, draws: int = 100, seed: int = 0, max_rows: int = 200_000, level: float = 0.95
) -> Estimate:
    """The expected default rate and AUC of a model on a population from its own scores, with 95 % ranges.

    Args:
        scores: the model's calibrated default probabilities on the population.
        draws: label draws for the ranges.
        seed: seed of the draws (a re-run gives the same ranges).
        max_rows: the draws use a seeded subsample of at most this many rows, for speed. Their ranges are then
            widened by ``sqrt(rows / max_rows)`` back to the full size; both figures' spreads shrink as
            ``1/sqrt(n)``. The point estimates always use every row.
        level: the ranges' coverage.
    """
    from scipy.stats import rankdata

    p = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    n = len(p)
    nan = float("nan")
    if n == 0:
        return Estimate(0, 0.0, nan, nan, nan, nan, nan, nan)
    rate = float(p.mean())
    auc = expected_auc(p)
    rng = np.random.default_rng(seed)
    sub = p if n <= max_rows else p[rng.choice(n, max_rows, replace=False)]
    widen = math.sqrt(len(sub) / n)
    ranks = rankdata(sub)
    rates, aucs = np.empty(draws), np.empty(draws)
    for k in range(draws):
        y = rng.random(len(sub)) < sub
        rates[k] = y.mean()
        aucs[k] = _rank_auc(ranks, y)
    tail = (1.0 - level) / 2.0
    sub_rate, sub_auc = float(sub.mean()), expected_auc(sub)

    def spread(values: np.ndarray, centre: float, sub_centre: float) -> tuple[float, float]:
        finite = values[~np.isnan(values)]
        if len(finite) < 2 or math.isnan(centre):
            return nan, nan
        lo, hi = np.quantile(finite, [tail, 1.0 - tail])
        return centre - (sub_centre - lo) * widen, centre + (hi - sub_centre) * widen

    rate_lo, rate_hi = spread(rates, rate, sub_rate)
    auc_lo, auc_hi = spread(aucs, auc, sub_auc)
    return Estimate(
        n=n,
        expected_defaults=float(p.sum()),
        default_rate=rate,
        default_rate_low=max(0.0, rate_lo),
        default_rate_high=min(1.0, rate_hi),
        auc=auc,
        auc_low=auc_lo,
        auc_high=auc_hi,
    )
