"""Loss-free, non-blocking event logging to Redis Streams, with a local spill file for Redis outages.

The request path calls :meth:`EventLog.submit`, which only puts the record on an in-memory queue (or, if that queue
is full, appends it to the local spill file). A background writer thread drains the queue in batches; each batch is
written with one round trip to a Lua script that, per event, checks a dedup marker, XADDs and sets the marker. The
marker makes every write idempotent, so a batch whose reply was lost can be sent again and each event still lands in
its stream exactly once.

When Redis is unavailable the writer appends batches to ``spill_dir/events.spill.jsonl`` (fsync per batch) and, while
that file holds anything, keeps appending new events to it so that order is preserved. It PINGs every
``retry_interval_s``; once Redis answers it replays the file in order, batch by batch, recording the consumed offset
in a sidecar file (``events.spill.offset``) so a crash mid-replay re-sends at most one batch, then truncates the file
and goes back to writing directly. A spill file left by a previous process is replayed first.

Events Redis refuses for good (say, the stream key holds a string) are not retried forever: they are appended to
``events.deadletter.jsonl`` with the error and counted as ``dead_lettered``. Nothing is dropped unless even the
spill file cannot be written; that is counted as ``dropped`` and logged as an error.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, NamedTuple

import redis
import redis.exceptions as rex
from redis.backoff import NoBackoff
from redis.retry import Retry

from shadowgate.events import Event, to_stream_fields

logger = logging.getLogger(__name__)

SPILL_FILE = "events.spill.jsonl"
SPILL_OFFSET_FILE = "events.spill.offset"
DEAD_LETTER_FILE = "events.deadletter.jsonl"
LOCK_FILE = "events.spill.lock"

_WRITTEN, _DUPLICATE, _WRONG_TYPE = 1, 0, -1
_IDLE_WAKEUP_S = 0.2
"""How often an idle writer wakes up to notice ``close()``; nothing is polled more often than this."""

# Idempotent batch write. For each event: refuse (-1) if the stream key holds another type, skip (0) if the dedup
# marker exists, else XADD and set the marker (1). Checking the marker with EXISTS and setting it after the XADD is,
# inside one atomic script, the same as SET NX before it - but if XADD fails (OOM, bad arguments) no marker is left
# behind that would make a later re-send skip an event that never landed.
_WRITE_SCRIPT = """
local ttl = ARGV[1]
local maxlen = tonumber(ARGV[2])
local pos = 3
local out = {}
for i = 1, #KEYS / 2 do
  local dedup, stream = KEYS[2 * i - 1], KEYS[2 * i]
  local n = tonumber(ARGV[pos])
  local kind = redis.call('TYPE', stream)['ok']
  if kind ~= 'stream' and kind ~= 'none' then
    out[i] = -1
  elseif redis.call('EXISTS', dedup) == 1 then
    out[i] = 0
  else
    local args = {stream}
    if maxlen > 0 then
      args[#args + 1] = 'MAXLEN'
      args[#args + 1] = '~'
      args[#args + 1] = maxlen
    end
    args[#args + 1] = '*'
    for j = pos + 1, pos + 2 * n do
      args[#args + 1] = ARGV[j]
    end
    redis.call('XADD', unpack(args))
    redis.call('SET', dedup, '1', 'EX', ttl)
    out[i] = 1
  end
  pos = pos + 1 + 2 * n
end
return out
"""

# Errors after which the same batch may well succeed later: spill and retry rather than dead-letter.
_TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    rex.ConnectionError,  # includes BusyLoadingError (AOF still loading) and AuthenticationError
    rex.TimeoutError,
    rex.ReadOnlyError,
    rex.OutOfMemoryError,
    rex.TryAgainError,
    rex.MasterDownError,
    OSError,
)
_TRANSIENT_PREFIXES = ("MISCONF", "LOADING", "TRYAGAIN", "MASTERDOWN", "NOREPLICAS", "CLUSTERDOWN", "BUSY", "OOM")


def _byte_at(f: BinaryIO, position: int) -> bytes:
    f.seek(position)
    return f.read(1)


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, _TRANSIENT_TYPES):
        return True
    message = str(exc)
    return message.startswith(_TRANSIENT_PREFIXES) or any(f" {p} " in message for p in ("OOM", "MISCONF"))


class _Record(NamedTuple):
    stream: str
    fields: dict[str, str]
    event_id: str


@dataclass(frozen=True)
class EventLogStats:
    """A snapshot of the event log's counters (all since this :class:`EventLog` was created).

    Attributes:
        submitted: calls to ``submit``.
        written: events this process XADDed to a stream.
        spilled: events appended to the spill file (Redis unavailable, queue full, or submitted after close).
        replayed: events read back from the spill file and delivered (including those of a previous process).
        dropped: events lost because even the spill file could not be written. Should always be 0.
        duplicates_skipped: events not added because their dedup marker existed (a re-send).
        dead_lettered: events Redis refused for good, kept in the dead-letter file.
        queue_depth: events waiting in memory.
        spill_pending: events in the spill file not yet replayed.
        redis_up: whether the last contact with Redis succeeded.
        last_error: the most recent error, for health endpoints.
        in_memory: events accepted but not yet in Redis or the spill file (queued, or in the batch being written):
            what a crash now would lose.
    """

    submitted: int
    written: int
    spilled: int
    replayed: int
    dropped: int
    duplicates_skipped: int
    dead_lettered: int
    queue_depth: int
    spill_pending: int
    redis_up: bool
    last_error: str | None
    in_memory: int = 0


class EventLog:
    """Non-blocking, loss-free, exactly-once logging of stream entries to Redis, owned by one process.

    Typical use (the API's lifespan)::

        log = EventLog(redis_url=url, spill_dir=home / "spill")
        log.start()
        ...
        log.submit("shadowgate:predictions", to_stream_fields(event), event.event_id)
        ...
        log.close()

    One spill directory belongs to one process at a time (enforced with a file lock); give each API worker its own.
    """

    def __init__(
        self,
        *,
        redis_url: str,
        spill_dir: Path,
        queue_size: int = 100_000,
        batch_size: int = 500,
        flush_interval_s: float = 0.05,
        dedup_ttl_s: int = 7 * 24 * 3600,
        stream_maxlen: int | None = None,
        retry_interval_s: float = 0.5,
        key_prefix: str = "shadowgate:",
        socket_timeout_s: float = 2.0,
    ) -> None:
        """Create the log (no network I/O; recovers and locks the spill directory).

        Args:
            redis_url: ``redis://host:port/db`` of the Redis holding the streams.
            spill_dir: directory of the spill, offset, dead-letter and lock files (created if missing).
            queue_size: events held in memory before ``submit`` appends to the spill file directly.
            batch_size: most events per Redis round trip (and per replayed chunk of the spill file).
            flush_interval_s: how long the writer waits for more events to fill a batch once it has one.
            dedup_ttl_s: lifetime of the per-event dedup marker; re-sends within it are recognised.
            stream_maxlen: approximate cap on each stream's length (``XADD MAXLEN ~``); ``None``: unbounded.
            retry_interval_s: time between PINGs while Redis is unavailable.
            key_prefix: prefix of the dedup marker keys (``<prefix>dedup:<event_id>``).
            socket_timeout_s: Redis socket timeout; bounds how long one write can hang.

        Raises:
            ValueError: for non-positive sizes or intervals.
            RuntimeError: if another live process holds the spill directory.
        """
        if queue_size < 1 or batch_size < 1 or dedup_ttl_s < 1:
            raise ValueError("queue_size, batch_size and dedup_ttl_s must be >= 1")
        if flush_interval_s < 0 or retry_interval_s <= 0 or socket_timeout_s <= 0:
            raise ValueError("flush_interval_s must be >= 0, retry_interval_s and socket_timeout_s > 0")
        if stream_maxlen is not None and stream_maxlen < 1:
            raise ValueError("stream_maxlen must be >= 1 or None")
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._dedup_ttl_s = dedup_ttl_s
        self._stream_maxlen = stream_maxlen or 0
        self._retry_interval_s = retry_interval_s
        self._socket_timeout_s = socket_timeout_s
        self._dedup_prefix = f"{key_prefix}dedup:"

        self._client = redis.Redis.from_url(
            redis_url, socket_connect_timeout=min(1.0, socket_timeout_s), socket_timeout=socket_timeout_s
        )
        # Retrying is this class's job (spill, then replay); redis-py's own retries would only stall the writer.
        self._client.set_retry(Retry(NoBackoff(), 0))
        self._script = self._client.register_script(_WRITE_SCRIPT)

        self._queue: queue.Queue[_Record] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()  # counters, the closed flag, _unfinished
        self._progress = threading.Condition(self._lock)
        self._spill_lock = threading.Lock()  # the spill file, its offset file, the dead-letter file, spill counters
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._contacted = threading.Event()
        self._closed = False
        self._soft_deadline = float("inf")

        self._submitted = self._written = self._spilled = self._replayed = 0
        self._dropped = self._duplicates = self._dead_lettered = 0
        self._unfinished = 0  # queued or being handled by the writer
        self._redis_up = False
        self._last_error: str | None = None

        self._spill_dir = spill_dir
        self._spill_path = spill_dir / SPILL_FILE
        self._offset_path = spill_dir / SPILL_OFFSET_FILE
        self._dead_letter_path = spill_dir / DEAD_LETTER_FILE
        spill_dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = self._acquire_dir_lock(spill_dir / LOCK_FILE)
        self._spill_offset = 0
        self._spill_pending = 0
        self._recover_spill()

    # ----------------------------------------------------------------------------------------------- public API

    def start(self) -> None:
        """Start the writer thread (replays a spill file left by a previous process first). Idempotent."""
        with self._lock:
            if self._closed:
                raise RuntimeError("EventLog is closed")
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="shadowgate-eventlog", daemon=True)
        self._thread.start()

    def submit(self, stream: str, fields: dict[str, str], event_id: str) -> None:
        """Log one stream entry. Never blocks, never raises, never touches the network.

        Args:
            stream: stream key to XADD to.
            fields: the entry (string field names and values, e.g. :func:`~shadowgate.events.to_stream_fields`).
            event_id: unique id of the event; an id already logged within ``dedup_ttl_s`` is not added again.
        """
        try:
            record = _Record(stream, fields, event_id)
            with self._lock:
                self._submitted += 1
                if not self._closed:
                    try:
                        self._queue.put_nowait(record)
                        self._unfinished += 1
                        return
                    except queue.Full:
                        pass
            # Queue full (or log closed): a local append is the only I/O allowed here; no fsync on the request path.
            self._spill([record], fsync=False)
        except Exception:  # the request path must never fail because of logging
            logger.exception("event log: submit failed for event %s", event_id)
            with self._lock:
                self._dropped += 1

    def wait_for_room(self, n: int, timeout_s: float = 5.0) -> bool:
        """Wait until the queue has room for ``n`` more events (at most its size), or ``timeout_s``.

        For a producer that may wait (the shadow process): submitting into a full queue spills, which keeps every
        event but not their order. False on timeout.
        """
        need = min(n, self._queue.maxsize)
        deadline = time.monotonic() + timeout_s
        while self._queue.maxsize - self._queue.qsize() < need:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.001)
        return True

    def submit_event(self, stream: str, event: Event) -> None:
        """:meth:`submit` a prediction or outcome event, encoded with ``to_stream_fields``. Never raises."""
        try:
            fields = to_stream_fields(event)
        except Exception:
            logger.exception("event log: cannot encode event %s", getattr(event, "event_id", "?"))
            with self._lock:
                self._submitted += 1
                self._dropped += 1
            return
        self.submit(stream, fields, event.event_id)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every submitted event is in Redis (queue drained and spill file replayed).

        Returns:
            True when drained; False if ``timeout_s`` passed first (e.g. Redis is still down).
        """
        deadline = time.monotonic() + timeout_s
        with self._progress:
            while self._unfinished > 0 or self._spill_pending > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                # Capped wait: submit's direct spill appends change spill_pending without notifying.
                self._progress.wait(min(remaining, _IDLE_WAKEUP_S))
        return True

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop accepting, write what is queued (to Redis, else to the spill file), stop the writer. Idempotent.

        Events submitted after ``close`` go straight to the spill file, for the next process to replay.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        # Leave the writer time to spill whatever is left after its last Redis attempt.
        self._soft_deadline = time.monotonic() + max(0.0, timeout_s - self._socket_timeout_s - 0.5)
        self._stop.set()
        if thread is not None:
            thread.join(timeout_s)
            if thread.is_alive():
                logger.error(
                    "event log: writer did not stop within %.1f s; %d events queued", timeout_s, self._queue.qsize()
                )
                return
        leftovers = self._take(0.0, linger=False)
        while leftovers:  # never started, or stragglers: keep them on disk
            self._spill(leftovers, fsync=True)
            self._finish(len(leftovers))
            leftovers = self._take(0.0, linger=False)
        self._client.close()
        self._release_dir_lock()

    def stats(self) -> EventLogStats:
        """A consistent snapshot of the counters."""
        with self._lock:
            return EventLogStats(
                submitted=self._submitted,
                written=self._written,
                spilled=self._spilled,
                replayed=self._replayed,
                dropped=self._dropped,
                duplicates_skipped=self._duplicates,
                dead_lettered=self._dead_lettered,
                queue_depth=self._queue.qsize(),
                spill_pending=self._spill_pending,
                redis_up=self._redis_up,
                last_error=self._last_error,
                in_memory=self._unfinished,
            )

    def __enter__(self) -> EventLog:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------------ the writer

    def wait_contacted(self, timeout_s: float = 5.0) -> bool:
        """Wait until the writer has tried Redis once (so ``stats().redis_up`` means something). False on timeout."""
        return self._contacted.wait(timeout_s)

    def _run(self) -> None:
        self._set_redis_up(self._ping())
        self._contacted.set()
        next_ping = time.monotonic() + self._retry_interval_s
        pinged_since_stop = False
        while True:
            stopping = self._stop.is_set()
            hurry = stopping and time.monotonic() >= self._soft_deadline
            if stopping and not pinged_since_stop and not self._redis_up and self._spill_pending > 0 and not hurry:
                # One last chance to empty the spill file before exiting.
                self._set_redis_up(self._ping())
                pinged_since_stop = True
            replaying = self._spill_pending > 0 and self._redis_up and not hurry
            if stopping or replaying:
                timeout = 0.0
            elif self._spill_pending > 0:
                timeout = min(max(0.0, next_ping - time.monotonic()), _IDLE_WAKEUP_S)
            else:
                timeout = _IDLE_WAKEUP_S
            # No lingering for more events while stopping or spilling: it would only slow the drain or the replay.
            batch = self._take(timeout, linger=not stopping and self._spill_pending == 0)
            try:
                if self._spill_pending > 0 or hurry:
                    # Spilling mode: new events queue up behind the spilled ones, in the file, to keep their order.
                    if batch:
                        self._spill(batch, fsync=True)
                    if self._spill_pending > 0 and not hurry:
                        now = time.monotonic()
                        if not self._redis_up and not stopping and now >= next_ping:
                            self._set_redis_up(self._ping())
                            next_ping = now + self._retry_interval_s
                        if self._redis_up and not self._replay_chunk():
                            next_ping = time.monotonic() + self._retry_interval_s
                elif batch and not self._deliver(batch):
                    self._spill(batch, fsync=True)
                    next_ping = time.monotonic() + self._retry_interval_s
            except Exception as exc:  # a bug must not kill the writer and strand the queue
                logger.exception("event log: writer error")
                self._note_error(exc)
                if batch:
                    self._spill(batch, fsync=True)  # re-sending is harmless: writes are idempotent
                self._stop.wait(self._retry_interval_s)
            finally:
                self._finish(len(batch))
            if stopping and self._queue.empty() and (self._spill_pending == 0 or not self._redis_up or hurry):
                break
        if self._spill_pending > 0:
            logger.warning("event log: %d events left in %s for the next start", self._spill_pending, self._spill_path)

    def _take(self, timeout: float, *, linger: bool = True) -> list[_Record]:
        """Up to batch_size records: wait up to ``timeout`` for the first, then up to flush_interval_s for more."""
        batch: list[_Record] = []
        try:
            batch.append(self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait())
        except queue.Empty:
            return batch
        linger_until = time.monotonic() + (self._flush_interval_s if linger else 0.0)
        while len(batch) < self._batch_size:
            remaining = linger_until - time.monotonic()
            try:
                batch.append(self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _finish(self, n: int) -> None:
        with self._progress:
            self._unfinished -= n
            self._progress.notify_all()

    def _ping(self) -> bool:
        try:
            return bool(self._client.ping())
        except (rex.RedisError, OSError) as exc:
            self._note_error(exc)
            return False

    def _set_redis_up(self, up: bool) -> None:
        with self._lock:
            was, self._redis_up = self._redis_up, up
        if up and not was:
            logger.info("event log: Redis reachable (%d events waiting in the spill file)", self._spill_pending)
        elif was and not up:
            logger.warning("event log: Redis unavailable (%s); spilling to %s", self._last_error, self._spill_path)

    def _note_error(self, exc: BaseException) -> None:
        with self._lock:
            self._last_error = f"{type(exc).__name__}: {exc}"

    # ------------------------------------------------------------------------------------------ Redis delivery

    def _execute(self, records: list[_Record]) -> list[int]:
        """One round trip: run the write script over ``records``; one result code per record."""
        keys: list[str] = []
        args: list[str | int] = [self._dedup_ttl_s, self._stream_maxlen]
        for record in records:
            keys += (self._dedup_prefix + record.event_id, record.stream)
            args.append(len(record.fields))
            for name, value in record.fields.items():
                args += (name, value)
        return [int(code) for code in self._script(keys=keys, args=args)]

    def _deliver(self, records: list[_Record]) -> bool:
        """Write records to Redis. False (nothing assumed delivered) when Redis is unavailable."""
        try:
            codes = self._execute(records)
        except (rex.RedisError, OSError) as exc:
            if _is_transient(exc):
                self._note_error(exc)
                self._set_redis_up(False)
                return False
            # Something in the batch is refused for good: find it by sending the records one by one.
            logger.warning("event log: batch of %d refused (%s); retrying one by one", len(records), exc)
            return self._deliver_one_by_one(records)
        self._tally(records, codes)
        self._set_redis_up(True)
        return True

    def _deliver_one_by_one(self, records: list[_Record]) -> bool:
        for record in records:
            try:
                codes = self._execute([record])
            except (rex.RedisError, OSError) as exc:
                if _is_transient(exc):
                    self._note_error(exc)
                    self._set_redis_up(False)
                    return False  # the whole batch is re-sent later; those already written are deduplicated
                self._note_error(exc)
                self._dead_letter([record], f"{type(exc).__name__}: {exc}")
                continue
            self._tally([record], codes)
        self._set_redis_up(True)
        return True

    def _tally(self, records: list[_Record], codes: list[int]) -> None:
        refused = [r for r, code in zip(records, codes, strict=True) if code == _WRONG_TYPE]
        with self._lock:
            self._written += codes.count(_WRITTEN)
            self._duplicates += codes.count(_DUPLICATE)
        if refused:
            self._dead_letter(refused, "WRONGTYPE: the stream key holds a value that is not a stream")

    # ------------------------------------------------------------------------------------------------ the spill

    @staticmethod
    def _acquire_dir_lock(path: Path) -> int:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RuntimeError(f"{path.parent} is in use by another EventLog; give each process its own") from None
        return fd

    def _release_dir_lock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = -1

    def _recover_spill(self) -> None:
        """Make a spill file left by a previous process replayable: close a torn last line, validate the offset."""
        with self._spill_lock:
            if not self._spill_path.exists():
                self._offset_path.unlink(missing_ok=True)
                return
            with open(self._spill_path, "r+b") as f:
                size = f.seek(0, os.SEEK_END)
                if size and _byte_at(f, size - 1) != b"\n":
                    # A crash mid-append left half a record: terminate it so it is dead-lettered, not glued to the
                    # next record appended.
                    f.seek(0, os.SEEK_END)
                    f.write(b"\n")
                    f.flush()
                    os.fsync(f.fileno())
                    size += 1
                offset = self._read_offset()
                if offset > size or (offset > 0 and _byte_at(f, offset - 1) != b"\n"):
                    # Truncated after the offset was recorded, or nonsense: start over (re-sends are deduplicated).
                    offset = 0
                f.seek(offset)
                pending = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
            self._spill_offset = offset
            self._spill_pending = pending
            if pending == 0:
                self._truncate_spill()
        if pending:
            logger.info("event log: %d events from a previous run to replay from %s", pending, self._spill_path)

    def _read_offset(self) -> int:
        try:
            return max(0, int(self._offset_path.read_text().strip() or 0))
        except (OSError, ValueError):
            return 0

    def _write_offset(self, offset: int) -> None:
        tmp = self._offset_path.with_suffix(".tmp")
        tmp.write_text(str(offset))
        os.replace(tmp, self._offset_path)  # atomic: a crash leaves the old offset or the new one

    def _truncate_spill(self) -> None:
        # Order matters: a crash between the truncate and the unlink leaves offset > size, which recovery resets.
        os.truncate(self._spill_path, 0)
        self._offset_path.unlink(missing_ok=True)
        self._spill_offset = 0

    def _spill(self, records: list[_Record], *, fsync: bool) -> bool:
        """Append records to the spill file. False (counted as dropped, logged) if even that fails."""
        payload = b"".join(
            json.dumps({"stream": r.stream, "fields": r.fields, "event_id": r.event_id}, default=str).encode() + b"\n"
            for r in records
        )
        with self._spill_lock:
            size = self._spill_path.stat().st_size if self._spill_path.exists() else 0
            try:
                with open(self._spill_path, "ab") as f:
                    f.write(payload)
                    f.flush()
                    if fsync:
                        os.fsync(f.fileno())
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.truncate(self._spill_path, size)  # no half-written record left behind
                logger.error(
                    "event log: cannot write spill file %s, %d events lost: %s", self._spill_path, len(records), exc
                )
                with self._lock:
                    self._dropped += len(records)
                    self._last_error = f"spill failed: {exc}"
                return False
            self._spill_pending += len(records)
        with self._lock:
            self._spilled += len(records)
        return True

    def _replay_chunk(self) -> bool:
        """Send the next batch of the spill file to Redis. False if Redis is unavailable (nothing consumed)."""
        with self._spill_lock:
            records, corrupt, lines, end = self._read_spill_chunk()
            if lines == 0:
                # Counter and file disagree (someone removed the file?): trust the file.
                logger.warning(
                    "event log: spill file has no pending records although %d were counted", self._spill_pending
                )
                self._spill_pending = 0
                if self._spill_path.exists():
                    self._truncate_spill()
                return True
        # No lock held during the round trip: submit may need the spill file meanwhile.
        if records and not self._deliver(records):
            return False
        if corrupt:
            self._dead_letter_raw(corrupt)
        with self._spill_lock:
            self._spill_pending -= lines
            self._spill_offset = end
            if end >= self._spill_path.stat().st_size:
                self._write_offset(end)
                self._truncate_spill()
                self._spill_pending = 0
            else:
                self._write_offset(end)
        with self._lock:
            self._replayed += len(records)
        if self._spill_pending == 0:
            logger.info("event log: spill file replayed; writing to Redis directly again")
        return True

    def _read_spill_chunk(self) -> tuple[list[_Record], list[bytes], int, int]:
        """(records, corrupt lines, lines consumed, end offset) of the next batch; caller holds the spill lock."""
        records: list[_Record] = []
        corrupt: list[bytes] = []
        lines = 0
        end = self._spill_offset
        with open(self._spill_path, "rb") as f:
            f.seek(self._spill_offset)
            while lines < self._batch_size:
                line = f.readline()
                if not line.endswith(b"\n"):
                    break  # end of file (recovery guarantees complete lines)
                lines += 1
                end += len(line)
                try:
                    raw: Any = json.loads(line)
                    fields = {str(k): str(v) for k, v in raw["fields"].items()}
                    records.append(_Record(str(raw["stream"]), fields, str(raw["event_id"])))
                except (ValueError, KeyError, TypeError, AttributeError):
                    corrupt.append(line)
        return records, corrupt, lines, end

    def _dead_letter(self, records: list[_Record], error: str) -> None:
        lines = [
            json.dumps(
                {"stream": r.stream, "fields": r.fields, "event_id": r.event_id, "error": error}, default=str
            ).encode()
            for r in records
        ]
        logger.error(
            "event log: %d events refused by Redis, kept in %s: %s", len(records), self._dead_letter_path, error
        )
        self._append_dead_letters(lines)

    def _dead_letter_raw(self, raw_lines: list[bytes]) -> None:
        lines = [
            json.dumps(
                {"raw": line.decode("utf-8", "replace").rstrip("\n"), "error": "unreadable spill record"}
            ).encode()
            for line in raw_lines
        ]
        logger.error("event log: %d unreadable spill records moved to %s", len(lines), self._dead_letter_path)
        self._append_dead_letters(lines)

    def _append_dead_letters(self, lines: list[bytes]) -> None:
        try:
            with open(self._dead_letter_path, "ab") as f:
                f.write(b"".join(line + b"\n" for line in lines))
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            logger.error("event log: cannot write dead-letter file, %d events lost: %s", len(lines), exc)
            with self._lock:
                self._dropped += len(lines)
            return
        with self._lock:
            self._dead_lettered += len(lines)
