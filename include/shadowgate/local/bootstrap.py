"""First-run set-up of the local system: simulated history and the first champion and challenger.

Both steps are idempotent: existing history is reused, and an alias that is already set is left alone, so running
``make up`` twice changes nothing. Setting ``@champion`` here is the *first deployment*, one of the three ways it may
move (see :mod:`shadowgate.registry`); each alias set writes one deployment event, and every run re-sends the
recorded moves of the aliases it manages (stored once), which completes a first run whose warehouse write failed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shadowgate.config import MLflowSettings, SimulationSettings, TrainingSettings
from shadowgate.registry import CHALLENGER, CHAMPION, DeploymentLog, ModelRegistry
from shadowgate.simulation import read_parquet, simulate, write_parquet
from shadowgate.training.train import ModelKind, TrainingResult, train_and_register

ROLE_KINDS: dict[str, ModelKind] = {CHAMPION: ModelKind.SCORECARD, CHALLENGER: ModelKind.GRADIENT_BOOSTING}
"""Which model family fills which alias on first start."""


def history_as_of(simulation: SimulationSettings) -> dt.datetime:
    """The instant the simulated history ends: the end of the purchase window (midnight UTC)."""
    return dt.datetime.combine(simulation.start + dt.timedelta(days=simulation.days), dt.time(), dt.UTC)


def seed_history(
    data_dir: Path, simulation: SimulationSettings, *, progress: Callable[..., object] | None = None
) -> bool:
    """Simulate and write history into ``data_dir`` unless it is already there. Returns True when it simulated."""
    if all((data_dir / f"{t}.parquet").exists() for t in ("transactions", "outcomes", "labels")):
        return False
    write_parquet(simulate(simulation, progress=progress), data_dir)  # type: ignore[arg-type]
    return True


@dataclass(frozen=True)
class BootstrapSummary:
    """What the bootstrap did."""

    simulated: bool
    trained: dict[str, TrainingResult]
    aliases: dict[str, str]


def ensure_models(
    data_dir: Path,
    *,
    simulation: SimulationSettings,
    training: TrainingSettings,
    mlflow_settings: MLflowSettings,
    deployments: DeploymentLog,
    actor: str,
) -> dict[str, TrainingResult]:
    """Train and register a model for every role whose alias is not set yet (``@champion`` first)."""
    registry = ModelRegistry(tracking_uri=mlflow_settings.tracking_uri, model_name=mlflow_settings.model_name)
    missing = [alias for alias in ROLE_KINDS if registry.version(alias) is None]
    if not missing:
        return {}
    tables = read_parquet(data_dir)
    return {
        alias: train_and_register(
            transactions=tables["transactions"],
            outcomes=tables["outcomes"],
            kind=ROLE_KINDS[alias],
            as_of=history_as_of(simulation),
            alias=alias,
            training=training,
            mlflow_settings=mlflow_settings,
            deployments=deployments,
            actor=actor,
        )
        for alias in missing
    }


def bootstrap(
    data_dir: Path,
    *,
    simulation: SimulationSettings,
    training: TrainingSettings,
    mlflow_settings: MLflowSettings,
    deployments: DeploymentLog,
    actor: str,
    progress: Callable[..., object] | None = None,
) -> BootstrapSummary:
    """Seed history if missing, fill missing aliases, and make sure their moves are in the warehouse."""
    simulated = seed_history(data_dir, simulation, progress=progress)
    trained = ensure_models(
        data_dir,
        simulation=simulation,
        training=training,
        mlflow_settings=mlflow_settings,
        deployments=deployments,
        actor=actor,
    )
    registry = ModelRegistry(
        tracking_uri=mlflow_settings.tracking_uri, model_name=mlflow_settings.model_name, deployments=deployments
    )
    # The moves made just now were sent; the older ones again (a no-op once stored).
    registry.resend_recorded([alias for alias in ROLE_KINDS if alias not in trained])
    return BootstrapSummary(simulated=simulated, trained=trained, aliases=registry.aliases())
