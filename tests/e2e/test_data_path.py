"""The data path end to end, with exact counts: decisions and outcomes through the real app (real MLflow store, real
Redis, the shadow process), then the real ``upload_predictions`` DAG (``dag.test()``) into a DuckDB warehouse.

What goes in: valid decisions (single and batch), invalid requests (422, never logged), outcomes (one of them sent
twice, as a client's retry), and malformed entries written straight into both streams. What must come out: every
valid decision and every distinct outcome exactly once, every malformed entry in ``quarantine`` with its reason,
every stream entry acknowledged, and a second run that changes nothing.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from shadowgate.contract import example_transaction
from shadowgate.events import hash_customer_id
from shadowgate.pipelines.upload import GROUP
from shadowgate.serving.runtime import Runtime
from shadowgate.storage.duckdb import DuckDBWarehouse
from shadowgate.storage.warehouse import default_sql_dir
from tests.api.conftest import CHALLENGER_B, INGEST, Registry, make_client
from tests.redis_server import RedisServer

URL = "/v1/bnpl/risk-assessment"
# Not the default stream names: the DAG only finds these through the environment it is given.
PREDICTIONS, OUTCOMES = "e2e:predictions", "e2e:outcomes"
SALT = "test-salt"  # runtime_factory's customer salt
TABLES = ("prediction_logs", "outcomes", "quarantine")

OUTCOME_HEADERS: dict[str, str] = INGEST
"""Headers of every outcome POST: the ingest key the outcome route requires (issue 9, item 5)."""


def post_outcome(client: TestClient, body: dict[str, Any]) -> httpx.Response:
    return client.post("/v1/outcomes", json=body, headers=OUTCOME_HEADERS)


def _tx(i: int, **changes: Any) -> dict[str, Any]:
    return {**example_transaction(), "transaction_id": f"tx_{i:07d}", "customer_id": f"cus_{i:06d}", **changes}


def _outcome(tx: int, event_type: str, instalment: int | None, **extra: Any) -> dict[str, Any]:
    body = {
        "transaction_id": f"tx_{tx:07d}",
        "event_type": event_type,
        "event_timestamp": f"2026-04-{1 + tx:02d}T10:00:00Z",
        **extra,
    }
    return body if instalment is None else {**body, "instalment_number": instalment}


VALID_SINGLES = 30
BATCH = 4
VALID_DECISIONS = VALID_SINGLES + BATCH

DISTINCT_OUTCOMES = [
    _outcome(0, "repayment", 1, amount=32.5),  # sent twice below
    _outcome(0, "instalment_paid", 2, amount=32.5),
    _outcome(1, "missed_instalment", 2),
    _outcome(1, "default", None, amount=97.5),
    _outcome(2, "instalment_paid", 1),
    _outcome(3, "instalment_late", 3),
]

# Malformed entries written straight into the streams, and the reason code each must be quarantined with.
PREDICTION_REASONS = {
    "bad-json": "invalid_json",
    "unknown-kind": "unknown_kind",
    "future-version": "future_schema_version",
    "negative-amount": "contract",
}
OUTCOME_REASONS = {
    "bad-json-outcome": "invalid_json",
    "future-version-outcome": "future_schema_version",
    "negative-outcome-amount": "invalid_field",
}


def _variant(fields: dict[str, str], event_id: str, *, kind: str | None = None, **payload: Any) -> dict[str, str]:
    """A copy of a real stream entry under a new event id, its payload changed (``a__b=x`` sets ``a["b"] = x``)."""
    data = json.loads(fields["payload"])
    data["event_id"] = event_id
    for key, value in payload.items():
        *path, last = key.split("__")
        target = data
        for part in path:
            target = target[part]
        target[last] = value
    return {**fields, "id": event_id, "kind": kind or fields["kind"], "payload": json.dumps(data)}


def _malformed(predictions: dict[str, str], outcome: dict[str, str]) -> tuple[list[dict[str, str]], ...]:
    """The entries behind PREDICTION_REASONS and OUTCOME_REASONS, derived from entries the service wrote."""
    bad_predictions = [
        {"v": "1", "id": "bad-json", "kind": "prediction", "payload": '{"schema_version": 2,'},
        _variant(predictions, "unknown-kind", kind="refund"),
        _variant(predictions, "future-version", schema_version=99),
        _variant(predictions, "negative-amount", inputs__amount=-5.0),
    ]
    bad_outcomes = [
        {"v": "1", "id": "bad-json-outcome", "kind": "outcome", "payload": "not json"},
        _variant(outcome, "future-version-outcome", schema_version=99),
        _variant(outcome, "negative-outcome-amount", amount=-1.0),
    ]
    return bad_predictions, bad_outcomes


def _upload_dag() -> Any:
    from tests.dags.conftest import load_dag

    return load_dag("upload_predictions")


def _run_upload(dag: Any, logical_date: dt.datetime) -> dict[str, Any]:
    """Run the DAG with dag.test(); the upload task's return value (its summary, from XCom)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState

    run = dag.test(logical_date=logical_date)
    assert run.state == DagRunState.SUCCESS
    with create_session() as session:
        query = XComModel.get_many(
            run_id=run.run_id, key="return_value", dag_ids="upload_predictions", task_ids="upload_streams"
        )
        [row] = session.scalars(query).all()
        summary: dict[str, Any] = XComModel.deserialize_value(row)
    return summary


def _snapshot(warehouse: DuckDBWarehouse) -> dict[str, list[dict[str, Any]]]:
    keys = {"prediction_logs": "prediction_id", "outcomes": "outcome_id", "quarantine": "quarantine_id"}
    return {
        table: warehouse.query(f"SELECT * FROM {warehouse.qualified}.{table} ORDER BY {key}").to_pylist()
        for table, key in keys.items()
    }


def test_api_events_reach_the_warehouse_exactly_once_through_the_upload_dag(
    airflow_db: Path,
    tmp_path: Path,
    registry: Registry,
    redis_server: RedisServer,
    runtime_factory: Callable[..., Callable[[], Runtime]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    factory = runtime_factory(predictions_stream=PREDICTIONS, outcomes_stream=OUTCOMES)
    with make_client(factory) as client:
        # Decisions: singles and one batch, every one decided by the champion (not the fallback).
        answers = [client.post(URL, json=_tx(i)) for i in range(VALID_SINGLES)]
        assert [a.status_code for a in answers] == [200] * VALID_SINGLES
        decided = [a.json() for a in answers]
        batch = client.post(f"{URL}:batch", json={"transactions": [_tx(100 + i) for i in range(BATCH)]})
        assert batch.status_code == 200, batch.text
        decided += batch.json()["results"]
        assert {(d["model"]["alias"], d["fallback"]) for d in decided} == {("champion", False)}
        request_ids = [d["request_id"] for d in decided]
        assert len(set(request_ids)) == VALID_DECISIONS

        # Invalid requests are refused before a decision exists: nothing of them may reach the stream.
        invalid = [
            client.post(URL, json=_tx(200, amount=-5)),
            client.post(URL, json={"transaction_id": "tx_0000201"}),
            client.post(URL, content=b"{not json", headers={"content-type": "application/json"}),
            client.post(f"{URL}:batch", json={"transactions": [_tx(202), _tx(203, channel="fax")]}),
        ]
        assert [a.status_code for a in invalid] == [422] * len(invalid)

        accepted = [post_outcome(client, body) for body in DISTINCT_OUTCOMES]
        assert [a.status_code for a in accepted] == [202] * len(DISTINCT_OUTCOMES)
        outcome_ids = [a.json()["event_id"] for a in accepted]
        assert len(set(outcome_ids)) == len(DISTINCT_OUTCOMES)
        retry = post_outcome(client, DISTINCT_OUTCOMES[0])
        assert retry.status_code == 202 and retry.json()["event_id"] == outcome_ids[0]
        refused = [
            post_outcome(client, _outcome(4, "repayment", None)),  # an instalment event without its instalment
            post_outcome(client, {**_outcome(4, "default", None), "event_timestamp": "2026-04-05T10:00:00"}),
            post_outcome(client, _outcome(4, "chargeback", None)),
        ]
        assert [a.status_code for a in refused] == [422] * len(refused)

        assert client.app.state.runtime.shadow.flush(30.0)  # type: ignore[attr-defined]

    redis = redis_server.client()
    # The service wrote one entry per decision and per distinct outcome (the retry is the same event: not written).
    assert (redis.xlen(PREDICTIONS), redis.xlen(OUTCOMES)) == (VALID_DECISIONS, len(DISTINCT_OUTCOMES))
    [(_, first_prediction)] = redis.xrange(PREDICTIONS, count=1)
    [(_, first_outcome)] = redis.xrange(OUTCOMES, count=1)
    bad_predictions, bad_outcomes = _malformed(first_prediction, first_outcome)
    # One entry of each stream delivered again (an outcome re-sent after its dedup marker expired): loaded once.
    for fields in [*bad_predictions, first_prediction]:
        redis.xadd(PREDICTIONS, fields)
    for fields in [*bad_outcomes, first_outcome]:
        redis.xadd(OUTCOMES, fields)
    entries = {PREDICTIONS: redis.xlen(PREDICTIONS), OUTCOMES: redis.xlen(OUTCOMES)}
    assert entries == {
        PREDICTIONS: VALID_DECISIONS + len(PREDICTION_REASONS) + 1,
        OUTCOMES: len(DISTINCT_OUTCOMES) + len(OUTCOME_REASONS) + 1,
    }

    warehouse_path = tmp_path / "warehouse" / "e2e.duckdb"
    for variable, value in {
        "SHADOWGATE_HOME": str(tmp_path / "dag-home"),
        "SHADOWGATE_REDIS_URL": redis_server.url,
        "SHADOWGATE_SERVING_PREDICTIONS_STREAM": PREDICTIONS,
        "SHADOWGATE_SERVING_OUTCOMES_STREAM": OUTCOMES,
        "SHADOWGATE_WAREHOUSE_BACKEND": "duckdb",
        "SHADOWGATE_WAREHOUSE_DUCKDB_PATH": str(warehouse_path),
    }.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.delenv("SHADOWGATE_ALERT_WEBHOOK_URL", raising=False)
    dag = _upload_dag()

    summary = _run_upload(dag, dt.datetime(2026, 11, 23, 10, tzinfo=dt.UTC))

    by_stream = {s["stream"]: s for s in summary["streams"]}
    expected = {
        PREDICTIONS: {"table": "prediction_logs", "read": entries[PREDICTIONS], "loaded": VALID_DECISIONS,
                      "quarantined": len(PREDICTION_REASONS), "acked": entries[PREDICTIONS]},
        OUTCOMES: {"table": "outcomes", "read": entries[OUTCOMES], "loaded": len(DISTINCT_OUTCOMES),
                   "quarantined": len(OUTCOME_REASONS), "acked": entries[OUTCOMES]},
    }  # fmt: skip
    assert {s: {k: by_stream[s][k] for k in expected[s]} for s in expected} == expected
    for stream, counts in by_stream.items():
        # Reconciliation: every entry is a loaded row, a quarantined row or the one re-delivered duplicate.
        assert counts["read"] == counts["loaded"] + counts["quarantined"] + 1, stream
    rows = {"prediction_logs": VALID_DECISIONS, "outcomes": len(DISTINCT_OUTCOMES)}
    assert summary["table_rows"] == {**rows, "quarantine": len(PREDICTION_REASONS) + len(OUTCOME_REASONS)}

    # Every entry acknowledged, none pending, and the streams trimmed behind the uploader.
    for stream in (PREDICTIONS, OUTCOMES):
        assert redis.xpending(stream, GROUP)["pending"] == 0, stream
        assert redis.xlen(stream) == 0, stream

    with DuckDBWarehouse(warehouse_path, sql_dir=default_sql_dir()) as warehouse:
        loaded = _snapshot(warehouse)
    assert sorted(r["prediction_id"] for r in loaded["prediction_logs"]) == sorted(request_ids)
    assert sorted(r["outcome_id"] for r in loaded["outcomes"]) == sorted(outcome_ids)
    quarantined = {(r["stream"], r["event_id"]): r["reason"].split(":", 1)[0] for r in loaded["quarantine"]}
    assert quarantined == {
        **{(PREDICTIONS, event_id): reason for event_id, reason in PREDICTION_REASONS.items()},
        **{(OUTCOMES, event_id): reason for event_id, reason in OUTCOME_REASONS.items()},
    }
    [contract] = [r["reason"] for r in loaded["quarantine"] if r["event_id"] == "negative-amount"]
    assert "amount" in contract

    # One decision, end to end: what the client was told is what the warehouse holds.
    answer = decided[7]
    [row] = [r for r in loaded["prediction_logs"] if r["prediction_id"] == answer["request_id"]]
    sent = _tx(7)
    assert (row["transaction_id"], row["amount"], row["merchant_id"]) == (
        sent["transaction_id"],
        sent["amount"],
        sent["merchant_id"],
    )
    assert (row["decision"], row["risk_level"], row["reason_codes"]) == (
        answer["decision"],
        answer["risk_level"],
        answer["reason_codes"],
    )
    assert row["served_by"] == f"champion@v{registry.versions['champion']}"
    scores = {s["alias"]: s for s in row["scores"]}
    assert set(scores) == {"champion", "challenger", CHALLENGER_B}
    assert {a: (s["status"], s["model_version"]) for a, s in scores.items()} == {
        a: ("ok", v) for a, v in registry.versions.items()
    }
    assert all(0.0 <= s["score"] <= 1.0 for s in scores.values())
    assert row["score"] == scores["champion"]["score"] == answer["risk_score"]
    assert row["customer_id_hash"] == hash_customer_id(sent["customer_id"], salt=SALT) != sent["customer_id"]
    assert "customer_id" not in row

    # The retried outcome is one row, under the id both answers gave, with its type normalised.
    [retried] = [r for r in loaded["outcomes"] if r["outcome_id"] == outcome_ids[0]]
    assert (retried["transaction_id"], retried["event_type"], retried["instalment_number"], retried["amount"]) == (
        "tx_0000000",
        "instalment_paid",
        1,
        32.5,
    )

    # A second run (a backfill of an earlier interval) finds nothing and changes nothing.
    again = _run_upload(dag, dt.datetime(2026, 11, 22, 3, tzinfo=dt.UTC))
    assert [(s["read"], s["loaded"], s["quarantined"]) for s in again["streams"]] == [(0, 0, 0), (0, 0, 0)]
    assert again["table_rows"] == summary["table_rows"]
    with DuckDBWarehouse(warehouse_path, sql_dir=default_sql_dir()) as warehouse:
        assert _snapshot(warehouse) == loaded
