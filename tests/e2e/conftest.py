"""The end-to-end tests reuse the API fixtures (models in a real MLflow store, a private Redis, the app's runtime)
and the DAG tests' throw-away Airflow metadata DB, rather than building a second copy of either."""

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shadowgate.config import DriftScenario
from shadowgate.simulation import SimulationResult
from tests.api.conftest import redis_server, registry, runtime_factory
from tests.dags.conftest import airflow_db
from tests.tempdirs import traversable_tempdir

__all__ = ["airflow_db", "baseline", "private_stack", "redis_server", "registry", "runtime_factory", "stack_home"]


@pytest.fixture(scope="session")
def baseline(world: Callable[..., SimulationResult]) -> SimulationResult:
    """A smaller history than the API tests train on: these tests need models that score, not good ones."""
    return world(scenario=DriftScenario.NONE, transactions=8_000, customers=1_000)


# ------------------------------------------------------------------ a private local stack (make up) per test

REPO_ROOT = Path(__file__).resolve().parents[2]
# `up` seeds history and trains the first champion and challenger on it; a small world keeps that to seconds (the
# models must decide, not be good). Reference rows: the default sample is larger than this training set. One OpenMP
# thread: with the stack's other processes on the same cores, gradient boosting's threads spin-wait on each other
# (measured on this 2-core machine under load: its fit took 31 s with the default threads, 2.1 s with one).
SMALL_HISTORY = {
    "SHADOWGATE_SIM_TRANSACTIONS": "6000",
    "SHADOWGATE_SIM_CUSTOMERS": "600",
    "SHADOWGATE_TRAIN_REFERENCE_ROWS": "200",
    "OMP_NUM_THREADS": "1",
}
PORT_VARIABLES = {
    "redis": "SHADOWGATE_REDIS_EMBEDDED_PORT",
    "postgres": "SHADOWGATE_AIRFLOW_DB_PORT",
    "mlflow": "SHADOWGATE_MLFLOW_PORT",
    "airflow": "SHADOWGATE_AIRFLOW_PORT",
    "api": "SHADOWGATE_API_PORT",
}


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture
def stack_home() -> Iterator[Path]:
    """A SHADOWGATE_HOME below a folder every user may traverse: under root, PostgreSQL runs as `nobody`, and
    pytest's tmp_path sits in a 0700 folder."""
    with traversable_tempdir("shadowgate-stack-") as base:
        yield base / "home"


@pytest.fixture
def private_stack(stack_home: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """SHADOWGATE_HOME of its own and free ports for every service; returns the ports."""
    ports = dict(zip(PORT_VARIABLES, _free_ports(len(PORT_VARIABLES)), strict=True))
    monkeypatch.setenv("SHADOWGATE_HOME", str(stack_home))
    for service, variable in PORT_VARIABLES.items():
        monkeypatch.setenv(variable, str(ports[service]))
    for variable in ("SHADOWGATE_REDIS_URL", "SHADOWGATE_MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(variable, raising=False)
    return ports
