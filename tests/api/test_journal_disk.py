"""The decision API on a bad disk: slow flushes, write errors, a journal that fills up. The journal's real files and
writer; the system calls are made slow or failing through its :class:`JournalIO` (the API process's only path to
the disk for decisions)."""

from __future__ import annotations

import errno
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from shadowgate.serving import journal as journal_module
from shadowgate.serving.runtime import Runtime
from tests.api.conftest import INGEST, make_client
from tests.api.test_decisions import URL, _stream, _tx
from tests.api.test_outcomes import PAID
from tests.redis_server import RedisServer

Factory = Callable[..., Callable[[], Runtime]]
BATCH_URL = "/v1/bnpl/risk-assessment:batch"


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, object]]:
    """Faults for the journal's system calls: ``disk["fsync_delay"] = 0.3``, ``disk["write_errno"] = errno.ENOSPC``."""
    faults: dict[str, object] = {}
    io = journal_module.OS_IO
    real_write, real_fsync, real_fallocate = io.write, io.fsync, io.fallocate
    counts = {"fsync": 0}

    def write(fd: int, data: bytes) -> int:
        if "write_errno" in faults:
            code = int(faults["write_errno"])  # type: ignore[call-overload]
            raise OSError(code, os.strerror(code))
        return real_write(fd, data)

    def fsync(fd: int) -> None:
        counts["fsync"] += 1
        time.sleep(float(faults.get("fsync_delay", 0.0)))  # type: ignore[arg-type]
        real_fsync(fd)

    def fallocate(fd: int, offset: int, length: int) -> None:
        if "write_errno" in faults:
            code = int(faults["write_errno"])  # type: ignore[call-overload]
            raise OSError(code, os.strerror(code))
        real_fallocate(fd, offset, length)

    monkeypatch.setattr(io, "write", write)
    monkeypatch.setattr(io, "fsync", fsync)
    monkeypatch.setattr(io, "fallocate", fallocate)
    faults["counts"] = counts
    yield faults


def _timed_get(client: TestClient, path: str) -> float:
    started = time.perf_counter()
    assert client.get(path).status_code == 200
    return time.perf_counter() - started


@pytest.mark.parametrize("policy", ["always", "interval"])
def test_a_slow_disk_never_stalls_health_and_decisions_keep_answering(
    runtime_factory: Factory, disk: dict[str, object], policy: str
) -> None:
    """Every fsync takes 0.3 s. Under ``always`` each decision waits for the group commit that covers it (off the
    event loop); under ``interval`` none waits. ``/health/live`` answers throughout without waiting for the disk."""
    with make_client(runtime_factory(journal_fsync=policy, journal_fsync_interval_s=0.05)) as client:
        disk["fsync_delay"] = 0.3
        statuses: list[int] = []
        lock = threading.Lock()

        def decide(start: int) -> None:
            for i in range(start, start + 10):
                code = client.post(URL, json=_tx(i)).status_code
                with lock:
                    statuses.append(code)

        deciders = [threading.Thread(target=decide, args=(k * 10,)) for k in range(4)]
        started = time.perf_counter()
        for thread in deciders:
            thread.start()
        live: list[float] = []
        while any(t.is_alive() for t in deciders):
            live.append(_timed_get(client, "/health/live"))
            time.sleep(0.02)
        for thread in deciders:
            thread.join()
        took = time.perf_counter() - started
        assert statuses == [200] * 40
        assert len(live) >= 3 and max(live) < 0.25, f"/health/live took up to {max(live):.3f} s behind the disk"
        counts = disk["counts"]
        assert isinstance(counts, dict)
        if policy == "always":
            # 40 decisions in 4 concurrent streams: each 0.3 s group commit covers up to 4 of them, so ≥ 10 rounds
            # (≥ 3 s); one fsync per decision would be 12 s.
            assert counts["fsync"] < 40 and took < 9.0
        else:
            assert took < 3.0  # no decision waited for a 0.3 s fsync (40 of them in a row would be 12 s)
        assert statistics.median(live) < 0.1


def test_a_disk_error_answers_503_with_retry_after_then_recovers_and_loses_nothing(
    runtime_factory: Factory, disk: dict[str, object], redis_server: RedisServer
) -> None:
    with make_client(runtime_factory()) as client:
        answered = [client.post(URL, json=_tx(i)).json()["request_id"] for i in range(20)]
        disk["write_errno"] = errno.ENOSPC
        refused = client.post(URL, json=_tx(20))
        assert refused.status_code == 503 and refused.headers["Retry-After"]
        assert "nothing was recorded" in refused.json()["detail"]
        again = client.post(URL, json=_tx(21))  # latched: refused without touching the disk
        assert again.status_code == 503
        metrics = client.get("/metrics").text
        assert "shadowgate_journal_failed 1.0" in metrics
        assert "shadowgate_journal_disk_failures_total 1.0" in metrics
        assert client.get("/health/live").status_code == 200
        del disk["write_errno"]  # space again: the writer's probe takes records again by itself
        deadline = time.monotonic() + 10
        while client.post(URL, json=_tx(22)).status_code != 200:
            assert time.monotonic() < deadline, "the journal did not recover"
            time.sleep(0.1)
        # tx 22 may have been answered 200 more than once above; count only what the answers say
        answered += [client.post(URL, json=_tx(i)).json()["request_id"] for i in range(23, 40)]
        runtime = client.app.state.runtime  # type: ignore[attr-defined]
        assert runtime.shadow.flush(30.0)
        assert "shadowgate_journal_failed 0.0" in client.get("/metrics").text
        logged = [e["event_id"] for e in _stream(redis_server, "shadowgate:predictions")]
        assert set(answered) <= set(logged)  # nothing answered lost
        assert len(logged) == len(set(logged))  # nothing twice
        refused_ids = [t for t in ("tx_20", "tx_21") if any(e["transaction_id"] == t for e in
                       _stream(redis_server, "shadowgate:predictions"))]  # fmt: skip
        assert refused_ids == []  # nothing refused was recorded


def test_a_batch_that_meets_a_full_journal_records_none_of_it(
    runtime_factory: Factory, redis_server: RedisServer
) -> None:
    redis_server.stop()  # nothing drains the journal
    with make_client(runtime_factory(journal_max_pending_mb=0.02)) as client:  # ~20 KB: a few dozen decisions
        singles: list[str] = []
        i = 0
        while True:
            answer = client.post(URL, json=_tx(i))
            i += 1
            if answer.status_code != 200:
                break
            singles.append(answer.json()["transaction_id"])
        assert 5 < len(singles) < 100
        runtime = client.app.state.runtime  # type: ignore[attr-defined]
        journal = runtime.shadow.journal
        # Make room for a few, not for a whole batch of 30.
        room = journal.max_pending_bytes - journal.pending
        assert room < 30 * 500
        batch = client.post(BATCH_URL, json={"transactions": [_tx(1000 + k) for k in range(30)]})
        assert batch.status_code == 503
        outcomes = client.post(
            "/v1/outcomes:batch",
            headers=INGEST,
            json={"outcomes": [{**PAID, "transaction_id": f"tx_{k}"} for k in range(40)]},
        )
        assert outcomes.status_code == 503
        redis_server.start()
        assert runtime.shadow.flush(30.0)
        logged = [e["transaction_id"] for e in _stream(redis_server, "shadowgate:predictions")]
        assert logged == singles  # every answered decision, none of the refused batch
        assert _stream(redis_server, "shadowgate:outcomes") == []
