"""canary_guard with dag.test(): real Airflow metadata DB, a private real Redis holding the experiment book with an
active canary, a DuckDB warehouse file whose last hour of decisions has a broken treatment model. The run stops the
canary in the book (audited) and records the alert."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from shadowgate.decisioning.experiments import ExperimentBook
from shadowgate.storage.duckdb import DuckDBWarehouse
from shadowgate.storage.experiment_store import ExperimentStore, redis_client
from shadowgate.storage.warehouse import default_sql_dir
from tests.dags.conftest import load_dag
from tests.integration.test_canary_guard import NOW, _experiment, _rows
from tests.redis_server import redis_server_fixture
from tests.warehouse_rows import load

redis_server = redis_server_fixture()


def test_the_guard_stops_a_broken_canary_in_the_shared_book(
    airflow_db: Path, tmp_path: Path, redis_server, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    from airflow.utils.state import DagRunState

    home = tmp_path / "home"
    monkeypatch.setenv("SHADOWGATE_HOME", str(home))
    monkeypatch.setenv("SHADOWGATE_REDIS_URL", redis_server.url)
    monkeypatch.setenv("SHADOWGATE_EXPERIMENTS_KEY_PREFIX", "test-guard")
    for name in ("SHADOWGATE_WAREHOUSE_BACKEND", "SHADOWGATE_WAREHOUSE_DUCKDB_PATH", "SHADOWGATE_ALERT_WEBHOOK_URL"):
        monkeypatch.delenv(name, raising=False)
    path = home / "warehouse" / "warehouse.duckdb"
    path.parent.mkdir(parents=True)
    with DuckDBWarehouse(path, sql_dir=default_sql_dir()) as warehouse:
        warehouse.ensure_tables()
        load(warehouse, "prediction_logs", _rows(6_000, start=NOW - dt.timedelta(hours=1), hours=1, broken="errors"))
    client = redis_client(redis_server.url, timeout_s=5)
    store = ExperimentStore(client, key_prefix="test-guard")
    store.seed(ExperimentBook(version=1, experiments=(_experiment(),)), actor="test", reason="a canary at 5 %")

    dry = load_dag("canary_guard").test(run_conf={"dry_run": True, "now": NOW.isoformat()})
    assert dry.state == DagRunState.SUCCESS
    assert store.load().book.get("canary-challenger").status.value == "active"  # type: ignore[union-attr]

    run = load_dag("canary_guard").test(run_conf={"now": NOW.isoformat()})
    assert run.state == DagRunState.SUCCESS
    canary = store.load().book.get("canary-challenger")  # type: ignore[union-attr]
    assert canary.status.value == "stopped"
    last = store.audit()[-1]
    assert (last["actor"], last["change"]) == ("airflow:canary_guard", "transition")
    assert last["reason"].startswith("canary guard: STOPPED — errors:")
    with DuckDBWarehouse(path, sql_dir=default_sql_dir()) as warehouse:
        alerts = warehouse.query("SELECT kind, subject, condition FROM shadowgate.alerts").to_pylist()
    assert alerts == [{"kind": "canary_breach", "subject": "canary-challenger", "condition": "errors"}]
    client.close()
