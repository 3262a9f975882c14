"""The journal under the faults a production disk and a confused directory produce: EIO and ENOSPC on write, fsync and
a new segment (injected through :class:`JournalIO` on real files), a disk too slow to flush, batches that meet a full
journal, a directory that disagrees with the committed position, a dead letter or hint the disk refuses."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shadowgate.decisioning.policies import load_policy
from shadowgate.events import hash_customer_id
from shadowgate.serving.journal import (
    COMMITTED_FILE,
    DEAD_LETTER_FILE,
    START,
    FsyncPolicy,
    JournalFullError,
    JournalIO,
    JournalReader,
    JournalUnavailableError,
    JournalWriter,
    Position,
    Watermark,
    iter_records,
    pending_bytes,
    segment_path,
    segments,
    write_committed_hint,
)
from shadowgate.serving.metrics import ServingMetrics
from shadowgate.serving.shadow import FRAME_VERSION, ShadowJob, ShadowWorker, frame_version

FIXTURES = Path(__file__).parent.parent / "fixtures"


class Faulty(JournalIO):
    """Real system calls, except those told to fail (with an errno) or to take their time."""

    def __init__(self) -> None:
        self.fail: dict[str, int] = {}
        self.delay: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def _enter(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        if name in self.delay:
            time.sleep(self.delay[name])
        if name in self.fail:
            raise OSError(self.fail[name], os.strerror(self.fail[name]))

    def open_segment(self, path: Path) -> int:
        self._enter("open")
        return super().open_segment(path)

    def write(self, fd: int, data: bytes) -> int:
        self._enter("write")
        return super().write(fd, data)

    def fsync(self, fd: int) -> None:
        self._enter("fsync")
        super().fsync(fd)

    def fallocate(self, fd: int, offset: int, length: int) -> None:
        self._enter("fallocate")
        super().fallocate(fd, offset, length)


def _read(directory: Path, start: Position = START, watermark: Watermark | None = None) -> list[bytes]:
    reader = JournalReader(directory, start=start, watermark=watermark)
    out: list[bytes] = []
    while batch := reader.read(50):
        out += [r.data for r in batch]
    reader.close()
    return out


def _until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


# ------------------------------------------------------------------------------------------------ disagreement


def test_the_writer_starts_after_the_disk_the_hint_and_redis(tmp_path: Path) -> None:
    for number in (1, 2, 3):
        segment_path(tmp_path, number).write_bytes(b"old\n")
    write_committed_hint(tmp_path, Position(5, 0))
    assert JournalWriter(tmp_path, fsync=FsyncPolicy.NEVER).first_segment == 6
    (tmp_path / "writer.lock").unlink()
    writer = JournalWriter(tmp_path, fsync=FsyncPolicy.NEVER, start_after=Position(9, 10))
    assert writer.first_segment == 10 and writer.position == Position(10, 0)
    # Pending counts from Redis's position: segments 1-3 are behind it, only the new records wait.
    writer.append(b"new")
    assert writer.pending == 4
    writer.close()


def test_a_position_beyond_the_journal_is_resynced_and_what_is_missing_reported(tmp_path: Path) -> None:
    # The directory was restored from an older copy: segments 1-2; Redis had reached 7:100; the writer began at 8.
    for number in (1, 2):
        segment_path(tmp_path, number).write_bytes(b"old-%d\n" % number)
    writer = JournalWriter(tmp_path, fsync=FsyncPolicy.NEVER, start_after=Position(7, 100))
    writer.append(b"new-1")
    writer.append(b"new-2")
    reader = JournalReader(tmp_path, start=Position(7, 100), watermark=writer.watermark)
    assert [r.data for r in reader.read(10)] == [b"new-1", b"new-2"]
    assert reader.resyncs == 1 and list(reader.missing) == ["segment 7 (from byte 100)"]
    # A segment shorter than the position: the bytes between are reported, reading goes on at the next segment.
    reader.close()
    writer.close()
    segment_path(tmp_path, 8).write_bytes(b"x\n")  # cut back to 2 bytes
    shorter = JournalReader(tmp_path, start=Position(8, 40))
    assert shorter.read(10) == [] and shorter.resyncs == 0  # nothing later: it waits
    segment_path(tmp_path, 9).write_bytes(b"after\n")
    shorter._next_listing = 0.0
    assert [r.data for r in shorter.read(10)] == [b"after"]
    assert list(shorter.missing) == ["bytes 2-40 of segment 8"]


def test_a_gap_between_segments_is_reported(tmp_path: Path) -> None:
    segment_path(tmp_path, 1).write_bytes(b"a\n")
    segment_path(tmp_path, 4).write_bytes(b"b\n")
    reader = JournalReader(tmp_path)
    assert [r.data for r in reader.read(10)] == [b"a", b"b"]
    assert list(reader.missing) == ["segments 2-3"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    old=st.integers(min_value=0, max_value=6),
    kept_from=st.integers(min_value=1, max_value=7),
    hint=st.none() | st.integers(min_value=1, max_value=12),
    redis=st.none() | st.tuples(st.integers(min_value=1, max_value=12), st.integers(min_value=0, max_value=50)),
    records=st.integers(min_value=1, max_value=20),
)
def test_no_state_of_the_directory_hides_undelivered_records(
    tmp_path_factory: pytest.TempPathFactory,
    old: int,
    kept_from: int,
    hint: int | None,
    redis: tuple[int, int] | None,
    records: int,
) -> None:
    """Whatever the directory holds (older segments, a gap, none; a hint ahead, behind, none) and wherever Redis's
    position is, the writer's new records are counted pending and a reader from Redis's position delivers them all."""
    directory = tmp_path_factory.mktemp("journal")
    for number in range(kept_from, kept_from + old):
        segment_path(directory, number).write_bytes(b"old\n" * 3)
    if hint is not None:
        write_committed_hint(directory, Position(hint, 0))
    committed = Position(*redis) if redis is not None else START
    writer = JournalWriter(directory, fsync=FsyncPolicy.NEVER, start_after=Position(*redis) if redis else None)
    new = [f"new-{i}".encode() for i in range(records)]
    writer.append_many(new)
    expected = sum(len(r) + 1 for r in new)
    assert writer.pending >= expected
    assert pending_bytes(directory, committed) >= expected
    got = _read(directory, start=committed, watermark=writer.watermark)
    assert got[-records:] == new
    writer.close()


# ------------------------------------------------------------------------------------------------ batches


def test_a_batch_is_all_or_nothing_when_the_journal_is_nearly_full(tmp_path: Path) -> None:
    writer = JournalWriter(tmp_path, max_pending_bytes=25, fsync=FsyncPolicy.NEVER)
    writer.append_many([b"0123456789", b"0123456789"])  # 22 bytes: under the limit
    with pytest.raises(JournalFullError):
        writer.append_many([b"a", b"b", b"c"])  # would be accepted one by one until the limit: not at all
    assert writer.refused == 3 and writer.appended == 2
    writer.append_many([b"x"])  # 22 < 25: still taken
    with pytest.raises(JournalFullError):
        writer.append_many([b"y", b"z"])
    assert writer.appended == 3 and writer.refused == 5
    writer.close()
    assert list(iter_records(tmp_path)) == [b"0123456789", b"0123456789", b"x"]


def test_a_short_write_of_a_batch_leaves_nothing_of_it(tmp_path: Path) -> None:
    class Short(Faulty):
        def write(self, fd: int, data: bytes) -> int:
            if len(data) > 20:  # the disk fills part-way through the batch: two whole records reach the file
                return os.write(fd, data[:13])
            return super().write(fd, data)

    writer = JournalWriter(tmp_path, fsync=FsyncPolicy.NEVER, io=Short(), retry_s=0.05)
    writer.append(b"kept")
    with pytest.raises(JournalUnavailableError, match="short write"):
        writer.append_many([b"aaa", b"bbb", b"ccc", b"ddd", b"eee", b"fff"])
    assert _read(tmp_path, watermark=writer.watermark) == [b"kept"]
    _until(lambda: writer.failed is None)
    writer.append(b"after")
    writer.close()
    assert list(iter_records(tmp_path)) == [b"kept", b"after"]


# ------------------------------------------------------------------------------------------------ disk failures


@pytest.mark.parametrize("code", [errno.EIO, errno.ENOSPC])
@pytest.mark.parametrize("policy", [FsyncPolicy.NEVER, FsyncPolicy.INTERVAL, FsyncPolicy.ALWAYS])
def test_a_failed_write_latches_refuses_and_recovers_by_itself(tmp_path: Path, policy: FsyncPolicy, code: int) -> None:
    io = Faulty()
    writer = JournalWriter(tmp_path, fsync=policy, fsync_interval_s=0.01, io=io, retry_s=0.05)
    answered = [b"before"]
    writer.wait_durable(writer.append(b"before"), 5.0)
    io.fail["write"] = code
    io.fail["fallocate"] = code  # the probe meets the same disk
    with pytest.raises(JournalUnavailableError):
        writer.append(b"failed")
    assert writer.failed is not None and writer.failures == 1
    time.sleep(0.2)  # probes fail while the fault lasts
    io.fail.pop("write")
    with pytest.raises(JournalUnavailableError, match="disk failed"):
        writer.append(b"refused while latched")  # latched: refused without touching the disk
    assert writer.failed is not None
    io.fail.pop("fallocate")
    _until(lambda: writer.failed is None)
    writer.wait_durable(writer.append(b"after"), 5.0)
    answered.append(b"after")
    assert writer.refused == 2 and writer.failures == 1
    writer.close()
    assert list(iter_records(tmp_path)) == answered  # nothing answered lost, nothing refused kept, no duplicate


@pytest.mark.parametrize("code", [errno.EIO, errno.ENOSPC])
def test_a_failed_fsync_under_always_cuts_the_unconfirmed_records_away(tmp_path: Path, code: int) -> None:
    io = Faulty()
    writer = JournalWriter(tmp_path, fsync=FsyncPolicy.ALWAYS, io=io, retry_s=0.05)
    writer.wait_durable(writer.append(b"confirmed"), 5.0)
    io.fail["fsync"] = code
    end = writer.append_many([b"unconfirmed-1", b"unconfirmed-2"])
    with pytest.raises(JournalUnavailableError):
        writer.wait_durable(end, 5.0)  # the caller answers 503
    # Never published to a reader, and cut from the file.
    assert _read(tmp_path, watermark=writer.watermark) == [b"confirmed"]
    assert list(iter_records(tmp_path)) == [b"confirmed"]
    with pytest.raises(JournalUnavailableError):
        writer.append(b"refused")
    io.fail.pop("fsync")
    _until(lambda: writer.failed is None)
    # A waiter that comes late for a record that was cut back learns it too (it is never told "durable").
    with pytest.raises(JournalUnavailableError, match="cut back"):
        writer.wait_durable(end, 1.0)
    writer.wait_durable(writer.append(b"after"), 5.0)
    writer.close()
    assert list(iter_records(tmp_path)) == [b"confirmed", b"after"]
    assert _read(tmp_path) == [b"confirmed", b"after"]


def test_a_failed_interval_fsync_latches_until_the_disk_answers(tmp_path: Path) -> None:
    io = Faulty()
    writer = JournalWriter(tmp_path, fsync=FsyncPolicy.INTERVAL, fsync_interval_s=0.02, io=io, retry_s=0.05)
    writer.append(b"one")
    io.fail["fsync"] = errno.EIO
    _until(lambda: writer.failed is not None)  # no longer only logged
    with pytest.raises(JournalUnavailableError):
        writer.append(b"refused")
    io.fail.pop("fsync")
    _until(lambda: writer.failed is None)
    writer.append(b"two")
    writer.close()
    assert list(iter_records(tmp_path)) == [b"one", b"two"]  # "one" was answered under interval: it stays


def test_a_segment_that_cannot_be_started_leaves_the_writer_consistent(tmp_path: Path) -> None:
    io = Faulty()
    writer = JournalWriter(tmp_path, fsync=FsyncPolicy.INTERVAL, segment_bytes=5, io=io, fsync_interval_s=0.01)
    io.fail["open"] = errno.ENOSPC
    records = [f"record-{i}".encode() for i in range(5)]
    for record in records[:3]:
        writer.append(record)  # each fills a segment; none can start: it writes on in the same one
    assert writer.position.segment == writer.first_segment and writer.failed is None
    io.fail.pop("open")
    for record in records[3:]:
        writer.append(record)
    assert writer.position.segment == writer.first_segment + 2
    writer.close()
    assert list(iter_records(tmp_path)) == records


# ------------------------------------------------------------------------------------------------ a slow disk


def test_a_slow_fsync_holds_no_lock_that_appends_take(tmp_path: Path) -> None:
    io = Faulty()
    io.delay["fsync"] = 0.4
    writer = JournalWriter(tmp_path, fsync=FsyncPolicy.ALWAYS, io=io, stall_s=5.0)
    first = writer.append(b"first")
    waiting = threading.Thread(target=writer.wait_durable, args=(first, 10.0))
    waiting.start()
    time.sleep(0.1)  # the sync thread is inside its 0.4 s fsync now
    started = time.perf_counter()
    ends = [writer.append(f"more-{i}".encode()) for i in range(100)]
    took = time.perf_counter() - started
    assert took < 0.2, f"100 appends took {took:.3f} s behind a slow fsync"
    # One group commit then covers all 100: far fewer fsyncs than records.
    writer.wait_durable(ends[-1], 10.0)
    waiting.join()
    assert io.calls["fsync"] <= 6
    writer.close()


def test_a_disk_that_hangs_past_the_stall_limit_is_refused_then_taken_again(tmp_path: Path) -> None:
    io = Faulty()
    writer = JournalWriter(tmp_path, fsync=FsyncPolicy.ALWAYS, io=io, stall_s=0.2)
    io.delay["fsync"] = 0.8
    end = writer.append(b"slow")
    time.sleep(0.5)  # the fsync has run 0.5 s > 0.2 s
    with pytest.raises(JournalUnavailableError, match="not confirmed a write"):
        writer.append(b"refused")
    writer.wait_durable(end, 5.0)  # it did finish: the record is confirmed
    io.delay.pop("fsync")
    writer.wait_durable(writer.append(b"fast again"), 5.0)
    writer.close()
    assert list(iter_records(tmp_path)) == [b"slow", b"fast again"]


@pytest.mark.anyio
async def test_durable_waits_on_the_event_loop_without_blocking_it(tmp_path: Path) -> None:
    import asyncio

    io = Faulty()
    io.delay["fsync"] = 0.3
    writer = JournalWriter(tmp_path, fsync=FsyncPolicy.ALWAYS, io=io)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    await asyncio.gather(*(writer.durable(writer.append(f"r-{i}".encode())) for i in range(20)))
    ticker.cancel()
    assert ticks >= 20  # the loop kept turning through ≥ 0.3 s of fsync
    writer.close()


# ------------------------------------------------------------------------------------------------ the reader's disk


def test_a_full_disk_for_hint_and_dead_letter_is_not_fatal_and_deletion_comes_first(tmp_path: Path) -> None:
    writer = JournalWriter(tmp_path, segment_bytes=5, fsync=FsyncPolicy.NEVER)
    for i in range(4):
        writer.append(f"record-{i}".encode())
    writer.close()
    (tmp_path / (COMMITTED_FILE + ".tmp")).mkdir()  # the hint cannot be written (as on a full disk)
    reader = JournalReader(tmp_path, retention_s=0)
    records = reader.read(3)
    reader.committed(records[-1].end)
    assert reader.hint_errors == 1
    assert segments(tmp_path) == [3, 4, 5]  # deleted all the same: that is what frees space
    (tmp_path / DEAD_LETTER_FILE).mkdir()
    with pytest.raises(OSError):
        reader.dead_letter(b"bad", "reason")  # the caller keeps the record and retries
    (tmp_path / DEAD_LETTER_FILE).rmdir()
    reader.dead_letter(b"bad", "reason")
    assert stat.S_IMODE((tmp_path / DEAD_LETTER_FILE).stat().st_mode) == 0o600
    assert orjson.loads((tmp_path / DEAD_LETTER_FILE).read_bytes()) == {"record": "bad", "reason": "reason"}


def test_segments_are_private(tmp_path: Path) -> None:
    writer = JournalWriter(tmp_path, fsync=FsyncPolicy.NEVER)
    writer.append(b"x")
    writer.close()
    assert {stat.S_IMODE(segment_path(tmp_path, n).stat().st_mode) for n in segments(tmp_path)} == {0o600}


# ------------------------------------------------------------------------------------------------ frame versions


def test_frames_of_the_previous_release_are_read() -> None:
    """A version-1 frame, as the previous release wrote it (raw customer id in the transaction)."""
    frame = orjson.loads((FIXTURES / "journal_frame_v1.json").read_bytes())
    assert frame_version(frame) == 1 and FRAME_VERSION == 2
    job = ShadowJob.from_frame(frame)
    assert job.customer_id_hash is None and job.transaction["customer_id"] == "cus_v1"
    worker = ShadowWorker(policy=load_policy("conservative"), events=None, customer_salt="salt", predictions_stream="s",  # type: ignore[arg-type]
                          budget_ms=5.0, metrics=ServingMetrics())  # fmt: skip
    payload = orjson.loads(worker.event_fields(job, [job.decided])["payload"])
    assert payload["customer_id_hash"] == hash_customer_id("cus_v1", salt="salt")
    assert "customer_id" not in payload["inputs"]


def test_a_frame_of_a_newer_release_is_refused_with_its_version() -> None:
    frame = orjson.loads((FIXTURES / "journal_frame_v1.json").read_bytes())
    with pytest.raises(ValueError, match="version 3"):
        ShadowJob.from_frame({**frame, "v": 3})


def test_the_restored_copy_scenario_end_to_end(tmp_path: Path) -> None:
    """Write, snapshot, write on, commit; restore the snapshot; a new writer that knows Redis's position numbers after
    it, and everything it writes is pending and read."""
    live = tmp_path / "live"
    writer = JournalWriter(live, fsync=FsyncPolicy.NEVER, segment_bytes=20)
    writer.append_many([b"a" * 10, b"b" * 10])
    writer.close()
    shutil.copytree(live, tmp_path / "snapshot")
    (tmp_path / "snapshot" / "writer.lock").unlink()
    writer = JournalWriter(live, fsync=FsyncPolicy.NEVER, segment_bytes=20)
    writer.append_many([b"c" * 10, b"d" * 10, b"e" * 10])
    redis_position = writer.position
    writer.close()
    shutil.rmtree(live)
    shutil.copytree(tmp_path / "snapshot", live)
    again = JournalWriter(live, fsync=FsyncPolicy.NEVER, segment_bytes=20, start_after=redis_position)
    again.append(b"fresh")
    assert again.first_segment == redis_position.segment + 1
    assert pending_bytes(live, redis_position) == len(b"fresh\n") and again.pending == len(b"fresh\n")
    reader = JournalReader(live, start=redis_position, watermark=again.watermark)
    assert [r.data for r in reader.read(10)] == [b"fresh"]
    again.close()
