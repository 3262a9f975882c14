"""The decision journal: an append-only segment log every answered decision (and accepted outcome) is written to
before the answer, so that no process death loses one.

The API process is the only writer (:class:`JournalWriter`, one ``write(2)`` per record or batch, a few µs; fsyncs
on its own thread; a disk failure latches it until a probe succeeds). It publishes the end of what it confirmed in a
shared :class:`Watermark` the reader never passes, so a record it cuts back after a failure is never delivered.
The shadow process tails the journal (:class:`JournalReader`), turns each record into its event, and commits a
batch of events to Redis together with the journal position it reached, in one atomic script (see
:mod:`shadowgate.serving.committer`). A restarted shadow process resumes from the position Redis holds, so every
record becomes exactly one stream entry whatever died: the API process (its records are in the file), the shadow
process (the file and Redis agree on where it stopped), both, or Redis (the journal keeps what Redis has not
confirmed; see ``retention``).

Layout of a journal directory::

    journal.id          random id of this journal (names its position in Redis); made once
    writer.lock         flock held by the writing process (one writer per directory)
    000000000001.jnl    segments: newline-terminated records, numbered in write order
    committed           last position the shadow process committed to Redis (a hint for clean-up, not the truth)
    deadletter.jsonl    records that could not be turned into an event, with the reason (0600, like the segments)

A new writer always starts a new segment, so a record torn by a machine crash in the middle of a ``write`` is only
ever the last line of a finished segment; the reader skips it (dead-lettered, counted).

Durability of the file itself is the :class:`FsyncPolicy`: a written record survives the death of any process as
soon as ``write`` returns (it is in the kernel's page cache); surviving a machine crash or power loss needs it on
disk: ``interval`` fsyncs in the background (loses at most that interval), ``always`` before every answer.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import fcntl
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import orjson

logger = logging.getLogger(__name__)

ID_FILE = "journal.id"
LOCK_FILE = "writer.lock"
COMMITTED_FILE = "committed"
DEAD_LETTER_FILE = "deadletter.jsonl"
SEGMENT_SUFFIX = ".jnl"
_SEGMENT = re.compile(r"^(\d{12})\.jnl$")
LISTING_INTERVAL_S = 0.05
"""How often a reader at the end of its segment looks for the next one (the writer starts one rarely)."""


class FsyncPolicy(StrEnum):
    """When journal writes are forced to disk.

    * ``never``: survives the death of any process (the page cache outlives it), not a machine crash.
    * ``interval``: a background thread fsyncs every ``fsync_interval_s``; a machine crash loses at most that much.
    * ``always``: fsync before the answer; nothing answered is lost even to a power cut (costs a disk flush per
      request).
    """

    NEVER = "never"
    INTERVAL = "interval"
    ALWAYS = "always"


class JournalFullError(RuntimeError):
    """The journal holds more uncommitted bytes than allowed (the shadow process or Redis is far behind), or the disk
    refused the write: the decision must not be answered, since it could not be logged."""


class Position(NamedTuple):
    """A place in the journal: segment number and byte offset in it (the end of the last record read)."""

    segment: int
    offset: int

    def encode(self) -> str:
        return f"{self.segment:012d}:{self.offset:012d}"

    @classmethod
    def decode(cls, text: str | bytes) -> Position:
        if isinstance(text, bytes):
            text = text.decode()
        segment, offset = text.split("@", 1)[0].split(":")  # a committed position may name its writer after '@'
        return cls(int(segment), int(offset))


START = Position(0, 0)
"""Before everything (segments are numbered from 1)."""


def segment_path(directory: Path, number: int) -> Path:
    return directory / f"{number:012d}{SEGMENT_SUFFIX}"


def segments(directory: Path) -> list[int]:
    """Numbers of the segments present, ascending."""
    found = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(directory):
            match = _SEGMENT.match(entry.name)
            if match:
                found.append(int(match.group(1)))
    return sorted(found)


def journal_id(directory: Path) -> str:
    """The journal's id, made on first use (``jnl-`` + 16 random hex digits)."""
    path = directory / ID_FILE
    with contextlib.suppress(FileNotFoundError):
        text = path.read_text().strip()
        if text:
            return text
    directory.mkdir(parents=True, exist_ok=True)
    made = f"jnl-{secrets.token_hex(8)}"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(made + "\n")
    os.replace(tmp, path)
    return made


def read_committed_hint(directory: Path) -> Position | None:
    with contextlib.suppress(OSError, ValueError):
        return Position.decode((directory / COMMITTED_FILE).read_text().strip())
    return None


def write_committed_hint(directory: Path, position: Position) -> None:
    tmp = directory / (COMMITTED_FILE + ".tmp")
    tmp.write_text(position.encode())
    os.replace(tmp, directory / COMMITTED_FILE)


def pending_bytes(directory: Path, committed: Position) -> int:
    """Bytes in the journal after ``committed`` (what Redis does not hold yet)."""
    total = 0
    for number in segments(directory):
        if number < committed.segment:
            continue
        with contextlib.suppress(FileNotFoundError):
            size = segment_path(directory, number).stat().st_size
            total += max(size - committed.offset, 0) if number == committed.segment else size
    return max(total, 0)


def journal_end(directory: Path) -> Position:
    """The end of what is in the journal now."""
    present = segments(directory)
    if not present:
        return START
    with contextlib.suppress(FileNotFoundError):
        return Position(present[-1], segment_path(directory, present[-1]).stat().st_size)
    return START


# ------------------------------------------------------------------------------------------------ fault injection


class JournalIO:
    """The system calls the journal makes on its files, in one place so that tests can make them fail or slow (EIO,
    ENOSPC, a disk that takes seconds to flush) on real files. Production uses :data:`OS_IO`."""

    def open_segment(self, path: Path) -> int:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)

    def write(self, fd: int, data: bytes) -> int:
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def ftruncate(self, fd: int, length: int) -> None:
        os.ftruncate(fd, length)

    def fallocate(self, fd: int, offset: int, length: int) -> None:
        os.posix_fallocate(fd, offset, length)

    def fsync_dir(self, directory: Path) -> None:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


OS_IO = JournalIO()

PROBE_BYTES = 1 << 20
"""Space a failed writer must be able to reserve (then release) on a fresh segment before it takes records again."""


# ------------------------------------------------------------------------------------------------ the watermark


class Watermark:
    """The end of what the writer has *published*: whole records, on disk as the fsync policy promises. A reader never
    reads past it, so a record the writer then truncates away (a failed write or fsync, answered 503) is never
    delivered. One 64-bit word in shared memory (``segment << 40 | offset``): one aligned store to publish, one load to
    read, across processes.

    Args:
        value: a ``c_int64`` shared with the reading process (``multiprocessing`` ``RawValue('q')``); a private one
            when None (a reader in the same process).
    """

    _SHIFT = 40

    def __init__(self, value: Any = None) -> None:
        if value is None:
            import ctypes

            value = ctypes.c_int64(0)
        self.value = value

    def set(self, position: Position) -> None:
        if position.offset >= 1 << self._SHIFT or position.segment >= 1 << (63 - self._SHIFT):
            raise ValueError(f"position {position.encode()} does not fit the watermark")
        self.value.value = (position.segment << self._SHIFT) | position.offset

    def get(self) -> Position:
        word = int(self.value.value)
        return Position(word >> self._SHIFT, word & ((1 << self._SHIFT) - 1))


# ------------------------------------------------------------------------------------------------ the writer


class JournalUnavailableError(JournalFullError):
    """The journal's disk failed (a write, an fsync, a new segment): the writer refuses every record until a probe of
    a fresh segment succeeds (it retries by itself), so that nothing is answered that the disk may not hold."""


@dataclass
class _Waiter:
    position: Position
    done: Callable[[BaseException | None], None]


class JournalWriter:
    """The API process's end: :meth:`append` records before answering. Thread-safe; nothing slow under its lock.

    ``append`` is one ``write(2)`` of every record it is given (a batch is all or nothing) under a lock held for a few
    µs. Everything that can take a disk's time — fsync, the directory's fsync after a new segment, closing the old one,
    probing a failed disk — runs on the writer's own thread, never under that lock and never on the event loop.
    Under ``always`` the caller then waits (:meth:`durable`, :meth:`wait_durable`) for the group commit that covers its
    records: one fsync for every record written before it.

    A write, fsync or new-segment failure (EIO, ENOSPC, ...) latches the writer *failed*: every append is refused
    (:class:`JournalUnavailableError`: 503 + Retry-After) until a probe succeeds — a fresh segment on which
    :data:`PROBE_BYTES` can be reserved and synced, tried every ``retry_s``. Records the failure leaves unconfirmed
    (the failed write; under ``always`` everything since the last good fsync) are truncated away and were never
    published to the reader (:class:`Watermark`), so they are neither answered nor delivered.

    Args:
        directory: the journal directory (created if missing); one writing process at a time (flock).
        segment_bytes: a segment is closed and the next begun once it holds this many bytes.
        fsync: see :class:`FsyncPolicy`.
        fsync_interval_s: period of the background fsync under ``interval``.
        max_pending_bytes: an append that would take the bytes waiting for the shadow process past this is refused
            (``JournalFullError``), whole.
        start_after: the position Redis holds for this journal, when known: the first segment is numbered after it
            as well as after the segments on disk and the committed hint, so a journal directory restored from an
            older copy (or emptied) never reuses a number Redis has already passed.
        watermark: where to publish the readable end (shared with the shadow process).
        stall_s: while one fsync has run this long, appends are refused (the disk is too slow to answer on time).
        retry_s: how often a failed writer probes the disk.
        io: the system calls (tests inject faults).

    Raises:
        RuntimeError: if another live process writes to ``directory``.
    """

    def __init__(
        self,
        directory: Path,
        *,
        segment_bytes: int = 64 << 20,
        fsync: FsyncPolicy = FsyncPolicy.INTERVAL,
        fsync_interval_s: float = 1.0,
        max_pending_bytes: int = 4 << 30,
        start_after: Position | None = None,
        watermark: Watermark | None = None,
        stall_s: float = 5.0,
        retry_s: float = 0.5,
        io: JournalIO = OS_IO,
    ) -> None:
        if segment_bytes < 1 or max_pending_bytes < 1 or fsync_interval_s <= 0 or stall_s <= 0 or retry_s <= 0:
            raise ValueError("segment_bytes, max_pending_bytes, fsync_interval_s, stall_s, retry_s must be positive")
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.fsync = FsyncPolicy(fsync)
        self.fsync_interval_s = fsync_interval_s
        self.max_pending_bytes = max_pending_bytes
        self.stall_s = stall_s
        self.retry_s = retry_s
        self.io = io
        self.watermark = watermark or Watermark()
        self.epoch = secrets.token_hex(6)
        """This writer's id: the shadow process stores it with each position it commits, so that a position left by
        another writer is recognised as such."""
        directory.mkdir(parents=True, exist_ok=True)
        self.id = journal_id(directory)
        self._lock_fd = _lock(directory / LOCK_FILE)
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        existing = segments(directory)
        hint = read_committed_hint(directory)
        # Pending bytes count from Redis's position when known (the hint can be ahead of a Redis that lost writes).
        committed = start_after if start_after is not None else (hint or START)
        self._sizes: dict[int, int] = {}
        for number in existing:
            with contextlib.suppress(FileNotFoundError):
                self._sizes[number] = segment_path(directory, number).stat().st_size
        # Never append to a segment of an earlier writer (its last line may be torn), nor reuse a number that the
        # hint or Redis has passed (the directory may be an older copy).
        last = max([*existing, (hint or START).segment, (start_after or START).segment])
        self.first_segment = last + 1
        self._segment = self.first_segment
        self._fd = self.io.open_segment(segment_path(directory, self._segment))
        self._offset = 0
        self._sizes[self._segment] = 0
        self._retired: list[tuple[int, int]] = []  # (segment, fd) closed by the sync thread after their last fsync
        self._dir_dirty = self.fsync is not FsyncPolicy.NEVER
        self._pending = self._pending_after(committed)
        self._published = Position(self._segment, 0)
        self._synced = Position(self._segment, 0)
        self._waiters: list[_Waiter] = []
        self._sync_started: float | None = None
        self._failed: str | None = None
        self._untruncated: list[tuple[int, int]] = []  # (segment, length) a failure could not cut back yet
        self._cuts: collections.deque[tuple[int, int]] = collections.deque(maxlen=256)  # (segment, length) cut to
        self._next_probe = 0.0
        self._roll_failed_at = -1
        self.appended = 0
        """Records appended by this writer."""
        self.refused = 0
        """Records refused (journal full, disk error, disk too slow)."""
        self.failures = 0
        """Disk failures that latched the writer (each cleared by a successful probe)."""
        self.last_probe_error: str | None = None
        self._closed = False
        self.watermark.set(self._published)  # the older segments are whole: readable now
        self._thread = threading.Thread(target=self._run, name="journal-sync", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------------------ state

    @property
    def position(self) -> Position:
        """The end of the last record appended."""
        return Position(self._segment, self._offset)

    @property
    def pending(self) -> int:
        """Bytes not yet committed to Redis (exact after each :meth:`set_committed`, plus what was appended since)."""
        return self._pending

    @property
    def failed(self) -> str | None:
        """Why the writer refuses records (a disk failure not yet cleared, and why its last probe failed), or None."""
        if self._failed is None or self.last_probe_error is None:
            return self._failed
        return f"{self._failed}; last probe: {self.last_probe_error}"

    def _pending_after(self, committed: Position) -> int:
        total = 0
        for number, size in self._sizes.items():
            if number > committed.segment:
                total += size
            elif number == committed.segment:
                total += max(size - committed.offset, 0)
        return total

    def set_committed(self, committed: Position) -> None:
        """What the shadow process reports as committed: recompute the pending bytes (no disk access)."""
        with self._lock:
            for number in [n for n in self._sizes if n < committed.segment and n != self._segment]:
                del self._sizes[number]
            self._pending = self._pending_after(committed)

    # ------------------------------------------------------------------------------------------------ appending

    def append(self, record: bytes) -> Position:
        """Write one record (no newline in it); see :meth:`append_many`."""
        return self.append_many([record])

    def append_many(self, records: Sequence[bytes]) -> Position:
        """Write ``records`` (no newline in any) in one ``write``: all of them, or none. Returns the position after
        the last. Under ``always`` they are durable only once :meth:`durable` / :meth:`wait_durable` returns.

        Raises:
            JournalFullError: the journal is over ``max_pending_bytes`` (or closed); nothing was written.
            JournalUnavailableError: the disk failed now or earlier (not yet cleared), or an fsync has hung past
                ``stall_s``; nothing was written.
        """
        if not records:
            return self.position
        data = b"".join(record + b"\n" for record in records)
        n = len(records)
        with self._lock:
            if self._closed:
                raise JournalFullError("the journal is closed")
            if self._failed is not None:
                self.refused += n
                raise JournalUnavailableError(f"the journal's disk failed ({self._failed}); retrying")
            if self._sync_started is not None and time.monotonic() - self._sync_started > self.stall_s:
                # A disk that takes this long to flush: answering on would promise more than it keeps.
                self.refused += n
                raise JournalUnavailableError(
                    f"the journal's disk has not confirmed a write for {time.monotonic() - self._sync_started:.1f} s"
                )
            if self._pending > 0 and self._pending + len(data) > self.max_pending_bytes:
                self.refused += n
                raise JournalFullError(
                    f"{self._pending:,} bytes of decisions wait for Redis (limit {self.max_pending_bytes:,})"
                )
            try:
                written = self.io.write(self._fd, data)
                if written != len(data):
                    raise OSError(errno.ENOSPC, f"short write: {written} of {len(data)} bytes")
            except OSError as error:
                # Cut the file back to its last whole record: nothing of this batch stays, nothing was published.
                try:
                    self.io.ftruncate(self._fd, self._offset)
                except OSError:
                    self._untruncated.append((self._segment, self._offset))
                self.refused += n
                self._fail_locked(f"write: {error}")
                raise JournalUnavailableError(f"journal write failed, nothing was recorded: {error}") from error
            self._offset += written
            self._sizes[self._segment] = self._offset
            self._pending += written
            self.appended += n
            position = Position(self._segment, self._offset)
            if self.fsync is FsyncPolicy.ALWAYS:
                self._work.notify()
            else:
                self._publish_locked(position)
            if self._offset >= self.segment_bytes:
                self._roll_locked()
            return position

    def _publish_locked(self, position: Position) -> None:
        if position > self._published:
            self._published = position
            self.watermark.set(position)

    def _roll_locked(self) -> None:
        """Start the next segment (opening a file: no flush). Its predecessor is synced and closed by the sync thread;
        under ``always`` nothing in the new segment is published before that."""
        number = self._segment + 1
        try:
            fd = self.io.open_segment(segment_path(self.directory, number))
        except OSError as error:
            if self._roll_failed_at != self._segment:
                logger.error("journal: cannot start segment %d (%s); writing on in segment %d", number, error,
                             self._segment)  # fmt: skip
            self._roll_failed_at = self._segment
            return
        if self.fsync is FsyncPolicy.NEVER:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        else:
            self._retired.append((self._segment, self._fd))
            self._dir_dirty = True
            self._work.notify()
        self._segment, self._fd, self._offset = number, fd, 0
        self._sizes[number] = 0
        if self.fsync is not FsyncPolicy.ALWAYS:
            self._publish_locked(Position(number, 0))  # the old segment is finished: a reader may move on

    # ------------------------------------------------------------------------------------------------ durability

    def wait_durable(self, position: Position, timeout_s: float | None = None) -> None:
        """Block until ``position`` is durable as the policy promises (immediately unless ``always``).

        Raises:
            JournalUnavailableError: the fsync failed (the records were truncated away: answer 503).
            TimeoutError: not confirmed within ``timeout_s``.
        """
        if self.fsync is not FsyncPolicy.ALWAYS:
            return
        outcome: list[BaseException | None] = []
        event = threading.Event()

        def done(error: BaseException | None) -> None:
            outcome.append(error)
            event.set()

        if not self._wait_for(position, done):
            return
        if not event.wait(timeout_s):
            raise TimeoutError(f"journal position {position.encode()} not confirmed within {timeout_s} s")
        if outcome[0] is not None:
            raise outcome[0]

    async def durable(self, position: Position) -> None:
        """Wait, without blocking the event loop, until ``position`` is durable (see :meth:`wait_durable`)."""
        if self.fsync is not FsyncPolicy.ALWAYS:
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def settle(error: BaseException | None) -> None:
            if future.done():
                return
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

        def done(error: BaseException | None) -> None:
            loop.call_soon_threadsafe(settle, error)

        if self._wait_for(position, done):
            await future

    def _wait_for(self, position: Position, done: Callable[[BaseException | None], None]) -> bool:
        """Register a waiter; False when ``position`` is already published."""
        with self._lock:
            for segment, length in self._cuts:
                if position.segment == segment and position.offset > length:
                    raise JournalUnavailableError("the journal's disk failed; this record was cut back: not recorded")
            if position <= self._published:
                return False
            if self._failed is not None:
                raise JournalUnavailableError(f"the journal's disk failed ({self._failed}); not recorded")
            self._waiters.append(_Waiter(position, done))
            self._work.notify()
            return True

    def sync(self) -> None:
        """Force what was written to disk now, from the calling thread (tests and shutdown)."""
        self._sync_once()

    # ------------------------------------------------------------------------------------------------ the sync thread

    def _due_locked(self, now: float, last_sync: float) -> bool:
        if self._failed is not None:
            return now >= self._next_probe
        if self._retired or (self._dir_dirty and self.fsync is FsyncPolicy.ALWAYS):
            return True
        if self.fsync is FsyncPolicy.ALWAYS:
            return Position(self._segment, self._offset) > self._published
        if self.fsync is FsyncPolicy.INTERVAL:
            return now - last_sync >= self.fsync_interval_s and Position(self._segment, self._offset) > self._synced
        return False

    def _run(self) -> None:
        last_sync = time.monotonic()
        while True:
            with self._lock:
                while not self._closed:
                    now = time.monotonic()
                    if self._due_locked(now, last_sync):
                        break
                    wait = self.retry_s if self._failed is not None else self.fsync_interval_s
                    self._work.wait(min(wait, self.retry_s))
                if self._closed:
                    return
                failed = self._failed is not None
            try:
                if failed:
                    self._probe()
                else:
                    self._sync_once()
                    last_sync = time.monotonic()
            except Exception:  # this thread must outlive anything
                logger.exception("journal: sync thread error")
                time.sleep(self.retry_s)

    def _sync_once(self) -> None:
        """One group commit: fsync the retired segments, the directory and the current segment, outside the lock;
        then publish (under ``always``) and release the waiters it covers."""
        with self._lock:
            if self._closed or self._failed is not None:
                return
            retired, self._retired = self._retired, []
            dir_dirty, self._dir_dirty = self._dir_dirty, False
            fd, end = self._fd, Position(self._segment, self._offset)
            self._sync_started = time.monotonic()
        try:
            if self.fsync is not FsyncPolicy.NEVER:
                for _, old in retired:
                    self.io.fsync(old)
                if dir_dirty:
                    self.io.fsync_dir(self.directory)
                if end > self._synced:
                    self.io.fsync(fd)
        except OSError as error:
            with self._lock:
                self._sync_started = None
                self._retired = retired + self._retired  # cut back (under always) and closed by the failure
                self._fail_locked(f"fsync: {error}")
            return
        for _, old in retired:
            with contextlib.suppress(OSError):
                os.close(old)
        with self._lock:
            self._sync_started = None
            self._synced = max(self._synced, end)
            if self.fsync is FsyncPolicy.ALWAYS:
                self._publish_locked(end)
            self._release_locked(None)

    def _release_locked(self, error: BaseException | None) -> None:
        keep: list[_Waiter] = []
        for waiter in self._waiters:
            if error is not None or waiter.position <= self._published:
                waiter.done(error)
            else:
                keep.append(waiter)
        self._waiters = keep

    def _fail_locked(self, reason: str) -> None:
        """Latch the failed state. Under ``always``, cut every segment back to what was published (those records
        were not confirmed: their callers get 503) and fail their waiters."""
        first = self._failed is None
        self._failed = reason
        self._next_probe = time.monotonic() + self.retry_s
        if first:
            self.failures += 1
            logger.error("journal: disk failure (%s); refusing records until a probe succeeds", reason)
        if self.fsync is FsyncPolicy.ALWAYS:
            held = [*self._retired, (self._segment, self._fd)]
            for number, fd in held:
                if number < self._published.segment:
                    continue
                length = self._published.offset if number == self._published.segment else 0
                try:
                    self.io.ftruncate(fd, length)
                except OSError:
                    self._untruncated.append((number, length))
                self._pending = max(self._pending - (self._sizes.get(number, 0) - length), 0)
                self._sizes[number] = length
                self._cuts.append((number, length))
            self._offset = self._sizes[self._segment]
        for _, fd in self._retired:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._retired = []
        self._release_locked(JournalUnavailableError(f"the journal's disk failed ({reason}); nothing was recorded"))

    def _probe(self) -> None:
        """A failed writer's way back: cut back what a failure left, then a fresh segment on which space can be
        reserved and synced. Only then are records taken again (on that segment, never after a failed write)."""
        with self._lock:
            untruncated = list(self._untruncated)
            number = self._segment + 1
        try:
            for segment, length in untruncated:
                with contextlib.suppress(FileNotFoundError):
                    os.truncate(segment_path(self.directory, segment), length)
            path = segment_path(self.directory, number)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # a probe that failed half-way
            fd = self.io.open_segment(path)
            try:
                self.io.fallocate(fd, 0, PROBE_BYTES)
                self.io.ftruncate(fd, 0)
                if self.fsync is not FsyncPolicy.NEVER:
                    self.io.fsync(fd)
                    self.io.fsync_dir(self.directory)
            except OSError:
                os.close(fd)
                with contextlib.suppress(OSError):
                    path.unlink()
                raise
        except OSError as error:
            with self._lock:
                self._next_probe = time.monotonic() + self.retry_s
                self.last_probe_error = f"{type(error).__name__}: {error}"
            return
        with self._lock:
            self._untruncated = self._untruncated[len(untruncated) :]
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._segment, self._fd, self._offset = number, fd, 0
            self._sizes[number] = 0
            self._synced = Position(number, 0)
            self._published = Position(number, 0)
            self.watermark.set(self._published)
            self._failed = None
            self.last_probe_error = None
            logger.warning("journal: the disk took a probe; taking records again in segment %d", number)

    def close(self) -> None:
        """Sync (unless ``never``), close the segment, release the directory. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._work.notify_all()
        self._thread.join(10.0)
        with self._lock:
            held = [*self._retired, (self._segment, self._fd)]
            error: BaseException | None = None
            if self._failed is None and self.fsync is not FsyncPolicy.NEVER:
                try:
                    for _, fd in held:
                        self.io.fsync(fd)
                    self._publish_locked(Position(self._segment, self._offset))
                except OSError as failure:
                    error = JournalUnavailableError(f"the journal's disk failed at close ({failure})")
            for _, fd in held:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._retired = []
            self._release_locked(error)
            self._release_locked(JournalFullError("the journal closed before confirming this record"))
            os.close(self._lock_fd)


def _lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RuntimeError(f"{path.parent} is written by another process; give each API process its own") from None
    return fd


# ------------------------------------------------------------------------------------------------ the reader


@dataclass(frozen=True)
class Record:
    """One journal record and the position just after it."""

    data: bytes
    end: Position


class JournalReader:
    """The shadow process's end: read records after a position, segment by segment; delete what is committed.

    Args:
        directory: the journal directory.
        start: the position to read from (what Redis says was committed; :data:`START` for everything).
        retention_s: a fully committed segment is deleted only this long after the commit that finished it, so that
            a Redis that loses its last second of writes (AOF ``everysec``) can be refilled from the journal.
        watermark: the writer's published end (never read past it); None reads whatever the files hold.

    A position the journal does not hold — its segment gone, its offset past the segment's end, segments missing
    between two that are present (the directory restored from an older copy, emptied, or cleaned by hand) — is
    *resynced*: the reader moves on to the next segment present, counts it (:attr:`resyncs`) and says what it could
    not find (:attr:`missing`); records there that Redis did not hold are lost, and that is reported, not hidden.
    """

    def __init__(
        self,
        directory: Path,
        *,
        start: Position = START,
        retention_s: float = 60.0,
        watermark: Watermark | None = None,
    ) -> None:
        self.directory = directory
        self.retention_s = retention_s
        self.watermark = watermark
        self.torn = 0
        """Torn last lines of finished segments skipped (machine crash mid-write)."""
        self.resyncs = 0
        """Times the position was not in the journal and reading went on from the next segment present."""
        self.missing: collections.deque[str] = collections.deque(maxlen=20)
        """What the journal did not hold, newest last (the last 20)."""
        self.hint_errors = 0
        """Committed hints that could not be written (disk full): harmless, the truth is in Redis."""
        self._finished: dict[int, float] = {}  # segment → when the commit that passed its end happened
        self._open: tuple[int, BinaryIO] | None = None
        self._next_listing = 0.0
        self.position = self._clamp(start)

    def _clamp(self, start: Position) -> Position:
        present = segments(self.directory)
        if not present or start.segment >= present[0]:
            return start
        if start != START:
            self._missed(f"segments {start.segment}-{present[0] - 1} (from byte {start.offset} of {start.segment})",
                         Position(present[0], 0))  # fmt: skip
        return Position(present[0], 0)

    def _missed(self, what: str, resumed: Position) -> None:
        self.resyncs += 1
        self.missing.append(what)
        logger.error(
            "journal: %s not in the journal (restored from an older copy, emptied, or deleted before Redis confirmed"
            " it); records there that Redis does not hold are lost; reading on from %s",
            what,
            resumed.encode(),
        )

    def _limit(self) -> Position | None:
        return None if self.watermark is None else self.watermark.get()

    def read(self, max_records: int) -> list[Record]:
        """Up to ``max_records`` whole records after :attr:`position` (advancing it); [] when there is none yet."""
        out: list[Record] = []
        while len(out) < max_records:
            got = self._read_segment(max_records - len(out))
            out.extend(got)
            if len(out) >= max_records or not self._advance():
                break
        return out

    def _file(self, segment: int) -> BinaryIO | None:
        """The open file of ``segment`` (kept open while it is read: an idle reader polls it often)."""
        if self._open is not None and self._open[0] == segment:
            return self._open[1]
        self.close()
        try:
            handle = open(segment_path(self.directory, segment), "rb")  # noqa: SIM115 - kept open across reads
        except FileNotFoundError:
            return None
        self._open = (segment, handle)
        return handle

    def close(self) -> None:
        if self._open is not None:
            self._open[1].close()
            self._open = None

    def _read_segment(self, limit: int) -> list[Record]:
        segment, offset = self.position
        if segment == 0:
            return []
        mark = self._limit()
        if mark is not None and segment > mark.segment:
            return []
        f = self._file(segment)
        if f is None:
            return []
        size = os.fstat(f.fileno()).st_size
        if mark is not None and segment == mark.segment:
            size = min(size, mark.offset)
        if size <= offset:
            return []
        available = size - offset
        chunk = min(limit * 2048, available)
        f.seek(offset)
        data = f.read(chunk)
        while b"\n" not in data and len(data) < available:  # one record longer than the guess: read on
            more = f.read(min(chunk, available - len(data)))
            if not more:
                break
            data += more
        out: list[Record] = []
        start = 0
        while len(out) < limit:
            end = data.find(b"\n", start)
            if end < 0:
                break
            offset += end + 1 - start
            out.append(Record(data[start:end], Position(segment, offset)))
            start = end + 1
        if out:
            self.position = out[-1].end
        return out

    def _advance(self) -> bool:
        """True when there is more to read: whole records in this segment, or a next segment (moved to)."""
        segment, offset = self.position
        now = time.monotonic()
        if now < self._next_listing:
            return False  # an idle reader lists the directory at most every LISTING_INTERVAL_S
        mark = self._limit()
        later = [n for n in segments(self.directory) if n > segment and (mark is None or n <= mark.segment)]
        if not later:
            self._next_listing = now + LISTING_INTERVAL_S
            return False
        nxt = Position(later[0], 0)
        if segment != 0:
            # The writer has moved on, so this segment will not grow: whatever is left after the last newline is torn.
            f = self._file(segment)
            if f is None:
                self._missed(f"segment {segment} (from byte {offset})", nxt)
            else:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                if size < offset:
                    self._missed(f"bytes {size}-{offset} of segment {segment}", nxt)
                else:
                    f.seek(offset)
                    rest = f.read()
                    if b"\n" in rest:
                        return True  # whole records arrived after our read: read them first
                    if rest:
                        self.torn += 1
                        logger.error("journal: segment %d ends with a torn record of %d bytes; skipped", segment,
                                     len(rest))  # fmt: skip
                        self.dead_letter(rest, "torn record (machine crash during a write)")
            if later[0] > segment + 1:
                self._missed(f"segments {segment + 1}-{later[0] - 1}", nxt)
        self.position = nxt
        return True

    def committed(self, position: Position) -> None:
        """Redis now holds everything up to ``position``: delete segments kept long enough, then note the position
        (a hint only: a full disk that refuses it costs nothing, and deleting first is what frees the space)."""
        now = time.monotonic()
        for number in segments(self.directory):
            if number < position.segment:
                self._finished.setdefault(number, now)
        self.collect()
        try:
            write_committed_hint(self.directory, position)
        except OSError as error:
            self.hint_errors += 1
            if self.hint_errors == 1 or self.hint_errors % 1000 == 0:
                logger.warning("journal: committed hint not written (%s); %d times so far", error, self.hint_errors)

    def collect(self) -> None:
        """Delete the committed segments whose retention has run out."""
        now = time.monotonic()
        for number, at in list(self._finished.items()):
            if now - at >= self.retention_s:
                try:
                    segment_path(self.directory, number).unlink()
                except FileNotFoundError:
                    pass
                except OSError as error:
                    logger.warning("journal: committed segment %d not deleted: %s", number, error)
                    continue
                del self._finished[number]

    def dead_letter(self, data: bytes, reason: str) -> None:
        """Keep a record that cannot become an event, with the reason (never silently dropped). The file is private
        (0600): records hold customers' purchases.

        Raises:
            OSError: it could not be kept (disk full): the caller keeps the record and tries again later.
        """
        line = orjson.dumps({"record": data.decode("utf-8", "replace"), "reason": reason}) + b"\n"
        fd = os.open(self.directory / DEAD_LETTER_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            written = os.write(fd, line)
            if written != len(line):
                os.ftruncate(fd, os.fstat(fd).st_size - written)
                raise OSError(errno.ENOSPC, f"short write to the dead letter: {written} of {len(line)} bytes")
            os.fsync(fd)
        finally:
            os.close(fd)


def iter_records(directory: Path) -> Iterator[bytes]:
    """Every whole record in the journal, oldest first (tests and tools)."""
    for number in segments(directory):
        with open(segment_path(directory, number), "rb") as f:
            for line in f:
                if line.endswith(b"\n"):
                    yield line[:-1]
