"""Discrimination and calibration metrics of a default-probability model."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from shadowgate.evaluation.performance import model_performance


@dataclass(frozen=True)
class BinaryMetrics:
    """Metrics of scores against observed defaults."""

    auc: float
    gini: float
    ks: float
    """Kolmogorov-Smirnov statistic: the largest gap between the score distributions of defaulters and payers
    (two-sided; see :mod:`shadowgate.evaluation.performance` for every definition)."""
    average_precision: float
    brier: float
    log_loss: float
    default_rate: float
    mean_score: float
    n: int
    n_defaults: int

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, float]) -> BinaryMetrics:
        """Inverse of :meth:`as_dict` (counts back to int)."""
        counts = {"n", "n_defaults"}
        floats = {k: float(values[k]) for k in cls.__dataclass_fields__ if k not in counts}
        return cls(**floats, n=int(values["n"]), n_defaults=int(values["n_defaults"]))


def binary_metrics(y_true: np.ndarray, scores: np.ndarray) -> BinaryMetrics:
    """Metrics of default probabilities ``scores`` against 0/1 outcomes ``y_true``.

    Raises:
        ValueError: when only one class is present (AUC is undefined).
    """
    y = np.asarray(y_true, dtype=np.int64)
    if len(y) == 0 or y.min() == y.max():
        raise ValueError("both outcomes (default and repaid) are needed to evaluate a model")
    m = model_performance(y, scores)
    return BinaryMetrics(
        auc=m.auc,
        gini=2.0 * m.auc - 1.0,
        ks=m.ks,
        average_precision=m.pr_auc,
        brier=m.brier,
        log_loss=m.log_loss,
        default_rate=m.observed_rate,
        mean_score=m.mean_score,
        n=m.n,
        n_defaults=m.n_positive,
    )
