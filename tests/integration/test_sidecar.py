"""The shadow process on its own: a real child process, a real Redis, frames in, events out, back-pressure."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shadowgate.contract import example_transaction, request_model
from shadowgate.decisioning.policies import DecisionContext, decide, load_policy
from shadowgate.events import from_stream_fields, hash_customer_id
from shadowgate.features import features_one
from shadowgate.serving.models import ModelSnapshot
from shadowgate.serving.shadow import Score, encode_prediction
from shadowgate.serving.sidecar import Sidecar, SidecarConfig
from tests.redis_server import RedisServer

STREAM = "test:predictions"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as server:
        yield server


def _config(tmp_path: Path, redis_url: str) -> SidecarConfig:
    return SidecarConfig(
        redis_url=redis_url,
        journal_dir=tmp_path / "journal",
        customer_salt="salt",
        predictions_stream=STREAM,
        budget_ms=5.0,
        policy=_POLICY,
    )


_POLICY = load_policy("conservative")


def decision_frame(i: int) -> tuple[str, bytes]:
    """A fallback decision (no model) of transaction ``i``, as the request path frames it."""
    tx: dict[str, Any] = (
        request_model()
        .model_validate({**example_transaction(), "transaction_id": f"tx_{i}", "customer_id": f"cus_{i}"})
        .model_dump()
    )
    policy = _POLICY
    context = DecisionContext()
    decision = decide(score=None, transaction=tx, context=context, policy=policy)
    request_id = f"{i:032x}"
    frame = encode_prediction(
        request_id=request_id,
        transaction=tx,
        customer_id_hash=hash_customer_id(tx["customer_id"], salt="salt"),
        context=context,
        features=features_one(tx),
        generation=0,
        decided=Score("champion", None, None, 0.0, "skipped", "no model loaded"),
        decision=decision,
        reason_codes=decision.reason_codes,
        assignments=[],
        deciding=None,
        latency_s=1e-4,
    )
    return request_id, frame


def _ids(redis_server: RedisServer) -> list[str]:
    return [fields["id"] for _, fields in redis_server.client(decode_responses=True).xrange(STREAM)]


def test_frames_become_events_in_order_and_a_stopped_child_never_blocks_the_request_path(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    sidecar = Sidecar(_config(tmp_path, redis_server.url), stall_timeout_s=600)
    sidecar.start()
    try:
        sidecar.send_models(ModelSnapshot("m", {}, 0, dt.datetime.now(dt.UTC)))
        frames = [decision_frame(i) for i in range(2000)]
        pid = sidecar.pid
        assert pid is not None and pid != os.getpid()
        os.kill(pid, signal.SIGSTOP)  # the child stops reading: the journal holds the backlog on disk
        started = time.monotonic()
        for _, frame in frames:
            sidecar.put(frame)
        assert time.monotonic() - started < 5.0  # nothing waited for the child
        assert sidecar.journal is not None and sidecar.journal.appended == 2000
        assert sidecar.pending_bytes > 0
        os.kill(pid, signal.SIGCONT)
        assert sidecar.flush(30.0)
        entries = redis_server.client(decode_responses=True).xrange(STREAM)
        events = [from_stream_fields(fields) for _, fields in entries]
        assert [e.event_id for e in events] == [rid for rid, _ in frames]  # all, once, in order
        assert events[0].customer_id_hash != "cus_0" and len(events[0].customer_id_hash) == 32
        assert sidecar.stats().written == 2000 and sidecar.stats().dead_lettered == 0
        assert sidecar.restarts == 0 and sidecar.pending_bytes == 0
    finally:
        sidecar.close()
    assert sidecar.pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(sidecar.pid, 0)  # the child is gone after close


def test_close_commits_every_journaled_frame_before_the_child_exits(tmp_path: Path, redis_server: RedisServer) -> None:
    sidecar = Sidecar(_config(tmp_path, redis_server.url))
    sidecar.start()
    frames = [decision_frame(i) for i in range(500)]
    for _, frame in frames:
        sidecar.put(frame)
    sidecar.close()  # no flush: close alone must deliver
    assert _ids(redis_server) == [rid for rid, _ in frames]


def test_with_redis_down_the_journal_keeps_everything_and_the_next_start_commits_it(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    redis_server.stop()
    first = Sidecar(_config(tmp_path, redis_server.url))
    first.start()
    frames = [decision_frame(i) for i in range(50)]
    try:
        for _, frame in frames:
            first.put(frame)
        assert not first.flush(1.0)  # in Redis: not while it is down
        assert first.stats().redis_up is False and first.stats().written == 0
        assert first.pending_bytes > 0
    finally:
        first.close(timeout_s=3.0)
    redis_server.start()
    second = Sidecar(_config(tmp_path, redis_server.url))
    second.start()
    try:
        assert second.flush(30.0)
        assert second.stats().inherited == 50 and second.stats().written == 50
        assert _ids(redis_server) == [rid for rid, _ in frames]
    finally:
        second.close()


def test_redis_outage_mid_stream_loses_and_repeats_nothing(tmp_path: Path, redis_server: RedisServer) -> None:
    sidecar = Sidecar(_config(tmp_path, redis_server.url))
    sidecar.start()
    frames = [decision_frame(i) for i in range(3000)]
    try:
        for i, (_, frame) in enumerate(frames):
            sidecar.put(frame)
            if i == 1000:
                redis_server.stop()  # SIGKILL; AOF fsync always: what Redis acknowledged survives
            if i == 2000:
                redis_server.start()
        assert sidecar.flush(60.0)
        assert _ids(redis_server) == [rid for rid, _ in frames]
    finally:
        sidecar.close()


def test_a_shadow_process_killed_again_and_again_loses_and_repeats_nothing(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    sidecar = Sidecar(_config(tmp_path, redis_server.url))
    sidecar.start()
    frames = [decision_frame(i) for i in range(6000)]
    kills = 0
    try:
        for i, (_, frame) in enumerate(frames):
            sidecar.put(frame)
            if i % 1500 == 700:
                pid = sidecar.pid
                assert pid is not None and sidecar.alive
                os.kill(pid, signal.SIGKILL)
                kills += 1
                time.sleep(0.05 * kills)  # killed at different points of its work
                deadline = time.monotonic() + 30
                while (sidecar.pid == pid or not sidecar.alive) and time.monotonic() < deadline:
                    time.sleep(0.02)  # the next kill is for the replacement
        assert sidecar.flush(60.0)
        assert sidecar.restarts == kills == 4
        assert _ids(redis_server) == [rid for rid, _ in frames]  # every one, once, in order
    finally:
        sidecar.close()


def test_a_full_journal_refuses_instead_of_answering_unlogged(tmp_path: Path, redis_server: RedisServer) -> None:
    from shadowgate.serving.journal import JournalFullError

    redis_server.stop()
    config = dataclasses.replace(_config(tmp_path, redis_server.url), journal_max_pending_bytes=20_000)
    sidecar = Sidecar(config)
    sidecar.start()
    accepted = []
    try:
        with pytest.raises(JournalFullError):
            for rid, frame in (decision_frame(i) for i in range(1000)):
                sidecar.put(frame)
                accepted.append(rid)
        assert 0 < len(accepted) < 1000 and sidecar.refused == 1
        redis_server.start()
        assert sidecar.flush(30.0)
        rid, frame = decision_frame(5000)
        sidecar.put(frame)  # room again once Redis took the backlog
        assert sidecar.flush(30.0)
        assert _ids(redis_server) == [*accepted, rid]
    finally:
        sidecar.close()
