"""The README's walk-through on a smaller replay, driven as a user drives it: `make up` (a private stack), replay two
weeks through the API, trigger the upload, then backfill `join_ground_truth` and `weekly_performance` through
Airflow's REST API while its scheduler runs (the `shadowgate trigger` / `shadowgate backfill` commands).

What the walk-through promises and this test holds: every run of both backfills succeeds at its first try (no run
meets a locked Airflow database or a locked warehouse file), the scheduler stays alive, and the warehouse and MLflow
hold exactly what the replay sent: every answered decision and sent outcome once, one label version per approved
decision and maturity, both weeks evaluated on both labels, a comparison run per week and label saying its verdict.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from shadowgate.local import stack
from tests.e2e.conftest import REPO_ROOT, SMALL_HISTORY

pytestmark = pytest.mark.slow

# A thin quarter and a half of purchases: the fortnight evaluated (from 2026-07-06) is followed by purchases whose
# outcomes keep flowing when the fortnight's final labels mature in October (as on a live book: a day with no outcome
# at all is a broken feed, and join_ground_truth holds that day's labels back).
REPLAY = ["--transactions", "4000", "--customers", "500", "--days", "105", "--start", "2026-07-06", "--seed", "2026"]
FORTNIGHT_END = "2026-07-20"


def _shadowgate(*args: str, timeout: float = 900) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "shadowgate.cli", *args],
        cwd=REPO_ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    print(done.stdout[-3000:], done.stderr[-3000:])
    assert done.returncode == 0, f"shadowgate {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done.stdout


def _count(pattern: str, text: str) -> int:
    found = re.search(pattern, text)
    assert found, f"{pattern!r} not in:\n{text}"
    return int(found.group(1).replace(",", ""))


def test_a_replayed_fortnight_is_uploaded_labelled_and_evaluated_through_airflow_backfills(
    private_stack: dict[str, int], stack_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for variable, value in SMALL_HISTORY.items():
        monkeypatch.setenv(variable, value)
    try:
        stack.up(repo_root=REPO_ROOT)
        replayed = _shadowgate("replay", *REPLAY)
        answered = _count(r"decisions\s+([\d,]+) answered", replayed)
        outcomes = _count(r"outcomes\s+([\d,]+) sent", replayed)

        uploaded = _shadowgate("trigger", "upload_predictions")
        assert "1 runs (1 success)" in uploaded

        # The days on which the fortnight's labels mature: early (day 17 + 24 h grace) and final (day 90).
        reports = [
            _shadowgate("backfill", "join_ground_truth", "--from", "2026-07-22", "--to", "2026-08-07"),
            _shadowgate("backfill", "join_ground_truth", "--from", "2026-10-03", "--to", "2026-10-19"),
            # Runs as of every Monday from 2026-08-03 to 2026-10-19: each evaluates the week whose labels matured.
            _shadowgate("backfill", "weekly_performance", "--from", "2026-07-27", "--to", "2026-10-12"),
        ]
        for report, runs in zip(reports, (17, 17, 12), strict=True):
            assert f": {runs} runs ({runs} success)" in report and "every task at its first try" in report
            assert "scheduler healthy: True" in report

        # No join run held its labels back for a broken-looking feed, and each labelled what matured that day.
        from shadowgate.local.airflow_rest import AirflowRest

        state = stack.status(repo_root=REPO_ROOT)
        airflow = f"http://127.0.0.1:{private_stack['airflow']}"
        with AirflowRest(airflow, username="admin", password=state.airflow_password or "") as rest:
            joins = {
                r["dag_run_id"]: rest.xcom("join_ground_truth", r["dag_run_id"], "label_matured_decisions")
                for r in rest.runs("join_ground_truth", run_type="backfill")
            }
        held = {run: (j["alerts"], j["signals"]) for run, j in joins.items() if j["held_back"]}
        assert held == {}

        from shadowgate.config import PathSettings, WarehouseSettings
        from shadowgate.storage import open_warehouse

        warehouse = open_warehouse(WarehouseSettings(), home=PathSettings().home)
        try:
            q = warehouse.qualified
            assert warehouse.count("prediction_logs") == answered
            assert warehouse.count("outcomes") == outcomes
            assert warehouse.count("quarantine") == 0
            [approved] = warehouse.query(
                f"SELECT count(*) AS n FROM {q}.prediction_logs WHERE decision = 'approve'"
                f" AND event_timestamp < TIMESTAMP '{FORTNIGHT_END} 00:00:00+00'"
            ).to_pylist()
            labelled = warehouse.query(
                f"SELECT count(DISTINCT prediction_id) AS decisions, count(DISTINCT CASE WHEN final_defaulted IS NOT"
                f" NULL THEN prediction_id END) AS final, count(*) AS versions FROM {q}.labeled_predictions"
                f" WHERE event_timestamp < TIMESTAMP '{FORTNIGHT_END} 00:00:00+00'"
            ).to_pylist()[0]
            # Every approved decision of the fortnight labelled early, and again when its final label matured (a late
            # outcome would add a version of its own).
            assert approved["n"] > 150
            assert (labelled["decisions"], labelled["final"]) == (approved["n"], approved["n"])
            assert labelled["versions"] >= 2 * approved["n"]
            weeks = warehouse.query(
                f"SELECT label, count(DISTINCT cohort_start) AS weeks FROM {q}.model_metrics GROUP BY label"
                " ORDER BY label"
            ).to_pylist()
            final_weeks = warehouse.query(
                f"SELECT DISTINCT cohort_start FROM {q}.model_metrics WHERE label = 'final' ORDER BY cohort_start"
            ).to_pylist()
            assert [str(w["cohort_start"])[:10] for w in final_weeks] == ["2026-07-06", "2026-07-13"]
            assert {w["label"] for w in weeks} == {"early", "final"}
        finally:
            warehouse.close()

        from mlflow import MlflowClient

        client = MlflowClient(f"http://127.0.0.1:{private_stack['mlflow']}")
        experiment = client.get_experiment_by_name("shadowgate/shadow-challenger") or next(
            e for e in client.search_experiments() if e.name.startswith("shadowgate/")
        )
        comparisons = client.search_runs(
            [experiment.experiment_id], filter_string="tags.`shadowgate.role` = 'comparison'"
        )
        finals = [r for r in comparisons if r.data.tags["shadowgate.label"] == "final"]
        assert len(finals) == 2  # the fortnight's two weeks on the final label
        for run in comparisons:
            assert run.info.run_name.startswith("comparison: challenger@")
            description = run.data.tags["mlflow.note.content"]
            assert re.match(r"challenger@\d+ (is ahead of|is behind|and) champion@\d+", description), description
    finally:
        capsys.readouterr()
        stack.down(repo_root=REPO_ROOT)
        said = capsys.readouterr().out
        print(said)
    assert "SIGKILL" not in said
