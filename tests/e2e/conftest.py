"""The end-to-end tests reuse the API fixtures (models in a real MLflow store, a private Redis, the app's runtime)
and the DAG tests' throw-away Airflow metadata DB, rather than building a second copy of either."""

from collections.abc import Callable

import pytest

from shadowgate.config import DriftScenario
from shadowgate.simulation import SimulationResult
from tests.api.conftest import redis_server, registry, runtime_factory
from tests.dags.conftest import airflow_db

__all__ = ["airflow_db", "baseline", "redis_server", "registry", "runtime_factory"]


@pytest.fixture(scope="session")
def baseline(world: Callable[..., SimulationResult]) -> SimulationResult:
    """A smaller history than the API tests train on: these tests need models that score, not good ones."""
    return world(scenario=DriftScenario.NONE, transactions=8_000, customers=1_000)
