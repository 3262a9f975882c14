"""retention with dag.test(): a real Airflow metadata DB, a real DuckDB file, a real MLflow store."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from shadowgate.pipelines.stream_decode import decode
from shadowgate.storage.duckdb import DuckDBWarehouse
from shadowgate.storage.redis_streams import Entry
from shadowgate.storage.warehouse import default_sql_dir
from tests.dags.conftest import load_dag
from tests.integration.stream_events import outcome_fields


def test_retention_expires_old_rows_and_old_runs_and_keeps_the_models(
    airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.utils.state import DagRunState
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    home = tmp_path / "home"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("SHADOWGATE_HOME", str(home))
    monkeypatch.setenv("SHADOWGATE_MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("SHADOWGATE_WAREHOUSE_RETENTION_DAYS", "30")
    now = dt.datetime.now(dt.UTC)
    old_stamp = (now - dt.timedelta(days=45)).isoformat()
    fields = outcome_fields(1)
    import orjson

    payload = orjson.loads(fields["payload"])
    old = {**fields, "payload": orjson.dumps({**payload, "event_timestamp": old_stamp}).decode()}
    recent = {**outcome_fields(2)}
    recent_payload = orjson.loads(recent["payload"])
    recent["payload"] = orjson.dumps({**recent_payload, "event_timestamp": now.isoformat()}).decode()
    path = home / "warehouse" / "warehouse.duckdb"
    with DuckDBWarehouse(path, sql_dir=default_sql_dir()) as warehouse:
        warehouse.ensure_tables()
        batch = decode("o", "outcome", [Entry("1-0", old), Entry("2-0", recent)], now).table("outcomes")
        warehouse.merge("outcomes", staging=warehouse.stage("outcomes", batch, batch_id="b"))
        assert warehouse.count("outcomes") == 2

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("shadowgate/evaluation", artifact_location=str(tmp_path / "artifacts"))
    ended = int((now - dt.timedelta(days=60)).timestamp() * 1000)
    stale = client.create_run(experiment, start_time=ended - 1000)
    client.set_terminated(stale.info.run_id, end_time=ended)
    trained = client.create_run(experiment, start_time=ended - 1000)
    client.set_terminated(trained.info.run_id, end_time=ended)
    client.create_registered_model("bnpl_default")
    client.create_model_version("bnpl_default", source=str(tmp_path / "m"), run_id=trained.info.run_id)

    run = load_dag("retention").test(logical_date=now)
    assert run.state == DagRunState.SUCCESS
    with DuckDBWarehouse(path, sql_dir=default_sql_dir()) as warehouse:
        assert warehouse.count("outcomes") == 1
    active = {r.info.run_id for r in client.search_runs([experiment], run_view_type=ViewType.ACTIVE_ONLY)}
    assert active == {trained.info.run_id}
    assert client.get_model_version("bnpl_default", "1").run_id == trained.info.run_id
