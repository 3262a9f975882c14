"""The shadow process: shadow scoring, metrics and event logging beside the API process, off its core and its GIL.

The API process decides; for every request it appends one small frame (see :func:`shadowgate.serving.shadow.
encode_prediction`) to an in-process deque — a few µs, no I/O, no lock. A writer thread batches the frames into one
pipe write every millisecond or so. The shadow process (a child started from a ``forkserver``) reads them, scores every
other model in micro-batches, counts the Prometheus metrics, builds the prediction events and owns the
:class:`~shadowgate.serving.eventlog.EventLog` (Redis Streams, spill file, replay). Outcome events and control frames
(flush, stop) travel down the same pipe, so everything stays in order; new model generations are sent down it
(pickled) before the first frame that uses them.

Why a process: in one process the shadow thread and the event-log writer compete with the request loop for the GIL;
measured on this 2-core machine, logging alone halved the champion-only throughput (10,000 → 5,400 req/s).

The child reports back (a pickled :class:`SidecarReport`) every :data:`REPORT_INTERVAL_S` and after each flush: its
event-log counters, its Prometheus exposition, the shadow comparison and the benched models. ``/metrics`` serves the
API process's own metrics followed by the child's last exposition.

Failure handling:

- The child dies (killed, crashed): the writer thread notices (broken pipe or end of the report pipe), starts a new
  child, sends it the current models and goes on; frames the dead child had received but not reported as processed
  are counted as *possibly lost* (``shadowgate_shadow_frames_lost``; most were usually written already — the event
  log's dedup markers make any re-send harmless).
- The child hangs (a challenger that never returns): when frames are waiting and no report arrives for
  ``stall_timeout_s``, the child is killed and replaced, with every challenger benched for a cool-down.
- The child cannot keep up: it sheds shadow scoring (see :data:`shadowgate.serving.shadow.MAX_LAG_S`) and still logs
  every event; if even that falls behind and ``max_pending`` frames wait in the API process, the request path waits
  for room (back-pressure, counted) rather than drop a record.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import itertools
import logging
import multiprocessing
import os
import pickle
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from shadowgate.registry import CHAMPION
from shadowgate.serving.eventlog import EventLog, EventLogStats
from shadowgate.serving.metrics import ServingMetrics
from shadowgate.serving.models import ModelSnapshot
from shadowgate.serving.policies import DecisionPolicy
from shadowgate.serving.shadow import BENCH_COOLDOWN_S, ShadowJob, ShadowWorker

logger = logging.getLogger(__name__)

REPORT_INTERVAL_S = 0.5
"""How often an idle or busy child reports its counters."""

WRITE_LINGER_S = 0.001
"""How long the writer thread lets frames gather after waking (fewer, larger pipe writes)."""

BATCH_WINDOW_S = 0.005
"""How long the child gathers frames after the first one before scoring them together."""

BATCH_MAX = 256
"""Largest shadow micro-batch."""

START_TIMEOUT_S = 60.0
"""How long ``start`` waits for the child's first report."""

PIPE_BYTES = 1 << 20
"""Kernel buffer of the frame pipe (the default maximum an unprivileged process may ask for)."""

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)

_EVENT_FRAMES = (b'{"k":"p', b'{"k":"e')
"""How prediction and outcome frames start (orjson writes keys in insertion order, without spaces)."""

_MODELS = b"M"
_FRAMES = b"F"


@dataclass(frozen=True)
class SidecarConfig:
    """What the shadow process needs (picklable: it crosses to the child)."""

    redis_url: str
    spill_dir: Path
    event_queue_size: int
    customer_salt: str
    predictions_stream: str
    budget_ms: float
    policy: DecisionPolicy
    report_interval_s: float = REPORT_INTERVAL_S


@dataclass(frozen=True)
class SidecarReport:
    """The child's state, as last reported."""

    pid: int
    ack: int
    """Sequence number of the last flush completed (0: none)."""
    processed: int
    """Frames (predictions and outcome events) of this child whose event is in Redis or in the spill file."""
    event_log: EventLogStats
    metrics: bytes
    comparison: dict[str, dict[str, float | int | None]] = field(default_factory=dict)
    benched: dict[str, float] = field(default_factory=dict)


class SidecarError(RuntimeError):
    """The shadow process could not be started."""


def _context() -> Any:
    context = multiprocessing.get_context("forkserver")
    # The fork server imports these once; every child forked from it starts with them loaded (~10 ms, not ~1 s).
    context.set_forkserver_preload(["shadowgate.serving.sidecar"])
    return context


class Sidecar:
    """The API process's end of the shadow process. ``put`` is the only call on the request path.

    Args:
        config: the child's settings.
        max_pending: frames the API process may hold before the request path waits for the child.
        stall_timeout_s: a child with work that reports nothing for this long is killed and replaced.
    """

    def __init__(self, config: SidecarConfig, *, max_pending: int, stall_timeout_s: float = 30.0) -> None:
        self.config = config
        self.max_pending = max_pending
        self.stall_timeout_s = stall_timeout_s
        self.restarts = 0
        self.frames_lost = 0
        self.backpressure_waits = 0
        self._next_backpressure_log = 0.0
        self._pending: collections.deque[bytes] = collections.deque()
        self._wake = threading.Event()
        self._reports = threading.Condition()
        self._report: SidecarReport | None = None
        self._report_at = 0.0
        self._acked = 0
        self._seq = itertools.count(1)
        self._models: bytes | None = None
        self._models_generation = -1
        self._models_lock = threading.Lock()
        self._sent = 0  # frames sent to the current child
        self._process: Any = None
        self._outbox: Connection | None = None
        self._dead = threading.Event()
        self._closing = False
        self._writer: threading.Thread | None = None
        self._reader: threading.Thread | None = None

    # ------------------------------------------------------------------------------------------------ request path

    def put(self, frame: bytes) -> None:
        """Queue one frame for the child (never blocks unless ``max_pending`` frames are already waiting)."""
        pending = self._pending
        if len(pending) >= self.max_pending:
            self._wait_for_room()
        pending.append(frame)
        if not self._wake.is_set():
            self._wake.set()

    def _wait_for_room(self) -> None:
        self.backpressure_waits += 1
        now = time.monotonic()
        if now >= self._next_backpressure_log:
            self._next_backpressure_log = now + 10.0
            logger.warning(
                "the shadow process is %d requests behind: requests wait for it (%d times so far)",
                self.queue_depth,
                self.backpressure_waits,
            )
        while len(self._pending) >= self.max_pending and not self._closing:
            self._wake.set()
            time.sleep(0.001)

    def send_models(self, snapshot: ModelSnapshot) -> None:
        """Make ``snapshot`` known to the child before any frame of its generation (idempotent per generation)."""
        if snapshot.generation == self._models_generation:
            return
        with self._models_lock:
            if snapshot.generation == self._models_generation:
                return
            message = _MODELS + pickle.dumps(snapshot, protocol=pickle.HIGHEST_PROTOCOL)
            self._models = message
            self._pending.append(message)
            self._models_generation = snapshot.generation
            self._wake.set()

    def submit(self, stream: str, fields: dict[str, str], event_id: str) -> None:
        """Log one ready-made event (outcomes) through the child's event log, in order with the predictions."""
        self.put(orjson.dumps({"k": "e", "s": stream, "f": fields, "id": event_id}))

    # ------------------------------------------------------------------------------------------------ lifecycle

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start the child and wait for its first report."""
        if self._writer is not None:
            return
        self._spawn()
        self._writer = threading.Thread(target=self._write_loop, name="shadow-writer", daemon=True)
        self._writer.start()
        with self._reports:
            if not self._reports.wait_for(lambda: self._report is not None, timeout_s):
                raise SidecarError(f"the shadow process sent no report within {timeout_s:g} s")

    def close(self, timeout_s: float = 30.0) -> None:
        """Hand every queued frame to the child, let it log them (or spill), then stop it."""
        if self._writer is None:
            return
        self._pending.append(orjson.dumps({"k": "stop"}))
        self._closing = True
        self._wake.set()
        self._writer.join(timeout_s)
        self._writer = None
        process = self._process
        if process is not None:
            process.join(timeout_s)
            if process.is_alive():
                logger.error("shadow process %d did not stop within %g s: killed", process.pid, timeout_s)
                process.kill()
                process.join(5.0)

    @property
    def pid(self) -> int | None:
        return None if self._process is None else int(self._process.pid)

    # ------------------------------------------------------------------------------------------------ waiting

    def flush(self, timeout_s: float = 10.0, *, written: bool = True) -> bool:
        """Wait until the child has handled every frame queued so far — and, with ``written``, until its event log
        has written (or spilled) every event. False on timeout."""
        seq = next(self._seq)
        self.put(orjson.dumps({"k": "flush", "seq": seq, "w": written, "timeout": timeout_s}))
        with self._reports:
            return self._reports.wait_for(lambda: self._acked >= seq, timeout_s)

    def drain(self, timeout_s: float = 10.0) -> bool:
        """Wait until every queued request has been shadow-scored and handed to the event log."""
        return self.flush(timeout_s, written=False)

    # ------------------------------------------------------------------------------------------------ reading

    @property
    def report(self) -> SidecarReport | None:
        """The child's last report."""
        return self._report

    def stats(self) -> EventLogStats:
        """The child's event-log counters as last reported."""
        report = self._report
        if report is not None:
            return report.event_log
        return EventLogStats(
            submitted=0, written=0, spilled=0, replayed=0, dropped=0, duplicates_skipped=0, dead_lettered=0,
            queue_depth=0, spill_pending=0, redis_up=False, last_error="the shadow process has not reported yet",
        )  # fmt: skip

    def comparison(self) -> dict[str, dict[str, float | int | None]]:
        report = self._report
        return report.comparison if report is not None else {}

    def benched(self) -> dict[str, float]:
        """Alias → seconds left on the bench (as of the last report)."""
        report = self._report
        if report is None:
            return {}
        elapsed = time.monotonic() - self._report_at
        return {a: left - elapsed for a, left in report.benched.items() if left > elapsed}

    @property
    def queue_depth(self) -> int:
        """Frames not yet handled by the child: waiting here, in the pipe, or in the child's current batch."""
        report = self._report
        in_child = self._sent - (report.processed if report is not None else 0)
        return len(self._pending) + max(in_child, 0)

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive() and not self._dead.is_set()

    # ------------------------------------------------------------------------------------------------ internals

    def _spawn(self, bench_challengers: bool = False) -> None:
        context = _context()
        inbox_reader, inbox_writer = context.Pipe(duplex=False)
        report_reader, report_writer = context.Pipe(duplex=False)
        process = context.Process(
            target=child_main,
            args=(self.config, inbox_reader, report_writer, bench_challengers),
            name="shadowgate-shadow",
            daemon=True,
        )
        process.start()
        with contextlib.suppress(OSError):  # Linux: room for ~0.1 s of frames at full load (64 KiB by default)
            fcntl.fcntl(inbox_writer.fileno(), F_SETPIPE_SZ, PIPE_BYTES)
        # Only the child keeps these ends: a dead child then means a broken pipe here and EOF on the reports.
        inbox_reader.close()
        report_writer.close()
        self._process = process
        self._outbox = inbox_writer
        self._sent = 0
        self._dead.clear()
        with self._reports:
            self._report = None
        self._reader = threading.Thread(
            target=self._read_loop, args=(report_reader, process.pid), name="shadow-reports", daemon=True
        )
        self._reader.start()
        if self._models is not None:
            inbox_writer.send_bytes(self._models)

    def _read_loop(self, reports: Connection, pid: int) -> None:
        try:
            while True:
                report: SidecarReport = pickle.loads(reports.recv_bytes())
                with self._reports:
                    self._report = report
                    self._report_at = time.monotonic()
                    self._acked = max(self._acked, report.ack)
                    self._reports.notify_all()
        except (EOFError, OSError):
            pass
        finally:
            reports.close()
            if self._process is not None and self._process.pid == pid:
                self._dead.set()
                self._wake.set()

    def _take(self) -> list[bytes]:
        pending = self._pending
        taken: list[bytes] = []
        with contextlib.suppress(IndexError):
            while len(taken) < 4096:
                taken.append(pending.popleft())
        return taken

    def _write_loop(self) -> None:
        batch: list[bytes] = []
        while True:
            try:
                if not batch:
                    self._wake.wait(REPORT_INTERVAL_S)
                    self._wake.clear()
                    if self._pending and not self._closing:
                        time.sleep(WRITE_LINGER_S)
                    batch = self._take()
                if self._dead.is_set() and self._closing:
                    # Stopping, and the child is gone: nobody is left to log what is still here.
                    self.frames_lost += sum(1 for f in (*batch, *self._take()) if f[:7] in _EVENT_FRAMES)
                    self._count_lost("died while stopping")
                    return
                if self._dead.is_set():
                    self._replace("died")
                elif self._stalled():
                    self._replace("stalled", kill=True)
                if not batch:
                    continue
                try:
                    if self._send(batch):
                        return
                    batch = []
                except OSError:
                    self._dead.set()  # broken pipe: the child is gone; the batch goes to its successor
            except Exception:  # this thread must outlive anything (e.g. a replacement that fails to start)
                logger.exception("shadow writer: error; retrying in 1 s")
                time.sleep(1.0)

    def _send(self, batch: list[bytes]) -> bool:
        """Write ``batch`` in order (frames joined into one message, model messages on their own)."""
        outbox = self._outbox
        assert outbox is not None
        frames: list[bytes] = []
        stop = False
        for item in batch:
            if item[:1] == _MODELS:
                if frames:
                    outbox.send_bytes(_FRAMES + b"\n".join(frames))
                    frames = []
                outbox.send_bytes(item)
                continue
            frames.append(item)
            stop = stop or item == b'{"k":"stop"}'
        if frames:
            outbox.send_bytes(_FRAMES + b"\n".join(frames))
        self._sent += sum(1 for f in frames if f[:7] in _EVENT_FRAMES)
        return stop

    def _stalled(self) -> bool:
        if self._closing or self._report is None:
            return False
        return self.queue_depth > 0 and time.monotonic() - self._report_at > self.stall_timeout_s

    def _count_lost(self, why: str, *, kill: bool = False) -> None:
        """Stop the current child if asked, and count the frames it had received but not reported as handled."""
        process = self._process
        report = self._report
        lost = max(self._sent - (report.processed if report is not None else 0), 0)
        if process is not None:
            if kill and process.is_alive():
                process.kill()
            process.join(5.0)
        if self._reader is not None:
            self._reader.join(5.0)  # its last word (EOF → dead) must come before the successor starts, not after
        self.frames_lost += lost
        logger.error(
            "shadow process %s %s (exit code %s); up to %d events it had received may be lost",
            None if process is None else process.pid,
            why,
            None if process is None else process.exitcode,
            lost,
        )

    def _replace(self, why: str, *, kill: bool = False) -> None:
        """Count what the old child may have lost, and start a new one."""
        self._count_lost(why, kill=kill)
        self.restarts += 1
        self._report_at = time.monotonic()
        self._spawn(bench_challengers=kill)


class SidecarCollector(Collector):
    """The API process's own metrics of the shadow process (the child's come with its report)."""

    def __init__(self, sidecar: Sidecar, swaps: Any) -> None:
        self._sidecar = sidecar
        self._swaps = swaps

    def collect(self) -> Iterator[Any]:
        s = self._sidecar
        depth = GaugeMetricFamily("shadowgate_shadow_queue_depth", "Requests waiting for shadow scoring and logging.")
        depth.add_metric([], float(s.queue_depth))
        yield depth
        up = GaugeMetricFamily("shadowgate_shadow_process_up", "1 while the shadow process is running.")
        up.add_metric([], 1.0 if s.alive else 0.0)
        yield up
        for name, value, doc in (
            ("shadow_process_restarts", s.restarts, "Shadow processes replaced after dying or stalling."),
            ("shadow_frames_lost", s.frames_lost, "Upper bound of events lost with a shadow process that died."),
            ("shadow_backpressure_waits", s.backpressure_waits, "Times requests waited for the shadow process."),
            ("model_swaps", self._swaps(), "Atomic swaps of the served model set."),
        ):
            family = CounterMetricFamily(f"shadowgate_{name}", doc)
            family.add_metric([], float(value))
            yield family


def exposition(registry: CollectorRegistry, sidecar: Sidecar) -> bytes:
    """The API process's metrics followed by the shadow process's last reported ones (no family in both)."""
    report = sidecar.report
    return generate_latest(registry) + (report.metrics if report is not None else b"")


# ------------------------------------------------------------------------------------------------ the child


def child_main(config: SidecarConfig, inbox: Connection, outbox: Connection, bench_challengers: bool) -> None:
    """The shadow process: read frames until ``stop`` (or the API process goes away), then flush and exit."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s shadow %(name)s: %(message)s")
    # Ctrl+C and a service manager's SIGTERM reach the whole process group; the API process decides when this one
    # stops (after its last frame). Should the API process die instead, the inbox reads end of file: log, then exit.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    event_log = EventLog(redis_url=config.redis_url, spill_dir=config.spill_dir, queue_size=config.event_queue_size)
    event_log.start()
    event_log.wait_contacted()  # the first report then tells whether Redis is up
    metrics = ServingMetrics()
    metrics.watch_event_log(event_log.stats)
    worker = ShadowWorker(
        policy=config.policy,
        events=event_log,
        customer_salt=config.customer_salt,
        predictions_stream=config.predictions_stream,
        budget_ms=config.budget_ms,
        metrics=metrics,
    )
    child = _Child(config, inbox, outbox, worker, event_log, metrics, bench_challengers=bench_challengers)
    try:
        child.run()
    finally:
        event_log.close()
        with contextlib.suppress(OSError):
            child.report(0)
        outbox.close()


class _Child:
    def __init__(
        self,
        config: SidecarConfig,
        inbox: Connection,
        outbox: Connection,
        worker: ShadowWorker,
        event_log: EventLog,
        metrics: ServingMetrics,
        *,
        bench_challengers: bool,
    ) -> None:
        self.config = config
        self.inbox = inbox
        self.outbox = outbox
        self.worker = worker
        self.event_log = event_log
        self.metrics = metrics
        self.bench_challengers = bench_challengers
        self.jobs: list[ShadowJob] = []
        self.events = 0
        self.next_report = 0.0

    def report(self, ack: int) -> None:
        stats = self.event_log.stats()
        report = SidecarReport(
            pid=os.getpid(),
            ack=ack,
            processed=self.worker.processed + self.events - stats.in_memory,
            event_log=stats,
            metrics=generate_latest(self.metrics.registry),
            comparison=self.worker.comparison(),
            benched=self.worker.benched(),
        )
        self.outbox.send_bytes(pickle.dumps(report, protocol=pickle.HIGHEST_PROTOCOL))
        self.next_report = time.monotonic() + self.config.report_interval_s

    def process(self) -> None:
        if self.jobs:
            jobs, self.jobs = self.jobs, []
            # This process may wait (the API process holds the frames meanwhile); a full queue would spill, out of
            # order.
            self.event_log.wait_for_room(len(jobs))
            try:
                self.worker.process(jobs)
            except Exception:  # the loop must survive anything; the events still go out, unscored
                logger.exception("shadow scoring failed for %d requests", len(jobs))

    def run(self) -> None:
        self.report(0)
        while True:
            wait = max(self.next_report - time.monotonic(), 0.0)
            if not self.inbox.poll(wait):
                self.report(0)
                continue
            deadline = time.monotonic() + BATCH_WINDOW_S
            while True:
                try:
                    message = self.inbox.recv_bytes()
                except EOFError:  # the API process is gone: log what we have and stop
                    self.process()
                    return
                if not self.handle(message):
                    self.process()
                    return
                if len(self.jobs) >= BATCH_MAX or not self.inbox.poll(max(deadline - time.monotonic(), 0.0)):
                    break
            self.process()
            if time.monotonic() >= self.next_report:
                self.report(0)

    def handle(self, message: bytes) -> bool:
        """Handle one message; False on ``stop``."""
        if message[:1] == _MODELS:
            self.process()
            snapshot: ModelSnapshot = pickle.loads(message[1:])
            self.worker.set_models(snapshot)
            if self.bench_challengers:
                self.bench_challengers = False
                self.worker.bench([a for a in snapshot.models if a != CHAMPION], BENCH_COOLDOWN_S, "stalled")
            return True
        for line in message[1:].split(b"\n"):
            frame = orjson.loads(line)
            kind = frame["k"]
            if kind == "p":
                self.jobs.append(ShadowJob.from_frame(frame))
                if len(self.jobs) >= BATCH_MAX:
                    self.process()
            elif kind == "e":
                self.process()
                self.event_log.wait_for_room(1)
                self.event_log.submit(frame["s"], frame["f"], frame["id"])
                self.events += 1
            elif kind == "flush":
                self.process()
                done = self.event_log.flush(frame["timeout"]) if frame["w"] else True
                self.report(frame["seq"] if done else 0)
            elif kind == "stop":
                return False
        return True
