"""The promotion gate's evidence from the warehouse (real DuckDB): the p99 of the latencies logged with the scores."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from shadowgate.pipelines.promotion import model_latencies
from shadowgate.storage.duckdb import DuckDBWarehouse
from shadowgate.storage.warehouse import arrow_schema, default_sql_dir
from tests.warehouse_rows import load, simulated_prediction_logs


def test_each_versions_p99_latency_comes_from_its_logged_scores(world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    tx = world().transactions.iloc[:2_000].reset_index(drop=True)
    n = len(tx)
    table = simulated_prediction_logs(
        tx, np.full(n, "approve"), np.full(n, 0.1), shadow={"challenger": ("2", np.full(n, 0.2))}
    )
    # Latencies: the champion 1..n µs, the challenger 10× that; one challenger score failed (not counted).
    champion_latency = np.arange(1, n + 1, dtype=float)
    scores = []
    for i, row in enumerate(table.column("scores").to_pylist()):
        row[0]["latency_us"] = champion_latency[i]
        row[1]["latency_us"] = 10 * champion_latency[i]
        if i == 0:
            row[1]["status"] = "error"
            row[1]["latency_us"] = 1e9
        scores.append(row)
    schema = arrow_schema("prediction_logs")
    table = table.set_column(
        table.schema.get_field_index("scores"),
        schema.field("scores"),
        pa.array(scores, type=schema.field("scores").type),
    )
    with DuckDBWarehouse(tmp_path / "w.duckdb", sql_dir=default_sql_dir()) as warehouse:
        warehouse.ensure_tables()
        load(warehouse, "prediction_logs", table)
        start = tx["event_timestamp"].min().to_pydatetime()
        found = model_latencies(warehouse, start=start, end=start + dt.timedelta(days=400))
    assert set(found) == {"champion@1", "challenger@2"}
    assert found["champion@1"].scored == n and found["challenger@2"].scored == n - 1
    assert found["champion@1"].p99_ms == pytest.approx(np.quantile(champion_latency, 0.99) / 1000, rel=0.02)
    assert found["challenger@2"].p99_ms == pytest.approx(10 * found["champion@1"].p99_ms, rel=0.02)
