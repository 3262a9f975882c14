"""The canary guard on real DuckDB: decisions of a canary logged as the API logs them (assignments, served_by, every
model's score and latency), judged by ``guard_canaries`` exactly as the DAG runs it, with the book's changes and the
alerts captured.

Worlds: a healthy canary (advances one stage after its hold time, not before), a broken treatment model (an error
spike; an approval collapse) stopped by the first run after it broke, too few decisions (not judged), a dry run."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from shadowgate.decisioning.experiments import Experiment
from shadowgate.evaluation.canary_guard import judge, load_canary_config, score_psi
from shadowgate.pipelines.alerts import Alert
from shadowgate.pipelines.canary import guard_canaries
from shadowgate.storage.duckdb import DuckDBWarehouse
from shadowgate.storage.warehouse import arrow_schema, default_sql_dir
from tests.warehouse_rows import load, prediction_row

NOW = dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC)
CONFIG = load_canary_config()
BASE = prediction_row(0, at=NOW)


def _experiment(share: float = 0.05, version: int = 3) -> Experiment:
    return Experiment(
        id="canary-challenger", version=version, salt="s", status="active", mode="canary", treatment_share=share,
        started_at=NOW - dt.timedelta(days=10),
    )  # fmt: skip


def _rows(
    n: int, *, start: dt.datetime, hours: float, share: float = 0.05, version: int = 3, broken: str | None = None,
    seed: int = 0, offset: int = 0,
) -> pa.Table:  # fmt: skip
    """``n`` decisions served evenly over ``hours`` from ``start``; customers hashed into arms at ``share``; the
    treatment arm's model ``broken`` as ``errors`` (no score: the fallback decides) or ``deny_all`` (scores 0.99)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        at = start + dt.timedelta(seconds=hours * 3600 * i / n)
        customer = f"c{offset + i}"  # one purchase per customer: the arms' customers follow the design exactly
        bucket = int(hashlib.sha256(customer.encode()).hexdigest()[:8], 16) / 16**8
        arm = "treatment" if bucket < share else "control"
        alias, version_served = ("challenger", "2") if arm == "treatment" else ("champion", "1")
        score = float(rng.beta(2, 12))
        status, served_by = "ok", f"{alias}@v{version_served}"
        if arm == "treatment" and broken == "errors":
            status, served_by = "error", "fallback"
        if arm == "treatment" and broken == "deny_all":
            score = 0.99
        decision = "approve" if score < 0.2 else "deny"
        scores = [
            {"alias": "champion", "model_version": "1", "score": score if arm == "control" else float(rng.beta(2, 12)),
             "latency_us": 400.0, "status": "ok", "error": None},
            {"alias": "challenger", "model_version": "2", "score": score if status == "ok" else None,
             "latency_us": 900.0, "status": status, "error": None if status == "ok" else "ValueError"},
        ]  # fmt: skip
        assignment = {
            "experiment_id": "canary-challenger", "experiment_version": str(version), "arm": arm,
            "propensity": share if arm == "treatment" else 1 - share, "mode": "canary",
        }  # fmt: skip
        rows.append(
            {
                **BASE,
                "prediction_id": f"{offset + i:032x}",
                "transaction_id": f"tx_{offset + i}",
                "customer_id_hash": customer,
                "event_timestamp": at,
                "served_at": at,
                "served_by": served_by,
                "score": score if status == "ok" else None,
                "decision": decision,
                "experiment_id": "canary-challenger",
                "arm": arm,
                "propensity": assignment["propensity"],
                "assignments": [assignment],
                "scores": scores,
            }
        )
    return pa.Table.from_pylist(rows, schema=arrow_schema("prediction_logs"))


class Book:
    def __init__(self) -> None:
        self.stopped: list[tuple[str, str]] = []
        self.shares: list[tuple[str, float, str]] = []
        self.alerts: list[Alert] = []

    def run(self, path: Path, experiment: Experiment, *, now: dt.datetime = NOW, dry_run: bool = False) -> Any:
        return guard_canaries(
            open_warehouse=lambda: DuckDBWarehouse(path, sql_dir=default_sql_dir()),
            experiments=[experiment],
            config=CONFIG,
            now=now,
            dry_run=dry_run,
            stop=lambda e, reason: self.stopped.append((e, reason)),
            set_share=lambda e, share, reason: self.shares.append((e, share, reason)),
            send=self.alerts.append,
        )


def _warehouse(tmp_path: Path, *tables: pa.Table) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "w.duckdb"
    with DuckDBWarehouse(path, sql_dir=default_sql_dir()) as warehouse:
        warehouse.ensure_tables()
        for table in tables:
            load(warehouse, "prediction_logs", table)
    return path


def test_a_healthy_canary_advances_one_stage_after_its_hold_time_and_not_before(tmp_path: Path) -> None:
    path = _warehouse(tmp_path, _rows(12_000, start=NOW - dt.timedelta(hours=30), hours=30))
    book = Book()
    early = book.run(path, _experiment(), now=NOW - dt.timedelta(hours=10))  # 20 h into the stage
    (canary,) = early.canaries
    assert canary.action == "hold" and "20.0 h of 24 h before 10%" in canary.summary, canary.summary
    assert book.shares == [] and book.stopped == []
    later = book.run(path, _experiment())
    (canary,) = later.canaries
    assert canary.action == "advance", canary.summary
    assert not any(s["breached"] for s in canary.signals)
    assert {s["name"] for s in canary.signals} == {"errors", "latency", "approval_rate", "score_distribution", "split"}
    assert [(e, share) for e, share, _ in book.shares] == [("canary-challenger", 0.10)]
    assert book.alerts == []
    # The last stage holds: nothing further to advance to.
    assert CONFIG.rollouts["canary-challenger"].next_stage(0.5) is None
    assert CONFIG.rollouts["canary-challenger"].next_stage(0.05) == 0.10


@pytest.mark.parametrize(
    ("broken", "signals"), [("errors", {"errors"}), ("deny_all", {"approval_rate", "score_distribution"})]
)
def test_a_broken_model_is_stopped_by_the_first_run_after_it_broke(
    tmp_path: Path, broken: str, signals: set[str]
) -> None:
    healthy = _rows(20_000, start=NOW - dt.timedelta(hours=11), hours=10)
    faulty = _rows(6_000, start=NOW - dt.timedelta(hours=1), hours=1, broken=broken, offset=100_000)
    path = _warehouse(tmp_path, healthy, faulty)
    book = Book()
    before = book.run(path, _experiment(), now=NOW - dt.timedelta(hours=1))  # the run before: healthy, holds
    assert before.canaries[0].action == "hold" and book.stopped == []
    summary = book.run(path, _experiment())  # one guard interval (one upload) later
    (canary,) = summary.canaries
    assert canary.action == "stop" and canary.applied
    assert {s["name"] for s in canary.signals if s["breached"]} == signals
    assert [e for e, _ in book.stopped] == ["canary-challenger"] and book.shares == []
    assert book.stopped[0][1].startswith("canary guard: STOPPED")
    assert {a.condition for a in book.alerts} == signals and all(a.kind == "canary_breach" for a in book.alerts)
    with DuckDBWarehouse(path, sql_dir=default_sql_dir()) as w:
        open_alerts = w.query("SELECT condition FROM shadowgate.alerts WHERE resolved_at IS NULL").to_pylist()
    assert {r["condition"] for r in open_alerts} == signals


def test_too_few_decisions_are_not_judged_and_a_dry_run_changes_nothing(tmp_path: Path) -> None:
    few = _warehouse(tmp_path / "few", _rows(1_000, start=NOW - dt.timedelta(hours=1), hours=1, broken="errors"))
    book = Book()
    assert book.run(few, _experiment()).canaries[0].action == "not_judged"  # ~50 treatment decisions: too few
    assert book.stopped == [] and book.alerts == []
    many = _warehouse(tmp_path / "many", _rows(6_000, start=NOW - dt.timedelta(hours=1), hours=1, broken="errors"))
    dry = book.run(many, _experiment(), dry_run=True)
    assert dry.canaries[0].action == "stop" and not dry.canaries[0].applied
    assert book.stopped == [] and book.alerts == []
    # No served score in the treatment arm: the PSI is not measured and its bound is infinite; the summary (an
    # XCom) holds strict JSON.
    import json

    json.dumps(dry.as_dict(), allow_nan=False)


def test_judge_needs_both_a_large_and_a_significant_difference() -> None:
    from shadowgate.evaluation.canary_guard import ArmWindow

    bins = tuple([10] * 20)
    control = ArmWindow(decisions=10_000, customers=9_500, approved=6_000, fallbacks=10, p99_latency_ms=1.0,
                        score_counts=bins)  # fmt: skip
    # 3 errors of 210 decisions (1.4 % vs 0.1 %): beyond 1 point but not significant at 0.001 → no breach.
    small = ArmWindow(decisions=210, customers=200, approved=126, fallbacks=3, p99_latency_ms=1.0, score_counts=bins)
    assert not any(s.breached for s in judge(control, small, share=0.02, guard=CONFIG.guard))
    slow = ArmWindow(decisions=600, customers=500, approved=360, fallbacks=0, p99_latency_ms=7.5, score_counts=bins)
    assert [s.name for s in judge(control, slow, share=0.05, guard=CONFIG.guard) if s.breached] == ["latency"]
    assert score_psi(bins, bins) == pytest.approx(0.0)
    assert score_psi(bins, (0,) * 19 + (200,)) > 1.0
