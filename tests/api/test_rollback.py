"""POST /v1/admin/models/rollback on a running app: a real MLflow registry (a copy of the session's store, so the
other tests keep theirs), a real DuckDB warehouse for the audit rows, decisions answered throughout."""

from __future__ import annotations

import gc
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from shadowgate.config import MLflowSettings
from shadowgate.registry import CHALLENGER, CHAMPION, PREVIOUS, ModelRegistry
from shadowgate.serving.runtime import Runtime
from shadowgate.storage.deployments import WarehouseDeploymentLog
from shadowgate.storage.duckdb import DuckDBWarehouse
from shadowgate.storage.warehouse import default_sql_dir
from tests.api.conftest import ADMIN, Registry, make_client
from tests.api.test_decisions import URL, _tx

ROLLBACK = "/v1/admin/models/rollback"
REASON = "INC-5120: the promoted version declines returning customers; back to the previous one"


def test_rollback_swaps_the_champion_back_with_no_failed_request(
    registry: Registry,
    runtime_factory: Callable[..., Callable[[], Runtime]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = Path(registry.mlflow.tracking_uri.removeprefix("sqlite:///"))
    shutil.copy(source, tmp_path / "mlflow.db")
    mlflow = MLflowSettings(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", training_experiment="api-tests")
    warehouse = tmp_path / "warehouse.duckdb"
    monkeypatch.setenv("SHADOWGATE_WAREHOUSE_DUCKDB_PATH", str(warehouse))
    log = WarehouseDeploymentLog(lambda: DuckDBWarehouse(warehouse, sql_dir=default_sql_dir()))
    models = ModelRegistry(tracking_uri=mlflow.tracking_uri, model_name=mlflow.model_name, deployments=log)
    old, new = registry.versions[CHAMPION], registry.versions[CHALLENGER]
    models.promote_champion(new, reason="gate passed", actor="test", evidence={"verdict": "superior"})
    gc.collect()  # the app's start freezes the collector: DuckDB's garbage from above would be reported as leaked

    with make_client(runtime_factory(mlflow=mlflow)) as client:
        assert client.get("/v1/models").json()["aliases"][CHAMPION]["version"] == new
        assert client.post(ROLLBACK, json={"reason": REASON}).status_code == 401
        short = client.post(ROLLBACK, json={"reason": "broken"}, headers=ADMIN)
        assert short.status_code == 422 and short.json()["detail"][0]["loc"] == ["body", "reason"]

        answers: list[int] = []
        stop = threading.Event()

        def decide() -> None:
            i = 0
            while not stop.is_set():
                answers.append(client.post(URL, json=_tx(i)).status_code)
                i += 1

        worker = threading.Thread(target=decide)
        worker.start()
        try:
            done = client.post(ROLLBACK, json={"reason": REASON, "actor": "alice"}, headers=ADMIN)
        finally:
            stop.set()
            worker.join(30)
        assert done.status_code == 200, done.text
        body = done.json()
        assert [(m["alias"], m["from_version"], m["to_version"]) for m in body["moves"]] == [
            (CHAMPION, new, old),
            (PREVIOUS, old, None),
        ]
        assert body["aliases"][CHAMPION] == old and body["recorded_in_warehouse"] is True
        assert client.get("/v1/models").json()["aliases"][CHAMPION]["version"] == old  # this replica swapped at once
        assert answers and set(answers) == {200}  # no request failed during the swap
        again = client.post(ROLLBACK, json={"reason": REASON}, headers=ADMIN)
        assert again.status_code == 409 and "@previous is not set" in again.json()["detail"]
    assert models.aliases() == {CHAMPION: old, CHALLENGER: new}  # @previous used up
    with DuckDBWarehouse(warehouse, sql_dir=default_sql_dir()) as w:
        rows = w.query(
            "SELECT action, alias, to_version, actor FROM shadowgate.deployment_events WHERE action = 'rollback'"
        ).to_pylist()
    assert sorted((r["alias"], r["to_version"], r["actor"]) for r in rows) == [
        (CHAMPION, old, "api:alice"),
        (PREVIOUS, None, "api:alice"),
    ]
