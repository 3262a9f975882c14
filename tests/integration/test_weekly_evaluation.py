"""weekly_performance on a real DuckDB warehouse and a real MLflow store (SQLite), on synthetic matured weeks whose
properties are known: the challenger is better than the champion by construction, challenger-b is not."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType
from sklearn.metrics import roc_auc_score

from shadowgate.config import EvaluationSettings
from shadowgate.decisioning.policies import Thresholds
from shadowgate.evaluation.stats import delong_test, holm
from shadowgate.pipelines.alerts import Alert
from shadowgate.pipelines.performance import (
    ComparisonPlan,
    EvaluationPlan,
    cohort_week,
    cohort_weeks,
    pivot_scores,
    weekly_performance,
)
from shadowgate.storage.duckdb import DuckDBWarehouse
from shadowgate.storage.results import MlflowResultsStore
from shadowgate.storage.warehouse import default_sql_dir
from tests.labeled_rows import insert_labeled, labeled_rows

W1, W2 = dt.date(2026, 1, 5), dt.date(2026, 1, 12)
N = 3000
AS_OF = dt.datetime(2026, 4, 20, 6, 0, tzinfo=dt.UTC)  # W2's final labels matured on 2026-04-19
POLICIES = {"conservative": Thresholds(high=0.5, medium=0.25)}
SHADOW = ComparisonPlan(
    experiment_id="shadow-challenger",
    treatment_alias="challenger",
    started_at=dt.datetime(2026, 1, 5, tzinfo=dt.UTC),
)
MODELS = ("champion", "challenger", "challenger-b")
PLAN = EvaluationPlan(settings=EvaluationSettings(), early_maturity_days=17, maturity_days=90)


@pytest.fixture
def warehouse(tmp_path: Path) -> DuckDBWarehouse:
    w = DuckDBWarehouse(tmp_path / "warehouse.duckdb", sql_dir=default_sql_dir())
    w.ensure_tables()
    for seed, week in ((1, W1), (2, W2)):
        insert_labeled(w, labeled_rows(week, N, seed=seed, models=MODELS, experiment_id=None))
    return w


@pytest.fixture
def results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MlflowResultsStore:
    monkeypatch.chdir(tmp_path)  # a sqlite store keeps artifacts in ./mlruns
    return MlflowResultsStore(f"sqlite:///{tmp_path / 'mlflow.db'}")


def _metrics(warehouse: DuckDBWarehouse) -> list[tuple[object, ...]]:
    return [
        tuple(r.values())
        for r in warehouse.query(f'SELECT * FROM {warehouse.qualified}."model_metrics" ORDER BY metric_id').to_pylist()
    ]


def test_the_weeks_a_run_evaluates_are_those_whose_labels_just_matured() -> None:
    weeks = cohort_weeks(dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC), plan=PLAN)
    # early: 2026-03-02 − 17 d = 2026-02-13 (a Friday) → the week of 2026-02-02 is the last one fully matured.
    # final: 2026-03-02 − 90 d = 2025-12-02 (a Tuesday) → the week of 2025-11-24.
    assert [(w.label, w.start, w.end) for w in weeks] == [
        ("early", dt.date(2026, 2, 2), dt.date(2026, 2, 9)),
        ("final", dt.date(2025, 11, 24), dt.date(2025, 12, 1)),
    ]
    # A run exactly at a week's maturity instant evaluates it; a second earlier it evaluates the week before.
    exact = dt.datetime(2026, 1, 19, tzinfo=dt.UTC) + dt.timedelta(days=90)
    assert cohort_weeks(exact, plan=PLAN, labels=["final"])[0].start == W2
    before = exact - dt.timedelta(seconds=1)
    assert cohort_weeks(before, plan=PLAN, labels=["final"])[0].start == W1
    with pytest.raises(ValueError, match="Monday"):
        cohort_week(dt.date(2026, 1, 6), "final", as_of=AS_OF)


def test_scores_are_pivoted_per_model_version_with_unusable_scores_left_out() -> None:
    def s(alias: str, version: str | None, score: float | None, status: str = "ok") -> dict[str, object]:
        return {"alias": alias, "model_version": version, "score": score, "latency_us": 1.0, "status": status}

    scores = pa.array(
        [
            [s("champion", "1", 0.1), s("challenger", "2", 0.2)],
            [s("champion", "1", 0.3), s("challenger", "2", None, "timeout")],
            [],
            [s("champion", "4", 0.5), s("challenger", None, None, "not_loaded")],
        ]
    )
    pivoted = {k.name: v.tolist() for k, v in pivot_scores(scores, 4).items()}
    assert set(pivoted) == {"champion@1", "challenger@2", "champion@4"}
    np.testing.assert_array_equal(pivoted["champion@1"], [0.1, 0.3, np.nan, np.nan])
    np.testing.assert_array_equal(pivoted["challenger@2"], [0.2, np.nan, np.nan, np.nan])
    np.testing.assert_array_equal(pivoted["champion@4"], [np.nan, np.nan, np.nan, 0.5])


def test_a_week_is_evaluated_pairwise_logged_once_and_a_rerun_changes_nothing(
    warehouse: DuckDBWarehouse, results: MlflowResultsStore
) -> None:
    week = cohort_week(W2, "final", as_of=AS_OF)
    summary = weekly_performance(
        warehouse, results, as_of=AS_OF, plan=PLAN, policies=POLICIES, experiments=[SHADOW], weeks=[week]
    )
    table = labeled_rows(W2, N, seed=2, models=MODELS).to_pydict()
    y = np.array(table["final_defaulted"], dtype=int)
    score = {m: np.array([next(x["score"] for x in row if x["alias"] == m) for row in table["scores"]]) for m in MODELS}

    (done,) = summary.weeks
    assert (done["cohort"], done["label"], done["rows_matured"], done["rows_compared"]) == ("2026-W03", "final", N, N)
    assert done["defaults"] == int(y.sum())
    assert done["models"]["challenger@2"] == round(roc_auc_score(y, score["challenger"]), 4)
    assert done["models"]["champion@1"] == round(roc_auc_score(y, score["champion"]), 4)

    # The book's experiment and a made-up one for the challenger no experiment names, each with DeLong and Holm.
    shadow, other = done["comparisons"]
    assert (shadow["experiment_id"], other["experiment_id"]) == ("shadow-challenger", "champion-vs-challenger-b")
    # Clustered by customer, as the pipeline does (the synthetic customers buy about three times a week).
    customers = table["customer_id_hash"]
    ref = delong_test(y, score["challenger"], score["champion"], clusters=customers)
    ref_b = delong_test(y, score["challenger-b"], score["champion"], clusters=customers)
    assert shadow["auc_difference"] == round(ref.difference, 4)
    assert shadow["delong_p_value"] == pytest.approx(ref.p_value, rel=1e-9)
    assert [shadow["holm_p_value"], other["holm_p_value"]] == pytest.approx(list(holm([ref.p_value, ref_b.p_value])))
    # The shadow experiment started on W1: this is its second look, on both weeks' defaults.
    w1 = labeled_rows(W1, N, seed=1, models=MODELS).to_pydict()
    assert shadow["look"] == 2
    assert other["look"] == 2  # a made-up comparison starts at the first week with matured rows

    # model_metrics: one row per figure, the AUC the one computed here, per segment too.
    auc = warehouse.query(
        f"""SELECT value, n, n_positive FROM {warehouse.qualified}."model_metrics"
            WHERE experiment_id = '*' AND model = 'challenger@2' AND metric = 'auc'
              AND segment = 'customer_type' AND segment_value = 'new' AND label = 'final'"""
    ).to_pylist()
    new = np.array(table["customer_type"]) == "new"
    assert auc == [
        {
            "value": pytest.approx(roc_auc_score(y[new], score["challenger"][new])),
            "n": int(new.sum()),
            "n_positive": int(y[new].sum()),
        }
    ]
    looks = warehouse.query(
        f"""SELECT metric, value FROM {warehouse.qualified}."model_metrics" WHERE experiment_id = 'shadow-challenger'
            AND model = 'challenger@2 vs champion@1' AND metric IN ('look', 'information', 'margin')
            ORDER BY metric"""
    ).to_pylist()
    w1_se = delong_test(
        np.array(w1["final_defaulted"], dtype=int),
        *(np.array([next(x["score"] for x in r if x["alias"] == m) for r in w1["scores"]]) for m in MODELS[1::-1]),
        clusters=w1["customer_id_hash"],
    ).se
    assert looks == [
        {"metric": "information", "value": pytest.approx(1 / w1_se**2 + 1 / ref.se**2, rel=1e-9)},
        {"metric": "look", "value": 2.0},
        {"metric": "margin", "value": EvaluationSettings().auc_margin},
    ]
    rows = _metrics(warehouse)
    assert summary.metric_rows == len(rows) > 100
    assert len({r[0] for r in rows}) == len(rows)

    client = MlflowClient(tracking_uri=results.tracking_uri, registry_uri=results.tracking_uri)
    experiment = client.get_experiment_by_name("shadowgate/shadow-challenger")
    assert experiment is not None
    assert experiment.tags["shadowgate.plan.margin"] == "0.01"
    assert experiment.tags["shadowgate.plan.started_on"] == "2026-01-05"
    assert experiment.tags["shadowgate.plan"].startswith("H0: ΔAUC ≤ 0.01 vs H1: ΔAUC ≥ 0.02")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["shadowgate.role"] for r in runs) == ["comparison", "model", "model"]
    comparison = next(r for r in runs if r.data.tags["shadowgate.role"] == "comparison")
    # Names tell a model's run from a comparison; the comparison's description is its verdict sentence.
    assert sorted(r.info.run_name.split(":")[0] for r in runs) == ["comparison", "model", "model"]
    assert comparison.info.run_name.startswith("comparison: challenger@2 vs champion@1 · ")
    assert comparison.data.tags["mlflow.note.content"].startswith("challenger@2 is ")
    assert comparison.data.metrics["delong_p_value"] == pytest.approx(
        ref.p_value, rel=1e-3
    )  # shown to 4 significant digits
    assert sorted(a.path for a in client.list_artifacts(comparison.info.run_id)) == [
        "calibration_curves.png",
        "performance_report.html",
        "roc_curves.png",
        "score_distributions.png",
        "segments.csv",
    ]

    # A re-run (a backfill of the same week): identical rows, the same runs, no new ones.
    again = weekly_performance(
        warehouse, results, as_of=AS_OF, plan=PLAN, policies=POLICIES, experiments=[SHADOW], weeks=[week]
    )
    assert _metrics(warehouse) == rows
    assert again.mlflow_runs == summary.mlflow_runs
    assert len(client.search_runs([experiment.experiment_id])) == 3


def test_a_backfill_before_the_labels_matured_sees_nothing_of_them(
    warehouse: DuckDBWarehouse, results: MlflowResultsStore
) -> None:
    early_as_of = dt.datetime(2026, 4, 10, tzinfo=dt.UTC)  # W2's final labels mature 2026-04-12 … 2026-04-19
    week = cohort_week(W2, "final", as_of=early_as_of)
    summary = weekly_performance(warehouse, results, as_of=early_as_of, plan=PLAN, policies=POLICIES, weeks=[week])
    (done,) = summary.weeks
    assert (done["rows_matured"], done["comparisons"], summary.metric_rows) == (0, [], 0)
    # What the DAG returns is strict JSON (Airflow's XCom refuses NaN): an empty week's approval rate is None.
    assert math.isnan(done["selection"]["approval_rate"])
    assert json.loads(json.dumps(summary.as_dict(), allow_nan=False))["weeks"][0]["selection"]["approval_rate"] is None
    # Half-way through the maturity of the week, only the purchases whose 90 days have run are used.
    mid = dt.datetime(2026, 4, 16, tzinfo=dt.UTC)
    weeks = [cohort_week(W2, "final", as_of=mid)]
    half = weekly_performance(warehouse, None, as_of=mid, plan=PLAN, policies=POLICIES, weeks=weeks)
    stamps = labeled_rows(W2, N, seed=2).column("event_timestamp").to_pylist()
    assert half.weeks[0]["rows_matured"] == sum(s + dt.timedelta(days=90) <= mid for s in stamps)


def test_an_auc_drop_against_the_models_own_first_weeks_is_sent_once_resolved_and_sent_again(
    tmp_path: Path,
) -> None:
    warehouse = DuckDBWarehouse(tmp_path / "alerts.duckdb", sql_dir=default_sql_dir())
    warehouse.ensure_tables()
    weeks = [W1 + dt.timedelta(weeks=k) for k in range(7)]
    worse = {2, 3, 5}  # weeks in which the champion ranks far worse (noise 3.0 instead of 1.2)
    for k, start in enumerate(weeks):
        rows = labeled_rows(start, N, seed=10 + k, noise={"champion": 3.0} if k in worse else None)
        insert_labeled(warehouse, rows)
    plan = EvaluationPlan(settings=EvaluationSettings(alert_baseline_weeks=2), early_maturity_days=17, maturity_days=90)
    sent: list[Alert] = []
    held = []
    for start in weeks:
        as_of = dt.datetime.combine(start, dt.time(6), tzinfo=dt.UTC) + dt.timedelta(days=97)
        summary = weekly_performance(
            warehouse,
            None,
            as_of=as_of,
            plan=plan,
            policies=POLICIES,
            experiments=[SHADOW],
            weeks=[cohort_week(start, "final", as_of=as_of)],
            # A validation AUC far above any weekly one: no longer what the alert compares with.
            validation_auc=lambda alias, version: 0.99,
            alert=sent.append,
        )
        held.append(sorted(a.split(":")[0] for a in summary.alerts if "own baseline" in a))
    # Weeks 0 and 1 are the champion's baseline; it holds in weeks 2, 3 and 5, the challenger never.
    assert held == [[], [], ["champion@1"], ["champion@1"], [], ["champion@1"], []]
    drops = [a for a in sent if a.kind == "auc_drop"]
    assert [(a.subject, a.details["cohort"], a.severity) for a in drops] == [
        ("champion@1", "2026-W04", "error"),  # weeks[2]: sent when it began to hold
        ("champion@1", "2026-W07", "error"),  # weeks[5]: held again after it resolved in weeks[4]
    ]
    assert "its first 2 evaluated weeks (2026-W02 to 2026-W03)" in drops[0].text
    # The challenger is far better by construction: its verdict (superior) is sent once, at the look that reached
    # it; the weeks after (the plan has ended) hold it without sending it again.
    verdicts = [(a.subject, a.details["verdict"]) for a in sent if a.kind == "sequential_verdict"]
    assert verdicts == [("shadow-challenger: challenger@2", "superior")]
    assert {a.kind for a in sent} == {"auc_drop", "sequential_verdict"}
    [row] = warehouse.query(
        f"""SELECT subject, condition, first_raised_at, resolved_at, times_seen, times_raised, notified_at
            FROM {warehouse.qualified}."alerts" WHERE kind = 'auc_drop'"""
    ).to_pylist()
    raised, resolved = (
        dt.datetime.combine(weeks[k], dt.time(6), tzinfo=dt.UTC) + dt.timedelta(days=97) for k in (5, 6)
    )
    assert row == {
        "subject": "champion@1",
        "condition": "final label",
        "first_raised_at": raised,
        "resolved_at": resolved,
        "times_seen": 1,
        "times_raised": 2,
        "notified_at": raised,
    }
    # A re-run of the last weeks (a backfill) sends nothing again and changes no row.
    before = warehouse.query(f'SELECT * FROM {warehouse.qualified}."alerts" ORDER BY alert_key').to_pylist()
    for start in weeks[4:]:
        as_of = dt.datetime.combine(start, dt.time(6), tzinfo=dt.UTC) + dt.timedelta(days=97)
        weekly_performance(
            warehouse,
            None,
            as_of=as_of,
            plan=plan,
            policies=POLICIES,
            experiments=[SHADOW],
            weeks=[cohort_week(start, "final", as_of=as_of)],
            alert=sent.append,
        )
    assert len(sent) == 3
    assert warehouse.query(f'SELECT * FROM {warehouse.qualified}."alerts" ORDER BY alert_key').to_pylist() == before


def test_a_purchase_decided_twice_counts_once(warehouse: DuckDBWarehouse) -> None:
    # A client that lost an answer and retried leaves two decisions of one purchase: the first one is evaluated.
    again = labeled_rows(W2, 5, seed=2, models=MODELS)
    retried = again.set_column(0, "prediction_id", pa.array([f"retry{i}" for i in range(5)])).set_column(
        4, "served_at", pa.array([t + dt.timedelta(seconds=2) for t in again.column("served_at").to_pylist()])
    )
    insert_labeled(warehouse, retried)
    weeks = [cohort_week(W2, "final", as_of=AS_OF)]
    summary = weekly_performance(warehouse, None, as_of=AS_OF, plan=PLAN, policies=POLICIES, weeks=weeks)
    assert summary.weeks[0]["rows_matured"] == N


def _sequential(warehouse: DuckDBWarehouse, week: dt.date) -> dict[str, float]:
    rows = warehouse.query(
        f"""SELECT metric, value FROM {warehouse.qualified}."model_metrics" WHERE experiment_id = 'shadow-challenger'
            AND label = 'final' AND cohort_start = DATE '{week.isoformat()}'
            AND metric IN ('sequential_z', 'sequential_estimate', 'look', 'information')"""
    ).to_pylist()
    return {r["metric"]: float(r["value"]) for r in rows}


def _by_hand(weeks: list[tuple[float, float]], margin: float) -> dict[str, float]:
    """The inverse-variance combination written out."""
    information = sum(1 / se**2 for _, se in weeks)
    estimate = sum(d / se**2 for d, se in weeks) / information
    return {
        "information": information,
        "look": float(len(weeks)),
        "sequential_estimate": estimate,
        "sequential_z": (estimate - margin) * information**0.5,
    }


def test_the_sequential_statistic_combines_the_weeks_by_inverse_variance_in_any_order(
    warehouse: DuckDBWarehouse, tmp_path: Path
) -> None:
    def week_delong(start: dt.date, seed: int) -> tuple[float, float]:
        table = labeled_rows(start, N, seed=seed, models=MODELS).to_pydict()
        y = np.array(table["final_defaulted"], dtype=int)
        score = {m: np.array([next(x["score"] for x in r if x["alias"] == m) for r in table["scores"]]) for m in MODELS}
        result = delong_test(y, score["challenger"], score["champion"], clusters=table["customer_id_hash"])
        return result.difference, result.se

    margin = EvaluationSettings().auc_margin
    expected = _by_hand([week_delong(W1, 1), week_delong(W2, 2)], margin)
    # W2 first (a backfill out of order): W1's increment is computed from its rows.
    weeks = [cohort_week(W2, "final", as_of=AS_OF)]
    weekly_performance(warehouse, None, as_of=AS_OF, plan=PLAN, policies=POLICIES, experiments=[SHADOW], weeks=weeks)
    assert _sequential(warehouse, W2) == pytest.approx(expected, rel=1e-9)
    # In order (W1, then W2 again): W1's increment is read back from model_metrics; the same statistic.
    for start in (W1, W2):
        weeks = [cohort_week(start, "final", as_of=AS_OF)]
        weekly_performance(
            warehouse, None, as_of=AS_OF, plan=PLAN, policies=POLICIES, experiments=[SHADOW], weeks=weeks
        )
    assert _sequential(warehouse, W1) == pytest.approx(_by_hand([week_delong(W1, 1)], margin), rel=1e-9)
    assert _sequential(warehouse, W2) == pytest.approx(expected, rel=1e-9)
    # The pooled estimate sits between the weeks' own differences.
    (d1, _), (d2, _) = week_delong(W1, 1), week_delong(W2, 2)
    assert min(d1, d2) <= expected["sequential_estimate"] <= max(d1, d2)


def _slice(warehouse: DuckDBWarehouse) -> dict[tuple[str, str], int]:
    """(experiment, model) → rows, in the final label of W2."""
    table = warehouse.query(
        f"""SELECT experiment_id, model, COUNT(*) AS n FROM {warehouse.qualified}."model_metrics"
            WHERE cohort_start = DATE '{W2.isoformat()}' AND label = 'final' GROUP BY ALL"""
    )
    return {(r["experiment_id"], r["model"]): r["n"] for r in table.to_pylist()}


def _figure(warehouse: DuckDBWarehouse, experiment: str, model: str, metric: str) -> float:
    [row] = warehouse.query(
        f"""SELECT value FROM {warehouse.qualified}."model_metrics" WHERE cohort_start = DATE '{W2.isoformat()}'
            AND label = 'final' AND experiment_id = '{experiment}' AND model = '{model}' AND metric = '{metric}'
            AND segment = 'all'"""
    ).to_pylist()
    return float(row["value"])


def _relabelled(rows: pa.Table) -> pa.Table:
    """The week's rows after a relabel: the outcomes reshuffled (no model ranks better than another any more),
    challenger-b's scores unusable but in one row in ten (below the coverage bar), every purchase through the web."""
    defaulted = np.random.default_rng(7).permutation(rows.column("final_defaulted").to_numpy())
    scores = [
        [{**s, "score": None, "status": "timeout"} if s["alias"] == "challenger-b" and i % 10 else s for s in row]
        for i, row in enumerate(rows.column("scores").to_pylist())
    ]
    names = rows.schema.names
    rows = rows.set_column(names.index("final_defaulted"), "final_defaulted", pa.array(defaulted))
    rows = rows.set_column(names.index("channel"), "channel", pa.array(["web"] * rows.num_rows))
    return rows.set_column(names.index("scores"), "scores", pa.array(scores, rows.schema.field("scores").type))


def test_a_relabelled_rerun_replaces_the_week_each_figure_once(
    warehouse: DuckDBWarehouse, results: MlflowResultsStore
) -> None:
    week = [cohort_week(W2, "final", as_of=AS_OF)]
    first = weekly_performance(
        warehouse, results, as_of=AS_OF, plan=PLAN, policies=POLICIES, experiments=[SHADOW], weeks=week
    )
    # Each figure once: a model's own figures under '*' (not once per experiment comparing it), and its pooled
    # segment row not again beside them: 10 metrics (AUC's SE among them) + 15 policy figures + 3 figures × 11
    # segment values (customer type 2, merchant category 3, channel 2, amount band 4) + the week's 5 selection figures.
    per_model = 10 + 15 + 3 * 11 + 5
    counts = _slice(warehouse)
    per_comparison = counts["shadow-challenger", "challenger@2 vs champion@1"]
    assert counts == {
        ("*", "champion@1"): per_model,
        ("*", "challenger@2"): per_model,
        ("*", "challenger-b@3"): per_model,
        ("shadow-challenger", "challenger@2 vs champion@1"): per_comparison,
        ("champion-vs-challenger-b", "challenger-b@3 vs champion@1"): per_comparison,
    }
    assert first.metric_rows == 3 * per_model + 2 * per_comparison == warehouse.count("model_metrics")
    assert _figure(warehouse, "shadow-challenger", "challenger@2 vs champion@1", "crossed") == 1.0
    client = MlflowClient(tracking_uri=results.tracking_uri, registry_uri=results.tracking_uri)
    comparison_run = first.mlflow_runs[f"shadow-challenger/{W2}/final/challenger@2 vs champion@1"]
    model_run = first.mlflow_runs[f"shadow-challenger/{W2}/final/champion@1"]
    assert client.get_run(comparison_run).data.metrics["crossed"] == 1.0

    # Relabel: the outcomes were wrong (labels reshuffled, so no model ranks better than another), challenger-b's
    # scores turn out unusable (it drops below the coverage bar), and every purchase came through the web.
    relabelled = {
        start: _relabelled(labeled_rows(start, N, seed=seed, models=MODELS)) for seed, start in ((1, W1), (2, W2))
    }
    warehouse.query(f'DELETE FROM {warehouse.qualified}."labeled_predictions"')
    for rows in relabelled.values():
        insert_labeled(warehouse, rows)
    again = weekly_performance(
        warehouse, results, as_of=AS_OF, plan=PLAN, policies=POLICIES, experiments=[SHADOW], weeks=week
    )
    assert again.weeks[0]["skipped_models"] == {"challenger-b@3": 0.1}
    # Only what the re-run produced: challenger-b and its comparison gone, the channel 'app' segment gone.
    per_model_now = per_model - 3
    assert _slice(warehouse) == {
        ("*", "champion@1"): per_model_now,
        ("*", "challenger@2"): per_model_now,
        ("shadow-challenger", "challenger@2 vs champion@1"): per_comparison,
    }
    assert again.metric_rows == 2 * per_model_now + per_comparison == warehouse.count("model_metrics")
    table = relabelled[W2].to_pydict()
    y = np.array(table["final_defaulted"], dtype=int)
    champion = np.array([next(x["score"] for x in row if x["alias"] == "champion") for row in table["scores"]])
    assert _figure(warehouse, "*", "champion@1", "auc") == pytest.approx(roc_auc_score(y, champion))
    assert _figure(warehouse, "shadow-challenger", "challenger@2 vs champion@1", "crossed") == 0.0
    # MLflow: the same runs, showing the new values (smaller ones too), not the larger of old and new.
    assert again.mlflow_runs[f"shadow-challenger/{W2}/final/challenger@2 vs champion@1"] == comparison_run
    comparison = client.get_run(comparison_run)
    assert comparison.data.metrics["crossed"] == 0.0
    assert comparison.data.tags["shadowgate.crossed_boundary"] == "false"
    assert client.get_run(model_run).data.metrics["auc"] == pytest.approx(
        roc_auc_score(y, champion), abs=5e-5
    )  # 4 digits in MLflow
    assert [m.value for m in client.get_metric_history(comparison_run, "crossed")] == [1.0, 0.0]
    # The made-up comparison of challenger-b is no longer produced: its week's runs are deleted (restorable).
    gone = client.get_experiment_by_name("shadowgate/champion-vs-challenger-b")
    assert gone is not None and client.search_runs([gone.experiment_id]) == []
    assert len(client.search_runs([gone.experiment_id], run_view_type=ViewType.DELETED_ONLY)) == 3
    shadow = client.get_experiment_by_name("shadowgate/shadow-challenger")
    assert shadow is not None and len(client.search_runs([shadow.experiment_id])) == 3
