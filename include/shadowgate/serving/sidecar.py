"""The shadow process: shadow scoring, metrics and event logging beside the API process, off its core and its GIL.

The API process decides and, before answering, appends one small frame (see :func:`shadowgate.serving.shadow.
encode_prediction`) to the decision journal (:mod:`shadowgate.serving.journal`): one ``write`` of a few µs, no
network, no lock held for long. The shadow process (a child started from a ``forkserver``) tails the journal, scores
every other model in micro-batches, counts the Prometheus metrics, builds the events and commits each batch to Redis
together with the journal position it reached (:mod:`shadowgate.serving.committer`). Outcome events are journal
records too, in order with the decisions.

A pipe carries what is not a record: model generations (pickled, sent by a writer thread so the request path never
waits on it), ``flush`` and ``stop`` requests, and back the other way the child's reports (every
:data:`REPORT_INTERVAL_S` and after each flush): its commit counters, the committed position, its Prometheus
exposition, the shadow comparison and the benched models. ``/metrics`` serves the API process's own metrics
followed by the child's last exposition.

What survives what (each proven by a test that kills the real process):

- The child dies (killed, crashed): the API process starts another; it reads from the position Redis holds, so the
  records the dead one had read but not committed are committed once, and nothing it committed is sent again.
- The API process dies: its records are in the journal. The child, seeing the pipe close, commits everything the
  journal holds, then exits; if it cannot (Redis down, or it died too), the next start of the service does.
- Redis is down: nothing is committed and the journal grows; once Redis answers the child catches up. Past
  ``max_pending_bytes`` the request path refuses new decisions (503 + Retry-After) rather than answer unlogged ones.
- The child hangs (a challenger that never returns): when the journal has uncommitted records and no report arrives
  for ``stall_timeout_s``, the child is killed and replaced, with every challenger benched for a cool-down.
- The child cannot keep up: it sheds shadow scoring (see :data:`shadowgate.serving.shadow.MAX_LAG_S`) and still logs
  every event; the journal holds the backlog on disk, so the request path never waits for it.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import multiprocessing
import os
import pickle
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson
import redis.exceptions as rex
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from shadowgate.decisioning.policies import DecisionPolicy
from shadowgate.registry import CHAMPION
from shadowgate.serving.committer import CommitOutcome, Committer, StreamRecord, is_transient
from shadowgate.serving.journal import (
    START,
    FsyncPolicy,
    JournalReader,
    JournalWriter,
    Position,
    Record,
    Watermark,
    journal_end,
    journal_id,
    pending_bytes,
    read_committed_hint,
)
from shadowgate.serving.metrics import ServingMetrics
from shadowgate.serving.models import ModelSnapshot
from shadowgate.serving.shadow import BENCH_COOLDOWN_S, FRAME_VERSION, ShadowJob, ShadowWorker, frame_version

logger = logging.getLogger(__name__)

REPORT_INTERVAL_S = 0.5
"""How often an idle or busy child reports its counters."""

POLL_S = 0.002
"""How long an idle child waits before looking at the journal again."""

BATCH_MAX = 256
"""Largest batch of journal records scored and committed together."""

RETRY_INTERVAL_S = 0.5
"""Pause between commits of a batch Redis did not take."""

START_TIMEOUT_S = 60.0
"""How long ``start`` waits for the child's first report."""

MODELS_WAIT_S = 2.0
"""How long the child waits for a model generation that a record names and the pipe has not delivered yet."""

_MODELS = b"M"
_CONTROL = b"C"


@dataclass(frozen=True)
class SidecarConfig:
    """What the shadow process needs (picklable: it crosses to the child)."""

    redis_url: str
    journal_dir: Path
    customer_salt: str
    predictions_stream: str
    budget_ms: float
    policy: DecisionPolicy
    journal_fsync: FsyncPolicy = FsyncPolicy.INTERVAL
    journal_fsync_interval_s: float = 1.0
    journal_segment_bytes: int = 64 << 20
    journal_max_pending_bytes: int = 4 << 30
    journal_retention_s: float = 60.0
    outcome_dedup_ttl_s: int = 3600
    report_interval_s: float = REPORT_INTERVAL_S


@dataclass(frozen=True)
class EventLogStats:
    """The child's commit counters (since it started) and the journal's state, as last reported.

    Attributes:
        written: events this child added to a stream.
        duplicates_skipped: outcomes not added again (their id was seen within the dedup window).
        dead_lettered: records that could not become an event (kept in the journal's dead-letter file).
        inherited: events this child committed from records journaled before it started (after a restart: what
            the process before it had not committed).
        conflicts: commits refused because another process had moved the position (then re-read from Redis).
        resyncs: times the position Redis holds was not in the journal (see ``missing``) and reading went on from
            the next segment present.
        missing: what the journal did not hold at those times, newest last.
        dead_letter_errors: dead-letter writes that failed (disk full); the records were kept and retried.
        pending_bytes: journal bytes not yet in Redis.
        committed: the position Redis holds (encoded), or None before the first contact.
        redis_up: whether the last contact with Redis succeeded.
        last_error: the most recent error, for health endpoints.
    """

    written: int
    duplicates_skipped: int
    dead_lettered: int
    inherited: int
    conflicts: int
    pending_bytes: int
    committed: str | None
    redis_up: bool
    last_error: str | None
    resyncs: int = 0
    missing: tuple[str, ...] = ()
    dead_letter_errors: int = 0


@dataclass(frozen=True)
class SidecarReport:
    """The child's state, as last reported."""

    pid: int
    ack: int
    """Sequence number of the last flush completed (0: none)."""
    committed: Position | None
    event_log: EventLogStats
    metrics: bytes
    comparison: dict[str, dict[str, float | int | None]] = field(default_factory=dict)
    benched: dict[str, float] = field(default_factory=dict)


class SidecarError(RuntimeError):
    """The shadow process could not be started."""


@dataclass(frozen=True)
class WriterInfo:
    """What the shadow process knows of the API process's journal writer (picklable: it crosses to the child).

    Attributes:
        epoch: the writer's id, stored with each committed position.
        first_segment: the writer's first segment: every segment from it on holds this writer's records.
        watermark: the shared word the writer publishes its readable end in.
    """

    epoch: str
    first_segment: int
    watermark: Any


def committed_in_redis(config: SidecarConfig, timeout_s: float = 1.0) -> Position | None:
    """The position Redis holds for the journal in ``config`` (None: none, or Redis not reachable now)."""
    committer = Committer(
        redis_url=config.redis_url, journal_id=journal_id(config.journal_dir), socket_timeout_s=timeout_s
    )
    try:
        return committer.position()
    except (rex.RedisError, OSError) as error:
        logger.warning("Redis not reachable at start (%s); the journal numbers its segments from the disk alone", error)
        return None
    finally:
        committer.close()


def _context() -> Any:
    context = multiprocessing.get_context("forkserver")
    # The fork server imports these once; every child forked from it starts with them loaded (~10 ms, not ~1 s).
    context.set_forkserver_preload(["shadowgate.serving.sidecar"])
    return context


class Sidecar:
    """The API process's end of the shadow process. ``put`` and ``submit`` are the only calls on the request path.

    Args:
        config: the child's settings (and the journal's).
        stall_timeout_s: a child with work that reports nothing for this long is killed and replaced.
    """

    def __init__(self, config: SidecarConfig, *, stall_timeout_s: float = 30.0) -> None:
        self.config = config
        self.stall_timeout_s = stall_timeout_s
        self.restarts = 0
        self.journal: JournalWriter | None = None
        self._control: collections.deque[bytes] = collections.deque()
        self._wake = threading.Event()
        self._reports = threading.Condition()
        self._report: SidecarReport | None = None
        self._report_at = 0.0
        self._acked = 0
        self._seq = itertools.count(1)
        self._models: bytes | None = None
        self._models_generation = -1
        self._models_lock = threading.Lock()
        self._process: Any = None
        self._outbox: Connection | None = None
        self._dead = threading.Event()
        self._closing = False
        self._writer: threading.Thread | None = None
        self._reader: threading.Thread | None = None
        self._spawned_at = 0.0
        self._quick_deaths = 0
        self._writer_info: WriterInfo | None = None

    # ------------------------------------------------------------------------------------------------ request path

    def put(self, frame: bytes) -> Position:
        """Journal one decided request's frame (raises ``JournalFullError``: answer 503, the decision is not logged).

        Returns where it ends: under ``journal_fsync=always`` await :meth:`durable` before answering."""
        return self.put_many([frame])

    def put_many(self, frames: Sequence[bytes]) -> Position:
        """Journal frames in one write: all of them, or none (raises ``JournalFullError``)."""
        journal = self.journal
        if journal is None:
            raise SidecarError("the shadow process is not started")
        return journal.append_many(frames)

    def submit(self, stream: str, fields: dict[str, str], event_id: str) -> Position:
        """Journal one ready-made event (outcomes), in order with the decisions; de-duplicated by ``event_id``."""
        return self.submit_many([(stream, fields, event_id)])

    def submit_many(self, events: Sequence[tuple[str, dict[str, str], str]]) -> Position:
        """Journal ready-made events (stream, fields, event id) all or nothing."""
        return self.put_many([event_frame(stream, fields, event_id) for stream, fields, event_id in events])

    async def durable(self, position: Position | None) -> None:
        """Wait, off the event loop, until ``position`` is on disk as the fsync policy promises (``always``: the
        group commit covering it). Raises ``JournalFullError`` when the disk failed: the record was cut back."""
        journal = self.journal
        if journal is not None and position is not None:
            await journal.durable(position)

    def send_models(self, snapshot: ModelSnapshot) -> None:
        """Make ``snapshot`` known to the child (idempotent per generation; sent by the writer thread)."""
        if snapshot.generation == self._models_generation:
            return
        with self._models_lock:
            if snapshot.generation == self._models_generation:
                return
            message = _MODELS + pickle.dumps(snapshot, protocol=pickle.HIGHEST_PROTOCOL)
            self._models = message
            self._control.append(message)
            self._models_generation = snapshot.generation
            self._wake.set()

    # ------------------------------------------------------------------------------------------------ lifecycle

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Open the journal, start the child and wait for its first report."""
        if self._writer is not None:
            return
        c = self.config
        watermark = _context().RawValue("q", 0)
        self.journal = JournalWriter(
            c.journal_dir,
            segment_bytes=c.journal_segment_bytes,
            fsync=c.journal_fsync,
            fsync_interval_s=c.journal_fsync_interval_s,
            max_pending_bytes=c.journal_max_pending_bytes,
            start_after=committed_in_redis(c),
            watermark=Watermark(watermark),
        )
        self._writer_info = WriterInfo(self.journal.epoch, self.journal.first_segment, watermark)
        self._spawn()
        self._writer = threading.Thread(target=self._write_loop, name="shadow-writer", daemon=True)
        self._writer.start()
        with self._reports:
            if not self._reports.wait_for(lambda: self._report is not None, timeout_s):
                raise SidecarError(f"the shadow process sent no report within {timeout_s:g} s")

    def close(self, timeout_s: float = 30.0) -> None:
        """Let the child commit everything journaled so far (while Redis answers), then stop it and the journal.

        What Redis does not take in ``timeout_s`` stays in the journal for the next start.
        """
        if self._writer is None:
            return
        journal = self.journal
        until = journal.position if journal is not None else START
        self._control.append(_control({"k": "stop", "until": list(until), "timeout": timeout_s}))
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
        if journal is not None:
            journal.close()

    @property
    def pid(self) -> int | None:
        return None if self._process is None else int(self._process.pid)

    # ------------------------------------------------------------------------------------------------ waiting

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything journaled so far is in Redis. False on timeout (e.g. Redis is down)."""
        journal = self.journal
        if journal is None:
            return True
        seq = next(self._seq)
        self._control.append(_control({"k": "flush", "seq": seq, "until": list(journal.position)}))
        self._wake.set()
        with self._reports:
            return self._reports.wait_for(lambda: self._acked >= seq, timeout_s)

    # ------------------------------------------------------------------------------------------------ reading

    @property
    def report(self) -> SidecarReport | None:
        """The child's last report."""
        return self._report

    def stats(self) -> EventLogStats:
        """The child's commit counters as last reported."""
        report = self._report
        if report is not None:
            return report.event_log
        return EventLogStats(
            written=0, duplicates_skipped=0, dead_lettered=0, inherited=0, conflicts=0,
            pending_bytes=self.pending_bytes, committed=None, redis_up=False,
            last_error="the shadow process has not reported yet",
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
    def pending_bytes(self) -> int:
        """Journal bytes not yet in Redis (exact at the last report, plus what was appended since)."""
        return self.journal.pending if self.journal is not None else 0

    @property
    def journal_failed(self) -> str | None:
        """Why the journal refuses every record (its disk failed; it probes and recovers by itself), or None."""
        return self.journal.failed if self.journal is not None else None

    @property
    def refused(self) -> int:
        """Decisions and outcomes refused because the journal was full or could not be written."""
        return self.journal.refused if self.journal is not None else 0

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
            args=(self.config, self._writer_info, inbox_reader, report_writer, bench_challengers),
            name="shadowgate-shadow",
            daemon=True,
        )
        process.start()
        # Only the child keeps these ends: a dead child then means a broken pipe here and EOF on the reports.
        inbox_reader.close()
        report_writer.close()
        self._process = process
        self._outbox = inbox_writer
        self._spawned_at = time.monotonic()
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
                if report.committed is not None and self.journal is not None:
                    self.journal.set_committed(report.committed)
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

    def _write_loop(self) -> None:
        while True:
            try:
                self._wake.wait(REPORT_INTERVAL_S)
                self._wake.clear()
                if self._dead.is_set() and self._closing:
                    # Stopping, and the child is gone: what it did not commit stays in the journal for the next start.
                    self._stopped("died while stopping")
                    return
                if self._dead.is_set():
                    self._replace("died")
                elif self._stalled():
                    self._replace("stalled", kill=True)
                outbox = self._outbox
                assert outbox is not None
                while self._control:
                    message = self._control[0]
                    try:
                        outbox.send_bytes(message)
                    except OSError:
                        self._dead.set()  # broken pipe: the child is gone; its successor gets the message
                        break
                    self._control.popleft()
                    if message.startswith(_CONTROL + b'{"k":"stop"'):
                        return
            except Exception:  # this thread must outlive anything (e.g. a replacement that fails to start)
                logger.exception("shadow writer: error; retrying in 1 s")
                time.sleep(1.0)

    def _stalled(self) -> bool:
        if self._closing or self._report is None:
            return False
        return self.pending_bytes > 0 and time.monotonic() - self._report_at > self.stall_timeout_s

    def _stopped(self, why: str, *, kill: bool = False) -> None:
        """Stop the current child if asked and wait for it; its uncommitted records wait in the journal."""
        process = self._process
        if process is not None:
            if kill and process.is_alive():
                process.kill()
            process.join(5.0)
        if self._reader is not None:
            self._reader.join(5.0)  # its last word (EOF → dead) must come before the successor starts, not after
        logger.error(
            "shadow process %s %s (exit code %s); %d journal bytes not yet in Redis will be committed by the next one",
            None if process is None else process.pid,
            why,
            None if process is None else process.exitcode,
            self.pending_bytes,
        )

    def _replace(self, why: str, *, kill: bool = False) -> None:
        """Start a new child where the old one stopped (it reads from the position Redis holds)."""
        self._stopped(why, kill=kill)
        self.restarts += 1
        # A child that dies right after its start (a broken install, no memory) is not restarted in a tight loop.
        lived = time.monotonic() - self._spawned_at
        self._quick_deaths = self._quick_deaths + 1 if lived < 5.0 else 0
        if self._quick_deaths > 1:
            time.sleep(min(0.1 * 2**self._quick_deaths, 5.0))
        self._report_at = time.monotonic()
        self._spawn(bench_challengers=kill)


def _control(message: dict[str, Any]) -> bytes:
    return _CONTROL + orjson.dumps(message)


def event_frame(stream: str, fields: dict[str, str], event_id: str) -> bytes:
    """The journal frame of a ready-made event (an outcome)."""
    return orjson.dumps({"v": FRAME_VERSION, "k": "e", "s": stream, "f": fields, "id": event_id})


class SidecarCollector(Collector):
    """The API process's own metrics of the shadow process and the journal (the child's come with its report)."""

    def __init__(self, sidecar: Sidecar, swaps: Any) -> None:
        self._sidecar = sidecar
        self._swaps = swaps

    def collect(self) -> Iterator[Any]:
        s = self._sidecar
        for name, value, doc in (
            ("journal_pending_bytes", s.pending_bytes, "Journal bytes of answered decisions not yet in Redis."),
            ("shadow_process_up", 1.0 if s.alive else 0.0, "1 while the shadow process is running."),
        ):
            gauge = GaugeMetricFamily(f"shadowgate_{name}", doc)
            gauge.add_metric([], float(value))
            yield gauge
        journal = s.journal
        failed = GaugeMetricFamily(
            "shadowgate_journal_failed", "1 while the journal's disk has failed and every record is refused (503)."
        )
        failed.add_metric([], 1.0 if journal is not None and journal.failed is not None else 0.0)
        yield failed
        for name, value, doc in (
            ("journal_records", journal.appended if journal else 0, "Decisions and outcomes journaled (answered)."),
            ("journal_disk_failures", journal.failures if journal else 0, "Journal write/fsync/segment failures."),
            ("journal_refused", s.refused, "Requests refused (503) because the journal was full or unwritable."),
            ("shadow_process_restarts", s.restarts, "Shadow processes replaced after dying or stalling."),
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


def child_main(
    config: SidecarConfig, writer: WriterInfo, inbox: Connection, outbox: Connection, bench_challengers: bool
) -> None:
    """The shadow process: commit the journal to Redis until ``stop`` (or the API process goes away), then exit."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s shadow %(name)s: %(message)s")
    # Ctrl+C and a service manager's SIGTERM reach the whole process group; the API process decides when this one
    # stops (after its last frame). Should the API process die instead, the inbox reads end of file: commit, exit.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    committer = Committer(
        redis_url=config.redis_url,
        journal_id=journal_id(config.journal_dir),
        outcome_dedup_ttl_s=config.outcome_dedup_ttl_s,
        writer_epoch=writer.epoch,
    )
    metrics = ServingMetrics()
    child = _Child(config, writer, inbox, outbox, committer, metrics, bench_challengers=bench_challengers)
    metrics.watch_event_log(child.stats)
    try:
        child.run()
    finally:
        with contextlib.suppress(OSError):
            child.report(0)
        committer.close()
        outbox.close()


class _Collect:
    """The worker's event sink for one batch: stream entries in the order they are made."""

    def __init__(self) -> None:
        self.records: list[StreamRecord] = []

    def submit(self, stream: str, fields: dict[str, str], event_id: str) -> None:
        self.records.append(StreamRecord(stream, fields))


@dataclass
class _Batch:
    """Journal records turned into stream entries, waiting to be committed."""

    records: list[StreamRecord]
    ends: list[Position]
    """The journal position after each record's source."""
    end: Position
    """The position after the whole batch (dead records included)."""
    dead: list[tuple[bytes, str]]
    """Records that cannot become events, with the reason; dead-lettered before the commit."""


class _Child:
    def __init__(
        self,
        config: SidecarConfig,
        writer: WriterInfo,
        inbox: Connection,
        outbox: Connection,
        committer: Committer,
        metrics: ServingMetrics,
        *,
        bench_challengers: bool,
    ) -> None:
        self.config = config
        self.inbox = inbox
        self.outbox = outbox
        self.committer = committer
        self.metrics = metrics
        self.bench_challengers = bench_challengers
        self.sink = _Collect()
        self.worker = ShadowWorker(
            policy=config.policy,
            events=self.sink,
            customer_salt=config.customer_salt,
            predictions_stream=config.predictions_stream,
            budget_ms=config.budget_ms,
            metrics=metrics,
        )
        self.writer = writer
        self.watermark = Watermark(writer.watermark)
        self.reader: JournalReader | None = None
        self.resyncs = 0
        self.missing: collections.deque[str] = collections.deque(maxlen=20)
        self.dead_letter_errors = 0
        self.committed: Position | None = None
        self.batch: _Batch | None = None
        self.building = False
        self.newest_generation = -1
        self.flushes: list[tuple[int, Position]] = []
        self.stop_until: Position | None = None
        self.stop_deadline = float("inf")
        self.parent_gone = False
        self.next_report = 0.0
        self.next_retry = 0.0
        self.inherited_until: Position | None = None
        self.written = self.duplicates = self.dead_lettered = self.inherited = self.conflicts = 0
        self.redis_up = False
        self.last_error: str | None = None

    # ------------------------------------------------------------------------------------------------ reporting

    def stats(self) -> EventLogStats:
        committed = self.committed or START
        return EventLogStats(
            written=self.written,
            duplicates_skipped=self.duplicates,
            dead_lettered=self.dead_lettered,
            inherited=self.inherited,
            conflicts=self.conflicts,
            pending_bytes=pending_bytes(self.config.journal_dir, committed),
            committed=self.committed.encode() if self.committed else None,
            redis_up=self.redis_up,
            last_error=self.last_error,
            resyncs=self.resyncs + (self.reader.resyncs if self.reader else 0),
            missing=(*self.missing, *(self.reader.missing if self.reader else ())),
            dead_letter_errors=self.dead_letter_errors,
        )

    def report(self, ack: int) -> None:
        report = SidecarReport(
            pid=os.getpid(),
            ack=ack,
            committed=self.committed,
            event_log=self.stats(),
            metrics=generate_latest(self.metrics.registry),
            comparison=self.worker.comparison(),
            benched=self.worker.benched(),
        )
        self.outbox.send_bytes(pickle.dumps(report, protocol=pickle.HIGHEST_PROTOCOL))
        self.next_report = time.monotonic() + self.config.report_interval_s

    def _error(self, error: BaseException) -> None:
        self.last_error = f"{type(error).__name__}: {error}"
        if self.redis_up:
            logger.warning("Redis unavailable (%s); decisions wait in the journal", self.last_error)
        self.redis_up = False

    # ------------------------------------------------------------------------------------------------ the loop

    def run(self) -> None:
        self.report(0)
        while True:
            self._read_pipe(0.0)
            if self.parent_gone and self._give_up():
                return  # orphaned: a restarted API process's own shadow process takes over from Redis's position
            if self.reader is None and not self._attach():
                if self._give_up():
                    return
                self._read_pipe(RETRY_INTERVAL_S)
                continue
            if self.batch is None:
                self.batch = self._next_batch()
            if self.batch is not None:
                if time.monotonic() >= self.next_retry:
                    self._commit()
                else:
                    self._read_pipe(max(self.next_retry - time.monotonic(), 0.0))
                if self.batch is not None and self._give_up():
                    return
            else:
                self._answer_flushes()
                if self._done():
                    return
                self._read_pipe(POLL_S)
            if time.monotonic() >= self.next_report:
                self.report(0)

    def _attach(self) -> bool:
        """Learn from Redis where this journal's committed records end, and read on from there."""
        try:
            held, epoch = self.committer.holder()
            if held is not None and epoch != self.writer.epoch and held.segment >= self.writer.first_segment:
                if not self._resync(held):
                    return False  # another process moved the position meanwhile: attach again
                held = Position(self.writer.first_segment, 0)
        except (rex.RedisError, OSError) as error:
            self._error(error)
            return False
        self.committed = held
        self.redis_up = True
        self.next_report = 0.0  # health shows Redis up now, not one report interval later
        directory = self.config.journal_dir
        start = self.committed or START
        hint = read_committed_hint(directory)
        if hint is not None and hint > start:
            logger.error(
                "Redis holds journal position %s but %s was committed: Redis lost writes (restarted without "
                "persistence?); committing again from the journal what it still holds",
                start.encode(),
                hint.encode(),
            )
        self.reader = JournalReader(
            directory, start=start, retention_s=self.config.journal_retention_s, watermark=self.watermark
        )
        self.inherited_until = journal_end(directory)
        return True

    def _resync(self, held: Position) -> bool:
        """Redis holds a position another writer's records reached, at or past this writer's first segment: the journal
        directory is not the one those records were in (restored from an older copy, emptied), and this writer's
        segments reuse numbers Redis has passed. Move Redis to this writer's first segment (everything there is new),
        and say what was not found. False when another process moved the position meanwhile."""
        start = Position(self.writer.first_segment, 0)
        result = self.committer.commit([], expected=held, new=start)
        if result.outcome is CommitOutcome.CONFLICT:
            self.conflicts += 1
            return False
        what = f"position {held.encode()} (left by another writer; this writer began at segment {start.segment})"
        self.resyncs += 1
        self.missing.append(what)
        logger.error(
            "journal: Redis holds %s, not in this journal (restored from an older copy, or emptied): records after it"
            " that Redis does not hold are lost; reading on from %s",
            what,
            start.encode(),
        )
        return True

    def _drop_reader(self) -> None:
        """Forget the reader (read again from the position Redis holds), keeping what it reported."""
        if self.reader is not None:
            self.resyncs += self.reader.resyncs
            self.missing.extend(self.reader.missing)
            self.reader.close()
        self.reader = None

    def _give_up(self) -> bool:
        """Stop trying: asked to stop (or orphaned) and out of time. The journal keeps the rest for the next start."""
        if (self.stop_until is not None or self.parent_gone) and time.monotonic() >= self.stop_deadline:
            logger.warning("shadow process stopping with %d journal bytes not in Redis", self.stats().pending_bytes)
            return True
        return False

    def _reached(self) -> Position:
        """How far the journal is in Redis: the reader's position once its batch is committed (it may have moved past
        an empty segment since the last commit), else the last commit."""
        if self.batch is None and not self.building and self.reader is not None:
            return max(self.reader.position, self.committed or START)
        return self.committed or START

    def _done(self) -> bool:
        """Nothing left to read: stop if asked to stop (and everything asked for is committed) or orphaned."""
        if self.parent_gone:
            return True
        return self.stop_until is not None and self._reached() >= self.stop_until

    def _read_pipe(self, timeout: float) -> None:
        """Handle every message waiting on the pipe (waiting up to ``timeout`` for the first)."""
        if self.parent_gone:
            if timeout > 0:
                time.sleep(min(timeout, RETRY_INTERVAL_S))
            return
        try:
            ready = self.inbox.poll(timeout)
            while ready:
                self._handle(self.inbox.recv_bytes())
                ready = self.inbox.poll(0)
        except (EOFError, OSError):
            # The API process is gone: commit what its journal holds, then stop (the next start does the rest).
            self.parent_gone = True
            self.stop_deadline = time.monotonic() + 10.0

    def _handle(self, message: bytes) -> None:
        if message[:1] == _MODELS:
            snapshot: ModelSnapshot = pickle.loads(message[1:])
            self.worker.set_models(snapshot)
            self.newest_generation = max(self.newest_generation, snapshot.generation)
            if self.bench_challengers:
                self.bench_challengers = False
                self.worker.bench([a for a in snapshot.models if a != CHAMPION], BENCH_COOLDOWN_S, "stalled")
            return
        control = orjson.loads(message[1:])
        if control["k"] == "flush":
            self.flushes.append((control["seq"], Position(*control["until"])))
            self._answer_flushes()
        elif control["k"] == "stop":
            self.stop_until = Position(*control["until"])
            self.stop_deadline = time.monotonic() + max(control["timeout"] - 1.0, 0.5)

    def _answer_flushes(self) -> None:
        committed = self._reached()
        done = [seq for seq, until in self.flushes if committed >= until]
        if done:
            self.flushes = [(seq, until) for seq, until in self.flushes if committed < until]
            self.report(max(done))

    # ------------------------------------------------------------------------------------------------ batches

    def _next_batch(self) -> _Batch | None:
        assert self.reader is not None
        records = self.reader.read(BATCH_MAX)
        if not records:
            return None
        self.building = True  # read, not yet a batch: the reader's position is not committed
        try:
            return self._build(records)
        finally:
            self.building = False

    def _build(self, records: list[Record]) -> _Batch:
        """Turn records into stream entries. A record that cannot become one — not JSON, a frame version this release
        does not read, keys missing, or an event that cannot be built from it — is dead-lettered on its own; the
        others go on."""
        made: list[StreamRecord | None] = [None] * len(records)
        dead: dict[int, str] = {}
        jobs: list[tuple[int, ShadowJob]] = []
        for index, record in enumerate(records):
            try:
                frame = orjson.loads(record.data)
                if not isinstance(frame, dict):
                    raise TypeError(f"a frame is a JSON object, not {type(frame).__name__}")
                frame_version(frame)
                kind = frame["k"]
                if kind == "p":
                    jobs.append((index, ShadowJob.from_frame(frame)))
                elif kind == "e":
                    fields = {str(k): str(v) for k, v in frame["f"].items()}
                    made[index] = StreamRecord(str(frame["s"]), fields, str(frame["id"]))
                else:
                    raise ValueError(f"unknown record kind {kind!r}")
            except (ValueError, KeyError, TypeError, IndexError, AttributeError) as error:
                dead[index] = f"{type(error).__name__}: {error}"
        if jobs:
            self._wait_for_models(max(job.generation for _, job in jobs))
            for (index, _), result in zip(jobs, self._events([job for _, job in jobs]), strict=True):
                if isinstance(result, str):
                    dead[index] = result
                else:
                    made[index] = result
        kept = [(m, r.end) for m, r in zip(made, records, strict=True) if m is not None]
        return _Batch(
            [m for m, _ in kept],
            [end for _, end in kept],
            records[-1].end,
            [(records[i].data, reason) for i, reason in sorted(dead.items())],
        )

    def _events(self, jobs: list[ShadowJob]) -> list[StreamRecord | str]:
        """Each job's prediction event, or why it could not be built. The batch is scored together; should that fail,
        each job is tried alone, then logged unscored, and only a job that fails even so is given up (its reason)."""
        try:
            return list(self._scored(jobs))
        except Exception:  # the loop must survive anything; find the job that fails
            logger.exception("shadow scoring failed for a batch of %d requests; trying them one by one", len(jobs))
        out: list[StreamRecord | str] = []
        for job in jobs:
            try:
                out.extend(self._scored([job]))
                continue
            except Exception:
                pass
            try:
                fields = self.worker.event_fields(job, [job.decided])
                out.append(StreamRecord(self.config.predictions_stream, fields))
            except Exception as error:  # any failure of this one record is its reason
                out.append(f"event not built: {type(error).__name__}: {error}"[:500])
        return out

    def _scored(self, jobs: list[ShadowJob]) -> list[StreamRecord]:
        self.sink.records = []
        self.worker.process(jobs)
        if len(self.sink.records) != len(jobs):
            raise RuntimeError(f"{len(self.sink.records)} events for {len(jobs)} requests")
        return self.sink.records

    def _wait_for_models(self, generation: int) -> None:
        """A record decided with a generation the pipe has not delivered yet: wait for it (briefly)."""
        deadline = time.monotonic() + MODELS_WAIT_S
        while generation > self.newest_generation and not self.parent_gone and time.monotonic() < deadline:
            self._read_pipe(0.05)
        if generation > self.newest_generation:
            logger.warning("model generation %d never arrived; scoring with the newest known", generation)
            self.newest_generation = generation  # wait once, not for every batch

    def _commit(self) -> None:
        batch = self.batch
        assert batch is not None and self.reader is not None
        while batch.dead:
            # Kept before the commit that moves past them: a crash in between keeps them twice, never not at all.
            data, reason = batch.dead[0]
            try:
                self.reader.dead_letter(data, reason)
            except OSError as error:
                # A full disk: keep the batch (the records are in the journal), free what can be freed, retry.
                self.dead_letter_errors += 1
                self.last_error = f"dead letter not writable: {type(error).__name__}: {error}"
                if self.dead_letter_errors == 1 or self.dead_letter_errors % 100 == 0:
                    logger.error("%s; the batch waits (%d times so far)", self.last_error, self.dead_letter_errors)
                self.reader.collect()
                self.next_retry = time.monotonic() + RETRY_INTERVAL_S
                return
            batch.dead.pop(0)
            self.dead_lettered += 1
        try:
            result = self.committer.commit(batch.records, expected=self.committed, new=batch.end)
        except (rex.RedisError, OSError) as error:
            if is_transient(error):
                self._error(error)
                self.next_retry = time.monotonic() + RETRY_INTERVAL_S
            else:
                logger.error("Redis refused a batch of %d events: %s; committing one by one", len(batch.records), error)
                self._commit_one_by_one(batch)
            return
        if result.outcome is CommitOutcome.ALREADY:
            # An earlier try of this batch ran in Redis; its reply was lost with the connection. Count it once.
            self._committed(batch.end, batch.records, written=len(batch.records), duplicates=0)
            return
        if result.outcome is CommitOutcome.CONFLICT:
            self._conflict(result.current)
            return
        refused = [batch.records[i] for i in result.refused]
        self._committed(batch.end, batch.records, written=result.written, duplicates=result.duplicates)
        self._dead_letter_records(refused, "WRONGTYPE: the stream key holds a value that is not a stream")

    def _commit_one_by_one(self, batch: _Batch) -> None:
        """A batch Redis refuses for good: commit each record on its own (moving the position past it), and
        dead-letter the ones refused."""
        for record, end in zip(batch.records, batch.ends, strict=True):
            try:
                result = self.committer.commit([record], expected=self.committed, new=end)
            except (rex.RedisError, OSError) as error:
                if is_transient(error):
                    self._error(error)
                    self.next_retry = time.monotonic() + RETRY_INTERVAL_S
                    self.batch = None  # read again from the committed position
                    self._drop_reader()
                    return
                self._dead_letter_records([record], f"{type(error).__name__}: {error}")
                result = self.committer.commit([], expected=self.committed, new=end)
            if result.outcome is CommitOutcome.CONFLICT:
                self._conflict(result.current)
                return
            self._committed(end, [record] if result.written else [], written=result.written,
                            duplicates=result.duplicates)  # fmt: skip
        if self.committed != batch.end:
            result = self.committer.commit([], expected=self.committed, new=batch.end)
            if result.outcome is CommitOutcome.CONFLICT:
                self._conflict(result.current)
                return
            self._committed(batch.end, [], written=0, duplicates=0)

    def _conflict(self, current: Position | None) -> None:
        # Another shadow process committed from this journal (a predecessor still finishing): follow Redis.
        self.conflicts += 1
        logger.warning("journal position moved by another process to %s; reading on from there", current)
        self.batch = None
        self._drop_reader()

    def _dead_letter_records(self, records: list[StreamRecord], reason: str) -> None:
        assert self.reader is not None
        for record in records:
            data = orjson.dumps({"s": record.stream, "f": record.fields})
            try:
                self.reader.dead_letter(data, reason)
            except OSError as error:
                # Redis refused it for good and the disk will not keep it: the log is the last place it can go.
                self.dead_letter_errors += 1
                logger.error("dead letter not writable (%s); refused record kept here: %s: %s", error, reason,
                             data[:2000].decode("utf-8", "replace"))  # fmt: skip
        self.dead_lettered += len(records)

    def _committed(self, end: Position, records: list[StreamRecord], *, written: int, duplicates: int) -> None:
        assert self.reader is not None
        if not self.redis_up:
            logger.warning("Redis reachable again; committing the journal")
        self.redis_up = True
        self.written += written
        self.duplicates += duplicates
        if self.inherited_until is not None:
            if end <= self.inherited_until:
                self.inherited += len(records)
            else:
                self.inherited_until = None
        self.committed = end
        if self.batch is not None and self.batch.end == end:
            self.batch = None
        self.reader.committed(end)
        self._answer_flushes()
