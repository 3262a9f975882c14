"""First-run set-up of the local system: simulated history and the first champion and challenger.

Both steps are idempotent: existing history is reused, and an alias that is already set is left alone, so running
``make up`` twice changes nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shadowgate.config import MLflowSettings, SimulationSettings, TrainingSettings
from shadowgate.registry import CHALLENGER, CHAMPION, ModelRegistry
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
) -> dict[str, TrainingResult]:
    """Train and register a model for every role whose alias is not set yet."""
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
        )
        for alias in missing
    }


def bootstrap(
    data_dir: Path,
    *,
    simulation: SimulationSettings,
    training: TrainingSettings,
    mlflow_settings: MLflowSettings,
    progress: Callable[..., object] | None = None,
) -> BootstrapSummary:
    """Seed history if missing, then fill missing aliases."""
    simulated = seed_history(data_dir, simulation, progress=progress)
    trained = ensure_models(data_dir, simulation=simulation, training=training, mlflow_settings=mlflow_settings)
    registry = ModelRegistry(tracking_uri=mlflow_settings.tracking_uri, model_name=mlflow_settings.model_name)
    return BootstrapSummary(simulated=simulated, trained=trained, aliases=registry.aliases())
