"""upload_predictions with dag.test(): real Airflow metadata DB, real Redis, real DuckDB file; its alerts."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from shadowgate.pipelines.alerts import Alert, send_alert
from shadowgate.pipelines.upload import LAST_SUCCESS_KEY, record_success, upload_freshness
from shadowgate.storage.duckdb import DuckDBWarehouse
from shadowgate.storage.warehouse import default_sql_dir
from tests.dags.conftest import load_dag
from tests.integration.stream_events import outcome_fields, prediction_fields
from tests.redis_server import RedisServer

PREDICTIONS, OUTCOMES = "shadowgate:predictions", "shadowgate:outcomes"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as server:
        yield server


def test_upload_predictions_loads_once_and_a_backfill_changes_nothing(
    airflow_db: Path, tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.utils.state import DagRunState

    client = redis_server.client()
    for i in range(300):
        client.xadd(PREDICTIONS, prediction_fields(i))
    client.xadd(PREDICTIONS, {"v": "1", "id": "broken", "kind": "prediction", "payload": "{"})
    for i in range(80):
        client.xadd(OUTCOMES, outcome_fields(i))
    monkeypatch.setenv("SHADOWGATE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SHADOWGATE_REDIS_URL", redis_server.url)
    dag = load_dag("upload_predictions")

    first = dag.test(logical_date=dt.datetime(2026, 11, 23, 10, tzinfo=dt.UTC))
    assert first.state == DagRunState.SUCCESS
    # A backfill-style run over a past interval: the streams are drained already, nothing is added twice.
    client.xadd(PREDICTIONS, prediction_fields(5))  # a re-sent event (same id) arrives meanwhile
    second = dag.test(logical_date=dt.datetime(2026, 11, 1, 3, tzinfo=dt.UTC))
    assert second.state == DagRunState.SUCCESS

    path = tmp_path / "home" / "warehouse" / "warehouse.duckdb"
    with DuckDBWarehouse(path, sql_dir=default_sql_dir()) as warehouse:
        counts = {t: warehouse.count(t) for t in ("prediction_logs", "outcomes", "quarantine")}
    assert counts == {"prediction_logs": 300, "outcomes": 80, "quarantine": 1}
    assert client.xlen(PREDICTIONS) == 0 and client.xlen(OUTCOMES) == 0
    assert client.get(LAST_SUCCESS_KEY) is not None
    # check_redis ran after each upload: the test Redis has no memory limit, which it records as one open alert.
    with DuckDBWarehouse(path, sql_dir=default_sql_dir()) as warehouse:
        alerts = warehouse.query(
            "SELECT kind, subject, resolved_at FROM shadowgate.alerts WHERE source = 'redis' ORDER BY kind"
        ).to_pylist()
    assert alerts == [{"kind": "redis_policy", "subject": "redis", "resolved_at": None}]


def test_tasks_retry_with_backoff_and_alert_on_failure(airflow_db: Path) -> None:
    dag = load_dag("upload_predictions")
    for task in dag.tasks:
        assert task.retries == 3 and task.retry_exponential_backoff
        assert task.on_failure_callback, task.task_id


def test_the_failure_callback_logs_and_posts(
    airflow_db: Path, webhook: tuple[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, received = webhook
    monkeypatch.setenv("SHADOWGATE_ALERT_WEBHOOK_URL", url)
    dag = load_dag("upload_predictions")
    [callback] = dag.get_task("upload_streams").on_failure_callback
    ti = SimpleNamespace(dag_id="upload_predictions", task_id="upload_streams", run_id="r1", try_number=4)
    callback({"ti": ti, "exception": ConnectionError("redis down")})
    assert len(received) == 1
    assert received[0]["title"] == "upload_predictions.upload_streams failed"
    assert "ConnectionError: redis down" in received[0]["text"] and received[0]["details"]["try_number"] == 4


def test_an_unreachable_webhook_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    assert send_alert(Alert(title="t", text="x"), webhook_url="http://127.0.0.1:9/nothing", timeout_s=1) is False
    assert "alert webhook" in caplog.text and "ALERT [error] t: x" in caplog.text


def test_freshness_counts_from_the_last_success_or_the_first_check(redis_server: RedisServer) -> None:
    client = redis_server.client()
    start = dt.datetime(2026, 11, 23, 0, tzinfo=dt.UTC)
    assert upload_freshness(client, now=start, stale_after_h=6).stale is False  # nothing yet: starts watching
    never = upload_freshness(client, now=start + dt.timedelta(hours=6, minutes=1), stale_after_h=6)
    assert never.stale is True and never.last_success is None and never.age_h == pytest.approx(6 + 1 / 60)
    record_success(client, start + dt.timedelta(hours=7))
    fresh = upload_freshness(client, now=start + dt.timedelta(hours=12), stale_after_h=6)
    assert fresh.stale is False and fresh.age_h == pytest.approx(5.0)
    assert upload_freshness(client, now=start + dt.timedelta(hours=13), stale_after_h=6).stale is True
