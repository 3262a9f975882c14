"""``check_drift`` on a real DuckDB warehouse and a real MLflow store: a covariate shift from day 120 of a simulated
world, the champion's and the challenger's references logged with their training runs as training logs them."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shadowgate.config import DriftScenario, DriftSettings
from shadowgate.contract import drift_columns
from shadowgate.evaluation.drift import REPORT_FILE, render_evidently_report
from shadowgate.pipelines.alerts import Alert
from shadowgate.pipelines.drift import check_drift
from shadowgate.simulation import SimulationResult
from shadowgate.storage.duckdb import DuckDBWarehouse
from shadowgate.storage.references import MlflowReferenceStore
from shadowgate.storage.results import MlflowResultsStore
from shadowgate.storage.warehouse import default_sql_dir
from tests.warehouse_rows import load, simulated_prediction_logs

COLUMNS = drift_columns()
N_CHECKED = len(COLUMNS.numerical) + len(COLUMNS.categorical) + 2  # inputs + two models' scores


def _reference_run(uri: str, frame: pd.DataFrame, score: np.ndarray, tmp: Path, name: str) -> str:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name("training") or None
    experiment_id = experiment.experiment_id if experiment else client.create_experiment("training")
    run = client.create_run(experiment_id, run_name=name)
    sample = frame[["event_timestamp", *COLUMNS.numerical, *COLUMNS.categorical]].copy()
    sample["score"] = score
    path = tmp / f"{name}.parquet"
    sample.to_parquet(path, index=False)
    target = tmp / name
    target.mkdir()
    (target / "reference.parquet").write_bytes(path.read_bytes())
    client.log_artifact(run.info.run_id, str(target / "reference.parquet"), artifact_path="reference")
    client.set_terminated(run.info.run_id)
    return str(run.info.run_id)


@pytest.fixture(scope="module")
def shifted(world) -> SimulationResult:  # type: ignore[no-untyped-def]
    return world(scenario=DriftScenario.COVARIATE_SHIFT)


def test_a_day_is_checked_recorded_once_and_its_drift_alerted_once(shifted: SimulationResult, tmp_path: Path) -> None:
    tx = shifted.transactions
    day = (tx["event_timestamp"] - tx["event_timestamp"].min().normalize()).dt.days.to_numpy()
    first = tx["event_timestamp"].min().normalize().date()
    rng = np.random.default_rng(2)
    # A score that follows the amount (so a basket shift moves it): two "models".
    champion = 1 / (1 + np.exp(-(np.log(tx["amount"].to_numpy()) - 5.0)))
    challenger = np.clip(champion + rng.normal(0, 0.01, len(tx)), 0.001, 0.999)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    window = np.flatnonzero((day >= 60) & (day < 120))
    pick = np.sort(rng.choice(window, 3_000, replace=False))
    champion_run = _reference_run(uri, tx.iloc[pick], champion[pick], tmp_path, "champion")
    challenger_run = _reference_run(uri, tx.iloc[pick], challenger[pick], tmp_path, "challenger")
    models = {"champion": ("1", champion_run), "challenger": ("2", challenger_run)}
    sent: list[Alert] = []
    results = MlflowResultsStore(uri)
    references = MlflowReferenceStore(uri, categorical=COLUMNS.categorical, numerical=COLUMNS.numerical)
    settings = DriftSettings(min_rows=50, report_rows=500)
    with DuckDBWarehouse(tmp_path / "warehouse.duckdb", sql_dir=default_sql_dir()) as warehouse:
        warehouse.ensure_tables()
        keep = (day >= 100) & (day < 135)
        decisions = np.where(champion[keep] < 0.5, "approve", "deny")
        rows = simulated_prediction_logs(
            tx.loc[keep].reset_index(drop=True),
            decisions,
            champion[keep],
            shadow={"challenger": ("2", challenger[keep])},
        )
        load(warehouse, "prediction_logs", rows)

        def run(d: int):  # type: ignore[no-untyped-def]
            return check_drift(
                warehouse=warehouse,
                models=models,
                references=references,
                results=results,
                day=first + dt.timedelta(days=d),
                settings=settings,
                send=sent.append,
                render_report=render_evidently_report if d == 125 else None,
            )

        stable = run(110)
        assert stable.verdict == "stable", stable.sentence
        assert set(stable.profiles_computed) == {"champion@1", "challenger@2"}
        assert stable.rows == int((day == 110).sum())

        drifted = run(125)
        assert drifted.verdict == "drift", drifted.sentence
        assert "amount" in drifted.drifted_columns
        assert "score:champion@1" in drifted.drifted_columns and "score:challenger@2" in drifted.drifted_columns
        assert drifted.unseen_columns == ("channel",)  # the new "social" channel, never seen in training
        assert drifted.profiles_computed == ()  # binned once per version, read back since
        alerts_first = len(sent)
        assert alerts_first == len(drifted.alerts_raised) > 0
        # The challenger's inputs against its own reference (the same period here): drifted too, alerted under its
        # own name (what the promotion gate blocks on); a stable day is stable for it as well.
        assert stable.challengers == {"challenger@2": "stable"}
        assert drifted.challengers == {"challenger@2": "drift"}
        by_subject = {(a.subject, a.kind, a.condition) for a in sent}
        assert ("challenger@2", "drift", "amount") in by_subject and ("champion@1", "drift", "amount") in by_subject
        assert ("challenger@2", "unseen_category", "channel") in by_subject
        assert not any(a.subject == "challenger@2" and a.condition.startswith("score:") for a in sent)

        again = run(126)  # the same conditions hold the next day: nothing sent again
        assert again.verdict == "drift" and again.alerts_raised == ()
        assert len(sent) == alerts_first

        rerun = run(125)  # a re-run replaces the day: same rows, same MLflow run
        assert rerun.mlflow_run_id == drifted.mlflow_run_id
        counts = warehouse.query(
            "SELECT window_start, COUNT(*) AS n, SUM(CAST(drifted AS INT)) AS drifted "
            "FROM shadowgate.drift_reports GROUP BY 1 ORDER BY 1"
        ).to_pylist()
        assert [(r["window_start"], r["n"]) for r in counts] == [
            (first + dt.timedelta(days=d), N_CHECKED) for d in (110, 125, 126)
        ]
        assert counts[0]["drifted"] == 0
        assert counts[1]["drifted"] == len(drifted.drifted_columns)
        # The early estimates: one row per day and model, on the day's approved decisions.
        estimated = warehouse.query(
            "SELECT day, alias, n, default_rate, auc FROM shadowgate.performance_estimates ORDER BY day, alias"
        ).to_pylist()
        day_of = {d: first + dt.timedelta(days=d) for d in (110, 125, 126)}
        approved = {
            d: int(((day == d) & (champion < 0.5)).sum()) for d in (110, 125, 126)
        }  # the decisions loaded above
        assert [(r["day"], r["alias"], r["n"]) for r in estimated] == [
            (day_of[d], alias, approved[d]) for d in (110, 125, 126) for alias in ("challenger", "champion")
        ]
        assert all(0 < r["default_rate"] < 1 and 0.5 <= r["auc"] <= 1 for r in estimated)
        assert drifted.estimates["champion@1"]["n"] == approved[125]

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name(settings.experiment)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 3  # one per day checked; the re-run updated its day's run
    by_day = {r.data.tags["shadowgate.day"]: r for r in runs}
    shown = by_day[(first + dt.timedelta(days=125)).isoformat()]
    assert shown.data.tags["shadowgate.verdict"] == "drift"
    assert shown.data.tags["mlflow.note.content"].startswith(f"{first + dt.timedelta(days=125)}: the inputs moved")
    assert shown.data.metrics["psi.amount"] > shown.data.metrics["threshold.amount"]
    artifacts = {a.path for a in client.list_artifacts(shown.info.run_id)}
    assert artifacts == {"drift_columns.csv", REPORT_FILE}
    html = Path(client.download_artifacts(shown.info.run_id, REPORT_FILE, str(tmp_path)))
    text = html.read_text()
    assert "amount" in text
    # Offline: no script or stylesheet is fetched from anywhere (Evidently inlines them).
    assert re.findall(r"<script[^>]*\bsrc=", text) == []
    assert re.findall(r"<link[^>]*\bhref=\"https?:", text) == []


def test_the_estimates_of_a_day_get_their_realised_figures_when_its_final_labels_mature(
    shifted: SimulationResult, tmp_path: Path
) -> None:
    from shadowgate.config import GroundTruthSettings
    from shadowgate.pipelines.drift import realised_on_matured_day
    from shadowgate.pipelines.ground_truth import join_ground_truth
    from tests.warehouse_rows import simulated_outcomes

    tx = shifted.transactions
    first = tx["event_timestamp"].min().normalize()
    day = (tx["event_timestamp"] - first).dt.days.to_numpy()
    champion = np.clip(shifted.labels["default_probability"].to_numpy(), 0.001, 0.999)  # a perfectly calibrated model
    keep = day == 40
    decisions = np.where(champion[keep] < 0.2, "approve", "deny")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    window = np.flatnonzero(day < 40)
    pick = np.sort(np.random.default_rng(4).choice(window, 2_000, replace=False))
    run_id = _reference_run(uri, tx.iloc[pick], champion[pick], tmp_path, "champion")
    ground_truth = GroundTruthSettings()
    labelled_as_of = (first + pd.Timedelta(days=40 + ground_truth.maturity_days + 1)).to_pydatetime()
    with DuckDBWarehouse(tmp_path / "warehouse.duckdb", sql_dir=default_sql_dir()) as warehouse:
        warehouse.ensure_tables()
        frame = tx.loc[keep].reset_index(drop=True)
        load(warehouse, "prediction_logs", simulated_prediction_logs(frame, decisions, champion[keep]))
        granted = set(frame.loc[decisions == "approve", "transaction_id"])
        outcomes = shifted.outcomes[shifted.outcomes["transaction_id"].isin(granted)].reset_index(drop=True)
        load(warehouse, "outcomes", simulated_outcomes(outcomes))
        references = MlflowReferenceStore(uri, categorical=COLUMNS.categorical, numerical=COLUMNS.numerical)
        common = {
            "warehouse": warehouse,
            "models": {"champion": ("1", run_id)},
            "references": references,
            "results": MlflowResultsStore(uri),
            "settings": DriftSettings(min_rows=10),
            "send": lambda alert: True,
        }
        estimated = check_drift(day=(first + pd.Timedelta(days=40)).date(), **common)
        assert estimated.estimates["champion@1"]["n"] == int((decisions == "approve").sum())
        join_ground_truth(
            warehouse,
            interval_start=labelled_as_of - dt.timedelta(days=60),
            interval_end=labelled_as_of,
            settings=ground_truth,
        )
        matured_day = (first + pd.Timedelta(days=40)).date()
        realised = realised_on_matured_day(warehouse, matured_day, as_of=labelled_as_of)
        truth = shifted.labels["is_default"].to_numpy()[keep][decisions == "approve"]
        assert realised[("champion", "1")]["realised_n"] == len(truth)
        assert realised[("champion", "1")]["realised_defaults"] == int(truth.sum())
        # The run on the day the labels matured writes them beside the estimate and shows both.
        later = check_drift(day=matured_day + dt.timedelta(days=ground_truth.maturity_days), **common)
        assert later.verdict == "too_few_rows"  # no decision that day, yet the matured day is reported
        shown = later.matured["champion@1"]
        assert shown["realised_n"] == len(truth)
        assert shown["default_rate"] == pytest.approx(estimated.estimates["champion@1"]["default_rate"])
        assert shown["realised_default_rate"] == pytest.approx(truth.mean())
        assert shown["default_rate_low"] <= shown["default_rate"] <= shown["default_rate_high"]


def test_a_champion_without_a_reference_is_reported_not_failed(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    run = client.create_run(client.create_experiment("training"))  # a run without a reference sample
    with DuckDBWarehouse(tmp_path / "warehouse.duckdb", sql_dir=default_sql_dir()) as warehouse:
        warehouse.ensure_tables()
        summary = check_drift(
            warehouse=warehouse,
            models={"champion": ("1", run.info.run_id)},
            references=MlflowReferenceStore(uri, categorical=COLUMNS.categorical, numerical=COLUMNS.numerical),
            results=MlflowResultsStore(uri),
            day=dt.date(2026, 3, 2),
            settings=DriftSettings(),
            send=lambda alert: True,
        )
    assert summary.verdict == "no_reference"
    assert "has no training reference" in summary.sentence
