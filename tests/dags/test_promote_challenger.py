"""evaluation → promotion through Airflow: weekly_performance with dag.test() week after week on labelled decisions
whose truth is known (a challenger far better than the champion), then promote_challenger with dag.test(), first as a
dry run, then for real. Real Airflow metadata DB, a DuckDB warehouse file, an MLflow store (SQLite), the shipped
experiment book (no Redis book under the test's prefix)."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow import MlflowClient

from shadowgate.decisioning.experiments import config_resource
from shadowgate.registry import CHALLENGER, CHAMPION, PREVIOUS, ModelRegistry
from shadowgate.storage.deployments import WarehouseDeploymentLog
from shadowgate.storage.duckdb import DuckDBWarehouse
from shadowgate.storage.warehouse import default_sql_dir
from tests.dags.conftest import load_dag
from tests.labeled_rows import as_logged, insert_labeled, labeled_rows
from tests.warehouse_rows import load, prediction_row

START = dt.date(2026, 1, 5)
WEEKS = 4


def _run(dag_id: str, task_id: str, **kwargs: Any) -> dict[str, Any]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState

    run = load_dag(dag_id).test(**kwargs)
    assert run.state == DagRunState.SUCCESS
    with create_session() as session:
        query = XComModel.get_many(run_id=run.run_id, key="return_value", dag_ids=dag_id, task_ids=task_id)
        [row] = session.scalars(query).all()
        summary: dict[str, Any] = XComModel.deserialize_value(row)
    return summary


def test_weekly_evaluation_then_the_gate_promotes_the_better_challenger(
    airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # The shipped gates but a wider approval-rate bound: the simulated challenger is far sharper and approves far
    # more applicants at the same cut-off.
    gates = yaml.safe_load(config_resource("gates.yaml").read_text())
    gates["business"]["max_approval_rate_change"] = 0.5
    gates_path = tmp_path / "gates.yaml"
    gates_path.write_text(yaml.safe_dump(gates))
    monkeypatch.setenv("SHADOWGATE_HOME", str(home))
    monkeypatch.setenv("SHADOWGATE_MLFLOW_TRACKING_URI", tracking_uri)
    monkeypatch.setenv("SHADOWGATE_EXPERIMENTS_KEY_PREFIX", f"test-promote-{uuid.uuid4().hex}")
    monkeypatch.setenv("SHADOWGATE_EVALUATION_MAX_LOOKS", "4")
    monkeypatch.setenv("SHADOWGATE_PROMOTION_GATES_PATH", str(gates_path))
    monkeypatch.chdir(tmp_path)
    for name in ("SHADOWGATE_WAREHOUSE_BACKEND", "SHADOWGATE_WAREHOUSE_DUCKDB_PATH", "SHADOWGATE_ALERT_WEBHOOK_URL"):
        monkeypatch.delenv(name, raising=False)
    path = home / "warehouse" / "warehouse.duckdb"
    path.parent.mkdir(parents=True)
    starts = [START + dt.timedelta(weeks=k) for k in range(WEEKS)]
    ends = [dt.datetime.combine(s + dt.timedelta(weeks=14), dt.time(), dt.UTC) for s in starts]  # labels matured
    as_of = ends[-1] + dt.timedelta(days=1)
    with DuckDBWarehouse(path, sql_dir=default_sql_dir()) as warehouse:
        warehouse.ensure_tables()
        for k, start in enumerate(starts):
            rows = labeled_rows(start, 1_500, seed=700 + k, noise={"challenger": 0.4})
            insert_labeled(warehouse, rows)
            load(warehouse, "prediction_logs", as_logged(rows))  # every applicant, as served
        load(warehouse, "prediction_logs", [prediction_row(i, at=as_of - dt.timedelta(hours=i + 1)) for i in range(50)])
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    client.create_registered_model("bnpl_default")
    for _ in range(2):
        client.create_model_version("bnpl_default", source=str(tmp_path))
    log = WarehouseDeploymentLog(lambda: DuckDBWarehouse(path, sql_dir=default_sql_dir()))
    registry = ModelRegistry(tracking_uri=tracking_uri, model_name="bnpl_default", deployments=log)
    registry.move_alias(CHAMPION, "1", reason="first model", actor="bootstrap", action="first_deployment")
    registry.move_alias(CHALLENGER, "2", reason="trained", actor="airflow:retrain_challenger", action="assign")

    verdicts = []
    for start, end in zip(starts, ends, strict=True):
        summary = _run(
            "weekly_performance",
            "evaluate_matured_weeks",
            logical_date=end,
            run_conf={"cohort_week": start.isoformat(), "labels": ["final"]},
        )
        (comparison,) = summary["weeks"][0]["comparisons"]
        verdicts.append((comparison["experiment_id"], comparison["look"], comparison["verdict"]))
    assert verdicts[0] == ("shadow-challenger", 1, "continue")
    assert "superior" in {v for _, _, v in verdicts}

    dry = _run("promote_challenger", "decide_and_move", run_conf={"dry_run": True, "as_of": as_of.isoformat()})
    assert dry["dry_run"] is True and dry["decisions"][0]["action"] == "promote"
    assert registry.aliases() == {CHAMPION: "1", CHALLENGER: "2"}

    done = _run("promote_challenger", "decide_and_move", run_conf={"as_of": as_of.isoformat()})
    (decision,) = done["decisions"]
    assert decision["action"] == "promote" and decision["experiment_id"] == "shadow-challenger"
    assert (done["champion_before"], done["champion_after"]) == ("champion@1", "champion@2")
    assert registry.aliases() == {CHAMPION: "2", PREVIOUS: "1"}
    with DuckDBWarehouse(path, sql_dir=default_sql_dir()) as warehouse:
        rows = warehouse.query(
            "SELECT action, alias, to_version, actor, CAST(evidence AS VARCHAR) AS evidence "
            "FROM shadowgate.deployment_events WHERE action = 'promote' ORDER BY occurred_at"
        ).to_pylist()
    assert [(r["alias"], r["to_version"], r["actor"]) for r in rows] == [
        (PREVIOUS, "1", "airflow:promote_challenger"),
        (CHAMPION, "2", "airflow:promote_challenger"),
        (CHALLENGER, None, "airflow:promote_challenger"),
    ]
    evidence = json.loads(rows[1]["evidence"])
    assert evidence["gate_config_version"] == 1 and {g["gate"] for g in evidence["gates"] if g["passed"]} == {
        "comparison", "calibration", "approval_rate", "expected_loss", "latency", "drift"
    }  # fmt: skip
    champion = client.get_model_version_by_alias("bnpl_default", CHAMPION)
    assert json.loads(champion.tags["alias.champion.event"])["action"] == "promote"
