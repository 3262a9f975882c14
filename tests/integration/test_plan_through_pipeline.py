"""The comparison plan run through the real weekly pipeline, week after week as the DAG runs it, on simulated weeks
whose truth is known — and the looks it takes are exactly those the statistic-level simulation takes on the same
weekly (ΔAUC, SE) pairs (``run_looks``), so the rates ``make plan-proof`` measures are the pipeline's.

Two worlds: an A/A one (``challenger-b`` scores through the champion's noise: equal true AUC, far below the margin)
and one whose challenger is far better. Each runs 8 weekly runs, past its verdict; then weeks are re-run out of order.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from shadowgate.config import EvaluationSettings
from shadowgate.decisioning.policies import Thresholds
from shadowgate.evaluation.sequential import run_looks
from shadowgate.evaluation.stats import delong_test
from shadowgate.pipelines.performance import (
    ComparisonPlan,
    EvaluationPlan,
    cohort_week,
    comparison_plan,
    weekly_performance,
)
from shadowgate.storage.duckdb import DuckDBWarehouse
from shadowgate.storage.warehouse import default_sql_dir
from tests.labeled_rows import insert_labeled, labeled_rows

START = dt.date(2026, 1, 5)
WEEKS = 8
N = 1_500
POLICIES = {"conservative": Thresholds(high=0.5, medium=0.25)}
# Four looks at most, so that a plan ends within the simulated weeks and the weeks after it are seen too.
PLAN = EvaluationPlan(settings=EvaluationSettings(max_looks=4), early_maturity_days=17, maturity_days=90)


def _week_delong(start: dt.date, seed: int, treatment: str) -> tuple[float, float]:
    table = labeled_rows(start, N, seed=seed, models=("champion", treatment)).to_pydict()
    y = np.array(table["final_defaulted"], dtype=int)
    score = {
        m: np.array([next(x["score"] for x in r if x["alias"] == m) for r in table["scores"]])
        for m in ("champion", treatment)
    }
    # Clustered by customer, as the pipeline does.
    result = delong_test(y, score[treatment], score["champion"], clusters=table["customer_id_hash"])
    return result.difference, result.se


@pytest.mark.parametrize(
    ("treatment", "verdicts"), [("challenger-b", {"futile", "not_shown"}), ("challenger", {"superior"})]
)
def test_the_pipeline_takes_the_looks_the_simulation_takes(tmp_path: Path, treatment: str, verdicts: set[str]) -> None:
    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb", sql_dir=default_sql_dir())
    warehouse.ensure_tables()
    starts = [START + dt.timedelta(weeks=k) for k in range(WEEKS)]
    for k, start in enumerate(starts):
        insert_labeled(warehouse, labeled_rows(start, N, seed=100 + k, models=("champion", treatment)))
    experiment = ComparisonPlan(
        experiment_id=f"aa-{treatment}", treatment_alias=treatment, started_at=dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
    )

    def run(start: dt.date) -> dict[str, object]:
        as_of = dt.datetime(start.year, start.month, start.day, tzinfo=dt.UTC) + dt.timedelta(days=7 + 90)
        summary = weekly_performance(
            warehouse,
            None,
            as_of=as_of,
            plan=PLAN,
            policies=POLICIES,
            experiments=[experiment],
            weeks=[cohort_week(start, "final", as_of=as_of)],
        )
        (comparison,) = summary.weeks[0]["comparisons"]
        return comparison

    seen = [run(start) for start in starts]  # the weekly DAG, one run a week
    recorded = comparison_plan(
        warehouse,
        experiment,
        cohort_week(START, "final", as_of=dt.datetime.now(dt.UTC)),
        plan=PLAN,
        comparison=f"{treatment}@1 vs champion@1",
    )
    series = [_week_delong(start, 100 + k, treatment) for k, start in enumerate(starts)]
    looks = run_looks(recorded.plan, series)
    assert looks[-1].verdict in verdicts and looks[-1].final
    ended_at = len(looks)
    for k, comparison in enumerate(seen, start=1):
        expected = looks[min(k, ended_at) - 1]
        assert comparison["look"] == expected.look
        assert comparison["verdict"] == expected.verdict
        assert comparison["sequential_z"] == pytest.approx(expected.z, abs=1e-3)
        # The look that reached the verdict is the only one that "crossed"; later weeks carry it, as no look.
        assert comparison["crossed"] == (k == ended_at)
        assert comparison["plan_ended"] == (k > ended_at)
    assert ended_at < WEEKS  # the experiment went on past its plan

    # Re-runs out of order (a backfill) give the same looks and verdicts.
    for k in (WEEKS - 1, 0, ended_at - 1):
        again = run(starts[k])
        assert (again["look"], again["verdict"], again["plan_ended"]) == (
            seen[k]["look"],
            seen[k]["verdict"],
            seen[k]["plan_ended"],
        )
        assert again["sequential_z"] == pytest.approx(seen[k]["sequential_z"], abs=1e-9)
    warehouse.close()


def test_a_retrained_challenger_starts_a_plan_of_its_own(tmp_path: Path) -> None:
    """The challenger alias moves to a new version (a retraining) after its plan ended futile: the new version is a
    new comparison with its own plan, started at the week it first scored; its looks count only its own weeks, and
    the old version's verdict is not carried over."""
    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb", sql_dir=default_sql_dir())
    warehouse.ensure_tables()
    starts = [START + dt.timedelta(weeks=k) for k in range(WEEKS)]
    retrained_from = 5
    for k, start in enumerate(starts):
        # Weeks 0-4: challenger@2 as noisy as the champion (an A/A: futile); weeks 5-7: challenger@9, far better.
        old = k < retrained_from
        rows = labeled_rows(
            start,
            N,
            seed=300 + k,
            noise={"challenger": 1.2} if old else None,
            versions=None if old else {"challenger": "9"},
        )
        insert_labeled(warehouse, rows)
    experiment = ComparisonPlan(
        experiment_id="shadow-challenger",
        treatment_alias="challenger",
        started_at=dt.datetime(2026, 1, 5, tzinfo=dt.UTC),
    )
    seen = []
    for start in starts:
        as_of = dt.datetime(start.year, start.month, start.day, tzinfo=dt.UTC) + dt.timedelta(days=7 + 90)
        summary = weekly_performance(
            warehouse,
            None,
            as_of=as_of,
            plan=PLAN,
            policies=POLICIES,
            experiments=[experiment],
            weeks=[cohort_week(start, "final", as_of=as_of)],
        )
        (comparison,) = summary.weeks[0]["comparisons"]
        seen.append(comparison)
    plans = warehouse.query(
        "SELECT plan_id, comparison, started_on FROM shadowgate.comparison_plans ORDER BY started_on"
    ).to_pylist()
    assert [(p["plan_id"], p["started_on"]) for p in plans] == [
        ("shadow-challenger/challenger@2 vs champion@1", START),
        ("shadow-challenger/challenger@9 vs champion@1", starts[retrained_from]),
    ]
    # The new version's first week is look 1 of its own plan, whatever the old one concluded.
    new = seen[retrained_from:]
    assert seen[retrained_from - 1]["verdict"] == "not_shown"
    assert [c["look"] for c in new][:2] == [1, 2]
    assert "superior" in {c["verdict"] for c in new}
    warehouse.close()
