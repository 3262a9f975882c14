"""``bench performance`` at a small scale: the synthetic week goes through the real labelling and evaluation."""

from __future__ import annotations

from shadowgate.bench.performance import run_performance_bench


def test_the_bench_labels_and_evaluates_every_approved_decision_of_the_week() -> None:
    result = run_performance_bench(per_day=2_000, echo=lambda _: None)
    assert result.decisions == 14_000
    assert 0 < result.approved < result.decisions
    # Every approved decision of the week is labelled (early and final) and evaluated under both labels.
    assert result.labelled == result.approved
    assert [(w["label"], w["rows_compared"]) for w in result.weeks] == [
        ("early", result.approved),
        ("final", result.approved),
    ]
    # 2 comparisons (the challengers against the champion) × 2 labels × (2 model runs + 1 comparison run).
    assert result.mlflow_runs == 12
    assert result.metric_rows > 0 and result.peak_rss_mb > 0
    auc = {w["label"]: w["models"] for w in result.weeks}
    assert auc["final"]["challenger@2"] > auc["final"]["champion@1"]  # less noise, better ranking, by construction
    assert "seconds" in result.as_json() and "peak_rss_mb" in result.as_json()
    assert 0 < result.floor_seconds < result.seconds  # the least any evaluation does: below the whole of it
    assert result.as_json()["vs_floor"] == result.seconds / result.floor_seconds > 1
    assert "vs_floor" in result.render()
