"""The promotion gate's evidence, gathered from the warehouse (the ``promote_challenger`` DAG is built on these)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from shadowgate.storage.warehouse import Warehouse


@dataclass(frozen=True)
class Latency:
    """A model version's logged scoring latency over a period."""

    alias: str
    model_version: str
    scored: int
    p50_ms: float
    p99_ms: float


def model_latencies(warehouse: Warehouse, *, start: dt.datetime, end: dt.datetime) -> dict[str, Latency]:
    """Per ``alias@version``, the p50 and p99 of the latencies logged with its scores in ``[start, end)``."""
    rows = warehouse.run("queries/model_latency", {"period_start": start, "period_end": end}).to_pylist()
    return {
        f"{r['alias']}@{r['model_version']}": Latency(
            alias=r["alias"],
            model_version=r["model_version"],
            scored=int(r["scored"]),
            p50_ms=float(r["p50_us"]) / 1000.0,
            p99_ms=float(r["p99_us"]) / 1000.0,
        )
        for r in rows
    }
