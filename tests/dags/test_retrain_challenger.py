"""retrain_challenger end to end with dag.test(): real Airflow metadata DB, real MLflow store, real data files."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from mlflow import MlflowClient

from shadowgate.config import SimulationSettings
from shadowgate.registry import CHALLENGER, ModelRegistry
from shadowgate.simulation import simulate, write_parquet
from tests.conftest import SMALL


def test_retrain_challenger_registers_and_is_idempotent(
    airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.utils.state import DagRunState

    from tests.dags.conftest import load_dag

    write_parquet(simulate(SimulationSettings(**{**SMALL, "transactions": 60_000})), tmp_path / "home" / "data")  # type: ignore[arg-type]
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)  # a sqlite store keeps artifacts in ./mlruns
    monkeypatch.setenv("SHADOWGATE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SHADOWGATE_MLFLOW_TRACKING_URI", tracking_uri)
    dag = load_dag("retrain_challenger")
    as_of = "2026-07-06T00:00:00+00:00"

    first = dag.test(run_conf={"as_of": as_of})
    assert first.state == DagRunState.SUCCESS
    second = dag.test(run_after=dt.datetime(2026, 11, 1, tzinfo=dt.UTC), run_conf={"as_of": as_of})
    assert second.state == DagRunState.SUCCESS

    registry = ModelRegistry(tracking_uri=tracking_uri, model_name="bnpl_default")
    challenger = registry.version(CHALLENGER)
    assert challenger is not None and challenger.version == "1"
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    assert len(client.search_model_versions("name = 'bnpl_default'")) == 1  # the re-run reused the first version
    run = client.get_run(challenger.run_id or "")
    assert run.data.tags["shadowgate.run_key"] == f"retrain_challenger/{as_of}"
    assert run.data.params["as_of"] == as_of
    # The move of @challenger is in the warehouse the settings name, once although the task ran twice.
    from shadowgate.storage.duckdb import DuckDBWarehouse
    from shadowgate.storage.warehouse import default_sql_dir

    with DuckDBWarehouse(tmp_path / "home" / "warehouse" / "warehouse.duckdb", sql_dir=default_sql_dir()) as warehouse:
        rows = warehouse.query("SELECT action, alias, to_version, actor FROM shadowgate.deployment_events").to_pylist()
    assert rows == [{"action": "assign", "alias": CHALLENGER, "to_version": "1", "actor": "airflow:retrain_challenger"}]
