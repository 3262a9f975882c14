"""weekly_performance with dag.test(), after join_ground_truth with dag.test(): a simulated world's decisions, scored
by the champion and a better challenger in shadow, labelled point in time and evaluated; real Airflow metadata DB,
a DuckDB warehouse file and an MLflow store (SQLite), the experiment book the shipped one (no Redis book)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.metrics import roc_auc_score

from shadowgate.simulation import SimulationResult
from shadowgate.storage.duckdb import DuckDBWarehouse
from shadowgate.storage.warehouse import default_sql_dir
from tests.dags.conftest import load_dag
from tests.warehouse_rows import load, simulated_outcomes, simulated_prediction_logs

AS_OF = pd.Timestamp("2026-05-11", tz="UTC")  # a Monday: the weekly run whose interval ends here
FINAL_WEEK = (pd.Timestamp("2026-02-02", tz="UTC"), pd.Timestamp("2026-02-09", tz="UTC"))  # ends 90 days before
EARLY_WEEK = (pd.Timestamp("2026-04-13", tz="UTC"), pd.Timestamp("2026-04-20", tz="UTC"))  # ends ≥ 17 days before


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1 - p))


class World:
    """Every decision of the world (champion decides on a noisy view of the true probability; the challenger sees
    it more sharply) and the outcomes of the credit granted."""

    def __init__(self, world: SimulationResult, home: Path) -> None:
        rng = np.random.default_rng(3)
        p = np.clip(world.labels["default_probability"].to_numpy(), 1e-4, 1 - 1e-4)
        self.champion = 1 / (1 + np.exp(-(_logit(p) + rng.normal(scale=0.9, size=p.size))))
        self.challenger = 1 / (1 + np.exp(-(_logit(p) + rng.normal(scale=0.3, size=p.size))))
        self.decision = np.where(
            self.champion < 0.06, "approve", np.where(self.champion < 0.12, "manual_review", "deny")
        )
        self.frame = world.transactions[["transaction_id", "event_timestamp"]].assign(
            decision=self.decision, champion=self.champion, challenger=self.challenger,
            is_default=world.labels["is_default"].to_numpy(),
        )  # fmt: skip
        granted = set(self.frame.loc[self.frame["decision"] != "deny", "transaction_id"])
        outcomes = world.outcomes[world.outcomes["transaction_id"].isin(granted)].reset_index(drop=True)
        self.path = home / "warehouse" / "warehouse.duckdb"
        with DuckDBWarehouse(self.path, sql_dir=default_sql_dir()) as warehouse:
            warehouse.ensure_tables()
            rows = simulated_prediction_logs(
                world.transactions, self.decision, self.champion, shadow={"challenger": ("2", self.challenger)}
            )
            load(warehouse, "prediction_logs", rows)
            load(warehouse, "outcomes", simulated_outcomes(outcomes))

    def approved_in(self, week: tuple[pd.Timestamp, pd.Timestamp]) -> pd.DataFrame:
        ts = pd.DatetimeIndex(self.frame["event_timestamp"]).tz_convert("UTC")
        return self.frame[(ts >= week[0]) & (ts < week[1]) & (self.frame["decision"] == "approve")]

    def metrics(self) -> list[tuple[Any, ...]]:
        with DuckDBWarehouse(self.path, sql_dir=default_sql_dir()) as warehouse:
            table = warehouse.query("SELECT * FROM shadowgate.model_metrics ORDER BY metric_id")
        return [tuple(r.values()) for r in table.to_pylist()]


@pytest.fixture
def book(airflow_db: Path, tmp_path: Path, baseline: SimulationResult, monkeypatch: pytest.MonkeyPatch) -> World:
    monkeypatch.setenv("SHADOWGATE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SHADOWGATE_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    # A prefix no book lives under: the shipped experiments.yaml is the book (with or without a Redis to ask).
    monkeypatch.setenv("SHADOWGATE_EXPERIMENTS_KEY_PREFIX", f"test-weekly-{uuid.uuid4().hex}")
    monkeypatch.chdir(tmp_path)  # MLflow's SQLite store keeps artifacts in ./mlruns
    for name in ("SHADOWGATE_WAREHOUSE_BACKEND", "SHADOWGATE_WAREHOUSE_DUCKDB_PATH", "SHADOWGATE_ALERT_WEBHOOK_URL"):
        monkeypatch.delenv(name, raising=False)
    return World(baseline, tmp_path / "home")


def _run(dag_id: str, task_id: str, end: pd.Timestamp, **conf: Any) -> dict[str, Any]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState

    run = load_dag(dag_id).test(logical_date=end.to_pydatetime(), run_conf=conf)
    assert run.state == DagRunState.SUCCESS
    assert run.data_interval_end == end
    with create_session() as session:
        query = XComModel.get_many(run_id=run.run_id, key="return_value", dag_ids=dag_id, task_ids=task_id)
        [row] = session.scalars(query).all()
        summary: dict[str, Any] = XComModel.deserialize_value(row)
    return summary


def test_a_matured_week_is_labelled_then_evaluated_and_a_backfill_rerun_changes_nothing(
    book: World, tmp_path: Path
) -> None:
    # One join run labelling the 90 days before the weekly run (a backfill would do it day by day).
    labels = _run("join_ground_truth", "label_matured_decisions", AS_OF, relabel_days=90)
    assert labels["held_back"] is False and labels["labeled"] > 0

    summary = _run("weekly_performance", "evaluate_matured_weeks", AS_OF)
    by_label = {w["label"]: w for w in summary["weeks"]}
    assert (by_label["final"]["cohort_start"], by_label["early"]["cohort_start"]) == ("2026-02-02", "2026-04-13")
    final = book.approved_in(FINAL_WEEK)
    y = final["is_default"].to_numpy().astype(int)
    # The final label of a matured approved purchase is the simulator's own truth.
    assert (by_label["final"]["rows_compared"], by_label["final"]["defaults"]) == (len(final), int(y.sum()))
    assert by_label["final"]["models"] == {
        "champion@1": round(roc_auc_score(y, final["champion"]), 4),
        "challenger@2": round(roc_auc_score(y, final["challenger"]), 4),
    }
    assert by_label["early"]["rows_compared"] == len(book.approved_in(EARLY_WEEK))
    # The shipped book's shadow experiment names the challenger: it is the comparison, under its own name.
    assert [c["experiment_id"] for c in by_label["final"]["comparisons"]] == ["shadow-challenger"]
    comparison = by_label["final"]["comparisons"][0]
    assert comparison["auc_difference"] > 0  # the challenger sees the truth more sharply, by construction

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("shadowgate/shadow-challenger")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    roles = sorted((r.data.tags["shadowgate.label"], r.data.tags["shadowgate.role"]) for r in runs)
    assert roles == [("early", "comparison"), ("early", "model"), ("early", "model"),
                     ("final", "comparison"), ("final", "model"), ("final", "model")]  # fmt: skip
    rows = book.metrics()
    assert summary["metric_rows"] == len(rows) > 0

    # The weekly run again (a backfill of the same week): the same figures, the same runs, nothing added.
    again = _run("weekly_performance", "evaluate_matured_weeks", AS_OF)
    assert again["weeks"] == summary["weeks"] and again["mlflow_runs"] == summary["mlflow_runs"]
    assert book.metrics() == rows
    assert len(client.search_runs([experiment.experiment_id])) == 6


def test_an_operator_reevaluates_one_week_and_one_label(book: World) -> None:
    _run("join_ground_truth", "label_matured_decisions", AS_OF, relabel_days=90)
    summary = _run("weekly_performance", "evaluate_matured_weeks", AS_OF, cohort_week="2026-02-02", labels=["final"])
    [week] = summary["weeks"]
    assert (week["cohort_start"], week["label"], week["rows_compared"]) == (
        "2026-02-02",
        "final",
        len(book.approved_in(FINAL_WEEK)),
    )


def test_a_cohort_week_that_is_not_a_monday_fails_at_once_and_writes_nothing(book: World) -> None:
    from airflow.utils.state import DagRunState, TaskInstanceState

    run = load_dag("weekly_performance").test(
        logical_date=AS_OF.to_pydatetime(), run_conf={"cohort_week": "2026-02-03"}
    )
    assert run.state == DagRunState.FAILED
    tis = {t.task_id: t for t in run.get_task_instances()}
    ti = tis["evaluate_matured_weeks"]
    # Failed for good on its first try (AirflowFailException): a wrong Param is not retried three times.
    assert (ti.state, ti.try_number) == (TaskInstanceState.FAILED, 1)
    assert tis["note_alerts"].state == TaskInstanceState.UPSTREAM_FAILED
    assert book.metrics() == []
