"""The uploader against a real Redis and a real DuckDB file: exactly once, quarantine, reclaim, reconciliation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from shadowgate.pipelines.upload import GROUP, upload_streams
from shadowgate.storage.duckdb import DuckDBWarehouse
from shadowgate.storage.redis_streams import StreamReader
from shadowgate.storage.warehouse import default_sql_dir
from tests.integration.crash_uploader import OUTCOMES, PREDICTIONS
from tests.integration.stream_events import outcome_fields, prediction, prediction_fields
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as server:
        yield server


def _readers(client: redis.Redis, consumer: str = "uploader") -> list[tuple[StreamReader, str]]:
    return [
        (StreamReader(client, stream=PREDICTIONS, group=GROUP, consumer=consumer), "prediction"),
        (StreamReader(client, stream=OUTCOMES, group=GROUP, consumer=consumer), "outcome"),
    ]


def _malformed(client: redis.Redis) -> dict[str, str]:
    """Writes one entry of each kind of problem; returns event id → the reason its quarantine row must start with."""
    good = prediction_fields(900_000)
    payload = json.loads(good["payload"])

    def variant(event_id: str, **changes: object) -> dict[str, str]:
        return {**good, "id": event_id, "payload": json.dumps({**payload, "event_id": event_id, **changes})}

    cases = {
        "invalid_json": {**good, "id": "bad-json", "payload": "{not json"},
        "invalid_field": variant("no-decision", decision=None),
        "future_schema_version": variant("future", schema_version=99),
        "invalid_inputs": variant("typed", inputs={**payload["inputs"], "amount": "lots"}),
        "contract": variant("range", inputs={**payload["inputs"], "amount": -5.0}),
        "wrong_kind": outcome_fields(900_001),
        "missing_envelope": {"payload": good["payload"]},
    }
    for fields in cases.values():
        client.xadd(PREDICTIONS, fields)
    return {fields.get("id", "-"): reason for reason, fields in cases.items()}


def test_every_entry_lands_exactly_once_and_the_counts_reconcile(tmp_path: Path, redis_server: RedisServer) -> None:
    client = redis_server.client()
    for i in range(500):
        client.xadd(PREDICTIONS, prediction_fields(i))
    for i in range(120):
        client.xadd(OUTCOMES, outcome_fields(i))
    cases = _malformed(client)
    produced = client.xlen(PREDICTIONS) + client.xlen(OUTCOMES)
    with DuckDBWarehouse(tmp_path / "w.duckdb", sql_dir=default_sql_dir()) as warehouse:
        # A batch spans several reads (64 entries, read 20 at a time): acks must cover every read of it.
        summary = upload_streams(readers=_readers(client), warehouse=warehouse, batch_size=64, read_size=20)
        counts = {t: warehouse.count(t) for t in ("prediction_logs", "outcomes", "quarantine")}
        quarantined = warehouse.query("SELECT event_id, reason FROM shadowgate.quarantine").to_pylist()
        row = warehouse.query(
            "SELECT features.amount_log AS amount_log, scores[2].score AS challenger, amount, currency "
            "FROM shadowgate.prediction_logs WHERE prediction_id = $id",
            {"id": f"{7:032x}"},
        ).to_pylist()[0]
    assert counts == {"prediction_logs": 500, "outcomes": 120, "quarantine": len(cases)}
    assert produced == sum(counts.values())  # reconciliation: produced = loaded + quarantined
    assert {q["event_id"] or "-": q["reason"].split(":")[0] for q in quarantined} == cases
    event = prediction(7)
    assert row["challenger"] == 0.2 and row["amount"] == event.inputs["amount"]
    assert row["amount_log"] == pytest.approx(event.features["amount_log"])
    # Everything acknowledged and trimmed; nothing pending.
    assert client.xlen(PREDICTIONS) == 0 and client.xlen(OUTCOMES) == 0
    assert [s.acked for s in summary.streams] == [500 + len(cases), 120]
    assert [s.batches for s in summary.streams] == [7, 2]  # 507 entries in batches of 80, 120 in 80 + 40


def test_a_second_run_and_a_rerun_of_the_same_entries_add_nothing(tmp_path: Path, redis_server: RedisServer) -> None:
    client = redis_server.client()
    for i in range(200):
        client.xadd(PREDICTIONS, prediction_fields(i))
    with DuckDBWarehouse(tmp_path / "w.duckdb", sql_dir=default_sql_dir()) as warehouse:
        first = upload_streams(readers=_readers(client), warehouse=warehouse, batch_size=50)
        assert (first.streams[0].batches, first.streams[0].trimmed) == (4, 200)
        for i in range(150, 250):  # 50 re-sent (same event ids), 50 new
            client.xadd(PREDICTIONS, prediction_fields(i))
        again = upload_streams(readers=_readers(client), warehouse=warehouse, batch_size=50)
        assert warehouse.count("prediction_logs") == 250
        assert again.streams[0].loaded == 50 and again.streams[0].read == 100


def test_entries_left_pending_by_a_dead_consumer_are_claimed(tmp_path: Path, redis_server: RedisServer) -> None:
    client = redis_server.client()
    for i in range(30):
        client.xadd(PREDICTIONS, prediction_fields(i))
    dead = StreamReader(client, stream=PREDICTIONS, group=GROUP, consumer="dead")
    dead.ensure_group()
    assert len(dead.read_new(20)) == 20  # delivered, never acked: the consumer died
    time.sleep(0.05)
    with DuckDBWarehouse(tmp_path / "w.duckdb", sql_dir=default_sql_dir()) as warehouse:
        summary = upload_streams(readers=_readers(client)[:1], warehouse=warehouse, min_idle_ms=10)
        assert summary.streams[0].reclaimed == 20
        assert warehouse.count("prediction_logs") == 30
    assert dead.pending_count() == 0 and client.xlen(PREDICTIONS) == 0


@pytest.mark.parametrize("crash_at", ["after_stage", "after_merge"])
@pytest.mark.parametrize("table", ["prediction_logs", "quarantine"])
def test_sigkill_between_steps_then_rerun_is_exactly_once(
    tmp_path: Path, redis_server: RedisServer, crash_at: str, table: str
) -> None:
    client = redis_server.client()
    for i in range(250):
        client.xadd(PREDICTIONS, prediction_fields(i))
    cases = _malformed(client)
    for i in range(40):
        client.xadd(OUTCOMES, outcome_fields(i))
    produced = client.xlen(PREDICTIONS) + client.xlen(OUTCOMES)
    path = tmp_path / "w.duckdb"
    argv = [sys.executable, "-m", "tests.integration.crash_uploader", redis_server.url, str(path)]
    # Batches of 100 read 30 at a time: the batch the uploader dies in spans four reads.
    env = {**os.environ, "UPLOAD_BATCH_SIZE": "100", "UPLOAD_READ_SIZE": "30"}
    killed = subprocess.run([*argv, crash_at, table], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert client.xlen(PREDICTIONS) > 0  # the killed run acknowledged nothing of the batch it died in
    rerun = subprocess.run([*argv, "never"], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert rerun.returncode == 0, rerun.stderr
    with DuckDBWarehouse(path, sql_dir=default_sql_dir()) as warehouse:
        counts = {t: warehouse.count(t) for t in ("prediction_logs", "outcomes", "quarantine")}
        distinct = (
            warehouse.query("SELECT COUNT(DISTINCT prediction_id) AS n FROM shadowgate.prediction_logs")
            .column("n")[0]
            .as_py()
        )
        assert not [t for t in warehouse.tables() if t.startswith("_staging_")]
    assert counts == {"prediction_logs": 250, "outcomes": 40, "quarantine": len(cases)}
    assert distinct == 250
    assert produced == sum(counts.values())
    assert client.xlen(PREDICTIONS) == 0 and client.xlen(OUTCOMES) == 0


def test_an_event_sent_twice_within_one_batch_is_loaded_once(tmp_path: Path, redis_server: RedisServer) -> None:
    client = redis_server.client()
    for i in [1, 2, 1, 3, 2, 2]:
        client.xadd(PREDICTIONS, prediction_fields(i))
    with DuckDBWarehouse(tmp_path / "w.duckdb", sql_dir=default_sql_dir()) as warehouse:
        summary = upload_streams(readers=_readers(client)[:1], warehouse=warehouse, batch_size=100)
        first_entries = warehouse.query(
            "SELECT prediction_id, stream_entry_id FROM shadowgate.prediction_logs ORDER BY stream_entry_id"
        ).to_pylist()
    assert (summary.streams[0].read, summary.streams[0].loaded, summary.streams[0].acked) == (6, 3, 6)
    assert [r["prediction_id"] for r in first_entries] == [f"{i:032x}" for i in (1, 2, 3)]
    assert client.xlen(PREDICTIONS) == 0
