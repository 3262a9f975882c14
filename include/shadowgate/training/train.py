"""Training: labels from matured outcomes, a temporal split, two model families, MLflow logging and registration.

The champion is a logistic-regression scorecard (standardised engineered features); the challenger is histogram
gradient boosting. Both read the same engineered features from :mod:`shadowgate.features`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shadowgate.config import MLflowSettings, TrainingSettings
from shadowgate.contract import drift_columns
from shadowgate.decisioning.model_trust import artifact_metadata, checked_skops_types
from shadowgate.evaluation.metrics import BinaryMetrics, binary_metrics
from shadowgate.events.deployment import DeploymentAction
from shadowgate.features import FEATURE_NAMES, FEATURE_SET, features_frame
from shadowgate.registry import CHAMPION, DeploymentLog, ModelRegistry
from shadowgate.storage.results import RUN_KEY_TAG, mlflow_ui_url

FEATURE_SET_TAG = "shadowgate.feature_set"


class ModelKind(StrEnum):
    """Model families the project trains."""

    SCORECARD = "logistic_scorecard"
    GRADIENT_BOOSTING = "hist_gradient_boosting"


def matured_labels(
    transactions: pd.DataFrame, outcomes: pd.DataFrame, *, as_of: dt.datetime, maturity_days: int
) -> pd.DataFrame:
    """Labels of purchases old enough for their outcome to be settled, built from the outcome event log only.

    A purchase is labelled when it is at least ``maturity_days`` old at ``as_of``; it is a default when a ``default``
    event for it was known by ``as_of``.

    Returns:
        ``transaction_id``, ``event_timestamp`` and ``is_default`` (bool) of every matured purchase, in time order.
    """
    cutoff = pd.Timestamp(as_of) - pd.Timedelta(days=maturity_days)
    matured = transactions.loc[transactions["event_timestamp"] <= cutoff, ["transaction_id", "event_timestamp"]]
    known = outcomes[(outcomes["event_type"] == "default") & (outcomes["event_timestamp"] <= pd.Timestamp(as_of))]
    labelled = matured.assign(is_default=matured["transaction_id"].isin(known["transaction_id"]))
    return labelled.sort_values("event_timestamp", kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class TemporalSplit:
    """Row positions of training and validation purchases, and the instant that separates them."""

    train: np.ndarray
    valid: np.ndarray
    boundary: pd.Timestamp


def temporal_split(timestamps: pd.Series, *, validation_days: int) -> TemporalSplit:
    """Hold out the last ``validation_days`` of purchases for validation (never a random split: time leaks)."""
    boundary = timestamps.max() - pd.Timedelta(days=validation_days)
    is_valid = (timestamps > boundary).to_numpy()
    if is_valid.all() or not is_valid.any():
        raise ValueError(f"a {validation_days}-day validation window leaves no training or no validation rows")
    return TemporalSplit(train=np.flatnonzero(~is_valid), valid=np.flatnonzero(is_valid), boundary=boundary)


def build_estimator(kind: ModelKind, *, seed: int) -> Any:
    """An unfitted sklearn estimator of the given family."""
    if kind is ModelKind.SCORECARD:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        return Pipeline([("scale", StandardScaler()), ("logit", LogisticRegression(C=1.0, max_iter=2000))])
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(
        learning_rate=0.06,
        max_iter=300,
        max_leaf_nodes=31,
        min_samples_leaf=40,
        l2_regularization=1.0,
        random_state=seed,
    )


@dataclass(frozen=True)
class TrainingResult:
    """What one training produced."""

    kind: ModelKind
    alias: str | None
    run_id: str
    model_version: str
    metrics: BinaryMetrics
    n_train: int
    n_valid: int
    mlflow_url: str | None = None
    """The run in MLflow's UI, in its model-training view (None for a store without a UI)."""


@dataclass(frozen=True)
class TrainingData:
    """What a training fits on, however it was gathered (the simulated tables, or the decisions as logged).

    Attributes:
        inputs: one row per purchase, in time order: ``event_timestamp`` and the contract's drift columns (the new
            reference sample is drawn from them).
        x: the engineered features of the same rows, columns :data:`~shadowgate.features.FEATURE_NAMES`.
        y: 1 for a default.
        keys: the rows' identities (hashed into the run's data fingerprint).
        source: what to record about where the rows came from (MLflow params, ``data_*``).
    """

    inputs: pd.DataFrame
    x: pd.DataFrame
    y: np.ndarray
    keys: pd.Series
    source: dict[str, str]


class TrainingRefusedError(ValueError):
    """The fit would be degenerate (too few defaults, a feature missing or constant, a validation AUC below the
    floor): nothing is registered."""


def _ui_url(mlflow_settings: MLflowSettings, experiment_id: str, run_id: str) -> str | None:
    uri = mlflow_settings.tracking_uri
    return mlflow_ui_url(uri, experiment_id, run_id) if uri.startswith(("http://", "https://")) else None


def _find_keyed(
    run_key: str, *, registry: ModelRegistry, mlflow_settings: MLflowSettings, kind: ModelKind
) -> TrainingResult | None:
    """The finished training run with this key that registered a version, if any."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_settings.tracking_uri, registry_uri=mlflow_settings.tracking_uri)
    experiment = client.get_experiment_by_name(mlflow_settings.training_experiment)
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{RUN_KEY_TAG}` = '{run_key}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
    )
    for run in runs:
        versions = client.search_model_versions(f"name = '{registry.model_name}' and run_id = '{run.info.run_id}'")
        if versions:
            m = {k.removeprefix("valid_"): v for k, v in run.data.metrics.items() if k.startswith("valid_")}
            return TrainingResult(
                kind=kind,
                alias=None,
                run_id=run.info.run_id,
                model_version=str(versions[0].version),
                metrics=BinaryMetrics.from_dict(m),
                n_train=int(run.data.params["n_train"]),
                n_valid=int(run.data.params["n_valid"]),
                mlflow_url=_ui_url(mlflow_settings, experiment.experiment_id, run.info.run_id),
            )
    return None


def _fingerprint(frame: pd.DataFrame) -> str:
    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()[:16]


def _plots(y: np.ndarray, scores: np.ndarray, title: str) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import CalibrationDisplay
    from sklearn.metrics import RocCurveDisplay

    roc, ax = plt.subplots(figsize=(5, 5))
    RocCurveDisplay.from_predictions(y, scores, ax=ax, name=title, plot_chance_level=True)
    calibration, ax = plt.subplots(figsize=(5, 5))
    CalibrationDisplay.from_predictions(y, scores, n_bins=15, strategy="quantile", ax=ax, name=title)
    return {"plots/roc.png": roc, "plots/calibration.png": calibration}


def alias_action(registry: ModelRegistry, alias: str, *, actor: str) -> DeploymentAction:
    """How a training may move ``alias``, or refused before anything is trained.

    A non-champion alias is assigned. ``@champion`` only as the first deployment, while it is not set (then the
    promotion gate and rollbacks move it).

    Raises:
        AliasMoveRefusedError: the move is not allowed (``@champion`` already set).
    """
    action: DeploymentAction = "assign" if alias != CHAMPION else "first_deployment"
    current = registry.version(alias)
    registry.check_move(
        alias, action=action, reason="trained by shadowgate", actor=actor, current=current.version if current else None
    )
    return action


def train_and_register(
    *,
    transactions: pd.DataFrame,
    outcomes: pd.DataFrame,
    kind: ModelKind,
    as_of: dt.datetime,
    alias: str | None,
    training: TrainingSettings,
    mlflow_settings: MLflowSettings,
    deployments: DeploymentLog | None = None,
    actor: str = "shadowgate",
    run_key: str | None = None,
) -> TrainingResult:
    """Train one model on matured purchases, log it to MLflow, register a version and optionally move an alias.

    A non-champion alias (``@challenger``, ``@challenger-<suffix>``) is simply assigned. ``@champion`` is set only
    as the first deployment (while unset); otherwise the call is refused before training (the promotion gate and
    rollbacks move it). Every alias move is recorded (MLflow tags and a deployment event
    in ``deployments``: see :meth:`~shadowgate.registry.ModelRegistry.move_alias`).

    With a ``run_key`` the call is idempotent: when a run with that key already registered a version, that version is
    returned (and the alias re-pointed) instead of training again, so retried or re-run DAG tasks never duplicate.

    Args:
        transactions: purchases with the contract's columns.
        outcomes: the outcome event log (``event_type``, ``transaction_id``, ``event_timestamp``).
        kind: which model family.
        as_of: the instant the training "happens"; only outcomes known by then are used.
        alias: alias to point at the new version (None registers without an alias).
        training: split, maturity and reference-sample settings.
        mlflow_settings: tracking URI, experiment and registered model name.
        deployments: where alias moves are recorded (required with an alias).
        actor: who trains (recorded with the alias move).
        run_key: deterministic identity of this training (e.g. DAG id + as-of instant).

    Raises:
        AliasMoveRefusedError: the alias move is not allowed (nothing was trained).
        DeploymentNotRecordedError: the alias moved but its deployment event did not reach the warehouse.
    """

    registry = ModelRegistry(
        tracking_uri=mlflow_settings.tracking_uri, model_name=mlflow_settings.model_name, deployments=deployments
    )
    action: DeploymentAction | None = None
    if alias is not None:
        if deployments is None:
            raise ValueError("moving an alias needs a deployment log (deployments=...)")
        action = alias_action(registry, alias, actor=actor)
    if run_key is not None:
        existing = _find_keyed(run_key, registry=registry, mlflow_settings=mlflow_settings, kind=kind)
        if existing is not None:
            if alias is not None and action is not None:
                registry.move_alias(
                    alias,
                    existing.model_version,
                    reason=f"re-run of {run_key}",
                    actor=actor,
                    action=action,
                    evidence=_evidence(existing, kind=kind, run_key=run_key),
                )
            return TrainingResult(**{**existing.__dict__, "alias": alias})
    labels = matured_labels(transactions, outcomes, as_of=as_of, maturity_days=training.maturity_days)
    data = transactions.merge(labels[["transaction_id", "is_default"]], on="transaction_id", validate="one_to_one")
    data = data.sort_values("event_timestamp", kind="stable").reset_index(drop=True)
    watched = drift_columns()
    prepared = TrainingData(
        inputs=data[["event_timestamp", *watched.numerical, *watched.categorical]],
        x=pd.DataFrame(features_frame(data), columns=list(FEATURE_NAMES)),
        y=data["is_default"].to_numpy(dtype=np.int64),
        keys=data["transaction_id"].astype(str) + ":" + data["is_default"].astype(str),
        source={"data_source": "simulated tables (transactions + outcome events)"},
    )
    return fit_and_register(
        prepared,
        kind=kind,
        as_of=as_of,
        alias=alias,
        training=training,
        mlflow_settings=mlflow_settings,
        registry=registry,
        action=action,
        actor=actor,
        run_key=run_key,
    )


def fit_and_register(
    data: TrainingData,
    *,
    kind: ModelKind,
    as_of: dt.datetime,
    alias: str | None,
    training: TrainingSettings,
    mlflow_settings: MLflowSettings,
    registry: ModelRegistry,
    action: DeploymentAction | None,
    actor: str,
    run_key: str | None = None,
    tags: dict[str, str] | None = None,
    check: Callable[[Any, TemporalSplit], dict[str, Any] | None] | None = None,
) -> TrainingResult:
    """Fit ``kind`` on ``data`` (temporal split), log the run, register a version and move ``alias`` (if any).

    ``check`` (optional) sees the fitted model and the split before anything is registered. It returns None to
    register as planned, or a dict ``{"archive": reason, ...}``: the version is then registered with the tag
    ``shadowgate.archived`` and the reason, and no alias moves. The dict's other keys are logged as metrics.

    Raises:
        TrainingRefusedError: a degenerate fit (nothing registered; the run is logged as FAILED with the reason).
    """
    import matplotlib.pyplot as plt
    import mlflow
    import sklearn
    from mlflow.models import infer_signature

    if run_key is not None:
        existing = _find_keyed(run_key, registry=registry, mlflow_settings=mlflow_settings, kind=kind)
        if existing is not None:  # a re-run: the version registered the first time, its alias re-pointed
            archived_before = archived_reason(mlflow_settings, existing.model_version)
            if alias is not None and action is not None and not archived_before:
                registry.move_alias(
                    alias,
                    existing.model_version,
                    reason=f"re-run of {run_key}",
                    actor=actor,
                    action=action,
                    evidence=_evidence(existing, kind=kind, run_key=run_key),
                )
            return TrainingResult(**{**existing.__dict__, "alias": None if archived_before else alias})
    split = temporal_split(data.inputs["event_timestamp"], validation_days=training.validation_days)
    x, y = data.x, data.y
    _refuse_degenerate(x, y, split, training)
    model = build_estimator(kind, seed=training.seed)
    model.fit(x.iloc[split.train], y[split.train])
    valid_scores = model.predict_proba(x.iloc[split.valid])[:, 1]
    metrics = binary_metrics(y[split.valid], valid_scores)
    if metrics.auc < training.min_valid_auc:
        raise TrainingRefusedError(
            f"validation AUC {metrics.auc:.4f} below the floor {training.min_valid_auc} "
            "(SHADOWGATE_TRAIN_MIN_VALID_AUC): nothing registered"
        )
    verdict = check(model, split) if check is not None else None
    archived = (verdict or {}).get("archive")

    mlflow.set_tracking_uri(mlflow_settings.tracking_uri)
    mlflow.set_registry_uri(mlflow_settings.tracking_uri)
    experiment = mlflow.set_experiment(mlflow_settings.training_experiment)
    # MLflow 3's UI opens an experiment in its GenAI view unless told it is classic model development.
    mlflow.MlflowClient(
        tracking_uri=mlflow_settings.tracking_uri, registry_uri=mlflow_settings.tracking_uri
    ).set_experiment_tag(experiment.experiment_id, "mlflow.experimentKind", "custom_model_development")
    registry.ensure_model()
    window = data.inputs["event_timestamp"]
    with mlflow.start_run(run_name=f"train-{kind.value}-{pd.Timestamp(as_of):%Y%m%d}") as run:
        mlflow.set_tags(
            {
                "shadowgate.kind": kind.value,
                "shadowgate.alias": "" if archived else (alias or ""),
                RUN_KEY_TAG: run_key or "",
                **(tags or {}),
                **({"shadowgate.archived": str(archived)} if archived else {}),
            }
        )
        mlflow.log_params(
            {
                "model_kind": kind.value,
                "as_of": pd.Timestamp(as_of).isoformat(),
                "train_from": window.iloc[split.train].min().isoformat(),
                "train_to": window.iloc[split.train].max().isoformat(),
                "valid_from": window.iloc[split.valid].min().isoformat(),
                "valid_to": window.iloc[split.valid].max().isoformat(),
                "maturity_days": training.maturity_days,
                "n_train": len(split.train),
                "n_valid": len(split.valid),
                "n_features": len(FEATURE_NAMES),
                "feature_set": FEATURE_SET,
                "data_fingerprint": _fingerprint(data.keys.to_frame()),
                **data.source,
                "seed": training.seed,
                **{f"est_{k}": v for k, v in model.get_params().items() if isinstance(v, int | float | str | bool)},
            }
        )
        mlflow.log_metrics({f"valid_{k}": v for k, v in metrics.as_dict().items()})
        mlflow.log_metric("train_default_rate", float(y[split.train].mean()))
        mlflow.log_metric("train_defaults", float(y[split.train].sum()))
        for name, value in (verdict or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                mlflow.log_metric(name, float(value))
        for path, figure in _plots(y[split.valid], valid_scores, kind.value).items():
            mlflow.log_figure(figure, path)
            plt.close(figure)
        if kind is ModelKind.SCORECARD:
            coefficients = dict(zip(FEATURE_NAMES, model.named_steps["logit"].coef_[0].round(6).tolist(), strict=True))
            mlflow.log_dict(
                {"intercept": float(model.named_steps["logit"].intercept_[0]), **coefficients}, "scorecard.json"
            )
        _log_reference(data.inputs.iloc[split.train], model, x.iloc[split.train], training)

        example = x.iloc[split.valid[:5]]
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            serialization_format="skops",
            skops_trusted_types=checked_skops_types(model),
            signature=infer_signature(example, model.predict_proba(example)),
            input_example=example,
            pyfunc_predict_fn="predict_proba",
            registered_model_name=mlflow_settings.model_name,
            pip_requirements=[
                f"scikit-learn=={sklearn.__version__}",
                f"numpy=={np.__version__}",
                f"pandas=={pd.__version__}",
            ],
            metadata=artifact_metadata(),
        )
        version = str(info.registered_model_version)
    # On the version too, so the registry shows (and a reviewer can query) which features each version reads.
    mlflow.MlflowClient(
        tracking_uri=mlflow_settings.tracking_uri, registry_uri=mlflow_settings.tracking_uri
    ).set_model_version_tag(mlflow_settings.model_name, version, FEATURE_SET_TAG, FEATURE_SET)
    client = mlflow.MlflowClient(tracking_uri=mlflow_settings.tracking_uri, registry_uri=mlflow_settings.tracking_uri)
    for key, value in (tags or {}).items():
        client.set_model_version_tag(mlflow_settings.model_name, version, key, value)
    if archived:
        client.set_model_version_tag(mlflow_settings.model_name, version, "shadowgate.archived", str(archived))
    result = TrainingResult(
        kind=kind,
        alias=alias,
        run_id=run.info.run_id,
        model_version=version,
        metrics=metrics,
        n_train=len(split.train),
        n_valid=len(split.valid),
        mlflow_url=_ui_url(mlflow_settings, experiment.experiment_id, run.info.run_id),
    )
    if alias is not None and action is not None and not archived:
        registry.move_alias(
            alias,
            version,
            reason=f"trained by shadowgate ({kind.value}), valid AUC {metrics.auc:.4f}",
            actor=actor,
            action=action,
            evidence=_evidence(result, kind=kind, run_key=run_key),
        )
    return result


def archived_reason(mlflow_settings: MLflowSettings, version: str) -> str | None:
    """Why ``version`` was archived at registration (it never took an alias), or None."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_settings.tracking_uri, registry_uri=mlflow_settings.tracking_uri)
    return client.get_model_version(mlflow_settings.model_name, version).tags.get("shadowgate.archived")


def _refuse_degenerate(x: pd.DataFrame, y: np.ndarray, split: TemporalSplit, training: TrainingSettings) -> None:
    """Refuse a fit that could only be wrong: too few defaults on either side of the split, a feature missing or
    constant over the training rows."""
    for part, rows in (("training", split.train), ("validation", split.valid)):
        positives = int(y[rows].sum())
        if positives < training.min_defaults:
            raise TrainingRefusedError(
                f"{positives} defaults in the {part} rows, fewer than {training.min_defaults} "
                "(SHADOWGATE_TRAIN_MIN_DEFAULTS): nothing registered"
            )
    train = x.iloc[split.train]
    missing = [c for c in FEATURE_NAMES if c not in train.columns or bool(train[c].isna().all())]
    if missing:
        raise TrainingRefusedError(f"features missing from every training row: {', '.join(missing)}")
    constant = [c for c in FEATURE_NAMES if train[c].nunique(dropna=True) <= 1 and not _one_hot(c)]
    if constant:
        raise TrainingRefusedError(f"features constant over the training rows: {', '.join(constant)}")


def _one_hot(name: str) -> bool:
    """A category's indicator (``channel=social``) may be constant in a window: the category simply did not occur."""
    return "=" in name


def _evidence(result: TrainingResult, *, kind: ModelKind, run_key: str | None) -> dict[str, Any]:
    """What a training's alias move rests on: the run, the data and the validation metrics."""
    return {
        "source": "training",
        "kind": kind.value,
        "run_id": result.run_id,
        "run_key": run_key,
        "feature_set": FEATURE_SET,
        "n_train": result.n_train,
        "n_valid": result.n_valid,
        "valid_metrics": result.metrics.as_dict(),
    }


def _log_reference(train_rows: pd.DataFrame, model: Any, features: pd.DataFrame, training: TrainingSettings) -> None:
    """Freeze a sample of the training data for later drift checks: the purchase time (each column's wander inside
    the window is measured on it), the contract's drift columns and the model's score. No identifier (customer,
    purchase, merchant) is kept: the sample is read by anyone who reads the run."""
    import mlflow

    n = min(training.reference_rows, len(train_rows))
    pick = np.random.default_rng(training.seed).choice(len(train_rows), n, replace=False)
    pick.sort()
    watched = drift_columns()
    kept = ["event_timestamp", *watched.numerical, *watched.categorical]
    reference = train_rows.iloc[pick][kept].reset_index(drop=True)
    reference["score"] = model.predict_proba(features.iloc[pick])[:, 1]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "reference.parquet"
        reference.to_parquet(path, index=False)
        mlflow.log_artifact(str(path), artifact_path="reference")
        (Path(tmp) / "reference_summary.json").write_text(
            json.dumps({"rows": n, "columns": list(reference.columns)}, indent=2)
        )
        mlflow.log_artifact(str(Path(tmp) / "reference_summary.json"), artifact_path="reference")
