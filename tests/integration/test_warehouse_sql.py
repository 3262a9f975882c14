"""Golden tests: every statement shipped under include/sql runs on DuckDB after transpiling, with its effect."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest
import sqlglot

from shadowgate.events.schemas import bigquery_type
from shadowgate.storage.duckdb import DuckDBWarehouse
from shadowgate.storage.warehouse import (
    DERIVED_TABLES,
    MERGE_KEYS,
    MODEL_METRICS,
    TABLES,
    SqlLibrary,
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
    return decode_batch("s", "outcome", [Entry("1-0", {"payload": "{}"})], NOW).quarantine


def test_the_library_lists_every_shipped_statement() -> None:
    names = SqlLibrary(default_sql_dir(), dataset="d", dialect="duckdb").names()
    assert names == sorted(
        [f"ddl/{t}" for t in TABLES]
        + [f"merge/{t}" for t in MERGE_KEYS]
        + ["merge/labeled_predictions", "merge/label_revisions"]
        + ["queries/ground_truth_labels", "queries/ground_truth_report", "queries/last_load", "queries/table_counts"]
        + ["queries/arm_counts", "queries/comparison_history", "queries/weekly_cohort", "queries/weekly_positives"]
        + ["queries/outcome_arrivals", "queries/label_revisions", "queries/weeks_to_reevaluate"]
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
            if table == "deployment_events" and f.name == "evidence":
                assert column["column_type"] == "JSON"  # staged as text, parsed by the MERGE
            elif not pa.types.is_nested(f.type):
                kind = sqlglot.exp.DataType.build(bigquery_type(f.type), dialect="bigquery").sql(dialect="duckdb")
                assert column["column_type"] == _DUCKDB_NAMES.get(kind, kind), (table, f.name)


_DUCKDB_NAMES = {"TEXT": "VARCHAR", "TIMESTAMPTZ": "TIMESTAMP WITH TIME ZONE"}


@pytest.mark.parametrize("table", sorted(set(MERGE_KEYS) - {MODEL_METRICS}))
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
    for value in (0.71, 0.72, 0.72):  # a re-run after late outcomes, then one that found the same
        batch = pa.Table.from_pylist([{**row, "value": value}], schema=arrow_schema(MODEL_METRICS))
        warehouse.merge(MODEL_METRICS, staging=warehouse.stage(MODEL_METRICS, batch, batch_id=str(value)))
    rows = warehouse.query("SELECT metric_id, value FROM shadowgate.model_metrics").to_pylist()
    assert rows == [{"metric_id": "m1", "value": 0.72}]


def test_deployment_evidence_is_stored_as_json(warehouse: DuckDBWarehouse) -> None:
    batch = pa.Table.from_pylist(_rows("deployment_events"), schema=arrow_schema("deployment_events"))
    warehouse.merge("deployment_events", staging=warehouse.stage("deployment_events", batch, batch_id="x"))
    rows = warehouse.query(
        "SELECT action, from_version, to_version, json_extract(evidence, '$.p_value')::DOUBLE AS p"
        " FROM shadowgate.deployment_events"
    ).to_pylist()
    assert rows == [{"action": "promote", "from_version": "1", "to_version": "2", "p": 0.003}]


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
    assert "@min_ts" in merge and "USING `proj.ds._staging_x` AS s" in merge
    duck = SqlLibrary(default_sql_dir(), dataset="ds", dialect="duckdb").render("ddl/prediction_logs")
    assert "PARTITION" not in duck and "STRUCT(" in duck
    labeled = library.render("ddl/labeled_predictions")
    assert "PARTITION BY DATE(event_timestamp)" in labeled and "scores ARRAY<STRUCT<alias STRING" in labeled


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
