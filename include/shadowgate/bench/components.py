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


@dataclass(frozen=True)
class ScorerBenchResult:
    """µs/row of sklearn ``predict_proba`` and of the compiled scorers, for both model families."""

    rows: int
    single_rows: int
    n_trees: int
    logistic_sklearn_one_us: float
    logistic_compiled_one_us: float
    logistic_compiled_batch_us: float
    trees_sklearn_one_us: float
    trees_compiled_one_us: float
    trees_compiled_batch_us: float
    max_abs_diff: float

    def render(self) -> str:
        rows = (
            ("logistic: sklearn predict_proba, one row", self.logistic_sklearn_one_us, ""),
            ("logistic: compiled score_one", self.logistic_compiled_one_us, "≤ 5"),
            ("logistic: compiled score_batch", self.logistic_compiled_batch_us, ""),
            (f"trees ({self.n_trees}): sklearn predict_proba, one row", self.trees_sklearn_one_us, ""),
            (f"trees ({self.n_trees}): compiled score_one", self.trees_compiled_one_us, "< 100"),
            (f"trees ({self.n_trees}): compiled score_batch", self.trees_compiled_batch_us, ""),
        )
        lines = [f"compiled scorers vs sklearn ({self.rows:,} rows; sklearn one-row timed on {self.single_rows:,})"]
        for name, value, target in rows:
            lines.append(f"  {name:<46} {value:>12,.2f} µs/row" + (f"   (target {target})" if target else ""))
        lines.append(f"  {'max |compiled - sklearn| over all rows':<46} {self.max_abs_diff:>12.1e}")
        return "\n".join(lines)


def scorer_speed(rows: int = 5000) -> ScorerBenchResult:
    """Time one-row and batch scoring of both model families, sklearn against the compiled scorers.

    The models are trained on a fresh simulated world with the production settings, except that the boosting runs
    all of its iterations (no early stopping) so the tree timing is the worst case. sklearn's one-row path costs
    milliseconds, so it is timed on at most 1,000 rows.
    """
    import numpy as np

    from shadowgate.features import features_frame
    from shadowgate.serving.scorer import compile_model
    from shadowgate.simulation import simulate
    from shadowgate.training.train import ModelKind, build_estimator

    n_train = 20_000
    sim = simulate(SimulationSettings(transactions=int((n_train + rows) * 1.4), customers=max(rows // 2, 4_000)))
    x = features_frame(sim.transactions)
    y = sim.labels["is_default"].to_numpy(dtype=np.int64)
    x_train, y_train, x_eval = x[:n_train], y[:n_train], x[n_train : n_train + rows]
    single = x_eval[: min(len(x_eval), 1_000)]
    eval_rows = x_eval.tolist()

    def per_row(seconds: float, n: int) -> float:
        return seconds / n * 1e6

    timings: dict[str, tuple[float, float, float]] = {}
    n_trees = 0
    worst = 0.0
    for kind in (ModelKind.SCORECARD, ModelKind.GRADIENT_BOOSTING):
        model = build_estimator(kind, seed=1)
        if kind is ModelKind.GRADIENT_BOOSTING:
            model.set_params(early_stopping=False)
        model.fit(x_train, y_train)
        compiled = compile_model(model)
        n_trees = getattr(compiled, "n_trees", n_trees)
        started = time.perf_counter()
        for i in range(len(single)):
            model.predict_proba(single[i : i + 1])
        sklearn_one = per_row(time.perf_counter() - started, len(single))
        started = time.perf_counter()
        ones = [compiled.score_one(row) for row in eval_rows]
        compiled_one = per_row(time.perf_counter() - started, len(eval_rows))
        started = time.perf_counter()
        batch = compiled.score_batch(x_eval)
        compiled_batch = per_row(time.perf_counter() - started, len(eval_rows))
        expected = model.predict_proba(x_eval)[:, 1]
        worst = max(worst, float(np.max(np.abs(batch - expected))), float(np.max(np.abs(np.array(ones) - expected))))
        timings[kind.value] = (sklearn_one, compiled_one, compiled_batch)
    lr = timings[ModelKind.SCORECARD.value]
    hgb = timings[ModelKind.GRADIENT_BOOSTING.value]
    return ScorerBenchResult(
        rows=len(eval_rows),
        single_rows=len(single),
        n_trees=n_trees,
        logistic_sklearn_one_us=lr[0],
        logistic_compiled_one_us=lr[1],
        logistic_compiled_batch_us=lr[2],
        trees_sklearn_one_us=hgb[0],
        trees_compiled_one_us=hgb[1],
        trees_compiled_batch_us=hgb[2],
        max_abs_diff=worst,
    )
