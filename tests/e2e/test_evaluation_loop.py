"""The evaluation loop end to end, with exact counts: a simulated week replayed through the real API (uvicorn, its
shadow process, real models in an MLflow store, a private Redis), then the three DAGs with ``dag.test()`` —
``upload_predictions`` into DuckDB, ``join_ground_truth`` once the week's labels have matured, ``weekly_performance``
of the week — and the week's comparison in MLflow, under the experiment of the book the API seeded in Redis."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow import MlflowClient
from sklearn.metrics import roc_auc_score

from shadowgate.config import SimulationSettings
from shadowgate.simulation import SimulationResult, simulate
from shadowgate.simulation.replay import Replayer, replay
from shadowgate.storage.duckdb import DuckDBWarehouse
from shadowgate.storage.warehouse import default_sql_dir
from tests.api.conftest import Registry
from tests.api.test_durability import ApiProcess, _wait_committed
from tests.dags.conftest import load_dag
from tests.redis_server import RedisServer

INGEST_KEY = "loop-ingest-key"
WEEK = (dt.datetime(2026, 3, 9, tzinfo=dt.UTC), dt.datetime(2026, 3, 16, tzinfo=dt.UTC))
AS_OF = dt.datetime(2026, 6, 15, tzinfo=dt.UTC)  # a Monday, after the week's last final label matured (June 14)


@pytest.fixture(scope="module")
def history() -> SimulationResult:
    settings = SimulationSettings(
        transactions=5_000, customers=700, days=14, drift_start_day=14, seed=33, start=dt.date(2026, 3, 2)
    )
    return simulate(settings)


@pytest.fixture
def api(tmp_path: Path, redis_server: RedisServer, registry: Registry) -> Iterator[ApiProcess]:
    process = ApiProcess(tmp_path / "home", redis_url=redis_server.url, registry=registry)
    process.env["SHADOWGATE_API_INGEST_KEY"] = INGEST_KEY
    process.start()
    yield process
    process.kill_group()  # the process group this test started, by its own id


def _run(dag_id: str, task_id: str, logical_date: dt.datetime, **conf: Any) -> dict[str, Any]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState

    run = load_dag(dag_id).test(logical_date=logical_date, run_conf=conf)
    assert run.state == DagRunState.SUCCESS
    with create_session() as session:
        query = XComModel.get_many(run_id=run.run_id, key="return_value", dag_ids=dag_id, task_ids=task_id)
        [row] = session.scalars(query).all()
        summary: dict[str, Any] = XComModel.deserialize_value(row)
    return summary


def test_a_replayed_week_is_uploaded_labelled_and_evaluated_by_the_dags(
    airflow_db: Path,
    api: ApiProcess,
    redis_server: RedisServer,
    registry: Registry,
    history: SimulationResult,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    replayer = Replayer(api_url=api.base, ingest_key=INGEST_KEY, concurrency=4)
    sent = replay(
        transactions=history.transactions, outcomes=history.outcomes, replayer=replayer, start=WEEK[0], end=WEEK[1]
    )
    assert sent.errors == () and sent.decisions_answered == sent.purchases > 1_000
    _wait_committed(api)
    decisions = [json.loads(f["payload"]) for _, f in redis_server.client().xrange("shadowgate:predictions")]
    approved = {p["transaction_id"]: p for p in decisions if p["decision"] == "approve"}
    assert len(approved) == sent.approved

    monkeypatch.chdir(tmp_path)  # MLflow's SQLite store keeps new experiments' artifacts in ./mlruns
    for variable, value in {
        "SHADOWGATE_HOME": str(tmp_path / "dag-home"),
        "SHADOWGATE_REDIS_URL": redis_server.url,  # the API seeded the experiment book there
        "SHADOWGATE_MLFLOW_TRACKING_URI": registry.mlflow.tracking_uri,
        "SHADOWGATE_WAREHOUSE_BACKEND": "duckdb",
        "SHADOWGATE_WAREHOUSE_DUCKDB_PATH": str(tmp_path / "warehouse.duckdb"),
    }.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.delenv("SHADOWGATE_ALERT_WEBHOOK_URL", raising=False)

    uploaded = _run("upload_predictions", "upload_streams", dt.datetime.now(dt.UTC))
    loaded = {s["table"]: s["loaded"] for s in uploaded["streams"]}
    assert loaded == {"prediction_logs": sent.decisions_answered, "outcomes": sent.outcomes_sent}

    # One join run as of the weekly run's instant, its window widened over both maturities of the week.
    labels = _run("join_ground_truth", "label_matured_decisions", AS_OF, relabel_days=110)
    assert labels["held_back"] is False and labels["approved_without_outcome"] == 0
    assert labels["labeled"] == len(approved)

    weekly = _run("weekly_performance", "evaluate_matured_weeks", AS_OF, cohort_week="2026-03-09")
    by_label = {w["label"]: w for w in weekly["weeks"]}
    assert set(by_label) == {"early", "final"}
    truth = history.labels.set_index("transaction_id")["is_default"]
    y = np.array([bool(truth[t]) for t in approved], dtype=int)
    final = by_label["final"]
    # Every approved purchase, compared on both models; the final label is the simulator's own truth.
    assert (final["rows_matured"], final["rows_compared"], final["defaults"]) == (
        len(approved),
        len(approved),
        int(y.sum()),
    )
    champion = np.array([next(s["score"] for s in p["scores"] if s["alias"] == "champion") for p in approved.values()])
    assert final["models"][f"champion@{registry.versions['champion']}"] == round(roc_auc_score(y, champion), 4)
    assert [c["experiment_id"] for c in final["comparisons"]] == ["shadow-challenger"]

    client = MlflowClient(tracking_uri=registry.mlflow.tracking_uri, registry_uri=registry.mlflow.tracking_uri)
    experiment = client.get_experiment_by_name("shadowgate/shadow-challenger")
    assert experiment is not None and experiment.tags["shadowgate.models"].startswith("champion (control)")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted((r.data.tags["shadowgate.label"], r.data.tags["shadowgate.role"]) for r in runs) == [
        ("early", "comparison"), ("early", "model"), ("early", "model"),
        ("final", "comparison"), ("final", "model"), ("final", "model"),
    ]  # fmt: skip
    with DuckDBWarehouse(tmp_path / "warehouse.duckdb", sql_dir=default_sql_dir()) as warehouse:
        [row] = warehouse.query(f"SELECT COUNT(*) AS n FROM {warehouse.qualified}.model_metrics").to_pylist()
    assert row["n"] == weekly["metric_rows"] > 0
