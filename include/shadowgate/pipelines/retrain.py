"""``retrain_challenger``: train the next challenger on the decisions as production logged them, and let it take
``@challenger`` only if a replay says it is not worse than the champion.

* **Rows:** the approved decisions of the training window whose **final** label is known at the run's instant
  (``labeled_predictions``, label versions as known then). They are joined with the features **exactly as logged**
  when each decision was served (``prediction_logs.features``, never recomputed) and with the contract inputs, from
  which the new reference sample is drawn.
* **Window:** the ``training_days`` that end at the Monday on or before ``as_of − maturity``. Every run in the same
  week sees the same window, so a drift-triggered run and a scheduled run of one week register **one** version: the
  run key is the window. Its last ``replay_days`` are held out for the replay.
* **Enough labels first:** too few defaults to train, or to replay, is a skip. The reason goes to the log and to an
  MLflow run; nothing is registered.
* **Degenerate fits are refused** by :func:`~shadowgate.training.train.fit_and_register`: too few defaults after the
  split, a feature missing or constant, a validation AUC below the floor. The reason is logged and raised, so the
  task fails and alerts, and nothing is registered.
* **Replay before shadowing:** the new version scores the held-out matured decisions the champion decided. They are
  compared by DeLong's paired test with the champion's **logged** scores. A version whose AUC is worse by more than
  the margin δ (the 95 % interval's upper end below −δ) is registered **archived**, with its reasons, and never
  takes ``@challenger``. Months of shadow traffic are not spent on it.
* **Lineage** is on the run and the version: the window, the row and default counts, the data query, and the
  champion version it was compared with. ``@champion`` is never touched.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from shadowgate.config import EvaluationSettings, MLflowSettings, TrainingSettings
from shadowgate.contract import drift_columns
from shadowgate.evaluation.stats import delong_test
from shadowgate.events.schemas import column_name
from shadowgate.features import FEATURE_NAMES, FEATURE_SET
from shadowgate.pipelines.performance import pivot_scores
from shadowgate.registry import CHALLENGER, CHAMPION, DeploymentLog, ModelRegistry
from shadowgate.storage.references import MlflowReferenceStore
from shadowgate.storage.warehouse import Warehouse
from shadowgate.training.train import (
    ModelKind,
    TemporalSplit,
    TrainingData,
    alias_action,
    archived_reason,
    fit_and_register,
)

logger = logging.getLogger(__name__)

DATA_QUERY = "queries/training_rows"


@dataclass(frozen=True)
class RetrainWindow:
    """The purchases a retraining reads: ``[start, end)``, the last days from ``replay_start`` held out."""

    start: dt.date
    end: dt.date
    replay_start: dt.date
    as_of: dt.datetime

    @property
    def key(self) -> str:
        return f"{self.start.isoformat()}..{self.end.isoformat()}"


def training_window(
    as_of: dt.datetime, *, maturity_days: int, training_days: int, replay_days: int, end: dt.date | None = None
) -> RetrainWindow:
    """The window of a run as of ``as_of``: ``training_days`` ending at the Monday on or before ``as_of − maturity``
    (or at ``end`` when given), the last ``replay_days`` of it held out for the replay."""
    if end is None:
        matured = (as_of - dt.timedelta(days=maturity_days)).date()
        end = matured - dt.timedelta(days=matured.weekday())
    start = end - dt.timedelta(days=training_days)
    return RetrainWindow(start=start, end=end, replay_start=end - dt.timedelta(days=replay_days), as_of=as_of)


@dataclass(frozen=True)
class LoggedRows:
    """The window's matured decisions as logged, split into the training rows and the replay rows."""

    train: TrainingData
    replay_x: pd.DataFrame
    replay_y: np.ndarray
    replay_champion: np.ndarray
    """The champion's logged score on each replay row (NaN where it gave none)."""
    champion_versions: tuple[str, ...]
    other_feature_sets: int


def logged_rows(warehouse: Warehouse, window: RetrainWindow) -> LoggedRows:
    """Read the window's matured decisions with their logged features (:data:`DATA_QUERY`)."""
    watched = drift_columns()
    names = [*watched.numerical, *watched.categorical]
    start = dt.datetime.combine(window.start, dt.time(), dt.UTC)
    end = dt.datetime.combine(window.end, dt.time(), dt.UTC)
    table = warehouse.run(
        DATA_QUERY,
        {"window_start": start, "window_end": end, "as_of": window.as_of},
        columns=", ".join(f"p.{n}" for n in names),
    )
    feature_sets = np.asarray(table.column("feature_set").to_numpy(zero_copy_only=False), dtype=object)
    keep = feature_sets == FEATURE_SET
    other = int((~keep).sum())
    if other:
        logger.warning("%d rows were logged with another feature set than %s: left out", other, FEATURE_SET)
    table = table.filter(pa.array(keep))
    features = table.column("features").combine_chunks()
    x = pd.DataFrame(
        {
            name: np.asarray(features.field(column_name(name)).to_numpy(zero_copy_only=False), dtype=np.float64)
            for name in FEATURE_NAMES
        }
    )
    inputs = table.select(["event_timestamp", *names]).to_pandas()
    y = np.asarray(table.column("defaulted").to_numpy(zero_copy_only=False), dtype=np.int64)
    scores = pivot_scores(table.column("scores"), table.num_rows)
    champion = np.full(table.num_rows, math.nan)
    versions = []
    for key, values in scores.items():
        if key.alias == CHAMPION:
            present = ~np.isnan(values)
            champion[present] = values[present]
            versions.append(key.version)
    replay = (inputs["event_timestamp"] >= pd.Timestamp(window.replay_start, tz="UTC")).to_numpy()
    ids = table.column("prediction_id").to_pandas()
    train = TrainingData(
        inputs=inputs[~replay].reset_index(drop=True),
        x=x[~replay].reset_index(drop=True),
        y=y[~replay],
        keys=(ids[~replay].astype(str) + ":" + pd.Series(y[~replay]).astype(str)).reset_index(drop=True),
        source={
            "data_source": "warehouse: labeled_predictions (final label as known at as_of) ⋈ prediction_logs "
            "(features as logged)",
            "data_query": DATA_QUERY,
            "data_window": window.key,
            "data_replay_from": window.replay_start.isoformat(),
        },
    )
    return LoggedRows(
        train=train,
        replay_x=x[replay].reset_index(drop=True),
        replay_y=y[replay],
        replay_champion=champion[replay],
        champion_versions=tuple(sorted(versions)),
        other_feature_sets=other,
    )


def replay_check(model: Any, rows: LoggedRows, *, margin: float, champion: str) -> dict[str, Any]:
    """The new model against the champion's logged scores on the held-out replay rows (DeLong, paired)."""
    scored = ~np.isnan(rows.replay_champion)
    y = rows.replay_y[scored]
    new = model.predict_proba(rows.replay_x[scored])[:, 1]
    figures: dict[str, Any] = {"replay_n": int(scored.sum()), "replay_defaults": int(y.sum())}
    if not 0 < y.sum() < len(y):
        figures["archive"] = None
        return figures
    test = delong_test(y, new, rows.replay_champion[scored])
    figures.update(
        {
            "replay_auc_new": test.auc_a,
            "replay_auc_champion": test.auc_b,
            "replay_delta_auc": test.difference,
            "replay_delta_ci_low": test.ci[0],
            "replay_delta_ci_high": test.ci[1],
        }
    )
    if test.ci[1] < -margin:
        figures["archive"] = (
            f"worse than {champion} on the replay of {int(scored.sum()):,} matured decisions it never trained on: "
            f"ΔAUC {test.difference:+.4f} (95 % interval {test.ci[0]:+.4f} to {test.ci[1]:+.4f}) below −{margin} "
            "(the comparison margin): archived instead of taking @challenger"
        )
    else:
        figures["archive"] = None
    return figures


def plan_shortfall(
    rows: LoggedRows, *, window: RetrainWindow, evaluation: EvaluationSettings, correlation: float = 0.85
) -> str | None:
    """Why the weekly comparison plan could not reach its power on the traffic this window shows (or None).

    The window's matured, approved decisions a week and their default rate stand for what a challenger's shadow
    evaluation would see; the champion's AUC is its logged one on them. With the plan's settings (margin, MDE, α,
    power, looks) :func:`~shadowgate.evaluation.planning.plan_experiment` says whether the plan's information is
    reached within its looks. If it is not, a new challenger could never be shown superior at the planned power.
    """
    from shadowgate.evaluation.metrics import binary_metrics
    from shadowgate.evaluation.planning import plan_experiment

    y = np.concatenate([rows.train.y, rows.replay_y])
    weeks = max((window.end - window.start).days / 7.0, 1.0)
    if len(y) == 0 or not 0 < y.mean() < 1:
        return f"no matured defaults and repaid purchases both in {window.key}"
    scored = ~np.isnan(rows.replay_champion)
    champion_auc = 0.75  # when the replay days hold no logged champion score (stated in the reason)
    if scored.any() and 0 < rows.replay_y[scored].sum() < scored.sum():
        champion_auc = binary_metrics(rows.replay_y[scored], rows.replay_champion[scored]).auc
    summary = plan_experiment(
        decisions_per_week=len(y) / weeks,
        default_rate=float(y.mean()),
        champion_auc=float(min(max(champion_auc, 0.5), 0.98)),
        margin=evaluation.auc_margin,
        mde=evaluation.minimum_detectable_auc_difference,
        alpha=evaluation.alpha,
        power=evaluation.power,
        max_looks=evaluation.max_looks,
        correlation=correlation,
        futility=evaluation.futility,
    )
    if summary.reaches_max_information:
        return None
    defaults_a_week = len(y) / weeks * float(y.mean())
    reached = summary.weeks_to_end * summary.info.information / summary.plan.max_information
    return (
        f"{defaults_a_week:.0f} matured defaults a week (champion AUC {champion_auc:.3f}) give the comparison plan "
        f"{100 * reached:.0f}% of its information in its {evaluation.max_looks} weekly looks: it could not reach "
        f"its power {evaluation.power} (about {defaults_a_week / max(reached, 1e-9):.0f} defaults a week would)"
    )


def retrain_from_warehouse(
    *,
    rows: LoggedRows,
    window: RetrainWindow,
    kind: ModelKind,
    training: TrainingSettings,
    mlflow_settings: MLflowSettings,
    deployments: DeploymentLog,
    actor: str,
    evaluation: EvaluationSettings,
    min_training_defaults: int,
    min_replay_defaults: int,
    force: bool = False,
) -> dict[str, Any]:
    """Train ``kind`` on the window's logged decisions (``rows``: :func:`logged_rows`, read before: the warehouse is
    not held while the model fits); register it as ``@challenger`` (or archived, or skip).

    Returns a JSON-able summary for the Airflow UI: ``outcome`` (``registered``, ``archived``, ``skipped``), the
    version, the counts, the replay's figures and the reasons. ``evaluation`` is the comparison plan's settings: its
    margin δ judges the replay, and its power and looks decide whether the traffic is enough.
    """
    registry = ModelRegistry(
        tracking_uri=mlflow_settings.tracking_uri, model_name=mlflow_settings.model_name, deployments=deployments
    )
    action = alias_action(registry, CHALLENGER, actor=actor)
    champion = registry.version(CHAMPION)
    champion_name = f"{CHAMPION}@{champion.version}" if champion else "no champion"
    train_defaults, replay_defaults = int(rows.train.y.sum()), int(rows.replay_y.sum())
    counts: dict[str, Any] = {
        "window": window.key,
        "replay_from": window.replay_start.isoformat(),
        "train_rows": len(rows.train.y),
        "train_defaults": int(rows.train.y.sum()),
        "replay_rows": len(rows.replay_y),
        "replay_defaults": int(rows.replay_y.sum()),
        "other_feature_sets": rows.other_feature_sets,
    }
    reasons = []
    if train_defaults < min_training_defaults:
        reasons.append(
            f"{counts['train_defaults']} matured defaults to train on in {window.key}, fewer than "
            f"{min_training_defaults} (SHADOWGATE_RETRAIN_MIN_TRAINING_DEFAULTS)"
        )
    if replay_defaults < min_replay_defaults:
        reasons.append(
            f"{counts['replay_defaults']} matured defaults to replay from {window.replay_start}, fewer than "
            f"{min_replay_defaults} (SHADOWGATE_RETRAIN_MIN_REPLAY_DEFAULTS)"
        )
    if not reasons:
        shortfall = plan_shortfall(rows, window=window, evaluation=evaluation)
        if shortfall:
            reasons.append(shortfall)
    run_key = f"retrain_challenger/{kind.value}/{window.key}"
    if force:  # a new version even though this window has one (a fixed feed, a changed recipe)
        run_key += f"/forced-{window.as_of.isoformat()}"
    if reasons:
        reason = "; ".join(reasons) + ": not trained"
        logger.warning("retrain_challenger skipped: %s", reason)
        _record_skip(mlflow_settings, run_key=run_key, reason=reason, counts=counts)
        return {"outcome": "skipped", "reason": reason, **counts}

    tags = {
        "shadowgate.window": window.key,
        "shadowgate.data_query": DATA_QUERY,
        "shadowgate.train_rows": str(counts["train_rows"]),
        "shadowgate.train_defaults": str(counts["train_defaults"]),
        "shadowgate.parent_champion": champion.version if champion else "",
    }
    verdict: dict[str, Any] = {}

    def check(model: Any, split: TemporalSplit) -> dict[str, Any]:
        verdict.update(replay_check(model, rows, margin=evaluation.auc_margin, champion=champion_name))
        return verdict

    result = fit_and_register(
        rows.train,
        kind=kind,
        as_of=window.as_of,
        alias=CHALLENGER,
        training=training,
        mlflow_settings=mlflow_settings,
        registry=registry,
        action=action,
        actor=actor,
        run_key=run_key,
        tags=tags,
        check=check,
    )
    archived = verdict.get("archive") if verdict else archived_reason(mlflow_settings, result.model_version)
    # The new reference's statistics, binned now (once per version) rather than by the first drift check.
    watched = drift_columns()
    MlflowReferenceStore(
        mlflow_settings.tracking_uri, categorical=watched.categorical, numerical=watched.numerical
    ).profile(result.model_version, result.run_id)
    return {
        "outcome": "archived" if archived else "registered",
        "model_version": result.model_version,
        "alias": None if archived else CHALLENGER,
        "reason": archived,
        "valid_auc": round(result.metrics.auc, 6),
        "run_id": result.run_id,
        "parent_champion": champion.version if champion else None,
        **counts,
        **{k: v for k, v in verdict.items() if k != "archive"},
    }


def _record_skip(mlflow_settings: MLflowSettings, *, run_key: str, reason: str, counts: dict[str, Any]) -> None:
    """A skipped retraining leaves a run in the training experiment saying why (nothing registered)."""
    from mlflow import MlflowClient

    from shadowgate.storage.results import RUN_KEY_TAG

    client = MlflowClient(tracking_uri=mlflow_settings.tracking_uri, registry_uri=mlflow_settings.tracking_uri)
    experiment = client.get_experiment_by_name(mlflow_settings.training_experiment)
    experiment_id = (
        experiment.experiment_id if experiment else client.create_experiment(mlflow_settings.training_experiment)
    )
    run = client.create_run(
        experiment_id,
        run_name=f"skipped: {run_key}",
        tags={RUN_KEY_TAG: run_key, "shadowgate.skipped": reason, "mlflow.note.content": reason},
    )
    for key, value in counts.items():
        client.log_param(run.info.run_id, key, value)
    client.set_terminated(run.info.run_id, status="FINISHED")


@contextlib.contextmanager
def retrain_inputs(
    *,
    as_of: dt.datetime,
    window_end: dt.date | None = None,
    training_days: int | None = None,
    kind: str | None = None,
    force: bool = False,
) -> Iterator[dict[str, Any]]:
    """The arguments of :func:`retrain_from_warehouse` resolved from the environment's settings (for the DAG)."""
    from shadowgate.config import (
        GroundTruthSettings,
        PathSettings,
        RetrainSettings,
        WarehouseSettings,
    )
    from shadowgate.storage import open_warehouse
    from shadowgate.storage.deployments import WarehouseDeploymentLog

    retrain = RetrainSettings()
    window = training_window(
        as_of,
        maturity_days=GroundTruthSettings().maturity_days,
        training_days=training_days or retrain.training_days,
        replay_days=retrain.replay_days,
        end=window_end,
    )
    home = PathSettings().home
    warehouse = open_warehouse(WarehouseSettings(), home=home)
    try:
        rows = logged_rows(warehouse, window)
    finally:
        warehouse.close()  # not held while the model fits: other tasks take their turn on the file
    yield {
        "rows": rows,
        "window": window,
        "kind": ModelKind(kind) if kind else ModelKind.GRADIENT_BOOSTING,
        "training": TrainingSettings(),
        "mlflow_settings": MLflowSettings(),
        "deployments": WarehouseDeploymentLog.from_settings(WarehouseSettings(), home=home),
        "actor": "airflow:retrain_challenger",
        "evaluation": EvaluationSettings(),
        "min_training_defaults": retrain.min_training_defaults,
        "min_replay_defaults": retrain.min_replay_defaults,
        "force": force,
    }
