"""The journal and Redis disagreeing, a record that breaks its event, a disk that refuses the dead letter: with the real
shadow process (a child process) and a real Redis, nothing answered is lost, nothing is sent twice, the process never
dies on it, and what could not be found is reported."""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from shadowgate.decisioning.policies import load_policy
from shadowgate.events import hash_customer_id
from shadowgate.serving.journal import DEAD_LETTER_FILE, segments
from shadowgate.serving.models import ModelSnapshot
from shadowgate.serving.sidecar import Sidecar, SidecarConfig
from tests.integration.test_sidecar import decision_frame
from tests.redis_server import RedisServer

STREAM = "test:predictions"
_POLICY = load_policy("conservative")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as server:
        yield server


def _config(journal: Path, redis_url: str, **changes: Any) -> SidecarConfig:
    config = SidecarConfig(
        redis_url=redis_url,
        journal_dir=journal,
        customer_salt="salt",
        predictions_stream=STREAM,
        budget_ms=5.0,
        policy=_POLICY,
        journal_segment_bytes=4096,  # a few records a segment: many segments, many numbers to collide
        journal_retention_s=0.0,
    )
    return dataclasses.replace(config, **changes)


def _ids(redis_server: RedisServer) -> list[str]:
    return [fields["id"] for _, fields in redis_server.client(decode_responses=True).xrange(STREAM)]


def _started(config: SidecarConfig) -> Sidecar:
    sidecar = Sidecar(config, stall_timeout_s=600)
    sidecar.start()
    sidecar.send_models(ModelSnapshot("m", {}, 0, dt.datetime.now(dt.UTC)))
    return sidecar


def _put(sidecar: Sidecar, first: int, last: int) -> list[str]:
    ids = []
    for i in range(first, last):
        rid, frame = decision_frame(i)
        sidecar.put(frame)
        ids.append(rid)
    return ids


@pytest.mark.parametrize("redis_at_start", ["up", "down"])
def test_a_journal_restored_from_an_older_copy_delivers_every_new_decision_once(
    tmp_path: Path, redis_server: RedisServer, redis_at_start: str
) -> None:
    """Redis holds a position past everything in the restored directory. With Redis up at start the writer numbers
    after it; with Redis down it cannot know, numbers over segments Redis has passed, and the shadow process resyncs
    when Redis returns. Either way every decision answered after the restore reaches the stream, once, and the
    disagreement is reported."""
    journal = tmp_path / "journal"
    config = _config(journal, redis_server.url)
    first = _started(config)
    sent = _put(first, 0, 40)
    assert first.flush(30.0)
    first.close()
    shutil.copytree(journal, tmp_path / "snapshot", ignore=shutil.ignore_patterns("writer.lock"))
    second = _started(config)
    sent += _put(second, 40, 120)
    assert second.flush(30.0)
    second.close()
    assert _ids(redis_server) == sent
    shutil.rmtree(journal)
    shutil.copytree(tmp_path / "snapshot", journal)  # the older copy: Redis has passed all of it

    if redis_at_start == "down":
        redis_server.stop()
    third = _started(config)
    try:
        assert third.journal is not None
        if redis_at_start == "down":
            assert third.journal.first_segment <= max(segments(tmp_path / "snapshot"), default=0) + 1
        new = _put(third, 120, 180)
        assert third.pending_bytes > 0
        if redis_at_start == "down":
            redis_server.start()
        assert third.flush(30.0)
        assert _ids(redis_server) == sent + new  # every new decision, once, in order; nothing old again
        stats = third.stats()
        assert third.pending_bytes == 0 and stats.pending_bytes == 0
        assert stats.written == 60 and stats.dead_lettered == 0
        if redis_at_start == "down":
            assert stats.resyncs == 1 and "left by another writer" in stats.missing[0]
    finally:
        third.close()


def test_an_emptied_journal_with_its_id_kept_delivers_every_new_decision(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    journal = tmp_path / "journal"
    config = _config(journal, redis_server.url)
    first = _started(config)
    sent = _put(first, 0, 60)
    assert first.flush(30.0)
    first.close()
    for number in segments(journal):
        (journal / f"{number:012d}.jnl").unlink()
    (journal / "committed").unlink()
    redis_server.stop()
    second = _started(config)
    try:
        new = _put(second, 60, 90)
        redis_server.start()
        assert second.flush(30.0)
        assert _ids(redis_server) == sent + new
        assert second.stats().resyncs == 1
    finally:
        second.close()


def test_a_record_that_breaks_its_event_is_dead_lettered_alone_and_logging_goes_on(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    journal = tmp_path / "journal"
    sidecar = _started(_config(journal, redis_server.url))
    try:
        pid = sidecar.pid
        good = _put(sidecar, 0, 10)
        # Parses as a frame, but its transaction lacks keys the event needs: the event cannot be built.
        _, broken = decision_frame(10)
        frame = orjson.loads(broken)
        del frame["tx"]["merchant_id"]
        sidecar.put(orjson.dumps(frame))
        sidecar.put(b'{"v": 2, "k": "p"}')  # a frame without its keys
        sidecar.put(b'{"v": 9, "k": "e"}')  # a version no release wrote
        sidecar.put(b"not json at all")
        good += _put(sidecar, 11, 30)
        assert sidecar.flush(30.0)
        assert _ids(redis_server) == good
        stats = sidecar.stats()
        assert stats.dead_lettered == 4 and stats.written == 29
        assert sidecar.pid == pid and sidecar.restarts == 0  # no crash, no restart
        kept = [orjson.loads(line) for line in (journal / DEAD_LETTER_FILE).read_bytes().splitlines()]
        assert [k["reason"].split(":")[0] for k in kept] == [
            "event not built",
            "KeyError",
            "ValueError",
            "JSONDecodeError",
        ]
    finally:
        sidecar.close()


def test_a_dead_letter_the_disk_refuses_holds_the_batch_without_a_crash_and_resumes(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    journal = tmp_path / "journal"
    sidecar = _started(_config(journal, redis_server.url))
    try:
        pid = sidecar.pid
        (journal / DEAD_LETTER_FILE).mkdir()  # the dead letter cannot be written (as on a full disk)
        before = _put(sidecar, 0, 5)
        sidecar.put(b"not json")
        after = _put(sidecar, 6, 10)
        assert not sidecar.flush(2.0)  # held: the bad record is not passed over unkept
        assert sidecar.stats().dead_letter_errors >= 1
        assert "dead letter not writable" in (sidecar.stats().last_error or "")
        (journal / DEAD_LETTER_FILE).rmdir()  # space again
        assert sidecar.flush(30.0)
        assert _ids(redis_server) == before + after
        assert sidecar.stats().dead_lettered == 1
        assert sidecar.pid == pid and sidecar.restarts == 0
    finally:
        sidecar.close()


def test_the_journal_holds_no_raw_customer_id(tmp_path: Path, redis_server: RedisServer) -> None:
    journal = tmp_path / "journal"
    sidecar = _started(_config(journal, redis_server.url, journal_retention_s=3600.0))
    try:
        _put(sidecar, 0, 20)
        assert sidecar.flush(30.0)
        raw = b"".join(p.read_bytes() for p in journal.glob("*.jnl"))
        assert raw.count(b'"k":"p"') == 20
        assert b"cus_" not in raw
        assert hash_customer_id("cus_3", salt="salt").encode() in raw
    finally:
        sidecar.close()


def test_a_restarted_shadow_process_of_the_same_writer_reads_on_without_a_resync(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    import os
    import signal

    sidecar = _started(_config(tmp_path / "journal", redis_server.url))
    try:
        sent = _put(sidecar, 0, 50)
        assert sidecar.flush(30.0)
        assert sidecar.pid is not None
        os.kill(sidecar.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while sidecar.restarts == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        sent += _put(sidecar, 50, 80)
        assert sidecar.flush(30.0)
        assert _ids(redis_server) == sent
        assert sidecar.stats().resyncs == 0
    finally:
        sidecar.close()
