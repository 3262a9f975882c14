"""Evaluation results in a real MLflow tracking store (SQLite + local artifacts): found-or-created by key."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from shadowgate.storage.results import RUN_KEY_TAG, MlflowResultsStore, RunRecord

WEEK_MS = 1_767_571_200_000  # 2026-01-05T00:00Z, the cohort week's start: the metrics' timestamp


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MlflowResultsStore:
    monkeypatch.chdir(tmp_path)  # a sqlite store keeps artifacts in ./mlruns: keep them in the test's folder
    return MlflowResultsStore(f"sqlite:///{tmp_path / 'mlflow.db'}")


def _record(tmp_path: Path, **metrics: float) -> RunRecord:
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / "report.html").write_text("<html>week 2026-W02</html>")
    return RunRecord(
        key="shadow-challenger/2026-01-05/final/challenger@2",
        name="2026-01-05 final challenger@2",
        params={"cohort_week": "2026-01-05", "label": "final", "model": "challenger@2"},
        tags={"shadowgate.role": "model"},
        metrics=metrics,
        step=1,
        timestamp_ms=WEEK_MS,
        artifacts_dir=artifacts,
    )


def test_a_rerun_updates_the_same_run_and_never_duplicates(store: MlflowResultsStore, tmp_path: Path) -> None:
    experiment = store.ensure_experiment("shadowgate/shadow-challenger", tags={"shadowgate.models": "champion,x"})
    first = store.record(experiment, _record(tmp_path, auc=0.81, brier=0.04))
    assert first.created
    # The same figures again (a backfill re-run): same run, metric history unchanged.
    again = store.record(experiment, _record(tmp_path, auc=0.81, brier=0.04))
    assert (again.run_id, again.created) == (first.run_id, False)
    client = MlflowClient(tracking_uri=store.tracking_uri, registry_uri=store.tracking_uri)
    assert [m.value for m in client.get_metric_history(first.run_id, "auc")] == [0.81]
    # A re-run that computed another figure (late outcomes arrived): the run shows it, its history keeps both.
    store.record(experiment, _record(tmp_path, auc=0.82, brier=0.04))
    run = client.get_run(first.run_id)
    assert run.data.metrics["auc"] == 0.82
    assert sorted(m.value for m in client.get_metric_history(first.run_id, "auc")) == [0.81, 0.82]
    assert run.data.params == {"cohort_week": "2026-01-05", "label": "final", "model": "challenger@2"}
    assert run.data.tags[RUN_KEY_TAG] == "shadow-challenger/2026-01-05/final/challenger@2"
    assert run.info.status == "FINISHED"
    assert [a.path for a in client.list_artifacts(first.run_id)] == ["report.html"]
    assert len(client.search_runs([experiment])) == 1


def test_the_experiment_is_found_again_and_its_tags_updated(store: MlflowResultsStore) -> None:
    first = store.ensure_experiment("shadowgate/canary", tags={"shadowgate.required_cases": "120"})
    second = store.ensure_experiment("shadowgate/canary", tags={"shadowgate.required_cases": "140"})
    assert first == second
    client = MlflowClient(tracking_uri=store.tracking_uri, registry_uri=store.tracking_uri)
    assert client.get_experiment(first).tags["shadowgate.required_cases"] == "140"


def test_a_key_that_cannot_stand_in_a_filter_is_refused(store: MlflowResultsStore) -> None:
    experiment = store.ensure_experiment("shadowgate/quotes", tags={})
    odd = RunRecord(key="it's/a key", name="odd", params={}, tags={}, metrics={}, step=0, timestamp_ms=WEEK_MS)
    with pytest.raises(ValueError, match="run key"):
        store.record(experiment, odd)
    assert MlflowClient(tracking_uri=store.tracking_uri).search_runs([experiment]) == []


def test_a_relabelled_rerun_shows_the_new_smaller_values_and_keeps_the_revision_in_the_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    now = [1_800_000_000.0]  # a clock the test moves (seconds), far after the week
    store = MlflowResultsStore(f"sqlite:///{tmp_path / 'mlflow.db'}", clock=lambda: now[0])
    experiment = store.ensure_experiment("shadowgate/relabel", tags={})
    first = store.record(experiment, _record(tmp_path, auc=0.81, crossed=1.0, arm_default_rate_control=0.05))
    # Late outcomes: every figure smaller, the canary's arm rate no longer computable (the record lacks it).
    store.record(experiment, _record(tmp_path, auc=0.79, crossed=0.0))
    client = MlflowClient(tracking_uri=store.tracking_uri, registry_uri=store.tracking_uri)
    metrics = client.get_run(first.run_id).data.metrics
    assert (metrics["auc"], metrics["crossed"]) == (0.79, 0.0)
    assert metrics["arm_default_rate_control"] != metrics["arm_default_rate_control"]  # NaN: not its old 0.05
    history = {m.timestamp: m.value for m in client.get_metric_history(first.run_id, "crossed")}
    assert history == {WEEK_MS: 1.0, 1_800_000_000_000: 0.0}
    assert {m.step for m in client.get_metric_history(first.run_id, "crossed")} == {1}
    # The same figures again: nothing logged. A revision with a clock behind the last one still wins.
    store.record(experiment, _record(tmp_path, auc=0.79, crossed=0.0))
    assert len(client.get_metric_history(first.run_id, "crossed")) == 2
    now[0] = 1_700_000_000.0
    store.record(experiment, _record(tmp_path, auc=0.78, crossed=1.0))
    store.record(experiment, _record(tmp_path, auc=0.77, crossed=0.0))
    metrics = client.get_run(first.run_id).data.metrics
    assert (metrics["auc"], metrics["crossed"]) == (0.77, 0.0)
    assert [m.timestamp for m in client.get_metric_history(first.run_id, "auc")] == [
        WEEK_MS,
        1_800_000_000_000,
        1_800_000_000_001,
        1_800_000_000_002,
    ]
    assert len(client.search_runs([experiment])) == 1
