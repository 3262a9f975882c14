"""The shadow process on its own: a real child process, a real Redis, frames in, events out, back-pressure."""

from __future__ import annotations

import datetime as dt
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shadowgate.contract import example_transaction, request_model
from shadowgate.events import from_stream_fields
from shadowgate.features import features_one
from shadowgate.serving.models import ModelSnapshot
from shadowgate.serving.policies import DecisionContext, decide, load_policy
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
        spill_dir=tmp_path / "spill",
        event_queue_size=1000,
        customer_salt="salt",
        predictions_stream=STREAM,
        budget_ms=5.0,
        policy=load_policy("conservative"),
    )


def _frame(i: int) -> tuple[str, bytes]:
    """A fallback decision (no model) of transaction ``i``, as the request path frames it."""
    tx: dict[str, Any] = (
        request_model()
        .model_validate({**example_transaction(), "transaction_id": f"tx_{i}", "customer_id": f"cus_{i}"})
        .model_dump()
    )
    policy = load_policy("conservative")
    context = DecisionContext()
    decision = decide(score=None, transaction=tx, context=context, policy=policy)
    request_id = f"{i:032x}"
    frame = encode_prediction(
        request_id=request_id,
        transaction=tx,
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


def test_frames_become_events_in_order_and_waiting_requests_lose_nothing(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    sidecar = Sidecar(_config(tmp_path, redis_server.url), max_pending=20, stall_timeout_s=600)
    sidecar.start()
    try:
        sidecar.send_models(ModelSnapshot("m", {}, 0, dt.datetime.now(dt.UTC)))
        frames = [_frame(i) for i in range(2000)]  # more than the 1 MiB pipe holds
        pid = sidecar.pid
        assert pid is not None and pid != os.getpid()
        os.kill(pid, signal.SIGSTOP)  # the child stops reading: the pipe fills, then the queue here
        producer = threading.Thread(target=lambda: [sidecar.put(f) for _, f in frames])
        producer.start()
        time.sleep(1.0)
        assert producer.is_alive()  # waiting for room, not dropping
        assert sidecar.backpressure_waits >= 1
        assert len(sidecar._pending) == 20
        os.kill(pid, signal.SIGCONT)
        producer.join(60)
        assert not producer.is_alive()
        assert sidecar.flush(30.0)
        entries = redis_server.client(decode_responses=True).xrange(STREAM)
        events = [from_stream_fields(fields) for _, fields in entries]
        assert [e.event_id for e in events] == [rid for rid, _ in frames]  # all, once, in order
        assert events[0].customer_id_hash != "cus_0" and len(events[0].customer_id_hash) == 32
        assert sidecar.stats().written == 2000 and sidecar.stats().dropped == 0
        assert sidecar.restarts == 0 and sidecar.frames_lost == 0
    finally:
        sidecar.close()
    assert sidecar.pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(sidecar.pid, 0)  # the child is gone after close


def test_close_logs_every_queued_frame_before_the_child_exits(tmp_path: Path, redis_server: RedisServer) -> None:
    sidecar = Sidecar(_config(tmp_path, redis_server.url), max_pending=10_000)
    sidecar.start()
    frames = [_frame(i) for i in range(500)]
    for _, frame in frames:
        sidecar.put(frame)
    sidecar.close()  # no flush: close alone must deliver
    entries = redis_server.client(decode_responses=True).xrange(STREAM)
    assert [fields["id"] for _, fields in entries] == [rid for rid, _ in frames]


def test_with_redis_down_the_child_spills_and_the_next_one_replays(tmp_path: Path, redis_server: RedisServer) -> None:
    redis_server.stop()
    first = Sidecar(_config(tmp_path, redis_server.url), max_pending=10_000)
    first.start()
    frames = [_frame(i) for i in range(50)]
    try:
        for _, frame in frames:
            first.put(frame)
        assert first.drain(30.0)
        assert not first.flush(1.0)  # written means in Redis: not while it is down
        deadline = time.monotonic() + 30
        while first.stats().spilled < 50 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert first.stats().redis_up is False and first.stats().spilled == 50
    finally:
        first.close()
    redis_server.start()
    second = Sidecar(_config(tmp_path, redis_server.url), max_pending=10_000)
    second.start()
    try:
        assert second.flush(30.0)
        assert second.stats().replayed == 50
        entries = redis_server.client(decode_responses=True).xrange(STREAM)
        assert [fields["id"] for _, fields in entries] == [rid for rid, _ in frames]
    finally:
        second.close()
