"""The pure parts of ``bench serving``: wrk output parsing, pacing, the Lua script, ratios, rendering and the JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from shadowgate.bench.serving import (
    CHAMPION_ONLY,
    FULL,
    FULL_FSYNC_ALWAYS,
    HELLO_WORLD,
    MLFLOW_SERVE,
    Measurement,
    ServingBenchResult,
    StreamCheck,
    WrkResult,
    compute_ratios,
    cycle_overhead_ms,
    lua_script,
    meets_target,
    pacing_delay_ms,
    parse_wrk,
    write_json,
)
from shadowgate.bench.serving import _repo_root as bench_repo_root

WRK_OUTPUT = """\
Running 10s test @ http://127.0.0.1:41234/v1/bnpl/risk-assessment
  2 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     7.12ms    2.01ms  41.30ms   88.12%
    Req/Sec   563.20     40.11   640.00     71.00%
  Latency Distribution
     50%    6.84ms
     75%    7.90ms
     90%    9.02ms
     99%   14.57ms
  11264 requests in 10.01s, 5.92MB read
Requests/sec:   1125.28
Transfer/sec:    605.33KB
bench-sent: 11271
"""

WRK_WITH_ERRORS = """\
Running 1m test @ http://127.0.0.1:5555/invocations
  2 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   160.00ms   20.00ms    1.20s    90.00%
    Req/Sec    25.00      5.00     40.00     70.00%
  Latency Distribution
     50%  850.00us
     75%  120.00ms
     90%  300.00ms
     99%    1.20s
  2940 requests in 1.00m, 1.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:     49.00
Transfer/sec:     17.07KB
"""


def _wrk(rps: float, p50: float, p99: float, requests: int = 1000, sent: int | None = None) -> WrkResult:
    return WrkResult(requests=requests, duration_s=10.0, rps=rps, p50_ms=p50, p99_ms=p99, non_2xx=0, sent=sent)


def _result() -> ServingBenchResult:
    runs = (
        Measurement(FULL, 8, _wrk(1000.0, 8.0, 20.0), rounds_rps=(950.0, 1000.0)),
        Measurement(FULL_FSYNC_ALWAYS, 8, _wrk(800.0, 9.5, 26.0)),
        Measurement(CHAMPION_ONLY, 8, _wrk(1100.0, 7.5, 18.0)),
        Measurement(MLFLOW_SERVE, 8, _wrk(50.0, 160.0, 400.0)),
        Measurement(HELLO_WORLD, 8, _wrk(4000.0, 2.0, 5.0)),
    )
    half = Measurement(FULL, 8, _wrk(480.0, 3.0, 9.0), delay_ms=14.2, target_rps=500.0)
    stream = StreamCheck(entries=9010, server_decisions=9010, wrk_2xx=9000, wrk_sent=9016, dead_lettered=0, refused=0)
    return ServingBenchResult(duration_s=10.0, concurrency=8, runs=runs, half_load=half, streams={FULL: stream})


def test_parse_wrk_reads_the_figures() -> None:
    r = parse_wrk(WRK_OUTPUT)
    assert r.requests == 11264
    assert r.duration_s == pytest.approx(10.01)
    assert r.rps == pytest.approx(1125.28)
    assert r.p50_ms == pytest.approx(6.84)
    assert r.p99_ms == pytest.approx(14.57)
    assert r.non_2xx == 0 and r.socket_errors == 0
    assert r.sent == 11271
    assert r.ok_responses == 11264


def test_parse_wrk_converts_units_and_counts_errors() -> None:
    r = parse_wrk(WRK_WITH_ERRORS)
    assert r.duration_s == pytest.approx(60.0)
    assert r.p50_ms == pytest.approx(0.85)
    assert r.p99_ms == pytest.approx(1200.0)
    assert r.non_2xx == 7 and r.ok_responses == 2933
    assert (r.read_errors, r.timeouts, r.socket_errors) == (2, 3, 5)
    assert r.sent is None


def test_parse_wrk_refuses_incomplete_output() -> None:
    with pytest.raises(ValueError, match="Requests/sec"):
        parse_wrk(WRK_OUTPUT.replace("Requests/sec:   1125.28\n", ""))
    with pytest.raises(ValueError, match="99"):
        parse_wrk(WRK_OUTPUT.replace("     99%   14.57ms\n", ""))


def test_pacing_delay_and_overhead_are_inverse() -> None:
    # 8 connections at 400 req/s: each cycles every 20 ms; 3 ms of it is the response, so pause 17 ms.
    assert pacing_delay_ms(400.0, 8) == pytest.approx(20.0)
    assert pacing_delay_ms(400.0, 8, overhead_ms=3.0) == pytest.approx(17.0)
    assert cycle_overhead_ms(400.0, 8, 17.0) == pytest.approx(3.0)
    # Overhead larger than the cycle: the best the pacing can do is not to pause.
    assert pacing_delay_ms(400.0, 8, overhead_ms=50.0) == 0.0
    with pytest.raises(ValueError):
        pacing_delay_ms(0.0, 8)
    with pytest.raises(ValueError):
        cycle_overhead_ms(0.0, 8, 1.0)


def test_lua_script_varies_ids_and_paces_only_when_asked() -> None:
    body = json.dumps({"transaction_id": "@TX@", "customer_id": "@CUS@", "note": "100%"})
    closed = lua_script(path="/v1/bnpl/risk-assessment", body=body, vary_ids=True)
    assert '"transaction_id": "bench-%d-%d"' in closed and '"customer_id": "cus_%06d"' in closed
    assert "100%%" in closed  # a literal % survives string.format
    assert "function delay()" not in closed  # defining delay() at all would pace the run
    assert "bench-sent" in closed
    paced = lua_script(path="/x", body=body, vary_ids=True, delay_ms=12.5)
    assert "function delay()" in paced and "local delay_ms = 12.5" in paced
    fixed = lua_script(path="/invocations", body='{"rate": "5%"}', vary_ids=False)
    assert '{"rate": "5%"}' in fixed  # sent verbatim, never through string.format
    with pytest.raises(ValueError, match="placeholders"):
        lua_script(path="/x", body='{"a": 1}', vary_ids=True)
    with pytest.raises(ValueError, match="delimiter"):
        lua_script(path="/x", body='{"a": "]==]"}', vary_ids=False)


def test_ratios() -> None:
    ratios = compute_ratios(
        full=_wrk(1000.0, 8.0, 20.0),
        champion_only=_wrk(1100.0, 7.5, 18.0),
        mlflow=_wrk(50.0, 160.0, 400.0),
        hello=_wrk(4000.0, 2.0, 5.0),
        half_load=_wrk(480.0, 3.0, 9.0),
    )
    assert ratios.vs_mlflow_serve == pytest.approx(20.0)
    assert ratios.vs_hello_world == pytest.approx(0.25)
    assert ratios.p99_ms_at_half_load == pytest.approx(9.0)
    assert ratios.shadow_p50_overhead == pytest.approx(0.5 / 7.5)
    # With a sustained rate (every shadow score computed), vs_hello_world is taken there, nothing else moves.
    sustained = compute_ratios(
        full=_wrk(1000.0, 8.0, 20.0),
        champion_only=_wrk(1100.0, 7.5, 18.0),
        mlflow=_wrk(50.0, 160.0, 400.0),
        hello=_wrk(4000.0, 2.0, 5.0),
        half_load=_wrk(480.0, 3.0, 9.0),
        full_sustained=_wrk(800.0, 5.0, 12.0),
    )
    assert sustained.vs_hello_world == pytest.approx(0.2)
    assert sustained.vs_mlflow_serve == pytest.approx(20.0)
    assert math.isinf(
        compute_ratios(
            full=_wrk(1.0, 1.0, 1.0),
            champion_only=_wrk(1.0, 1.0, 1.0),
            mlflow=_wrk(0.0, 1.0, 1.0),
            hello=_wrk(1.0, 1.0, 1.0),
            half_load=_wrk(1.0, 1.0, 1.0),
        ).vs_mlflow_serve
    )


def test_targets() -> None:
    assert meets_target("vs_mlflow_serve", 10.0) and not meets_target("vs_mlflow_serve", 9.99)
    assert meets_target("vs_hello_world", 0.5) and not meets_target("vs_hello_world", 0.49)
    assert meets_target("p99_ms_at_half_load", 10.0) and not meets_target("p99_ms_at_half_load", 10.01)
    assert meets_target("shadow_p50_overhead", -0.2) and not meets_target("shadow_p50_overhead", 0.11)


def test_stream_check() -> None:
    ok = StreamCheck(entries=100, server_decisions=100, wrk_2xx=95, wrk_sent=102, dead_lettered=0, refused=3)
    assert ok.ok
    assert not StreamCheck(entries=99, server_decisions=100, wrk_2xx=95, wrk_sent=102, dead_lettered=0, refused=0).ok
    assert not StreamCheck(entries=94, server_decisions=94, wrk_2xx=95, wrk_sent=102, dead_lettered=0, refused=0).ok
    assert not StreamCheck(entries=103, server_decisions=103, wrk_2xx=95, wrk_sent=102, dead_lettered=0, refused=0).ok
    assert not StreamCheck(entries=100, server_decisions=100, wrk_2xx=95, wrk_sent=102, dead_lettered=1, refused=0).ok
    # Without a sent count the stream must match the 2xx responses exactly.
    assert StreamCheck(entries=95, server_decisions=95, wrk_2xx=95, wrk_sent=None, dead_lettered=0, refused=0).ok


def test_render_shows_every_server_ratio_and_verdict() -> None:
    text = _result().render()
    for name in (FULL, CHAMPION_ONLY, MLFLOW_SERVE, HELLO_WORLD, "half load"):
        assert name in text
    assert "vs_mlflow_serve" in text and "PASS" in text and "FAIL" in text  # 20× passes, 0.25× of hello fails
    assert "shadowgate:predictions holds 9,010 entries" in text and "OK" in text
    assert "950 / 1,000" in text  # every round's req/s, the best one reported
    assert "WARNING" not in text
    assert "journal fsync always vs interval (default): throughput -20.0%, p50 +1.50 ms, p99 +6.00 ms" in text


def test_render_warns_when_shadow_work_was_skipped() -> None:
    result = _result()
    skipped = StreamCheck(
        entries=10, server_decisions=10, wrk_2xx=10, wrk_sent=10, dead_lettered=0, refused=0, shadow_skipped=4
    )
    text = ServingBenchResult(
        duration_s=10.0, concurrency=8, runs=result.runs, half_load=result.half_load, streams={FULL: skipped}
    ).render()
    assert "WARNING 4 shadow scores skipped" in text


def test_json_has_the_ratios_and_raw_figures(tmp_path: Path) -> None:
    path = tmp_path / "out" / "bench.json"
    write_json(_result(), path)
    data = json.loads(path.read_text())
    assert data["vs_mlflow_serve"] == pytest.approx(20.0)
    assert data["vs_hello_world"] == pytest.approx(0.25)
    assert data["p99_ms_at_half_load"] == pytest.approx(9.0)
    assert data["shadow_p50_overhead"] == pytest.approx(0.5 / 7.5)
    assert data["pass"] == {
        "vs_mlflow_serve": True,
        "vs_hello_world": False,
        "p99_ms_at_half_load": True,
        "shadow_p50_overhead": True,
    }
    assert set(data["servers"]) == {FULL, FULL_FSYNC_ALWAYS, CHAMPION_ONLY, MLFLOW_SERVE, HELLO_WORLD}
    assert data["fsync_always_cost"] == pytest.approx(
        {"throughput_loss": 0.2, "p50_added_ms": 1.5, "p99_added_ms": 6.0}
    )
    assert data["servers"][MLFLOW_SERVE]["rps"] == pytest.approx(50.0)
    assert data["servers"][FULL]["p50_ms"] == pytest.approx(8.0)
    assert data["half_load"]["target_rps"] == pytest.approx(500.0)
    assert data["streams"][FULL]["entries"] == 9010 and data["streams"][FULL]["ok"] is True
    assert data["servers"][FULL]["rounds_rps"] == [950.0, 1000.0]
    assert data["settings"]["concurrency"] == 8


def test_json_writes_an_infinite_ratio_as_null(tmp_path: Path) -> None:
    result = _result()
    runs = tuple(Measurement(m.server, 8, _wrk(0.0, 1.0, 1.0)) if m.server == MLFLOW_SERVE else m for m in result.runs)
    path = tmp_path / "bench.json"
    write_json(
        ServingBenchResult(duration_s=10.0, concurrency=8, runs=runs, half_load=result.half_load, streams={}), path
    )
    assert json.loads(path.read_text())["vs_mlflow_serve"] is None


def test_the_bench_finds_the_checkout_it_serves_from() -> None:
    # It starts uvicorn on api.main from the project folder; a wrong parent level (as after a package move) would
    # stop the bench before it measured anything.
    root = bench_repo_root()
    assert (root / "api" / "main.py").is_file() and (root / "include" / "shadowgate").is_dir()


def test_shadow_capacity_is_rendered_against_its_goal_and_written() -> None:
    import dataclasses

    from shadowgate.bench.serving import capacity_aliases

    assert capacity_aliases(1) == ["challenger"]
    assert capacity_aliases(4) == ["challenger", "challenger-b", "challenger-c", "challenger-d"]
    capacity = (
        {"challengers": 1, "closed_loop_rps": 5000.0, "sustained_rps": 4200.0, "p50_ms": 1.1, "p99_ms": 4.0, "shed": 0},
        {"challengers": 4, "closed_loop_rps": 3000.0, "sustained_rps": 1900.0, "p50_ms": 1.5, "p99_ms": 6.0, "shed": 0},
        {"challengers": 8, "closed_loop_rps": 2000.0, "sustained_rps": None, "p50_ms": None, "p99_ms": None,
         "shed": None},
    )  # fmt: skip
    result = dataclasses.replace(_result(), shadow_capacity=capacity)
    text = result.render()
    assert "4 challenger(s) in shadow: 1,900 decisions/s with every shadow score computed" in text
    assert "goal: 4 challengers at >= 2,000/s: 1,900/s   FAIL" in text
    assert "8 challenger(s) in shadow: closed loop 2,000 req/s; nothing-shed rate not reached" in text
    assert result.as_json()["shadow_capacity"] == list(capacity)
