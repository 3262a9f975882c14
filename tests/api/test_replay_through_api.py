"""`shadowgate replay` against the real API: a real uvicorn on 127.0.0.1 with its shadow process, real models in an
MLflow store, a private Redis, the uploader into DuckDB. A simulated week goes through and every count is exact:

* decisions answered = purchases in the window (one made invalid: a 422, counted once, never retried);
* the predictions stream holds each answered purchase once, at its simulated time;
* the outcomes stream holds exactly the outcome rows of the purchases the API approved, each at the simulated instant
  it became known; sending them again (after the API's dedup window) writes the same event ids and the warehouse
  gains no row;
* the command refuses a wrong ingest key before it sends anything, with exit 1 and a message saying so.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from shadowgate.cli import app
from shadowgate.config import SimulationSettings
from shadowgate.events import outcome_event_id
from shadowgate.pipelines.upload import upload_streams
from shadowgate.simulation import SimulationResult, simulate, write_parquet
from shadowgate.simulation.replay import Replayer, replay, select_window
from shadowgate.storage.duckdb import DuckDBWarehouse
from shadowgate.storage.redis_streams import StreamReader
from shadowgate.storage.warehouse import default_sql_dir
from tests.api.conftest import Registry
from tests.api.test_durability import ApiProcess, _wait_committed
from tests.redis_server import RedisServer

PREDICTIONS, OUTCOMES = "shadowgate:predictions", "shadowgate:outcomes"
INGEST_KEY = "replay-ingest-key"
WEEK = (dt.datetime(2026, 3, 9, tzinfo=dt.UTC), dt.datetime(2026, 3, 16, tzinfo=dt.UTC))


@pytest.fixture(scope="module")
def history() -> SimulationResult:
    """Two weeks of purchases; the second is replayed (its customers have a week of history behind them)."""
    settings = SimulationSettings(
        transactions=6_000, customers=800, days=14, drift_start_day=14, seed=21, start=dt.date(2026, 3, 2)
    )
    return simulate(settings)


@pytest.fixture
def api(tmp_path: Path, redis_server: RedisServer, registry: Registry) -> Iterator[ApiProcess]:
    process = ApiProcess(tmp_path / "home", redis_url=redis_server.url, registry=registry)
    # A dedup window of 1 s: the second send of the outcomes reaches the stream again, and the warehouse must drop it.
    process.env.update({"SHADOWGATE_API_INGEST_KEY": INGEST_KEY, "SHADOWGATE_SERVING_OUTCOME_DEDUP_TTL_S": "1"})
    process.start()
    yield process
    process.kill_group()  # the process group this test started, by its own id


def _payloads(redis_server: RedisServer, stream: str) -> list[dict[str, Any]]:
    return [json.loads(fields["payload"]) for _, fields in redis_server.client().xrange(stream)]


def _upload(redis_server: RedisServer, warehouse: DuckDBWarehouse) -> dict[str, tuple[int, int]]:
    client = redis_server.client()
    readers = [
        (StreamReader(client, stream=PREDICTIONS, group="uploader", consumer="test"), "prediction"),
        (StreamReader(client, stream=OUTCOMES, group="uploader", consumer="test"), "outcome"),
    ]
    summary = upload_streams(readers=readers, warehouse=warehouse)
    assert all(s.quarantined == 0 for s in summary.streams)
    return {s.table: (s.read, s.loaded) for s in summary.streams}


def _count(warehouse: DuckDBWarehouse, table: str) -> int:
    [row] = warehouse.query(f"SELECT COUNT(*) AS n FROM {warehouse.qualified}.{table}").to_pylist()
    return int(row["n"])


def test_a_replayed_week_reaches_the_streams_and_the_warehouse_with_exact_counts(
    api: ApiProcess, redis_server: RedisServer, history: SimulationResult, tmp_path: Path
) -> None:
    week, _, _, _ = select_window(history.transactions, history.outcomes, start=WEEK[0], end=WEEK[1])
    assert 1_000 <= len(week) <= 2_000
    # One purchase the API must refuse (a currency outside the contract): a 422, counted, never retried.
    invalid = week["transaction_id"].iloc[len(week) // 2]
    transactions = history.transactions.copy()
    transactions.loc[transactions["transaction_id"] == invalid, "currency"] = "XXX"

    replayer = Replayer(api_url=api.base, ingest_key=INGEST_KEY, concurrency=4)
    summary = replay(
        transactions=transactions, outcomes=history.outcomes, replayer=replayer, start=WEEK[0], end=WEEK[1]
    )

    n = len(week)
    assert (summary.purchases, summary.decisions_answered) == (n, n - 1)
    [error] = summary.errors
    assert (error.phase, error.status, error.count) == ("decisions", "422", 1) and "currency" in error.first_body
    assert (summary.retries, summary.unconfirmed_decision_attempts, summary.stopped) == (0, 0, None)
    assert summary.fallback == 0  # the champion decided every purchase

    _wait_committed(api)
    predictions = _payloads(redis_server, PREDICTIONS)
    # Each answered purchase once, at its simulated purchase time.
    answered = week[week["transaction_id"] != invalid]
    assert sorted(p["transaction_id"] for p in predictions) == sorted(answered["transaction_id"])
    sent_at = {p["transaction_id"]: pd.Timestamp(p["event_timestamp"]) for p in predictions}
    assert sent_at == dict(zip(answered["transaction_id"], answered["event_timestamp"], strict=True))
    decided = {p["transaction_id"]: p["decision"] for p in predictions}
    counts = Counter(decided.values())
    assert (summary.approved, summary.denied, summary.manual_review) == (
        counts["approve"],
        counts["deny"],
        counts["manual_review"],
    )
    assert min(counts.values()) > 0, counts  # the week exercises every decision

    # Outcomes: exactly the rows of approved purchases, each at the instant it became known; none of the others.
    approved = {t for t, d in decided.items() if d == "approve"}
    rows = history.outcomes[history.outcomes["transaction_id"].isin(week["transaction_id"])]
    funded = rows[rows["transaction_id"].isin(approved)]
    expected = {
        outcome_event_id(r.transaction_id, r.event_type, r.instalment): r.event_timestamp for r in funded.itertuples()
    }
    assert len(expected) == len(funded) > 100  # (transaction, type, instalment) is unique in the simulator's log
    first_send = [(fields["id"], fields) for _, fields in redis_server.client().xrange(OUTCOMES)]
    assert sorted(i for i, _ in first_send) == sorted(expected)
    known_at = {i: pd.Timestamp(json.loads(f["payload"])["event_timestamp"]) for i, f in first_send}
    assert known_at == expected
    assert (summary.outcome_rows, summary.outcomes_sent, summary.outcomes_skipped) == (
        len(rows),
        len(funded),
        len(rows) - len(funded),
    )

    with DuckDBWarehouse(tmp_path / "warehouse.duckdb", sql_dir=default_sql_dir()) as warehouse:
        assert _upload(redis_server, warehouse) == {
            "prediction_logs": (n - 1, n - 1),
            "outcomes": (len(funded), len(funded)),
        }
        time.sleep(1.5)  # past the API's outcome dedup window (1 s here): the re-send reaches the stream again

        again = replayer.send_outcomes(
            select_window(transactions, history.outcomes, start=WEEK[0], end=WEEK[1])[1], approved=approved
        )
        assert (again.sent, again.errors) == (len(funded), ())
        _wait_committed(api)
        second_send = sorted(fields["id"] for _, fields in redis_server.client().xrange(OUTCOMES))
        assert second_send == sorted(i for i, _ in first_send)  # the same ids: derived, not drawn
        assert _upload(redis_server, warehouse) == {"prediction_logs": (0, 0), "outcomes": (len(funded), 0)}
        assert (_count(warehouse, "prediction_logs"), _count(warehouse, "outcomes")) == (n - 1, len(funded))


def test_the_command_refuses_a_wrong_ingest_key_before_sending_anything(
    api: ApiProcess, redis_server: RedisServer, history: SimulationResult, tmp_path: Path
) -> None:
    write_parquet(history, tmp_path / "data")
    day = ["--data", str(tmp_path / "data"), "--api-url", api.base, "--from", "2026-03-09", "--to", "2026-03-10"]

    refused = CliRunner().invoke(app, ["replay", *day, "--ingest-key", "not-the-key"])

    assert refused.exit_code == 1, refused.output
    assert "refused the ingest key (401" in refused.output
    _wait_committed(api)
    assert redis_server.client().xlen(PREDICTIONS) == 0  # checked before the first decision

    accepted = CliRunner().invoke(app, ["replay", *day, "--ingest-key", INGEST_KEY, "--concurrency", "2"])

    assert accepted.exit_code == 0, accepted.output
    purchases = select_window(history.transactions, history.outcomes, start=WEEK[0], end=WEEK[0] + dt.timedelta(1))[0]
    assert f"{len(purchases):,} answered of {len(purchases):,} purchases" in accepted.output
    assert "errors     none" in accepted.output
    _wait_committed(api)
    assert redis_server.client().xlen(PREDICTIONS) == len(purchases)

    # A purchase the API refuses: the summary shows it and the command exits 1.
    broken = history.transactions.copy()
    broken.loc[broken["transaction_id"] == purchases["transaction_id"].iloc[0], "amount"] = -1.0
    write_parquet(SimulationResult(broken, history.outcomes, history.labels, history.intercept), tmp_path / "broken")
    failed = CliRunner().invoke(
        app, ["replay", *day[2:], "--data", str(tmp_path / "broken"), "--no-outcomes", "--concurrency", "2"]
    )
    assert failed.exit_code == 1, failed.output
    assert f"{len(purchases) - 1:,} answered of {len(purchases):,} purchases" in failed.output
    assert "decisions 422: 1  first: " in failed.output and "error: 1 request(s) failed" in failed.output
