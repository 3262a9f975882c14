"""retrain_challenger with dag.test(): real Airflow metadata DB, a DuckDB warehouse file holding a simulated half
year of decisions as logged (labelled by join_ground_truth), a real MLflow store."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from mlflow import MlflowClient

from shadowgate.registry import CHALLENGER, ModelRegistry
from shadowgate.storage.duckdb import DuckDBWarehouse
from shadowgate.storage.warehouse import default_sql_dir
from tests.warehouse_rows import logged_half_year


def test_retrain_challenger_trains_on_the_logs_once_per_window(
    airflow_db: Path, world, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    from airflow.utils.state import DagRunState

    from tests.dags.conftest import load_dag

    home = tmp_path / "home"
    as_of = logged_half_year(
        world(transactions=150_000, customers=15_000), home / "warehouse" / "warehouse.duckdb", champion_noise=1.2
    )
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)  # a sqlite store keeps artifacts in ./mlruns
    monkeypatch.setenv("SHADOWGATE_HOME", str(home))
    monkeypatch.setenv("SHADOWGATE_MLFLOW_TRACKING_URI", tracking_uri)
    monkeypatch.setenv("SHADOWGATE_RETRAIN_TRAINING_DAYS", "126")
    monkeypatch.setenv("SHADOWGATE_TRAIN_REFERENCE_ROWS", "2000")
    dag = load_dag("retrain_challenger")

    first = dag.test(run_conf={"as_of": as_of.isoformat()})
    assert first.state == DagRunState.SUCCESS
    # The run a day later in the same week (as a drift-triggered run would be): the same window, the same version.
    second = dag.test(
        run_after=as_of + dt.timedelta(days=1), run_conf={"as_of": (as_of + dt.timedelta(days=1)).isoformat()}
    )
    assert second.state == DagRunState.SUCCESS

    registry = ModelRegistry(tracking_uri=tracking_uri, model_name="bnpl_default")
    challenger = registry.version(CHALLENGER)
    assert challenger is not None and challenger.version == "1"
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    assert len(client.search_model_versions("name = 'bnpl_default'")) == 1
    run = client.get_run(challenger.run_id or "")
    window = run.data.tags["shadowgate.window"]
    assert run.data.tags["shadowgate.run_key"] == f"retrain_challenger/hist_gradient_boosting/{window}"
    assert run.data.params["data_query"] == "queries/training_rows"
    assert run.data.metrics["replay_n"] > 0
    reference = {a.path for a in client.list_artifacts(run.info.run_id, "reference")}
    assert {"reference/reference.parquet", "reference/profile.json"} <= reference  # the sample and its statistics
    # The move of @challenger is in the warehouse the settings name, once although the task ran twice.
    with DuckDBWarehouse(home / "warehouse" / "warehouse.duckdb", sql_dir=default_sql_dir()) as warehouse:
        rows = warehouse.query("SELECT action, alias, to_version, actor FROM shadowgate.deployment_events").to_pylist()
    assert rows == [{"action": "assign", "alias": CHALLENGER, "to_version": "1", "actor": "airflow:retrain_challenger"}]
