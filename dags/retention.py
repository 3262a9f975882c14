"""
### retention

Keeps personal data as long as the lender's policy says and no longer.

* **Warehouse** (`expire_warehouse`): `prediction_logs`, `outcomes`, `labeled_predictions`, `label_revisions` and
  `quarantine` keep `SHADOWGATE_WAREHOUSE_RETENTION_DAYS` (730: 2 years) of days. BigQuery expires older partitions
  itself (`partition_expiration_days` in the tables' DDL); this task sets it on tables created before the setting.
  DuckDB has no partition expiry: this task deletes the older rows.
* **MLflow** (`expire_mlflow_runs`): runs that ended more than the retention ago are deleted (MLflow's `deleted`
  stage; `mlflow gc` removes them for good), except the runs a **registered model version** was made from: model
  versions and their artifacts are kept forever, with the run that holds them.
* **Schedule:** daily at 03:30 UTC. Idempotent: a re-run or a backfill deletes nothing more.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task
from common.defaults import DEFAULT_ARGS


@dag(
    dag_id="retention",
    schedule="30 3 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["shadowgate", "warehouse"],
    default_args=DEFAULT_ARGS,
)
def retention() -> None:
    @task
    def expire_warehouse() -> dict[str, object]:
        import datetime as dt

        from shadowgate.config import PathSettings, WarehouseSettings
        from shadowgate.pipelines.retention import enforce_warehouse_retention
        from shadowgate.storage import open_warehouse

        warehouse = open_warehouse(WarehouseSettings(), home=PathSettings().home)
        try:
            return enforce_warehouse_retention(warehouse, now=dt.datetime.now(dt.UTC)).as_dict()
        finally:
            warehouse.close()

    @task
    def expire_mlflow_runs() -> dict[str, object]:
        import datetime as dt

        from mlflow import MlflowClient

        from shadowgate.config import MLflowSettings, WarehouseSettings
        from shadowgate.pipelines.retention import expire_mlflow_runs as run

        mlflow = MLflowSettings()
        client = MlflowClient(tracking_uri=mlflow.tracking_uri, registry_uri=mlflow.tracking_uri)
        return run(
            client,
            now=dt.datetime.now(dt.UTC),
            retention_days=WarehouseSettings().retention_days,
            model_name=mlflow.model_name,
        )

    expire_warehouse()
    expire_mlflow_runs()


retention()
