"""make bench-upload on a small backlog: real Redis, a fresh drain process per backlog, figures that add up."""

from __future__ import annotations

import json

from shadowgate.bench.upload import TARGET_EVENTS_PER_S, run_upload_bench


def test_the_upload_benchmark_drains_every_event_and_reports_its_figures() -> None:
    lines: list[str] = []
    result = run_upload_bench(events=(1_000, 3_000), batch_size=1_000, echo=lines.append)
    assert [(r.events, r.loaded, r.quarantined, r.batches) for r in result.runs] == [
        (1_000, 1_000, 0, 1),
        (3_000, 3_000, 0, 3),
    ]
    for run in result.runs:
        assert run.events_per_s == run.events / run.seconds > 0
        assert run.peak_rss_mb >= run.start_rss_mb > 50  # a fresh process with the uploader loaded
    figures = json.loads(json.dumps(result.as_json()))
    assert figures["events_per_s"] == result.runs[1].events_per_s
    assert figures["peak_rss_mb"] == result.runs[1].peak_rss_mb
    assert figures["target_events_per_s"] == TARGET_EVENTS_PER_S
    for run in result.runs:  # the ceiling ran on the same events, in the same run
        assert run.ceiling_seconds > 0 and run.vs_ceiling == run.events_per_s / run.ceiling_events_per_s
    assert figures["vs_ceiling"] == result.runs[1].vs_ceiling
    assert figures["ceiling_events_per_s"] == result.runs[1].ceiling_events_per_s
    rendered = result.render()
    assert "vs_ceiling" in rendered
    assert "3,000" in rendered and "events_per_s" in rendered
    assert any("private redis-server on 127.0.0.1:" in line for line in lines)
