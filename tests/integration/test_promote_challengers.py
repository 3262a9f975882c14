"""The promotion gate end to end on real parts: weeks of labelled decisions evaluated by the real weekly pipeline
(DuckDB), then ``promote_challengers`` reading that evidence and moving aliases in a real MLflow registry (SQLite),
recording deployment events in the warehouse and one MLflow run per decision.

Worlds (``tests.labeled_rows``): a challenger far better than the champion (superior at an early look), an A/A
challenger (the plan ends *not shown*), and a challenger seen for one week only (no verdict yet).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient

from shadowgate.config import EvaluationSettings
from shadowgate.decisioning.policies import Thresholds
from shadowgate.pipelines.alerts import Alert, Check, record_alerts
from shadowgate.pipelines.performance import ComparisonPlan, EvaluationPlan, cohort_week, weekly_performance
from shadowgate.pipelines.promotion import PROMOTION_EXPERIMENT, comparison_evidence, promote_challengers
from shadowgate.promotion import load_gates
from shadowgate.registry import CHALLENGER, CHAMPION, PREVIOUS, ModelRegistry
from shadowgate.storage.deployments import WarehouseDeploymentLog
from shadowgate.storage.duckdb import DuckDBWarehouse
from shadowgate.storage.results import MlflowResultsStore
from shadowgate.storage.warehouse import default_sql_dir
from tests.labeled_rows import as_logged, insert_labeled, labeled_rows
from tests.warehouse_rows import load, prediction_row

START = dt.date(2026, 1, 5)
N = 1_500
POLICIES = {"conservative": Thresholds(high=0.5, medium=0.25)}
PLAN = EvaluationPlan(settings=EvaluationSettings(max_looks=4), early_maturity_days=17, maturity_days=90)
EXPERIMENT = ComparisonPlan(
    experiment_id="shadow-challenger", treatment_alias=CHALLENGER, started_at=dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
)
# The approval-rate bound widened: the simulated challenger is much sharper, so at the same cut-off it approves far
# more applicants (the shipped gate holds it back: tested below).
GATES = load_gates()
LOOSE = GATES.model_copy(update={"business": GATES.business.model_copy(update={"max_approval_rate_change": 0.5})})


@dataclass
class World:
    warehouse_path: Path
    tracking_uri: str
    as_of: dt.datetime

    def open(self) -> DuckDBWarehouse:
        return DuckDBWarehouse(self.warehouse_path, sql_dir=default_sql_dir())

    def registry(self) -> ModelRegistry:
        log = WarehouseDeploymentLog(self.open)
        return ModelRegistry(tracking_uri=self.tracking_uri, model_name="bnpl_default", deployments=log)

    def promote(self, gates=LOOSE, *, dry_run: bool = False):  # type: ignore[no-untyped-def]
        return promote_challengers(
            open_warehouse=self.open,
            registry=self.registry(),
            experiments=[EXPERIMENT],
            gates=gates,
            as_of=self.as_of,
            dry_run=dry_run,
            actor="airflow:promote_challenger",
            results=MlflowResultsStore(self.tracking_uri),
        )

    def events(self) -> list[dict[str, object]]:
        with self.open() as w:
            return w.query(
                "SELECT action, alias, from_version, to_version, CAST(evidence AS VARCHAR) AS evidence "
                "FROM shadowgate.deployment_events ORDER BY occurred_at"
            ).to_pylist()


def _world(tmp_path: Path, *, weeks: int, challenger_noise: float) -> World:
    path = tmp_path / "w.duckdb"
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    starts = [START + dt.timedelta(weeks=k) for k in range(weeks)]
    with DuckDBWarehouse(path, sql_dir=default_sql_dir()) as warehouse:
        warehouse.ensure_tables()
        for k, start in enumerate(starts):
            rows = labeled_rows(start, N, seed=500 + k, noise={"challenger": challenger_noise})
            insert_labeled(warehouse, rows)
            load(warehouse, "prediction_logs", as_logged(rows))  # every applicant, as served
        as_of = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
        for start in starts:  # the weekly DAG, one run a week, each as of the week's maturity
            as_of = dt.datetime(start.year, start.month, start.day, tzinfo=dt.UTC) + dt.timedelta(days=7 + 90)
            weekly_performance(
                warehouse,
                None,
                as_of=as_of,
                plan=PLAN,
                policies=POLICIES,
                experiments=[EXPERIMENT],
                weeks=[cohort_week(start, "final", as_of=as_of)],
            )
        # The week before the gate runs: served decisions with their logged latencies (20 µs for challenger@2).
        load(warehouse, "prediction_logs", [prediction_row(i, at=as_of - dt.timedelta(hours=i + 1)) for i in range(50)])
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    client.create_registered_model("bnpl_default")
    for _ in range(2):
        client.create_model_version("bnpl_default", source=str(tmp_path))
    world = World(path, tracking_uri, as_of)
    registry = world.registry()
    registry.move_alias(CHAMPION, "1", reason="first model", actor="bootstrap", action="first_deployment")
    registry.move_alias(CHALLENGER, "2", reason="trained", actor="airflow:retrain_challenger", action="assign")
    return world


def test_a_superior_challenger_is_promoted_with_its_evidence_recorded(tmp_path: Path) -> None:
    world = _world(tmp_path, weeks=6, challenger_noise=0.4)
    summary = world.promote()
    (decision,) = summary.decisions
    assert decision["action"] == "promote", decision["summary"]
    assert {g["gate"]: g["passed"] for g in decision["gates"]} == {
        "comparison": True,
        "calibration": True,
        "approval_rate": True,
        "expected_loss": True,
        "latency": True,
        "drift": True,
    }
    assert (summary.champion_before, summary.champion_after) == ("champion@1", "champion@2")
    assert world.registry().aliases() == {CHAMPION: "2", PREVIOUS: "1"}
    moves = [(e["action"], e["alias"], e["from_version"], e["to_version"]) for e in world.events()]
    assert moves[2:] == [
        ("promote", PREVIOUS, None, "1"),
        ("promote", CHAMPION, "1", "2"),
        ("promote", CHALLENGER, "2", None),
    ]
    evidence = json.loads(str(world.events()[3]["evidence"]))
    assert evidence["gate_config_version"] == 1 and evidence["gate_config_digest"] == LOOSE.digest
    assert evidence["figures"]["plan_started_on"] == str(START)
    # One MLflow run says what was decided and why, gate by gate.
    client = MlflowClient(tracking_uri=world.tracking_uri, registry_uri=world.tracking_uri)
    experiment = client.get_experiment_by_name(PROMOTION_EXPERIMENT)
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.tags["shadowgate.action"] == "promote"
    assert run.data.tags["shadowgate.gate.comparison"].startswith("pass: the comparison plan's verdict")
    assert run.data.metrics["gate.latency.value"] == pytest.approx(0.01)  # 10 µs logged with each score
    assert run.data.tags["shadowgate.moves"] == "@previous None→1; @champion 1→2; @challenger 2→None"
    # Nothing left to decide: a second run moves nothing.
    again = world.promote()
    assert again.decisions == [] and world.registry().aliases() == {CHAMPION: "2", PREVIOUS: "1"}
    assert len(world.events()) == 5


def test_the_business_bound_holds_a_challenger_that_approves_far_more(tmp_path: Path) -> None:
    world = _world(tmp_path, weeks=6, challenger_noise=0.4)
    with world.open() as w:
        evidence = comparison_evidence(
            w, experiment=EXPERIMENT, challenger="challenger@2", champion="champion@1", as_of=world.as_of
        )
    assert evidence.evidence.plan_verdict == "superior"
    change = evidence.evidence.approval_rate_change
    assert change is not None and abs(change) > GATES.business.max_approval_rate_change
    (decision,) = world.promote(GATES).decisions
    assert decision["action"] == "wait"
    assert [g["gate"] for g in decision["gates"] if not g["passed"]] == ["approval_rate"]
    figures = decision["figures"]["policies"]
    assert set(figures) == {"conservative"}  # the policy that decided them, on every applicant
    assert figures["conservative"]["applicants"] == N * len(decision["figures"]["weeks"])  # the plan's weeks
    assert world.registry().aliases() == {CHAMPION: "1", CHALLENGER: "2"}


def test_a_dry_run_decides_and_moves_nothing(tmp_path: Path) -> None:
    world = _world(tmp_path, weeks=6, challenger_noise=0.4)
    summary = world.promote(dry_run=True)
    assert summary.decisions[0]["action"] == "promote" and summary.decisions[0]["moves"] == []
    assert summary.sentence.startswith("DRY RUN — nothing moved.")
    assert world.registry().aliases() == {CHAMPION: "1", CHALLENGER: "2"}
    assert len(world.events()) == 2
    client = MlflowClient(tracking_uri=world.tracking_uri, registry_uri=world.tracking_uri)
    assert client.get_experiment_by_name(PROMOTION_EXPERIMENT) is None


def test_an_inconclusive_challenger_is_retired_and_the_champion_stays(tmp_path: Path) -> None:
    world = _world(tmp_path, weeks=6, challenger_noise=1.2)  # as noisy as the champion: the plan ends not shown
    (decision,) = world.promote().decisions
    assert decision["action"] == "retire", decision["summary"]
    assert "inconclusive never ships" in decision["summary"]
    assert world.registry().aliases() == {CHAMPION: "1"}
    assert [(e["action"], e["alias"], e["to_version"]) for e in world.events()][-1] == ("retire", CHALLENGER, None)


def test_no_verdict_yet_or_an_open_drift_alert_moves_nothing(tmp_path: Path) -> None:
    world = _world(tmp_path, weeks=1, challenger_noise=0.4)
    (decision,) = world.promote().decisions
    assert decision["action"] == "wait"
    assert decision["gates"][0]["value"] == "continue"
    assert world.registry().aliases() == {CHAMPION: "1", CHALLENGER: "2"}

    blocked = _world(tmp_path / "drift", weeks=6, challenger_noise=0.4)
    alert = Alert(title="drift: amount", text="moved", kind="drift", subject="challenger@2", condition="amount")
    with blocked.open() as w:
        record_alerts(
            w, [Check(kind="drift", subject="challenger@2", condition="amount", alert=alert)], at=blocked.as_of,
            send=lambda a: None,
        )  # fmt: skip
    (decision,) = blocked.promote().decisions
    assert decision["action"] == "wait"
    assert [g["reason"] for g in decision["gates"] if not g["passed"]] == ["open: drift: amount"]
    assert blocked.registry().aliases() == {CHAMPION: "1", CHALLENGER: "2"}


def test_a_promoted_canary_is_completed_in_the_book_and_a_book_failure_never_undoes_the_promotion(
    tmp_path: Path,
) -> None:
    from dataclasses import replace

    world = _world(tmp_path, weeks=6, challenger_noise=0.4)
    ended: list[tuple[str, str]] = []

    def end(experiment_id: str, reason: str) -> None:
        ended.append((experiment_id, reason))
        raise ConnectionError("Redis unreachable")  # the book cannot be changed now

    summary = promote_challengers(
        open_warehouse=world.open,
        registry=world.registry(),
        experiments=[replace(EXPERIMENT, mode="canary")],
        gates=LOOSE,
        as_of=world.as_of,
        dry_run=False,
        actor="airflow:promote_challenger",
        end_experiment=end,
    )
    assert summary.decisions[0]["action"] == "promote"
    assert [e for e, _ in ended] == ["shadow-challenger"]  # asked to complete the canary, with the decision as reason
    assert ended[0][1].startswith("challenger@2 promoted over champion@1")
    assert world.registry().aliases() == {CHAMPION: "2", PREVIOUS: "1"}  # the promotion stands
