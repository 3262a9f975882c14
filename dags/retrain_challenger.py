"""
### retrain_challenger

Trains a **histogram-gradient-boosting challenger** on every purchase whose outcome has matured by the run's
`as_of` instant, logs it to MLflow (metrics, ROC and calibration plots, a frozen reference sample for drift checks)
and points the registry alias **`@challenger`** at the new version of `bnpl_default`. The champion is never touched:
only the first deployment, the promotion gate (a later issue; no DAG for it exists yet) or an audited
`shadowgate train --force-champion --reason …` moves `@champion`.

* **Trigger:** manual (Airflow UI → *Trigger*), optionally with `as_of` (ISO date-time, UTC). Default: the run's
  `run_after`. (A trigger by a drift asset will come with the drift check, a later issue.)
* **Idempotent:** re-running the same run (same `as_of`) returns the version registered the first time.
* **Audited:** the move of `@challenger` is tagged on the version in MLflow and written to the warehouse's
  `deployment_events` (actor `airflow:retrain_challenger`); a re-run stores it once.
* **Data:** the labelled history is the simulated Parquet under `SHADOWGATE_HOME/data`; training on the warehouse's
  `labeled_predictions` (filled by `join_ground_truth`) is a later issue.
"""

from __future__ import annotations

import datetime as dt

import pendulum
from airflow.sdk import Param, dag, get_current_context, task
from common.defaults import DEFAULT_ARGS


@dag(
    dag_id="retrain_challenger",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["shadowgate", "training"],
    params={
        "as_of": Param("", type="string", description="Train as of this UTC instant (ISO 8601); empty: run_after.")
    },
    default_args=DEFAULT_ARGS,
)
def retrain_challenger() -> None:
    @task
    def train_challenger() -> dict[str, object]:
        from shadowgate.config import MLflowSettings, PathSettings, TrainingSettings, WarehouseSettings
        from shadowgate.pipelines.retrain import retrain_challenger as run
        from shadowgate.storage.deployments import WarehouseDeploymentLog

        context = get_current_context()
        given = context["params"].get("as_of") or ""
        as_of = dt.datetime.fromisoformat(given) if given else context["dag_run"].run_after
        if as_of.tzinfo is None:
            as_of = as_of.replace(tzinfo=dt.UTC)
        return run(
            data_dir=PathSettings().data_dir,
            as_of=as_of,
            run_key=f"retrain_challenger/{as_of.astimezone(dt.UTC).isoformat()}",
            training=TrainingSettings(),
            mlflow_settings=MLflowSettings(),
            deployments=WarehouseDeploymentLog.from_settings(WarehouseSettings(), home=PathSettings().home),
            actor="airflow:retrain_challenger",
        )

    train_challenger()


retrain_challenger()
