"""``bench drift`` at a small scale: the synthetic day goes through the real check, the statistics and Evidently."""

from __future__ import annotations

import json

from shadowgate.bench.drift import run_drift_bench


def test_the_bench_checks_every_decision_of_the_day_and_reports_its_figures() -> None:
    result = run_drift_bench(rows=5_000, echo=lambda _: None)
    assert result.rows == 5_000
    assert result.columns == 15 + 3  # the contract's drift columns and three models' scores
    # The reference is another day drawn from the same generator: nothing moved.
    assert result.verdict == "stable"
    assert result.report_rows == 5_000
    assert result.seconds > result.statistics_seconds > 0
    assert result.evidently_seconds > 0 and result.peak_rss_mb > 0
    figures = json.loads(json.dumps(result.as_json()))
    assert {"seconds", "statistics_seconds", "evidently_seconds", "peak_rss_mb", "pass"} <= set(figures)
