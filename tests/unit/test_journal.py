"""The decision journal on its own: append, read back across segments and writers, torn tails, limits, clean-up."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shadowgate.serving.journal import (
    DEAD_LETTER_FILE,
    START,
    FsyncPolicy,
    JournalFullError,
    JournalReader,
    JournalWriter,
    Position,
    iter_records,
    journal_end,
    journal_id,
    pending_bytes,
    segment_path,
    segments,
)


def _read_all(directory: Path, start: Position = START) -> list[bytes]:
    reader = JournalReader(directory, start=start)
    out: list[bytes] = []
    while batch := reader.read(7):
        out += [r.data for r in batch]
    reader.close()
    return out


def test_records_come_back_in_order_across_segments(tmp_path: Path) -> None:
    writer = JournalWriter(tmp_path, segment_bytes=100, fsync=FsyncPolicy.NEVER)
    records = [f"record-{i:03d}".encode() for i in range(50)]
    ends = [writer.append(r) for r in records]
    writer.close()
    assert len(segments(tmp_path)) == 50 * 11 // 100 + 1  # 11 bytes a line, a new segment past 100 bytes
    assert _read_all(tmp_path) == records
    # Reading from any record's end position yields exactly the records after it.
    assert _read_all(tmp_path, start=ends[19]) == records[20:]
    assert journal_end(tmp_path) == writer.position


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=9000), min_size=1, max_size=60),
    segment_bytes=st.integers(min_value=1, max_value=20_000),
    writers=st.integers(min_value=1, max_value=3),
)
def test_any_sizes_any_segments_any_writers_read_back_exactly(
    tmp_path_factory: pytest.TempPathFactory, sizes: list[int], segment_bytes: int, writers: int
) -> None:
    directory = tmp_path_factory.mktemp("journal")
    records = [bytes([65 + i % 26]) * n for i, n in enumerate(sizes)]
    per_writer = -(-len(records) // writers)
    for w in range(writers):  # one writer after the other, as API processes restart
        writer = JournalWriter(directory, segment_bytes=segment_bytes, fsync=FsyncPolicy.NEVER)
        for record in records[w * per_writer : (w + 1) * per_writer]:
            writer.append(record)
        writer.close()
    assert _read_all(directory) == records
    assert list(iter_records(directory)) == records


def test_a_new_writer_never_appends_to_an_old_segment_and_a_torn_tail_is_dead_lettered(tmp_path: Path) -> None:
    first = JournalWriter(tmp_path, fsync=FsyncPolicy.NEVER)
    first.append(b"one")
    first.append(b"two")
    first.close()
    with open(segment_path(tmp_path, 1), "ab") as f:
        f.write(b'{"half a rec')  # a machine crash in the middle of a write
    second = JournalWriter(tmp_path, fsync=FsyncPolicy.NEVER)
    assert second.position == Position(2, 0)
    second.append(b"three")
    second.close()
    reader = JournalReader(tmp_path)
    got = [r.data for r in reader.read(10)]
    assert got == [b"one", b"two", b"three"]
    assert reader.torn == 1
    kept = [json.loads(line) for line in (tmp_path / DEAD_LETTER_FILE).read_text().splitlines()]
    assert kept == [{"record": '{"half a rec', "reason": "torn record (machine crash during a write)"}]


def test_one_writer_per_directory(tmp_path: Path) -> None:
    writer = JournalWriter(tmp_path, fsync=FsyncPolicy.NEVER)
    with pytest.raises(RuntimeError, match="another process"):
        JournalWriter(tmp_path, fsync=FsyncPolicy.NEVER)
    writer.close()
    JournalWriter(tmp_path, fsync=FsyncPolicy.NEVER).close()  # free again once closed


def test_over_the_limit_appends_are_refused_until_committed(tmp_path: Path) -> None:
    writer = JournalWriter(tmp_path, max_pending_bytes=33, fsync=FsyncPolicy.NEVER)
    writer.append(b"0123456789")  # 11 bytes with the newline
    writer.append(b"0123456789")
    end = writer.append(b"0123456789")  # 33 = the limit: the next one would pass it, refused
    with pytest.raises(JournalFullError):
        writer.append(b"refused")
    assert writer.refused == 1 and writer.appended == 3
    writer.set_committed(end)
    assert writer.pending == 0
    writer.append(b"accepted")
    writer.close()
    assert _read_all(tmp_path) == [b"0123456789"] * 3 + [b"accepted"]


@pytest.mark.parametrize("policy", list(FsyncPolicy))
def test_every_fsync_policy_writes_the_same_records(tmp_path: Path, policy: FsyncPolicy) -> None:
    writer = JournalWriter(tmp_path, fsync=policy, fsync_interval_s=0.01, segment_bytes=64)
    records = [f"{policy}-{i}".encode() for i in range(40)]
    for record in records:
        writer.append(record)
    writer.sync()
    writer.close()
    assert _read_all(tmp_path) == records


def test_committed_segments_are_deleted_after_the_retention(tmp_path: Path) -> None:
    writer = JournalWriter(tmp_path, segment_bytes=5, fsync=FsyncPolicy.NEVER)  # one record a segment
    for i in range(5):
        writer.append(f"record-{i}".encode())
    writer.close()
    assert segments(tmp_path) == [1, 2, 3, 4, 5, 6]
    keep = JournalReader(tmp_path, retention_s=3600)
    records = keep.read(3)
    keep.committed(records[-1].end)
    assert segments(tmp_path) == [1, 2, 3, 4, 5, 6]  # confirmed, but kept for the retention
    drop = JournalReader(tmp_path, retention_s=0)
    records = drop.read(3)
    drop.committed(records[-1].end)
    assert segments(tmp_path) == [3, 4, 5, 6]
    assert pending_bytes(tmp_path, records[-1].end) == 2 * len(b"record-0\n")


def test_a_start_older_than_the_oldest_segment_reads_from_the_oldest(tmp_path: Path) -> None:
    writer = JournalWriter(tmp_path, segment_bytes=5, fsync=FsyncPolicy.NEVER)  # one record a segment
    for i in range(3):
        writer.append(f"record-{i}".encode())
    writer.close()
    os.unlink(segment_path(tmp_path, 1))
    assert _read_all(tmp_path, start=Position(1, 5)) == [b"record-1", b"record-2"]


def test_the_journal_id_is_made_once(tmp_path: Path) -> None:
    made = journal_id(tmp_path)
    assert made.startswith("jnl-") and len(made) == 20
    assert journal_id(tmp_path) == made
    assert Position.decode(Position(12, 345).encode()) == Position(12, 345)
