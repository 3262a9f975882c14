"""Discrimination and calibration metrics of a default-probability model."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score, roc_curve


@dataclass(frozen=True)
class BinaryMetrics:
    """Metrics of scores against observed defaults."""

    auc: float
    gini: float
    ks: float
    """Kolmogorov-Smirnov statistic: the largest gap between the score distributions of defaulters and payers."""
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
    p = np.asarray(scores, dtype=np.float64)
    if y.min() == y.max():
        raise ValueError("both outcomes (default and repaid) are needed to evaluate a model")
    auc = float(roc_auc_score(y, p))
    fpr, tpr, _ = roc_curve(y, p)
    return BinaryMetrics(
        auc=auc,
        gini=2.0 * auc - 1.0,
        ks=float(np.max(tpr - fpr)),
        average_precision=float(average_precision_score(y, p)),
        brier=float(brier_score_loss(y, p)),
        log_loss=float(log_loss(y, np.clip(p, 1e-12, 1 - 1e-12))),
        default_rate=float(y.mean()),
        mean_score=float(p.mean()),
        n=len(y),
        n_defaults=int(y.sum()),
    )
