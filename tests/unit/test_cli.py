"""The `shadowgate` command line."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from shadowgate.cli import app


def test_simulate_writes_parquet(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["simulate", "--out", str(tmp_path), "--transactions", "5000", "--customers", "500", "--seed", "3"]
    )
    assert result.exit_code == 0, result.output
    assert "simulated" in result.output and "scenario none" in result.output
    tx = pd.read_parquet(tmp_path / "transactions.parquet")
    assert 3_000 < len(tx) <= 5_000
    assert (tmp_path / "outcomes.parquet").exists() and (tmp_path / "labels.parquet").exists()


def test_bad_options_are_rejected() -> None:
    result = CliRunner().invoke(app, ["simulate", "--scenario", "meteor_strike"])
    assert result.exit_code == 2
    assert "meteor_strike" in result.output
    result = CliRunner().invoke(app, ["train", "--kind", "random_forest"])
    assert result.exit_code == 2


def test_feature_benchmark_prints_figures() -> None:
    result = CliRunner().invoke(app, ["bench", "features", "--rows", "2000"])
    assert result.exit_code == 0, result.output
    assert "µs/row" in result.output and "single row (serving)" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-active-runs", "0"], "--max-active-runs"),
        (["--reprocess", "everything"], "--reprocess"),
        (["--timeout", "0"], "--timeout"),
    ],
)
def test_backfill_refuses_bad_options_before_it_reaches_airflow(args: list[str], message: str) -> None:
    """A backfill with no active runs waited forever (Airflow accepted it); every such value is refused up front."""
    result = CliRunner().invoke(
        app, ["backfill", "join_ground_truth", "--from", "2026-07-23", "--to", "2026-07-24", *args]
    )
    assert result.exit_code == 2 and message in result.output
