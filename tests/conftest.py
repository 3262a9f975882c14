"""Shared fixtures: simulated worlds (session-scoped, cheap to share) and real MLflow stores."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from shadowgate.config import DriftScenario, SimulationSettings
from shadowgate.simulation import SimulationResult, simulate

SMALL = {"transactions": 40_000, "customers": 4_000, "days": 182, "drift_start_day": 120, "seed": 5}


@pytest.fixture(autouse=True)
def _mlflow_global_uris_stay_in_their_test(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training and the model source set MLflow's process-wide tracking and registry URIs; without this reset the
    next test's ``MlflowClient(tracking_uri=...)`` silently reads another test's registry (seen in CI: a stack test
    counted the versions of an earlier test's SQLite store)."""
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    monkeypatch.setattr(tracking_utils, "_tracking_uri", tracking_utils._tracking_uri)
    monkeypatch.setattr(registry_utils, "_registry_uri", registry_utils._registry_uri)


@pytest.fixture(scope="session")
def world() -> Callable[..., SimulationResult]:
    """simulate(**overrides) with a per-session cache (worlds are immutable results)."""
    cache: dict[tuple[tuple[str, object], ...], SimulationResult] = {}

    def make(**overrides: object) -> SimulationResult:
        merged = {**SMALL, **overrides}
        key = tuple(sorted(merged.items()))
        if key not in cache:
            cache[key] = simulate(SimulationSettings(**merged))  # type: ignore[arg-type]
        return cache[key]

    return make


@pytest.fixture(scope="session")
def baseline(world: Callable[..., SimulationResult]) -> SimulationResult:
    return world(scenario=DriftScenario.NONE)
