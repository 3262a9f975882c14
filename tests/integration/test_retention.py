"""Retention on real parts: DuckDB rows past 2 years deleted by the maintenance task, the BigQuery DDL and its
ALTER through the emulator, MLflow runs past the cutoff deleted except those registered versions came from."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest

from shadowgate.pipelines.retention import RETAINED, cutoff_day, enforce_warehouse_retention, expire_mlflow_runs
from shadowgate.pipelines.stream_decode import decode
from shadowgate.storage.duckdb import DuckDBWarehouse
from shadowgate.storage.redis_streams import Entry
from shadowgate.storage.warehouse import SqlLibrary, default_sql_dir
from tests.integration.stream_events import outcome_fields, prediction_fields

NOW = dt.datetime(2026, 12, 7, 12, tzinfo=dt.UTC)


def _shift(table: pa.Table, column: str, days: int) -> pa.Table:
    shifted = [v + dt.timedelta(days=days) if v is not None else None for v in table.column(column).to_pylist()]
    return table.set_column(
        table.schema.get_field_index(column), column, pa.array(shifted, table.schema.field(column).type)
    )


def test_duckdb_rows_older_than_the_retention_are_deleted_and_the_rest_kept(tmp_path: Path) -> None:
    with DuckDBWarehouse(tmp_path / "w.duckdb", sql_dir=default_sql_dir(), retention_days=730) as warehouse:
        warehouse.ensure_tables()
        predictions = decode("s", "prediction", [Entry(f"{i}-0", prediction_fields(i)) for i in range(1, 11)], NOW)
        batch = predictions.table("prediction_logs")
        stamps = batch.column("event_timestamp").to_pylist()
        # Half of them 800 days before their stamp: past the 730 days.
        old = _shift(batch.slice(0, 5), "event_timestamp", -(800 + (NOW - stamps[0]).days))
        warehouse.merge("prediction_logs", staging=warehouse.stage("prediction_logs", old, batch_id="old"))
        warehouse.merge("prediction_logs", staging=warehouse.stage("prediction_logs", batch.slice(5), batch_id="new"))
        outcomes = decode("o", "outcome", [Entry("1-0", outcome_fields(1))], NOW).table("outcomes")
        warehouse.merge("outcomes", staging=warehouse.stage("outcomes", outcomes, batch_id="o"))
        summary = enforce_warehouse_retention(warehouse, now=NOW)
        assert summary.cutoff == dt.date(2024, 12, 7)
        assert summary.deleted == {"prediction_logs": 5, "outcomes": 0, "labeled_predictions": 0,
                                   "label_revisions": 0, "quarantine": 0}  # fmt: skip
        assert warehouse.count("prediction_logs") == 5 and warehouse.count("outcomes") == 1
        again = enforce_warehouse_retention(warehouse, now=NOW)  # daily: idempotent
        assert set(again.deleted.values()) == {0}


def test_the_bigquery_ddl_expires_partitions_after_the_setting() -> None:
    library = SqlLibrary(default_sql_dir(), dataset="p.ds", dialect="bigquery", retention_days=365)
    for table in RETAINED:
        assert "OPTIONS (partition_expiration_days = 365)" in library.render(f"ddl/{table}")
    assert "partition_expiration_days" not in library.render("ddl/model_metrics")  # results are not personal data
    assert library.render("maintenance/retention_options", table="outcomes") == (
        "-- Bring a retained BigQuery table created before the retention setting (or with another value) to it: its "
        "partitions\n-- older than retention_days expire. CREATE TABLE IF NOT EXISTS does not change an existing "
        "table's options.\nALTER TABLE `p.ds.outcomes` SET OPTIONS (partition_expiration_days = 365)\n"
    )
    duck = SqlLibrary(default_sql_dir(), dataset="ds", dialect="duckdb").render("ddl/prediction_logs")
    assert "OPTIONS" not in duck


def test_the_cutoff() -> None:
    assert cutoff_day(NOW, 730) == dt.date(2024, 12, 7)
    with pytest.raises(ValueError):
        SqlLibrary(default_sql_dir(), dataset="d", dialect="duckdb", retention_days=0)


def test_mlflow_runs_past_the_cutoff_are_deleted_but_not_those_of_registered_versions(tmp_path: Path) -> None:
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("evaluation", artifact_location=str(tmp_path / "artifacts"))
    day = 86_400_000
    now_ms = int(NOW.timestamp() * 1000)

    def run(age_days: int) -> str:
        made = client.create_run(experiment, start_time=now_ms - age_days * day)
        client.set_terminated(made.info.run_id, end_time=now_ms - age_days * day + 1000)
        return made.info.run_id

    old, old_model, recent = run(800), run(900), run(10)
    client.create_registered_model("bnpl_default")
    client.create_model_version("bnpl_default", source=str(tmp_path / "model"), run_id=old_model)
    del mlflow  # only the client is used
    summary = expire_mlflow_runs(client, now=NOW, retention_days=730, model_name="bnpl_default")
    assert summary["deleted"] == 1 and summary["kept_for_registered_versions"] == 1
    active = {r.info.run_id for r in client.search_runs([experiment], run_view_type=ViewType.ACTIVE_ONLY)}
    assert active == {old_model, recent}
    assert client.get_run(old).info.lifecycle_stage == "deleted"
