"""The whole loop after a concept shock, on real parts (DuckDB, an MLflow SQLite store, real models): the pipeline
functions the DAGs call, in the order and at the instants the DAGs run them.

* A champion is trained on an earlier world (no shock) and decides every purchase of a year.
* On day 120 defaults rise in one segment (young customers on the app) while the inputs stay as they were: drift
  cannot see it (``test_drift_worlds``), so the **weekly evaluation** must: it alerts on the champion's default rate.
* On day 270 ``retrain_challenger`` trains on the decisions as logged (the window ending 90 days before, half a year)
  and registers the new version as ``@challenger`` after its replay against the champion's logged scores.
* The challenger scores every later purchase in shadow; week after week the evaluation compares the two on the
  matured labels, and ``promote_challenger`` runs after each weekly run, until it promotes.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shadowgate.config import (
    DriftScenario,
    EvaluationSettings,
    GroundTruthSettings,
    MLflowSettings,
    RetrainSettings,
    SimulationSettings,
    TrainingSettings,
)
from shadowgate.decisioning.policies import load_policy
from shadowgate.features import features_frame
from shadowgate.pipelines.ground_truth import join_ground_truth
from shadowgate.pipelines.performance import ComparisonPlan, EvaluationPlan, cohort_week, weekly_performance
from shadowgate.pipelines.promotion import promote_challengers
from shadowgate.pipelines.retrain import logged_rows, retrain_from_warehouse, training_window
from shadowgate.promotion import load_gates
from shadowgate.registry import CHALLENGER, CHAMPION, PREVIOUS, ModelRegistry
from shadowgate.serving.models import MlflowModelSource
from shadowgate.simulation import simulate
from shadowgate.storage.deployments import WarehouseDeploymentLog
from shadowgate.storage.duckdb import DuckDBWarehouse
from shadowgate.storage.results import MlflowResultsStore
from shadowgate.storage.warehouse import default_sql_dir
from shadowgate.training.train import ModelKind, train_and_register
from tests.warehouse_rows import load, simulated_outcomes, simulated_prediction_logs

START = dt.date(2026, 1, 5)
SHOCK_DAY, RETRAIN_DAY, DAYS = 120, 270, 364
EXPERIMENT = ComparisonPlan(
    experiment_id="shadow-challenger", treatment_alias=CHALLENGER, started_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
)


def _at(day: int) -> dt.datetime:
    return dt.datetime.combine(START, dt.time(), dt.UTC) + dt.timedelta(days=day)


def test_a_concept_shock_is_noticed_retrained_for_and_the_retrained_challenger_promoted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # a SQLite MLflow store keeps artifacts in ./mlruns
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow_settings = MLflowSettings(tracking_uri=uri, training_experiment="loop")
    path = tmp_path / "warehouse.duckdb"
    open_warehouse = lambda: DuckDBWarehouse(path, sql_dir=default_sql_dir())  # noqa: E731
    deployments = WarehouseDeploymentLog(open_warehouse)
    registry = ModelRegistry(tracking_uri=uri, model_name=mlflow_settings.model_name, deployments=deployments)
    ground_truth = GroundTruthSettings()
    settings = EvaluationSettings()
    plan = EvaluationPlan(settings=settings, early_maturity_days=17, maturity_days=90)
    policies = {"conservative": load_policy("conservative").thresholds}
    results = MlflowResultsStore(uri)

    # The champion: trained on an earlier world, the first deployment.
    before = simulate(
        SimulationSettings(transactions=80_000, customers=8_000, days=182, seed=1, start=dt.date(2025, 7, 7))
    )
    champion = train_and_register(
        transactions=before.transactions, outcomes=before.outcomes, kind=ModelKind.GRADIENT_BOOSTING,
        as_of=_at(0), alias=CHAMPION, training=TrainingSettings(reference_rows=2_000),
        mlflow_settings=mlflow_settings, deployments=deployments, actor="bootstrap",
    )  # fmt: skip
    world = simulate(
        SimulationSettings(
            transactions=300_000, customers=30_000, days=DAYS, seed=2, start=START,
            scenario=DriftScenario.CONCEPT_SHOCK, drift_start_day=SHOCK_DAY,
        )
    )  # fmt: skip
    source = MlflowModelSource(tracking_uri=uri, model_name=mlflow_settings.model_name)
    features = features_frame(world.transactions)
    champion_scores = source.fetch(champion.model_version).score_batch(features)
    medium = policies["conservative"].medium
    decisions = np.where(champion_scores < medium, "approve", "deny")
    ts = pd.DatetimeIndex(world.transactions["event_timestamp"]).tz_convert("UTC")
    day = np.asarray((ts - pd.Timestamp(START, tz="UTC")).days)
    granted = set(world.transactions.loc[decisions == "approve", "transaction_id"])
    outcomes = simulated_outcomes(world.outcomes[world.outcomes["transaction_id"].isin(granted)].reset_index(drop=True))

    # Days 0-269: the champion alone. Every Monday, as the DAGs run: join_ground_truth labels what matured in the
    # week (labels as known then), then weekly_performance evaluates the cohort week whose final label just matured.
    phase_one = day < RETRAIN_DAY
    with open_warehouse() as warehouse:
        warehouse.ensure_tables()
        load(
            warehouse,
            "prediction_logs",
            simulated_prediction_logs(
                world.transactions[phase_one].reset_index(drop=True), decisions[phase_one], champion_scores[phase_one]
            ),
        )
        load(warehouse, "outcomes", outcomes)
    alerts = []

    def monday(at: dt.datetime) -> list[dict[str, object]]:
        """One Monday's runs: the week's labels, then the week whose final label matured (its comparisons)."""
        with open_warehouse() as warehouse:
            join_ground_truth(
                warehouse, interval_start=at - dt.timedelta(days=7), interval_end=at, settings=ground_truth
            )
            cohort = (at - dt.timedelta(days=7 + 91)).date()
            if cohort < START:
                return []
            summary = weekly_performance(
                warehouse, results, as_of=at, plan=plan, policies=policies, experiments=[EXPERIMENT],
                weeks=[cohort_week(cohort, "final", as_of=at)],
            )  # fmt: skip
        alerts.extend((cohort, title) for title in summary.alerts_sent)
        return list(summary.weeks[0]["comparisons"])

    first_monday = _at(7)
    for k in range(RETRAIN_DAY // 7):
        monday(first_monday + dt.timedelta(weeks=k))
    noticed = [(w, t) for w, t in alerts if "champion@1" in t]
    assert noticed, alerts  # the evaluation noticed the shock on the champion
    assert min(w for w, _ in noticed) >= START + dt.timedelta(days=SHOCK_DAY - 7)  # not before it happened
    print(f"\nnoticed: {noticed[0]}")

    # The retraining run on day 270, on the logs.
    window = training_window(
        _at(RETRAIN_DAY), maturity_days=ground_truth.maturity_days, training_days=182, replay_days=28
    )
    with open_warehouse() as warehouse:
        rows = logged_rows(warehouse, window)
    retrain = RetrainSettings()
    retrained = retrain_from_warehouse(
        rows=rows, window=window, kind=ModelKind.GRADIENT_BOOSTING, training=TrainingSettings(reference_rows=2_000),
        mlflow_settings=mlflow_settings, deployments=deployments, actor="airflow:retrain_challenger",
        evaluation=settings, min_training_defaults=retrain.min_training_defaults,
        min_replay_defaults=retrain.min_replay_defaults,
    )  # fmt: skip
    print(f"retrained: {retrained}")
    assert retrained["outcome"] == "registered", retrained
    new = registry.version(CHALLENGER)
    assert new is not None and new.version == "2"

    # Days 270-363: the champion decides, the challenger scores every request in shadow.
    challenger_scores = source.fetch(new.version).score_batch(features)
    phase_two = ~phase_one
    with open_warehouse() as warehouse:
        load(
            warehouse,
            "prediction_logs",
            simulated_prediction_logs(
                world.transactions[phase_two].reset_index(drop=True), decisions[phase_two],
                champion_scores[phase_two], shadow={CHALLENGER: (new.version, challenger_scores[phase_two])},
                first_id=int(phase_one.sum()),
            ),
        )  # fmt: skip
    # Every Monday after the retraining: join, evaluate the week whose final label matured, then the gate.
    promoted = None
    looks: list[dict[str, object]] = []
    at = first_monday + dt.timedelta(weeks=RETRAIN_DAY // 7)
    while at <= _at(DAYS + 91) and promoted is None:
        looks += monday(at)
        gate = promote_challengers(
            open_warehouse=open_warehouse, registry=registry, experiments=[EXPERIMENT], gates=load_gates(),
            as_of=at, dry_run=False, actor="airflow:promote_challenger", results=results,
        )  # fmt: skip
        for decision in gate.decisions:
            print(f"{at.date()}: {[(c['look'], c['verdict'], c['sequential_z']) for c in looks[-1:]]} → "
                  f"{decision['action']}: {decision['summary']}")  # fmt: skip
            assert decision["action"] in ("wait", "promote"), decision["summary"]
            if decision["action"] == "promote":
                promoted = (at, decision)
        at += dt.timedelta(weeks=1)
    assert promoted is not None, looks
    assert registry.aliases() == {CHAMPION: new.version, PREVIOUS: champion.model_version}
    assert all(g["passed"] for g in promoted[1]["gates"])
