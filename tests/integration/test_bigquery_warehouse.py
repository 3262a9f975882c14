"""The BigQuery adapter with the real google-cloud-bigquery client against a local emulator on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from shadowgate.pipelines.stream_decode import decode
from shadowgate.pipelines.upload import stream_readers, upload_streams
from shadowgate.storage.bigquery import BigQueryWarehouse
from shadowgate.storage.redis_streams import Entry
from shadowgate.storage.warehouse import TABLES, arrow_schema, default_sql_dir
from tests.bigquery_emulator import PROJECT, BigQueryEmulator
from tests.integration.stream_events import outcome_fields, prediction_fields
from tests.integration.test_warehouse_sql import assert_model_metrics_replace_their_slice
from tests.redis_server import RedisServer

pytestmark = pytest.mark.bigquery_emulator

NOW = dt.datetime(2026, 11, 23, 12, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BigQueryEmulator]:
    with BigQueryEmulator(tmp_path_factory.mktemp("bqemu")) as bq:
        yield bq


@pytest.fixture
def warehouse(emulator: BigQueryEmulator) -> Iterator[BigQueryWarehouse]:
    dataset = f"sg_{uuid.uuid4().hex[:8]}"  # one dataset per test: no shared state
    with BigQueryWarehouse(
        project=PROJECT, dataset=dataset, sql_dir=default_sql_dir(), api_endpoint=emulator.endpoint, timeout_s=60
    ) as w:
        w.ensure_tables()
        yield w


def test_every_table_is_created_with_the_batch_columns(warehouse: BigQueryWarehouse) -> None:
    assert warehouse.tables() == sorted(TABLES)
    warehouse.ensure_tables()  # idempotent
    table = warehouse.client.get_table(f"{PROJECT}.{warehouse.dataset}.prediction_logs")
    assert [f.name for f in table.schema] == arrow_schema("prediction_logs").names
    scores = next(f for f in table.schema if f.name == "scores")
    assert (scores.field_type, scores.mode) in {("RECORD", "REPEATED"), ("STRUCT", "REPEATED")}


def test_stage_and_merge_load_each_row_once(warehouse: BigQueryWarehouse) -> None:
    entries = [Entry(f"{i}-0", prediction_fields(i)) for i in range(1, 31)]
    batch = decode("s", "prediction", entries, NOW).table("prediction_logs")
    first = warehouse.merge("prediction_logs", staging=warehouse.stage("prediction_logs", batch, batch_id="a"))
    again = warehouse.merge("prediction_logs", staging=warehouse.stage("prediction_logs", batch, batch_id="b"))
    assert (first.staged, first.inserted, again.inserted) == (30, 30, 0)
    assert warehouse.count("prediction_logs") == 30
    assert warehouse.drop_stale_staging() == []  # each MERGE dropped its staging table
    row = warehouse.query(
        f"SELECT features.amount_log AS amount_log, scores[OFFSET(1)].score AS challenger "
        f"FROM `{PROJECT}.{warehouse.dataset}.prediction_logs` WHERE prediction_id = @id",
        {"id": f"{7:032x}"},
    ).to_pylist()
    assert row[0]["challenger"] == 0.2 and row[0]["amount_log"] > 0


def test_an_outcome_resent_with_another_timestamp_is_still_one_row(warehouse: BigQueryWarehouse) -> None:
    import orjson

    first = outcome_fields(3)
    payload = orjson.loads(first["payload"])
    payload["event_timestamp"] = "2026-11-30T09:00:00+00:00"  # re-sent months later, restamped: another partition
    again = {**first, "payload": orjson.dumps(payload).decode()}
    for fields, batch_id in ((first, "first"), (again, "again")):
        batch = decode("o", "outcome", [Entry("1-0", fields)], NOW).table("outcomes")
        stamp = batch.column("event_timestamp")[0].as_py()  # the batch's time range, as the uploader passes it
        staging = warehouse.stage("outcomes", batch, batch_id=batch_id)
        warehouse.merge("outcomes", staging=staging, min_ts=stamp, max_ts=stamp)
    assert warehouse.count("outcomes") == 1


def test_model_metrics_merge_replaces_its_week_and_label(warehouse: BigQueryWarehouse) -> None:
    # WHEN NOT MATCHED BY SOURCE … THEN DELETE through the client (the emulator runs it on DuckDB: the wire path and
    # the parameters, not BigQuery's own semantics, which its documentation states for MERGE).
    assert_model_metrics_replace_their_slice(warehouse, f"`{PROJECT}.{warehouse.dataset}.model_metrics`")


def test_a_crash_between_load_and_merge_leaves_a_staging_table_the_next_run_drops(
    warehouse: BigQueryWarehouse,
) -> None:
    batch = pa.Table.from_pylist(
        decode("s", "outcome", [Entry("1-0", outcome_fields(1))], NOW).rows, schema=arrow_schema("outcomes")
    )
    staged = warehouse.stage("outcomes", batch, batch_id="crashed")
    assert staged in warehouse.tables()
    assert warehouse.drop_stale_staging() == [staged]
    assert warehouse.count("outcomes") == 0


def test_the_uploader_end_to_end_reconciles(warehouse: BigQueryWarehouse, tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis") as server:
        client = server.client()
        for i in range(40):
            client.xadd("p", prediction_fields(i))
        client.xadd("p", {"v": "1", "id": "broken", "kind": "prediction", "payload": "{"})
        for i in range(15):
            client.xadd("o", outcome_fields(i))
        summary = upload_streams(
            readers=stream_readers(client, predictions_stream="p", outcomes_stream="o"), warehouse=warehouse
        )
        assert client.xlen("p") == 0 and client.xlen("o") == 0
    counts = {r["table_name"]: r["row_count"] for r in warehouse.run("queries/table_counts").to_pylist()}
    assert counts == {"prediction_logs": 40, "outcomes": 15, "quarantine": 1}
    assert [s.loaded for s in summary.streams] == [40, 15]
    assert warehouse.run("queries/last_load").to_pylist()[0]["last_loaded_at"] is not None


def test_deployment_events_are_staged_as_text_and_merged_into_the_json_column(
    warehouse: BigQueryWarehouse, emulator: BigQueryEmulator
) -> None:
    from shadowgate.events import DeploymentEvent, deployment_event_id
    from shadowgate.storage.deployments import WarehouseDeploymentLog

    move = {"model_name": "bnpl_default", "alias": "champion", "from_version": "1", "to_version": "2"}
    event = DeploymentEvent(
        event_id=deployment_event_id(**move, action="promote", occurred_at=NOW),
        occurred_at=NOW,
        action="promote",
        reason="gate passed",
        actor="airflow:promote_challenger",
        evidence={"p_value": 0.003},
        **move,
    )
    log = WarehouseDeploymentLog(
        lambda: BigQueryWarehouse(
            project=PROJECT, dataset=warehouse.dataset, sql_dir=default_sql_dir(), api_endpoint=emulator.endpoint
        ),
        timeout_s=0,
    )
    log.record_many([event])
    log.record_many([event])  # the same move again: stored once
    # The emulator reports the JSON column as STRING, so this proves the load and the MERGE (PARSE_JSON) run, not
    # BigQuery's refusal to load Parquet into JSON, which is why staging turns JSON columns into text.
    rows = warehouse.query(
        f"SELECT event_id, to_version, JSON_VALUE(evidence, '$.p_value') AS p "
        f"FROM `{PROJECT}.{warehouse.dataset}.deployment_events`"
    ).to_pylist()
    assert rows == [{"event_id": event.event_id, "to_version": "2", "p": "0.003"}]


def test_a_table_of_an_older_version_is_brought_up_to_date(
    warehouse: BigQueryWarehouse, caplog: pytest.LogCaptureFixture
) -> None:
    from google.cloud import bigquery

    from tests.integration.stream_events import OLDER_ONLY, older_set_known

    # The table as the previous version created it (no feature_set), made through the API so that the emulator's
    # metadata and storage agree. Its own schema changes do not: an ALTER TABLE reaches its DuckDB storage and not
    # the metadata, a schema update the reverse. So what is checked here is the plan, read from the client's real
    # SchemaFields, and that both changes are accepted; that they take effect is for real BigQuery.
    ref = f"{PROJECT}.{warehouse.dataset}.prediction_logs"
    schema = [f for f in warehouse.client.get_table(ref).schema if f.name != "feature_set"]
    warehouse.client.delete_table(ref)
    warehouse.client.create_table(bigquery.Table(ref, schema=schema))
    with older_set_known(), caplog.at_level("WARNING", logger="shadowgate.storage.bigquery"):
        warehouse.ensure_tables()
    added = [r.getMessage().split(" added column ")[1].split(" (")[0] for r in caplog.records]
    features = [f"features.{name.replace('=', '__')} FLOAT64" for name in OLDER_ONLY]
    assert added == [*features, "feature_set STRING"]


def test_join_ground_truth_runs_its_shipped_sql_through_the_client(warehouse: BigQueryWarehouse) -> None:
    """The labels MERGE and the report as BigQuery SQL (parameters, TIMESTAMP_ADD, LOGICAL_OR, the included query)
    through the real client: one early default, one paid, one denied decision."""
    from shadowgate.config import GroundTruthSettings
    from shadowgate.pipelines.ground_truth import join_ground_truth
    from tests.warehouse_rows import load, outcome_row, prediction_row

    bought = dt.datetime(2026, 3, 2, 10, tzinfo=dt.UTC)
    day = dt.timedelta(days=1)
    load(
        warehouse,
        "prediction_logs",
        [prediction_row(1, at=bought), prediction_row(2, at=bought), prediction_row(3, at=bought, decision="deny")],
    )
    load(
        warehouse,
        "outcomes",
        [
            outcome_row("tx_0000001", "instalment_late", bought + 17 * day, 2),
            outcome_row("tx_0000002", "instalment_paid", bought + 14 * day, 2),
        ],
    )
    start = dt.datetime(2026, 3, 19, tzinfo=dt.UTC)
    settings = GroundTruthSettings(early_grace_hours=0)  # day 17 to the second
    summary = join_ground_truth(warehouse, interval_start=start, interval_end=start + day, settings=settings)
    assert (summary.approved, summary.denied_no_outcome_expected, summary.early_defaults) == (2, 1, 1)
    assert (summary.outcomes_in_window, summary.approved_without_outcome, summary.held_back) == (1, 0, False)
    rows = warehouse.query(
        f"SELECT transaction_id, early_defaulted, final_defaulted, outcome_events, amount_band, customer_type"
        f" FROM `{PROJECT}.{warehouse.dataset}.labeled_predictions` ORDER BY transaction_id"
    ).to_pylist()
    assert rows == [
        {"transaction_id": f"tx_000000{i}", "early_defaulted": bad, "final_defaulted": None, "outcome_events": 1,
         "amount_band": "100-500", "customer_type": "returning"}
        for i, bad in ((1, True), (2, False))
    ]  # fmt: skip
    again = join_ground_truth(warehouse, interval_start=start, interval_end=start + day, settings=settings)
    assert again.labeled == 2 and warehouse.count("labeled_predictions") == 2

    # The weekly evaluation's reads of those labels (version pick, retried-purchase pick, the join back to the rows).
    from shadowgate.pipelines.performance import cohort_week

    week = cohort_week(dt.date(2026, 3, 2), "early", as_of=start + day)
    cohort = warehouse.run("queries/weekly_cohort", week.params()).to_pylist()
    assert [(r["transaction_id"], r["defaulted"], len(r["scores"])) for r in cohort] == [
        ("tx_0000001", True, len(cohort[0]["scores"])),
        ("tx_0000002", False, len(cohort[0]["scores"])),
    ] and cohort[0]["scores"]
    params = {k: v for k, v in week.params().items() if k != "cohort_start"}
    positives = warehouse.run("queries/weekly_positives", {**params, "since": week.params()["cohort_start"]})
    assert [(r["n"], r["n_positive"]) for r in positives.to_pylist()] == [(2, 1)]
    before = cohort_week(dt.date(2026, 3, 2), "early", as_of=start)  # labels as known before the run: none
    assert warehouse.run("queries/weekly_cohort", before.params()).num_rows == 0


def test_an_empty_labeled_predictions_of_the_earlier_layout_is_recreated(warehouse: BigQueryWarehouse) -> None:
    from google.cloud import bigquery

    ref = f"{PROJECT}.{warehouse.dataset}.labeled_predictions"
    warehouse.client.delete_table(ref)
    old = [bigquery.SchemaField(n, t, mode="REQUIRED") for n, t in (("prediction_id", "STRING"), ("defaulted", "BOOL"))]
    warehouse.client.create_table(bigquery.Table(ref, schema=old))
    warehouse.ensure_tables()
    assert [f.name for f in warehouse.client.get_table(ref).schema] == arrow_schema("labeled_predictions").names


def test_the_gate_and_guard_queries_answer_as_on_duckdb(warehouse: BigQueryWarehouse, tmp_path: Path) -> None:
    """The promotion gate's and the canary guard's statements, run through the real client on the emulator, give the
    answers DuckDB gives on the same rows (counts exactly; approximate quantiles within their resolution)."""
    from shadowgate.storage.duckdb import DuckDBWarehouse
    from tests.integration.test_canary_guard import NOW as GUARD_NOW
    from tests.integration.test_canary_guard import _rows
    from tests.warehouse_rows import load

    rows = _rows(400, start=GUARD_NOW - dt.timedelta(hours=1), hours=1, share=0.3, broken="deny_all")
    hour = {"experiment_id": "canary-challenger", "since": GUARD_NOW - dt.timedelta(hours=2), "until": GUARD_NOW}
    statements = {
        "queries/canary_arms": hour,
        "queries/canary_scores": {**hour, "experiment_version": "3"},
        "queries/canary_latency": {**hour, "experiment_version": "3"},
        "queries/applicant_policy": {
            "since": hour["since"], "until": hour["until"], "policy": "conservative", "medium": 0.2,
            "treatment": "challenger@2", "control": "champion@1",
        },
        "queries/model_latency": {"period_start": hour["since"], "period_end": hour["until"]},
        "queries/open_alerts": {"kinds": ["drift"], "subjects": ["challenger@2"]},
    }  # fmt: skip
    load(warehouse, "prediction_logs", rows)
    with DuckDBWarehouse(tmp_path / "w.duckdb", sql_dir=default_sql_dir()) as duck:
        duck.ensure_tables()
        load(duck, "prediction_logs", rows)
        expected = {name: duck.run(name, params).to_pylist() for name, params in statements.items()}
    for name, params in statements.items():
        got = warehouse.run(name, params).to_pylist()
        assert len(got) == len(expected[name]), name
        for g, e in zip(got, expected[name], strict=True):
            for key, value in e.items():
                if key.startswith("p99") or key.startswith("p50"):
                    assert g[key] == pytest.approx(value, rel=0.5), (name, key)
                elif isinstance(value, float):
                    assert g[key] == pytest.approx(value, rel=1e-9), (name, key)
                else:
                    assert g[key] == value, (name, key)
    arms = {r["arm"]: r for r in expected["queries/canary_arms"]}
    assert arms["treatment"]["approved"] == 0 and arms["control"]["approved"] > 0  # the broken arm denied everyone


def test_retention_sets_partition_expiry_through_the_client(warehouse: BigQueryWarehouse) -> None:
    from shadowgate.pipelines.retention import RETAINED, enforce_warehouse_retention

    summary = enforce_warehouse_retention(warehouse, now=NOW)
    assert summary.deleted == dict.fromkeys(RETAINED, -1)  # BigQuery deletes expired partitions itself
    table = warehouse.client.get_table(f"{warehouse.project}.{warehouse.dataset}.prediction_logs")
    assert table.time_partitioning is not None
    assert table.time_partitioning.expiration_ms == 730 * 86_400_000  # the DDL's option, as BigQuery reports it
