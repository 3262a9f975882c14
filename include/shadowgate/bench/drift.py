"""``bench drift``: one day of 500,000 decisions checked for drift end to end on DuckDB and MLflow.

Setup (not timed): a synthetic day of served decisions (the performance bench's generator, one day), each scored by
three models, MERGEd into a fresh DuckDB warehouse; for each model version a training run in a local MLflow store
holding a 20,000-row reference sample (another synthetic day), and the version's reference profile binned once, as
the first check of a version does in production.

Timed, in a fresh process (so its peak RSS is the check's own):

* ``seconds``: :func:`shadowgate.pipelines.drift.check_drift` for the day: the warehouse read of the day's inputs
  and nested scores, the statistics and the decision, the alerts, Evidently's report on its sample (at most
  ``SHADOWGATE_DRIFT_REPORT_ROWS``), ``drift_reports`` and the MLflow run;
* ``statistics_seconds``: :func:`shadowgate.evaluation.drift.check_day` alone on the day's frame (every row);
* ``evidently_seconds``: Evidently's default ``DataDriftPreset`` on the same frame against the same reference.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shadowgate.bench.performance import MODELS, _load, synthetic_week

DAY = dt.date(2026, 1, 5)
REFERENCE_ROWS = 20_000
TARGET_S = 30.0
SPEEDUP = 2.0


@dataclass(frozen=True)
class DriftBenchResult:
    rows: int
    columns: int
    setup_s: float
    seconds: float
    statistics_seconds: float
    evidently_seconds: float
    report_rows: int
    verdict: str
    peak_rss_mb: float

    @property
    def passed(self) -> bool:
        return self.seconds <= TARGET_S and self.evidently_seconds >= SPEEDUP * self.statistics_seconds

    def render(self) -> str:
        speedup = self.evidently_seconds / self.statistics_seconds if self.statistics_seconds else float("inf")
        return "\n".join(
            [
                f"drift benchmark: one day, {self.rows:,} decisions, {self.columns} columns checked (the contract's "
                f"drift columns and {len(MODELS)} models' scores); DuckDB, MLflow on SQLite",
                f"  setup (generate + MERGE, reference runs, profiles binned once; not timed): {self.setup_s:.1f} s",
                f"  seconds {self.seconds:.1f} end to end (read, statistics, decision, alerts, Evidently report on "
                f"{self.report_rows:,} rows, drift_reports, MLflow)   target <= {TARGET_S:g}",
                f"  statistics_seconds {self.statistics_seconds:.2f} (PSI on every row, one decision)",
                f"  evidently_seconds {self.evidently_seconds:.1f} (default DataDriftPreset, same frame)   "
                f"{speedup:.1f}x   target >= {SPEEDUP:g}x",
                f"  verdict of the day: {self.verdict}",
                f"  peak RSS of the checking process {self.peak_rss_mb:,.0f} MB",
                f"  {'PASS' if self.passed else 'FAIL'}",
            ]
        )

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "target_s": TARGET_S, "pass": self.passed}


def _reference_runs(base: Path) -> dict[str, tuple[str, str | None]]:
    """A training run per model holding a reference sample (another synthetic day), its profile binned once."""
    from mlflow import MlflowClient

    from shadowgate.contract import drift_columns
    from shadowgate.pipelines.performance import pivot_scores
    from shadowgate.storage.references import MlflowReferenceStore

    uri = f"sqlite:///{base / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("bnpl_training")
    columns = drift_columns()
    sample, _ = synthetic_week(per_day=REFERENCE_ROWS, seed=11, start=DAY - dt.timedelta(days=60), days=1)
    frame = sample.select(["event_timestamp", *columns.numerical, *columns.categorical]).to_pandas()
    scores = pivot_scores(sample.column("scores"), sample.num_rows)
    references = MlflowReferenceStore(uri, categorical=columns.categorical, numerical=columns.numerical)
    models: dict[str, tuple[str, str | None]] = {}
    for key, values in scores.items():
        run = client.create_run(experiment, run_name=f"{key.alias}@{key.version}")
        path = base / f"reference-{key.version}.parquet"
        frame.assign(score=values).to_parquet(path, index=False)
        target = base / f"reference-{key.version}"
        target.mkdir()
        shutil.copy(path, target / "reference.parquet")
        client.log_artifact(run.info.run_id, str(target / "reference.parquet"), artifact_path="reference")
        client.set_terminated(run.info.run_id)
        references.profile(key.version, run.info.run_id)  # binned once per version (the first check does it)
        models[key.alias] = (key.version, run.info.run_id)
    return models


def _child(base: Path) -> dict[str, Any]:
    """The timed part (a fresh process)."""
    import pandas as pd

    from shadowgate.config import DriftSettings
    from shadowgate.contract import drift_columns
    from shadowgate.evaluation.drift import check_day, render_evidently_report
    from shadowgate.pipelines.drift import check_drift, combined_profile, score_column
    from shadowgate.pipelines.performance import pivot_scores
    from shadowgate.storage.duckdb import DuckDBWarehouse
    from shadowgate.storage.references import MlflowReferenceStore
    from shadowgate.storage.results import MlflowResultsStore
    from shadowgate.storage.warehouse import default_sql_dir

    os.chdir(base)
    uri = f"sqlite:///{base / 'mlflow.db'}"
    models = json.loads((base / "models.json").read_text())
    models = {alias: (v[0], v[1]) for alias, v in models.items()}
    columns = drift_columns()
    names = [*columns.numerical, *columns.categorical]
    settings = DriftSettings()
    references = MlflowReferenceStore(uri, categorical=columns.categorical, numerical=columns.numerical)
    warehouse = DuckDBWarehouse(base / "warehouse.duckdb", sql_dir=default_sql_dir())
    try:
        started = time.perf_counter()
        summary = check_drift(
            warehouse=warehouse,
            models=models,
            references=references,
            results=MlflowResultsStore(uri),
            day=DAY,
            settings=settings,
            send=lambda alert: True,
            render_report=render_evidently_report,
        )
        seconds = time.perf_counter() - started
        # The same frame for the two statistics timings (read again, not timed).
        start = dt.datetime.combine(DAY, dt.time(), dt.UTC)
        table = warehouse.run(
            "queries/drift_day",
            {"day_start": start, "day_end": start + dt.timedelta(days=1)},
            columns=", ".join(names),
        )
    finally:
        warehouse.close()
    current: dict[str, Any] = {n: table.column(n).to_numpy(zero_copy_only=False) for n in names}
    for key, values in pivot_scores(table.column("scores"), table.num_rows).items():
        current[score_column(key.alias, key.version)] = values
    champion_version, champion_run = models["champion"]
    profiles = {
        score_column(alias, version): references.profile(version, run).profile
        for alias, (version, run) in models.items()
    }
    profile = combined_profile(references.profile(champion_version, champion_run).profile, profiles)
    started = time.perf_counter()
    decision = check_day(profile, current, floor=settings.psi_floor, alpha=settings.alpha)
    statistics_seconds = time.perf_counter() - started
    reference = references.sample(champion_run)
    frame = pd.DataFrame(current)
    ref_frame = reference[names].copy()
    for alias, (version, run) in models.items():
        ref_frame[score_column(alias, version)] = references.sample(run)["score"].to_numpy()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        render_evidently_report(ref_frame, frame, Path(tmp), columns=list(frame.columns))
        evidently_seconds = time.perf_counter() - started
    return {
        "rows": table.num_rows,
        "columns": len(decision.columns),
        "seconds": seconds,
        "statistics_seconds": statistics_seconds,
        "evidently_seconds": evidently_seconds,
        "report_rows": min(settings.report_rows, table.num_rows),
        "verdict": summary.verdict,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_drift_bench(*, rows: int = 500_000, echo: Callable[[str], None] = print) -> DriftBenchResult:
    """Generate and load the day and the references, then time the check in a fresh process."""
    base = Path(tempfile.mkdtemp(prefix="shadowgate-bench-drift-"))
    try:
        started = time.perf_counter()
        echo(f"setup in {base}: {rows:,} decisions of one day, {len(MODELS)} models, reference runs")
        predictions, _ = synthetic_week(per_day=rows, start=DAY, days=1)
        _load(base / "warehouse.duckdb", "prediction_logs", predictions)
        del predictions
        models = _reference_runs(base)
        (base / "models.json").write_text(json.dumps(models))
        setup_s = time.perf_counter() - started
        echo(f"  ready in {setup_s:.1f} s; checking the day in a fresh process")
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        child = subprocess.run(
            [sys.executable, "-m", "shadowgate.bench.drift", str(base)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if child.returncode != 0:
            raise RuntimeError(f"the checking process failed:\n{child.stderr[-4000:]}")
        figures = json.loads(child.stdout.strip().splitlines()[-1])
        return DriftBenchResult(setup_s=setup_s, **figures)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.WARNING)
    print(json.dumps(_child(Path(sys.argv[1])), default=lambda v: float(v) if isinstance(v, np.floating) else str(v)))
