"""Golden tests: every statement shipped under include/sql runs on DuckDB after transpiling, with its effect."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest
import sqlglot

from shadowgate.events.schemas import bigquery_type
from shadowgate.storage.duckdb import DuckDBWarehouse
from shadowgate.storage.warehouse import (
    ALERTS,
    DERIVED_TABLES,
    MERGE_KEYS,
    MODEL_METRICS,
    TABLES,
    SqlLibrary,
    Warehouse,
    arrow_schema,
    default_sql_dir,
    unique_on_key,
)
from tests.integration.stream_events import outcome_fields, prediction_fields

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def warehouse() -> Iterator[DuckDBWarehouse]:
    with DuckDBWarehouse(":memory:", sql_dir=default_sql_dir()) as w:
        w.ensure_tables()
        yield w


def _rows(table: str) -> list[dict[str, Any]]:
    """One valid row of ``table``, built the way the uploader builds it."""
    from shadowgate.pipelines.stream_decode import decode_strict as decode_batch
    from shadowgate.storage.redis_streams import Entry

    if table == "prediction_logs":
        return decode_batch("s", "prediction", [Entry("1-0", prediction_fields(1))], NOW).rows
    if table == "outcomes":
        return decode_batch("s", "outcome", [Entry("1-0", outcome_fields(1))], NOW).rows
    if table == "deployment_events":
        from shadowgate.events import DeploymentEvent, deployment_event_id

        move = {"model_name": "bnpl_default", "alias": "champion", "from_version": "1", "to_version": "2"}
        event_id = deployment_event_id(**move, action="promote", occurred_at=NOW)
        event = DeploymentEvent(
            event_id=event_id,
            occurred_at=NOW,
            action="promote",
            reason="gate passed",
            actor="airflow:promote_challenger",
            evidence={"auc_delta": 0.012, "p_value": 0.003},
            **move,
        )
        return [event.row()]
    if table == "comparison_plans":
        return [
            {
                "plan_id": "champion-vs-challenger/challenger@2 vs champion@1",
                "experiment_id": "champion-vs-challenger", "comparison": "challenger@2 vs champion@1",
                "control_alias": "champion",
                "treatment_alias": "challenger", "started_on": dt.date(2026, 1, 5), "decision_label": "final",
                "margin": 0.01, "mde": 0.01, "alpha": 0.025, "power": 0.8, "max_looks": 26,
                "max_information": 96_134.0, "futility": True, "comparisons": 1, "spending": "obrien_fleming",
                "created_at": NOW, "description": "H0: ΔAUC ≤ 0.01 vs H1: ΔAUC ≥ 0.02",
            }
        ]  # fmt: skip
    if table == "alerts":
        return [_alert_state().row()]
    return decode_batch("s", "outcome", [Entry("1-0", {"payload": "{}"})], NOW).quarantine


def test_the_library_lists_every_shipped_statement() -> None:
    names = SqlLibrary(default_sql_dir(), dataset="d", dialect="duckdb").names()
    assert names == sorted(
        [f"ddl/{t}" for t in TABLES]
        + [f"merge/{t}" for t in MERGE_KEYS]
        + ["merge/labeled_predictions", "merge/label_revisions"]
        + ["queries/ground_truth_labels", "queries/ground_truth_report", "queries/last_load", "queries/table_counts"]
        + ["queries/arm_counts", "queries/comparison_history", "queries/weekly_cohort", "queries/weekly_positives"]
        + ["queries/comparison_plan"]
        + ["queries/alert_state", "queries/cohort_decisions", "queries/model_baseline"]
        + ["queries/outcome_arrivals", "queries/label_revisions", "queries/weeks_to_reevaluate"]
        + ["queries/signal_profile", "queries/drift_day", "queries/estimates_of_day", "queries/training_rows"]
        + ["queries/model_latency", "queries/first_scored", "queries/promotion_evidence", "queries/open_alerts"]
        + ["queries/canary_arms", "queries/canary_scores", "queries/canary_latency", "queries/canary_early"]
        + ["queries/applicant_policy"]
        + ["maintenance/expire", "maintenance/retention_options"]
    )


def test_every_ddl_creates_its_table_with_the_batch_columns(warehouse: DuckDBWarehouse) -> None:
    assert warehouse.tables() == sorted(TABLES)
    warehouse.ensure_tables()  # idempotent
    for table in (*MERGE_KEYS, *DERIVED_TABLES):
        described = warehouse.query(f"DESCRIBE shadowgate.{table}").to_pylist()
        schema = arrow_schema(table)
        assert [c["column_name"] for c in described] == schema.names
        # The DDL and the batch schema are written apart for the tables no event model derives: same types, same
        # NOT NULLs, or a load fails (or a NULL slips in) only at run time.
        for column, f in zip(described, schema, strict=True):
            assert (column["null"] == "YES") == f.nullable, (table, f.name)
            if (table, f.name) in (("deployment_events", "evidence"), ("alerts", "details")):
                assert column["column_type"] == "JSON"  # staged as text, parsed by the MERGE
            elif not pa.types.is_nested(f.type):
                kind = sqlglot.exp.DataType.build(bigquery_type(f.type), dialect="bigquery").sql(dialect="duckdb")
                assert column["column_type"] == _DUCKDB_NAMES.get(kind, kind), (table, f.name)


_DUCKDB_NAMES = {"TEXT": "VARCHAR", "TIMESTAMPTZ": "TIMESTAMP WITH TIME ZONE"}


@pytest.mark.parametrize(
    "table", sorted(set(MERGE_KEYS) - {MODEL_METRICS, ALERTS, "drift_reports", "performance_estimates"})
)
def test_every_merge_inserts_once(warehouse: DuckDBWarehouse, table: str) -> None:
    twice = pa.Table.from_pylist(_rows(table) * 2, schema=arrow_schema(table))
    with pytest.raises(ValueError, match="more than once"):  # the MERGE would insert both copies
        warehouse.stage(table, twice, batch_id="dup")
    batch = unique_on_key(table, twice)
    first = warehouse.merge(table, staging=warehouse.stage(table, batch, batch_id="a"))
    second = warehouse.merge(table, staging=warehouse.stage(table, batch, batch_id="b"))
    assert (first.staged, first.inserted, second.inserted) == (1, 1, 0)
    assert warehouse.count(table) == 1
    assert warehouse.drop_stale_staging() == []  # the MERGE dropped its staging table


def test_model_metrics_merge_replaces_a_figure_on_its_id(warehouse: DuckDBWarehouse) -> None:
    row = {
        "metric_id": "m1", "experiment_id": "shadow-challenger", "cohort_start": dt.date(2026, 1, 5),
        "cohort_end": dt.date(2026, 1, 12), "label": "final", "population": "approved_matured",
        "model": "challenger@2", "alias": "challenger", "model_version": "2", "segment": "all",
        "segment_value": "all", "metric": "auc", "value": 0.71, "n": 1000, "n_positive": 90, "as_of": NOW,
        "mlflow_run_id": "r1",
    }  # fmt: skip
    week = {"cohort_start": dt.date(2026, 1, 5), "label": "final"}
    for value in (0.71, 0.72, 0.72):  # a re-run after late outcomes, then one that found the same
        batch = pa.Table.from_pylist([{**row, "value": value}], schema=arrow_schema(MODEL_METRICS))
        staging = warehouse.stage(MODEL_METRICS, batch, batch_id=str(value))
        warehouse.merge(MODEL_METRICS, staging=staging, params=week)
    rows = warehouse.query("SELECT metric_id, value FROM shadowgate.model_metrics").to_pylist()
    assert rows == [{"metric_id": "m1", "value": 0.72}]


def assert_model_metrics_replace_their_slice(warehouse: Warehouse, table_ref: str) -> None:
    """A ``model_metrics`` MERGE for (2026-01-05, final) inserts and updates its rows, deletes that slice's rows it
    does not hold and leaves other weeks and labels alone (shared with the BigQuery emulator's test)."""

    def row(metric_id: str, start: dt.date, label: str) -> dict[str, Any]:
        return {
            "metric_id": metric_id, "experiment_id": "x", "cohort_start": start,
            "cohort_end": start + dt.timedelta(days=7), "label": label, "population": "approved_matured",
            "model": "champion@1", "alias": "champion", "model_version": "1", "segment": "all",
            "segment_value": "all", "metric": metric_id, "value": 0.5, "n": 10, "n_positive": 1, "as_of": NOW,
            "mlflow_run_id": None,
        }  # fmt: skip

    w1, w2 = dt.date(2026, 1, 5), dt.date(2026, 1, 12)
    everything = [row("a", w1, "final"), row("b", w1, "final"), row("c", w1, "early"), row("d", w2, "final")]

    def write(rows: list[dict[str, Any]], batch_id: str) -> None:
        batch = pa.Table.from_pylist(rows, schema=arrow_schema(MODEL_METRICS))
        staging = warehouse.stage(MODEL_METRICS, batch, batch_id=batch_id)
        warehouse.merge(MODEL_METRICS, staging=staging, params={"cohort_start": w1, "label": "final"})

    def ids() -> list[str]:
        return [r["metric_id"] for r in warehouse.query(f"SELECT metric_id FROM {table_ref} ORDER BY 1").to_pylist()]

    write(everything, "all")  # a slice's MERGE inserts whatever it is given
    assert ids() == ["a", "b", "c", "d"]
    write([row("a", w1, "final"), row("e", w1, "final")], "rerun")  # b no longer produced: deleted
    assert ids() == ["a", "c", "d", "e"]
    write([], "nothing")  # a re-run that produced nothing for the week empties its slice
    assert ids() == ["c", "d"]


def test_model_metrics_merge_replaces_its_week_and_label_and_nothing_else(warehouse: DuckDBWarehouse) -> None:
    assert_model_metrics_replace_their_slice(warehouse, "shadowgate.model_metrics")


def test_deployment_evidence_is_stored_as_json(warehouse: DuckDBWarehouse) -> None:
    batch = pa.Table.from_pylist(_rows("deployment_events"), schema=arrow_schema("deployment_events"))
    warehouse.merge("deployment_events", staging=warehouse.stage("deployment_events", batch, batch_id="x"))
    rows = warehouse.query(
        "SELECT action, from_version, to_version, json_extract(evidence, '$.p_value')::DOUBLE AS p"
        " FROM shadowgate.deployment_events"
    ).to_pylist()
    assert rows == [{"action": "promote", "from_version": "1", "to_version": "2", "p": 0.003}]


def _alert_state(**changes: Any) -> Any:
    from shadowgate.pipelines.alerts import AlertState, alert_key

    state = AlertState(
        alert_key=alert_key("auc_drop", "champion@3", "final label"), kind="auc_drop", subject="champion@3",
        condition="final label", severity="error", source="weekly_performance", title="champion@3: AUC down",
        text="below its baseline", first_raised_at=NOW, last_seen_at=NOW, resolved_at=None, times_seen=1,
        times_raised=1, notified_at=NOW, details={"z": 4.2, "baseline_weeks": ["2026-01-05"]},
    )  # fmt: skip
    return dataclasses.replace(state, **changes)


def test_the_alerts_merge_replaces_a_condition_on_its_key_and_keeps_details_as_json(
    warehouse: DuckDBWarehouse,
) -> None:
    later = NOW + dt.timedelta(days=7)
    for state in (_alert_state(), _alert_state(last_seen_at=later, times_seen=2, details={"z": 5.0})):
        batch = pa.Table.from_pylist([state.row()], schema=arrow_schema("alerts"))
        warehouse.merge("alerts", staging=warehouse.stage("alerts", batch, batch_id="x"))
    rows = warehouse.query(
        "SELECT kind, last_seen_at, times_seen, json_extract(details, '$.z')::DOUBLE AS z FROM shadowgate.alerts"
    ).to_pylist()
    assert rows == [{"kind": "auc_drop", "last_seen_at": later, "times_seen": 2, "z": 5.0}]
    state = _alert_state()
    [read] = warehouse.run("queries/alert_state", {"keys": [state.alert_key, "other"]}).to_pylist()
    assert (read["times_seen"], json.loads(read["details"])) == (2, {"z": 5.0})
    assert warehouse.run("queries/alert_state", {"keys": ["other"]}).num_rows == 0


def test_the_cohort_decisions_count_every_decision_once_and_the_baseline_reads_a_models_first_weeks(
    warehouse: DuckDBWarehouse,
) -> None:
    from tests.warehouse_rows import load, prediction_row

    monday = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
    decisions = ["approve"] * 5 + ["deny"] * 3 + ["manual_review"] * 2
    rows = [prediction_row(i, at=monday + dt.timedelta(hours=i), decision=d) for i, d in enumerate(decisions)]
    retried = {**rows[5], "prediction_id": "retry", "served_at": rows[5]["served_at"] + dt.timedelta(seconds=2)}
    outside = prediction_row(99, at=monday + dt.timedelta(days=7), decision="deny")
    load(warehouse, "prediction_logs", [*rows, {**retried, "decision": "approve"}, outside])
    week = {"cohort_start": monday, "cohort_end": monday + dt.timedelta(days=7)}
    counts = {r["decision"]: r["decisions"] for r in warehouse.run("queries/cohort_decisions", week).to_pylist()}
    assert counts == {"approve": 5, "deny": 3, "manual_review": 2}  # the retry counts once, as its first decision

    metric_rows = []
    for k, start in enumerate(dt.date(2026, 1, 5) + dt.timedelta(weeks=w) for w in range(6)):
        for experiment in ("shadow-challenger", "champion-vs-challenger-b"):  # the same figure, once per experiment
            for metric, value in (("auc", 0.7 + k / 100), ("auc_se", 0.01), ("mean_score", 0.05), ("brier", 0.1)):
                metric_rows.append(
                    {
                        "metric_id": f"{experiment}{start}{metric}", "experiment_id": experiment,
                        "cohort_start": start, "cohort_end": start + dt.timedelta(days=7), "label": "final",
                        "population": "approved_matured", "model": "champion@3", "alias": "champion",
                        "model_version": "3", "segment": "all", "segment_value": "all", "metric": metric,
                        "value": value, "n": 1000 + k, "n_positive": 50 + k, "as_of": NOW, "mlflow_run_id": None,
                    }
                )  # fmt: skip
    for start in sorted({r["cohort_start"] for r in metric_rows}):  # one (week, label) slice a MERGE, as written
        week_rows = [r for r in metric_rows if r["cohort_start"] == start]
        batch = pa.Table.from_pylist(week_rows, schema=arrow_schema(MODEL_METRICS))
        staging = warehouse.stage(MODEL_METRICS, batch, batch_id=f"m{start:%Y%m%d}")
        warehouse.merge(MODEL_METRICS, staging=staging, params={"cohort_start": start, "label": "final"})
    params = {"model": "champion@3", "label": "final", "population": "approved_matured", "weeks": 4}
    baseline = warehouse.run("queries/model_baseline", {**params, "before_date": dt.date(2026, 3, 2)}).to_pylist()
    assert [(r["cohort_start"], r["metric"], r["value"], r["n"]) for r in baseline if r["metric"] == "auc"] == [
        (dt.date(2026, 1, 5) + dt.timedelta(weeks=k), "auc", pytest.approx(0.7 + k / 100), 1000 + k) for k in range(4)
    ]
    assert len(baseline) == 4 * 3  # auc, auc_se and mean_score of its first four weeks, once each
    before = warehouse.run("queries/model_baseline", {**params, "before_date": dt.date(2026, 1, 19)}).to_pylist()
    assert sorted({r["cohort_start"] for r in before}) == [dt.date(2026, 1, 5), dt.date(2026, 1, 12)]


def _drift_row(day: dt.date, column: str, psi: float) -> dict[str, Any]:
    return {
        "report_id": f"{day}/{column}", "window_start": day, "window_end": day + dt.timedelta(days=1),
        "model_version": "1", "column_name": column, "method": "psi", "statistic": psi, "threshold": 0.1,
        "drifted": psi > 0.1, "n": 1000, "unseen_share": None, "mlflow_run_id": "r", "computed_at": NOW,
    }  # fmt: skip


def test_the_drift_reports_merge_replaces_its_day_and_nothing_else(warehouse: DuckDBWarehouse) -> None:
    day, other = dt.date(2026, 11, 2), dt.date(2026, 11, 3)

    def write(rows: list[dict[str, Any]], when: dt.date) -> None:
        batch = pa.Table.from_pylist(rows, schema=arrow_schema("drift_reports"))
        staging = warehouse.stage("drift_reports", batch, batch_id=f"d{len(rows)}{when:%d}")
        warehouse.merge("drift_reports", staging=staging, params={"window_start": when})

    write([_drift_row(day, "amount", 0.05), _drift_row(day, "channel", 0.2)], day)
    write([_drift_row(other, "amount", 0.01)], other)
    write([_drift_row(day, "amount", 0.3)], day)  # a re-run of the day that no longer checks channel
    rows = warehouse.query(
        "SELECT window_start, column_name, statistic, drifted FROM shadowgate.drift_reports ORDER BY 1, 2"
    ).to_pylist()
    assert rows == [
        {"window_start": day, "column_name": "amount", "statistic": 0.3, "drifted": True},
        {"window_start": other, "column_name": "amount", "statistic": 0.01, "drifted": False},
    ]


def test_an_estimate_and_its_realised_figures_are_written_by_two_passes_and_kept(warehouse: DuckDBWarehouse) -> None:
    day = dt.date(2026, 11, 2)
    key = {"estimate_id": f"{day}/champion@1", "day": day, "alias": "champion", "model_version": "1",
           "population": "approved"}  # fmt: skip

    def write(row: dict[str, Any], batch: str) -> None:
        table = pa.Table.from_pylist([{**key, **row}], schema=arrow_schema("performance_estimates"))
        warehouse.merge(
            "performance_estimates", staging=warehouse.stage("performance_estimates", table, batch_id=batch)
        )

    write({"n": 900, "default_rate": 0.031, "auc": 0.74, "computed_at": NOW}, "e1")
    write({"realised_n": 880, "realised_default_rate": 0.036, "realised_auc": 0.71, "realised_as_of": NOW}, "r1")
    write({"n": 901, "default_rate": 0.032, "auc": 0.75, "computed_at": NOW}, "e2")  # a re-run of the estimate
    rows = warehouse.run("queries/estimates_of_day", {"day": day}).to_pylist()
    assert rows == [
        {"alias": "champion", "model_version": "1", "default_rate": 0.032, "default_rate_low": None,
         "default_rate_high": None, "auc": 0.75, "auc_low": None, "auc_high": None, "realised_default_rate": 0.036,
         "realised_auc": 0.71, "realised_n": 880}
    ]  # fmt: skip


def test_the_queries(warehouse: DuckDBWarehouse) -> None:
    assert warehouse.run("queries/last_load").to_pylist() == [{"last_loaded_at": None}]
    for table in ("prediction_logs", "outcomes"):
        batch = pa.Table.from_pylist(_rows(table), schema=arrow_schema(table))
        warehouse.merge(table, staging=warehouse.stage(table, batch, batch_id="x"))
    assert warehouse.run("queries/last_load").to_pylist() == [{"last_loaded_at": NOW}]
    counts = {r["table_name"]: r["row_count"] for r in warehouse.run("queries/table_counts").to_pylist()}
    assert counts == {"prediction_logs": 1, "outcomes": 1, "quarantine": 0}


def test_bigquery_sql_is_rendered_unchanged_but_for_the_placeholders() -> None:
    library = SqlLibrary(default_sql_dir(), dataset="proj.ds", dialect="bigquery")
    ddl = library.render("ddl/prediction_logs")
    assert "`proj.ds.prediction_logs`" in ddl and "PARTITION BY DATE(event_timestamp)" in ddl
    assert "CLUSTER BY customer_id_hash, served_by" in ddl
    assert "channel__web FLOAT64" in ddl and "amount FLOAT64 NOT NULL" in ddl and "${" not in ddl
    merge = library.merge("outcomes", source="`proj.ds._staging_x`", columns=["outcome_id", "amount"])
    assert "INSERT (outcome_id, amount) VALUES (s.outcome_id, s.amount)" in merge
    assert "USING `proj.ds._staging_x` AS s" in merge
    assert "@min_ts" not in merge  # outcomes match on their id alone, whatever a re-send's timestamp
    assert "@min_ts" in library.merge("prediction_logs", source="`proj.ds._staging_x`", columns=["prediction_id"])
    duck = SqlLibrary(default_sql_dir(), dataset="ds", dialect="duckdb").render("ddl/prediction_logs")
    assert "PARTITION" not in duck and "STRUCT(" in duck
    labeled = library.render("ddl/labeled_predictions")
    assert "PARTITION BY DATE(event_timestamp)" in labeled and "scores ARRAY<STRUCT<alias STRING" in labeled


def test_no_comment_of_a_shipped_statement_names_a_parameter() -> None:
    """The BigQuery emulator counts ``@name`` in comments as parameters too (a mismatch error): comments name them
    without the @ (real BigQuery does not care; the emulator tests would fail on the statement)."""
    import re

    offending = [
        f"{path.relative_to(default_sql_dir())}:{number}"
        for path in sorted(default_sql_dir().glob("*/*.sql"))
        if path.parent.name != "ddl"
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if line.lstrip().startswith("--") and re.search(r"@[A-Za-z_]", line)
    ]
    assert offending == []


# ------------------------------------------------------------------------------------------------ ground truth


def test_a_statement_includes_a_shipped_query_rendered_for_the_same_dataset() -> None:
    library = SqlLibrary(default_sql_dir(), dataset="proj.ds", dialect="bigquery")
    labels = library.template("queries/ground_truth_labels")
    merge = library.render("merge/labeled_predictions")
    report = library.render("queries/ground_truth_report")
    assert labels.strip() in merge and labels.strip() in report
    assert "${" not in merge and "`proj.ds.outcomes`" in merge and "`proj.ds.labeled_predictions`" in merge


def test_only_the_parameters_a_statement_uses_are_passed() -> None:
    from shadowgate.storage.warehouse import used_params

    sql = "SELECT 1 FROM t WHERE a > $as_of AND b <= $as_of_end"
    assert used_params(sql, {"as_of": 1, "as_of_end": 2, "as": 3, "unused": 4}, marker="$") == {
        "as_of": 1,
        "as_of_end": 2,
    }
    assert used_params("SELECT @a", {"a": 1, "b": 2}, marker="@") == {"a": 1}


def test_the_ground_truth_statements_run(warehouse: DuckDBWarehouse) -> None:
    """The labels query, its MERGE and the report on one approved purchase with a late instalment 2, one denied."""
    from shadowgate.config import GroundTruthSettings
    from shadowgate.pipelines.ground_truth import label_window
    from tests.warehouse_rows import load, outcome_row, prediction_row

    bought = dt.datetime(2026, 3, 2, 10, tzinfo=dt.UTC)
    load(warehouse, "prediction_logs", [prediction_row(1, at=bought), prediction_row(2, at=bought, decision="deny")])
    load(warehouse, "outcomes", [outcome_row("tx_0000001", "instalment_late", bought + dt.timedelta(days=17), 2)])
    window = label_window(
        interval_start=dt.datetime(2026, 3, 19, tzinfo=dt.UTC),
        interval_end=dt.datetime(2026, 3, 20, tzinfo=dt.UTC),
        settings=GroundTruthSettings(early_grace_hours=0),  # day 17 to the second
    )
    params = window.params()
    labels = warehouse.run("queries/ground_truth_labels", params).to_pylist()
    assert {r["decision"]: (r["early_defaulted"], r["outcome_events"]) for r in labels} == {
        "approve": (True, 1),
        "deny": (None, 0),
    }
    assert warehouse.execute("merge/labeled_predictions", params) == 1
    assert warehouse.execute("merge/labeled_predictions", params) == 1  # the same row, updated to the same values
    stored = warehouse.query("SELECT * FROM shadowgate.labeled_predictions").to_pylist()
    assert [(r["transaction_id"], r["early_defaulted"], r["final_defaulted"]) for r in stored] == [
        ("tx_0000001", True, None)
    ]
    described = warehouse.query("DESCRIBE shadowgate.labeled_predictions").column("column_name").to_pylist()
    assert described[-1] == "labeled_as_of" and set(described) <= set(labels[0])
    [report] = warehouse.run("queries/ground_truth_report", params).to_pylist()
    assert report == {
        "approved": 1,
        "denied_no_outcome_expected": 1,
        "denied_with_outcome": 0,
        "manual_review_unlabeled": 0,
        "manual_review_with_outcome": 0,
        "early_matured": 1,
        "early_defaults": 1,
        "final_matured": 0,
        "final_defaults": 0,
        "approved_without_outcome": 0,
        "late_early_outcomes": 0,
        "late_final_outcomes": 0,
        "outcomes_in_window": 1,
        "window_instalment_paid": 0,
        "window_instalment_late": 1,
        "window_default": 0,
        "baseline_instalment_paid": 0,
        "baseline_instalment_late": 0,
        "baseline_default": 0,
        "pending_final": 1,
    }
    assert warehouse.execute("merge/label_revisions", params) == 0  # one version of one label: nothing revised
    assert warehouse.run("queries/label_revisions", params).num_rows == 0


def test_an_outcome_arrives_at_its_stated_delivery_never_after_its_receipt(warehouse: DuckDBWarehouse) -> None:
    """queries/outcome_arrivals against shadowgate.events.outcome.arrival, its Python reference."""
    from shadowgate.events import OutcomeEvent
    from shadowgate.events.outcome import arrival
    from tests.warehouse_rows import load, outcome_row

    at = dt.datetime(2026, 3, 19, 10, tzinfo=dt.UTC)
    hour = dt.timedelta(hours=1)
    cases = {  # transaction: (received, stated delivery)
        "tx_1": (at, None),
        "tx_2": (at + 50 * hour, at + hour),  # a replay: received later, delivered (as stated) an hour after known
        "tx_3": (at + hour, at + 5 * hour),  # stated after the receipt: the receipt is the arrival
    }
    rows = [outcome_row(tx, "instalment_paid", at, 2, received=r, delivered=d) for tx, (r, d) in cases.items()]
    load(warehouse, "outcomes", rows)
    params = {"as_of": at + 100 * hour, "late_from": at - hour}
    rows = warehouse.run("queries/outcome_arrivals", params).to_pylist()
    arrived = {r["transaction_id"]: r["arrived_at"] for r in rows}
    events = {
        tx: OutcomeEvent(
            transaction_id=tx, event_type="instalment_paid", event_timestamp=at, instalment_number=2, received_at=r,
            delivered_at=d,
        )
        for tx, (r, d) in cases.items()
    }  # fmt: skip
    assert (
        arrived
        == {tx: arrival(e) for tx, e in events.items()}
        == {
            "tx_1": at,
            "tx_2": at + hour,
            "tx_3": at + hour,
        }
    )
    # As of an instant before an arrival, the outcome is not there.
    early = warehouse.run("queries/outcome_arrivals", {**params, "as_of": at + hour / 2}).to_pylist()
    assert [r["transaction_id"] for r in early] == ["tx_1"]
    bigquery = SqlLibrary(default_sql_dir(), dataset="p.d", dialect="bigquery").render("queries/outcome_arrivals")
    assert "COALESCE(LEAST(o.delivered_at, o.received_at), o.received_at)" in bigquery  # NULL-safe in BigQuery too


def test_a_failed_statement_is_rolled_back_and_the_connection_stays_usable(warehouse: DuckDBWarehouse) -> None:
    from shadowgate.storage.warehouse import WarehouseError

    with pytest.raises(WarehouseError, match="merge/labeled_predictions failed"):
        warehouse.execute("merge/labeled_predictions", {"as_of": NOW})  # the other parameters are missing
    assert warehouse.count("labeled_predictions") == 0


# ------------------------------------------------------------------------------------------------ feature sets


def _features(warehouse: DuckDBWarehouse) -> dict[str, dict[str, Any]]:
    rows = warehouse.query("SELECT stream_entry_id, feature_set, features FROM shadowgate.prediction_logs")
    return {r["stream_entry_id"]: {"feature_set": r["feature_set"], **r["features"]} for r in rows.to_pylist()}


def _load(warehouse: DuckDBWarehouse, entries: list[Any]) -> None:
    from shadowgate.pipelines.stream_decode import decode

    decoded = decode("s", "prediction", entries, NOW)
    assert decoded.quarantine == []
    batch = unique_on_key("prediction_logs", decoded.table("prediction_logs"))
    warehouse.merge("prediction_logs", staging=warehouse.stage("prediction_logs", batch, batch_id="x"))


def test_an_event_of_another_known_feature_set_loads_into_its_own_struct_fields(tmp_path: Any) -> None:
    from shadowgate.features import FEATURE_SET
    from shadowgate.storage.redis_streams import Entry
    from tests.integration.stream_events import OLDER_SET, older_features, older_prediction_fields, older_set_known

    with older_set_known():
        # Registering a set is all it takes: the layout is keyed by the known sets (no cache to clear).
        assert "legacy_flag" in arrow_schema("prediction_logs").field("features").type.names
        with DuckDBWarehouse(tmp_path / "w.duckdb", sql_dir=default_sql_dir()) as warehouse:
            warehouse.ensure_tables()
            _load(warehouse, [Entry("1-0", older_prediction_fields(1)), Entry("2-0", prediction_fields(2))])
            stored = _features(warehouse)
    assert "legacy_flag" not in arrow_schema("prediction_logs").field("features").type.names
    older, current = stored["1-0"], stored["2-0"]
    assert (older["feature_set"], current["feature_set"]) == (OLDER_SET, FEATURE_SET)
    for name, value in older_features(1).items():
        assert older[name.replace("=", "__")] == value, name
    assert older["hour_sin"] is None and older["hour_cos"] is None
    assert current["legacy_bureau_score"] is None and current["channel__fax"] is None
    assert current["hour_cos"] is not None


def test_a_warehouse_file_of_an_older_version_gains_the_new_columns(tmp_path: Any) -> None:
    from shadowgate.features import FEATURE_SET
    from shadowgate.storage.redis_streams import Entry
    from tests.integration.stream_events import OLDER_SET, older_prediction_fields, older_set_known

    path = tmp_path / "w.duckdb"
    with DuckDBWarehouse(path, sql_dir=default_sql_dir()) as warehouse:
        warehouse.ensure_tables()
        _load(warehouse, [Entry("1-0", prediction_fields(1))])
        # What the previous version created: no feature_set column, and a row loaded before the change.
        warehouse.query("ALTER TABLE shadowgate.prediction_logs DROP COLUMN feature_set")
    with older_set_known(), DuckDBWarehouse(path, sql_dir=default_sql_dir()) as warehouse:
        warehouse.ensure_tables()  # adds feature_set, and the older set's names to the features struct
        warehouse.ensure_tables()  # nothing left to add
        _load(warehouse, [Entry("2-0", prediction_fields(2)), Entry("3-0", older_prediction_fields(3))])
        stored = _features(warehouse)
        described = [r["column_name"] for r in warehouse.query("DESCRIBE shadowgate.prediction_logs").to_pylist()]
    assert described[-1] == "feature_set" and sorted(described) == sorted(arrow_schema("prediction_logs").names)
    assert [stored[k]["feature_set"] for k in ("1-0", "2-0", "3-0")] == [None, FEATURE_SET, OLDER_SET]
    assert stored["1-0"]["legacy_flag"] is None and stored["3-0"]["legacy_flag"] == 3.75
    assert stored["1-0"]["amount_log"] == pytest.approx(4.8751209844)  # the old row keeps its values


def test_a_missing_required_column_is_a_clear_error(tmp_path: Any) -> None:
    from shadowgate.storage.warehouse import WarehouseError

    path = tmp_path / "w.duckdb"
    with DuckDBWarehouse(path, sql_dir=default_sql_dir()) as warehouse:
        warehouse.ensure_tables()
        warehouse.query("ALTER TABLE shadowgate.outcomes DROP COLUMN received_at")
    reopened = DuckDBWarehouse(path, sql_dir=default_sql_dir())
    with reopened, pytest.raises(WarehouseError, match="received_at is required"):
        reopened.ensure_tables()


OLD_LABELED_PREDICTIONS = """CREATE TABLE shadowgate.labeled_predictions (prediction_id VARCHAR NOT NULL,
  transaction_id VARCHAR NOT NULL, served_at TIMESTAMPTZ NOT NULL, defaulted BOOLEAN NOT NULL,
  maturity_days BIGINT NOT NULL, labeled_at TIMESTAMPTZ NOT NULL)"""
"""The layout of labeled_predictions the previous version created (empty: nothing wrote it)."""


def test_a_derived_table_of_an_earlier_layout_is_recreated_while_empty_and_refused_once_written(
    tmp_path: Any,
) -> None:
    from shadowgate.storage.warehouse import WarehouseError

    path = tmp_path / "w.duckdb"
    with DuckDBWarehouse(path, sql_dir=default_sql_dir()) as warehouse:
        warehouse.query(OLD_LABELED_PREDICTIONS)
        warehouse.ensure_tables()
        described = warehouse.query("DESCRIBE shadowgate.labeled_predictions").column("column_name").to_pylist()
        assert described == arrow_schema("labeled_predictions").names
        warehouse.query("DROP TABLE shadowgate.labeled_predictions")
        warehouse.query(OLD_LABELED_PREDICTIONS)
        warehouse.query(
            "INSERT INTO shadowgate.labeled_predictions VALUES ('p', 't', $at, false, 90, $at)", {"at": NOW}
        )
        with pytest.raises(WarehouseError, match="holds 1 rows: migrate it by hand"):
            warehouse.ensure_tables()
        assert warehouse.count("labeled_predictions") == 1  # left as it was


def test_arm_counts_are_per_period_and_customer_with_the_labels_of_the_approved(tmp_path: Any) -> None:
    # Only the columns the query reads: two customers of canary-b in two allocation periods (share 0.1, then 0.3),
    # one purchase decided twice, one denied, one approved that defaulted (its label matured), and another
    # experiment's assignment on the same decision.
    w = DuckDBWarehouse(tmp_path / "arms.duckdb", sql_dir=default_sql_dir(), dataset="mini")
    w.query(
        """CREATE TABLE mini.prediction_logs (prediction_id VARCHAR, transaction_id VARCHAR, customer_id_hash VARCHAR,
             event_timestamp TIMESTAMPTZ, served_at TIMESTAMPTZ, decision VARCHAR,
             assignments STRUCT(experiment_id VARCHAR, experiment_version VARCHAR, arm VARCHAR, propensity DOUBLE,
                                mode VARCHAR)[])"""
    )
    w.query(
        """CREATE TABLE mini.labeled_predictions (prediction_id VARCHAR, transaction_id VARCHAR,
             customer_id_hash VARCHAR, event_timestamp TIMESTAMPTZ, served_at TIMESTAMPTZ, experiment_id VARCHAR,
             arm VARCHAR, policy_name VARCHAR, customer_type VARCHAR, merchant_category VARCHAR, channel VARCHAR,
             amount DOUBLE, amount_band VARCHAR, early_defaulted BOOLEAN, early_matured_at TIMESTAMPTZ,
             final_defaulted BOOLEAN, final_matured_at TIMESTAMPTZ, scores INTEGER[], labeled_as_of TIMESTAMPTZ)"""
    )
    day = "TIMESTAMPTZ '2026-01-13 10:00:00+00'"

    def decision(pid: str, tx: str, customer: str, decided: str, version: str, arm: str, share: float) -> None:
        propensity = share if arm == "treatment" else 1 - share
        w.query(
            f"""INSERT INTO mini.prediction_logs VALUES ('{pid}', '{tx}', '{customer}', {day}, {day} +
                 INTERVAL {int(pid[1:])} SECOND, '{decided}', [
                 {{'experiment_id': 'canary-b', 'experiment_version': '{version}', 'arm': '{arm}',
                   'propensity': {propensity}, 'mode': 'canary'}},
                 {{'experiment_id': 'shadow-x', 'experiment_version': '1', 'arm': 'control', 'propensity': 1.0,
                   'mode': 'shadow'}}])"""
        )

    decision("p1", "t1", "alice", "approve", "2", "treatment", 0.1)
    decision("p2", "t1", "alice", "deny", "2", "treatment", 0.1)  # t1 decided again later: the first one counts
    decision("p3", "t2", "alice", "approve", "2", "treatment", 0.1)
    decision("p4", "t3", "bob", "deny", "2", "control", 0.1)
    decision("p5", "t4", "bob", "approve", "3", "control", 0.3)
    for pid, tx, customer, defaulted, amount in (("p1", "t1", "alice", True, 120.0), ("p3", "t2", "alice", False, 80.0),
                                                 ("p5", "t4", "bob", True, 50.0)):  # fmt: skip
        w.query(
            f"""INSERT INTO mini.labeled_predictions VALUES ('{pid}', '{tx}', '{customer}', {day}, {day}, NULL,
                 NULL, 'conservative', 'new', 'home', 'web', {amount}, '100-500', {defaulted}, {day},
                 {defaulted}, {day} + INTERVAL 90 DAY, [], {day} + INTERVAL 90 DAY)"""
        )
    params = {
        "cohort_start": dt.datetime(2026, 1, 12, tzinfo=dt.UTC),
        "cohort_end": dt.datetime(2026, 1, 19, tzinfo=dt.UTC),
        "label": "final",
        "as_of": dt.datetime(2026, 6, 1, tzinfo=dt.UTC),
        "experiment_id": "canary-b",
    }
    rows = w.run("queries/arm_counts", params).to_pylist()
    assert rows == [
        {"experiment_version": "2", "treatment_share": 0.1, "arm": "control", "customer_id_hash": "bob",
         "applicants": 1, "approved": 0, "labelled": 0, "defaults": 0, "loss": 0.0},
        {"experiment_version": "2", "treatment_share": 0.1, "arm": "treatment", "customer_id_hash": "alice",
         "applicants": 2, "approved": 2, "labelled": 2, "defaults": 1, "loss": 120.0},
        {"experiment_version": "3", "treatment_share": 0.3, "arm": "control", "customer_id_hash": "bob",
         "applicants": 1, "approved": 1, "labelled": 1, "defaults": 1, "loss": 50.0},
    ]  # fmt: skip
    w.close()
