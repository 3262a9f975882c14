"""drift_check with dag.test(): real Airflow metadata DB, a DuckDB warehouse file, an MLflow store (SQLite) holding
a champion and a challenger trained as ``make up`` trains them (their reference samples logged with their runs), and
the decisions of a simulated world with a covariate shift from day 160, scored by those very models."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from shadowgate.config import DriftScenario, MLflowSettings, SimulationSettings, TrainingSettings
from shadowgate.simulation import SimulationResult
from shadowgate.storage.duckdb import DuckDBWarehouse
from shadowgate.storage.warehouse import default_sql_dir
from tests.conftest import SMALL
from tests.dags.conftest import load_dag
from tests.warehouse_rows import load, simulated_prediction_logs

SHIFT_DAY = 160


def _register_models(world: SimulationResult, home: Path, tracking_uri: str) -> dict[str, np.ndarray]:
    """Champion and challenger trained on the history before the shift; every purchase scored by both."""
    from shadowgate.features import FEATURE_NAMES, features_frame
    from shadowgate.local.bootstrap import ensure_models
    from shadowgate.serving.models import MlflowModelSource
    from shadowgate.simulation import write_parquet
    from shadowgate.storage.deployments import WarehouseDeploymentLog

    days = (world.transactions["event_timestamp"] - world.transactions["event_timestamp"].min().normalize()).dt.days
    before = (days < SHIFT_DAY - 10).to_numpy()
    history = SimulationResult(
        transactions=world.transactions[before].reset_index(drop=True),
        outcomes=world.outcomes[world.outcomes["transaction_id"].isin(world.transactions["transaction_id"][before])],
        labels=world.labels[before].reset_index(drop=True),
        intercept=world.intercept,
    )
    write_parquet(history, home / "data")
    settings = SimulationSettings(**{**SMALL, "days": SHIFT_DAY - 10, "drift_start_day": 0})  # type: ignore[arg-type]
    from shadowgate.config import WarehouseSettings

    ensure_models(
        home / "data",
        simulation=settings,
        training=TrainingSettings(reference_rows=2_000),
        mlflow_settings=MLflowSettings(tracking_uri=tracking_uri),
        deployments=WarehouseDeploymentLog.from_settings(WarehouseSettings(), home=home),
        actor="test",
    )
    source = MlflowModelSource(tracking_uri=tracking_uri, model_name="bnpl_default")
    x = pd.DataFrame(features_frame(world.transactions), columns=list(FEATURE_NAMES)).to_numpy(dtype=np.float64)
    scores = {}
    for alias in ("champion", "challenger"):
        ref = source.resolve(alias)
        assert ref is not None
        scores[alias] = source.fetch(ref.version).score_batch(x)
    return scores


def test_drift_check_finds_the_shift_once_and_emits_its_asset(
    airflow_db: Path, world, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    from airflow.utils.state import DagRunState, TaskInstanceState

    shifted: SimulationResult = world(scenario=DriftScenario.COVARIATE_SHIFT, drift_start_day=SHIFT_DAY)
    home = tmp_path / "home"
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)  # a sqlite store keeps artifacts in ./mlruns
    monkeypatch.setenv("SHADOWGATE_HOME", str(home))
    monkeypatch.setenv("SHADOWGATE_MLFLOW_TRACKING_URI", tracking_uri)
    monkeypatch.setenv("SHADOWGATE_DRIFT_MIN_ROWS", "50")
    monkeypatch.setenv("SHADOWGATE_DRIFT_REPORT_ROWS", "300")
    scores = _register_models(shifted, home, tracking_uri)

    tx = shifted.transactions
    first = tx["event_timestamp"].min().normalize()
    days = (tx["event_timestamp"] - first).dt.days.to_numpy()
    # A day inside the models' training window (its inputs are the reference's) and days around the shift.
    keep = ((days >= 15) & (days < 25)) | ((days >= SHIFT_DAY - 10) & (days < SHIFT_DAY + 10))
    decisions = np.where(scores["champion"][keep] < 0.5, "approve", "deny")
    with DuckDBWarehouse(home / "warehouse" / "warehouse.duckdb", sql_dir=default_sql_dir()) as warehouse:
        warehouse.ensure_tables()
        rows = simulated_prediction_logs(
            tx.loc[keep].reset_index(drop=True),
            decisions,
            scores["champion"][keep],
            shadow={"challenger": ("2", scores["challenger"][keep])},
        )
        load(warehouse, "prediction_logs", rows)

    dag = load_dag("drift_check")
    stable_day = (first + pd.Timedelta(days=20)).date()
    shifted_day = (first + pd.Timedelta(days=SHIFT_DAY + 5)).date()

    def run(day: dt.date):  # type: ignore[no-untyped-def]
        # The run that checks `day` runs at 02:00 the next day: its data interval is [day 02:00, next day 02:00).
        return dag.test(logical_date=dt.datetime.combine(day + dt.timedelta(days=1), dt.time(2), dt.UTC))

    def states(dag_run) -> dict[str, str]:  # type: ignore[no-untyped-def]
        return {ti.task_id: ti.state for ti in dag_run.get_task_instances()}

    calm = run(stable_day)
    assert calm.state == DagRunState.SUCCESS
    assert states(calm)["announce_drift"] == TaskInstanceState.SKIPPED  # no drift, no asset event

    moved = run(shifted_day)
    assert moved.state == DagRunState.SUCCESS
    assert states(moved)["announce_drift"] == TaskInstanceState.SUCCESS

    with DuckDBWarehouse(home / "warehouse" / "warehouse.duckdb", sql_dir=default_sql_dir()) as warehouse:
        reports = warehouse.query(
            "SELECT window_start, SUM(CAST(drifted AS INT)) AS drifted, COUNT(*) AS n "
            "FROM shadowgate.drift_reports GROUP BY 1 ORDER BY 1"
        ).to_pylist()
        alerts = warehouse.query("SELECT kind, condition FROM shadowgate.alerts ORDER BY 1, 2").to_pylist()
    assert [r["window_start"] for r in reports] == [stable_day, shifted_day]
    assert reports[0]["drifted"] == 0 and reports[1]["drifted"] >= 1
    assert reports[0]["n"] == reports[1]["n"] == 15 + 2  # the contract's drift columns and two models' scores
    assert {"kind": "drift", "condition": "amount"} in alerts
    assert {"kind": "unseen_category", "condition": "channel"} in alerts

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    experiment = client.get_experiment_by_name("shadowgate/drift")
    assert experiment is not None
    runs = {r.data.tags["shadowgate.day"]: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {stable_day.isoformat(), shifted_day.isoformat()}
    assert runs[shifted_day.isoformat()].data.tags["shadowgate.verdict"] == "drift"
    assert runs[stable_day.isoformat()].data.tags["shadowgate.verdict"] == "stable"
    artifacts = {a.path for a in client.list_artifacts(runs[shifted_day.isoformat()].info.run_id)}
    assert artifacts == {"drift_columns.csv", "drift_report.html"}


def test_a_wrong_day_param_is_refused_before_any_run(airflow_db: Path) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    dag = load_dag("drift_check")
    with pytest.raises(ParamValidationError, match="is not a 'date'"):
        dag.test(run_conf={"day": "2026-13-40"})


def test_a_wrong_as_of_fails_the_retraining_at_once_without_retries(airflow_db: Path) -> None:
    from airflow.utils.state import DagRunState

    run = load_dag("retrain_challenger").test(run_conf={"as_of": "yesterday"})
    assert run.state == DagRunState.FAILED
    (task,) = run.get_task_instances()
    assert task.try_number == 1  # a wrong Param is not worth three retries
