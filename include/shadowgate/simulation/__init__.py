"""The BNPL world simulator: customers, purchases, delayed outcomes and drift scenarios."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from shadowgate.simulation.world import SCENARIO_COLUMNS, SimulationResult, simulate

__all__ = ["SCENARIO_COLUMNS", "SimulationResult", "read_parquet", "simulate", "write_parquet"]

_TABLES = ("transactions", "outcomes", "labels")


def write_parquet(result: SimulationResult, directory: Path) -> dict[str, Path]:
    """Write the three tables as ``<directory>/<table>.parquet`` (atomically, via a temporary name)."""
    directory.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for table in _TABLES:
        path = directory / f"{table}.parquet"
        tmp = path.with_suffix(".parquet.tmp")
        getattr(result, table).to_parquet(tmp, index=False)
        tmp.replace(path)
        written[table] = path
    return written


def read_parquet(directory: Path) -> dict[str, pd.DataFrame]:
    """Read the tables written by :func:`write_parquet`."""
    return {table: pd.read_parquet(directory / f"{table}.parquet") for table in _TABLES}
