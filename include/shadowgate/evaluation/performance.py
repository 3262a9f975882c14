"""Performance of default-probability models on one population: discrimination, calibration, policy outcomes, segments.

Everything here is pure: arrays or a DataFrame in, frozen results out. The weekly evaluation calls these on the
*approved and matured* decisions of a cohort week — every model on the identical requests — so the figures describe
how each model would have ranked, calibrated and re-decided customers the lender already approved, not the full
applicant pool (denied applicants have no outcome). Each result names the population it was computed on.

Definitions used throughout:

* **AUC** — area under the ROC curve, equal to the Mann-Whitney statistic ``P(score_default > score_repaid)`` with
  ties counted one half; **its standard error** is DeLong's (the variance of the structural components, as
  :func:`~shadowgate.evaluation.stats.delong_covariance`), computed from the same sort.
* **PR-AUC** — average precision, ``Σ (R_k − R_{k−1}) · P_k`` over distinct thresholds (sklearn's definition, no
  interpolation).
* **KS** — the two-sample Kolmogorov-Smirnov statistic of the two classes' score distributions,
  ``max_t |F_default(t) − F_repaid(t)|`` (two-sided, as ``scipy.stats.ks_2samp``); AUC gives the direction.
* **Brier** — ``mean((p − y)²)``; **log loss** — ``−mean(y·ln p + (1−y)·ln(1−p))`` with ``p`` clipped to
  ``[1e-12, 1 − 1e-12]``.
* **ECE and the reliability curve** share one binning: **equal-mass** bins on the model's own score ranks. PDs of a
  BNPL book sit mostly below 0.1, so equal-width bins on [0, 1] would put nearly every request in the first bin and say
  nothing about calibration where the book actually is; equal-mass bins hold ≈ n / n_bins requests each, so every point
  of the curve has a similar standard error. A request with score rank ``r`` (0-based position of the first request
  with the same score in ascending order) goes to bin ``⌊r · n_bins / n⌋``: tied scores always share a bin, so the
  result does not depend on the order of the input, and a bin may hold more or fewer than n / n_bins (or vanish) when
  ties straddle a boundary. ``ECE = Σ_b (n_b / n) · |mean_p_b − observed_rate_b| = Σ_b |Σp_b − Σy_b| / n``.

Discrimination metrics need both classes: with one class present AUC and KS are NaN (and PR-AUC too when there is
no default) — ``n_positive`` of 0 or ``n`` says why. Nothing here raises for a one-class population.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from shadowgate.decisioning.policies import Thresholds

LOG_LOSS_EPS = 1e-12
"""Probabilities are clipped to [eps, 1 − eps] before the log loss (a PD of exactly 0 or 1 would cost infinity)."""
POOLED = "(pooled)"
"""``segment`` of the pooled rows of :func:`segment_table` (their ``value`` is ``ALL``)."""
ALL = "(all)"
_MISSING = object()
ROC_POINTS = 400
"""At most this many points of each ROC curve are kept for plotting (AUC and KS use the full curve)."""
HISTOGRAM_BINS = 100
"""Equal-width bins on [0, 1] of the per-class score histograms."""


@dataclass(frozen=True)
class ReliabilityCurve:
    """Equal-mass calibration bins (see the module docstring); empty bins are left out.

    Attributes:
        mean_predicted: mean score of each bin, ascending.
        observed_rate: share of defaults in each bin.
        count: requests in each bin (they sum to ``n``).
    """

    mean_predicted: tuple[float, ...]
    observed_rate: tuple[float, ...]
    count: tuple[int, ...]


@dataclass(frozen=True)
class RocCurve:
    """ROC points ``(fpr, tpr)`` from (0, 0) to (1, 1), thinned to at most :data:`ROC_POINTS` evenly spaced along the
    curve (empty when one class is missing)."""

    fpr: tuple[float, ...]
    tpr: tuple[float, ...]


@dataclass(frozen=True)
class ScoreHistogram:
    """Score counts per class on :data:`HISTOGRAM_BINS` equal-width bins; ``edges`` has one more entry than counts."""

    edges: tuple[float, ...]
    count_default: tuple[int, ...]
    count_repaid: tuple[int, ...]


@dataclass(frozen=True)
class ModelPerformance:
    """One model's scores against observed defaults on one population (definitions: module docstring).

    Attributes:
        n: requests in the population.
        n_positive: defaults among them.
        observed_rate: ``n_positive / n``.
        mean_score: mean PD; against ``observed_rate`` it is the calibration-in-the-large.
        auc: NaN when one class is missing.
        auc_se: DeLong's standard error of ``auc`` (NaN with fewer than two rows of a class).
        pr_auc: average precision; NaN when there is no default.
        ks: NaN when one class is missing.
        brier: mean squared error of the PD.
        log_loss: on clipped probabilities.
        ece: expected calibration error on ``n_bins`` equal-mass bins.
        n_bins: the number of calibration bins asked for.
        reliability: the calibration bins the ECE was computed on.
        roc: thinned ROC curve, for plots.
        score_histogram: per-class score counts, for plots.
    """

    n: int
    n_positive: int
    observed_rate: float
    mean_score: float
    auc: float
    auc_se: float
    pr_auc: float
    ks: float
    brier: float
    log_loss: float
    ece: float
    n_bins: int
    reliability: ReliabilityCurve
    roc: RocCurve
    score_histogram: ScoreHistogram

    def scalars(self) -> dict[str, float]:
        """The scalar figures by name (for MLflow metrics and tables); counts as floats."""
        return {
            f.name: float(getattr(self, f.name))
            for f in fields(self)
            if not isinstance(getattr(self, f.name), ReliabilityCurve | RocCurve | ScoreHistogram)
        }


def _labels(y_true: npt.ArrayLike) -> np.ndarray:
    """0/1 outcomes as float64, checked."""
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError(f"y_true must be 1-d, got shape {y.shape}")
    if len(y) == 0:
        raise ValueError("no rows to evaluate")
    y = y.astype(np.float64)
    if not np.all((y == 0.0) | (y == 1.0)):
        raise ValueError("y_true must hold only 0/1 (repaid/defaulted)")
    return y


def _probabilities(scores: npt.ArrayLike, n: int) -> np.ndarray:
    """``n`` PDs as float64, checked to be probabilities."""
    p = np.asarray(scores, dtype=np.float64)
    if p.shape != (n,):
        raise ValueError(f"scores must be 1-d with one entry per outcome ({n}), got shape {p.shape}")
    # The comparison is False for NaN too.
    bad = int(np.count_nonzero(~((p >= 0.0) & (p <= 1.0))))
    if bad:
        raise ValueError(f"{bad} scores are not probabilities in [0, 1] (NaN or out of range)")
    return p


def _validated(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y = _labels(y_true)
    return y, _probabilities(scores, len(y))


@dataclass(frozen=True)
class _Ranked:
    """One sort of the scores and the cumulative counts at each distinct threshold (descending)."""

    tps: np.ndarray
    """Defaults with score >= each distinct threshold, thresholds descending."""
    fps: np.ndarray
    """Repaid requests with score >= each distinct threshold."""
    p_asc: np.ndarray
    y_asc: np.ndarray
    run_starts: np.ndarray
    """Ascending position of the first request of each run of equal scores."""

    @property
    def first_rank_asc(self) -> np.ndarray:
        """Ascending position of the first request with the same score, per request in ascending order."""
        return np.repeat(self.run_starts, np.diff(np.append(self.run_starts, len(self.p_asc))))


def _rank(y: np.ndarray, p: np.ndarray, order: np.ndarray | None = None) -> _Ranked:
    # Ties are aggregated at run ends below, so an unstable (much faster) sort is enough.
    if order is None:
        order = np.argsort(p)
    return _ranked(p[order], y[order])


def _ranked(p_asc: np.ndarray, y_asc: np.ndarray) -> _Ranked:
    """Ranking statistics of rows already in ascending score order."""
    n = len(p_asc)
    new_value = np.empty(n, dtype=bool)
    new_value[0] = True
    np.not_equal(p_asc[1:], p_asc[:-1], out=new_value[1:])
    starts = np.flatnonzero(new_value)
    # Descending thresholds: the requests at or above the k-th largest distinct score are the tail from its run start.
    cum_pos_desc = np.cumsum(y_asc[::-1])
    run_ends_desc = (n - 1 - starts)[::-1]  # last descending index of each run, largest score first
    tps = cum_pos_desc[run_ends_desc]
    fps = (run_ends_desc + 1) - tps
    return _Ranked(tps=tps, fps=fps, p_asc=p_asc, y_asc=y_asc, run_starts=starts)


def _roc(r: _Ranked) -> tuple[np.ndarray, np.ndarray]:
    """Full ROC curve with (0, 0) prepended; assumes both classes are present."""
    fpr = np.concatenate(([0.0], r.fps / r.fps[-1]))
    tpr = np.concatenate(([0.0], r.tps / r.tps[-1]))
    return fpr, tpr


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    """Mann-Whitney AUC (ties one half), NaN for one class."""
    order = np.argsort(p)
    return _auc_sorted(y[order], p[order])


def _auc_sorted(y_asc: np.ndarray, p_asc: np.ndarray) -> float:
    """:func:`_auc` of rows already in ascending score order."""
    n_pos = float(y_asc.sum())
    if n_pos == 0 or n_pos == len(y_asc):
        return float("nan")
    fpr, tpr = _roc(_ranked(p_asc, y_asc))
    return float(np.trapezoid(tpr, fpr))


def _auc_se(r: _Ranked) -> float:
    """DeLong's standard error of the AUC from one sort: per distinct score, the structural components of its
    defaults (the share of repaid rows below, ties one half) and of its repaid rows (the share of defaults above)."""
    pos_in = np.diff(r.tps, prepend=0)
    neg_in = np.diff(r.fps, prepend=0)
    n_pos, n_neg = int(r.tps[-1]), int(r.fps[-1])
    if min(n_pos, n_neg) < 2:
        return float("nan")
    v10 = (n_neg - r.fps + 0.5 * neg_in) / n_neg
    v01 = (r.tps - pos_in + 0.5 * pos_in) / n_pos
    auc = float(np.dot(pos_in, v10) / n_pos)
    s10 = float(np.dot(pos_in, (v10 - auc) ** 2) / (n_pos - 1))
    s01 = float(np.dot(neg_in, (v01 - auc) ** 2) / (n_neg - 1))
    return math.sqrt(s10 / n_pos + s01 / n_neg)


def _thin(fpr: np.ndarray, tpr: np.ndarray, points: int) -> RocCurve:
    if len(fpr) > points:
        # Evenly spaced in L1 arc length (fpr + tpr runs monotonically from 0 to 2), both ends kept.
        arc = fpr + tpr
        keep = np.unique(np.searchsorted(arc, np.linspace(0.0, 2.0, points), side="left").clip(0, len(arc) - 1))
        keep = np.union1d(keep, [0, len(arc) - 1])
        fpr, tpr = fpr[keep], tpr[keep]
    return RocCurve(fpr=tuple(fpr.tolist()), tpr=tuple(tpr.tolist()))


def _reliability(r: _Ranked, n_bins: int) -> tuple[ReliabilityCurve, float]:
    n = len(r.p_asc)
    bins = r.first_rank_asc * n_bins // n
    count = np.bincount(bins, minlength=n_bins)
    sum_p = np.bincount(bins, weights=r.p_asc, minlength=n_bins)
    sum_y = np.bincount(bins, weights=r.y_asc, minlength=n_bins)
    used = count > 0
    count, sum_p, sum_y = count[used], sum_p[used], sum_y[used]
    ece = float(np.abs(sum_p - sum_y).sum() / n)
    curve = ReliabilityCurve(
        mean_predicted=tuple((sum_p / count).tolist()),
        observed_rate=tuple((sum_y / count).tolist()),
        count=tuple(int(c) for c in count),
    )
    return curve, ece


def model_performance(
    y_true: npt.ArrayLike, scores: npt.ArrayLike, *, n_bins: int = 10, ascending: np.ndarray | None = None
) -> ModelPerformance:
    """Discrimination and calibration of PDs ``scores`` against 0/1 defaults ``y_true`` (one sort of the scores).

    Args:
        y_true: 1 = defaulted, 0 = repaid (bool or numeric).
        scores: probabilities of default in [0, 1].
        n_bins: equal-mass calibration bins for the ECE and the reliability curve.
        ascending: ``np.argsort(scores)`` when the caller has it already (any order of tied scores), else None.

    Raises:
        ValueError: for empty or mismatched input, labels other than 0/1, or scores that are not probabilities.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    y, p = _validated(y_true, scores)
    n = len(y)
    n_pos = int(y.sum())
    r = _rank(y, p, ascending)
    reliability, ece = _reliability(r, n_bins)
    nan = float("nan")
    auc = auc_se = ks = pr_auc = nan
    roc = RocCurve(fpr=(), tpr=())
    if 0 < n_pos < n:
        fpr, tpr = _roc(r)
        auc = float(np.trapezoid(tpr, fpr))
        auc_se = _auc_se(r)
        ks = float(np.max(np.abs(tpr - fpr)))
        roc = _thin(fpr, tpr, ROC_POINTS)
    if n_pos > 0:
        precision = r.tps / (r.tps + r.fps)
        recall = r.tps / n_pos
        pr_auc = float(np.sum(np.diff(recall, prepend=0.0) * precision))
    clipped = np.clip(p, LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS)
    log_loss = float(-np.mean(y * np.log(clipped) + (1.0 - y) * np.log1p(-clipped)))
    edges = np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1)
    defaulted = y == 1.0
    count_default, _ = np.histogram(p[defaulted], bins=edges)
    count_repaid, _ = np.histogram(p[~defaulted], bins=edges)
    return ModelPerformance(
        n=n,
        n_positive=n_pos,
        observed_rate=n_pos / n,
        mean_score=float(p.mean()),
        auc=auc,
        auc_se=auc_se,
        pr_auc=pr_auc,
        ks=ks,
        brier=float(np.mean((p - y) ** 2)),
        log_loss=log_loss,
        ece=ece,
        n_bins=n_bins,
        reliability=reliability,
        roc=roc,
        score_histogram=ScoreHistogram(
            edges=tuple(edges.tolist()),
            count_default=tuple(int(c) for c in count_default),
            count_repaid=tuple(int(c) for c in count_repaid),
        ),
    )


# --- policy outcomes ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyOutcome:
    """What a model's scores would decide under a policy's cut-offs, and what came of it, on the population given.

    The population is every row passed to :func:`policy_outcomes` — in the weekly evaluation the *approved and
    matured* decisions of the cohort, so these figures describe each model's **re-decision of customers the lender
    already approved** (denied applicants have no outcome), not its decisions on the full applicant pool. Only the
    base ``high`` / ``medium`` cut-offs on the score apply: segment overrides and business rules are not replayed.
    Rates are ``NaN`` when their denominator is 0.

    Attributes:
        high: deny at ``PD >= high``.
        medium: manual review at ``medium <= PD < high``; approve below.
        lgd: loss given default applied to both losses.
        n: population — every row given.
        n_defaults: defaults in the population.
        n_approved: population rows this model approves (``PD < medium``).
        n_manual_review: population rows it refers.
        n_denied: population rows it denies.
        approval_rate: ``n_approved / n`` (share of the population).
        manual_review_rate: ``n_manual_review / n``.
        deny_rate: ``n_denied / n``.
        n_defaults_approved: defaults among the rows this model approves.
        n_defaults_manual_review: defaults among the rows it refers.
        n_defaults_denied: defaults among the rows it denies (defaults it would have avoided).
        default_rate_approved: ``n_defaults_approved / n_approved`` (among the rows this model approves).
        exposure_approved: ``Σ amount`` over the rows this model approves.
        expected_loss_approved: ``Σ amount × PD × lgd`` over the rows this model approves.
        realised_loss_approved: ``Σ amount × defaulted × lgd`` over the rows this model approves (with the default
            ``lgd = 1`` the defaulted amount).
        amounts_given: False when no amounts were passed: every amount counts as 1, so exposure is the approved
            count, expected loss the expected number of defaults and realised loss the number of defaults (× lgd).
    """

    high: float
    medium: float
    lgd: float
    n: int
    n_defaults: int
    n_approved: int
    n_manual_review: int
    n_denied: int
    approval_rate: float
    manual_review_rate: float
    deny_rate: float
    n_defaults_approved: int
    n_defaults_manual_review: int
    n_defaults_denied: int
    default_rate_approved: float
    exposure_approved: float
    expected_loss_approved: float
    realised_loss_approved: float
    amounts_given: bool

    def figures(self) -> list[tuple[str, float, str]]:
        """``(figure, value, population it is computed on)`` for every figure, for reports."""
        population = "all rows given"
        approved = "rows this model approves"
        return [
            ("n", self.n, population),
            ("n_defaults", self.n_defaults, population),
            ("n_approved", self.n_approved, population),
            ("n_manual_review", self.n_manual_review, population),
            ("n_denied", self.n_denied, population),
            ("approval_rate", self.approval_rate, population),
            ("manual_review_rate", self.manual_review_rate, population),
            ("deny_rate", self.deny_rate, population),
            ("n_defaults_approved", self.n_defaults_approved, approved),
            ("n_defaults_manual_review", self.n_defaults_manual_review, "rows this model refers"),
            ("n_defaults_denied", self.n_defaults_denied, "rows this model denies"),
            ("default_rate_approved", self.default_rate_approved, approved),
            ("exposure_approved", self.exposure_approved, approved),
            ("expected_loss_approved", self.expected_loss_approved, approved),
            ("realised_loss_approved", self.realised_loss_approved, approved),
        ]


def _rate(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("nan")


def policy_outcomes(
    scores: npt.ArrayLike,
    y_true: npt.ArrayLike,
    *,
    thresholds: Thresholds,
    amounts: npt.ArrayLike | None = None,
    lgd: float = 1.0,
) -> PolicyOutcome:
    """Decisions of ``scores`` under ``thresholds`` and their outcomes on the rows given (see :class:`PolicyOutcome`).

    Args:
        scores: PDs in [0, 1].
        y_true: 1 = defaulted, 0 = repaid.
        thresholds: the policy's cut-offs (``policy.thresholds``); the boundaries match :func:`decide`
            (``PD >= high`` → deny, ``PD >= medium`` → manual review).
        amounts: exposure per row (the purchase amount), finite and >= 0; None counts every row as 1.
        lgd: loss given default in [0, 1].

    Raises:
        ValueError: for invalid scores, labels, amounts or lgd.
    """
    if not 0.0 <= lgd <= 1.0:
        raise ValueError(f"lgd must be in [0, 1], got {lgd}")
    y, p = _validated(y_true, scores)
    if amounts is None:
        a = np.ones_like(p)
    else:
        a = np.asarray(amounts, dtype=np.float64)
        if a.shape != p.shape:
            raise ValueError(f"amounts must have the shape of scores {p.shape}, got {a.shape}")
        if not np.all(np.isfinite(a) & (a >= 0.0)):
            raise ValueError("amounts must be finite and >= 0")
    denied = p >= thresholds.high
    review = ~denied & (p >= thresholds.medium)
    approved = ~denied & ~review
    n = len(p)
    n_approved = int(approved.sum())
    n_review = int(review.sum())
    n_denied = int(denied.sum())
    defaults_approved = int(y[approved].sum())
    return PolicyOutcome(
        high=thresholds.high,
        medium=thresholds.medium,
        lgd=lgd,
        n=n,
        n_defaults=int(y.sum()),
        n_approved=n_approved,
        n_manual_review=n_review,
        n_denied=n_denied,
        approval_rate=n_approved / n,
        manual_review_rate=n_review / n,
        deny_rate=n_denied / n,
        n_defaults_approved=defaults_approved,
        n_defaults_manual_review=int(y[review].sum()),
        n_defaults_denied=int(y[denied].sum()),
        default_rate_approved=_rate(defaults_approved, n_approved),
        exposure_approved=float(a[approved].sum()),
        expected_loss_approved=float((a * p)[approved].sum() * lgd),
        realised_loss_approved=float((a * y)[approved].sum() * lgd),
        amounts_given=amounts is not None,
    )


# --- segments -----------------------------------------------------------------------------------------------------

SEGMENT_COLUMNS = ("segment", "value", "model", "n", "n_positive", "default_rate", "mean_score", "auc")


def segment_table(
    frame: pd.DataFrame,
    *,
    label_col: str,
    score_cols: Mapping[str, str],
    segment_cols: Sequence[str],
    ascending: Mapping[str, np.ndarray] | None = None,
) -> pd.DataFrame:
    """Per model: n, defaults, default rate, mean score and AUC pooled and in every value of every segment column.

    Args:
        frame: one row per request, every model's score in its own column (identical requests for all models).
        label_col: 0/1 defaults.
        score_cols: model name → score column.
        segment_cols: columns to split by; a missing value is a segment of its own (``value`` None), so the ``n`` of
            a column's segments always add up to the pooled ``n``.
        ascending: model → ``np.argsort`` of its scores when the caller has them already, else None.

    Returns:
        Long format with columns :data:`SEGMENT_COLUMNS`: first the pooled rows (``segment`` = :data:`POOLED`,
        ``value`` = :data:`ALL`), then each segment column in the order given, values sorted, missing last; within
        a segment one row per model in the order of ``score_cols``. ``auc`` is NaN in a one-class segment.

    Raises:
        ValueError: for an invalid label or score column (as :func:`model_performance`).
    """
    y = _labels(frame[label_col].to_numpy())
    scores = {model: _probabilities(frame[col].to_numpy(), len(y)) for model, col in score_cols.items()}
    # One sort per model: a segment's rows in ascending score order are the pooled order filtered to the segment,
    # and a stable sort of the segment codes in that order groups them without breaking it.
    given = ascending or {}
    ascending = {model: given[model] if model in given else np.argsort(p) for model, p in scores.items()}
    rows: list[tuple[Any, ...]] = []

    def add(segment: str, value: Any, model: str, ys: np.ndarray, ps: np.ndarray) -> None:
        n_pos = int(ys.sum())
        rows.append((segment, value, model, len(ys), n_pos, n_pos / len(ys), float(ps.mean()), _auc_sorted(ys, ps)))

    in_order = {model: (y[order], scores[model][order]) for model, order in ascending.items()}
    for model, (ys, ps) in in_order.items():
        add(POOLED, ALL, model, ys, ps)
    for col in segment_cols:
        column = frame[col]
        if isinstance(column.dtype, pd.CategoricalDtype):  # its categories come in order of appearance
            column = column.cat.reorder_categories(sorted(column.cat.categories))
        codes, values = pd.factorize(column, sort=True, use_na_sentinel=True)
        # Missing values: a segment of their own, listed last. Small integer codes: numpy's stable sort of 8- and
        # 16-bit integers is a radix sort, many times faster than its merge sort of 64-bit ones.
        codes = np.where(codes < 0, len(values), codes).astype(np.int16 if len(values) < 2**15 - 1 else np.int64)
        labels = [*values, None]
        per_model = {}
        for model, order in ascending.items():
            grouped = np.argsort(codes[order], kind="stable")  # increasing within a segment: a streaming gather
            ys, ps = in_order[model]
            per_model[model] = (ys[grouped], ps[grouped])
        bounds = np.concatenate(([0], np.cumsum(np.bincount(codes, minlength=len(labels)))))
        for code, value in enumerate(labels):
            start, stop = int(bounds[code]), int(bounds[code + 1])
            if start == stop:
                continue
            for model, (ys, ps) in per_model.items():
                add(col, value, model, ys[start:stop], ps[start:stop])
    table = pd.DataFrame(rows, columns=list(SEGMENT_COLUMNS))
    return table.astype({"n": "int64", "n_positive": "int64"})


@dataclass(frozen=True)
class SimpsonsReversal:
    """Model ``winner_pooled`` has the higher pooled AUC but the lower AUC in every segment of ``segment``.

    Attributes:
        segment: the segment column.
        winner_pooled: the model with the higher pooled AUC (the other one wins every segment compared).
        auc_pooled: ``(auc of model_a, auc of model_b)`` pooled.
        values: the segment values compared (both AUCs defined).
        auc_by_value: ``(auc of model_a, auc of model_b)`` per entry of ``values``.
        values_undefined: segment values left out because an AUC is undefined there (one class).

    A missing segment value appears as None in ``values`` and ``values_undefined``.
    """

    segment: str
    model_a: str
    model_b: str
    winner_pooled: str
    auc_pooled: tuple[float, float]
    values: tuple[Any, ...]
    auc_by_value: tuple[tuple[float, float], ...]
    values_undefined: tuple[Any, ...]


def simpsons_reversals(table: pd.DataFrame, model_a: str, model_b: str) -> tuple[SimpsonsReversal, ...]:
    """Segment columns in which the pooled AUC comparison of two models reverses in every segment (Simpson's paradox).

    A segment column is flagged when A's pooled AUC is strictly higher than B's and A's is strictly lower in every
    one of at least two segments where both are defined (or the same with A and B swapped). Segments with an
    undefined AUC are left out of the comparison and listed in the result.

    Args:
        table: the output of :func:`segment_table`.
        model_a: a model name in ``table``.
        model_b: another.

    Raises:
        ValueError: when a model is missing from ``table``.
    """
    missing = {model_a, model_b} - set(table["model"])
    if missing:
        raise ValueError(f"models not in the segment table: {sorted(missing)}")
    # (segment, value) → {model: auc}, in table order; a missing segment value (NaN) is one key of its own.
    cells: dict[tuple[str, Any], dict[str, float]] = {}
    for segment, value, model, auc in table[["segment", "value", "model", "auc"]].itertuples(index=False):
        key = (segment, _MISSING if pd.isna(value) else value)
        cells.setdefault(key, {})[model] = float(auc)
    pooled_cell = cells[POOLED, ALL]
    pooled = (pooled_cell[model_a], pooled_cell[model_b])
    if np.isnan(pooled).any() or pooled[0] == pooled[1]:
        return ()
    sign = 1.0 if pooled[0] > pooled[1] else -1.0
    by_segment: dict[str, list[tuple[Any, tuple[float, float]]]] = {}
    for (segment, value), aucs in cells.items():
        if segment != POOLED:
            value = None if value is _MISSING else value
            by_segment.setdefault(segment, []).append((value, (aucs[model_a], aucs[model_b])))
    found = []
    for segment, entries in by_segment.items():
        compared = [(value, pair) for value, pair in entries if not np.isnan(pair).any()]
        if len(compared) >= 2 and all(sign * (a - b) < 0 for _, (a, b) in compared):
            found.append(
                SimpsonsReversal(
                    segment=segment,
                    model_a=model_a,
                    model_b=model_b,
                    winner_pooled=model_a if sign > 0 else model_b,
                    auc_pooled=pooled,
                    values=tuple(value for value, _ in compared),
                    auc_by_value=tuple(pair for _, pair in compared),
                    values_undefined=tuple(value for value, pair in entries if np.isnan(pair).any()),
                )
            )
    return tuple(found)
