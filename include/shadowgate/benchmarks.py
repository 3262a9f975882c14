"""Benchmarks that print figures (speed targets live here, never in timed unit tests)."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

from shadowgate.config import SimulationSettings


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    unit: str
    target: str = ""


@dataclass(frozen=True)
class BenchmarkReport:
    title: str
    figures: tuple[Figure, ...]

    def render(self) -> str:
        lines = [self.title]
        for f in self.figures:
            target = f"   (target {f.target})" if f.target else ""
            shown = f"{f.value:>12,.0f}" if f.unit.startswith("rows") else f"{f.value:>12,.2f}"
            lines.append(f"  {f.name:<46} {shown} {f.unit}{target}")
        return "\n".join(lines)


def feature_path(*, rows: int = 20_000, repeats: int = 5) -> BenchmarkReport:
    """Time the single-row feature path (median of ``repeats`` passes over ``rows`` transactions) and the batch path."""
    from shadowgate.features import features_frame, features_one
    from shadowgate.simulation import simulate

    sim = simulate(SimulationSettings(transactions=rows, customers=max(rows // 10, 10)))
    records = sim.transactions.to_dict("records")
    for record in records:
        record["event_timestamp"] = record["event_timestamp"].to_pydatetime()
    passes = []
    for _ in range(repeats):
        started = time.perf_counter()
        for record in records:
            features_one(record)
        passes.append((time.perf_counter() - started) / len(records) * 1e6)
    started = time.perf_counter()
    features_frame(sim.transactions)
    batch = (time.perf_counter() - started) / len(records) * 1e6
    return BenchmarkReport(
        f"feature path over {len(records):,} simulated transactions",
        (
            Figure("single row (serving), median of passes", statistics.median(passes), "µs/row", "≤ 50"),
            Figure("single row, slowest pass", max(passes), "µs/row"),
            Figure("batch (training)", batch, "µs/row"),
        ),
    )


def simulator_speed(*, transactions: int = 1_000_000) -> BenchmarkReport:
    """Time one simulation of ``transactions`` purchase attempts."""
    from shadowgate.simulation import simulate

    settings = SimulationSettings(transactions=transactions, customers=max(transactions // 10, 10))
    started = time.perf_counter()
    result = simulate(settings)
    elapsed = time.perf_counter() - started
    return BenchmarkReport(
        f"simulator: {transactions:,} purchase attempts over {settings.days} days (+ burn-in)",
        (
            Figure("wall time", elapsed, "s", "≤ 60 for 1M"),
            Figure("purchases produced (attempts minus declined)", len(result.transactions), "rows"),
            Figure("outcome events", len(result.outcomes), "rows"),
            Figure("purchases per second", len(result.transactions) / elapsed, "rows/s"),
        ),
    )
