"""HTTP benchmark of the decision API against its baselines, side by side in one run (``make bench-serving``).

Four servers run under the same uvicorn settings (1 worker, no access log, log level warning, loop/http auto), each
as its own process group on a free 127.0.0.1 port, started, measured and stopped one at a time:

* ``shadowgate full``: the API with the champion deciding, two challengers scored in shadow, events to Redis;
* ``shadowgate champion-only``: the same API with no challenger loaded (the shadow overhead is the difference);
* ``mlflow models serve``: MLflow's scoring server with the champion, fed the 38 engineered features (it does not
  even compute features, which favours it);
* ``hello world``: a FastAPI route returning a small JSON: the HTTP ceiling of one uvicorn worker.

Load comes from ``wrk`` (closed loop, ``--latency``, 2 threads) driven by a generated Lua script; the half-load run
paces each connection with a Lua ``delay()``. Everything (MLflow store, Redis, logs, scripts) lives in a temporary
directory removed at the end, and every process started is stopped by its own process group, also on failure or
Ctrl-C. Targets are printed with PASS/FAIL; missing one is a finding, not an error.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from shadowgate.config import SimulationSettings
from shadowgate.local.redis import free_port, redis_argv, wait_until_answering

FULL = "shadowgate full"
FULL_FSYNC_ALWAYS = "shadowgate full, fsync always"
CHAMPION_ONLY = "shadowgate champion-only"
MLFLOW_SERVE = "mlflow models serve"
HELLO_WORLD = "hello world"
SERVERS: tuple[str, ...] = (FULL, FULL_FSYNC_ALWAYS, CHAMPION_ONLY, MLFLOW_SERVE, HELLO_WORLD)
"""Every server, in the order they are measured."""
SHADOWGATE_SERVERS: tuple[str, ...] = (FULL, FULL_FSYNC_ALWAYS, CHAMPION_ONLY)
"""The servers that run shadowgate (their prediction streams are checked)."""
JOURNAL_FSYNC: dict[str, str] = {FULL: "interval", FULL_FSYNC_ALWAYS: "always", CHAMPION_ONLY: "interval"}
"""The journal's fsync policy per shadowgate server: the default (``interval``: survives the death of any process,
loses at most the last interval on a machine crash) and ``always`` (an fsync before every answer: survives a machine
crash too), so that one run prices the stronger guarantee."""

DECISION_PATH = "/v1/bnpl/risk-assessment"
HELLO_PATH = "/hello"
"""Route of ``api.hello`` (the HTTP ceiling; an app of its own so that this package never imports fastapi)."""
MLFLOW_PATH = "/invocations"
CHALLENGER_ALIASES: tuple[str, ...] = ("challenger", "challenger-b")
PREDICTIONS_STREAM = "shadowgate:predictions"

WARMUP_S = 3.0
ROUNDS = 2
"""Closed-loop runs per server, interleaved across servers; the best is reported (all are in the JSON)."""
WRK_THREADS = 2
WRK_TIMEOUT_S = 10
READY_TIMEOUT_S = 180.0
STOP_GRACE_S = 10.0
DRAIN_TIMEOUT_S = 20.0
BENCH_WAIT_S = 45.0
"""Longest wait for a shadow model benched during the warm-up (the service's cool-down is 30 s)."""
CUSTOMERS = 4_000
"""Distinct customer ids the Lua script cycles through (the size of the simulated customer base)."""

TARGETS: dict[str, tuple[str, float]] = {
    "vs_mlflow_serve": (">=", 10.0),
    "vs_hello_world": (">=", 0.5),
    "p99_ms_at_half_load": ("<=", 10.0),
    "shadow_p50_overhead": ("<=", 0.10),
}
"""Name → (comparison, bound) of every headline figure."""


class BenchError(RuntimeError):
    """The benchmark could not produce trustworthy figures (a server failed, wrk missing, non-2xx responses)."""


# ---------------------------------------------------------------------------------------------------- wrk output

_TIME_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_TIME = r"([0-9.]+)(us|ms|s|m|h)"


def _to_ms(value: str, unit: str) -> float:
    return float(value) * _TIME_UNITS_MS[unit]


@dataclass(frozen=True)
class WrkResult:
    """The figures of one wrk run (latencies in milliseconds)."""

    requests: int
    """Responses received (any status)."""
    duration_s: float
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    """Responses with a status ≥ 400 (wrk's "Non-2xx or 3xx responses" line counts those)."""
    connect_errors: int = 0
    read_errors: int = 0
    write_errors: int = 0
    timeouts: int = 0
    sent: int | None = None
    """Requests written, counted by the generated Lua script (includes those still in flight when wrk stopped)."""

    @property
    def ok_responses(self) -> int:
        """Responses with a 2xx (or 3xx) status."""
        return self.requests - self.non_2xx

    @property
    def socket_errors(self) -> int:
        return self.connect_errors + self.read_errors + self.write_errors + self.timeouts


def parse_wrk(text: str) -> WrkResult:
    """Read the figures out of the text wrk prints with ``--latency`` (and our Lua ``done()`` line).

    Raises:
        ValueError: a line the figures need is missing.
    """

    def need(pattern: str) -> re.Match[str]:
        match = re.search(pattern, text, flags=re.MULTILINE)
        if match is None:
            raise ValueError(f"wrk output has no line matching {pattern!r}:\n{text}")
        return match

    total = need(rf"^\s*(\d+) requests in {_TIME}")
    p50 = need(rf"^\s*50(?:\.0+)?%\s+{_TIME}\s*$")
    p99 = need(rf"^\s*99(?:\.0+)?%\s+{_TIME}\s*$")
    rps = need(r"^Requests/sec:\s+([0-9.]+)")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    sent = re.search(r"^bench-sent: (\d+)\s*$", text, flags=re.MULTILINE)
    connect, read, write, timeout = (int(g) for g in errors.groups()) if errors else (0, 0, 0, 0)
    return WrkResult(
        requests=int(total.group(1)),
        duration_s=_to_ms(total.group(2), total.group(3)) / 1e3,
        rps=float(rps.group(1)),
        p50_ms=_to_ms(p50.group(1), p50.group(2)),
        p99_ms=_to_ms(p99.group(1), p99.group(2)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        connect_errors=connect,
        read_errors=read,
        write_errors=write,
        timeouts=timeout,
        sent=int(sent.group(1)) if sent else None,
    )


# ---------------------------------------------------------------------------------------------------- pacing


def pacing_delay_ms(target_rps: float, connections: int, overhead_ms: float = 0.0) -> float:
    """Per-request Lua ``delay()`` so that ``connections`` paced connections offer ``target_rps`` in total.

    wrk has no fixed-rate mode: each connection waits ``delay`` after a response before it sends the next request,
    so one connection cycles every ``delay + overhead`` ms (overhead: the response time plus wrk's own work) and
    the rate is ``connections × 1000 / (delay + overhead)``.
    """
    if target_rps <= 0 or connections < 1:
        raise ValueError("target_rps must be > 0 and connections >= 1")
    return max(0.0, connections * 1000.0 / target_rps - overhead_ms)


def cycle_overhead_ms(achieved_rps: float, connections: int, delay_ms: float) -> float:
    """What a paced run spent per request besides the delay (inverse of :func:`pacing_delay_ms`)."""
    if achieved_rps <= 0:
        raise ValueError("achieved_rps must be > 0")
    return max(0.0, connections * 1000.0 / achieved_rps - delay_ms)


# ---------------------------------------------------------------------------------------------------- Lua script


def lua_script(
    *, path: str, body: str, vary_ids: bool, delay_ms: float | None = None, customers: int = CUSTOMERS
) -> str:
    """The wrk script: POST ``body`` as JSON to ``path``; count requests sent; optionally pace with ``delay()``.

    Args:
        path: request path.
        body: JSON body. With ``vary_ids`` it must be a JSON transaction whose ``transaction_id`` and
            ``customer_id`` values are the placeholders ``@TX@`` and ``@CUS@``: each request then gets a unique
            transaction id and one of ``customers`` customer ids (so assignment and hashing see real variety).
        vary_ids: build a fresh body per request (cheap string formatting) instead of one fixed request.
        delay_ms: mean pause per request and connection (fractional: rounded up or down at random, as wrk takes
            whole milliseconds); None for a closed loop.
        customers: number of distinct customer ids.
    """
    template = body
    if vary_ids:
        if '"@TX@"' not in body or '"@CUS@"' not in body:
            raise ValueError("a varying body needs the @TX@ and @CUS@ placeholders")
        # The body becomes a string.format pattern: escape literal percent signs first.
        template = body.replace("%", "%%").replace('"@TX@"', '"bench-%d-%d"').replace('"@CUS@"', '"cus_%06d"')
    if "]==]" in template or "]==]" in path:
        raise ValueError("body or path contains ']==]' (the Lua long-string delimiter)")
    lines = [
        "-- generated by shadowgate.bench.serving",
        f"local path = [==[{path}]==]",
        f"local template = [==[{template}]==]",
        f"local vary = {'true' if vary_ids else 'false'}",
        f"local customers = {int(customers)}",
        'local headers = {["Content-Type"] = "application/json"}',
        "local threads = {}",
        "local fixed = nil",
        "sent = 0",
        "tid = 0",
        "",
        "function setup(thread)",
        "  table.insert(threads, thread)",
        "  thread:set('tid', #threads)",
        "end",
        "",
        "function request()",
        "  sent = sent + 1",
        "  if vary then",
        "    local body = string.format(template, tid, sent, (tid * 7919 + sent) % customers)",
        "    return wrk.format('POST', path, headers, body)",
        "  end",
        "  if fixed == nil then fixed = wrk.format('POST', path, headers, template) end",
        "  return fixed",
        "end",
        "",
    ]
    if delay_ms is not None:
        # Defining delay() at all switches wrk to paced mode, so it is only emitted for paced runs.
        lines += [
            f"local delay_ms = {float(delay_ms)!r}",
            "function delay()",
            "  local whole = math.floor(delay_ms)",
            "  if math.random() < delay_ms - whole then whole = whole + 1 end",
            "  return whole",
            "end",
            "",
        ]
    lines += [
        "function done(summary, latency, requests)",
        "  local total = 0",
        "  for _, t in ipairs(threads) do total = total + (t:get('sent') or 0) end",
        "  io.write(string.format('bench-sent: %d\\n', total))",
        "end",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Measurement:
    """One wrk run against one server."""

    server: str
    concurrency: int
    wrk: WrkResult
    delay_ms: float | None = None
    """Per-request pause of a paced run (None: closed loop)."""
    target_rps: float | None = None
    """Rate a paced run aimed at."""
    rounds_rps: tuple[float, ...] = ()
    """req/s of every round (the reported run is the best of them)."""

    def as_dict(self) -> dict[str, Any]:
        w = self.wrk
        out: dict[str, Any] = {
            "concurrency": self.concurrency,
            "p50_ms": w.p50_ms,
            "p99_ms": w.p99_ms,
            "rps": w.rps,
            "requests": w.requests,
            "non_2xx": w.non_2xx,
            "socket_errors": w.socket_errors,
            "duration_s": w.duration_s,
            "sent": w.sent,
        }
        if self.rounds_rps:
            out["rounds_rps"] = list(self.rounds_rps)
        if self.delay_ms is not None:
            out["delay_ms"] = self.delay_ms
            out["target_rps"] = self.target_rps
        return out


@dataclass(frozen=True)
class StreamCheck:
    """Prediction events in Redis after a server's runs, against what the server and wrk counted."""

    entries: int
    """``XLEN`` of the predictions stream."""
    server_decisions: int
    """Decisions the service counted (``shadowgate_decisions_total``)."""
    wrk_2xx: int
    """2xx responses wrk received."""
    wrk_sent: int | None
    """Requests wrk wrote (≥ responses: the ones in flight when wrk stopped were still decided and logged, or
    dropped by the server as client disconnects before being read)."""
    dead_lettered: int
    """Journal records that could not become an event (must be 0)."""
    refused: int
    """Requests refused with 503 because the journal was over its limit (the bench's load never should be)."""
    shadow_skipped: int = 0
    """Shadow scores not computed during the measured runs (a challenger benched, or the shadow queue full)."""
    model_failures: int = 0
    """Scoring failures or budget breaches (``timeout``) during the measured runs."""

    @property
    def ok(self) -> bool:
        """Every decision logged exactly once, none dropped, and consistent with what wrk saw."""
        upper = self.wrk_sent if self.wrk_sent is not None else self.wrk_2xx
        consistent = self.entries == self.server_decisions and self.wrk_2xx <= self.entries <= upper
        return consistent and self.dead_lettered == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "stream": PREDICTIONS_STREAM,
            "entries": self.entries,
            "server_decisions": self.server_decisions,
            "wrk_2xx": self.wrk_2xx,
            "wrk_sent": self.wrk_sent,
            "events_dead_lettered": self.dead_lettered,
            "requests_refused": self.refused,
            "shadow_skipped_while_measuring": self.shadow_skipped,
            "model_failures_while_measuring": self.model_failures,
            "ok": self.ok,
        }


@dataclass(frozen=True)
class Ratios:
    """The headline figures."""

    vs_mlflow_serve: float
    """Full shadowgate req/s ÷ ``mlflow models serve`` req/s (closed loop, same concurrency)."""
    vs_hello_world: float
    """Full shadowgate req/s ÷ hello-world req/s, full taken at the highest sustained rate with every shadow score
    computed (see :attr:`ServingBenchResult.sustained`); the closed-loop rate only when no sustained rate qualified."""
    p99_ms_at_half_load: float
    """p99 of full shadowgate paced at half its measured maximum throughput."""
    shadow_p50_overhead: float
    """(full p50 − champion-only p50) ÷ champion-only p50, closed loop at the same concurrency."""

    def as_dict(self) -> dict[str, float]:
        return {
            "vs_mlflow_serve": self.vs_mlflow_serve,
            "vs_hello_world": self.vs_hello_world,
            "p99_ms_at_half_load": self.p99_ms_at_half_load,
            "shadow_p50_overhead": self.shadow_p50_overhead,
        }


def compute_ratios(
    *,
    full: WrkResult,
    champion_only: WrkResult,
    mlflow: WrkResult,
    hello: WrkResult,
    half_load: WrkResult,
    full_sustained: WrkResult | None = None,
) -> Ratios:
    """The headline ratios from the runs (see :class:`Ratios`)."""

    def divide(a: float, b: float) -> float:
        return a / b if b > 0 else math.inf

    return Ratios(
        vs_mlflow_serve=divide(full.rps, mlflow.rps),
        vs_hello_world=divide((full_sustained or full).rps, hello.rps),
        p99_ms_at_half_load=half_load.p99_ms,
        shadow_p50_overhead=divide(full.p50_ms - champion_only.p50_ms, champion_only.p50_ms),
    )


def meets_target(name: str, value: float) -> bool:
    """Whether ``value`` meets the target of figure ``name`` (see :data:`TARGETS`)."""
    comparison, bound = TARGETS[name]
    return value >= bound if comparison == ">=" else value <= bound


@dataclass(frozen=True)
class ServingBenchResult:
    """Every run of one ``bench serving`` invocation, with the ratios and the event-log checks."""

    duration_s: float
    concurrency: int
    runs: tuple[Measurement, ...]
    """The closed-loop run of each server, in :data:`SERVERS` order."""
    half_load: Measurement
    streams: Mapping[str, StreamCheck] = field(default_factory=dict)
    """Server name → prediction-stream check (the shadowgate servers)."""
    shadow_capacity: tuple[dict[str, Any], ...] = ()
    """Per number of challengers in shadow (:data:`SHADOW_COUNTS`): the closed-loop maximum, the highest sustained
    rate with every shadow score computed and nothing shed, and the champion's answer p50/p99 there."""
    sustained: Measurement | None = None
    """Full shadowgate at the highest paced rate (of :data:`SUSTAIN_FRACTIONS` of its max) at which no shadow score
    was shed and the shadow process kept up (lag ≤ :data:`SUSTAIN_MAX_LAG_S` at the end): every request scored by
    every challenger. None when no fraction tried qualified."""

    @property
    def vs_hello_world_sustained(self) -> float | None:
        """Sustained full throughput (no shadow work shed) ÷ hello-world throughput."""
        if self.sustained is None:
            return None
        return self.sustained.wrk.rps / self.run(HELLO_WORLD).wrk.rps

    def run(self, server: str) -> Measurement:
        for m in self.runs:
            if m.server == server:
                return m
        raise KeyError(server)

    @property
    def ratios(self) -> Ratios:
        return compute_ratios(
            full=self.run(FULL).wrk,
            champion_only=self.run(CHAMPION_ONLY).wrk,
            mlflow=self.run(MLFLOW_SERVE).wrk,
            hello=self.run(HELLO_WORLD).wrk,
            half_load=self.half_load.wrk,
            full_sustained=self.sustained.wrk if self.sustained is not None else None,
        )

    @property
    def fsync_always_cost(self) -> dict[str, float] | None:
        """What an fsync before every answer costs against the default policy, closed loop, same run: the
        throughput lost (fraction) and the p50/p99 added (ms). None when the run had no fsync-always server."""
        if not any(m.server == FULL_FSYNC_ALWAYS for m in self.runs):
            return None
        default, always = self.run(FULL).wrk, self.run(FULL_FSYNC_ALWAYS).wrk
        return {
            "throughput_loss": 1.0 - always.rps / default.rps if default.rps > 0 else math.nan,
            "p50_added_ms": always.p50_ms - default.p50_ms,
            "p99_added_ms": always.p99_ms - default.p99_ms,
        }

    @property
    def streams_ok(self) -> bool:
        return all(check.ok for check in self.streams.values())

    def render(self) -> str:
        """The table of runs, the ratios against their targets and the stream checks, as plain text."""
        header = ("server", "concurrency", "p50 ms", "p99 ms", "req/s", "requests", "non-2xx", "req/s of each round")
        rows = [header]
        for m in (*self.runs, self.half_load):
            name = m.server if m.delay_ms is None else f"{m.server} @ half load (paced {m.delay_ms:.1f} ms)"
            w = m.wrk
            rows.append(
                (
                    name,
                    str(m.concurrency),
                    f"{w.p50_ms:.2f}",
                    f"{w.p99_ms:.2f}",
                    f"{w.rps:,.1f}",
                    f"{w.requests:,}",
                    str(w.non_2xx),
                    " / ".join(f"{r:,.0f}" for r in m.rounds_rps),
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = [
            f"serving benchmark: wrk, {WRK_THREADS} threads, best of {ROUNDS} interleaved rounds of "
            f"{self.duration_s:g} s after a {WARMUP_S:g} s warm-up; 1 uvicorn worker each; one server loaded at a time"
        ]
        for r in rows:
            lines.append(
                "  " + "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r))
            )
        if self.half_load.target_rps is not None:
            lines.append(
                f"  half load: target {self.half_load.target_rps:,.1f} req/s, achieved {self.half_load.wrk.rps:,.1f}"
                f" req/s ({self.half_load.wrk.rps / self.half_load.target_rps:.0%} of target)"
            )
        if self.sustained is not None:
            lines.append(
                f"  sustained with every shadow score computed: {self.sustained.wrk.rps:,.1f} req/s "
                f"(paced at {self.sustained.target_rps or 0:,.0f}), p50 {self.sustained.wrk.p50_ms:.2f} ms, "
                f"p99 {self.sustained.wrk.p99_ms:.2f} ms; vs hello world {self.vs_hello_world_sustained:.3f}×"
            )
        else:
            lines.append("  sustained with every shadow score computed: not reached at the rates tried")
        for c in self.shadow_capacity:
            if c["sustained_rps"] is None:
                lines.append(f"  {c['challengers']} challenger(s) in shadow: closed loop {c['closed_loop_rps']:,.0f} "
                             "req/s; nothing-shed rate not reached at the fractions tried")  # fmt: skip
            else:
                lines.append(
                    f"  {c['challengers']} challenger(s) in shadow: {c['sustained_rps']:,.0f} decisions/s with every "
                    f"shadow score computed, nothing shed (closed loop {c['closed_loop_rps']:,.0f}); champion p50 "
                    f"{c['p50_ms']:.2f} ms, p99 {c['p99_ms']:.2f} ms"
                )
        goal_n, goal_rps = CAPACITY_GOAL
        reached = [c for c in self.shadow_capacity if c["challengers"] == goal_n]
        if reached:
            rate = reached[0]["sustained_rps"] or 0.0
            lines.append(f"  goal: {goal_n} challengers at >= {goal_rps:,.0f}/s: {rate:,.0f}/s   "
                         f"{'PASS' if rate >= goal_rps else 'FAIL'}")  # fmt: skip
        cost = self.fsync_always_cost
        if cost is not None:
            lines.append(
                f"  journal fsync always vs interval (default): throughput {-cost['throughput_loss']:+.1%}, "
                f"p50 {cost['p50_added_ms']:+.2f} ms, p99 {cost['p99_added_ms']:+.2f} ms"
            )
        lines.append("ratios")
        units = {"vs_mlflow_serve": "×", "vs_hello_world": "×", "p99_ms_at_half_load": " ms", "shadow_p50_overhead": ""}
        for name, value in self.ratios.as_dict().items():
            comparison, bound = TARGETS[name]
            verdict = "PASS" if meets_target(name, value) else "FAIL"
            unit = units[name]
            lines.append(f"  {name:<22} {value:>9.3f}{unit:<3} target {comparison} {bound:g}{unit.strip()}   {verdict}")
        for server, check in self.streams.items():
            sent = "?" if check.wrk_sent is None else f"{check.wrk_sent:,}"
            lines.append(
                f"  {server}: {PREDICTIONS_STREAM} holds {check.entries:,} entries; the service decided "
                f"{check.server_decisions:,}; wrk got {check.wrk_2xx:,} 2xx of {sent} sent; "
                f"dead-lettered {check.dead_lettered}, refused {check.refused}   {'OK' if check.ok else 'MISMATCH'}"
            )
            if check.shadow_skipped or check.model_failures:
                lines.append(
                    f"  {server}: WARNING {check.shadow_skipped:,} shadow scores skipped and {check.model_failures:,} "
                    "model failures/budget breaches while measuring: the shadow work measured was incomplete"
                )
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        """The figures for ``BENCH_JSON``: the four ratios at top level, then targets, raw runs and checks."""
        ratios = self.ratios.as_dict()
        return {
            **ratios,
            "targets": {name: f"{c} {b:g}" for name, (c, b) in TARGETS.items()},
            "pass": {name: meets_target(name, value) for name, value in ratios.items()},
            "servers": {m.server: m.as_dict() for m in self.runs},
            "half_load": {"server": self.half_load.server, **self.half_load.as_dict()},
            "sustained_rps": self.sustained.wrk.rps if self.sustained is not None else None,
            "shadow_capacity": list(self.shadow_capacity),
            "vs_hello_world_sustained": self.vs_hello_world_sustained,
            "vs_hello_world_closed_loop": self.run(FULL).wrk.rps / self.run(HELLO_WORLD).wrk.rps,
            "journal_fsync": {server: JOURNAL_FSYNC[server] for server in SHADOWGATE_SERVERS},
            "fsync_always_cost": self.fsync_always_cost,
            "streams": {server: check.as_dict() for server, check in self.streams.items()},
            "settings": {
                "duration_s": self.duration_s,
                "warmup_s": WARMUP_S,
                "concurrency": self.concurrency,
                "rounds": ROUNDS,
                "wrk_threads": WRK_THREADS,
                "uvicorn": "1 worker, --no-access-log, --log-level warning, --loop auto, --http auto",
            },
        }


class _Figures(Protocol):
    def as_json(self) -> dict[str, Any]: ...


def write_json(result: _Figures, path: Path) -> None:
    """Write a benchmark's ``as_json()`` figures to ``path`` (parents created; NaN/inf as null), for ``BENCH_JSON``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(result.as_json()), indent=2, allow_nan=False) + "\n")


def _finite(value: Any) -> Any:
    """``value`` with every infinite or NaN float (a ratio over a baseline of 0 req/s) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------------- processes


class _Group:
    """One process started in its own session (process group), logging to a file, stopped by its group id."""

    def __init__(self, name: str, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, log: Path) -> None:
        self.name = name
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pgid = self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def _group_alive(self) -> bool:
        self.process.poll()  # reap the leader, else its zombie keeps the group "alive"
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # the group id was reused by someone else's processes: ours are gone
            return False
        return True

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM the group, SIGKILL what is left after ``grace_s``; returns once no process of it remains."""
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            if not self._group_alive():
                return
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, sig)
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                if not self._group_alive():
                    return
                time.sleep(0.05)
        if self._group_alive():
            raise BenchError(f"{self.name} (process group {self.pgid}) survived SIGKILL")


def _http(method: str, url: str, body: bytes | None = None, timeout_s: float = 5.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read()


def _wait_ready(
    group: _Group, url: str, *, method: str = "GET", body: bytes | None = None, timeout_s: float = READY_TIMEOUT_S
) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if not group.alive:
            raise BenchError(f"{group.name} exited with code {group.process.returncode}:\n{group.log_tail()}")
        try:
            status, content = _http(method, url, body, timeout_s=2.0)
            if status == 200:
                return
            last = f"HTTP {status}: {content[:200]!r}"
            if 400 <= status < 500:  # a wrong URL or body never becomes ready: say so now
                raise BenchError(f"{group.name} answers {last} to the readiness request {method} {url}")
        except (OSError, urllib.error.URLError) as error:
            last = str(error)
        time.sleep(0.25)
    raise BenchError(f"{group.name} not ready after {timeout_s:g} s ({last}):\n{group.log_tail()}")


def ensure_wrk(echo: Callable[[str], None] = print) -> str:
    """The wrk executable; installed with apt-get when missing and running as root, else a clear error."""
    found = shutil.which("wrk")
    if found is not None:
        return found
    if os.geteuid() != 0:
        raise BenchError("wrk is not installed: run `sudo apt-get install -y --no-install-recommends wrk`")
    echo("wrk missing: apt-get install -y --no-install-recommends wrk")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "wrk"]
    if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
        # A fresh container may have no package lists yet.
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=False)
        done = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BenchError(f"could not install wrk with apt-get:\n{done.stderr[-2000:]}")
    found = shutil.which("wrk")
    if found is None:
        raise BenchError("apt-get reported success but wrk is not on PATH")
    return found


# ---------------------------------------------------------------------------------------------------- the run


def _repo_root() -> Path:
    """The project folder (``api/`` is imported from there by uvicorn; it is not an installed package)."""
    root = Path(__file__).resolve().parents[3]
    if not (root / "api" / "main.py").is_file():
        raise BenchError(f"api/main.py not found under {root}: run from a source checkout (pip install -e .)")
    return root


def _server_env(base: Path, repo_root: Path) -> dict[str, str]:
    """The environment every server gets: the caller's, minus any SHADOWGATE_*/MLFLOW_* settings, venv first on PATH.

    The caller's own settings (e.g. a SHADOWGATE_REDIS_URL pointing at the stack's Redis) must not leak in.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHADOWGATE_", "MLFLOW_", "UVICORN_"))}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(repo_root), env.get("PYTHONPATH", "")) if p)
    env["TMPDIR"] = str(base / "tmp")
    # MLflow's scoring server starts uvicorn itself; these give it the same settings as ours.
    env.update(
        {
            "UVICORN_ACCESS_LOG": "false",
            "UVICORN_LOG_LEVEL": "warning",
            "UVICORN_LOOP": "auto",
            "UVICORN_HTTP": "auto",
        }
    )
    return env


def _uvicorn_argv(target: str, port: int) -> list[str]:
    return [
        str(Path(sys.executable).parent / "uvicorn"), target, "--factory",
        "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1", "--no-access-log", "--log-level", "warning", "--loop", "auto", "--http", "auto",
    ]  # fmt: skip


def _train_registry(base: Path, echo: Callable[[str], None]) -> str:
    """Simulate a small world and register @champion, @challenger and @challenger-b in a SQLite store under ``base``."""
    import mlflow

    from shadowgate.config import MLflowSettings, TrainingSettings, WarehouseSettings
    from shadowgate.local.bootstrap import history_as_of
    from shadowgate.simulation import simulate
    from shadowgate.storage.deployments import WarehouseDeploymentLog
    from shadowgate.training.train import ModelKind, train_and_register

    root = base / "mlflow"
    root.mkdir(parents=True)
    settings = MLflowSettings(tracking_uri=f"sqlite:///{root / 'mlflow.db'}", training_experiment="bench-serving")
    simulation = SimulationSettings(transactions=40_000, customers=4_000, seed=5)
    world = simulate(simulation)
    mlflow.set_tracking_uri(settings.tracking_uri)
    # An explicit artifact location: the default would be ./mlruns in the working directory.
    mlflow.create_experiment(settings.training_experiment, artifact_location=str(root / "artifacts"))
    for kind, alias in (
        (ModelKind.SCORECARD, "champion"),
        (ModelKind.GRADIENT_BOOSTING, CHALLENGER_ALIASES[0]),
        (ModelKind.GRADIENT_BOOSTING, CHALLENGER_ALIASES[1]),
    ):
        result = train_and_register(
            transactions=world.transactions,
            outcomes=world.outcomes,
            kind=kind,
            as_of=history_as_of(simulation),
            alias=alias,
            training=TrainingSettings(reference_rows=200),
            mlflow_settings=settings,
            deployments=WarehouseDeploymentLog.from_settings(
                WarehouseSettings(duckdb_path=root / "deployments.duckdb"), home=base
            ),
            actor="shadowgate bench",
        )
        echo(f"  registered {kind.value} v{result.model_version} @{alias} (valid AUC {result.metrics.auc:.3f})")
    return settings.tracking_uri


def _bodies() -> tuple[str, str]:
    """(transaction body with @TX@/@CUS@ placeholders, MLflow ``dataframe_split`` body of its features)."""
    from shadowgate.contract import example_transaction, request_model
    from shadowgate.features import FEATURE_NAMES, features_one

    transaction = example_transaction()
    parsed = request_model().model_validate(transaction).model_dump()
    features = features_one(parsed)
    templated = {**transaction, "transaction_id": "@TX@", "customer_id": "@CUS@"}
    mlflow_body = {"dataframe_split": {"columns": list(FEATURE_NAMES), "data": [features]}}
    return json.dumps(templated, separators=(",", ":")), json.dumps(mlflow_body, separators=(",", ":"))


class _Runner:
    """Runs wrk against one server at a time and keeps the raw outputs next to the logs."""

    def __init__(self, wrk: str, base: Path, duration_s: float, concurrency: int) -> None:
        self.wrk = wrk
        self.base = base
        self.duration_s = duration_s
        self.concurrency = concurrency
        self._n = 0

    def run(self, group: _Group, url: str, script: str, *, duration_s: float) -> WrkResult:
        self._n += 1
        script_path = self.base / "wrk" / f"{self._n:02d}.lua"
        script_path.parent.mkdir(parents=True, exist_ok=True)
        script_path.write_text(script)
        threads = min(WRK_THREADS, self.concurrency)
        argv = [
            self.wrk, f"-t{threads}", f"-c{self.concurrency}", f"-d{max(1, round(duration_s))}s", "--latency",
            f"--timeout={WRK_TIMEOUT_S}s", "-s", str(script_path), url,
        ]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 60, check=False)
        script_path.with_suffix(".out").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise BenchError(f"wrk failed ({done.returncode}) against {group.name}:\n{done.stdout}\n{done.stderr}")
        result = parse_wrk(done.stdout)
        if result.non_2xx or result.socket_errors or result.requests == 0:
            raise BenchError(
                f"{group.name}: {result.non_2xx} non-2xx responses, {result.socket_errors} socket errors, "
                f"{result.requests} responses in total — figures would be meaningless.\nwrk:\n{done.stdout}\n"
                f"server log:\n{group.log_tail()}"
            )
        if not group.alive:
            raise BenchError(f"{group.name} died during the load:\n{group.log_tail()}")
        return result


def _metric_sum(text: str, name: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


def _shadow_counters(base_url: str) -> tuple[int, int]:
    """(shadow scores skipped, model failures) the service has counted so far."""
    _, raw = _http("GET", f"{base_url}/metrics")
    text = raw.decode()
    return (
        int(_metric_sum(text, "shadowgate_shadow_skipped_total")),
        int(_metric_sum(text, "shadowgate_model_failures_total")),
    )


def _wait_unbenched(base_url: str, echo: Callable[[str], None]) -> None:
    """Wait until no shadow model sits out a cool-down, so that the measured runs score every challenger."""
    deadline = time.monotonic() + BENCH_WAIT_S
    while time.monotonic() < deadline:
        _, raw = _http("GET", f"{base_url}/v1/models")
        benched = json.loads(raw).get("benched") or {}
        if not benched:
            return
        echo(f"  benched after the warm-up: {benched}; waiting for the cool-down to end")
        time.sleep(min(max(float(v) for v in benched.values()) + 0.5, BENCH_WAIT_S))
    raise BenchError(f"a shadow model is still benched after {BENCH_WAIT_S:g} s: the full run would not be full")


def _stream_check(
    base_url: str, redis_url: str, wrk_2xx: int, wrk_sent: int | None, counters_before: tuple[int, int] = (0, 0)
) -> StreamCheck:
    """Wait until the service has drained its queues into Redis (or ``DRAIN_TIMEOUT_S``), then compare counts."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while True:
            _, raw = _http("GET", f"{base_url}/metrics")
            text = raw.decode()
            decisions = int(_metric_sum(text, "shadowgate_decisions_total"))
            entries = int(client.xlen(PREDICTIONS_STREAM))
            pending = _metric_sum(text, "shadowgate_journal_pending_bytes")
            if (entries == decisions and pending == 0) or time.monotonic() > deadline:
                return StreamCheck(
                    entries=entries,
                    server_decisions=decisions,
                    wrk_2xx=wrk_2xx,
                    wrk_sent=wrk_sent,
                    dead_lettered=int(_metric_sum(text, "shadowgate_events_dead_lettered_total")),
                    refused=int(_metric_sum(text, "shadowgate_journal_refused_total")),
                    shadow_skipped=int(_metric_sum(text, "shadowgate_shadow_skipped_total")) - counters_before[0],
                    model_failures=int(_metric_sum(text, "shadowgate_model_failures_total")) - counters_before[1],
                )
            time.sleep(0.2)
    finally:
        client.close()


def run_serving_bench(
    *,
    duration_s: float = 10.0,
    concurrency: int = 8,
    keep: bool = False,
    echo: Callable[[str], None] = print,
) -> ServingBenchResult:
    """Set up, measure the four servers one at a time, clean up (see the module docstring).

    Args:
        duration_s: length of each measured wrk run (after a 3 s warm-up).
        concurrency: wrk connections of the closed-loop runs (and of the paced run).
        keep: keep the temporary directory (logs, wrk scripts and outputs, MLflow store) and print where it is.
        echo: where progress lines go.

    Raises:
        BenchError: wrk missing, a server failed to start or died, non-2xx responses or socket errors.
    """
    if duration_s < 1 or concurrency < 1:
        raise BenchError("duration must be >= 1 s and concurrency >= 1")
    repo_root = _repo_root()
    wrk = ensure_wrk(echo)
    base = Path(tempfile.mkdtemp(prefix="shadowgate-bench-serving-"))
    groups: list[_Group] = []
    with _sigterm_as_exit():
        return _measure_all(base, groups, wrk, repo_root, duration_s, concurrency, keep, echo)


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM (``timeout``, a CI cancel) into SystemExit so that the ``finally`` cleanup runs as on Ctrl-C."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _measure_all(
    base: Path,
    groups: list[_Group],
    wrk: str,
    repo_root: Path,
    duration_s: float,
    concurrency: int,
    keep: bool,
    echo: Callable[[str], None],
) -> ServingBenchResult:
    try:
        (base / "tmp").mkdir()
        echo(f"setup in {base}: simulating 40,000 purchases and training 3 models")
        tracking_uri = _train_registry(base, echo)
        env = _server_env(base, repo_root)
        _, redis_port = start_private_redis(base, env=env, started=groups)
        echo(f"  private redis-server on 127.0.0.1:{redis_port}")

        transaction_body = _bodies()[0]
        runner = _Runner(wrk, base, duration_s, concurrency)
        started: dict[str, _Started] = {}
        for server in SERVERS:
            port = free_port()
            # One Redis database per server: each service's stream is checked against its own counts.
            redis_url = f"redis://127.0.0.1:{redis_port}/{SERVERS.index(server)}"
            spec = _spec(server, port=port, base=base, env=env, redis_url=redis_url, tracking_uri=tracking_uri)
            argv, server_env, script, (ready_method, ready_url, ready_body), target = spec
            echo(f"{server}: starting on 127.0.0.1:{port}, then a {WARMUP_S:g} s warm-up")
            log = base / "logs" / f"{server.replace(' ', '-')}.log"
            group = _Group(server, argv, env=server_env, cwd=base / "tmp", log=log)
            groups.append(group)
            _wait_ready(group, ready_url, method=ready_method, body=ready_body)
            one = _Started(group, f"http://127.0.0.1:{port}", target, script, redis_url)
            one.outputs.append(runner.run(group, target, script, duration_s=WARMUP_S))
            if server in SHADOWGATE_SERVERS:
                # A challenger benched during the warm-up (its first, cold calls) would sit out the measured runs.
                _wait_unbenched(one.url, echo)
                one.counters_before = _shadow_counters(one.url)
            started[server] = one
        # Rounds interleave the servers so that a slow spell of the (shared) machine hits all of them alike;
        # each server's best round is kept (noise only ever slows a run down).
        for round_no in range(1, ROUNDS + 1):
            for server, one in started.items():
                result = runner.run(one.group, one.target, one.script, duration_s=duration_s)
                one.outputs.append(result)
                one.rounds.append(result)
                echo(
                    f"  round {round_no} {server}, c={concurrency}: p50 {result.p50_ms:.2f} ms, "
                    f"p99 {result.p99_ms:.2f} ms, {result.rps:,.1f} req/s"
                )
        runs = tuple(
            Measurement(
                server,
                concurrency,
                max(one.rounds, key=lambda r: r.rps),
                rounds_rps=tuple(r.rps for r in one.rounds),
            )
            for server, one in started.items()
        )
        full = started[FULL]
        half_load, paced = _half_load(runner, full.group, full.target, transaction_body, runs[0].wrk.rps, concurrency)
        full.outputs.extend(paced)
        w = half_load.wrk
        echo(f"  half load {FULL}: {w.rps:,.1f} req/s (target {half_load.target_rps:,.1f}), p99 {w.p99_ms:.2f} ms")
        sustained, tried = _sustained(runner, full, transaction_body, runs[0].wrk.rps, concurrency, echo)
        full.outputs.extend(tried)
        streams: dict[str, StreamCheck] = {}
        for server in SHADOWGATE_SERVERS:
            one = started[server]
            sent = [o.sent for o in one.outputs]
            streams[server] = check = _stream_check(
                one.url,
                one.redis_url,
                wrk_2xx=sum(o.ok_responses for o in one.outputs),
                wrk_sent=None if None in sent else sum(s or 0 for s in sent),
                counters_before=one.counters_before,
            )
            echo(f"  {server}: stream {check.entries:,} entries, {check.server_decisions:,} decisions, ok={check.ok}")
        for measured in started.values():
            measured.group.stop()  # the capacity runs get the machine to themselves
        capacity = _shadow_capacity(
            runner, base, env, tracking_uri, redis_port, transaction_body, concurrency, groups, echo
        )
        return ServingBenchResult(
            duration_s=duration_s,
            concurrency=concurrency,
            runs=runs,
            half_load=half_load,
            streams=streams,
            sustained=sustained,
            shadow_capacity=tuple(capacity),
        )
    finally:
        errors = []
        for group in reversed(groups):
            try:
                group.stop()
            except BenchError as error:
                errors.append(str(error))
        if keep:
            echo(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
        if errors:
            echo("cleanup: " + "; ".join(errors))


def _shadow_capacity(
    runner: _Runner,
    base: Path,
    env: Mapping[str, str],
    tracking_uri: str,
    redis_port: int,
    body: str,
    concurrency: int,
    groups: list[_Group],
    echo: Callable[[str], None],
) -> list[dict[str, Any]]:
    """For each count of :data:`SHADOW_COUNTS`: one full server with that many challengers (aliases on the two trained
    challenger versions, alternately), its closed-loop maximum, then the highest paced rate at which no shadow score
    is shed and the shadow process keeps up."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    model = "bnpl_default"
    versions = [client.get_model_version_by_alias(model, alias).version for alias in CHALLENGER_ALIASES]
    for i, alias in enumerate(capacity_aliases(max(SHADOW_COUNTS))):
        client.set_registered_model_alias(model, alias, versions[i % len(versions)])
    out: list[dict[str, Any]] = []
    for k, n in enumerate(SHADOW_COUNTS):
        port = free_port()
        redis_url = f"redis://127.0.0.1:{redis_port}/{8 + k}"
        server_env = {
            **env,
            "SHADOWGATE_HOME": str(base / "home" / f"capacity-{n}"),
            "SHADOWGATE_REDIS_URL": redis_url,
            "SHADOWGATE_MLFLOW_TRACKING_URI": tracking_uri,
            "SHADOWGATE_SERVING_CHALLENGER_ALIASES": json.dumps(capacity_aliases(n)),
            "SHADOWGATE_SERVING_CUSTOMER_SALT": "bench-salt",
        }
        name = f"shadowgate, {n} challenger(s)"
        group = _Group(name, _uvicorn_argv("api.main:create_app", port), env=server_env, cwd=base / "tmp",
                       log=base / "logs" / f"capacity-{n}.log")  # fmt: skip
        groups.append(group)
        url = f"http://127.0.0.1:{port}"
        target = f"{url}{DECISION_PATH}"
        script = lua_script(path=DECISION_PATH, body=body, vary_ids=True)
        echo(f"{name}: starting on 127.0.0.1:{port}")
        try:
            _wait_ready(group, f"{url}/health/ready")
            runner.run(group, target, script, duration_s=WARMUP_S)
            _wait_unbenched(url, echo)
            closed = runner.run(group, target, script, duration_s=runner.duration_s)
            one = _Started(group, url, target, script, redis_url)
            sustained, _ = _sustained(runner, one, body, closed.rps, concurrency, echo, fractions=CAPACITY_FRACTIONS)
        finally:
            group.stop()
        w = sustained.wrk if sustained is not None else None
        out.append(
            {
                "challengers": n,
                "closed_loop_rps": closed.rps,
                "sustained_rps": w.rps if w is not None else None,
                "p50_ms": w.p50_ms if w is not None else None,
                "p99_ms": w.p99_ms if w is not None else None,
                "shed": 0 if w is not None else None,
            }
        )
        echo(f"  {name}: closed loop {closed.rps:,.0f}/s; nothing shed at {w.rps if w else 0:,.0f}/s")
    return out


@dataclass
class _Started:
    """A running server, what to load it with, and every wrk result against it (for the stream check)."""

    group: _Group
    url: str
    target: str
    script: str
    redis_url: str
    outputs: list[WrkResult] = field(default_factory=list)
    rounds: list[WrkResult] = field(default_factory=list)
    counters_before: tuple[int, int] = (0, 0)
    """Shadow skips and model failures counted before the measured runs."""


_Spec = tuple[list[str], dict[str, str], str, tuple[str, str, bytes | None], str]


def _spec(server: str, *, port: int, base: Path, env: Mapping[str, str], redis_url: str, tracking_uri: str) -> _Spec:
    """(argv, environment, wrk script, readiness request (method, URL, body), load URL) of one server."""
    transaction_body, mlflow_body = _bodies()
    url = f"http://127.0.0.1:{port}"
    server_env = dict(env)
    if server in SHADOWGATE_SERVERS:
        challengers = [] if server == CHAMPION_ONLY else list(CHALLENGER_ALIASES)
        server_env.update(
            {
                "SHADOWGATE_HOME": str(base / "home" / server.replace(" ", "-")),
                "SHADOWGATE_REDIS_URL": redis_url,
                "SHADOWGATE_MLFLOW_TRACKING_URI": tracking_uri,
                "SHADOWGATE_SERVING_CHALLENGER_ALIASES": json.dumps(challengers),
                "SHADOWGATE_SERVING_CUSTOMER_SALT": "bench-salt",
                "SHADOWGATE_SERVING_JOURNAL_FSYNC": JOURNAL_FSYNC[server],
            }
        )
        script = lua_script(path=DECISION_PATH, body=transaction_body, vary_ids=True)
        return (
            _uvicorn_argv("api.main:create_app", port),
            server_env,
            script,
            ("GET", f"{url}/health/ready", None),
            f"{url}{DECISION_PATH}",
        )
    if server == MLFLOW_SERVE:
        server_env["MLFLOW_TRACKING_URI"] = tracking_uri
        argv = [
            str(Path(sys.executable).parent / "mlflow"), "models", "serve",
            "-m", "models:/bnpl_default@champion", "--env-manager", "local",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ]  # fmt: skip
        script = lua_script(path=MLFLOW_PATH, body=mlflow_body, vary_ids=False)
        return argv, server_env, script, ("GET", f"{url}/ping", None), f"{url}{MLFLOW_PATH}"
    if server == HELLO_WORLD:
        script = lua_script(path=HELLO_PATH, body=transaction_body, vary_ids=True)
        return (
            _uvicorn_argv("api.hello:create_app", port),
            server_env,
            script,
            ("POST", f"{url}{HELLO_PATH}", b"{}"),
            f"{url}{HELLO_PATH}",
        )
    raise ValueError(f"unknown server {server!r}")


def start_private_redis(
    base: Path, *, env: Mapping[str, str] | None = None, started: list[_Group] | None = None
) -> tuple[_Group, int]:
    """A redis-server of its own on 127.0.0.1 (a free port, data under ``base/redis``, nothing persisted), up and
    answering; stop it with ``.stop()`` (by its process group). ``started`` gets it before the wait, so a caller's
    cleanup stops it even when it never answers."""
    port = free_port()
    data = base / "redis"
    data.mkdir(parents=True, exist_ok=True)
    group = _Group(
        "redis-server", redis_argv(port, data), env=env or os.environ, cwd=data, log=base / "logs" / "redis.log"
    )
    if started is not None:
        started.append(group)
    try:
        if not wait_until_answering(port, alive=lambda: group.alive):
            raise BenchError(f"redis-server not answering on {port}:\n{group.log_tail()}")
    except BaseException:
        if started is None:
            group.stop()
        raise
    return group, port


def _wait_shadow_idle(base_url: str) -> None:
    """Wait until the shadow process has handled every request (a backlog from one run would burden the next)."""
    deadline = time.monotonic() + BENCH_WAIT_S
    while time.monotonic() < deadline:
        _, raw = _http("GET", f"{base_url}/metrics")
        if _metric_sum(raw.decode(), "shadowgate_journal_pending_bytes") == 0:
            return
        time.sleep(0.2)


def _sustained(
    runner: _Runner,
    one: _Started,
    body: str,
    max_rps: float,
    concurrency: int,
    echo: Callable[[str], None],
    fractions: Sequence[float] | None = None,
) -> tuple[Measurement | None, list[WrkResult]]:
    """The highest paced rate (a fraction of ``max_rps``) at which the full service sheds no shadow score and keeps up.

    At saturation the service keeps decisions fast by shedding shadow work (counted as skipped); the throughput that
    includes *all* the challenger scoring is the one to compare. Tries :data:`SUSTAIN_FRACTIONS`, highest first.
    """
    tried: list[WrkResult] = []
    for fraction in fractions or SUSTAIN_FRACTIONS:
        _wait_shadow_idle(one.url)
        before = _shadow_counters(one.url)
        measurement, runs = _paced(runner, one.group, one.target, body, max_rps * fraction, concurrency)
        result = measurement.wrk
        tried.extend(runs)
        # A shadow process that falls behind would shed on a longer run: the wait of its latest batch tells.
        _, raw = _http("GET", f"{one.url}/metrics")
        lag = _metric_sum(raw.decode(), "shadowgate_shadow_lag_seconds")
        _wait_shadow_idle(one.url)
        after = _shadow_counters(one.url)
        shed = after[0] - before[0]
        echo(
            f"  sustain {fraction:.0%} of max: {result.rps:,.1f} req/s, {shed:,} shadow scores shed, "
            f"shadow lag at the end {lag * 1e3:,.0f} ms"
        )
        if shed == 0 and lag <= SUSTAIN_MAX_LAG_S and after[1] == before[1]:
            return measurement, tried
    return None, tried


SUSTAIN_FRACTIONS = (0.95, 0.9, 0.8, 0.7, 0.6, 0.5)

SHADOW_COUNTS = (1, 2, 4, 8)
"""Challengers in shadow for the capacity figures (``shadow_capacity``)."""

CAPACITY_FRACTIONS = (0.95, 0.85, 0.75, 0.65, 0.55, 0.45, 0.35, 0.25, 0.15)
"""Fractions of the closed-loop maximum tried for each shadow count, highest first."""

CAPACITY_GOAL = (4, 2_000.0)
"""The goal: 4 challengers in shadow at ≥ 2,000 decisions/s with nothing shed."""


def capacity_aliases(n: int) -> list[str]:
    """The challenger aliases of ``n`` challengers: ``challenger``, then ``challenger-b``, ``challenger-c`` …"""
    return ["challenger", *(f"challenger-{chr(ord('b') + i)}" for i in range(n - 1))]


"""Fractions of the closed-loop maximum tried, highest first, for the sustained (nothing shed) throughput."""

SUSTAIN_MAX_LAG_S = 0.25
"""Longest a request of the last shadow batch may have waited when a sustained run ends: keeping up means a few ms
(one micro-batch window); a growing wait means the shadow process is falling behind and would shed on a longer run."""


def _paced(
    runner: _Runner, group: _Group, url: str, body: str, target_rps: float, concurrency: int
) -> tuple[Measurement, list[WrkResult]]:
    """Pace the server at ``target_rps``: a calibration run measures the per-request overhead, then the run.

    Returns the measurement and every wrk result (for the stream check).
    """
    first = pacing_delay_ms(target_rps, concurrency)
    calibration = runner.run(
        group, url, lua_script(path=DECISION_PATH, body=body, vary_ids=True, delay_ms=first), duration_s=WARMUP_S
    )
    delay = pacing_delay_ms(target_rps, concurrency, cycle_overhead_ms(calibration.rps, concurrency, first))
    script = lua_script(path=DECISION_PATH, body=body, vary_ids=True, delay_ms=delay)
    result = runner.run(group, url, script, duration_s=runner.duration_s)
    measurement = Measurement(group.name, concurrency, result, delay_ms=delay, target_rps=target_rps)
    return measurement, [calibration, result]


def _half_load(
    runner: _Runner, group: _Group, url: str, body: str, max_rps: float, concurrency: int
) -> tuple[Measurement, list[WrkResult]]:
    """Pace the server at half ``max_rps``."""
    return _paced(runner, group, url, body, max_rps / 2, concurrency)
