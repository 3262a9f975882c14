"""Weekly performance: every model on the identical matured requests of a cohort week, with paired statistics.

Shadow mode pays off here. Every challenger scored the very requests the champion decided, so once a cohort week's
labels have matured (``join_ground_truth``) the models are compared pair by pair on the same rows:

* **which week, which label** (:func:`cohort_weeks`): a run as of instant *T* evaluates, for each label, the last
  Monday-to-Monday week of purchases whose label had matured for every purchase by *T* — the week ending on or before
  *T* − 17 days for the early label, *T* − 90 days for the final one. Each (week, label) is thus evaluated by exactly
  one weekly run, at its maturity, and a backfill of that run gives the same figures (labels are point in time);
* **the population**: decisions the champion approved whose label has matured — the only ones with an outcome.
  Denied applicants never got the credit. Every figure names it (``approved_matured``), and the policy figures name the
  sub-population they count (e.g. the rows a model would approve again);
* **per model**: AUC, PR-AUC, KS, Brier, log loss, calibration (ECE, reliability curve), mean score and default rate;
  at each decision policy's thresholds the approval rate, default rate among approved and expected/realised loss; the
  same by segment (new/returning customer, merchant category, amount band, channel), with Simpson's reversals flagged;
* **per comparison** (champion vs each challenger: an A/B experiment of the book, or one made up for a challenger no
  experiment names): DeLong's paired AUC test, McNemar on the approve/decline decisions at the policy threshold, a
  paired bootstrap CI of the Brier difference, Holm across the week's comparisons, the sample-ratio check of a
  canary's arms, and the look of the comparison's recorded plan (:mod:`shadowgate.evaluation.sequential`: the weekly
  DeLong differences combined by inverse variance, tested against the margin with efficacy and non-binding futility
  boundaries at the information gathered, until a verdict ends the plan);
* **outputs**: ``model_metrics`` rows (MERGEd on a deterministic id: a re-run replaces, never duplicates), one MLflow
  experiment per A/B experiment with one run per model and one comparison run per (week, label) holding the HTML
  report and the charts, and alerts recorded in the ``alerts`` table and sent once per condition
  (:mod:`shadowgate.pipelines.alerts`): a model's AUC, or its defaults against its predictions, moved beyond its own
  first evaluated weeks (:mod:`shadowgate.evaluation.monitoring`: like with like, never the validation AUC on all
  applicants; the final label an error, the early label a warning); a comparison's verdict, once;
  a canary's sample-ratio mismatch;
* **selection**: every weekly figure is computed on the approved share of the week's applicants; the week's approval
  rate and denied count (every decision in ``prediction_logs``) are written next to each model's and comparison's
  figures (``cohort_*`` rows of population ``all_decisions``, MLflow metrics, the report).

Joins and aggregations run in the warehouse (``queries/weekly_cohort.sql`` …); Python pulls one row per matured
decision with its scores, which is what the paired statistics need.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import logging
import math
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from shadowgate.config import EvaluationSettings
from shadowgate.evaluation.canary import arm_comparison, canary_srm
from shadowgate.evaluation.monitoring import Baseline, ChangeTest, WeekFigures, auc_drop, baseline, default_rise
from shadowgate.evaluation.performance import (
    POOLED,
    ModelPerformance,
    PolicyOutcome,
    model_performance,
    policy_outcomes,
    segment_table,
    simpsons_reversals,
)
from shadowgate.evaluation.sequential import Look, SequentialPlan, design_plan, monitoring_look, run_looks, usable
from shadowgate.evaluation.stats import (
    delong_test,
    holm,
    mcnemar_test,
    paired_bootstrap_ci,
)
from shadowgate.pipelines.alerts import Alert, Check, record_alerts, send_alert
from shadowgate.storage.results import ResultsStore, RunRecord
from shadowgate.storage.warehouse import COMPARISON_PLANS, MODEL_METRICS, Warehouse, arrow_schema

if TYPE_CHECKING:
    from shadowgate.decisioning.policies import Thresholds

logger = logging.getLogger(__name__)

Label = Literal["early", "final"]
LABELS: tuple[Label, ...] = ("early", "final")
POPULATION = "approved_matured"
"""Rows every per-model figure covers: decisions the serving policy approved whose label has matured."""
SEGMENT_COLUMNS = ("customer_type", "merchant_category", "amount_band", "channel")
CHAMPION = "champion"
MLFLOW_EXPERIMENT_PREFIX = "shadowgate/"
"""The MLflow experiment of A/B experiment ``x`` is ``shadowgate/x``."""
EVERY_EXPERIMENT = "*"
"""``model_metrics.experiment_id`` of a model's own figures, shared by every experiment comparing it (not a slug, so
no experiment of the book can be called that)."""


# ------------------------------------------------------------------------------------------------ plan and weeks


@dataclass(frozen=True)
class ComparisonPlan:
    """One A/B experiment as the evaluation needs it: which two aliases, how the traffic was split, since when."""

    experiment_id: str
    treatment_alias: str
    control_alias: str = CHAMPION
    mode: str = "shadow"
    """``shadow`` (control serves everyone, treatment scores in the background) or ``canary`` (split traffic)."""
    treatment_share: float = 0.0
    started_at: dt.datetime | None = None
    """First purchase instant the comparison's sequential plan counts from (None: the first cohort evaluated)."""
    success_metric: str = "auc"
    description: str = ""


@dataclass(frozen=True)
class EvaluationPlan:
    """What a weekly run needs to know: when labels mature and the evaluation settings."""

    settings: EvaluationSettings
    early_maturity_days: int
    maturity_days: int


@dataclass(frozen=True)
class CohortWeek:
    """The purchases of [start, end) by ``event_timestamp``, for one label, as known at ``as_of``."""

    start: dt.date
    end: dt.date
    label: Label
    as_of: dt.datetime

    @property
    def name(self) -> str:
        iso = self.start.isocalendar()
        return f"{iso.year}-W{iso.week:02d}"

    def params(self) -> dict[str, Any]:
        return {
            "cohort_start": _midnight(self.start),
            "cohort_end": _midnight(self.end),
            "label": self.label,
            "as_of": self.as_of,
        }


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def _utc(instant: dt.datetime) -> dt.datetime:
    if instant.tzinfo is None:
        raise ValueError(f"as_of must be timezone-aware, got {instant!r}")
    # A plain datetime (Airflow passes pendulum's subclass), in UTC.
    i = instant.astimezone(dt.UTC)
    return dt.datetime(i.year, i.month, i.day, i.hour, i.minute, i.second, i.microsecond, tzinfo=dt.UTC)


def cohort_weeks(as_of: dt.datetime, *, plan: EvaluationPlan, labels: Iterable[Label] = LABELS) -> list[CohortWeek]:
    """The (week, label) pairs a run as of ``as_of`` evaluates: per label, the last Monday-to-Monday week every
    purchase of which had its label matured by ``as_of``."""
    as_of = _utc(as_of)
    out = []
    for label in labels:
        days = plan.early_maturity_days if label == "early" else plan.maturity_days
        latest = (as_of - dt.timedelta(days=days)).date()
        end = latest - dt.timedelta(days=latest.weekday())
        out.append(CohortWeek(start=end - dt.timedelta(days=7), end=end, label=label, as_of=as_of))
    return out


def cohort_week(start: dt.date, label: Label, *, as_of: dt.datetime) -> CohortWeek:
    """An explicit week (a Monday) for one label, as known at ``as_of`` (an operator's re-evaluation)."""
    if start.weekday() != 0:
        raise ValueError(f"a cohort week starts on a Monday, {start} is a {start:%A}")
    return CohortWeek(start=start, end=start + dt.timedelta(days=7), label=label, as_of=_utc(as_of))


# ------------------------------------------------------------------------------------------------ the cohort


@dataclass(frozen=True)
class ModelKey:
    alias: str
    version: str

    @property
    def name(self) -> str:
        return f"{self.alias}@{self.version}"


@dataclass(frozen=True)
class Cohort:
    """The matured rows of one cohort week: labels, each evaluated model's scores (every model scored every row)."""

    week: CohortWeek
    y: np.ndarray
    scores: dict[ModelKey, np.ndarray]
    frame: pd.DataFrame
    """Per row: policy_name, experiment_id, arm, amount and the segment columns."""
    rows_total: int
    """Matured rows before keeping those every evaluated model scored."""
    skipped_models: dict[str, float] = field(default_factory=dict)
    """Model → share of the rows it scored, for models below the coverage bar."""
    customers: np.ndarray | None = None
    """Per row: the customer as an integer code (the cluster of the paired tests: a repeat customer's purchases are
    not independent); None: every row its own customer."""

    _ascending: dict[ModelKey, np.ndarray] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def n(self) -> int:
        return int(self.y.size)

    def ascending(self, key: ModelKey) -> np.ndarray:
        """``np.argsort`` of a model's scores, sorted once per cohort (the figures, segments and tests share it)."""
        if key not in self._ascending:
            self._ascending[key] = np.argsort(self.scores[key])
        return self._ascending[key]

    def model(self, alias: str) -> ModelKey | None:
        found = [k for k in self.scores if k.alias == alias]
        return found[0] if found else None


def _codes(strings: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, list[str]]:
    """Strings as integer codes into a small dictionary (millions of Python strings would take GBs)."""
    encoded = pc.dictionary_encode(strings)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()  # one dictionary for all chunks
    return encoded.indices.to_numpy(zero_copy_only=False), encoded.dictionary.to_pylist()


def pivot_scores(scores: pa.ChunkedArray | pa.Array, rows: int) -> dict[ModelKey, np.ndarray]:
    """The nested ``scores`` column as one float array per (alias, version): NaN where a model gave no usable score."""
    # Field by field from the chunks as they come: combining the whole nested column first copies every string in it.
    parents = np.asarray(pc.list_parent_indices(scores))
    flat = pc.list_flatten(scores)
    alias_codes, aliases = _codes(pc.struct_field(flat, "alias"))
    version_codes, versions = _codes(pc.fill_null(pc.struct_field(flat, "model_version"), ""))
    value = np.asarray(pc.fill_null(pc.struct_field(flat, "score"), math.nan), dtype=np.float64)
    usable = np.asarray(pc.fill_null(pc.equal(pc.struct_field(flat, "status"), "ok"), False), dtype=bool)
    usable &= ~np.isnan(value)
    if "" in versions:  # no version: no model was loaded
        usable &= version_codes != versions.index("")
    combined = alias_codes.astype(np.int64) * len(versions) + version_codes
    out: dict[ModelKey, np.ndarray] = {}
    present = np.bincount(combined[usable], minlength=len(aliases) * len(versions))
    for code in np.flatnonzero(present):
        mask = usable & (combined == code)
        column = np.full(rows, math.nan)
        column[parents[mask]] = value[mask]
        out[ModelKey(str(aliases[code // len(versions)]), str(versions[code % len(versions)]))] = column
    return out


def load_cohort(warehouse: Warehouse, week: CohortWeek, *, plan: EvaluationPlan) -> Cohort:
    """The week's matured rows from the warehouse, pivoted to one score column per model, on the rows every model
    with enough coverage scored (identical requests)."""
    table = warehouse.run("queries/weekly_cohort", week.params())
    rows = table.num_rows
    y = pc.fill_null(table.column("defaulted"), False).to_numpy(zero_copy_only=False).astype(np.int8)
    scores = pivot_scores(table.column("scores"), rows) if rows else {}
    coverage = {k: float(np.mean(~np.isnan(v))) for k, v in scores.items()}
    kept = {k: v for k, v in scores.items() if coverage[k] >= plan.settings.min_model_coverage}
    skipped = {k.name: round(coverage[k], 4) for k in scores if k not in kept}
    common = np.ones(rows, dtype=bool)
    for column in kept.values():
        common &= ~np.isnan(column)
    if kept and not common.any():  # no row every kept model scored (disjoint halves): nothing to compare on
        skipped.update({k.name: round(coverage[k], 4) for k in kept})
        kept = {}
    # Strings as categories: a few distinct values each, millions of rows (object strings would take GBs).
    frame = table.select(["policy_name", "experiment_id", "arm", "amount", *SEGMENT_COLUMNS]).to_pandas(
        strings_to_categorical=True
    )
    customers = customer_codes(table)
    del table
    order = sorted(kept, key=lambda k: (k.alias != CHAMPION, k.alias, k.version))
    return Cohort(
        week=week,
        y=y[common],
        scores={k: kept[k][common] for k in order},
        frame=frame.loc[common].reset_index(drop=True),
        rows_total=rows,
        skipped_models=skipped,
        customers=customers[common],
    )


def customer_codes(table: pa.Table) -> np.ndarray:
    """The rows' ``customer_id_hash`` as integer codes (one per customer; millions of strings would take GBs)."""
    column = table.column("customer_id_hash").combine_chunks()
    return pc.dictionary_encode(column).indices.to_numpy(zero_copy_only=False).astype(np.int64)


# ------------------------------------------------------------------------------------------------ evaluation


@dataclass(frozen=True)
class Comparison:
    """Control vs treatment on one cohort week and label."""

    experiment_id: str
    control: str
    treatment: str
    n: int
    n_positive: int
    auc_control: float
    auc_treatment: float
    auc_difference: float
    """treatment − control."""
    delong_z: float
    delong_p_value: float
    auc_difference_ci: tuple[float, float]
    brier_difference: float
    """treatment − control (negative: treatment better calibrated/sharper)."""
    brier_difference_ci: tuple[float, float]
    mcnemar_statistic: float
    mcnemar_p_value: float
    decisions_disagree: int
    """Rows where one model would approve and the other not, at the policy's approval threshold."""
    arm_default_rate_control: float | None = None
    """Canary only: defaults among the control arm's approved, matured purchases — a description only: an arm that
    approves fewer has fewer defaults among its approved without being better (the arms are compared per applicant)."""
    arm_default_rate_treatment: float | None = None
    """Canary only: the same for the treatment arm."""
    arm_approval_rate_control: float | None = None
    """Canary only: approved / applicants (every decision of the week) in the control arm."""
    arm_approval_rate_treatment: float | None = None
    arm_approval_rate_p_value: float | None = None
    """Canary only: the arms' approval rates differ (two-sided, clustered by customer, periods combined)."""
    arm_loss_per_applicant_control: float | None = None
    """Canary only: realised loss (amount of the defaulted purchases) per applicant of the control arm."""
    arm_loss_per_applicant_treatment: float | None = None
    arm_loss_per_applicant_difference: float | None = None
    """Canary only: treatment − control, the allocation periods combined with fixed weights (their applicants)."""
    arm_loss_per_applicant_p_value: float | None = None
    arm_defaults_per_applicant_difference: float | None = None
    """Canary only: treatment − control of defaults per applicant (approval rate × default rate among approved)."""
    arm_defaults_per_applicant_p_value: float | None = None
    arm_treatment_better: bool | None = None
    """Canary only: treatment loses significantly less per applicant without approving significantly fewer."""
    auc_difference_se: float = math.nan
    """DeLong's standard error of the difference (what the sequential statistic weighs this week by)."""
    holm_p_value: float = math.nan
    srm_p_value: float | None = None
    """Canary only: sample-ratio check on customers, per allocation period (Bonferroni over the periods)."""
    srm_flagged: bool | None = None
    srm_periods: int | None = None
    """Canary only: allocation periods (share changes) the week spans."""
    look: int = 0
    """The plan's look this week took (1-based); after the plan's end, the look that ended it; 0: none yet."""
    information: float = math.nan
    """Σ 1/SE² of the weekly differences combined so far (the statistic's own information)."""
    information_fraction: float = math.nan
    """information / the plan's maximum information."""
    sequential_estimate: float = math.nan
    """Inverse-variance mean of the weekly ΔAUC from the plan's start through this week."""
    sequential_se: float = math.nan
    sequential_z: float = math.nan
    """(sequential_estimate − margin) / sequential_se."""
    efficacy_bound: float = math.nan
    """Superior when sequential_z ≥ this (NaN on the monitoring label)."""
    futility_bound: float = math.nan
    """Futile when sequential_z < this before the last look (−inf: none at this look)."""
    verdict: str = "continue"
    """continue | superior | futile | not_shown (decision label) or monitoring (the other label)."""
    plan_ended: bool = False
    """This week came after the look that ended the plan: not a look; the verdict stands."""
    crossed: bool = False
    """This week's look reached the verdict."""
    margin: float = math.nan
    """δ of the plan (H0: ΔAUC ≤ δ)."""

    def row(self) -> dict[str, Any]:
        out = asdict(self)
        for name in ("auc_difference_ci", "brier_difference_ci"):
            low, high = out.pop(name)
            out[f"{name}_low"], out[f"{name}_high"] = low, high
        # The verdict as numbers too, for model_metrics and MLflow (whose values are floats).
        for verdict in ("superior", "futile", "not_shown"):
            out[f"verdict_{verdict}"] = self.verdict == verdict
        return out


Z_95 = 1.959963984540054
"""Two-sided 95 % normal quantile: the interval shown beside an estimate (not adjusted for the repeated looks)."""

NEXT_STEP: dict[str, str] = {
    "continue": "keep collecting",
    "superior": "it may be promoted",
    "futile": "retire it",
    "not_shown": "retire it",
    "monitoring": "the final label decides",
}
"""What a person (or the promotion gate) does after each verdict."""


def _ahead(treatment: str, control: str, estimate: float, se: float, *, weeks: str) -> str:
    lo, hi = estimate - Z_95 * se, estimate + Z_95 * se
    if estimate > 0:
        standing = f"{treatment} is ahead of {control} by {estimate:.4f} AUC"
    elif estimate < 0:
        standing = f"{treatment} is behind {control} by {-estimate:.4f} AUC"
    else:
        standing = f"{treatment} and {control} are level"
    interval = f" (95 % interval {lo:+.4f} to {hi:+.4f})" if math.isfinite(se) else ""
    return f"{standing}{interval} {weeks}"


def verdict_sentence(c: Comparison, week: CohortWeek) -> str:
    """What the comparison concluded this week, in one sentence a person can act on: who is ahead and by how much
    with its interval, the plan's look and information, and what happens next (the MLflow run's description, the
    head of the report, the summary)."""
    label = f"the {week.label} label"
    if c.look == 0 or not math.isfinite(c.sequential_estimate):
        this_week = _ahead(
            c.treatment, c.control, c.auc_difference, c.auc_difference_se, weeks=f"on {label} of {week.name}"
        )
        return f"{this_week}; no look of the plan this week (no usable standard error) — keep collecting."
    weeks = f"over {c.look} week{'s' if c.look != 1 else ''} of {label} (to {week.name})"
    standing = _ahead(c.treatment, c.control, c.sequential_estimate, c.sequential_se, weeks=weeks)
    if c.verdict == "monitoring":
        return f"{standing}; shown for monitoring only: the plan decides on the final label."
    if c.plan_ended:
        return (
            f"{standing}; the plan ended at look {c.look} with the verdict {c.verdict.replace('_', ' ').upper()}"
            f" — later weeks are not looks; {NEXT_STEP[c.verdict]}."
        )
    where = f"look {c.look} of the plan, {c.information_fraction:.0%} of its information"
    if c.verdict == "continue":
        bounds = f"superior at z ≥ {c.efficacy_bound:.2f}" + (
            f", futile below {c.futility_bound:.2f}" if math.isfinite(c.futility_bound) else ""
        )
        return (
            f"{standing}; {where}: not yet shown to beat it by the margin {c.margin:g} (z = {c.sequential_z:.2f};"
            f" {bounds}) — keep collecting."
        )
    if c.verdict == "superior":
        return (
            f"{standing}; {where}: SUPERIOR — it beats {c.control} by more than the margin {c.margin:g}"
            f" (z = {c.sequential_z:.2f} ≥ {c.efficacy_bound:.2f}); the plan has ended: it may be promoted."
        )
    if c.verdict == "futile":
        return (
            f"{standing}; {where}: FUTILE — it will not be shown to beat {c.control} by the margin {c.margin:g}"
            f" (z = {c.sequential_z:.2f} < {c.futility_bound:.2f}); the plan has ended: retire it."
        )
    return (
        f"{standing}; {where}: NOT SHOWN — the plan reached its last look without showing that it beats"
        f" {c.control} by the margin {c.margin:g} (z = {c.sequential_z:.2f}); retire it."
    )


@dataclass(frozen=True)
class WeekEvaluation:
    """Everything computed for one (week, label)."""

    week: CohortWeek
    n: int
    n_positive: int
    rows_total: int
    models: dict[str, ModelPerformance]
    policy: dict[str, dict[str, PolicyOutcome]]
    """Policy name → model → outcome at that policy's thresholds."""
    segments: pd.DataFrame | None
    reversals: list[dict[str, Any]]
    comparisons: list[Comparison]
    skipped_models: dict[str, float]
    selection: CohortSelection | None = None
    """Every decision of the cohort week by outcome: the selection the figures above are computed under."""


@dataclass(frozen=True)
class CohortSelection:
    """The cohort week's decisions, every one (``prediction_logs``), not only the labelled approved ones: only
    approved purchases get an outcome, so every weekly figure is computed on the approved share of the applicants.

    Attributes:
        decisions: purchases decided in the week (a retried decision counted once).
        approved: decisions ``approve``.
        manual_review: decisions ``manual_review`` (their final answer is not logged: no label).
        denied: decisions ``deny`` (no credit, no outcome).
        approval_rate: ``approved / decisions`` (NaN without decisions).
    """

    decisions: int
    approved: int
    manual_review: int
    denied: int
    approval_rate: float

    def figures(self) -> dict[str, float]:
        """The figures by name as written next to each model's and comparison's (``cohort_*``)."""
        return {
            "cohort_decisions": float(self.decisions),
            "cohort_approved": float(self.approved),
            "cohort_manual_review": float(self.manual_review),
            "cohort_denied": float(self.denied),
            "cohort_approval_rate": self.approval_rate,
        }


SELECTION_POPULATION = "all_decisions"
"""Population of the ``cohort_*`` figures: every decision of the cohort week, approved or not."""


def cohort_selection(warehouse: Warehouse, week: CohortWeek) -> CohortSelection:
    """Every decision of ``week`` counted by outcome (``queries/cohort_decisions``)."""
    params = {k: v for k, v in week.params().items() if k in ("cohort_start", "cohort_end")}
    counts = {r["decision"]: int(r["decisions"]) for r in warehouse.run("queries/cohort_decisions", params).to_pylist()}
    total = sum(counts.values())
    approved = counts.get("approve", 0)
    return CohortSelection(
        decisions=total,
        approved=approved,
        manual_review=counts.get("manual_review", 0),
        denied=counts.get("deny", 0),
        approval_rate=approved / total if total else math.nan,
    )


def _policy_thresholds(cohort: Cohort, policies: Mapping[str, Thresholds]) -> dict[str, Thresholds]:
    """The policies to re-decide with: those that served the cohort (that are known), else every one given."""
    served = set(cohort.frame["policy_name"].dropna().unique()) if cohort.n else set()
    chosen = {name: t for name, t in policies.items() if name in served}
    return chosen or dict(policies)


def _approves(scores: np.ndarray, thresholds: Thresholds) -> np.ndarray:
    return scores < thresholds.medium


def _subsample(y: np.ndarray, max_rows: int, seed: int) -> np.ndarray:
    """Row positions: all, or a seeded stratified sample of ``max_rows`` keeping the default rate."""
    if y.size <= max_rows:
        return np.arange(y.size)
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    k_pos = max(1, round(max_rows * pos.size / y.size))
    picked = np.concatenate([rng.choice(pos, k_pos, replace=False), rng.choice(neg, max_rows - k_pos, replace=False)])
    return np.sort(picked)


def compare(
    cohort: Cohort,
    control: ModelKey,
    treatment: ModelKey,
    *,
    experiment_id: str,
    thresholds: Thresholds,
    plan: EvaluationPlan,
) -> Comparison:
    """The paired tests of one comparison on the cohort's identical rows."""
    y, a, b = cohort.y, cohort.scores[treatment], cohort.scores[control]
    # Clustered by customer: a repeat customer's purchases are correlated (the DeLong SE feeds the sequential look).
    delong = delong_test(
        y, a, b, clusters=cohort.customers, ascending=(cohort.ascending(treatment), cohort.ascending(control))
    )
    rows = _subsample(y, plan.settings.bootstrap_max_rows, plan.settings.seed)
    boot = paired_bootstrap_ci(
        y[rows],
        a[rows],
        b[rows],
        metric="brier",
        n_resamples=plan.settings.bootstrap_resamples,
        seed=plan.settings.seed,
        clusters=None if cohort.customers is None else cohort.customers[rows],
    )
    # McNemar on correctness of the approve/decline call at the policy's approval threshold: a model is right on a
    # row when it approves a repaid purchase or declines a default.
    good = y == 0
    right_t = _approves(a, thresholds) == good
    right_c = _approves(b, thresholds) == good
    table = [
        [int(np.sum(right_c & right_t)), int(np.sum(right_c & ~right_t))],
        [int(np.sum(~right_c & right_t)), int(np.sum(~right_c & ~right_t))],
    ]
    mcnemar = mcnemar_test(table)
    return Comparison(
        experiment_id=experiment_id,
        control=control.name,
        treatment=treatment.name,
        n=cohort.n,
        n_positive=int(y.sum()),
        auc_control=delong.auc_b,
        auc_treatment=delong.auc_a,
        auc_difference=delong.difference,
        delong_z=delong.z,
        delong_p_value=delong.p_value,
        auc_difference_ci=delong.ci,
        brier_difference=boot.estimate,
        brier_difference_ci=boot.ci,
        mcnemar_statistic=mcnemar.statistic,
        mcnemar_p_value=mcnemar.p_value,
        decisions_disagree=int(np.sum(_approves(a, thresholds) != _approves(b, thresholds))),
        auc_difference_se=delong.se,
    )


def _with_arm_rates(c: Comparison, arms: Sequence[Mapping[str, Any]]) -> Comparison:
    """A canary's arms served different customers: compared per applicant (approval rate, defaults and loss per
    applicant; :func:`~shadowgate.evaluation.canary.arm_comparison`), the default rate among approved described."""
    result = arm_comparison(arms)
    if result is None:
        return c
    return replace(
        c,
        arm_default_rate_control=result.control.default_rate_approved,
        arm_default_rate_treatment=result.treatment.default_rate_approved,
        arm_approval_rate_control=result.control.approval_rate,
        arm_approval_rate_treatment=result.treatment.approval_rate,
        arm_approval_rate_p_value=result.approval_rate.p_value,
        arm_loss_per_applicant_control=result.control.loss_per_applicant,
        arm_loss_per_applicant_treatment=result.treatment.loss_per_applicant,
        arm_loss_per_applicant_difference=result.loss_per_applicant.estimate,
        arm_loss_per_applicant_p_value=result.loss_per_applicant.p_value,
        arm_defaults_per_applicant_difference=result.defaults_per_applicant.estimate,
        arm_defaults_per_applicant_p_value=result.defaults_per_applicant.p_value,
        arm_treatment_better=result.treatment_better,
    )


def evaluate_week(
    cohort: Cohort,
    *,
    plans: Sequence[ComparisonPlan],
    policies: Mapping[str, Thresholds],
    plan: EvaluationPlan,
) -> WeekEvaluation:
    """Per-model figures, policy outcomes, segments and the paired comparisons of one cohort (no I/O)."""
    week = cohort.week
    models = {k.name: model_performance(cohort.y, s, ascending=cohort.ascending(k)) for k, s in cohort.scores.items()}
    chosen = _policy_thresholds(cohort, policies)
    amounts = cohort.frame["amount"].to_numpy(dtype=np.float64)
    policy = {
        name: {k.name: policy_outcomes(s, cohort.y, thresholds=t, amounts=amounts) for k, s in cohort.scores.items()}
        for name, t in chosen.items()
    }
    segments = None
    reversals: list[dict[str, Any]] = []
    if cohort.n and cohort.scores:
        frame = cohort.frame[list(SEGMENT_COLUMNS)].copy()
        frame["defaulted"] = cohort.y
        score_cols = {}
        for i, (k, s) in enumerate(cohort.scores.items()):
            frame[f"score_{i}"] = s
            score_cols[k.name] = f"score_{i}"
        segments = segment_table(
            frame,
            label_col="defaulted",
            score_cols=score_cols,
            segment_cols=SEGMENT_COLUMNS,
            ascending={k.name: cohort.ascending(k) for k in cohort.scores},
        )
    comparisons = []
    thresholds = next(iter(chosen.values())) if chosen else None
    for p in plans:
        control, treatment = cohort.model(p.control_alias), cohort.model(p.treatment_alias)
        if control is None or treatment is None or thresholds is None or cohort.n == 0:
            continue
        if min(int(cohort.y.sum()), cohort.n - int(cohort.y.sum())) >= 2:  # DeLong needs two of each outcome
            c = compare(cohort, control, treatment, experiment_id=p.experiment_id, thresholds=thresholds, plan=plan)
            comparisons.append(c)
        if segments is not None:
            for r in simpsons_reversals(segments, treatment.name, control.name):
                reversals.append({"experiment_id": p.experiment_id, **asdict(r)})
    if comparisons:
        adjusted = holm([c.delong_p_value for c in comparisons])
        comparisons = [replace(c, holm_p_value=float(p)) for c, p in zip(comparisons, adjusted, strict=True)]
    return WeekEvaluation(
        week=week,
        n=cohort.n,
        n_positive=int(cohort.y.sum()),
        rows_total=cohort.rows_total,
        models=models,
        policy=policy,
        segments=segments,
        reversals=reversals,
        comparisons=comparisons,
        skipped_models=cohort.skipped_models,
    )


# ------------------------------------------------------------------------------------------------ sequential look


def sequential_look(
    warehouse: Warehouse,
    comparison: Comparison,
    experiment: ComparisonPlan,
    week: CohortWeek,
    *,
    plan: EvaluationPlan,
    challengers: int = 1,
) -> Comparison:
    """This week's look of the comparison's recorded plan (:mod:`shadowgate.evaluation.sequential`).

    The plan is that of the two versions compared (``treatment@v vs control@v``), read from ``comparison_plans``
    (made from the settings and recorded at the pair's first evaluation, never changed after). Its weeks are the
    cohort weeks from its start through this one with a usable DeLong SE: weeks evaluated before are read back from
    ``model_metrics``, a week never evaluated (an out-of-order backfill) is computed from its rows, so a look reads
    one week's rows and every run of a week takes the same look. On the plan's label the looks run until the
    verdict; a later week is not a look and carries the verdict. On the other label (early) the same combination is
    shown as monitoring, with no boundary and no verdict.
    """
    pair = comparison_name(comparison)
    recorded = comparison_plan(warehouse, experiment, week, plan=plan, challengers=challengers, comparison=pair)
    stats_plan = recorded.plan
    params = {k: v for k, v in week.params().items() if k != "cohort_start"}
    counts = warehouse.run("queries/weekly_positives", {**params, "since": _midnight(recorded.started_on)}).to_pylist()
    earlier = [_as_date(r["cohort_start"]) for r in counts if int(r["n_positive"]) > 0]
    earlier = [d for d in earlier if d < week.start]
    series = [
        *_earlier_differences(warehouse, experiment, week, earlier, comparison=pair),
        (comparison.auc_difference, comparison.auc_difference_se),
    ]
    common: dict[str, Any] = {"margin": stats_plan.margin}
    if week.label != stats_plan.label:
        look = monitoring_look(stats_plan, series)
        if look is None:
            return replace(comparison, **common)
        return replace(comparison, **common, **_look_fields(look))
    looks = run_looks(stats_plan, series)
    if not looks:
        return replace(comparison, **common)
    this_week_usable = usable(comparison.auc_difference, comparison.auc_difference_se)
    usable_weeks = sum(1 for d, se in series if usable(d, se))
    if looks[-1].final and (usable_weeks > len(looks) or not this_week_usable):
        # The plan ended at an earlier week: this week is no look, the verdict stands.
        return replace(comparison, **common, **_look_fields(looks[-1]), plan_ended=True, crossed=False)
    if not this_week_usable:  # no look this week (no usable SE): nothing to show but the plan
        return replace(comparison, **common)
    return replace(comparison, **common, **_look_fields(looks[-1]), crossed=looks[-1].final)


def _look_fields(look: Look) -> dict[str, Any]:
    return {
        "look": look.look,
        "information": look.information,
        "information_fraction": look.fraction,
        "sequential_estimate": look.estimate,
        "sequential_se": look.se,
        "sequential_z": look.z,
        "efficacy_bound": look.efficacy_bound,
        "futility_bound": look.futility_bound,
        "verdict": look.verdict,
    }


@dataclass(frozen=True)
class RecordedPlan:
    """A comparison's plan as recorded in ``comparison_plans``."""

    experiment_id: str
    comparison: str
    """``treatment@v vs control@v``: the two versions the plan compares."""
    started_on: dt.date
    """Monday of the first cohort week the plan counts."""
    plan: SequentialPlan
    created_at: dt.datetime

    def tags(self) -> dict[str, str]:
        """The plan as MLflow experiment tags."""
        p = self.plan
        return {
            "shadowgate.plan": p.describe(),
            "shadowgate.plan.hypothesis": f"H0: dAUC <= {p.margin:g}; H1: dAUC >= {p.margin + p.mde:g}",
            "shadowgate.plan.margin": f"{p.margin:g}",
            "shadowgate.plan.mde": f"{p.mde:g}",
            "shadowgate.plan.alpha": f"{p.alpha:g}",
            "shadowgate.plan.power": f"{p.power:g}",
            "shadowgate.plan.max_looks": str(p.max_looks),
            "shadowgate.plan.max_information": f"{p.max_information:.1f}",
            "shadowgate.plan.spending": f"{p.spending} efficacy" + (", non-binding futility" if p.futility else ""),
            "shadowgate.plan.label": p.label,
            "shadowgate.plan.started_on": self.started_on.isoformat(),
            "shadowgate.plan.comparison": self.comparison,
            "shadowgate.plan.rows": "rows every compared model scored, cohort weeks from started_on",
        }


def plan_id(experiment_id: str, comparison: str) -> str:
    """The key of a comparison's plan: the experiment and the two versions (``treatment@v vs control@v``)."""
    return f"{experiment_id}/{comparison}"


def comparison_name(c: Comparison) -> str:
    """``treatment@v vs control@v``: the model name of a comparison's rows in ``model_metrics``."""
    return f"{c.treatment} vs {c.control}"


def comparison_plan(
    warehouse: Warehouse,
    experiment: ComparisonPlan,
    week: CohortWeek,
    *,
    plan: EvaluationPlan,
    comparison: str,
    challengers: int = 1,
) -> RecordedPlan:
    """The plan of one pair of versions in ``experiment``; the first call makes it from the settings and records it
    (a MERGE that inserts only a missing plan: whoever records first fixes it, later settings changes do not move it).

    It starts at the Monday of the week both versions first scored a labelled decision (``queries/first_scored``,
    looking back ``sequential_lookback_weeks`` from ``week``), and never before the Monday of the experiment's
    ``started_at``: a retrained challenger (or a new champion) starts a new plan, its verdict never borrows an older
    version's weeks.
    """
    key = plan_id(experiment.experiment_id, comparison)
    found = warehouse.run("queries/comparison_plan", {"plan_id": key}).to_pylist()
    if not found:
        settings = plan.settings
        since = _midnight(week.start - dt.timedelta(weeks=settings.sequential_lookback_weeks))
        if experiment.started_at is not None:
            since = max(since, _utc(experiment.started_at))
        treatment, _, control = comparison.partition(" vs ")
        first = warehouse.run(
            "queries/first_scored",
            {"since": since, "before": _midnight(week.end), "models": [treatment, control]},
        ).to_pylist()
        firsts = [_utc(r["first_scored_at"]).date() for r in first]
        # Both scored: from the later of their first weeks; else (never both scored before this week) this week.
        started = max([since.date(), *firsts]) if len(firsts) == 2 else week.start
        started_on = min(started - dt.timedelta(days=started.weekday()), week.start)
        designed = _designed_plan(settings, challengers)
        row = {
            "plan_id": key,
            "experiment_id": experiment.experiment_id,
            "comparison": comparison,
            "control_alias": experiment.control_alias,
            "treatment_alias": experiment.treatment_alias,
            "started_on": started_on,
            "decision_label": designed.label,
            "margin": designed.margin,
            "mde": designed.mde,
            "alpha": designed.alpha,
            "power": designed.power,
            "max_looks": designed.max_looks,
            "max_information": designed.max_information,
            "futility": designed.futility,
            "comparisons": designed.comparisons,
            "spending": designed.spending,
            "created_at": week.as_of,
            "description": designed.describe(),
        }
        batch = pa.Table.from_pylist([row], schema=arrow_schema(COMPARISON_PLANS))
        warehouse.merge(COMPARISON_PLANS, staging=warehouse.stage(COMPARISON_PLANS, batch, batch_id=key))
        found = warehouse.run("queries/comparison_plan", {"plan_id": key}).to_pylist()
    r = found[0]
    return recorded_plan(r)


def recorded_plan(r: Mapping[str, Any]) -> RecordedPlan:
    """A ``comparison_plans`` row as a :class:`RecordedPlan`."""
    return RecordedPlan(
        experiment_id=r["experiment_id"],
        comparison=r["comparison"],
        started_on=_as_date(r["started_on"]),
        plan=SequentialPlan(
            margin=float(r["margin"]),
            mde=float(r["mde"]),
            alpha=float(r["alpha"]),
            power=float(r["power"]),
            max_looks=int(r["max_looks"]),
            max_information=float(r["max_information"]),
            futility=bool(r["futility"]),
            comparisons=int(r["comparisons"]),
            label=str(r["decision_label"]),
            spending=str(r["spending"]),
        ),
        created_at=r["created_at"],
    )


@functools.lru_cache(maxsize=32)
def _designed_plan(settings: EvaluationSettings, challengers: int) -> SequentialPlan:
    """The plan the settings call for (a second of numerical work: cached per settings)."""
    return design_plan(
        margin=settings.auc_margin,
        mde=settings.minimum_detectable_auc_difference,
        alpha=settings.alpha,
        power=settings.power,
        max_looks=settings.max_looks,
        futility=settings.futility,
        comparisons=challengers,
    )


def _as_date(value: dt.date | dt.datetime) -> dt.date:
    return value.date() if isinstance(value, dt.datetime) else value


def _earlier_differences(
    warehouse: Warehouse, experiment: ComparisonPlan, week: CohortWeek, weeks: Sequence[dt.date], *, comparison: str
) -> list[tuple[float, float]]:
    """(AUC difference, its SE) of each earlier cohort week of the plan: as recorded in ``model_metrics`` for the same
    two versions, else computed from the week's rows those two versions scored (a week they did not both score has
    no usable difference: it is no look)."""
    if not weeks:
        return []
    params = {
        "experiment_id": experiment.experiment_id,
        "comparison": comparison,
        "label": week.label,
        "since_date": min(weeks),
        "before_date": week.start,
    }
    recorded: dict[dt.date, dict[str, float]] = {}
    for r in warehouse.run("queries/comparison_history", params).to_pylist():
        recorded.setdefault(_as_date(r["cohort_start"]), {})[r["metric"]] = r["value"]
    out = []
    for start in weeks:
        figures = recorded.get(start, {})
        if figures.get("auc_difference") is not None and figures.get("auc_difference_se") is not None:
            out.append((figures["auc_difference"], figures["auc_difference_se"]))
        else:
            earlier = CohortWeek(start=start, end=start + dt.timedelta(days=7), label=week.label, as_of=week.as_of)
            out.append(_week_difference(warehouse, earlier, comparison))
    return out


def _model_key(name: str) -> ModelKey:
    alias, _, version = name.partition("@")
    return ModelKey(alias, version)


def _week_difference(warehouse: Warehouse, week: CohortWeek, comparison: str) -> tuple[float, float]:
    """DeLong's (treatment − control, SE) on one week's matured rows both versions of ``comparison`` scored."""
    table = warehouse.run("queries/weekly_cohort", week.params())
    if table.num_rows == 0:
        return math.nan, math.nan
    y = pc.fill_null(table.column("defaulted"), False).to_numpy(zero_copy_only=False).astype(np.int8)
    scores = pivot_scores(table.column("scores"), table.num_rows)
    treatment_name, _, control_name = comparison.partition(" vs ")
    control, treatment = scores.get(_model_key(control_name)), scores.get(_model_key(treatment_name))
    if control is None or treatment is None:
        return math.nan, math.nan
    both = ~np.isnan(control) & ~np.isnan(treatment)
    y = y[both]
    if not 0 < y.sum() < y.size or min(int(y.sum()), int(y.size - y.sum())) < 2:
        return math.nan, math.nan
    result = delong_test(y, treatment[both], control[both], clusters=customer_codes(table)[both])
    return result.difference, result.se


# ------------------------------------------------------------------------------------------------ outputs


def metric_id(*parts: str) -> str:
    """The deterministic key of one ``model_metrics`` row."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def metric_rows(
    evaluation: WeekEvaluation, *, run_ids: Mapping[str, Mapping[str, str]] | None = None
) -> list[dict[str, Any]]:
    """Every ``model_metrics`` row of one (week, label), each figure once.

    A model's own figures (metrics, policy outcomes, segments) do not depend on the experiment that compares it:
    they are written once, under ``experiment_id`` :data:`EVERY_EXPERIMENT`, for every model of the week's
    comparisons. A comparison's figures are written under its experiment. ``run_ids`` maps experiment → (model or
    comparison name → its MLflow run); a model's rows name the run of the first experiment that logged it.
    """
    run_ids = run_ids or {}
    model_runs: dict[str, str] = {}
    for experiment_runs in run_ids.values():
        for name, run_id in experiment_runs.items():
            model_runs.setdefault(name, run_id)
    week = evaluation.week
    rows: list[dict[str, Any]] = []

    def add(
        model: str,
        metric: str,
        value: float | None,
        n: int,
        n_positive: int | None,
        *,
        experiment_id: str = EVERY_EXPERIMENT,
        population: str = POPULATION,
        segment: str = "all",
        segment_value: str = "all",
    ) -> None:
        alias, _, version = model.partition("@") if " vs " not in model else ("", "", "")
        v = None if value is None or (isinstance(value, float) and not math.isfinite(value)) else float(value)
        runs = model_runs if experiment_id == EVERY_EXPERIMENT else run_ids.get(experiment_id, {})
        rows.append(
            {
                "metric_id": metric_id(
                    experiment_id, week.start.isoformat(), week.label, model, segment, segment_value, metric
                ),
                "experiment_id": experiment_id,
                "cohort_start": week.start,
                "cohort_end": week.end,
                "label": week.label,
                "population": population,
                "model": model,
                "alias": alias or None,
                "model_version": version or None,
                "segment": segment,
                "segment_value": segment_value,
                "metric": metric,
                "value": v,
                "n": n,
                "n_positive": n_positive,
                "as_of": week.as_of,
                "mlflow_run_id": runs.get(model),
            }
        )

    # Every evaluated model's own figures, compared with another or not: a champion with no challenger is still
    # watched (its baseline and its alerts read these rows).
    for model in _evaluated_models(evaluation):
        perf = evaluation.models[model]
        for name, value in perf.scalars().items():
            if name not in ("n", "n_positive"):
                add(model, name, value, perf.n, perf.n_positive)
        for policy_name, outcomes in evaluation.policy.items():
            outcome = outcomes[model]
            for figure, value, population in outcome.figures():
                population_name = f"{POPULATION}:{population}"
                add(model, f"{policy_name}.{figure}", value, outcome.n, outcome.n_defaults, population=population_name)
        if evaluation.segments is not None:
            seg = evaluation.segments[evaluation.segments["model"] == model]
            for r in seg.itertuples(index=False):
                if r.segment == POOLED:  # the model's own figures above, on the same rows
                    continue
                missing = r.value is None or (isinstance(r.value, float) and math.isnan(r.value))
                segment_value = "null" if missing else str(r.value)
                for metric in ("auc", "default_rate", "mean_score"):
                    figure = getattr(r, metric)
                    add(
                        model,
                        metric,
                        figure,
                        int(r.n),
                        int(r.n_positive),
                        segment=str(r.segment),
                        segment_value=segment_value,
                    )
    for c in evaluation.comparisons:
        name = f"{c.treatment} vs {c.control}"
        for metric, value in c.row().items():
            if isinstance(value, bool):
                value = float(value)
            if isinstance(value, (int, float)) and metric not in ("n", "n_positive"):
                add(name, metric, float(value), c.n, c.n_positive, experiment_id=c.experiment_id)
    selection = evaluation.selection
    if selection is not None:
        # Next to every model's and comparison's figures: how many applicants the labelled rows stand for.
        # Beside each model's figures (under every experiment) and each comparison's (under its experiment).
        for model in _evaluated_models(evaluation):
            for metric, value in selection.figures().items():
                add(model, metric, value, selection.decisions, None, population=SELECTION_POPULATION)
        for c in evaluation.comparisons:
            for metric, value in selection.figures().items():
                add(
                    f"{c.treatment} vs {c.control}",
                    metric,
                    value,
                    selection.decisions,
                    None,
                    population=SELECTION_POPULATION,
                    experiment_id=c.experiment_id,
                )
    return rows


def _evaluated_models(evaluation: WeekEvaluation) -> list[str]:
    """Every model evaluated on the week: those of the comparisons first (in their order), then any other."""
    names = _experiment_models(evaluation, None)
    return names + [m for m in evaluation.models if m not in names]


def _experiment_models(evaluation: WeekEvaluation, experiment_id: str | None) -> list[str]:
    """The models of the experiment's comparisons (None: of every comparison), in order, each once."""
    names: list[str] = []
    for c in evaluation.comparisons:
        if experiment_id is None or c.experiment_id == experiment_id:
            names += [m for m in (c.control, c.treatment) if m not in names]
    return names


def write_metrics(warehouse: Warehouse, rows: Sequence[Mapping[str, Any]], *, week: CohortWeek, batch_id: str) -> int:
    """Replace the (cohort week, label) slice of ``model_metrics`` with ``rows`` (its figures, all of them): MERGEd
    on their deterministic ids, and the slice's rows not among them deleted, in one statement. Returns the rows
    written."""
    batch = pa.Table.from_pylist(list(rows), schema=arrow_schema(MODEL_METRICS))
    staging = warehouse.stage(MODEL_METRICS, batch, batch_id=batch_id)
    params = {"cohort_start": week.start, "label": week.label}
    return warehouse.merge(MODEL_METRICS, staging=staging, params=params).staged


# ------------------------------------------------------------------------------------------------ the run


@dataclass(frozen=True)
class WeeklyPerformanceSummary:
    """What one run did, per (week, label)."""

    as_of: str
    weeks: list[dict[str, Any]]
    metric_rows: int
    alerts: list[str]
    """Every alert condition that holds this run (title: text), sent or not."""
    mlflow_runs: dict[str, str]
    """Run key → run id."""
    alerts_sent: list[str] = field(default_factory=list)
    """Titles of the alerts sent this run: conditions that began to hold (each is sent once while it holds)."""
    alerts_raised: list[dict[str, str]] = field(default_factory=list)
    """The alerts sent this run in full (cohort, label, title, text with the next step, severity, subject): what
    the Airflow run's note and the MLflow runs they concern show."""

    def as_dict(self) -> dict[str, Any]:
        """The summary as strict JSON values: a figure that is not a number (an empty week's approval rate) is None
        (Airflow's XCom refuses NaN)."""
        return json_safe(asdict(self))


def json_safe(value: Any) -> Any:
    """``value`` with strict JSON numbers: NaN and infinity become None (Airflow's XCom refuses them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def plans_for(cohort: Cohort, experiments: Sequence[ComparisonPlan]) -> list[ComparisonPlan]:
    """The book's experiments whose two aliases scored the cohort, plus one shadow comparison with the champion for
    every challenger no experiment names (``champion-vs-<alias>``)."""
    aliases = {k.alias for k in cohort.scores}
    chosen = [p for p in experiments if p.control_alias in aliases and p.treatment_alias in aliases]
    named = {p.treatment_alias for p in chosen} | {p.control_alias for p in chosen}
    for alias in sorted(aliases - named - {CHAMPION}):
        if CHAMPION in aliases:
            chosen.append(ComparisonPlan(experiment_id=f"champion-vs-{alias}", treatment_alias=alias))
    return chosen


def weekly_performance(
    warehouse: Warehouse,
    results: ResultsStore | None,
    *,
    as_of: dt.datetime,
    plan: EvaluationPlan,
    policies: Mapping[str, Thresholds],
    experiments: Sequence[ComparisonPlan] = (),
    weeks: Sequence[CohortWeek] | None = None,
    validation_auc: Callable[[str, str], float | None] = lambda alias, version: None,
    alert: Callable[[Alert], object] | None = None,
    report_root: Path | None = None,
) -> WeeklyPerformanceSummary:
    """Evaluate the cohort weeks due at ``as_of`` (or ``weeks``): figures into ``model_metrics``, runs into MLflow,
    alerts through ``alert``.

    Args:
        warehouse: where labeled_predictions is read and model_metrics written.
        results: the MLflow results store (None: no MLflow logging, e.g. in a dry run).
        as_of: the run's instant (its data interval end): only labels matured by then are used.
        plan: evaluation settings.
        policies: decision policy name → its thresholds (the policies' base cut-offs).
        experiments: the A/B experiments of the book (challengers no experiment names get a made-up one).
        weeks: explicit (week, label) pairs instead of :func:`cohort_weeks` of ``as_of``.
        validation_auc: (alias, version) → the version's validation AUC from training, for the power analysis.
        alert: where alerts go (:func:`~shadowgate.pipelines.alerts.send_alert` bound to the webhook in the DAG);
            each condition is recorded in the ``alerts`` table and sent once while it holds. None: only logged.
        report_root: where reports are rendered before upload (a temp folder by default).
    """
    as_of = _utc(as_of)
    todo = list(weeks) if weeks is not None else cohort_weeks(as_of, plan=plan)
    alerts: list[str] = []
    alerts_sent: list[str] = []
    alerts_raised: list[dict[str, str]] = []
    mlflow_runs: dict[str, str] = {}
    done: list[dict[str, Any]] = []
    total_rows = 0
    for week in todo:
        cohort = load_cohort(warehouse, week, plan=plan)
        week_plans = plans_for(cohort, experiments)
        evaluation = evaluate_week(cohort, plans=week_plans, policies=policies, plan=plan)
        looked = []
        for c in evaluation.comparisons:
            experiment = next(p for p in week_plans if p.experiment_id == c.experiment_id)
            # α is split between the challengers compared with the same champion (recorded with the plan).
            rivals = sum(1 for p in week_plans if p.control_alias == experiment.control_alias)
            c = sequential_look(warehouse, c, experiment, week, plan=plan, challengers=rivals)
            if experiment.mode == "canary":
                arms = warehouse.run(
                    "queries/arm_counts", {**week.params(), "experiment_id": experiment.experiment_id}
                ).to_pylist()
                c = _with_arm_rates(_with_srm(c, arms), arms)
            looked.append(c)
        evaluation = replace(evaluation, comparisons=looked, selection=cohort_selection(warehouse, week))
        checks = _alerts(
            evaluation, baselines=functools.partial(model_baseline, warehouse, week=week, plan=plan), plan=plan
        )
        alerts += [f"{c.alert.title}: {c.alert.text}" for c in checks if c.alert is not None]
        # Each condition is sent once while it holds (the alerts table remembers); without a sender, only logged.
        sender = alert if alert is not None else functools.partial(send_alert, webhook_url=None)
        recorded_alerts = record_alerts(warehouse, checks, at=week.as_of, send=sender)
        alerts_sent += recorded_alerts.sent
        raised = [c.alert for c in checks if c.alert is not None and c.alert.title in recorded_alerts.sent]
        alerts_raised += [{"cohort": week.name, "label": week.label, **_alert_fields(a)} for a in raised]
        run_ids: dict[str, dict[str, str]] = {}
        for experiment in week_plans:
            if results is not None and any(c.experiment_id == experiment.experiment_id for c in evaluation.comparisons):
                pair = next(
                    comparison_name(c) for c in evaluation.comparisons if c.experiment_id == experiment.experiment_id
                )
                plan_tags = comparison_plan(warehouse, experiment, week, plan=plan, comparison=pair).tags()
                ids = _log_to_mlflow(
                    results,
                    evaluation,
                    experiment,
                    plan=plan,
                    plan_tags=plan_tags,
                    report_root=report_root,
                    alerts=raised,
                )
                run_ids[experiment.experiment_id] = ids
                base = f"{experiment.experiment_id}/{week.start}/{week.label}"
                mlflow_runs.update({f"{base}/{m}": r for m, r in ids.items()})
        if results is not None:
            # The week's runs a re-run no longer produces (a model now skipped, a comparison gone) are deleted.
            results.retire(
                experiment_prefix=MLFLOW_EXPERIMENT_PREFIX,
                tags={"shadowgate.cohort_start": week.start.isoformat(), "shadowgate.label": week.label},
                keep={r for ids in run_ids.values() for r in ids.values()},
            )
        # Written even when empty: the week's figures replace its slice, so one no longer produced is removed.
        rows = metric_rows(evaluation, run_ids=run_ids)
        total_rows += write_metrics(warehouse, rows, week=week, batch_id=f"{week.start:%Y%m%d}_{week.label}")
        done.append(
            {
                "cohort": week.name,
                "cohort_start": week.start.isoformat(),
                "label": week.label,
                "population": POPULATION,
                "rows_matured": evaluation.rows_total,
                "rows_compared": evaluation.n,
                "defaults": evaluation.n_positive,
                "selection": asdict(evaluation.selection) if evaluation.selection is not None else None,
                "models": {m: round(p.auc, 4) if math.isfinite(p.auc) else None for m, p in evaluation.models.items()},
                "skipped_models": evaluation.skipped_models,
                "comparisons": [
                    {
                        "experiment_id": c.experiment_id,
                        "auc_difference": round(c.auc_difference, 4),
                        "delong_p_value": c.delong_p_value,
                        "holm_p_value": c.holm_p_value,
                        "look": c.look,
                        "information_fraction": round(c.information_fraction, 4),
                        "sequential_z": round(c.sequential_z, 3) if math.isfinite(c.sequential_z) else None,
                        "verdict": c.verdict,
                        "plan_ended": c.plan_ended,
                        "crossed": c.crossed,
                    }
                    for c in evaluation.comparisons
                ],
                "simpsons_reversals": len(evaluation.reversals),
            }
        )
        logger.info("weekly_performance %s %s: %s", week.name, week.label, done[-1])
    return WeeklyPerformanceSummary(
        as_of=as_of.isoformat(),
        weeks=done,
        metric_rows=total_rows,
        alerts=alerts,
        mlflow_runs=mlflow_runs,
        alerts_sent=alerts_sent,
        alerts_raised=alerts_raised,
    )


def _alert_fields(alert: Alert) -> dict[str, str]:
    return {"title": alert.title, "text": alert.text, "severity": alert.severity, "subject": alert.subject or ""}


def _with_srm(c: Comparison, arms: Sequence[Mapping[str, Any]]) -> Comparison:
    """The sample-ratio check of a canary on its customers (the randomisation unit), per allocation period
    (:func:`~shadowgate.evaluation.canary.canary_srm`; ``arms``: ``queries/arm_counts``' rows)."""
    srm = canary_srm(arms) if arms else None
    if srm is None:
        return c
    return replace(c, srm_p_value=srm.p_value, srm_flagged=srm.flagged, srm_periods=len(srm.periods))


def model_baseline(
    warehouse: Warehouse, model: str, week: CohortWeek, *, plan: EvaluationPlan
) -> tuple[Baseline, list[dt.date]] | None:
    """The model version's own baseline for ``week``'s label: its figures on its first
    ``EvaluationSettings.alert_baseline_weeks`` evaluated cohort weeks before ``week`` (read from ``model_metrics``),
    and those weeks; None until it has that many."""
    params = {
        "model": model,
        "label": week.label,
        "population": POPULATION,
        "before_date": week.start,
        "weeks": plan.settings.alert_baseline_weeks,
    }
    by_week: dict[dt.date, dict[str, Any]] = {}
    for r in warehouse.run("queries/model_baseline", params).to_pylist():
        figures = by_week.setdefault(_as_date(r["cohort_start"]), {"n": r["n"], "n_positive": r["n_positive"]})
        figures[r["metric"]] = r["value"]
    if len(by_week) < plan.settings.alert_baseline_weeks:
        return None
    weeks = sorted(by_week)
    pooled = [
        WeekFigures(
            auc=_number(f.get("auc")),
            auc_se=_number(f.get("auc_se")),
            n=int(f["n"]),
            n_positive=int(f["n_positive"] or 0),
            expected=_number(f.get("mean_score")) * int(f["n"]),
        )
        for f in (by_week[w] for w in weeks)
    ]
    found = baseline(pooled)
    return (found, weeks) if found is not None else None


def _number(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _alerts(
    evaluation: WeekEvaluation,
    *,
    baselines: Callable[[str], tuple[Baseline, list[dt.date]] | None],
    plan: EvaluationPlan,
) -> list[Check]:
    """The week's alert conditions, each evaluated (holding or not, so that a condition that held and is gone is
    resolved): per model, its AUC and its defaults against its own first evaluated weeks (the final label raises
    an error, the early label a warning); per comparison, its verdict (held from the look that reached it) and a
    canary's sample-ratio check."""
    week = evaluation.week
    settings = plan.settings
    severity = "error" if week.label == "final" else "warning"
    bounds = f"alert at more than {{:.0%}} and at least {settings.alert_min_z:g} standard errors"
    out = []
    for model, perf in evaluation.models.items():
        found = baselines(model)
        if found is None:
            continue  # no baseline yet: the model's first weeks are its baseline
        base, weeks = found
        figures = WeekFigures.of(perf)
        since = f"its first {len(weeks)} evaluated weeks ({_week_name(weeks[0])} to {_week_name(weeks[-1])})"
        where = (
            f"cohort {week.name} ({week.label} label, {POPULATION}, n={perf.n}, defaults={perf.n_positive}, "
            f"cohort approval rate {_rate(evaluation.selection)})"
        )
        drop = auc_drop(figures, base, relative=settings.auc_drop_alert, min_z=settings.alert_min_z)
        if drop is not None:
            alert = None
            if drop.fires:
                alert = Alert(
                    title=f"{model}: AUC {drop.value:.4f} is {drop.change:.1%} below its own baseline "
                    f"({week.label} label)",
                    text=(
                        f"{where}: AUC {drop.value:.4f} vs {drop.reference:.4f} on {since}, same population and "
                        f"label; drop {drop.change:.1%}, z = {drop.z:.1f} ({bounds.format(settings.auc_drop_alert)})"
                        + ("" if week.label == "final" else " — early label: a warning; the final label decides")
                        + ". Next: look for drift in its inputs and at its segments in this week's report; if the "
                        "final label confirms it, retrain or roll back"
                    ),
                    severity=severity,
                    source="weekly_performance",
                    details={**_details(drop, week, model), "baseline_weeks": [w.isoformat() for w in weeks]},
                    kind="auc_drop",
                    subject=model,
                    condition=f"{week.label} label",
                )
            out.append(Check("auc_drop", model, f"{week.label} label", alert, cleared=drop.cleared))
        rise = default_rise(figures, base, relative=settings.default_rise_alert, min_z=settings.alert_min_z)
        if rise is not None:
            alert = None
            if rise.fires:
                alert = Alert(
                    title=f"{model}: {rise.change:.0%} more defaults than it predicts, beyond its own baseline "
                    f"({week.label} label)",
                    text=(
                        f"{where}: observed/expected defaults {rise.value:.3f} ({perf.n_positive} vs "
                        f"{figures.expected:.0f} predicted) vs {rise.reference:.3f} on {since}; rise "
                        f"{rise.change:.1%}, z = {rise.z:.1f} ({bounds.format(settings.default_rise_alert)}) — the "
                        "world changed under the model (a concept shift): check recalibration or retraining"
                    ),
                    severity=severity,
                    source="weekly_performance",
                    details={**_details(rise, week, model), "baseline_weeks": [w.isoformat() for w in weeks]},
                    kind="default_rise",
                    subject=model,
                    condition=f"{week.label} label",
                )
            out.append(Check("default_rise", model, f"{week.label} label", alert, cleared=rise.cleared))
    for c in evaluation.comparisons:
        subject = f"{c.experiment_id}: {c.treatment}"
        alert = None
        if c.crossed or c.plan_ended:
            # The verdict, once: the look that reached it raises it; later weeks (the plan has ended) keep the
            # condition held without sending it again.
            outcome = {
                "superior": f"{c.treatment} beats {c.control} by more than the margin {c.margin:g} — it may be "
                "promoted",
                "futile": f"{c.treatment} cannot be shown to beat {c.control} by the margin {c.margin:g}: stopped "
                "for futility — retire or retrain it",
                "not_shown": f"the plan ran out without showing {c.treatment} beats {c.control} by the margin "
                f"{c.margin:g} — keep the champion",
            }[c.verdict]
            alert = Alert(
                title=f"{c.experiment_id}: verdict {c.verdict} at look {c.look}",
                text=(
                    f"{outcome}. Look {c.look} on the {week.label} label (information "
                    f"{c.information_fraction:.0%}): ΔAUC {c.sequential_estimate:+.4f} ± {c.sequential_se:.4f}, "
                    f"z = {c.sequential_z:.2f} (superior at ≥ {c.efficacy_bound:.2f}"
                    + (f", futile below {c.futility_bound:.2f}" if math.isfinite(c.futility_bound) else "")
                    + "). The plan has ended: later weeks are not looks."
                ),
                severity="info" if c.verdict == "superior" else "warning",
                source="weekly_performance",
                details={
                    "experiment_id": c.experiment_id,
                    "verdict": c.verdict,
                    "look": c.look,
                    "z": c.sequential_z,
                    "cohort": week.name,
                },
                kind="sequential_verdict",
                subject=subject,
                condition=f"{week.label} label",
            )
        out.append(Check("sequential_verdict", subject, f"{week.label} label", alert))
        if c.srm_flagged is not None:
            alert = None
            if c.srm_flagged:
                alert = Alert(
                    title=f"{c.experiment_id}: sample ratio mismatch",
                    text=f"arms' counts depart from the configured split (p = {c.srm_p_value:.2e}): check assignment",
                    severity="error",
                    source="weekly_performance",
                    details={"experiment_id": c.experiment_id, "p_value": c.srm_p_value, "cohort": week.name},
                    kind="srm",
                    subject=c.experiment_id,
                    condition="arms",
                )
            out.append(Check("srm", c.experiment_id, "arms", alert))
    return out


def _week_name(start: dt.date) -> str:
    iso = start.isocalendar()
    return f"{iso.year}-W{iso.week:02d}"


def _rate(selection: CohortSelection | None) -> str:
    if selection is None or not math.isfinite(selection.approval_rate):
        return "unknown"
    return f"{selection.approval_rate:.1%}, {selection.denied} denied"


def _details(test: ChangeTest, week: CohortWeek, model: str) -> dict[str, object]:
    return {
        "model": model,
        "cohort": week.name,
        "label": week.label,
        "value": test.value,
        "baseline": test.reference,
        "change": test.change,
        "z": test.z,
    }


def _log_to_mlflow(
    results: ResultsStore,
    evaluation: WeekEvaluation,
    experiment: ComparisonPlan,
    *,
    plan: EvaluationPlan,
    plan_tags: Mapping[str, str],
    report_root: Path | None,
    alerts: Sequence[Alert] = (),
) -> dict[str, str]:
    """One run per model and one comparison run (report + charts) in the experiment's MLflow experiment (tagged with
    the comparison's recorded plan). An alert raised this week is shown on the run it concerns (a model's on its
    run, a verdict's or a split's on the comparison) and, all of them, on the comparison run: a ``shadowgate.alerts``
    tag and a paragraph of its description."""
    from shadowgate.evaluation.report import render_week_report

    week = evaluation.week
    comparisons = [c for c in evaluation.comparisons if c.experiment_id == experiment.experiment_id]
    models = _experiment_models(evaluation, experiment.experiment_id)
    experiment_id = results.ensure_experiment(
        f"{MLFLOW_EXPERIMENT_PREFIX}{experiment.experiment_id}",
        tags={
            "shadowgate.experiment_id": experiment.experiment_id,
            "shadowgate.models": f"{experiment.control_alias} (control), {experiment.treatment_alias} (treatment)",
            "shadowgate.allocation": (
                f"{experiment.mode}: treatment share {experiment.treatment_share:g}"
                if experiment.mode == "canary"
                else "shadow: the control decides every request, the treatment scores all of them"
            ),
            "shadowgate.success_metric": (
                f"{experiment.success_metric} on {POPULATION}: weekly paired DeLong differences combined by "
                "inverse variance, group-sequential test against the margin"
            ),
            **plan_tags,
            # MLflow 3's UI opens an experiment in its GenAI view unless told it is classic model development.
            "mlflow.experimentKind": "custom_model_development",
            "mlflow.note.content": experiment.description
            or f"Weekly comparison of {experiment.treatment_alias} with {experiment.control_alias} on the identical "
            "matured requests (one run per model and one comparison run per cohort week and label).",
        },
    )
    step = int(week.start.strftime("%G%V"))
    stamp = int(_midnight(week.end).timestamp() * 1000)
    base = f"{experiment.experiment_id}/{week.start.isoformat()}/{week.label}"
    common_tags = {
        "shadowgate.cohort_week": week.name,
        "shadowgate.cohort_start": week.start.isoformat(),
        "shadowgate.label": week.label,
        "shadowgate.population": POPULATION,
        "shadowgate.as_of": week.as_of.isoformat(),
    }
    run_ids: dict[str, str] = {}
    selection = evaluation.selection.figures() if evaluation.selection is not None else {}
    concerned = [a for a in alerts if a.subject in models or (a.subject or "").startswith(experiment.experiment_id)]
    for model in models:
        own = [a for a in concerned if a.subject == model]
        perf = evaluation.models[model]
        metrics: dict[str, float] = dict(perf.scalars())
        for policy_name, outcomes in evaluation.policy.items():
            for figure, value, _ in outcomes[model].figures():
                metrics[f"{policy_name}.{figure}"] = value
        metrics.update(selection)
        recorded = results.record(
            experiment_id,
            RunRecord(
                key=f"{base}/{model}",
                name=f"model: {model} · {week.name} {week.label}",
                params={"cohort_week": week.name, "label": week.label, "model": model},
                tags={
                    **common_tags,
                    "shadowgate.role": "model",
                    "shadowgate.model": model,
                    "shadowgate.alerts": _alert_tag(own),
                    "mlflow.note.content": _with_alerts(f"{model} on cohort {week.name}, {week.label} label.", own),
                },
                metrics=_shown(metrics),
                step=step,
                timestamp_ms=stamp,
            ),
        )
        run_ids[model] = recorded.run_id
    with tempfile.TemporaryDirectory(prefix="shadowgate-week-", dir=report_root) as tmp:
        out = Path(tmp)
        segments = evaluation.segments
        if segments is not None:
            segments = segments[segments["model"].isin(models)]
            segments.to_csv(out / "segments.csv", index=False)
        served_policy = next(iter(evaluation.policy), None)
        render_week_report(
            out,
            week=f"{week.name} ({week.start:%Y-%m-%d} to {week.end - dt.timedelta(days=1):%Y-%m-%d})",
            label=f"{week.label} ({'instalment 2 late or a default by day 17' if week.label == 'early' else 'default by day 90'})",  # noqa: E501
            population=f"decisions approved by the serving policy whose {week.label} label matured by "
            f"{week.as_of:%Y-%m-%d %H:%M} UTC",
            metrics={m: evaluation.models[m] for m in models},
            comparisons=[c.row() for c in comparisons],
            segments=segments,
            policy={m: evaluation.policy[served_policy][m] for m in models} if served_policy else None,
            selection=selection or None,
            verdicts=[verdict_sentence(c, week) for c in comparisons],
            segment_min_defaults=plan.settings.segment_min_defaults,
        )
        c = comparisons[0] if comparisons else None
        metrics = {}
        if c is not None:
            metrics = {
                k: float(v) for k, v in c.row().items() if isinstance(v, (int, float)) and not isinstance(v, str)
            }
            metrics.update(selection)
        name = f"{c.treatment} vs {c.control}" if c else "comparison"
        recorded = results.record(
            experiment_id,
            RunRecord(
                key=f"{base}/comparison",
                name=f"comparison: {name} · {week.name} {week.label}",
                params={"cohort_week": week.name, "label": week.label, "comparison": name},
                tags={
                    **common_tags,
                    "shadowgate.role": "comparison",
                    "shadowgate.crossed_boundary": str(bool(c and c.crossed)).lower(),
                    "shadowgate.verdict": c.verdict if c else "none",
                    "shadowgate.look": str(c.look) if c else "0",
                    "mlflow.note.content": _with_alerts(
                        verdict_sentence(c, week) if c else "No comparison this week.", concerned
                    ),
                    "shadowgate.alerts": _alert_tag(concerned),
                    "shadowgate.simpsons_reversals": str(
                        sum(1 for r in evaluation.reversals if r["experiment_id"] == experiment.experiment_id)
                    ),
                },
                metrics=_shown(metrics),
                step=step,
                timestamp_ms=stamp,
                artifacts_dir=out,
            ),
        )
        run_ids[name] = recorded.run_id
        url = results.run_url(experiment_id, recorded.run_id)
        if url is not None:  # where the task log sends a person: the comparison run, its report in Artifacts
            logger.info("%s %s — MLflow: %s", week.name, week.label, url)
        if c is not None:
            logger.info("%s", verdict_sentence(c, week))
    return run_ids


def _alert_tag(alerts: Sequence[Alert]) -> str:
    return " | ".join(a.title for a in alerts) if alerts else "none"


def _with_alerts(description: str, alerts: Sequence[Alert]) -> str:
    """A run's description with the alerts raised this week on what it concerns (MLflow renders it as Markdown)."""
    if not alerts:
        return description
    lines = [f"- **{a.severity.upper()}** {a.title}: {a.text}" for a in alerts]
    return description + "\n\n**Alerts raised this week** (each sent once while it holds):\n" + "\n".join(lines)


def _shown(metrics: Mapping[str, float]) -> dict[str, float]:
    """Metrics as MLflow shows them: four significant digits (the UI prints every digit; the exact figures are in
    ``model_metrics``); counts stay exact."""
    out = {}
    for key, value in metrics.items():
        v = float(value)
        out[key] = v if (not math.isfinite(v) or v == int(v)) else float(f"{v:.4g}")
    return out


# ------------------------------------------------------------------------------------------------ wiring


def plans_from_book(experiments: Iterable[Any]) -> list[ComparisonPlan]:
    """:class:`ComparisonPlan` of every experiment of the book that ever ran (active, completed or stopped)."""
    out = []
    for e in experiments:
        if str(e.status) == "draft":
            continue
        out.append(
            ComparisonPlan(
                experiment_id=e.id,
                control_alias=e.control_alias,
                treatment_alias=e.treatment_alias,
                mode=str(e.mode),
                treatment_share=float(e.treatment_share),
                started_at=e.started_at,
                description=e.description,
            )
        )
    return out


def revised_weeks(
    warehouse: Warehouse, *, as_of: dt.datetime, labels: Sequence[str], due: Sequence[CohortWeek] = ()
) -> list[CohortWeek]:
    """The weeks evaluated before their labels were revised by late outcomes
    (:func:`~shadowgate.pipelines.ground_truth.weeks_to_reevaluate`), to evaluate again as of ``as_of`` beside the
    weeks ``due``: the re-run replaces their figures, MLflow keeps each revision in the metric's history, and
    ``label_revisions`` records why."""
    from shadowgate.pipelines.ground_truth import weeks_to_reevaluate

    seen = {(w.start, w.label) for w in due}
    out = []
    for r in weeks_to_reevaluate(warehouse, as_of=as_of):
        if r.label in labels and (r.cohort_start, r.label) not in seen:
            seen.add((r.cohort_start, r.label))
            out.append(cohort_week(r.cohort_start, r.label, as_of=as_of))
            logger.info(
                "weekly_performance: %s %s label revised (revision %d, %d labels): evaluated again",
                out[-1].name,
                r.label,
                r.revision,
                r.labels_revised,
            )
    return out


@contextlib.contextmanager
def evaluation_inputs(
    *, as_of: dt.datetime, week_start: dt.date | None = None, labels: Sequence[str] | None = None
) -> Iterator[dict[str, Any]]:
    """The arguments of :func:`weekly_performance` resolved from the environment's settings, for the DAG: the
    warehouse, the MLflow results store, the decision policies' thresholds and the experiment book (the decisioning
    configuration serving also runs on), each version's validation AUC, and the shared alert path.

    The book is read from Redis (``SHADOWGATE_REDIS_URL``); when Redis cannot be reached, the shipped
    ``experiments.yaml`` stands in (logged): the comparisons are the same, only a changed start date or share differs.
    """
    from shadowgate.config import (
        AlertSettings,
        ExperimentSettings,
        GroundTruthSettings,
        MLflowSettings,
        PathSettings,
        RedisSettings,
        WarehouseSettings,
    )
    from shadowgate.decisioning.experiments import load_book
    from shadowgate.decisioning.policies import load_policy, shipped_policy_names
    from shadowgate.pipelines.alerts import send_alert
    from shadowgate.registry import ModelRegistry
    from shadowgate.storage import open_warehouse
    from shadowgate.storage.experiment_store import ExperimentStore, ExperimentStoreUnavailableError, redis_client
    from shadowgate.storage.results import MlflowResultsStore

    ground_truth = GroundTruthSettings()
    plan = EvaluationPlan(
        settings=EvaluationSettings(),
        early_maturity_days=ground_truth.early_maturity_days,
        maturity_days=ground_truth.maturity_days,
    )
    chosen: list[Label] = [label for label in LABELS if labels is None or label in labels]
    if week_start is not None:
        weeks = [cohort_week(week_start, label, as_of=as_of) for label in chosen]
    else:
        weeks = cohort_weeks(as_of, plan=plan, labels=chosen)
    client = redis_client(RedisSettings().resolved_url, timeout_s=5.0)
    try:
        stored = ExperimentStore(client, key_prefix=ExperimentSettings().key_prefix).load()
        book = stored.book if stored is not None else load_book()
    except ExperimentStoreUnavailableError as error:
        logger.warning("experiment book: Redis unreachable (%s); using the shipped experiments.yaml", error)
        book = load_book()
    finally:
        client.close()
    mlflow_settings = MLflowSettings()
    registry = ModelRegistry(tracking_uri=mlflow_settings.tracking_uri, model_name=mlflow_settings.model_name)
    url = AlertSettings().webhook_url
    webhook = url.get_secret_value() if url else None
    warehouse = open_warehouse(WarehouseSettings(), home=PathSettings().home)
    try:
        if week_start is None:
            weeks = [*weeks, *revised_weeks(warehouse, as_of=as_of, labels=chosen, due=weeks)]
        yield {
            "warehouse": warehouse,
            "results": MlflowResultsStore(mlflow_settings.tracking_uri),
            "as_of": as_of,
            "plan": plan,
            "policies": {name: load_policy(name).thresholds for name in shipped_policy_names()},
            "experiments": plans_from_book(book.experiments),
            "weeks": weeks,
            # Asked per model and per comparison every week: one registry lookup per version.
            "validation_auc": functools.lru_cache(maxsize=None)(
                lambda alias, version: registry.training_metric(version)
            ),
            "alert": lambda a: send_alert(a, webhook_url=webhook),
        }
    finally:
        warehouse.close()
