"""``bench performance``: one week at 500,000 decisions a day labelled and evaluated end to end on DuckDB.

Setup (not timed): a synthetic week of served decisions — 3.5M ``prediction_logs`` rows, each scored by the champion
and two challengers, decided by the conservative policy's cut-offs on the champion's score — and the outcomes of the
approved purchases (instalment 2 paid or late, defaults), MERGEd into a fresh DuckDB warehouse as the uploader would.
The challenger ranks better than the champion by construction; challenger-b as well as the champion.

Timed, in a fresh process (so its peak RSS is the evaluation's own): ``join_ground_truth`` labelling every decision of
the week (early and final labels, one run whose interval spans both maturities, as a backfill would), then
``weekly_performance`` of the week for both labels — the warehouse queries, per-model metrics, policy outcomes,
segments, DeLong/McNemar/bootstrap/Holm, the sequential look, ``model_metrics`` and the MLflow runs with their HTML
report and charts (a local SQLite tracking store).
"""

from __future__ import annotations

import datetime as dt
import json
import math
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
import pyarrow as pa
import pyarrow.compute as pc

from shadowgate.simulation.mechanism import sigmoid

WEEK_START = dt.date(2026, 1, 5)
MODELS = (("champion", "1", 1.0), ("challenger", "2", 0.6), ("challenger-b", "3", 1.0))
"""(alias, version, noise) of the models that scored every request: the smaller the noise, the better the ranking."""
MEDIUM, HIGH = 0.25, 0.5
"""The conservative policy's cut-offs: approve below MEDIUM, refer below HIGH, deny above."""
TARGET_S = 60.0


def _one(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous array (pyarrow hands large conversions back in chunks)."""
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def _ids(prefix: str, values: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(pa.scalar(prefix), pc.cast(pa.array(values), pa.string()), "")


def _timestamps(start: dt.date, seconds: np.ndarray) -> pa.Array:
    base = int(dt.datetime(start.year, start.month, start.day, tzinfo=dt.UTC).timestamp() * 1_000_000)
    return pa.array(base + (seconds * 1_000_000).astype(np.int64), pa.timestamp("us", tz="UTC"))


def _filled(schema: pa.Schema, n: int, given: dict[str, pa.Array]) -> pa.Table:
    """A table of ``schema``: the ``given`` columns, every other one null when it may be, else zero/empty."""
    columns = []
    for f in schema:
        if f.name in given:
            columns.append(given[f.name].cast(f.type) if given[f.name].type != f.type else given[f.name])
        elif f.nullable:
            columns.append(pa.nulls(n, f.type))
        else:
            columns.append(_zero(f.type, n))
    return pa.Table.from_arrays(columns, schema=schema)


def _zero(kind: pa.DataType, n: int) -> pa.Array:
    if pa.types.is_struct(kind):
        return pa.StructArray.from_arrays([_zero(f.type, n) for f in kind], fields=list(kind))
    if pa.types.is_list(kind):
        return pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, np.int32)), pa.nulls(0, kind.value_type))
    if pa.types.is_string(kind):
        return pa.repeat(pa.scalar("x"), n)
    return pa.array(np.zeros(n)).cast(kind)


def synthetic_week(
    *, per_day: int, seed: int = 7, start: dt.date = WEEK_START, days: int = 7
) -> tuple[pa.Table, pa.Table]:
    """(prediction_logs rows, outcomes rows) of one week (or ``days`` days) at ``per_day`` decisions a day."""
    from shadowgate.storage.warehouse import arrow_schema

    n = per_day * days
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    logit = -3.0 + 1.2 * risk
    is_default = rng.random(n) < sigmoid(logit)
    seconds = np.sort(rng.uniform(0, days * 86_400 - 1, n))
    stamps = _timestamps(start, seconds)
    scores = {alias: sigmoid(logit + rng.normal(scale=noise, size=n)) for alias, _, noise in MODELS}
    champion = scores["champion"]
    decision = np.where(champion < MEDIUM, "approve", np.where(champion < HIGH, "manual_review", "deny"))
    # The nested scores: one struct per model and request, the models in the same order on every request.
    k = len(MODELS)
    flat = pa.StructArray.from_arrays(
        [
            _one(a)
            for a in [
                pa.array(np.tile([a for a, _, _ in MODELS], n)),
                pa.array(np.tile([v for _, v, _ in MODELS], n)),
                pa.array(np.column_stack([scores[a] for a, _, _ in MODELS]).ravel()),
                pa.array(np.full(n * k, 12.0)),
                pa.repeat(pa.scalar("ok"), n * k),
                pa.nulls(n * k, pa.string()),
            ]
        ],
        names=["alias", "model_version", "score", "latency_us", "status", "error"],
    )
    nested = pa.ListArray.from_arrays(pa.array(np.arange(0, n * k + 1, k, dtype=np.int32)), flat)
    amount = np.round(rng.lognormal(5.3, 0.8, n), 2)
    index = np.arange(n)
    predictions = _filled(
        arrow_schema("prediction_logs"),
        n,
        {
            "prediction_id": _ids("p", index),
            "schema_version": pa.array(np.full(n, 2)),
            "transaction_id": _ids("tx", index),
            "customer_id_hash": _ids("c", index % (n // 8 + 1)),
            "merchant_id": _ids("m", index % 500),
            "event_timestamp": stamps,
            "served_at": stamps,
            "amount": pa.array(amount),
            "currency": pa.repeat(pa.scalar("EUR"), n),
            "installments": pa.array(rng.choice([3, 4, 6], n)),
            "merchant_category": pa.array(rng.choice(["electronics", "fashion", "home", "beauty", "travel"], n)),
            "channel": pa.array(rng.choice(["web", "app", "in_store", "social"], n)),
            "device": pa.array(rng.choice(["ios", "android", "desktop"], n)),
            "customer_age": pa.array(rng.integers(18, 80, n)),
            "customer_tenure_days": pa.array(rng.integers(0, 2000, n)),
            "scores": nested,
            "served_by": pa.repeat(pa.scalar("champion@1"), n),
            "score": pa.array(champion),
            "decision": pa.array(decision),
            "risk_level": pa.array(np.where(decision == "approve", "low", "high")),
            "policy_name": pa.repeat(pa.scalar("conservative"), n),
            "policy_version": pa.repeat(pa.scalar("1"), n),
            "stream_entry_id": _ids("1-", index),
            "loaded_at": stamps,
        },
    )
    # Outcomes of the approved purchases: instalment 2 (day 14) paid, or late (known day 17) for defaulters and a few
    # others; defaulters' default known on day 31.
    approved = np.flatnonzero(decision == "approve")
    late = is_default[approved] | (rng.random(approved.size) < 0.04)
    defaulted = approved[is_default[approved]]
    rows = np.concatenate([approved, defaulted])
    kind = np.concatenate([np.where(late, "instalment_late", "instalment_paid"), np.full(defaulted.size, "default")])
    known_day = np.concatenate([np.where(late, 17, 14), np.full(defaulted.size, 31)])
    instalment = np.concatenate([np.full(approved.size, 2), np.full(defaulted.size, 3)])
    outcome_stamps = _timestamps(start, seconds[rows] + known_day * 86_400)
    outcomes = _filled(
        arrow_schema("outcomes"),
        rows.size,
        {
            "outcome_id": _ids("o", np.arange(rows.size)),
            "schema_version": pa.array(np.full(rows.size, 2)),
            "transaction_id": _ids("tx", rows),
            "event_type": pa.array(kind),
            "event_timestamp": outcome_stamps,
            "instalment_number": pa.array(instalment),
            "amount": pa.array(amount[rows] / 4),
            "received_at": outcome_stamps,
            "stream_entry_id": _ids("2-", np.arange(rows.size)),
            "loaded_at": outcome_stamps,
        },
    )
    return predictions, outcomes


def _load(path: Path, table: str, rows: pa.Table, *, chunk: int = 500_000) -> None:
    from shadowgate.storage.duckdb import DuckDBWarehouse
    from shadowgate.storage.warehouse import default_sql_dir

    warehouse = DuckDBWarehouse(path, sql_dir=default_sql_dir())
    try:
        warehouse.ensure_tables()
        for i, start in enumerate(range(0, rows.num_rows, chunk)):
            part = rows.slice(start, chunk)
            staging = warehouse.stage(table, part, batch_id=f"bench{i}")
            warehouse.merge(table, staging=staging)
    finally:
        warehouse.close()


@dataclass(frozen=True)
class PerformanceBenchResult:
    decisions: int
    approved: int
    outcomes: int
    setup_s: float
    join_s: float
    evaluate_s: float
    seconds: float
    peak_rss_mb: float
    labelled: int
    metric_rows: int
    mlflow_runs: int
    weeks: list[dict[str, Any]]
    floor_seconds: float = math.nan
    """The least any evaluation of the week does, measured in the same process right after it: the week's labelled
    rows read from DuckDB into Arrow (every model's score and both labels) and sklearn's AUC per model and label."""

    @property
    def vs_floor(self) -> float:
        """The evaluation's time over its floor's: a figure a slower machine moves far less than seconds do."""
        return self.seconds / self.floor_seconds if self.floor_seconds > 0 else math.nan

    def render(self) -> str:
        verdict = "PASS" if self.seconds <= TARGET_S else "FAIL"
        lines = [
            f"performance benchmark: one week, {self.decisions:,} decisions ({self.approved:,} approved), "
            f"{self.outcomes:,} outcomes, 3 models; DuckDB, MLflow on SQLite",
            f"  setup (generate + MERGE into the warehouse, not timed): {self.setup_s:.1f} s",
            f"  join_ground_truth (early + final labels): {self.join_s:.1f} s, {self.labelled:,} rows labelled",
            f"  weekly_performance (both labels: queries, metrics, segments, statistics, model_metrics, MLflow): "
            f"{self.evaluate_s:.1f} s, {self.metric_rows:,} model_metrics rows, {self.mlflow_runs} MLflow runs",
        ]
        for w in self.weeks:
            lines.append(
                f"    {w['cohort']} {w['label']}: {w['rows_compared']:,} rows, {w['defaults']:,} defaults, AUC "
                + ", ".join(f"{m} {a}" for m, a in w["models"].items())
            )
        lines.append(f"  seconds {self.seconds:.1f}   target <= {TARGET_S:g}   {verdict}")
        lines.append(
            f"  floor_seconds {self.floor_seconds:.2f} (the week's rows into Arrow + sklearn AUC per model and label, "
            f"same run); vs_floor {self.vs_floor:.1f}×"
        )
        lines.append(f"  peak RSS of the evaluating process {self.peak_rss_mb:,.0f} MB")
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "vs_floor": self.vs_floor, "target_s": TARGET_S, "pass": self.seconds <= TARGET_S}


def _child(base: Path) -> dict[str, Any]:
    """The timed part (run in a fresh process): label the week, evaluate it, report figures and peak RSS."""
    from shadowgate.config import EvaluationSettings, GroundTruthSettings
    from shadowgate.decisioning.policies import load_policy
    from shadowgate.pipelines.ground_truth import join_ground_truth
    from shadowgate.pipelines.performance import EvaluationPlan, cohort_week, weekly_performance
    from shadowgate.storage.duckdb import DuckDBWarehouse
    from shadowgate.storage.results import MlflowResultsStore
    from shadowgate.storage.warehouse import default_sql_dir

    os.chdir(base)  # MLflow's SQLite store keeps artifacts in ./mlruns
    ground_truth = GroundTruthSettings()
    end = dt.datetime(WEEK_START.year, WEEK_START.month, WEEK_START.day, tzinfo=dt.UTC) + dt.timedelta(days=7)
    as_of = end + dt.timedelta(days=ground_truth.maturity_days)
    warehouse = DuckDBWarehouse(base / "warehouse.duckdb", sql_dir=default_sql_dir())
    try:
        started = time.perf_counter()
        labels = join_ground_truth(
            warehouse,
            interval_start=end - dt.timedelta(days=7) + dt.timedelta(days=ground_truth.early_maturity_days),
            interval_end=as_of,
            settings=ground_truth,
        )
        joined = time.perf_counter()
        plan = EvaluationPlan(
            settings=EvaluationSettings(),
            early_maturity_days=ground_truth.early_maturity_days,
            maturity_days=ground_truth.maturity_days,
        )
        summary = weekly_performance(
            warehouse,
            MlflowResultsStore(f"sqlite:///{base / 'mlflow.db'}"),
            as_of=as_of,
            plan=plan,
            policies={"conservative": load_policy("conservative").thresholds},
            weeks=[cohort_week(WEEK_START, label, as_of=as_of) for label in ("early", "final")],
        )
        done = time.perf_counter()
        labelled = warehouse.count("labeled_predictions")
        floor_s = _floor(warehouse)
    finally:
        warehouse.close()
    return {
        "join_s": joined - started,
        "evaluate_s": done - joined,
        "floor_s": floor_s,
        "labelled": labelled,
        "label_report": labels.as_dict(),
        "metric_rows": summary.metric_rows,
        "mlflow_runs": len(summary.mlflow_runs),
        "weeks": summary.weeks,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
    }


def _floor(warehouse: Any) -> float:
    """Seconds for the least any evaluation does: the labelled rows, one score per model, into Arrow, then sklearn's
    AUC per model and label."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    started = time.perf_counter()
    rows = warehouse.query(
        "SELECT s.alias AS alias, s.score AS score, early_defaulted, final_defaulted "
        f"FROM (SELECT unnest(scores) AS s, early_defaulted, final_defaulted FROM {warehouse.qualified}."
        "labeled_predictions) WHERE s.score IS NOT NULL"
    )
    alias = rows.column("alias").to_numpy(zero_copy_only=False)
    score = rows.column("score").to_numpy(zero_copy_only=False)
    for label in ("early_defaulted", "final_defaulted"):
        y = rows.column(label).to_numpy(zero_copy_only=False)
        for model in np.unique(alias):
            keep = (alias == model) & np.array([v is not None for v in y])
            roc_auc_score(y[keep].astype(bool), score[keep])
    return time.perf_counter() - started


def _create_tracking_store(base: Path) -> None:
    """The MLflow tracking store, created before the timed part (in production it exists before any weekly run;
    creating its tables takes seconds that no run pays), in a child process so the parent stays small."""
    code = (
        "import os, sys; from shadowgate.storage.results import MlflowResultsStore; os.chdir(sys.argv[1]);"
        " MlflowResultsStore(f'sqlite:///{sys.argv[1]}/mlflow.db')"
    )
    subprocess.run([sys.executable, "-c", code, str(base)], check=True, capture_output=True)


def run_performance_bench(*, per_day: int = 500_000, echo: Callable[[str], None] = print) -> PerformanceBenchResult:
    """Generate and load the week, then time the labelling and the evaluation in a fresh process."""
    base = Path(tempfile.mkdtemp(prefix="shadowgate-bench-performance-"))
    try:
        started = time.perf_counter()
        echo(f"setup in {base}: {per_day * 7:,} decisions of one week and their outcomes")
        predictions, outcomes = synthetic_week(per_day=per_day)
        approved = int(pc.sum(pc.equal(predictions.column("decision"), "approve")).as_py())
        _load(base / "warehouse.duckdb", "prediction_logs", predictions)
        _load(base / "warehouse.duckdb", "outcomes", outcomes)
        decisions, n_outcomes = predictions.num_rows, outcomes.num_rows
        del predictions, outcomes
        _create_tracking_store(base)
        setup_s = time.perf_counter() - started
        echo(f"  loaded in {setup_s:.1f} s; labelling and evaluating in a fresh process")
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        child = subprocess.run(
            [sys.executable, "-m", "shadowgate.bench.performance", str(base)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if child.returncode != 0:
            raise RuntimeError(f"the evaluating process failed:\n{child.stderr[-4000:]}")
        figures = json.loads(child.stdout.strip().splitlines()[-1])
        return PerformanceBenchResult(
            decisions=decisions,
            approved=approved,
            outcomes=n_outcomes,
            setup_s=setup_s,
            join_s=figures["join_s"],
            evaluate_s=figures["evaluate_s"],
            seconds=figures["join_s"] + figures["evaluate_s"],
            peak_rss_mb=figures["peak_rss_mb"],
            labelled=figures["labelled"],
            metric_rows=figures["metric_rows"],
            mlflow_runs=figures["mlflow_runs"],
            weeks=figures["weeks"],
            floor_seconds=figures["floor_s"],
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.WARNING)
    print(
        json.dumps(
            _child(Path(sys.argv[1])), default=lambda v: None if isinstance(v, float) and math.isnan(v) else str(v)
        )
    )
