"""Retrain the challenger on matured purchases and point ``@challenger`` at the new version."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from shadowgate.config import MLflowSettings, TrainingSettings
from shadowgate.registry import CHALLENGER, DeploymentLog
from shadowgate.simulation import read_parquet
from shadowgate.training.train import ModelKind, train_and_register


def retrain_challenger(
    *,
    data_dir: Path,
    as_of: dt.datetime,
    run_key: str,
    training: TrainingSettings,
    mlflow_settings: MLflowSettings,
    deployments: DeploymentLog,
    actor: str,
) -> dict[str, Any]:
    """Train a gradient-boosting challenger on purchases matured by ``as_of`` and register it as ``@challenger``.

    Re-running with the same ``run_key`` returns the version registered the first time (no duplicate versions).
    The move of ``@challenger`` is recorded in ``deployments`` (a re-run sends the recorded move again: stored once).
    Until the warehouse lands (issue 4) the labelled history is read from the simulated Parquet tables.

    Returns:
        A small JSON-able summary for the Airflow UI (version, alias, validation AUC, row counts, run id).
    """
    tables = read_parquet(data_dir)
    result = train_and_register(
        transactions=tables["transactions"],
        outcomes=tables["outcomes"],
        kind=ModelKind.GRADIENT_BOOSTING,
        as_of=as_of,
        alias=CHALLENGER,
        training=training,
        mlflow_settings=mlflow_settings,
        deployments=deployments,
        actor=actor,
        run_key=run_key,
    )
    return {
        "model_version": result.model_version,
        "alias": CHALLENGER,
        "valid_auc": round(result.metrics.auc, 6),
        "n_train": result.n_train,
        "n_valid": result.n_valid,
        "run_id": result.run_id,
    }
