"""Training against a real MLflow tracking store (SQLite + local artifacts)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from shadowgate.config import MLflowSettings, SimulationSettings, TrainingSettings
from shadowgate.features import FEATURE_NAMES, FEATURE_SET, features_frame
from shadowgate.local.bootstrap import bootstrap, history_as_of
from shadowgate.registry import CHALLENGER, CHAMPION, ModelRegistry
from shadowgate.simulation import SimulationResult
from shadowgate.storage.deployments import WarehouseDeploymentLog
from shadowgate.storage.duckdb import DuckDBWarehouse
from shadowgate.storage.warehouse import default_sql_dir
from shadowgate.training.train import ModelKind, matured_labels, temporal_split, train_and_register
from tests.conftest import SMALL

AS_OF = history_as_of(SimulationSettings(**SMALL))  # type: ignore[arg-type]


@pytest.fixture
def mlflow_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MLflowSettings:
    monkeypatch.chdir(tmp_path)  # a sqlite store keeps artifacts in ./mlruns: keep them in the test's folder
    return MLflowSettings(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", training_experiment="test_training")


@pytest.fixture
def deployments(tmp_path: Path) -> WarehouseDeploymentLog:
    return WarehouseDeploymentLog(lambda: DuckDBWarehouse(tmp_path / "warehouse.duckdb", sql_dir=default_sql_dir()))


def _deployment_rows(tmp_path: Path) -> list[tuple[str, str, str | None, str | None]]:
    with DuckDBWarehouse(tmp_path / "warehouse.duckdb", sql_dir=default_sql_dir()) as warehouse:
        warehouse.ensure_tables()
        table = warehouse.query(
            "SELECT action, alias, from_version, to_version FROM shadowgate.deployment_events ORDER BY occurred_at"
        )
    return [tuple(row.values()) for row in table.to_pylist()]  # type: ignore[misc]


def test_matured_labels_equal_the_truth_for_settled_purchases(baseline: SimulationResult) -> None:
    labels = matured_labels(baseline.transactions, baseline.outcomes, as_of=AS_OF, maturity_days=90)
    cutoff = pd.Timestamp(AS_OF) - pd.Timedelta(days=90)
    assert len(labels) == (baseline.transactions["event_timestamp"] <= cutoff).sum()
    truth = baseline.labels.set_index("transaction_id").loc[labels["transaction_id"], "is_default"]
    np.testing.assert_array_equal(labels["is_default"].to_numpy(), truth.to_numpy())
    # Outcomes not yet known at as_of must not leak into labels.
    early = matured_labels(
        baseline.transactions, baseline.outcomes, as_of=AS_OF - dt.timedelta(days=60), maturity_days=0
    )
    assert early["is_default"].sum() < truth.sum()


def test_temporal_split_holds_out_the_latest_days(baseline: SimulationResult) -> None:
    ts = baseline.transactions["event_timestamp"]
    split = temporal_split(ts, validation_days=28)
    assert ts.iloc[split.train].max() <= split.boundary < ts.iloc[split.valid].min()
    assert len(split.train) + len(split.valid) == len(ts)
    with pytest.raises(ValueError, match="no training or no validation rows"):
        temporal_split(ts, validation_days=10_000)


def test_training_registers_loadable_models_under_both_aliases(
    world: Callable[..., SimulationResult],
    mlflow_settings: MLflowSettings,
    deployments: WarehouseDeploymentLog,
    tmp_path: Path,
) -> None:
    baseline = world(transactions=150_000, customers=15_000)  # enough matured defaults to rank the two families
    results = {}
    for kind, alias in ((ModelKind.SCORECARD, CHAMPION), (ModelKind.GRADIENT_BOOSTING, CHALLENGER)):
        results[alias] = train_and_register(
            transactions=baseline.transactions,
            outcomes=baseline.outcomes,
            kind=kind,
            as_of=AS_OF,
            alias=alias,
            training=TrainingSettings(),
            mlflow_settings=mlflow_settings,
            deployments=deployments,
            actor="tests",
        )
    registry = ModelRegistry(tracking_uri=mlflow_settings.tracking_uri, model_name=mlflow_settings.model_name)
    assert registry.aliases() == {CHAMPION: "1", CHALLENGER: "2"}
    champion = registry.version(CHAMPION)
    assert champion is not None and champion.tags["alias.champion.reason"].startswith("trained by shadowgate")
    # The weekly evaluation compares each version with its own validation AUC.
    assert registry.training_metric("1") == pytest.approx(results[CHAMPION].metrics.auc)
    assert registry.training_metric("2", "valid_brier") == pytest.approx(results[CHALLENGER].metrics.brier)
    assert registry.training_metric("99") is None and registry.training_metric("1", "no_such_metric") is None
    assert _deployment_rows(tmp_path) == [("first_deployment", CHAMPION, None, "1"), ("assign", CHALLENGER, None, "2")]

    client = MlflowClient(tracking_uri=mlflow_settings.tracking_uri, registry_uri=mlflow_settings.tracking_uri)
    for v in client.search_model_versions(f"name = '{mlflow_settings.model_name}'"):
        assert v.current_stage == "None"  # aliases only, never stages

    sample = baseline.transactions.tail(200)
    x = pd.DataFrame(features_frame(sample), columns=list(FEATURE_NAMES))
    mlflow.set_tracking_uri(mlflow_settings.tracking_uri)
    for alias, result in results.items():
        model = mlflow.pyfunc.load_model(registry.alias_uri(alias))
        proba = np.asarray(model.predict(x))
        assert proba.shape == (200, 2)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0)
        assert 0.0 < proba[:, 1].mean() < 0.3
        run = client.get_run(result.run_id)
        assert run.data.metrics["valid_auc"] == pytest.approx(result.metrics.auc)
        assert run.data.params["n_train"] == str(result.n_train)
        artifacts = {a.path for a in client.list_artifacts(result.run_id)}
        assert {"plots", "reference"} <= artifacts
        reference = pd.read_parquet(
            mlflow.artifacts.download_artifacts(run_id=result.run_id, artifact_path="reference/reference.parquet")
        )
        assert len(reference) == min(TrainingSettings().reference_rows, result.n_train)
        assert {"event_timestamp", "amount", "channel", "score"} <= set(reference.columns)
        assert not {"customer_id", "transaction_id", "merchant_id"} & set(reference.columns)  # no identifier
        plots = {a.path for a in client.list_artifacts(result.run_id, "plots")}
        assert plots == {"plots/roc.png", "plots/calibration.png"}
        # The feature set is recorded with every version (checked when the API loads it).
        assert run.data.params["feature_set"] == FEATURE_SET
        version = client.get_model_version(mlflow_settings.model_name, result.model_version)
        assert version.tags["shadowgate.feature_set"] == FEATURE_SET
        info = mlflow.models.get_model_info(f"models:/{mlflow_settings.model_name}/{result.model_version}")
        assert info.metadata == {"feature_names": list(FEATURE_NAMES), "feature_set": FEATURE_SET}
        assert info.flavors["sklearn"]["serialization_format"] == "skops"
        assert [spec.name for spec in info.signature.inputs] == list(FEATURE_NAMES)
    # Model behaviour: the gradient-boosted challenger beats the linear champion on the same validation rows.
    assert results[CHALLENGER].n_valid == results[CHAMPION].n_valid
    assert results[CHALLENGER].metrics.auc > results[CHAMPION].metrics.auc
    assert 0.75 < results[CHAMPION].metrics.auc < 0.95


def test_a_run_key_makes_training_idempotent(
    baseline: SimulationResult, mlflow_settings: MLflowSettings, deployments: WarehouseDeploymentLog, tmp_path: Path
) -> None:
    def run() -> str:
        return train_and_register(
            transactions=baseline.transactions,
            outcomes=baseline.outcomes,
            kind=ModelKind.SCORECARD,
            as_of=AS_OF,
            alias=CHALLENGER,
            training=TrainingSettings(),
            mlflow_settings=mlflow_settings,
            deployments=deployments,
            actor="airflow:retrain_challenger",
            run_key="test/2026-07-06",
        ).model_version

    assert run() == run() == "1"
    client = MlflowClient(tracking_uri=mlflow_settings.tracking_uri, registry_uri=mlflow_settings.tracking_uri)
    assert len(client.search_model_versions(f"name = '{mlflow_settings.model_name}'")) == 1
    assert _deployment_rows(tmp_path) == [("assign", CHALLENGER, None, "1")]  # the re-run's move stored once


def test_bootstrap_is_idempotent(
    world: Callable[..., SimulationResult],
    mlflow_settings: MLflowSettings,
    deployments: WarehouseDeploymentLog,
    tmp_path: Path,
) -> None:
    simulation = SimulationSettings(**SMALL)  # type: ignore[arg-type]
    options = {
        "simulation": simulation,
        "training": TrainingSettings(),
        "mlflow_settings": mlflow_settings,
        "deployments": deployments,
        "actor": "tests",
    }
    first = bootstrap(tmp_path / "data", **options)  # type: ignore[arg-type]
    assert first.simulated and set(first.trained) == {CHAMPION, CHALLENGER}
    assert first.aliases == {
        CHAMPION: first.trained[CHAMPION].model_version,
        CHALLENGER: first.trained[CHALLENGER].model_version,
    }
    stamp = (tmp_path / "data" / "transactions.parquet").stat().st_mtime_ns
    second = bootstrap(tmp_path / "data", **options)  # type: ignore[arg-type]
    assert not second.simulated and second.trained == {}
    assert second.aliases == first.aliases
    assert (tmp_path / "data" / "transactions.parquet").stat().st_mtime_ns == stamp
    champion, challenger = first.aliases[CHAMPION], first.aliases[CHALLENGER]
    assert _deployment_rows(tmp_path) == [
        ("first_deployment", CHAMPION, None, champion),
        ("assign", CHALLENGER, None, challenger),
    ]
