"""The shared experiment book on a real (private) Redis: compare-and-set, seeding once, following, outages."""

from __future__ import annotations

import datetime as dt
import itertools
import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from shadowgate.decisioning import experiments as ex
from shadowgate.decisioning.experiments import BookChange, ExperimentBook, IllegalTransitionError
from shadowgate.storage.experiment_store import (
    ExperimentBookCollector,
    ExperimentBookConflictError,
    ExperimentStore,
    ExperimentStoreUnavailableError,
    LiveExperiments,
    redis_client,
)
from tests.redis_server import RedisServer, redis_server_fixture

redis_server = redis_server_fixture()

CANARY = "canary-challenger"
PREFIX = "test:experiments"


def _store(server: RedisServer, **kwargs: Any) -> ExperimentStore:
    return ExperimentStore(redis_client(server.url, timeout_s=1.0), key_prefix=PREFIX, **kwargs)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _share(share: float, actor: str = "alice") -> Callable[[ExperimentBook], BookChange]:
    return lambda book: ex.plan_share(book, CANARY, share=share, actor=actor, reason="ramp", at=_now())


def _activate(actor: str = "alice") -> Callable[[ExperimentBook], BookChange]:
    return lambda book: ex.plan_transition(book, CANARY, to="active", actor=actor, reason="go", at=_now())


@pytest.fixture
def seeded(redis_server: RedisServer) -> ExperimentStore:
    store = _store(redis_server)
    assert store.seed(ex.load_book(), actor="test", reason="seed")
    return store


@pytest.fixture
def replicas(redis_server: RedisServer, tmp_path: Path) -> Iterator[Callable[..., LiveExperiments]]:
    """replicas(name, poll_interval_s=...) → a LiveExperiments on the private Redis with its own cache (not started)."""
    made: list[LiveExperiments] = []

    def make(name: str, *, poll_interval_s: float = 0.05, start: bool = True) -> LiveExperiments:
        live = LiveExperiments(
            store=_store(redis_server), cache_path=tmp_path / name / "experiments.json", poll_interval_s=poll_interval_s
        )
        made.append(live)
        if start:
            live.start()
        return live

    yield make
    for live in made:
        live.close()


def _wait(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.01)


# --- the store -----------------------------------------------------------------------------------------------------


def test_each_change_is_one_compare_and_set_with_exactly_one_audit_entry(seeded: ExperimentStore) -> None:
    seeded.commit(_activate())
    seeded.commit(_share(0.3, actor="bob"))
    lowered = seeded.commit(_share(0.05, actor="bob"))
    with pytest.raises(IllegalTransitionError):
        seeded.commit(_activate())  # refused: nothing written
    with pytest.raises(ex.ExperimentNotFoundError):
        seeded.commit(lambda book: ex.plan_share(book, "nope", share=0.5, actor="a", reason="ramp", at=_now()))

    stored = seeded.load()
    assert stored is not None
    assert stored.book == lowered.book
    assert stored.book.version == 4
    assert stored.change_id == lowered.record.change_id == seeded.last_change_id()
    audit = seeded.audit()
    assert [a["change"] for a in audit] == ["seed", "transition", "share", "share"]
    assert [(a["from_version"], a["to_version"]) for a in audit] == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert [a["actor"] for a in audit] == ["test", "alice", "bob", "bob"]
    assert audit[3]["flags"] == ["SHARE_LOWERED"]
    assert audit[3]["details"] == {"from_share": 0.3, "to_share": 0.05}
    # Before of each change is the after of the one before it: the audit chains.
    assert audit[2]["before"] == audit[1]["after"] and audit[3]["before"] == audit[2]["after"]
    assert audit[3]["after"] == lowered.experiment.model_dump(mode="json")
    assert audit[0]["reason"] == "seed" and audit[0]["details"]["experiments"] == {"shadow-challenger": 1, CANARY: 1}


def test_seeding_happens_once_when_replicas_race(redis_server: RedisServer) -> None:
    barrier = threading.Barrier(8)
    created: list[bool] = []

    def seed(n: int) -> None:
        store = _store(redis_server)
        book = ex.ExperimentBook(version=1 + n % 2, experiments=ex.load_book().experiments)
        barrier.wait()
        created.append(store.seed(book, actor=f"replica {n}", reason="first start"))

    threads = [threading.Thread(target=seed, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(created) == [False] * 7 + [True]
    store = _store(redis_server)
    [record] = store.audit()
    assert record["change"] == "seed"
    stored = store.load()
    assert stored is not None and stored.book.version == record["to_version"]


def _start_replica(url: str, cache_dir: str, barrier: Any, out: Any) -> None:
    live = LiveExperiments(
        store=ExperimentStore(redis_client(url, timeout_s=2.0), key_prefix=PREFIX),
        cache_path=Path(cache_dir) / "experiments.json",
    )
    barrier.wait()
    live.start()
    status = live.status()
    out.put((status.book_version, status.source, live.store.last_change_id()))
    live.close()


def test_two_replica_processes_starting_at_once_seed_exactly_once(redis_server: RedisServer, tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    processes = [
        ctx.Process(target=_start_replica, args=(redis_server.url, str(tmp_path / f"r{n}"), barrier, out))
        for n in range(2)
    ]
    for p in processes:
        p.start()
    results = [out.get(timeout=60) for _ in processes]
    for p in processes:
        p.join(30)
        assert p.exitcode == 0
    audit = _store(redis_server).audit()
    assert [a["change"] for a in audit] == ["seed"]
    assert "seeded from the shipped experiments.yaml" in audit[0]["reason"]
    assert results == [(1, "redis", audit[0]["change_id"])] * 2


def test_a_change_that_lost_the_race_is_planned_again_on_the_fresh_book(redis_server: RedisServer) -> None:
    mine, theirs = _store(redis_server), _store(redis_server)
    assert mine.seed(ex.load_book(), actor="test", reason="seed")
    mine.commit(_activate())

    def racing(share: float, other_share: float) -> Callable[[ExperimentBook], BookChange]:
        calls = 0

        def plan(book: ExperimentBook) -> BookChange:
            nonlocal calls
            calls += 1
            if calls == 1:  # the other replica commits between our read and our write
                theirs.commit(_share(other_share, actor="bob"))
            return _share(share)(book)

        return plan

    strict = _store(redis_server, commit_attempts=1)
    with pytest.raises(ExperimentBookConflictError, match="nothing was written"):
        strict.commit(racing(0.5, 0.2))
    assert [a["details"].get("to_share") for a in mine.audit()[2:]] == [0.2]  # only theirs landed

    change = mine.commit(racing(0.6, 0.3))
    audit = mine.audit()
    assert [(a["actor"], a["details"]["to_share"]) for a in audit[2:]] == [("bob", 0.2), ("bob", 0.3), ("alice", 0.6)]
    assert audit[-1]["details"]["from_share"] == 0.3  # planned on the fresh book, not the one it first read
    assert [a["to_version"] for a in audit] == [1, 2, 3, 4, 5]
    assert change.book.version == 5


def test_a_change_no_longer_legal_on_the_fresh_book_is_refused(redis_server: RedisServer) -> None:
    mine, theirs = _store(redis_server), _store(redis_server)
    assert mine.seed(ex.load_book(), actor="test", reason="seed")
    first = True

    def activate(book: ExperimentBook) -> BookChange:
        nonlocal first
        if first:
            first = False
            theirs.commit(_activate(actor="bob"))
        return _activate()(book)

    with pytest.raises(IllegalTransitionError, match="from 'active' to 'active'"):
        mine.commit(activate)
    assert [(a["change"], a["actor"]) for a in mine.audit()] == [("seed", "test"), ("transition", "bob")]


def _hammer(url: str, worker: int, changes: int) -> None:
    store = ExperimentStore(redis_client(url, timeout_s=5.0), key_prefix=PREFIX, commit_attempts=1000)
    for i in range(changes):
        store.commit(_share((worker * 1000 + i + 1) / 10_000, actor=f"worker {worker}"))


def test_concurrent_writers_in_two_processes_lose_no_change(redis_server: RedisServer) -> None:
    store = _store(redis_server)
    assert store.seed(ex.load_book(), actor="test", reason="seed")
    store.commit(_activate())
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_hammer, args=(redis_server.url, w, 150)) for w in (1, 2)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(120)
        assert p.exitcode == 0
    audit = store.audit()
    shares = audit[2:]
    assert len(shares) == 300
    assert [a["to_version"] for a in audit] == list(range(1, 303))
    # Every change was planned on the book its predecessor made: no update was lost or applied to a stale book.
    assert all(b["details"]["from_share"] == a["details"]["to_share"] for a, b in itertools.pairwise(shares))
    expected = {(w * 1000 + i + 1) / 10_000 for w in (1, 2) for i in range(150)}
    assert {a["details"]["to_share"] for a in shares} == expected
    stored = store.load()
    assert stored is not None and stored.book.version == 302
    assert stored.book.get(CANARY).treatment_share == shares[-1]["details"]["to_share"]


def test_a_commit_resent_after_its_reply_was_lost_is_applied_once(seeded: ExperimentStore) -> None:
    real = seeded._commit_script
    lost = []

    def reply_lost(**kwargs: Any) -> Any:
        reply = real(**kwargs)
        if not lost:
            lost.append(reply)
            raise redis.ConnectionError("connection reset after the script ran")
        return reply

    seeded._commit_script = reply_lost  # type: ignore[assignment]
    change = seeded.commit(_activate())
    assert lost
    assert [a["change"] for a in seeded.audit()] == ["seed", "transition"]
    stored = seeded.load()
    assert stored is not None and stored.book == change.book and stored.book.version == 2


def test_no_book_and_an_invalid_book_are_unavailable_for_changes(redis_server: RedisServer) -> None:
    store = _store(redis_server)
    with pytest.raises(ExperimentStoreUnavailableError, match="not seeded"):
        store.commit(_activate())
    assert store.seed(ex.load_book(), actor="test", reason="seed")
    redis_server.client().hset(f"{PREFIX}:book", "book", '{"version": 1, "experiments": [')
    with pytest.raises(ExperimentStoreUnavailableError, match="invalid JSON"):
        store.commit(_activate())


# --- replicas following the book -----------------------------------------------------------------------------------


def test_a_change_is_served_at_once_by_its_replica_and_within_the_poll_by_the_others(
    replicas: Callable[..., LiveExperiments],
) -> None:
    one, two = replicas("one"), replicas("two")
    assert one.book == two.book == ex.load_book()
    assert (one.status().source, two.status().source) == ("redis", "redis")
    one.transition(CANARY, "active", actor="alice", reason="go")
    assert one.book.version == 2 and one.book.get(CANARY).is_active  # no wait: adopted on commit
    two.set_share(CANARY, 0.4, actor="bob", reason="ramp")
    assert two.book.version == 3
    _wait(lambda: one.book.version == 3)
    assert one.book == two.book
    assert one.book.get(CANARY).treatment_share == 0.4


def test_reading_the_book_does_no_redis_io(replicas: Callable[..., LiveExperiments], redis_server: RedisServer) -> None:
    live = replicas("one", start=False)
    live.refresh()  # what start() does, without the poller that would add its own commands
    info = redis_server.client()
    before = int(info.info("stats")["total_commands_processed"])
    for _ in range(10_000):
        assert live.book.version == 1
    after = int(info.info("stats")["total_commands_processed"])
    assert after - before == 1  # the first INFO itself


def test_redis_down_keeps_the_last_book_and_a_restart_uses_the_disk_cache(
    replicas: Callable[..., LiveExperiments], redis_server: RedisServer, tmp_path: Path
) -> None:
    one = replicas("one")
    one.transition(CANARY, "active", actor="alice", reason="go")
    one.set_share(CANARY, 0.3, actor="alice", reason="ramp")
    served = one.book
    assert served.version == 3

    redis_server.stop()  # SIGKILL by PID
    _wait(lambda: one.status().redis_up is False)
    assert one.book == served
    status = one.status()
    assert (status.book_version, status.source, status.redis_up) == (3, "redis", False)
    assert status.sync_failures >= 1 and "unavailable" in (status.last_error or "")
    metrics = {m.name: m.samples[0].value for m in ExperimentBookCollector(one).collect()}
    assert metrics["shadowgate_experiment_book_version"] == 3
    assert metrics["shadowgate_experiment_book_redis_up"] == 0
    assert metrics["shadowgate_experiment_book_sync_failures"] >= 1
    started = time.monotonic()
    with pytest.raises(ExperimentStoreUnavailableError):
        one.set_share(CANARY, 0.5, actor="alice", reason="ramp")
    assert time.monotonic() - started < 5
    assert one.book == served

    # A replica (re)started while Redis is down: its last book from disk; a new one: the shipped YAML.
    restarted = LiveExperiments(store=_store(redis_server), cache_path=one.cache_path)
    restarted.start()
    assert (restarted.book, restarted.status().source, restarted.status().redis_up) == (served, "cache", False)
    restarted.close()
    fresh = replicas("fresh")
    assert (fresh.book, fresh.status().source) == (ex.load_book(), "shipped")

    redis_server.start()  # same port, AOF: the book survived
    _wait(lambda: fresh.status().source == "redis" and one.status().redis_up is True)
    assert fresh.book == one.book == served
    one.set_share(CANARY, 0.5, actor="alice", reason="ramp")
    _wait(lambda: fresh.book.version == 4)
    assert [a["change"] for a in _store(redis_server).audit()] == ["seed", "transition", "share", "share"]


def test_a_replica_restores_the_book_when_redis_lost_it(
    replicas: Callable[..., LiveExperiments], redis_server: RedisServer
) -> None:
    one = replicas("one", poll_interval_s=60)
    one.transition(CANARY, "active", actor="alice", reason="go")
    served = one.book
    redis_server.client().flushall()  # Redis restarted without persistence
    assert one.refresh() is False  # the same book, now in Redis again
    store = _store(redis_server)
    [record] = store.audit()
    assert record["change"] == "seed" and record["to_version"] == 2
    assert "restored from this replica's last book (version 2, from redis)" in record["reason"]
    stored = store.load()
    assert stored is not None and stored.book == served
    one.set_share(CANARY, 0.2, actor="alice", reason="ramp")
    assert one.book.version == 3


def test_an_invalid_book_in_redis_is_never_served(
    replicas: Callable[..., LiveExperiments], redis_server: RedisServer
) -> None:
    one = replicas("one", poll_interval_s=60)
    served = one.book
    redis_server.client().hset(f"{PREFIX}:book", mapping={"book": "{not json", "change_id": "tampered"})
    assert one.refresh() is False
    assert one.book == served
    assert "invalid" in (one.status().last_error or "")
    with pytest.raises(ExperimentStoreUnavailableError, match="invalid"):
        one.transition(CANARY, "active", actor="alice", reason="go")
