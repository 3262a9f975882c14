"""The decision journal: an append-only segment log every answered decision (and accepted outcome) is written to
before the answer, so that no process death loses one.

The API process is the only writer (:class:`JournalWriter`, one ``write(2)`` per record, a few µs). The shadow
process tails the journal (:class:`JournalReader`), turns each record into its event, and commits a batch of events
to Redis together with the journal position it reached, in one atomic script (see
:mod:`shadowgate.serving.committer`). A restarted shadow process resumes from the position Redis holds, so every
record becomes exactly one stream entry whatever died: the API process (its records are in the file), the shadow
process (the file and Redis agree on where it stopped), both, or Redis (the journal keeps what Redis has not
confirmed; see ``retention``).

Layout of a journal directory::

    journal.id          random id of this journal (names its position in Redis); made once
    writer.lock         flock held by the writing process (one writer per directory)
    000000000001.jnl    segments: newline-terminated records, numbered in write order
    committed           last position the shadow process committed to Redis (a hint for clean-up, not the truth)
    deadletter.jsonl    records that could not be turned into an event, with the reason

A new writer always starts a new segment, so a record torn by a machine crash in the middle of a ``write`` is only
ever the last line of a finished segment; the reader skips it (dead-lettered, counted).

Durability of the file itself is the :class:`FsyncPolicy`: a written record survives the death of any process as
soon as ``write`` returns (it is in the kernel's page cache); surviving a machine crash or power loss needs it on
disk: ``interval`` fsyncs in the background (loses at most that interval), ``always`` before every answer.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO, NamedTuple

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
        segment, offset = text.split(":")
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
            total += size - committed.offset if number == committed.segment else size
    return max(total, 0)


def journal_end(directory: Path) -> Position:
    """The end of what is in the journal now."""
    present = segments(directory)
    if not present:
        return START
    with contextlib.suppress(FileNotFoundError):
        return Position(present[-1], segment_path(directory, present[-1]).stat().st_size)
    return START


# ------------------------------------------------------------------------------------------------ the writer


class JournalWriter:
    """The API process's end: :meth:`append` one record before answering. Thread-safe.

    Args:
        directory: the journal directory (created if missing); one writing process at a time (flock).
        segment_bytes: a segment is closed and the next begun once it holds this many bytes.
        fsync: see :class:`FsyncPolicy`.
        fsync_interval_s: period of the background fsync under ``interval``.
        max_pending_bytes: :meth:`append` refuses (``JournalFullError``) while more than this many bytes wait
            for the shadow process to commit them.

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
    ) -> None:
        if segment_bytes < 1 or max_pending_bytes < 1 or fsync_interval_s <= 0:
            raise ValueError("segment_bytes, max_pending_bytes and fsync_interval_s must be positive")
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.fsync = FsyncPolicy(fsync)
        self.fsync_interval_s = fsync_interval_s
        self.max_pending_bytes = max_pending_bytes
        directory.mkdir(parents=True, exist_ok=True)
        self.id = journal_id(directory)
        self._lock_fd = _lock(directory / LOCK_FILE)
        self._lock = threading.Lock()
        existing = segments(directory)
        # Never append to a segment of an earlier writer: its last line may be torn.
        self._segment = (existing[-1] if existing else 0) + 1
        self._fd = self._open(self._segment)
        self._offset = 0
        self._dirty = False
        committed = read_committed_hint(directory) or START
        self._pending = pending_bytes(directory, committed)
        self.appended = 0
        """Records appended by this writer."""
        self.refused = 0
        """Records refused (journal full or disk error)."""
        self._closed = False
        self._stop = threading.Event()
        self._syncer: threading.Thread | None = None
        if self.fsync is FsyncPolicy.INTERVAL:
            self._syncer = threading.Thread(target=self._sync_loop, name="journal-fsync", daemon=True)
            self._syncer.start()

    def _open(self, number: int) -> int:
        fd = os.open(segment_path(self.directory, number), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        if self.fsync is not FsyncPolicy.NEVER:
            _fsync_dir(self.directory)  # the new name itself must survive a crash
        return fd

    @property
    def position(self) -> Position:
        """The end of the last record appended."""
        return Position(self._segment, self._offset)

    @property
    def pending(self) -> int:
        """Estimated bytes not yet committed to Redis (exact after each :meth:`set_committed`)."""
        return self._pending

    def append(self, record: bytes) -> Position:
        """Write one record (no newline in it) and return the position after it.

        Raises:
            JournalFullError: the journal is over ``max_pending_bytes``, or the write failed (disk full, I/O error);
                nothing was written then.
        """
        line = record + b"\n"
        with self._lock:
            if self._pending >= self.max_pending_bytes:
                self.refused += 1
                raise JournalFullError(
                    f"{self._pending:,} bytes of decisions wait for Redis (limit {self.max_pending_bytes:,})"
                )
            if self._closed:
                raise JournalFullError("the journal is closed")
            try:
                written = os.write(self._fd, line)
                if written != len(line):
                    # A short write (disk full mid-record): cut it off so the file ends on a whole record.
                    os.ftruncate(self._fd, self._offset)
                    raise OSError(f"short write: {written} of {len(line)} bytes")
                if self.fsync is FsyncPolicy.ALWAYS:
                    os.fsync(self._fd)
            except OSError as error:
                self.refused += 1
                raise JournalFullError(f"journal write failed: {error}") from error
            self._offset += written
            self._pending += written
            self._dirty = True
            self.appended += 1
            position = Position(self._segment, self._offset)
            if self._offset >= self.segment_bytes:
                self._roll()
            return position

    def _roll(self) -> None:
        old = self._fd
        if self.fsync is not FsyncPolicy.NEVER:
            os.fsync(old)
        self._segment += 1
        self._fd = self._open(self._segment)
        self._offset = 0
        os.close(old)

    def set_committed(self, committed: Position) -> None:
        """What the shadow process reports as committed: recompute the pending bytes exactly."""
        with self._lock:
            self._pending = pending_bytes(self.directory, committed)

    def sync(self) -> None:
        """Force what was written to disk now."""
        with self._lock:
            if self._dirty and not self._closed:
                os.fsync(self._fd)
                self._dirty = False

    def _sync_loop(self) -> None:
        while not self._stop.wait(self.fsync_interval_s):
            try:
                self.sync()
            except OSError:
                logger.exception("journal: fsync failed")

    def close(self) -> None:
        """Sync (unless ``never``), close the segment, release the directory. Idempotent."""
        self._stop.set()
        if self._syncer is not None:
            self._syncer.join(5.0)
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(OSError):
                if self.fsync is not FsyncPolicy.NEVER:
                    os.fsync(self._fd)
                os.close(self._fd)
            os.close(self._lock_fd)


def _lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RuntimeError(f"{path.parent} is written by another process; give each API process its own") from None
    return fd


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
    """

    def __init__(self, directory: Path, *, start: Position = START, retention_s: float = 60.0) -> None:
        self.directory = directory
        self.retention_s = retention_s
        self.torn = 0
        """Torn last lines of finished segments skipped (machine crash mid-write)."""
        self._finished: dict[int, float] = {}  # segment → when the commit that passed its end happened
        self._open: tuple[int, BinaryIO] | None = None
        self._next_listing = 0.0
        self.position = self._clamp(start)

    def _clamp(self, start: Position) -> Position:
        present = segments(self.directory)
        if not present:
            return start
        if start.segment < present[0]:
            if start != START:
                logger.error(
                    "journal: position %s is older than the oldest segment %d (deleted before Redis confirmed it?);"
                    " reading from there",
                    start.encode(),
                    present[0],
                )
            return Position(present[0], 0)
        return start

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
        f = self._file(segment)
        if f is None:
            return []
        if os.fstat(f.fileno()).st_size <= offset:
            return []
        size = limit * 2048
        f.seek(offset)
        data = f.read(size)
        while b"\n" not in data:  # one record longer than the guess: read on until it ends (or the file does)
            more = f.read(size)
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
        later = [n for n in segments(self.directory) if n > segment]
        if not later:
            self._next_listing = now + LISTING_INTERVAL_S
            return False
        # The writer has moved on, so this segment will not grow: whatever is left after the last newline is torn.
        rest = b""
        f = self._file(segment)
        if f is not None:
            f.seek(offset)
            rest = f.read()
        if b"\n" in rest:
            return True  # whole records arrived after our read: read them first
        if rest:
            self.torn += 1
            logger.error("journal: segment %d ends with a torn record of %d bytes; skipped", segment, len(rest))
            self.dead_letter(rest, "torn record (machine crash during a write)")
        self.position = Position(later[0], 0)
        return True

    def committed(self, position: Position) -> None:
        """Redis now holds everything up to ``position``: note it, and delete segments kept long enough."""
        now = time.monotonic()
        for number in segments(self.directory):
            if number < position.segment:
                self._finished.setdefault(number, now)
        write_committed_hint(self.directory, position)
        for number, at in list(self._finished.items()):
            if now - at >= self.retention_s:
                with contextlib.suppress(FileNotFoundError):
                    segment_path(self.directory, number).unlink()
                del self._finished[number]

    def dead_letter(self, data: bytes, reason: str) -> None:
        """Keep a record that cannot become an event, with the reason (never silently dropped)."""
        import json

        line = json.dumps({"record": data.decode("utf-8", "replace"), "reason": reason}) + "\n"
        with open(self.directory / DEAD_LETTER_FILE, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())


def iter_records(directory: Path) -> Iterator[bytes]:
    """Every whole record in the journal, oldest first (tests and tools)."""
    for number in segments(directory):
        with open(segment_path(directory, number), "rb") as f:
            for line in f:
                if line.endswith(b"\n"):
                    yield line[:-1]
