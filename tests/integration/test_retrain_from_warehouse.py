"""Retraining on the decisions as logged (real DuckDB warehouse, real MLflow store): the window's matured decisions
with their logged features, labelled by ``join_ground_truth``; a champion's logged scores to replay against."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from mlflow import MlflowClient

from shadowgate.config import EvaluationSettings, MLflowSettings, TrainingSettings
from shadowgate.events import DeploymentEvent
from shadowgate.pipelines.retrain import logged_rows, retrain_from_warehouse, training_window
from shadowgate.registry import CHALLENGER, ModelRegistry
from shadowgate.storage.duckdb import DuckDBWarehouse
from shadowgate.storage.warehouse import default_sql_dir
from shadowgate.training.train import ModelKind, TrainingRefusedError
from tests.warehouse_rows import logged_half_year

DENSE = {"transactions": 150_000, "customers": 15_000}
"""A half year dense enough (about 120 matured defaults a week) for the comparison plan to reach its power."""


class Recorded:
    """A deployment log that keeps the events (the warehouse one is tested in test_deployments)."""

    def __init__(self) -> None:
        self.events: list[DeploymentEvent] = []

    def record(self, event: DeploymentEvent) -> None:
        self.events.append(event)


def _run(path: Path, as_of: dt.datetime, uri: str, log: Recorded, **overrides: object) -> dict[str, object]:
    settings = {
        "min_training_defaults": 200,
        "min_replay_defaults": 50,
        "evaluation": EvaluationSettings(),
        **overrides,
    }
    training = settings.pop("training", TrainingSettings(reference_rows=2_000))
    window = training_window(as_of, maturity_days=90, training_days=126, replay_days=28)
    with DuckDBWarehouse(path, sql_dir=default_sql_dir()) as warehouse:
        rows = logged_rows(warehouse, window)
    return retrain_from_warehouse(
        rows=rows,
        window=window,
        kind=ModelKind.GRADIENT_BOOSTING,
        training=training,  # type: ignore[arg-type]
        mlflow_settings=MLflowSettings(tracking_uri=uri),
        deployments=log,
        actor="test",
        **settings,  # type: ignore[arg-type]
    )


def test_a_challenger_trained_on_the_logs_takes_its_alias_once_per_window(
    world, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = tmp_path / "warehouse.duckdb"
    as_of = logged_half_year(world(**DENSE), path, champion_noise=1.2)
    log = Recorded()
    summary = _run(path, as_of, uri, log)
    assert summary["outcome"] == "registered", summary
    assert summary["alias"] == CHALLENGER and summary["model_version"] == "1"
    assert summary["train_defaults"] >= 200 and summary["replay_defaults"] >= 50
    assert summary["replay_delta_auc"] > 0  # a noisy champion: the logs teach a better ranking
    registry = ModelRegistry(tracking_uri=uri, model_name="bnpl_default")
    assert registry.version(CHALLENGER).version == "1"  # type: ignore[union-attr]
    assert [(e.alias, e.to_version) for e in log.events] == [(CHALLENGER, "1")]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    run = client.get_run(str(summary["run_id"]))
    assert run.data.tags["shadowgate.window"] == summary["window"]
    assert run.data.tags["shadowgate.data_query"] == "queries/training_rows"
    assert run.data.params["data_query"] == "queries/training_rows"
    assert run.data.metrics["replay_n"] == summary["replay_n"]
    version = client.get_model_version("bnpl_default", "1")
    assert version.tags["shadowgate.window"] == summary["window"]
    # A run a day later in the same week (a drift-triggered one) reads the same window: the same version, no second.
    again = _run(path, as_of + dt.timedelta(days=1), uri, log)
    assert again["model_version"] == "1" and again["window"] == summary["window"]
    assert len(client.search_model_versions("name = 'bnpl_default'")) == 1


def test_a_version_worse_than_the_champion_on_the_replay_is_archived_not_shadowed(
    world, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = tmp_path / "warehouse.duckdb"
    as_of = logged_half_year(world(**DENSE), path, champion_noise=0.0)  # the champion knows the truth: nothing beats it
    log = Recorded()
    summary = _run(path, as_of, uri, log)
    assert summary["outcome"] == "archived", summary
    assert summary["replay_delta_ci_high"] < -0.01
    assert "archived instead of taking @challenger" in str(summary["reason"])
    assert log.events == []  # no alias moved
    assert ModelRegistry(tracking_uri=uri, model_name="bnpl_default").version(CHALLENGER) is None
    version = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version(
        "bnpl_default", str(summary["model_version"])
    )
    assert version.tags["shadowgate.archived"].startswith("worse than")


def test_too_few_matured_defaults_is_a_skip_and_a_degenerate_fit_a_refusal(
    world, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = tmp_path / "warehouse.duckdb"
    as_of = logged_half_year(world(**DENSE), path, champion_noise=1.2)
    log = Recorded()
    skipped = _run(path, as_of, uri, log, min_training_defaults=1_000_000)
    assert skipped["outcome"] == "skipped" and "SHADOWGATE_RETRAIN_MIN_TRAINING_DEFAULTS" in str(skipped["reason"])
    # Traffic too thin for the weekly comparison plan: it could never reach its power within its looks.
    thin = _run(path, as_of, uri, log, evaluation=EvaluationSettings(max_looks=2))
    assert thin["outcome"] == "skipped" and "could not reach its power" in str(thin["reason"]), thin["reason"]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name("bnpl_training")
    runs = client.search_runs([experiment.experiment_id])  # type: ignore[union-attr]
    assert sorted(r.data.tags["shadowgate.skipped"] for r in runs) == sorted([skipped["reason"], thin["reason"]])
    with pytest.raises(TrainingRefusedError, match="validation AUC"):
        _run(path, as_of, uri, log, training=TrainingSettings(reference_rows=2_000, min_valid_auc=0.99))
    assert client.search_model_versions("name = 'bnpl_default'") == []
    assert log.events == []
