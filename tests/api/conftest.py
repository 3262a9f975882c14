"""Fixtures for the API tests: models trained once into a real (SQLite) MLflow store, a private real Redis, the app.

The registry holds three versions: the scorecard ``@champion``, gradient boosting ``@challenger`` and a second
gradient boosting ``@challenger-b`` (so the service scores a champion and two shadow challengers).
"""

from __future__ import annotations

import datetime as dt
import gc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from shadowgate.config import (
    ApiSettings,
    MLflowSettings,
    PathSettings,
    RedisSettings,
    ServingSettings,
    TrainingSettings,
    WarehouseSettings,
)
from shadowgate.serving.models import ModelSource
from shadowgate.serving.runtime import Runtime, build_runtime
from shadowgate.simulation import SimulationResult
from shadowgate.storage.deployments import WarehouseDeploymentLog
from shadowgate.training.train import ModelKind, train_and_register
from tests.redis_server import RedisServer

CHALLENGER_B = "challenger-b"


@dataclass(frozen=True)
class Registry:
    mlflow: MLflowSettings
    versions: dict[str, str]


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory, baseline: SimulationResult) -> Registry:
    import mlflow

    root = tmp_path_factory.mktemp("mlflow")
    settings = MLflowSettings(tracking_uri=f"sqlite:///{root / 'mlflow.db'}", training_experiment="api-tests")
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.create_experiment(settings.training_experiment, artifact_location=str(root / "artifacts"))
    training = TrainingSettings(reference_rows=200)
    deployments = WarehouseDeploymentLog.from_settings(
        WarehouseSettings(duckdb_path=root / "warehouse.duckdb"), home=root
    )
    as_of = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    versions = {}
    for kind, alias in (
        (ModelKind.SCORECARD, "champion"),
        (ModelKind.GRADIENT_BOOSTING, "challenger"),
        (ModelKind.GRADIENT_BOOSTING, CHALLENGER_B),
    ):
        result = train_and_register(
            transactions=baseline.transactions,
            outcomes=baseline.outcomes,
            kind=kind,
            as_of=as_of,
            alias=alias,
            training=training,
            mlflow_settings=settings,
            deployments=deployments,
            actor="tests/api",
        )
        versions[alias] = result.model_version
    # Runtime.start freezes the collector: garbage left now (DuckDB's, from the deployment log) would outlive the
    # session and make DuckDB's bindings report it as leaked at exit.
    gc.collect()
    return Registry(mlflow=settings, versions=versions)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def runtime_factory(
    tmp_path: Path, registry: Registry, redis_server: RedisServer
) -> Callable[..., Callable[[], Runtime]]:
    """runtime_factory(mlflow=..., source=..., **serving_overrides) → a factory for create_app.

    Every runtime of one test shares the test's state folder (so a second runtime finds the first one's model cache).
    """

    def make(
        *, mlflow: MLflowSettings | None = None, source: ModelSource | None = None, **overrides: object
    ) -> Callable[[], Runtime]:
        serving = ServingSettings(
            **{
                "challenger_aliases": ("challenger", CHALLENGER_B),
                "customer_salt": "test-salt",
                "model_poll_interval_s": 0.2,
                **overrides,
            }  # type: ignore[arg-type]
        )
        return lambda: build_runtime(
            paths=PathSettings(home=tmp_path / "home"),
            redis=RedisSettings(url=redis_server.url),
            mlflow=mlflow or registry.mlflow,
            serving=serving,
            source=source,
        )

    return make


ADMIN_KEY = "test-key"
INGEST_KEY = "test-ingest-key"
ADMIN = {"X-API-Key": ADMIN_KEY}
INGEST = {"X-Ingest-Key": INGEST_KEY}


def make_client(
    factory: Callable[[], Runtime], *, key: str | None = ADMIN_KEY, ingest_key: str | None = INGEST_KEY
) -> TestClient:
    """A TestClient over a fresh app (use it as a context manager: the lifespan runs inside)."""
    from api.main import create_app

    settings = ApiSettings(key=key, ingest_key=ingest_key)  # type: ignore[arg-type]
    return TestClient(create_app(runtime_factory=factory, api_settings=settings), raise_server_exceptions=False)


@pytest.fixture
def client(runtime_factory: Callable[..., Callable[[], Runtime]]) -> Iterator[TestClient]:
    with make_client(runtime_factory()) as test_client:
        yield test_client
